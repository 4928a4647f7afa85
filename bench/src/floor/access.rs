//! The floor's access-token check: an HS256 JWT issued by `slop-server`,
//! verified with the server's JWT_SECRET under the server's policy
//! (server/src/identity/tokens.rs, `TokenIssuer::verify_access`), written
//! directly on `hmac` and `sha2` — the least code that makes every one of
//! those checks:
//!
//! - at most 8 KiB, three strict base64url parts (no padding, no stray bits);
//! - the header a JSON object whose `alg` is HS256, whose `kid` is the one
//!   the server derives from the secret, whose `typ`, if any, is "JWT", and
//!   with no `crit`;
//! - the HMAC-SHA256 signature, compared in constant time;
//! - the claims a JSON object: `typ` "access", the server's `iss` and `aud`
//!   (or an `aud` array naming it), `exp`, `nbf` and `iat` with the server's
//!   5 s leeway, and non-empty `sub`, `sid` and `jti`.
//!
//! The key is set once: each check clones the keyed HMAC state instead of
//! keying it again.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// The longest token looked at (the server's MAX_TOKEN_LEN).
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The server's default JWT_ISSUER (the bench does not set it).
pub const ISSUER: &str = "slop-studios";
/// The server's default JWT_AUDIENCE.
pub const AUDIENCE: &str = "slop-api";
/// The server's clock leeway on `exp`, `nbf` and `iat`, in seconds.
const LEEWAY_SECONDS: i64 = 5;

/// What a verified token says that the floor uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// The session.
    pub sid: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// Why a token was refused; ValidateToken tells an expired token from the
/// rest, as the server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a well-formed token of ours: encoding, header, key, claims.
    Invalid,
    /// The signature does not verify.
    Signature,
    /// Past `exp` and the leeway.
    Expired,
}

/// Verifies the access tokens one HS256 secret signs.
#[derive(Clone)]
pub struct AccessCheck {
    mac: Hmac<Sha256>,
    kid: String,
}

impl AccessCheck {
    /// A check for tokens signed with `secret` (JWT_SECRET's bytes).
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            mac: Hmac::new_from_slice(secret).expect("HMAC takes a key of any length"),
            kid: hs256_kid(secret),
        }
    }

    /// Checks `token` at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, Refusal> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Refusal::Invalid);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refusal::Invalid);
        };
        let header: Header = object(header)?;
        if header.alg != "HS256"
            || header.kid.as_deref() != Some(self.kid.as_str())
            || header.typ.as_deref().is_some_and(|typ| typ != "JWT")
            || header.crit.is_some()
        {
            return Err(Refusal::Invalid);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| Refusal::Invalid)?;
        let mut mac = self.mac.clone();
        mac.update(&token.as_bytes()[..header_and_payload_len(token)]);
        mac.verify_slice(&signature)
            .map_err(|_| Refusal::Signature)?;

        let claims: Payload = object(payload)?;
        let names_us = match &claims.aud {
            Some(Audience::One(aud)) => aud == AUDIENCE,
            Some(Audience::Many(auds)) => auds.iter().any(|aud| aud == AUDIENCE),
            None => false,
        };
        if claims.typ.as_deref() != Some("access")
            || claims.iss.as_deref() != Some(ISSUER)
            || !names_us
        {
            return Err(Refusal::Invalid);
        }
        let exp = claims.exp.ok_or(Refusal::Invalid)?;
        if now >= exp.saturating_add(LEEWAY_SECONDS) {
            return Err(Refusal::Expired);
        }
        let early = |at: i64| now.saturating_add(LEEWAY_SECONDS) < at;
        if claims.nbf.is_some_and(early) || claims.iat.is_none_or(early) {
            return Err(Refusal::Invalid);
        }
        let filled = |claim: Option<String>| claim.filter(|value| !value.is_empty());
        if filled(claims.jti).is_none() {
            return Err(Refusal::Invalid);
        }
        Ok(Claims {
            sub: filled(claims.sub).ok_or(Refusal::Invalid)?,
            sid: filled(claims.sid).ok_or(Refusal::Invalid)?,
            exp,
        })
    }
}

/// The kid the server gives an HS256 secret (server/src/identity/tokens/
/// keys.rs, `hs256_key`): the first 8 bytes of a domain-separated SHA-256
/// of the secret, base64url.
pub fn hs256_kid(secret: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(b"slop-studios HS256 kid\0")
        .chain_update(secret)
        .finalize();
    URL_SAFE_NO_PAD.encode(&digest[..8])
}

/// The length of `header.payload`, the signed part of a three-part token.
fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

