//! Each test names the attack or rule it guards; each builds the offending
//! token itself, so removing the check it guards makes it fail.

use std::{
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use ed25519_dalek::pkcs8::{
    EncodePrivateKey as _, EncodePublicKey as _, spki::der::pem::LineEnding,
};
use serde_json::{Value, json};

use super::*;
use crate::infra::clock::ManualClock;

const ISSUER: &str = "https://auth.slop.test";
const AUDIENCE: &str = "slop-api";
const TTL: Duration = Duration::from_secs(900);
const LEEWAY: Duration = Duration::from_secs(30);
const START: i64 = 1_700_000_000;

/// A test-only key, as `openssl genpkey -algorithm ed25519` wrote it.
const OPENSSL_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIAJhq/eTHx0PZIgGzDqq6kpML2stPvDZICIJ0dM7ENit
-----END PRIVATE KEY-----
";
/// Its public half, as `openssl pkey -pubout` wrote it.
const OPENSSL_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAQ9tbxPsK7PGzVU2cEiW5ufCCxzcnSk9Mrql9bvX9GWQ=
-----END PUBLIC KEY-----
";

fn settings() -> TokenSettings {
    TokenSettings {
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        access_ttl: TTL,
        leeway: LEEWAY,
    }
}

fn clock() -> Arc<ManualClock> {
    ManualClock::new(UNIX_EPOCH + Duration::from_secs(START as u64))
}

fn issuer_with(signing: SigningKey, retired: Vec<VerifyingKey>) -> (TokenIssuer, Arc<ManualClock>) {
    let clock = clock();
    (
        TokenIssuer::new(signing, retired, settings(), clock.clone()),
        clock,
    )
}

fn hs_key() -> SigningKey {
    hs256_key(&[0x5a; 32]).unwrap()
}

fn ed_key() -> SigningKey {
    ed25519_signing_key_from_pem(OPENSSL_PRIVATE_PEM).unwrap()
}

fn ed_public(key: &SigningKey) -> ed25519_dalek::VerifyingKey {
    match key {
        SigningKey::EdDsa { key, .. } => key.verifying_key(),
        SigningKey::Hs256 { .. } => panic!("not an Ed25519 key"),
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_json(value: &Value) -> String {
    b64(&serde_json::to_vec(value).unwrap())
}

/// Claims that pass every check at the clock's start.
fn good_claims() -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "sid": "session-1",
        "typ": "access", "iat": START, "exp": START + 900, "jti": "jti-1",
    })
}

fn header_for(key: &SigningKey) -> Value {
    json!({ "alg": key.algorithm().name(), "typ": "JWT", "kid": key.kid() })
}

