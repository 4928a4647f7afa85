//! The JWS compact serialization (RFC 7515 §7.1) of our access tokens, over
//! the RustCrypto crates the rest of the server already uses (`hmac`,
//! `ed25519-dalek`): HS256 and EdDSA, nothing else.
//!
//! A JWT library would add nothing here: the policy around a signature
//! (which key a `kid` selects, the one algorithm that key verifies with, the
//! header's and the claims' rules) is ours in any case, in the parent
//! module. What is left is a split on `.`, strict base64url and the
//! signature, here. Each verifying key is prepared once: an HMAC keyed at
//! startup (its padded key blocks already absorbed), an Ed25519 point
//! already decompressed.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

use super::{SigningKey, TokenError, VerifyingKey};

/// The parts of a compact JWS, still encoded.
pub(super) struct Compact<'a> {
    /// The header, base64url.
    pub header: &'a str,
    /// The payload, base64url.
    pub payload: &'a str,
    /// What the signature covers: `header.payload`.
    pub signing_input: &'a [u8],
    /// The signature, base64url.
    pub signature: &'a str,
}

impl<'a> Compact<'a> {
    /// Exactly three parts separated by `.`; anything else is malformed.
    pub(super) fn split(token: &'a str) -> Result<Self, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        Ok(Self {
            header,
            payload,
            signing_input: &token.as_bytes()[..header.len() + 1 + payload.len()],
            signature,
        })
    }
}

/// A key ready to verify signatures with its one algorithm.
pub(super) enum Verifier {
    /// HMAC-SHA256, keyed once; cloned per token.
    Hs256(Hmac<Sha256>),
    /// Ed25519, checked strictly.
    EdDsa(ed25519_dalek::VerifyingKey),
}

/// The longest signature of our algorithms (Ed25519's).
const MAX_SIGNATURE: usize = ed25519_dalek::SIGNATURE_LENGTH;

impl Verifier {
    pub(super) fn new(key: &VerifyingKey) -> Self {
        match key {
            VerifyingKey::Hs256 { secret, .. } => {
                Self::Hs256(Hmac::new_from_slice(secret).expect("HMAC takes keys of any length"))
            }
            VerifyingKey::EdDsa { key, .. } => Self::EdDsa(*key),
        }
    }

    /// Whether `signature` (base64url, canonical) signs `input` under this
    /// key. A signature of the wrong length fails like a wrong one.
    pub(super) fn verify(&self, input: &[u8], signature: &str) -> Result<(), TokenError> {
        // Room for a few bytes more than ours, so that a signature one
        // byte too long fails as a signature; a longer one cannot be ours,
        // and is refused before decoding.
        const MAX_ENCODED: usize = MAX_SIGNATURE.div_ceil(3) * 4;
        let mut bytes = [0u8; MAX_ENCODED / 4 * 3];
        if signature.len() > MAX_ENCODED {
            return Err(TokenError::Signature);
        }
        let len = URL_SAFE_NO_PAD
            .decode_slice(signature, &mut bytes)
            .map_err(|_| TokenError::Malformed)?;
        let signature = &bytes[..len];
        let good = match self {
            Self::Hs256(keyed) => {
                let mut mac = keyed.clone();
                mac.update(input);
                // Constant time; a tag of another length fails.
                mac.verify_slice(signature).is_ok()
            }
            Self::EdDsa(key) => ed25519_dalek::Signature::from_slice(signature)
                // Strict: no small-order keys or R, no malleable signatures.
                .is_ok_and(|signature| key.verify_strict(input, &signature).is_ok()),
        };
        if good {
            Ok(())
        } else {
            Err(TokenError::Signature)
        }
    }
}

impl SigningKey {
    /// The raw signature over `input`.
    pub(super) fn sign(&self, input: &[u8]) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        match self {
            Self::Hs256 { secret, .. } => {
                crate::identity::secrets::hmac_sha256(secret, input).to_vec()
            }
            Self::EdDsa { key, .. } => key.sign(input).to_bytes().to_vec(),
        }
    }
}

/// `header.payload.signature`, each part base64url without padding;
/// `header` is already encoded.
pub(super) fn sign_compact(key: &SigningKey, header: &str, payload: &[u8]) -> String {
    let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 96);
    token.push_str(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = key.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hs256_verifies_the_rfc_7515_example() {
        // RFC 7515 appendix A.1: the key (a JWK's `k`), the signing input
        // and its signature.
        let secret = URL_SAFE_NO_PAD
            .decode(
                "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
            )
            .unwrap();
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.\
                     eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.\
                     dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let key = VerifyingKey::Hs256 {
            kid: "k".to_owned(),
            secret,
        };
        let compact = Compact::split(token).unwrap();
        assert_eq!(
            Verifier::new(&key).verify(compact.signing_input, compact.signature),
            Ok(())
        );
        let mut tampered = compact.signing_input.to_vec();
        tampered[0] ^= 1;
        assert_eq!(
            Verifier::new(&key).verify(&tampered, compact.signature),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn signatures_of_the_wrong_size_fail_without_panics() {
        let key = VerifyingKey::Hs256 {
            kid: "k".to_owned(),
            secret: vec![7; 32],
        };
        let verifier = Verifier::new(&key);
        for signature in [
            "",
            "AA",
            &"A".repeat(86),
            &"A".repeat(87),
            &"A".repeat(10_000),
        ] {
            assert!(
                verifier.verify(b"x.y", signature).is_err(),
                "{}",
                signature.len()
            );
        }
        let ed =
            VerifyingKey::ed25519(ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key());
        let verifier = Verifier::new(&ed);
        for signature in ["", "AA", &"A".repeat(43), &"A".repeat(86), &"A".repeat(88)] {
            assert!(
                verifier.verify(b"x.y", signature).is_err(),
                "{}",
                signature.len()
            );
        }
    }

    #[test]
    fn split_wants_exactly_three_parts() {
        for token in ["", "a", "a.b", "a.b.c.d", "a..b.c"] {
            assert!(Compact::split(token).is_err(), "{token:?}");
        }
        let compact = Compact::split("h.p.s").unwrap();
        assert_eq!(
            (
                compact.header,
                compact.payload,
                compact.signing_input,
                compact.signature
            ),
            ("h", "p", &b"h.p"[..], "s")
        );
        assert!(
            Compact::split("..").is_ok(),
            "empty parts fail later, as malformed"
        );
    }
}
