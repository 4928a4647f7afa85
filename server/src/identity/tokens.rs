//! Access tokens (JWTs) and the opaque secrets behind refresh tokens, cookies
//! and CSRF.
//!
//! JWTs are signed here over RustCrypto primitives rather than with the
//! `jsonwebtoken` crate: its RustCrypto backend pulls the `rsa` crate
//! (RUSTSEC-2023-0071) and we need only HS256 and EdDSA. Owning the code
//! means owning RFC 8725's checks, so [`TokenIssuer::verify_access`] makes all
//! of them, strictly, and rejects the whole token at the first failure:
//!
//! - the token is three canonical base64url parts (no padding, no stray bits)
//!   of at most [`MAX_TOKEN_LEN`] bytes;
//! - the header's `alg` is one we sign with, `kid` names one of our keys, and
//!   that key's algorithm is that `alg`: a key verifies with exactly one
//!   algorithm, so neither `none` nor an HMAC keyed with an Ed25519 public key
//!   gets in. `jku`, `x5u` and `jwk` are never read; `crit` is refused;
//! - the signature, checked in constant time (HMAC) or strictly (Ed25519);
//! - then every claim: `typ` is "access", `iss`, `aud`, `exp`, `nbf`, `iat`,
//!   and non-empty `sub`, `sid` and `jti`.
//!
//! Key rotation: one key signs; retired keys still verify until they are
//! removed from the configuration. Ed25519 public keys are published as a
//! JWKS; HMAC secrets never leave the process.

use std::{fmt, fmt::Write as _, time::Duration, time::SystemTime};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{
    Signer as _,
    pkcs8::{DecodePrivateKey as _, DecodePublicKey as _},
};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::infra::clock::{SharedClock, to_millis};

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

type HmacSha256 = Hmac<Sha256>;

/// The longest token [`TokenIssuer::verify_access`] looks at; ours are well
/// under 1 KiB, and anything longer is refused before it is decoded.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The shortest HMAC secret we accept: 256 bits (RFC 8725 §3.5).
pub const MIN_HMAC_SECRET_LEN: usize = 32;

/// The `typ` claim of an access token.
pub const ACCESS_TOKEN_TYPE: &str = "access";

/// The JWS algorithms we sign and verify with. A key has exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Hs256,
    EdDsa,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// Case-sensitive, as JWS `alg` values are (RFC 7515 §4.1.1).
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "HS256" => Some(Self::Hs256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }
}

/// The key that signs new access tokens.
#[derive(Clone)]
pub enum SigningKey {
    /// HMAC-SHA256 with a random secret of at least [`MIN_HMAC_SECRET_LEN`]
    /// bytes; make it with [`hs256_key`].
    Hs256 {
        /// The key id written into token headers.
        kid: String,
        /// The shared secret.
        secret: Vec<u8>,
    },
    /// Ed25519; read it with [`ed25519_signing_key_from_pem`].
    EdDsa {
        /// The key id written into token headers.
        kid: String,
        /// The private key.
        key: ed25519_dalek::SigningKey,
    },
}

impl SigningKey {
    /// An Ed25519 signing key whose kid is its RFC 7638 thumbprint.
    pub fn ed25519(key: ed25519_dalek::SigningKey) -> Self {
        let kid = ed25519_thumbprint(&key.verifying_key());
        Self::EdDsa { kid, key }
    }

    /// A new random Ed25519 key, for development and tests: tokens signed
    /// with it stop verifying when the process ends.
    pub fn generate_ed25519() -> Self {
        let mut secret = [0u8; ed25519_dalek::SECRET_KEY_LENGTH];
        fill_random(&mut secret);
        Self::ed25519(ed25519_dalek::SigningKey::from_bytes(&secret))
    }

    /// The key id written into token headers.
    pub fn kid(&self) -> &str {
        match self {
            Self::Hs256 { kid, .. } | Self::EdDsa { kid, .. } => kid,
        }
    }

