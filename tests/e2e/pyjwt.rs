//! Access tokens against PyJWT, a JWT library nobody here wrote: tokens the
//! server issues verify with PyJWT (`jwt.decode` with the key, algorithm,
//! audience and issuer the server uses), and tokens PyJWT signs with the same
//! key, under the server's kid, verify on the server. For HS256 and EdDSA.
//! scripts/test.sh installs `pyjwt[crypto]` into .tools/venv; without it the
//! test fails, saying so.

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use slop_server::{
    identity::secrets,
    identity::tokens::{self, AccessClaims, SigningKey, TokenIssuer, TokenSettings},
    infra::clock::SystemClock,
};

const ISSUER: &str = "https://auth.slop.test";
const AUDIENCE: &str = "slop-api";

/// Reads a job on stdin; decodes the server's token, signs the claims it is
/// given, and prints what it found as JSON.
const PYJWT: &str = r#"
import json, sys
try:
    import jwt
    import cryptography  # PyJWT's EdDSA needs it
except ImportError as error:
    sys.exit(f"PyJWT with cryptography is missing ({error}): run `bash scripts/test.sh`, which installs pyjwt[crypto] into .tools/venv")

job = json.load(sys.stdin)
key = bytes.fromhex(job["key"])
if job["alg"] == "HS256":
    signing = verifying = key
else:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    signing = Ed25519PrivateKey.from_private_bytes(key)
    verifying = signing.public_key()

decoded = jwt.decode(
    job["token"], verifying, algorithms=[job["alg"]],
    audience=job["audience"], issuer=job["issuer"],
    options={"require": ["exp", "iat", "iss", "aud", "sub"]},
)
try:
    jwt.decode(job["token"], verifying, algorithms=[job["alg"]], audience="someone-else", issuer=job["issuer"])
    other_audience_refused = False
except jwt.InvalidAudienceError:
    other_audience_refused = True
signed = jwt.encode(job["claims"], signing, algorithm=job["alg"], headers={"kid": job["kid"]})
print(json.dumps({
    "header": jwt.get_unverified_header(job["token"]),
    "decoded": decoded,
    "other_audience_refused": other_audience_refused,
    "signed": signed,
}))
"#;

/// The test venv's Python; a missing venv fails the test with the fix.
fn venv_python() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/test.sh`, which installs Python with pyjwt[crypto] into .tools/venv",
        path.display()
    );
    path
}

fn run_pyjwt(job: &Value) -> Value {
    let mut child = Command::new(venv_python())
        .args(["-c", PYJWT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the venv's python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(job.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "PyJWT failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("PyJWT printed JSON")
}

/// Issues a token with `signing`, has PyJWT check it and sign claims of its
/// own with `key` (the same key in hex: the HMAC secret or the Ed25519 seed),
/// and checks both ways.
fn both_ways(signing: SigningKey, alg: &str, key: String) {
    let kid = signing.kid().to_owned();
    // PyJWT reads the system clock, so the issuer does too.
    let issuer = TokenIssuer::new(
        signing,
        Vec::new(),
        TokenSettings {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            access_ttl: Duration::from_secs(900),
            leeway: Duration::from_secs(5),
        },
        Arc::new(SystemClock),
    );
    let (token, claims) = issuer.issue_access("user-1", "session-1");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let theirs = AccessClaims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: "py-user".into(),
        sid: "py-session".into(),
        typ: "access".into(),
        iat: now,
        exp: now + 600,
        jti: secrets::random_token(16),
        nbf: None,
    };

    let found = run_pyjwt(&json!({
        "alg": alg, "key": key, "kid": kid, "issuer": ISSUER, "audience": AUDIENCE,
        "token": token, "claims": theirs,
    }));

    assert_eq!(
        found["header"],
        json!({ "alg": alg, "typ": "JWT", "kid": kid })
    );
    assert_eq!(found["decoded"], serde_json::to_value(&claims).unwrap());
    assert_eq!(found["other_audience_refused"], json!(true));
    let signed = found["signed"].as_str().expect("a token");
    assert_eq!(issuer.verify_access(signed), Ok(theirs));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn hs256_tokens_verify_with_pyjwt_and_pyjwt_tokens_verify_here() {
    let secret = [0x5au8; 32];
    both_ways(tokens::hs256_key(&secret).unwrap(), "HS256", hex(&secret));
}

#[test]
fn eddsa_tokens_verify_with_pyjwt_and_pyjwt_tokens_verify_here() {
    let signing = SigningKey::generate_ed25519();
    let SigningKey::EdDsa { key, .. } = &signing else {
        unreachable!("generate_ed25519 makes Ed25519 keys")
    };
    let seed = hex(&key.to_bytes());
    both_ways(signing, "EdDSA", seed);
}
