//! The `jsonwebtoken` crypto provider: HS256 and EdDSA over the RustCrypto
//! crates the rest of the server already uses (`hmac`, `ed25519-dalek`).
//!
//! `jsonwebtoken`'s own providers are `rust_crypto`, which pulls the `rsa`
//! crate (RUSTSEC-2023-0071) with P-256 and P-384, and `aws_lc_rs`, a C
//! library; we need two algorithms and neither of those. This provider also
//! verifies Ed25519 strictly (no small-order keys or R, no malleable
//! signatures), which the `rust_crypto` provider does not. Every other
//! algorithm is refused.

use hmac::{Hmac, KeyInit as _, Mac as _};
use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, EncodingKey,
    crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils},
    errors::{ErrorKind, Result},
    signature::{self, Signer, Verifier},
};
use sha2::Sha256;

/// This process's provider; [`install`] makes it `jsonwebtoken`'s.
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    // JWKs are written by hand (`TokenIssuer::jwks`); nothing asks
    // `jsonwebtoken` to read or build one.
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes this module's provider the one `jsonwebtoken` signs and verifies
/// with, for the whole process (it has a single, process-wide slot).
///
/// # Panics
/// If another provider took the slot first: tokens would then be checked by
/// code that does not keep this module's promises.
pub(super) fn install() {
    let _ = PROVIDER.install_default();
    let installed = CryptoProvider::try_get_default();
    assert!(
        installed.is_some_and(|provider| std::ptr::eq(provider, &PROVIDER)),
        "another jsonwebtoken CryptoProvider is installed; access tokens need the server's own"
    );
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    match (algorithm, key.family()) {
        (Algorithm::HS256, AlgorithmFamily::Hmac) => Ok(Box::new(Hs256::new(key.as_bytes())?)),
        (Algorithm::EdDSA, AlgorithmFamily::Ed) => {
            use ed25519_dalek::pkcs8::DecodePrivateKey as _;
            let key = ed25519_dalek::SigningKey::from_pkcs8_der(key.as_bytes())
                .map_err(|_| ErrorKind::InvalidEddsaKey)?;
            Ok(Box::new(EdDsaSigner(key)))
        }
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    match (algorithm, key.family()) {
        (Algorithm::HS256, AlgorithmFamily::Hmac) => {
            Ok(Box::new(Hs256::new(key.try_get_as_bytes()?)?))
        }
        (Algorithm::EdDSA, AlgorithmFamily::Ed) => {
            let bytes: &[u8; 32] = key
                .try_get_as_bytes()?
                .try_into()
                .map_err(|_| ErrorKind::InvalidEddsaKey)?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
                .map_err(|_| ErrorKind::InvalidEddsaKey)?;
            Ok(Box::new(EdDsaVerifier(key)))
        }
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

/// HMAC-SHA256, keyed; signs and verifies.
struct Hs256(Hmac<Sha256>);

impl Hs256 {
    fn new(secret: &[u8]) -> Result<Self> {
        Ok(Self(
            Hmac::new_from_slice(secret).map_err(|_| ErrorKind::InvalidKeyFormat)?,
        ))
    }
}

impl Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let mut mac = self.0.clone();
        mac.update(message);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, message: &[u8], tag: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let mut mac = self.0.clone();
        mac.update(message);
        // Constant time, and a tag of any other length fails.
        mac.verify_slice(tag).map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

struct EdDsaSigner(ed25519_dalek::SigningKey);

impl Signer<Vec<u8>> for EdDsaSigner {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        Ok(self.0.sign(message).to_bytes().to_vec())
    }
}

impl JwtSigner for EdDsaSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

struct EdDsaVerifier(ed25519_dalek::VerifyingKey);

impl Verifier<Vec<u8>> for EdDsaVerifier {
    fn verify(
        &self,
        message: &[u8],
        signature: &Vec<u8>,
    ) -> std::result::Result<(), signature::Error> {
        let signature = ed25519_dalek::Signature::from_slice(signature)?;
        // Strict: no small-order keys or R, no malleable signatures.
        self.0.verify_strict(message, &signature)
    }
}

impl JwtVerifier for EdDsaVerifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}