    /// The key that verifies what this one signs, under the same kid.
    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            Self::Hs256 { kid, secret } => VerifyingKey::Hs256 {
                kid: kid.clone(),
                secret: secret.clone(),
            },
            Self::EdDsa { kid, key } => VerifyingKey::EdDsa {
                kid: kid.clone(),
                key: key.verifying_key(),
            },
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            Self::Hs256 { .. } => Algorithm::Hs256,
            Self::EdDsa { .. } => Algorithm::EdDsa,
        }
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        match self {
            Self::Hs256 { secret, .. } => hmac_sha256(secret, input).to_vec(),
            Self::EdDsa { key, .. } => key.sign(input).to_bytes().to_vec(),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("SigningKey")
            .field("alg", &self.algorithm().name())
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

/// A key that verifies but no longer signs (rotation): a retired key
/// verifies until it is removed.
#[derive(Clone)]
pub enum VerifyingKey {
    /// HMAC-SHA256 with a shared secret.
    Hs256 {
        /// The key id tokens name in their header.
        kid: String,
        /// The shared secret.
        secret: Vec<u8>,
    },
    /// Ed25519.
    EdDsa {
        /// The key id tokens name in their header.
        kid: String,
        /// The public key.
        key: ed25519_dalek::VerifyingKey,
    },
}

impl VerifyingKey {
    /// An Ed25519 verifying key whose kid is its RFC 7638 thumbprint.
    pub fn ed25519(key: ed25519_dalek::VerifyingKey) -> Self {
        let kid = ed25519_thumbprint(&key);
        Self::EdDsa { kid, key }
    }

    /// The key id tokens name in their header.
    pub fn kid(&self) -> &str {
        match self {
            Self::Hs256 { kid, .. } | Self::EdDsa { kid, .. } => kid,
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            Self::Hs256 { .. } => Algorithm::Hs256,
            Self::EdDsa { .. } => Algorithm::EdDsa,
        }
    }

    fn same_material(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Hs256 { secret: a, .. }, Self::Hs256 { secret: b, .. }) => a == b,
            (Self::EdDsa { key: a, .. }, Self::EdDsa { key: b, .. }) => a == b,
            _ => false,
        }
    }

    fn verify(&self, input: &[u8], signature: &[u8]) -> Result<(), TokenError> {
        match self {
            Self::Hs256 { secret, .. } => {
                let mut mac =
                    HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
                mac.update(input);
                // Constant time, and a tag of any other length fails.
                mac.verify_slice(signature)
                    .map_err(|_| TokenError::Signature)
            }
            Self::EdDsa { key, .. } => {
                let signature = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| TokenError::Signature)?;
                // Strict: no small-order keys or R, no malleable signatures.
                key.verify_strict(input, &signature)
                    .map_err(|_| TokenError::Signature)
            }
        }
    }

    /// The public JWK (RFC 8037), or `None` for an HMAC secret.
    fn public_jwk(&self) -> Option<serde_json::Value> {
        match self {
            Self::Hs256 { .. } => None,
            Self::EdDsa { kid, key } => Some(serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(key.as_bytes()),
                "kid": kid,
                "alg": Algorithm::EdDsa.name(),
                "use": "sig",
            })),
        }
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.algorithm().name())
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

/// What access tokens say and how strictly their times are read.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// The `iss` we write and require.
    pub issuer: String,
    /// The `aud` we write and require (a token's `aud` may also be an array
    /// that contains it).
    pub audience: String,
    /// How long an access token is valid after it is issued.
    pub access_ttl: Duration,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
}

/// The claims of an access token, as issued and as verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience (ours, when verified).
    pub aud: String,
    /// The user.
    pub sub: String,
    /// The session the token belongs to.
    pub sid: String,
    /// Token type, always [`ACCESS_TOKEN_TYPE`].
    pub typ: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
    /// Not before, Unix seconds; we do not write it but honour it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

/// Why a token was refused. Callers answer every one the same way
/// (unauthenticated); the variants are for logs and tests.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not three canonical base64url parts of JSON objects, too long, or a
    /// claim of the wrong JSON type.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not one we use, or not the algorithm of the key `kid` names.
    #[error("unsupported or mismatched algorithm")]
    Algorithm,
    /// No `kid`, or not one of ours.
    #[error("unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// `iss` is not ours.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` does not name us.
    #[error("wrong audience")]
    Audience,
    /// `typ` is not "access".
    #[error("not an access token")]
    Type,
    /// Past `exp` (and the leeway).
    #[error("token expired")]
    Expired,
    /// Before `nbf`, or `iat` in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// A required claim is absent, null or empty.
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
}

