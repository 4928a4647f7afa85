//! Access tokens: JWTs (HS256 or EdDSA, in the compact serialization of
//! [`jws`], on the RustCrypto crates), under a strict policy (RFC 8725).
//! [`TokenIssuer::verify_access`] makes every check and rejects the whole
//! token at the first failure:
//!
//! - the token is three canonical base64url parts (no padding, no stray bits)
//!   of at most [`MAX_TOKEN_LEN`] bytes;
//! - the header's `alg` is one we sign with, `kid` names one of our keys, and
//!   that key's algorithm is that `alg`: a key verifies with exactly one
//!   algorithm, so neither `none` nor an HMAC keyed with an Ed25519 public key
//!   gets in. `jku`, `x5u` and `jwk` never select a key; `crit` is refused;
//! - the signature, checked in constant time (HMAC) or strictly (Ed25519);
//! - then every claim: `typ` is "access", `iss`, `aud`, `exp`, `nbf`, `iat`,
//!   and non-empty `sub`, `sid` and `jti`.
//!
//! This is done here rather than by a JWT library because a library does
//! not fit the policy: one takes one key, not a set selected by `kid`; it
//! reads the system clock for `exp` and `nbf`, where ours is [`SharedClock`]
//! (tests move time); it knows no `typ`, `sid` or `jti` claims, and accepts
//! any header `typ` and JSON arrays for objects. (Until issue #13 the
//! `jsonwebtoken` crate checked the signature inside this policy; on the
//! authenticated hot path it decoded the header twice and the claims
//! through a JSON map, 8.6 % of a request's CPU.)
//!
//! Key rotation: one key signs; retired keys still verify until they are
//! removed from the configuration. Ed25519 public keys are published as a
//! JWKS; HMAC secrets never leave the process. The opaque secrets (refresh
//! tokens, cookies, CSRF) are in [`crate::identity::secrets`].

use std::{borrow::Cow, fmt, time::Duration, time::SystemTime};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::infra::clock::{SharedClock, to_millis};

mod jws;
mod keys;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

/// The opaque secrets, also here for the callers that found them here
/// before [`crate::identity::secrets`] held them.
use crate::identity::secrets::random_token;
pub use keys::{
    MIN_HMAC_SECRET_LEN, SigningKey, VerifyingKey, ed25519_signing_key_from_pem,
    ed25519_verifying_key_from_pem, hs256_key,
};

#[cfg(test)]
use crate::identity::secrets::hmac_sha256;
use keys::Algorithm;
#[cfg(test)]
use keys::ed25519_thumbprint;

/// The longest token [`TokenIssuer::verify_access`] looks at; ours are well
/// under 1 KiB, and anything longer is refused before it is decoded.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The `typ` claim of an access token.
pub const ACCESS_TOKEN_TYPE: &str = "access";

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
    /// The header of the tokens `signing` signs, base64url: the same for
    /// each.
    header: String,
    /// The signing key's own verifying half first, then the retired keys in
    /// the order given; each kid once.
    verifying: Vec<VerifyingKey>,
    /// `verifying`, in the same order, ready to verify.
    verifiers: Vec<jws::Verifier>,
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
        let header = serde_json::to_vec(&IssuedHeader {
            alg: signing.algorithm().name(),
            typ: "JWT",
            kid: signing.kid(),
        })
        .expect("a header of strings serializes");
        Self {
            header: URL_SAFE_NO_PAD.encode(header),
            verifiers: verifying.iter().map(jws::Verifier::new).collect(),
            signing,
            verifying,
            settings,
            clock,
        }
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
        let payload =
            serde_json::to_vec(&claims).expect("claims of strings and integers serialize");
        let token = jws::sign_compact(&self.signing, &self.header, &payload);
        (token, claims)
    }

    /// Verifies the signature (the algorithm pinned by the key `kid` names),
    /// then every claim. Any failure rejects the whole token.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let token = jws::Compact::split(token)?;

        // The header selects the key, and so the one algorithm it verifies.
        let header_json = decode_b64(token.header)?;
        let header: ReceivedHeader = json_object(&header_json)?;
        if header.crit.is_some() || header.typ.as_deref().is_some_and(|typ| typ != "JWT") {
            return Err(TokenError::Malformed);
        }
        let alg = Algorithm::from_name(&header.alg).ok_or(TokenError::Algorithm)?;
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let kid: &str = &kid;
        let index = self
            .verifying
            .iter()
            .position(|key| key.kid() == kid)
            .ok_or(TokenError::UnknownKey)?;
        if self.verifying[index].algorithm() != alg {
            return Err(TokenError::Algorithm);
        }

        // Every part is canonical base64url (one token, one spelling); then
        // the signature; then, only with the payload known to be ours, every
        // claim.
        let payload = decode_b64(token.payload)?;
        self.verifiers[index].verify(token.signing_input, token.signature)?;
        let claims: ClaimsObject = json_object(&payload)?;
        self.check_claims(claims.0)
    }

    /// Whether an access token that expires at `exp` (unix seconds) is
    /// refused at `now`: the one expiry rule, with the leeway, for a token
    /// verified now and for a caller a connection holds.
    pub fn expired(&self, exp: i64, now: SystemTime) -> bool {
        unix_seconds(now) >= exp.saturating_add(whole_seconds(self.settings.leeway))
    }

    fn check_claims(&self, claims: ReceivedClaims<'_>) -> Result<AccessClaims, TokenError> {
        let typ = required(claims.typ, "typ")?;
        if &*typ != ACCESS_TOKEN_TYPE {
            return Err(TokenError::Type);
        }
        let iss = required(claims.iss, "iss")?;
        if *iss != *self.settings.issuer {
            return Err(TokenError::Issuer);
        }
        let names_us = match claims.aud.ok_or(TokenError::MissingClaim("aud"))? {
            Audience::One(aud) => *aud == *self.settings.audience,
            Audience::Many(auds) => auds.iter().any(|aud| **aud == *self.settings.audience),
        };
        if !names_us {
            return Err(TokenError::Audience);
        }

        let at = self.clock.now();
        let now = unix_seconds(at);
        let leeway = whole_seconds(self.settings.leeway);
        let exp = claims.exp.ok_or(TokenError::MissingClaim("exp"))?;
        if self.expired(exp, at) {
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
            iss: iss.0.into_owned(),
            aud: self.settings.audience.clone(),
            sub: required(claims.sub, "sub")?.0.into_owned(),
            sid: required(claims.sid, "sid")?.0.into_owned(),
            typ: typ.0.into_owned(),
            iat,
            exp,
            jti: required(claims.jti, "jti")?.0.into_owned(),
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

/// The header we write: `typ`, `alg`, `kid`.
#[derive(Serialize)]
struct IssuedHeader<'a> {
    typ: &'static str,
    alg: &'static str,
    kid: &'a str,
}

/// The header fields we read. `jku`, `x5u`, `jwk` and the rest never
/// select a key: keys come only from our own configuration.
#[derive(Deserialize)]
struct ReceivedHeader<'a> {
    #[serde(borrow)]
    alg: Text<'a>,
    #[serde(borrow)]
    kid: Option<Text<'a>>,
    #[serde(borrow)]
    typ: Option<Text<'a>>,
    /// Critical extensions we would have to understand; we understand none.
    crit: Option<serde::de::IgnoredAny>,
}