/// A token with any header and claims, signed by `key`.
fn forge(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// A token with any header and claims, HMAC-signed with any bytes.
fn forge_hmac(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    format!("{input}.{}", b64(&hmac_sha256(secret, input.as_bytes())))
}

/// `claims` with `edit` applied, signed properly by `key`.
fn signed_with(key: &SigningKey, edit: impl FnOnce(&mut Value)) -> String {
    let mut claims = good_claims();
    edit(&mut claims);
    forge(key, &header_for(key), &claims)
}

fn parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

// Round trips.

#[test]
fn hs256_tokens_round_trip() {
    let (issuer, _) = issuer_with(hs_key(), vec![]);
    let (token, claims) = issuer.issue_access("user-1", "session-1");
    assert_eq!(issuer.verify_access(&token), Ok(claims.clone()));
    assert_eq!(
        decode_part(&parts(&token)[0]),
        json!({ "alg": "HS256", "typ": "JWT", "kid": hs_key().kid() })
    );
    assert_eq!(
        (
            claims.iss.as_str(),
            claims.aud.as_str(),
            claims.sub.as_str(),
            claims.sid.as_str()
        ),
        (ISSUER, AUDIENCE, "user-1", "session-1")
    );
    assert_eq!(
        (claims.typ.as_str(), claims.iat, claims.exp, claims.nbf),
        ("access", START, START + 900, None)
    );
    // jti: 128 random bits, base64url.
    assert_eq!(URL_SAFE_NO_PAD.decode(&claims.jti).unwrap().len(), 16);
    let (_, other) = issuer.issue_access("user-1", "session-1");
    assert_ne!(claims.jti, other.jti);
}

#[test]
fn claims_and_headers_written_with_escapes_read_the_same() {
    // The verifier reads strings in place when they have no escapes; a
    // token whose JSON escapes them (as another JSON writer may, or an
    // issuer with a quote in it must) is the same token.
    let (issuer, _) = issuer_with(hs_key(), vec![]);
    let key = hs_key();
    let escape = |text: &str| {
        text.chars()
            .map(|c| format!("\\u{:04x}", u32::from(c)))
            .collect::<String>()
    };
    let header = format!(
        r#"{{"alg":"{}","typ":"{}","kid":"{}"}}"#,
        escape("HS256"),
        escape("JWT"),
        escape(key.kid())
    );
    let claims = format!(
        r#"{{"iss":"{}","aud":["{}"],"sub":"{}","sid":"session-1","typ":"{}","iat":{START},"exp":{},"jti":"{}"}}"#,
        escape(ISSUER),
        escape(AUDIENCE),
        escape("user-1"),
        escape("access"),
        START + 900,
        escape("jti-1"),
    );
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let token = format!("{input}.{}", b64(&key.sign(input.as_bytes())));
    let verified = issuer.verify_access(&token).unwrap();
    assert_eq!(
        (
            verified.iss.as_str(),
            verified.sub.as_str(),
            verified.jti.as_str()
        ),
        (ISSUER, "user-1", "jti-1")
    );
}

#[test]
fn eddsa_tokens_round_trip() {
    let (issuer, _) = issuer_with(ed_key(), vec![]);
    let (token, claims) = issuer.issue_access("user-1", "session-1");
    assert_eq!(issuer.verify_access(&token), Ok(claims));
    assert_eq!(
        decode_part(&parts(&token)[0]),
        json!({ "alg": "EdDSA", "typ": "JWT", "kid": ed_key().kid() })
    );
    assert_eq!(URL_SAFE_NO_PAD.decode(&parts(&token)[2]).unwrap().len(), 64);
}

#[test]
fn the_payload_is_exactly_the_claims() {
    let (issuer, _) = issuer_with(ed_key(), vec![]);
    let (token, claims) = issuer.issue_access("user-1", "session-1");
    assert_eq!(
        decode_part(&parts(&token)[1]),
        serde_json::to_value(&claims).unwrap()
    );
    assert!(decode_part(&parts(&token)[1]).get("nbf").is_none());
}

#[test]
fn eddsa_signs_the_rfc_8037_example() {
    // RFC 8037 appendix A.1 (key), A.3 (thumbprint) and A.4 (signature).
    let d = URL_SAFE_NO_PAD
        .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
        .unwrap();
    let key = SigningKey::ed25519(ed25519_dalek::SigningKey::from_bytes(
        &d.try_into().unwrap(),
    ));
    assert_eq!(
        b64(ed_public(&key).as_bytes()),
        "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    );
    assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    let signature = key.sign(b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc");
    assert_eq!(
        b64(&signature),
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
    );
}

// Tampering.

#[test]
fn a_tampered_payload_fails_the_signature() {
    for key in [hs_key(), ed_key()] {
        let (issuer, _) = issuer_with(key, vec![]);
        let (token, _) = issuer.issue_access("user-1", "session-1");
        let p = parts(&token);
        let mut claims = decode_part(&p[1]);
        claims["sub"] = json!("admin");
        let tampered = format!("{}.{}.{}", p[0], b64_json(&claims), p[2]);
        assert_eq!(issuer.verify_access(&tampered), Err(TokenError::Signature));
    }
}

#[test]
fn a_tampered_header_fails_the_signature() {
    let (issuer, _) = issuer_with(ed_key(), vec![]);
    let (token, _) = issuer.issue_access("user-1", "session-1");
    let p = parts(&token);
    let mut header = decode_part(&p[0]);
    header["x-extra"] = json!(1);
    let tampered = format!("{}.{}.{}", b64_json(&header), p[1], p[2]);
    assert_eq!(issuer.verify_access(&tampered), Err(TokenError::Signature));
}

#[test]
fn a_tampered_or_truncated_signature_fails() {
    for key in [hs_key(), ed_key()] {
        let (issuer, _) = issuer_with(key, vec![]);
        let (token, _) = issuer.issue_access("user-1", "session-1");
        let p = parts(&token);
        let signature = URL_SAFE_NO_PAD.decode(&p[2]).unwrap();
        for bad in [
            {
                let mut flipped = signature.clone();
                flipped[0] ^= 1;
                flipped
            },
            {
                let mut flipped = signature.clone();
                *flipped.last_mut().unwrap() ^= 0x80;
                flipped
            },
            signature[..signature.len() - 1].to_vec(),
            [signature.clone(), vec![0]].concat(),
            vec![],
            vec![0; signature.len()],
        ] {
            let tampered = format!("{}.{}.{}", p[0], p[1], b64(&bad));
            assert_eq!(
                issuer.verify_access(&tampered),
                Err(TokenError::Signature),
                "{bad:?}"
            );
        }
    }
}

// Algorithm confusion.

#[test]
fn alg_none_is_refused_with_or_without_a_signature() {
    for key in [hs_key(), ed_key()] {
        let (issuer, _) = issuer_with(key.clone(), vec![]);
        for alg in ["none", "None", "NONE", "nOnE", ""] {
            let header = json!({ "alg": alg, "typ": "JWT", "kid": key.kid() });
            let unsigned = format!("{}.{}.", b64_json(&header), b64_json(&good_claims()));
            assert_eq!(
                issuer.verify_access(&unsigned),
                Err(TokenError::Algorithm),
                "{alg}"
            );
            // Signed by the real key, which must not make `none` acceptable.
            let signed = forge(&key, &header, &good_claims());
            assert_eq!(
                issuer.verify_access(&signed),
                Err(TokenError::Algorithm),
                "{alg}"
            );
        }
    }
}

#[test]
fn algorithms_we_do_not_use_are_refused() {
    let key = hs_key();
    let (issuer, _) = issuer_with(key.clone(), vec![]);
    for alg in [
        "HS384", "HS512", "hs256", "RS256", "ES256", "PS256", "Ed25519", "EDDSA",
    ] {
        let header = json!({ "alg": alg, "typ": "JWT", "kid": key.kid() });
        assert_eq!(
            issuer.verify_access(&forge(&key, &header, &good_claims())),
            Err(TokenError::Algorithm),
            "{alg}"
        );
    }
    let no_alg = json!({ "typ": "JWT", "kid": key.kid() });
    assert_eq!(
        issuer.verify_access(&forge(&key, &no_alg, &good_claims())),
        Err(TokenError::Malformed)
    );
    let numeric_alg = json!({ "alg": 256, "typ": "JWT", "kid": key.kid() });
    assert_eq!(
        issuer.verify_access(&forge(&key, &numeric_alg, &good_claims())),
        Err(TokenError::Malformed)
    );
}

#[test]
fn an_hs256_token_does_not_pass_an_eddsa_issuer() {
    let ed = ed_key();
    let (issuer, _) = issuer_with(ed.clone(), vec![]);
    // Signed by some HMAC key, under its own kid: not one of ours.
    let hs = hs_key();
    assert_eq!(
        issuer.verify_access(&forge(&hs, &header_for(&hs), &good_claims())),
        Err(TokenError::UnknownKey)
    );
    // Under our Ed25519 kid: that key is not an HMAC key.
    let header = json!({ "alg": "HS256", "typ": "JWT", "kid": ed.kid() });
    assert_eq!(
        issuer.verify_access(&forge(&hs, &header, &good_claims())),
        Err(TokenError::Algorithm)
    );
}

#[test]
fn an_eddsa_token_does_not_pass_an_hs256_issuer() {
    let hs = hs_key();
    let (issuer, _) = issuer_with(hs.clone(), vec![]);
    let ed = ed_key();
    assert_eq!(
        issuer.verify_access(&forge(&ed, &header_for(&ed), &good_claims())),
        Err(TokenError::UnknownKey)
    );
    let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": hs.kid() });
    assert_eq!(
        issuer.verify_access(&forge(&ed, &header, &good_claims())),
        Err(TokenError::Algorithm)
    );
}

#[test]
fn hmac_keyed_with_the_ed25519_public_key_is_refused() {
    // The classic: the public key is public, so an attacker HMACs with it
    // and hopes the verifier feeds "the key" to whichever alg is asked for.
    let ed = ed_key();
    let public = ed_public(&ed);
    let (issuer, _) = issuer_with(ed.clone(), vec![]);
    let public_der = public.to_public_key_der().unwrap();
    let public_pem = public.to_public_key_pem(LineEnding::LF).unwrap();
    let x = b64(public.as_bytes());
    let secrets: [&[u8]; 4] = [
        public.as_bytes(),
        public_der.as_bytes(),
        public_pem.as_bytes(),
        x.as_bytes(),
    ];
    for secret in secrets {
        for header in [
            json!({ "alg": "HS256", "typ": "JWT", "kid": ed.kid() }),
            json!({ "alg": "HS256", "typ": "JWT" }),
        ] {
            let token = forge_hmac(secret, &header, &good_claims());
            let refused = issuer.verify_access(&token);
            assert!(
                matches!(refused, Err(TokenError::Algorithm | TokenError::UnknownKey)),
                "{refused:?}"
            );
        }
    }
    // Even with our kid and a correct alg name, the HMAC is no Ed25519 signature.
    let token = forge_hmac(public.as_bytes(), &header_for(&ed), &good_claims());
    assert_eq!(issuer.verify_access(&token), Err(TokenError::Signature));
}

#[test]
fn headers_that_carry_keys_are_ignored() {
    // An attacker signs with their own key and points at it every way JOSE
    // allows; only our kid can select a key, and then our key verifies.
    let ours = ed_key();
    let (issuer, _) = issuer_with(ours.clone(), vec![]);
    let theirs = SigningKey::generate_ed25519();
    let their_jwk = theirs.verifying_key().public_jwk().unwrap();
    for kid in [theirs.kid(), ours.kid()] {
        let header = json!({
            "alg": "EdDSA", "typ": "JWT", "kid": kid,
            "jwk": their_jwk, "jku": "https://evil.test/jwks.json", "x5u": "https://evil.test/cert.pem",
        });
        let expected = if kid == ours.kid() {
            TokenError::Signature
        } else {
            TokenError::UnknownKey
        };
        assert_eq!(
            issuer.verify_access(&forge(&theirs, &header, &good_claims())),
            Err(expected)
        );
    }
    // The same headers on a token we did sign change nothing.
    let header = json!({
        "alg": "EdDSA", "typ": "JWT", "kid": ours.kid(),
        "jwk": their_jwk, "jku": "https://evil.test/jwks.json", "x5u": "https://evil.test/cert.pem",
    });
    assert!(
        issuer
            .verify_access(&forge(&ours, &header, &good_claims()))
            .is_ok()
    );
}

#[test]
fn critical_extensions_and_foreign_types_are_refused() {
    let key = ed_key();
    let (issuer, _) = issuer_with(key.clone(), vec![]);
    let crit = json!({ "alg": "EdDSA", "typ": "JWT", "kid": key.kid(), "crit": ["exp"], "exp": 1 });
    assert_eq!(
        issuer.verify_access(&forge(&key, &crit, &good_claims())),
        Err(TokenError::Malformed)
    );
    let typed = json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": key.kid() });
    assert_eq!(
        issuer.verify_access(&forge(&key, &typed, &good_claims())),
        Err(TokenError::Malformed)
    );
    let untyped = json!({ "alg": "EdDSA", "kid": key.kid() });
    assert!(
        issuer
            .verify_access(&forge(&key, &untyped, &good_claims()))
            .is_ok()
    );
}

// Claims.

#[test]
fn the_wrong_issuer_is_refused() {
    let key = ed_key();
    let (issuer, _) = issuer_with(key.clone(), vec![]);
    for iss in [
        json!("https://evil.test"),
        json!("https://auth.slop.test/"),
        json!(""),
    ] {
        let token = signed_with(&key, |c| c["iss"] = iss.clone());
        let expected = if iss == "" {
            TokenError::MissingClaim("iss")
        } else {
            TokenError::Issuer
        };
        assert_eq!(issuer.verify_access(&token), Err(expected), "{iss}");
    }
}

#[test]
fn the_audience_must_name_us() {
    let key = ed_key();
    let (issuer, _) = issuer_with(key.clone(), vec![]);
    let wrong = signed_with(&key, |c| c["aud"] = json!("other-api"));
    assert_eq!(issuer.verify_access(&wrong), Err(TokenError::Audience));
    let others = signed_with(&key, |c| c["aud"] = json!(["other-api", "slop-api-2"]));
    assert_eq!(issuer.verify_access(&others), Err(TokenError::Audience));
    let none = signed_with(&key, |c| c["aud"] = json!([]));
    assert_eq!(issuer.verify_access(&none), Err(TokenError::Audience));
    let among = signed_with(&key, |c| c["aud"] = json!(["other-api", AUDIENCE]));
    assert_eq!(
        issuer.verify_access(&among).map(|c| c.aud),
        Ok(AUDIENCE.to_owned())
    );
    let numeric = signed_with(&key, |c| c["aud"] = json!(7));
    assert_eq!(issuer.verify_access(&numeric), Err(TokenError::Malformed));
}

#[test]
fn a_refresh_typed_token_is_not_an_access_token() {
    let key = hs_key();
    let (issuer, _) = issuer_with(key.clone(), vec![]);
    for typ in ["refresh", "Access", "id", "reset"] {
        let token = signed_with(&key, |c| c["typ"] = json!(typ));
        assert_eq!(issuer.verify_access(&token), Err(TokenError::Type), "{typ}");
    }
}

#[test]
fn every_required_claim_must_be_present_and_non_empty() {
    let key = ed_key();
    let (issuer, _) = issuer_with(key.clone(), vec![]);
    for name in ["iss", "aud", "sub", "sid", "typ", "iat", "exp", "jti"] {
        let token = signed_with(&key, |c| {
            c.as_object_mut().unwrap().remove(name);
        });
        assert_eq!(
            issuer.verify_access(&token),
            Err(TokenError::MissingClaim(name)),
            "{name} absent"
        );
        let token = signed_with(&key, |c| c[name] = Value::Null);
        assert_eq!(
            issuer.verify_access(&token),
            Err(TokenError::MissingClaim(name)),
            "{name} null"
        );
    }
    for name in ["sub", "sid", "jti"] {
        let token = signed_with(&key, |c| c[name] = json!(""));
        assert_eq!(
            issuer.verify_access(&token),
            Err(TokenError::MissingClaim(name)),
            "{name} empty"
        );
    }
}

#[test]
fn claims_of_the_wrong_json_type_are_malformed() {
    let key = ed_key();
    let (issuer, _) = issuer_with(key.clone(), vec![]);
    for (name, value) in [
        ("exp", json!("1700000900")),
        ("exp", json!(1_700_000_900.5)),
        ("iat", json!(true)),
        ("nbf", json!("soon")),
        ("sub", json!(42)),
        ("sid", json!(["session-1"])),
    ] {
        let token = signed_with(&key, |c| c[name] = value.clone());
        assert_eq!(
            issuer.verify_access(&token),
            Err(TokenError::Malformed),
            "{name}: {value}"
        );
    }
}

#[test]
fn a_claim_given_twice_is_malformed() {
    let key = ed_key();
    let (issuer, _) = issuer_with(key.clone(), vec![]);
    let payload = format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"user-1","sub":"admin","sid":"s","typ":"access","iat":{START},"exp":{},"jti":"j"}}"#,
        START + 900
    );
    let input = format!(
        "{}.{}",
        b64_json(&header_for(&key)),
        b64(payload.as_bytes())
    );
    let token = format!("{input}.{}", b64(&key.sign(input.as_bytes())));
    assert_eq!(issuer.verify_access(&token), Err(TokenError::Malformed));
}

