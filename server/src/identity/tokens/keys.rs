//! The keys access tokens are signed and verified with, how they are read
//! from the configuration, and their key ids.
//!
//! A key has exactly one algorithm, and its kid selects it: that is what
//! pins the algorithm of a token to the key it names.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use sha2::{Digest as _, Sha256};

use crate::identity::secrets::fill_random;

/// The shortest HMAC secret we accept: 256 bits (RFC 8725 §3.5).
pub const MIN_HMAC_SECRET_LEN: usize = 32;

/// The JWS algorithms we sign and verify with. A key has exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Algorithm {
    Hs256,
    EdDsa,
}

impl Algorithm {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// Case-sensitive, as JWS `alg` values are (RFC 7515 §4.1.1).
    pub(super) fn from_name(name: &str) -> Option<Self> {
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

    /// A new random Ed25519 key, for tests: tokens signed with it stop
    /// verifying when the process ends.
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

    pub(super) fn algorithm(&self) -> Algorithm {
        match self {
            Self::Hs256 { .. } => Algorithm::Hs256,
            Self::EdDsa { .. } => Algorithm::EdDsa,
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

    pub(super) fn algorithm(&self) -> Algorithm {
        match self {
            Self::Hs256 { .. } => Algorithm::Hs256,
            Self::EdDsa { .. } => Algorithm::EdDsa,
        }
    }

    pub(super) fn same_material(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Hs256 { secret: a, .. }, Self::Hs256 { secret: b, .. }) => a == b,
            (Self::EdDsa { key: a, .. }, Self::EdDsa { key: b, .. }) => a == b,
            _ => false,
        }
    }

    /// The public JWK (RFC 8037), or `None` for an HMAC secret.
    pub(super) fn public_jwk(&self) -> Option<serde_json::Value> {
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

/// The RFC 7638 thumbprint of an Ed25519 public key: base64url SHA-256 of
/// its required JWK members, in lexicographic order, without whitespace.
pub(super) fn ed25519_thumbprint(key: &ed25519_dalek::VerifyingKey) -> String {
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
