//! Opaque secrets: random values, and the values derived from APP_SECRET
//! that stand behind refresh tokens, session cookies and CSRF tokens.
//!
//! Unlike access tokens ([`crate::identity::tokens`]) these say nothing
//! about themselves: a refresh-token secret, a cookie MAC or a CSRF token is
//! checked by deriving it again and comparing in constant time, so only the
//! process holding APP_SECRET can make or check one.

use std::fmt::Write as _;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

type HmacSha256 = Hmac<Sha256>;

/// Fills `buf` from the OS CSPRNG.
///
/// # Panics
/// If the OS cannot supply randomness: nothing secret can be made without it.
pub(crate) fn fill_random(buf: &mut [u8]) {
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

/// HMAC-SHA256(key, message).
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256(key, message), base64url without padding — how refresh-token
/// secrets, cookie and CSRF values are derived from APP_SECRET.
pub fn hmac_b64(key: &[u8], message: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(hmac_sha256(key, message))
}

/// The value of `purpose` (`cookie`, `csrf`, `refresh`) for `value`, keyed
/// by APP_SECRET: HMAC-SHA256 over `purpose\0value`, so a value derived for
/// one purpose is never valid for another.
pub fn derive(app_secret: &[u8], purpose: &str, value: &str) -> String {
    hmac_b64(app_secret, format!("{purpose}\0{value}").as_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_separates_purposes() {
        let secret = b"app-secret";
        assert_eq!(
            derive(secret, "cookie", "session-1"),
            hmac_b64(secret, b"cookie\0session-1")
        );
        assert_ne!(
            derive(secret, "cookie", "session-1"),
            derive(secret, "csrf", "session-1")
        );
        // The separator keeps `purpose` and `value` from sliding into each other.
        assert_ne!(derive(secret, "ab", "c"), derive(secret, "a", "bc"));
    }

    #[test]
    fn random_tokens_are_url_safe_and_distinct() {
        let a = random_token(32);
        let b = random_token(32);
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(random_token(0), "");
        let many: std::collections::HashSet<_> = (0..1000).map(|_| random_token(16)).collect();
        assert_eq!(many.len(), 1000);
    }

    #[test]
    fn hmac_b64_matches_rfc_4231() {
        // RFC 4231 test case 2.
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let hex: String = URL_SAFE_NO_PAD
            .decode(hmac_b64(b"Jefe", b"what do ya want for nothing?"))
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, expected);
        assert_ne!(
            hmac_b64(b"key-1", b"message"),
            hmac_b64(b"key-2", b"message")
        );
        assert_ne!(
            hmac_b64(b"key-1", b"message"),
            hmac_b64(b"key-1", b"messagf")
        );
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq("", ""));
        assert!(constant_time_eq("same-token", "same-token"));
        assert!(!constant_time_eq("same-token", "same-tokeN"));
        assert!(!constant_time_eq("same-token", "same-token-longer"));
        assert!(!constant_time_eq("a", ""));
    }

    #[test]
    fn sha256_hex_matches_the_fips_example() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