#[test]
fn tokens_expire_after_the_leeway_and_not_before() {
    for key in [hs_key(), ed_key()] {
        let (issuer, clock) = issuer_with(key, vec![]);
        let (token, claims) = issuer.issue_access("user-1", "session-1");
        clock.advance(TTL + LEEWAY - Duration::from_secs(1));
        assert_eq!(issuer.verify_access(&token), Ok(claims));
        clock.advance(Duration::from_secs(1));
        assert_eq!(issuer.verify_access(&token), Err(TokenError::Expired));
        clock.advance(Duration::from_secs(86_400));
        assert_eq!(issuer.verify_access(&token), Err(TokenError::Expired));
    }
}

#[test]
fn extreme_times_neither_panic_nor_pass() {
    let key = ed_key();
    let (issuer, _) = issuer_with(key.clone(), vec![]);
    let expired = signed_with(&key, |c| c["exp"] = json!(i64::MIN));
    assert_eq!(issuer.verify_access(&expired), Err(TokenError::Expired));
    let far = signed_with(&key, |c| c["nbf"] = json!(i64::MAX));
    assert_eq!(issuer.verify_access(&far), Err(TokenError::NotYetValid));
    let too_big = signed_with(&key, |c| c["exp"] = json!(u64::MAX));
    assert_eq!(issuer.verify_access(&too_big), Err(TokenError::Malformed));
}