/// Signs and verifies access tokens, and publishes the public keys.
pub struct TokenIssuer {
    signing: SigningKey,
    /// The signing key's own verifying half first, then the retired keys in
    /// the order given; each kid once.
    verifying: Vec<VerifyingKey>,
    settings: TokenSettings,
    clock: SharedClock,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("signing", &self.signing)
            .field("verifying", &self.verifying)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer signing with `signing` and also verifying with `retired`.
    /// A retired key whose kid is already taken (by the signing key or an
    /// earlier retired key) is dropped, with a warning when its material
    /// differs: a kid selects exactly one key.
    ///
    /// # Panics
    /// If an HS256 secret is shorter than [`MIN_HMAC_SECRET_LEN`]: that is a
    /// configuration error to stop at startup ([`hs256_key`] refuses them).
    pub fn new(
        signing: SigningKey,
        retired: Vec<VerifyingKey>,
        settings: TokenSettings,
        clock: SharedClock,
    ) -> Self {
        let mut verifying = vec![signing.verifying_key()];
        for key in retired {
            match verifying.iter().find(|known| known.kid() == key.kid()) {
                Some(known) if !known.same_material(&key) => {
                    tracing::warn!(
                        kid = key.kid(),
                        "retired key ignored: its kid names another key"
                    );
                }
                Some(_) => {}
                None => verifying.push(key),
            }
        }
        for key in &verifying {
            if let VerifyingKey::Hs256 { kid, secret } = key {
                assert!(
                    secret.len() >= MIN_HMAC_SECRET_LEN,
                    "HS256 key {kid}: secret shorter than {MIN_HMAC_SECRET_LEN} bytes"
                );
            }
        }
        Self {
            signing,
            verifying,
            settings,
            clock,
        }
    }

    /// The settings tokens are issued and checked with.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// Signs an access token for (user, session); returns the JWT and its
    /// claims.
    pub fn issue_access(&self, user_id: &str, session_id: &str) -> (String, AccessClaims) {
        debug_assert!(!user_id.is_empty() && !session_id.is_empty());
        let now = unix_seconds(self.clock.now());
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            sub: user_id.to_owned(),
            sid: session_id.to_owned(),
            typ: ACCESS_TOKEN_TYPE.to_owned(),
            iat: now,
            exp: now.saturating_add(whole_seconds(self.settings.access_ttl)),
            jti: random_token(16),
            nbf: None,
        };
        let header = IssuedHeader {
            alg: self.signing.algorithm().name(),
            typ: "JWT",
            kid: self.signing.kid(),
        };
        let mut token = encode_json(&header);
        token.push('.');
        token.push_str(&encode_json(&claims));
        let signature = self.signing.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        (token, claims)
    }

    /// Verifies the signature (the algorithm pinned by the key `kid` names),
    /// then every claim. Any failure rejects the whole token.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header_part), Some(payload_part), Some(signature_part), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };

        let header: ReceivedHeader = decode_json(header_part)?;
        if header.crit.is_some() || header.typ.as_deref().is_some_and(|typ| typ != "JWT") {
            return Err(TokenError::Malformed);
        }
        let alg = Algorithm::from_name(&header.alg).ok_or(TokenError::Algorithm)?;
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self
            .verifying
            .iter()
            .find(|key| key.kid() == kid)
            .ok_or(TokenError::UnknownKey)?;
        if key.algorithm() != alg {
            return Err(TokenError::Algorithm);
        }
        let signature = decode_b64(signature_part)?;
        let signing_input = &token[..header_part.len() + 1 + payload_part.len()];
        key.verify(signing_input.as_bytes(), &signature)?;

        // Only now, with the payload known to be ours, is it read.
        let claims: ReceivedClaims = decode_json(payload_part)?;
        self.check_claims(claims)
    }

    fn check_claims(&self, claims: ReceivedClaims) -> Result<AccessClaims, TokenError> {
        let typ = required(claims.typ, "typ")?;
        if typ != ACCESS_TOKEN_TYPE {
            return Err(TokenError::Type);
        }
        let iss = required(claims.iss, "iss")?;
        if iss != self.settings.issuer {
            return Err(TokenError::Issuer);
        }
        let names_us = match claims.aud.ok_or(TokenError::MissingClaim("aud"))? {
            Audience::One(aud) => aud == self.settings.audience,
            Audience::Many(auds) => auds.contains(&self.settings.audience),
        };
        if !names_us {
            return Err(TokenError::Audience);
        }

        let now = unix_seconds(self.clock.now());
        let leeway = whole_seconds(self.settings.leeway);
        let exp = claims.exp.ok_or(TokenError::MissingClaim("exp"))?;
        if now >= exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| now.saturating_add(leeway) < nbf)
        {
            return Err(TokenError::NotYetValid);
        }
        let iat = claims.iat.ok_or(TokenError::MissingClaim("iat"))?;
        if iat > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }

        Ok(AccessClaims {
            iss,
            aud: self.settings.audience.clone(),
            sub: required(claims.sub, "sub")?,
            sid: required(claims.sid, "sid")?,
            typ,
            iat,
            exp,
            jti: required(claims.jti, "jti")?,
            nbf: claims.nbf,
        })
    }

    /// The public keys as a JWKS document (RFC 7517, RFC 8037): the Ed25519
    /// keys, current first, then retired. HMAC secrets are never published,
    /// so an HS256-only issuer serves `{"keys": []}`.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .verifying
            .iter()
            .filter_map(VerifyingKey::public_jwk)
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

/// The header we write, in this field order.
#[derive(Serialize)]
struct IssuedHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