/// The claims we read, each optional so a missing one is named. The
/// strings are read in place from the decoded payload where they have no
/// escapes; only those an [`AccessClaims`] keeps are copied.
#[derive(Deserialize)]
struct ReceivedClaims<'a> {
    #[serde(borrow)]
    iss: Option<Text<'a>>,
    #[serde(borrow)]
    aud: Option<Audience<'a>>,
    #[serde(borrow)]
    sub: Option<Text<'a>>,
    #[serde(borrow)]
    sid: Option<Text<'a>>,
    #[serde(borrow)]
    typ: Option<Text<'a>>,
    iat: Option<i64>,
    exp: Option<i64>,
    #[serde(borrow)]
    jti: Option<Text<'a>>,
    nbf: Option<i64>,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience<'a> {
    One(#[serde(borrow)] Text<'a>),
    Many(#[serde(borrow)] Vec<Text<'a>>),
}

/// A JSON string, read in place from the decoded JSON when it has no
/// escapes, else unescaped into a copy. (serde borrows a `Cow` only as a
/// field's own type, never inside an `Option`.)
struct Text<'a>(Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InPlace<'a>(std::marker::PhantomData<Text<'a>>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for InPlace<'a> {
            type Value = Text<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(value)))
            }

            fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(value.to_owned())))
            }

            fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(value)))
            }
        }
        deserializer.deserialize_str(InPlace(std::marker::PhantomData))
    }
}

fn required<'a>(claim: Option<Text<'a>>, name: &'static str) -> Result<Text<'a>, TokenError> {
    claim
        .filter(|value| !value.is_empty())
        .ok_or(TokenError::MissingClaim(name))
}

/// [`ReceivedClaims`] read only from a JSON object: serde would also map
/// an array onto the struct. A claim that appears twice is refused, as the
/// struct refuses it.
struct ClaimsObject<'a>(ReceivedClaims<'a>);

impl<'de> Deserialize<'de> for ClaimsObject<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> serde::de::Visitor<'de> for ObjectOnly {
            type Value = ClaimsObject<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of claims")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                ReceivedClaims::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ClaimsObject)
            }
        }
        deserializer.deserialize_map(ObjectOnly)
    }
}

/// Strict base64url: no padding, no characters outside the URL-safe
/// alphabet, no non-zero trailing bits — so one token has one spelling.
fn decode_b64(part: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)
}

/// A JSON object (not an array, which serde would also map onto a struct);
/// a field we read that appears twice is refused.
fn json_object<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, TokenError> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(TokenError::Malformed);
    }
    serde_json::from_slice(bytes).map_err(|_| TokenError::Malformed)
}

fn unix_seconds(time: SystemTime) -> i64 {
    to_millis(time).div_euclid(1000)
}

fn whole_seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