#[test]
fn nbf_in_the_future_is_not_yet_valid() {
    let key = ed_key();
    let (issuer, clock) = issuer_with(key.clone(), vec![]);
    let leeway = LEEWAY.as_secs() as i64;
    let early = signed_with(&key, |c| c["nbf"] = json!(START + leeway + 1));
    assert_eq!(issuer.verify_access(&early), Err(TokenError::NotYetValid));
    clock.advance(Duration::from_secs(1));
    assert!(issuer.verify_access(&early).is_ok());
    let within = signed_with(&key, |c| c["nbf"] = json!(START + leeway));
    assert_eq!(
        issuer.verify_access(&within).map(|c| c.nbf),
        Ok(Some(START + leeway))
    );
}

#[test]
fn iat_in_the_future_is_not_yet_valid() {
    let key = ed_key();
    let (issuer, _) = issuer_with(key.clone(), vec![]);
    let leeway = LEEWAY.as_secs() as i64;
    let future = signed_with(&key, |c| c["iat"] = json!(START + leeway + 1));
    assert_eq!(issuer.verify_access(&future), Err(TokenError::NotYetValid));
    let skewed = signed_with(&key, |c| c["iat"] = json!(START + leeway));
    assert!(issuer.verify_access(&skewed).is_ok());
}