/// The header fields we read. `jku`, `x5u`, `jwk` and the rest are never
/// read: keys come only from our own configuration.
#[derive(Deserialize)]
struct ReceivedHeader {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    /// Critical extensions we would have to understand; we understand none.
    crit: Option<serde::de::IgnoredAny>,
}

/// The claims we read, each optional so a missing one is named.
#[derive(Deserialize)]
struct ReceivedClaims {
    iss: Option<String>,
    aud: Option<Audience>,
    sub: Option<String>,
    sid: Option<String>,
    typ: Option<String>,
    iat: Option<i64>,
    exp: Option<i64>,
    jti: Option<String>,
    nbf: Option<i64>,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

fn required(claim: Option<String>, name: &'static str) -> Result<String, TokenError> {
    claim
        .filter(|value| !value.is_empty())
        .ok_or(TokenError::MissingClaim(name))
}

fn encode_json(value: &impl Serialize) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("token parts serialize"))
}

/// Strict base64url: no padding, no characters outside the URL-safe
/// alphabet, no non-zero trailing bits — so one token has one spelling.
fn decode_b64(part: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)
}

/// A base64url JSON object (not an array, which serde would also map onto a
/// struct); a field we read that appears twice is refused.
fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = decode_b64(part)?;
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(TokenError::Malformed);
    }
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

fn unix_seconds(time: SystemTime) -> i64 {
    to_millis(time).div_euclid(1000)
}

fn whole_seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// The RFC 7638 thumbprint of an Ed25519 public key: base64url SHA-256 of
/// its required JWK members, in lexicographic order, without whitespace.
fn ed25519_thumbprint(key: &ed25519_dalek::VerifyingKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Reads an Ed25519 private key (PKCS#8 PEM, as `openssl genpkey -algorithm
/// ed25519` writes it); kid = its RFC 7638 JWK thumbprint.
pub fn ed25519_signing_key_from_pem(pem: &str) -> Result<SigningKey, String> {
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim())
        .map_err(|error| format!("not an Ed25519 private key in PKCS#8 PEM: {error}"))?;
    Ok(SigningKey::ed25519(key))
}

/// Reads an Ed25519 public key (SPKI PEM), or a private key PEM for its
/// public half, as a retired verifying key; kid = its RFC 7638 thumbprint.
pub fn ed25519_verifying_key_from_pem(pem: &str) -> Result<VerifyingKey, String> {
    let pem = pem.trim();
    let key = match ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
        Ok(key) => key,
        Err(public_error) => match ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            Ok(private) => private.verifying_key(),
            Err(_) => {
                return Err(format!(
                    "not an Ed25519 public key (SPKI PEM) nor private key (PKCS#8 PEM): {public_error}"
                ));
            }
        },
    };
    if key.is_weak() {
        return Err("a small-order Ed25519 public key verifies forged signatures".to_owned());
    }
    Ok(VerifyingKey::ed25519(key))
}

/// An HS256 key from a random secret of at least [`MIN_HMAC_SECRET_LEN`]
/// bytes (RFC 8725 §3.5). The kid is the first 8 bytes of a domain-separated
/// SHA-256 of the secret, base64url: stable across restarts, and of no help
/// in guessing the secret.
pub fn hs256_key(secret: &[u8]) -> Result<SigningKey, String> {
    if secret.len() < MIN_HMAC_SECRET_LEN {
        return Err(format!(
            "an HS256 secret must be at least {MIN_HMAC_SECRET_LEN} random bytes, got {}",
            secret.len()
        ));
    }
    let digest = Sha256::new()
        .chain_update(b"slop-studios HS256 kid\0")
        .chain_update(secret)
        .finalize();
    Ok(SigningKey::Hs256 {
        kid: URL_SAFE_NO_PAD.encode(&digest[..8]),
        secret: secret.to_vec(),
    })
}

/// Fills `buf` from the OS CSPRNG.
///
/// # Panics
/// If the OS cannot supply randomness: nothing secret can be made without it.
fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random number generator failed");
}

/// `bytes` random bytes from the OS CSPRNG, base64url without padding.
///
/// # Panics
/// If the OS cannot supply randomness.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256(key, message), base64url without padding — how refresh-token
/// secrets, cookie and CSRF values are derived from APP_SECRET.
pub fn hmac_b64(key: &[u8], message: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(hmac_sha256(key, message))
}

/// Equality of two strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// SHA-256 of a token, lower-case hex: how single-use tokens (password
/// reset) are stored, so a leaked table grants nothing.
pub fn sha256_hex(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(2 * digest.len());
    for byte in digest {
        write!(hex, "{byte:02x}").expect("writing to a String cannot fail");
    }
    hex
}