/// A base64url part holding a JSON object (not an array, which serde would
/// also read into a struct).
fn object<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, Refusal> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| Refusal::Invalid)?;
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(Refusal::Invalid);
    }
    serde_json::from_slice(&bytes).map_err(|_| Refusal::Invalid)
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Payload {
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

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Arc,
        time::{Duration, SystemTime},
    };

    use slop_server::{
        identity::tokens::{TokenIssuer, TokenSettings, hs256_key},
        infra::clock::{ManualClock, SystemClock},
    };

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef";

    fn now() -> i64 {
        let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
        i64::try_from(since.unwrap().as_secs()).unwrap()
    }

    /// The server's own issuer, with the server's default settings.
    fn issuer(secret: &[u8], clock: slop_server::infra::clock::SharedClock) -> TokenIssuer {
        TokenIssuer::new(
            hs256_key(secret).unwrap(),
            Vec::new(),
            TokenSettings {
                issuer: ISSUER.into(),
                audience: AUDIENCE.into(),
                access_ttl: Duration::from_secs(900),
                leeway: Duration::from_secs(5),
            },
            clock,
        )
    }

    /// A token signed with `SECRET` under our kid, with any header and claims.
    fn forge(header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{signature}")
    }

    fn header() -> serde_json::Value {
        serde_json::json!({ "typ": "JWT", "alg": "HS256", "kid": hs256_kid(SECRET) })
    }

    fn claims() -> serde_json::Value {
        let now = now();
        serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "sid": "session-1",
            "typ": "access", "iat": now, "exp": now + 900, "jti": "j",
        })
    }

    #[test]
    fn the_servers_tokens_verify_with_its_secret_only() {
        let (token, issued) = issuer(SECRET, Arc::new(SystemClock)).issue_access("user-1", "s-1");
        let claims = AccessCheck::hs256(SECRET).verify(&token, now()).unwrap();
        assert_eq!(
            claims,
            Claims {
                sub: "user-1".into(),
                sid: "s-1".into(),
                exp: issued.exp
            }
        );
        let other = AccessCheck::hs256(&[b'x'; 48]);
        assert_eq!(other.verify(&token, now()), Err(Refusal::Invalid), "kid");
    }

    #[test]
    fn the_kid_is_the_servers() {
        let key = hs256_key(SECRET).unwrap();
        assert_eq!(hs256_kid(SECRET), key.kid());
    }

    #[test]
    fn a_changed_token_is_refused() {
        let (token, _) = issuer(SECRET, Arc::new(SystemClock)).issue_access("user-1", "s-1");
        let check = AccessCheck::hs256(SECRET);
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let mut flipped = signature.as_bytes().to_vec();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = format!("{signed}.{}", String::from_utf8(flipped).unwrap());
        assert_eq!(check.verify(&flipped, now()), Err(Refusal::Signature));
        assert_eq!(
            check.verify(&format!("{signed}."), now()),
            Err(Refusal::Signature)
        );
        assert_eq!(check.verify(signed, now()), Err(Refusal::Invalid));
        assert_eq!(
            check.verify(&format!("{token}.x"), now()),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            check.verify(&format!("{token}="), now()),
            Err(Refusal::Invalid),
            "padding"
        );
    }

    #[test]
    fn expiry_has_the_servers_leeway() {
        let clock = ManualClock::starting_now();
        let (token, issued) = issuer(SECRET, clock).issue_access("user-1", "s-1");
        let check = AccessCheck::hs256(SECRET);
        assert!(check.verify(&token, issued.exp + 4).is_ok());
        assert_eq!(check.verify(&token, issued.exp + 5), Err(Refusal::Expired));
        assert!(check.verify(&token, issued.iat - 5).is_ok());
        assert_eq!(
            check.verify(&token, issued.iat - 6),
            Err(Refusal::Invalid),
            "issued in the future"
        );
    }

    #[test]
    fn only_our_header_is_taken() {
        let check = AccessCheck::hs256(SECRET);
        assert!(check.verify(&forge(&header(), &claims()), now()).is_ok());
        let mut no_typ = header();
        no_typ.as_object_mut().unwrap().remove("typ");
        assert!(check.verify(&forge(&no_typ, &claims()), now()).is_ok());
        for (field, value) in [
            ("alg", serde_json::json!("none")),
            ("alg", serde_json::json!("HS512")),
            ("kid", serde_json::json!("another")),
            ("typ", serde_json::json!("at+jwt")),
            ("crit", serde_json::json!(["exp"])),
        ] {
            let mut header = header();
            header[field] = value;
            let token = forge(&header, &claims());
            assert_eq!(
                check.verify(&token, now()),
                Err(Refusal::Invalid),
                "{field}"
            );
        }
        let token = forge(&serde_json::json!([header()]), &claims());
        assert_eq!(check.verify(&token, now()), Err(Refusal::Invalid), "array");
    }

    #[test]
    fn every_claim_is_checked() {
        let check = AccessCheck::hs256(SECRET);
        let mut many = claims();
        many["aud"] = serde_json::json!(["other", AUDIENCE]);
        assert!(check.verify(&forge(&header(), &many), now()).is_ok());
        for (claim, value) in [
            ("typ", serde_json::json!("refresh")),
            ("iss", serde_json::json!("someone")),
            ("aud", serde_json::json!("other")),
            ("aud", serde_json::json!(["other"])),
            ("sub", serde_json::json!("")),
            ("sid", serde_json::json!(null)),
            ("jti", serde_json::json!("")),
            ("iat", serde_json::json!(null)),
            ("exp", serde_json::json!("soon")),
            ("nbf", serde_json::json!(now() + 60)),
        ] {
            let mut claims = claims();
            claims[claim] = value;
            let token = forge(&header(), &claims);
            assert_eq!(
                check.verify(&token, now()),
                Err(Refusal::Invalid),
                "{claim}"
            );
        }
        let token = forge(&header(), &serde_json::json!([claims()]));
        assert_eq!(check.verify(&token, now()), Err(Refusal::Invalid), "array");
    }
}