// Keys and rotation.

#[test]
fn an_unknown_or_missing_kid_is_refused() {
    let key = ed_key();
    let (issuer, _) = issuer_with(key.clone(), vec![]);
    for header in [
        json!({ "alg": "EdDSA", "typ": "JWT", "kid": "not-ours" }),
        json!({ "alg": "EdDSA", "typ": "JWT", "kid": "" }),
        json!({ "alg": "EdDSA", "typ": "JWT" }),
    ] {
        assert_eq!(
            issuer.verify_access(&forge(&key, &header, &good_claims())),
            Err(TokenError::UnknownKey)
        );
    }
    let numeric_kid = json!({ "alg": "EdDSA", "typ": "JWT", "kid": 1 });
    assert_eq!(
        issuer.verify_access(&forge(&key, &numeric_kid, &good_claims())),
        Err(TokenError::Malformed)
    );
}

#[test]
fn a_retired_key_verifies_until_it_is_removed() {
    for (old, new) in [
        (ed_key(), SigningKey::generate_ed25519()),
        (hs_key(), hs256_key(&[0x77; 48]).unwrap()),
    ] {
        let (before, _) = issuer_with(old.clone(), vec![]);
        let (old_token, old_claims) = before.issue_access("user-1", "session-1");

        let (rotated, _) = issuer_with(new.clone(), vec![old.verifying_key()]);
        assert_eq!(rotated.verify_access(&old_token), Ok(old_claims));
        let (new_token, new_claims) = rotated.issue_access("user-1", "session-1");
        assert_eq!(decode_part(&parts(&new_token)[0])["kid"], json!(new.kid()));
        assert_eq!(rotated.verify_access(&new_token), Ok(new_claims.clone()));

        let (removed, _) = issuer_with(new, vec![]);
        assert_eq!(
            removed.verify_access(&old_token),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(removed.verify_access(&new_token), Ok(new_claims));
    }
}

#[test]
fn a_retired_hs256_key_verifies_beside_an_eddsa_signing_key() {
    let old = hs_key();
    let (before, _) = issuer_with(old.clone(), vec![]);
    let (token, claims) = before.issue_access("user-1", "session-1");
    let (rotated, _) = issuer_with(ed_key(), vec![old.verifying_key()]);
    assert_eq!(rotated.verify_access(&token), Ok(claims));
}

#[test]
fn a_kid_selects_one_key_only() {
    // A retired key reusing the signing key's kid is dropped, so the kid
    // cannot name two keys (or two algorithms).
    let signing = ed_key();
    let impostor = VerifyingKey::Hs256 {
        kid: signing.kid().to_owned(),
        secret: vec![1; 32],
    };
    let (issuer, _) = issuer_with(signing.clone(), vec![impostor, signing.verifying_key()]);
    let header = json!({ "alg": "HS256", "typ": "JWT", "kid": signing.kid() });
    assert_eq!(
        issuer.verify_access(&forge_hmac(&[1; 32], &header, &good_claims())),
        Err(TokenError::Algorithm)
    );
    assert_eq!(issuer.jwks()["keys"].as_array().unwrap().len(), 1);
}

#[test]
#[should_panic(expected = "shorter than 32 bytes")]
fn an_issuer_refuses_a_short_hmac_secret() {
    let short = SigningKey::Hs256 {
        kid: "short".to_owned(),
        secret: b"password".to_vec(),
    };
    let _ = issuer_with(short, vec![]);
}

#[test]
fn jwks_publishes_the_ed25519_keys_and_no_hmac_material() {
    let current = ed_key();
    let retired_ed = SigningKey::generate_ed25519();
    let retired_hs = hs_key();
    let (issuer, _) = issuer_with(
        current.clone(),
        vec![retired_ed.verifying_key(), retired_hs.verifying_key()],
    );
    let jwks = issuer.jwks();
    let expected: Vec<Value> = [&current, &retired_ed]
        .iter()
        .map(|key| {
            json!({
                "kty": "OKP", "crv": "Ed25519", "x": b64(ed_public(key).as_bytes()),
                "kid": key.kid(), "alg": "EdDSA", "use": "sig",
            })
        })
        .collect();
    assert_eq!(jwks, json!({ "keys": expected }));
    let text = jwks.to_string();
    assert!(!text.contains(retired_hs.kid()));
    assert!(!text.contains(&b64(&[0x5a; 32])));
    assert!(!text.contains("\"k\""));
    assert!(!text.contains("\"d\""));

    let (hmac_only, _) = issuer_with(hs_key(), vec![]);
    assert_eq!(hmac_only.jwks(), json!({ "keys": [] }));
}

#[test]
fn a_published_jwk_verifies_the_tokens() {
    // What a relying party does with /jwks.json: take x, rebuild the key.
    let (issuer, _) = issuer_with(ed_key(), vec![]);
    let (token, _) = issuer.issue_access("user-1", "session-1");
    let jwk = &issuer.jwks()["keys"][0];
    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let public = ed25519_dalek::VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature =
        ed25519_dalek::Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap()).unwrap();
    assert!(public.verify_strict(input.as_bytes(), &signature).is_ok());
    assert_eq!(jwk["kid"], json!(ed25519_thumbprint(&public)));
}

// Garbage.

#[test]
fn garbage_is_malformed_without_panics() {
    let (issuer, _) = issuer_with(ed_key(), vec![]);
    let (token, _) = issuer.issue_access("user-1", "session-1");
    let p = parts(&token);
    let huge = "a".repeat(1 << 20);
    let huge_parts = format!(
        "{}.{}.{}",
        "e".repeat(2000),
        "e".repeat(2000),
        "e".repeat(2000)
    );
    let inputs = [
        String::new(),
        ".".to_owned(),
        "..".to_owned(),
        "...".to_owned(),
        "abc".to_owned(),
        format!("{}.{}", p[0], p[1]),
        format!("{}.{}.{}.{}", p[0], p[1], p[2], p[2]),
        format!("{token}."),
        format!(".{token}"),
        format!("{} ", token),
        format!("Bearer {token}"),
        huge.clone(),
        format!("{huge}.{huge}.{huge}"),
        huge_parts,
        "é.é.é".to_owned(),
        "\u{0}.\u{0}.\u{0}".to_owned(),
        format!("{}.{}.{}", b64(b"not json"), p[1], p[2]),
        format!("{}.{}.{}", b64(b"[\"EdDSA\"]"), p[1], p[2]),
        format!("{}.{}.{}", b64(b"\"EdDSA\""), p[1], p[2]),
        format!("{}.{}.{}", b64(b"{\"alg\":"), p[1], p[2]),
        format!("{}.{}.{}", b64(b"null"), p[1], p[2]),
        format!("{}.{}.{}", b64(&[0xff, 0xfe]), p[1], p[2]),
    ];
    for input in &inputs {
        assert_eq!(
            issuer.verify_access(input),
            Err(TokenError::Malformed),
            "{:.80}",
            input
        );
    }
}

#[test]
fn a_payload_that_is_not_a_json_object_is_malformed_even_when_signed() {
    let key = ed_key();
    let (issuer, _) = issuer_with(key.clone(), vec![]);
    for payload in [
        &b"[]"[..],
        b"\"access\"",
        b"null",
        b"not json",
        b"",
        &[0xff],
    ] {
        let input = format!("{}.{}", b64_json(&header_for(&key)), b64(payload));
        let token = format!("{input}.{}", b64(&key.sign(input.as_bytes())));
        assert_eq!(
            issuer.verify_access(&token),
            Err(TokenError::Malformed),
            "{payload:?}"
        );
    }
}

#[test]
fn json_arrays_do_not_stand_in_for_objects() {
    // serde would map a full-length array onto our header and claims structs.
    let key = ed_key();
    let (issuer, _) = issuer_with(key.clone(), vec![]);
    let header = json!(["EdDSA", key.kid(), "JWT", null]);
    let claims = json!([
        ISSUER,
        AUDIENCE,
        "user-1",
        "session-1",
        "access",
        START,
        START + 900,
        "jti-1",
        null
    ]);
    for (header, claims) in [
        (&header, &good_claims()),
        (&header_for(&key), &claims),
        (&header, &claims),
    ] {
        assert_eq!(
            issuer.verify_access(&forge(&key, header, claims)),
            Err(TokenError::Malformed)
        );
    }
}

#[test]
fn a_token_longer_than_the_limit_is_malformed_before_anything_else() {
    let key = ed_key();
    let (issuer, _) = issuer_with(key.clone(), vec![]);
    // Validly signed, but padded with an unread claim past the limit.
    let token = signed_with(&key, |c| c["pad"] = json!("x".repeat(MAX_TOKEN_LEN)));
    assert!(token.len() > MAX_TOKEN_LEN);
    assert_eq!(issuer.verify_access(&token), Err(TokenError::Malformed));
    let fits = signed_with(&key, |c| c["pad"] = json!("x".repeat(MAX_TOKEN_LEN / 2)));
    assert!(issuer.verify_access(&fits).is_ok());
}

#[test]
fn only_canonical_unpadded_base64url_is_accepted() {
    let (issuer, _) = issuer_with(ed_key(), vec![]);
    let (token, _) = issuer.issue_access("user-1", "session-1");
    let p = parts(&token);
    let padded = |part: &str| format!("{part}{}", "=".repeat((4 - part.len() % 4) % 4));
    // A 64-byte signature is 86 characters whose last four bits are unused:
    // setting one spells the same bytes differently.
    let last = p[2].chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.find(last).unwrap();
    assert_eq!(index % 16, 0);
    let respelled = format!(
        "{}{}",
        &p[2][..p[2].len() - 1],
        &alphabet[index + 1..index + 2]
    );
    let standard = |part: &str| part.replace('-', "+").replace('_', "/");
    let mut cases = vec![
        format!("{}.{}.{}", p[0], p[1], padded(&p[2])),
        format!("{}.{}.{}", p[0], p[1], respelled),
        format!("{}.{}.{}=", p[0], p[1], p[2]),
        format!("{}.{}.{}", padded(&p[0]), p[1], p[2]),
        format!("{}.{}.{}", p[0], padded(&p[1]), p[2]),
    ];
    if p.iter().any(|part| part.contains(['-', '_'])) {
        cases.push(format!(
            "{}.{}.{}",
            standard(&p[0]),
            standard(&p[1]),
            standard(&p[2])
        ));
    }
    // A part whose length is a multiple of 4 has no padding to add.
    cases.retain(|case| *case != token);
    assert!(cases.len() >= 3);
    for case in cases {
        assert_eq!(
            issuer.verify_access(&case),
            Err(TokenError::Malformed),
            "{case}"
        );
    }
    assert!(issuer.verify_access(&token).is_ok());
}

// Reading keys.

#[test]
fn openssl_pem_keys_read_with_their_thumbprint_as_kid() {
    let signing = ed25519_signing_key_from_pem(OPENSSL_PRIVATE_PEM).unwrap();
    let public = ed25519_verifying_key_from_pem(OPENSSL_PUBLIC_PEM).unwrap();
    let from_private = ed25519_verifying_key_from_pem(OPENSSL_PRIVATE_PEM).unwrap();
    assert_eq!(
        b64(ed_public(&signing).as_bytes()),
        "Q9tbxPsK7PGzVU2cEiW5ufCCxzcnSk9Mrql9bvX9GWQ"
    );
    assert_eq!(public.kid(), signing.kid());
    assert_eq!(from_private.kid(), signing.kid());
    assert_eq!(signing.kid(), ed25519_thumbprint(&ed_public(&signing)));
    assert_eq!(signing.kid().len(), 43);
    // Surrounding whitespace, as environment variables and files carry it.
    assert!(ed25519_signing_key_from_pem(&format!("\n  {OPENSSL_PRIVATE_PEM}\n")).is_ok());

    // The public key PEM verifies what the private key PEM signed.
    let (before, _) = issuer_with(signing, vec![]);
    let (token, claims) = before.issue_access("user-1", "session-1");
    let (after, _) = issuer_with(hs_key(), vec![public]);
    assert_eq!(after.verify_access(&token), Ok(claims));
}

#[test]
fn generated_keys_survive_a_pem_round_trip() {
    let key = SigningKey::generate_ed25519();
    let SigningKey::EdDsa { key: inner, .. } = &key else {
        unreachable!()
    };
    let pem = inner.to_pkcs8_pem(LineEnding::LF).unwrap();
    assert_eq!(ed25519_signing_key_from_pem(&pem).unwrap().kid(), key.kid());
    let public_pem = inner
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    assert_eq!(
        ed25519_verifying_key_from_pem(&public_pem).unwrap().kid(),
        key.kid()
    );
    assert_ne!(SigningKey::generate_ed25519().kid(), key.kid());
}

/// A test-only X25519 key (same curve family, other algorithm), from openssl.
const X25519_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VuBCIEIODc/hk0t9TK1N0cTwiubjwbsb8vzMc8JrUv05LbHDpp
-----END PRIVATE KEY-----
";
/// A test-only P-256 public key, from openssl.
const P256_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEX0aO/cXI27To2fztw7PMih7Kh5yU
z8HoIAETvdZloSj3OmeYs8epKp/ZE2Ti5WyvcjsobBSePvaDdBPXMrwZuw==
-----END PUBLIC KEY-----
";

#[test]
fn what_is_not_an_ed25519_pem_is_refused() {
    let truncated = OPENSSL_PRIVATE_PEM.replace("0dM7ENit", "");
    let relabelled = OPENSSL_PRIVATE_PEM.replace("PRIVATE KEY", "RSA PRIVATE KEY");
    for pem in [
        "",
        "not a pem",
        OPENSSL_PUBLIC_PEM,
        X25519_PRIVATE_PEM,
        P256_PUBLIC_PEM,
        &truncated,
        &relabelled,
    ] {
        assert!(ed25519_signing_key_from_pem(pem).is_err(), "{pem}");
    }
    for pem in [
        "",
        "not a pem",
        X25519_PRIVATE_PEM,
        P256_PUBLIC_PEM,
        &truncated,
        &relabelled,
    ] {
        assert!(ed25519_verifying_key_from_pem(pem).is_err(), "{pem}");
    }
}

#[test]
fn a_small_order_public_key_is_refused() {
    // The identity point: it "verifies" forged signatures under lax checks.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = ed25519_dalek::VerifyingKey::from_bytes(&identity).unwrap();
    let pem = weak.to_public_key_pem(LineEnding::LF).unwrap();
    assert!(ed25519_verifying_key_from_pem(&pem).is_err());
}

#[test]
fn hmac_secrets_shorter_than_256_bits_are_refused() {
    assert!(hs256_key(b"").is_err());
    assert!(hs256_key(b"hunter2").is_err());
    assert!(hs256_key(&[1; 31]).is_err());
    let key = hs256_key(&[1; 32]).unwrap();
    // The kid is stable, short, and not the secret.
    assert_eq!(key.kid(), hs256_key(&[1; 32]).unwrap().kid());
    assert_ne!(key.kid(), hs256_key(&[2; 32]).unwrap().kid());
    assert_eq!(URL_SAFE_NO_PAD.decode(key.kid()).unwrap().len(), 8);
    assert!(!key.kid().contains(&b64(&[1; 32])[..8]));
}

#[test]
fn debug_output_shows_no_secrets() {
    let secret = [0x5a; 32];
    let hs = hs256_key(&secret).unwrap();
    let ed = ed_key();
    let (issuer, _) = issuer_with(ed.clone(), vec![hs.verifying_key()]);
    let shown = format!("{hs:?} {:?} {ed:?} {issuer:?}", hs.verifying_key());
    assert!(shown.contains(hs.kid()) && shown.contains(ed.kid()));
    assert!(!shown.contains("90, 90"), "{shown}");
    let SigningKey::EdDsa { key, .. } = &ed else {
        unreachable!()
    };
    assert!(!shown.contains(&format!("{:?}", key.to_bytes())));
    assert!(!shown.contains(&b64(&key.to_bytes())));
}
