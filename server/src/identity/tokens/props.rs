//! Property tests of the token parsers (issue #8): access tokens
//! ([`TokenIssuer::verify_access`]) and refresh tokens
//! ([`crate::identity::caller::split_refresh_token`] and the secret they carry).
//!
//! The claim each property makes is the parser's contract, not just "it does
//! not panic": an untouched token is accepted with exactly its claims, and
//! anything else — random text, or a real token with a byte flipped, a part
//! swapped, dropped, re-spelt or replaced — is refused. Cases:
//! `PROPTEST_CASES` (256 unless set); docs/testing.md has the long run.

use std::{
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use proptest::{prelude::*, sample::Index};

use super::*;
use crate::{
    identity::caller::{Authenticator, split_refresh_token},
    identity::sessions::{Session, SessionStore},
    infra::clock::ManualClock,
    infra::config::{Secret, ServiceKeys},
};

const START: u64 = 1_700_000_000;
const TTL: Duration = Duration::from_secs(900);
const LEEWAY: Duration = Duration::from_secs(30);

fn settings() -> TokenSettings {
    TokenSettings {
        issuer: "https://auth.slop.test".to_owned(),
        audience: "slop-api".to_owned(),
        access_ttl: TTL,
        leeway: LEEWAY,
    }
}

fn hs_key() -> SigningKey {
    hs256_key(&[0x5a; 32]).expect("32 bytes")
}

fn ed_key(seed: u8) -> SigningKey {
    SigningKey::ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
}

/// Each algorithm once, each issuer also holding a retired key of the other
/// algorithm, so `kid` lookups and algorithm pinning are both in play.
fn signing_key(eddsa: bool) -> (SigningKey, VerifyingKey) {
    if eddsa {
        (ed_key(7), hs256_key(&[0x33; 32]).unwrap().verifying_key())
    } else {
        (hs_key(), ed_key(9).verifying_key())
    }
}

fn issuer_at(eddsa: bool, clock: Arc<ManualClock>) -> TokenIssuer {
    let (signing, retired) = signing_key(eddsa);
    TokenIssuer::new(signing, vec![retired], settings(), clock)
}

fn clock() -> Arc<ManualClock> {
    ManualClock::new(UNIX_EPOCH + Duration::from_secs(START))
}

fn issuer(eddsa: bool) -> TokenIssuer {
    issuer_at(eddsa, clock())
}

/// A user or session id: any non-empty text, ASCII or not, of a length a
/// real id has (a token longer than MAX_TOKEN_LEN is refused by design).
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{1,40}",
        "\\PC{1,24}",
        any::<u32>().prop_map(|n| n.to_string()),
    ]
}

/// Text in the alphabet of tokens, with dots and the characters a lenient
/// decoder might take (`+`, `/`, `=`, spaces).
fn token_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,90}",
        "[A-Za-z0-9_+/=. -]{0,300}",
        prop::collection::vec("[A-Za-z0-9_-]{0,40}", 0..6).prop_map(|parts| parts.join(".")),
    ]
}

/// Any text at all, including inputs far over [`MAX_TOKEN_LEN`].
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        token_like(),
        (token_like(), 1..2 * MAX_TOKEN_LEN)
            .prop_map(|(seed, len)| { seed.chars().cycle().take(len).collect::<String>() }),
        (any::<char>(), MAX_TOKEN_LEN - 2..MAX_TOKEN_LEN + 2)
            .prop_map(|(c, n)| c.to_string().repeat(n)),
    ]
}

/// One way of damaging a token.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR one byte with a 7-bit mask (it stays ASCII, so still text).
    FlipBits(Index, u8),
    /// Replace one character.
    Replace(Index, char),
    /// Insert text.
    Insert(Index, String),
    /// Remove a run of characters.
    Remove(Index, usize),
    /// Keep a prefix.
    Truncate(Index),
    /// Swap two dot-separated parts.
    SwapParts(Index, Index),
    /// Replace a part with other text.
    ReplacePart(Index, String),
    /// Drop a part.
    DropPart(Index),
    /// Repeat a part.
    DuplicatePart(Index),
    /// Spell a part in standard base64 or with padding (same bytes).
    Respell(Index, bool),
    /// Swap the case of one character.
    SwapCase(Index),
    /// Repeat the whole token (huge inputs).
    Repeat(usize),
    /// Whitespace or padding around it.
    Wrap(&'static str, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1..128u8).prop_map(|(i, mask)| Mutation::FlipBits(i, mask)),
        (any::<Index>(), any::<char>()).prop_map(|(i, c)| Mutation::Replace(i, c)),
        (
            any::<Index>(),
            prop_oneof!["[A-Za-z0-9_.=-]{1,4}", "\\PC{1,8}"]
        )
            .prop_map(|(i, s)| Mutation::Insert(i, s)),
        (any::<Index>(), 1..16usize).prop_map(|(i, n)| Mutation::Remove(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapParts(a, b)),
        (any::<Index>(), token_like()).prop_map(|(i, s)| Mutation::ReplacePart(i, s)),
        any::<Index>().prop_map(Mutation::DropPart),
        any::<Index>().prop_map(Mutation::DuplicatePart),
        (any::<Index>(), any::<bool>()).prop_map(|(i, padded)| Mutation::Respell(i, padded)),
        any::<Index>().prop_map(Mutation::SwapCase),
        (2..1200usize).prop_map(Mutation::Repeat),
        prop::sample::select(vec![
            (" ", ""),
            ("", " "),
            ("", "="),
            ("", "=="),
            ("Bearer ", ""),
            ("", "."),
            (".", ""),
            ("", "\n"),
        ])
        .prop_map(|(before, after)| Mutation::Wrap(before, after)),
    ]
}

impl Mutation {
    fn apply(&self, token: &str) -> String {
        let chars: Vec<char> = token.chars().collect();
        let at = |i: &Index| i.index(chars.len() + 1);
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let part = |i: &Index| i.index(parts.len());
        match self {
            Self::FlipBits(i, mask) => {
                let mut bytes = token.as_bytes().to_vec();
                if !bytes.is_empty() {
                    let n = i.index(bytes.len());
                    if bytes[n].is_ascii() {
                        bytes[n] ^= mask;
                    }
                }
                String::from_utf8(bytes).expect("ASCII stays ASCII")
            }
            Self::Replace(i, c) => {
                let mut chars = chars.clone();
                if !chars.is_empty() {
                    let n = i.index(chars.len());
                    chars[n] = *c;
                }
                chars.into_iter().collect()
            }
            Self::Insert(i, text) => {
                let n = at(i);
                let mut out: String = chars[..n].iter().collect();
                out.push_str(text);
                out.extend(&chars[n..]);
                out
            }
            Self::Remove(i, len) => {
                let n = at(i).min(chars.len());
                let end = (n + len).min(chars.len());
                chars[..n].iter().chain(&chars[end..]).collect()
            }
            Self::Truncate(i) => chars[..at(i).min(chars.len())].iter().collect(),
            Self::SwapParts(a, b) => {
                let (a, b) = (part(a), part(b));
                parts.swap(a, b);
                parts.join(".")
            }
            Self::ReplacePart(i, text) => {
                let n = part(i);
                parts[n] = text.clone();
                parts.join(".")
            }
            Self::DropPart(i) => {
                parts.remove(part(i));
                parts.join(".")
            }
            Self::DuplicatePart(i) => {
                let n = part(i);
                parts.insert(n, parts[n].clone());
                parts.join(".")
            }
            Self::Respell(i, padded) => {
                let n = part(i);
                if let Ok(bytes) = URL_SAFE_NO_PAD.decode(&parts[n]) {
                    parts[n] = if *padded {
                        URL_SAFE.encode(bytes)
                    } else {
                        STANDARD.encode(bytes).trim_end_matches('=').to_owned()
                    };
                }
                parts.join(".")
            }
            Self::SwapCase(i) => {
                let mut chars = chars.clone();
                if !chars.is_empty() {
                    let n = i.index(chars.len());
                    let c = chars[n];
                    chars[n] = if c.is_ascii_lowercase() {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    };
                }
                chars.into_iter().collect()
            }
            Self::Repeat(times) => vec![token; *times].join("."),
            Self::Wrap(before, after) => format!("{before}{token}{after}"),
        }
    }
}

/// One or two mutations in a row.
fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..=2)
}

fn mutate(token: &str, mutations: &[Mutation]) -> String {
    mutations
        .iter()
        .fold(token.to_owned(), |token, m| m.apply(&token))
}

/// A session as the store keeps it; the id is what `Session::new_id` makes
/// (a shard tag, `~`, and what `random_token` makes).
fn session() -> impl Strategy<Value = Session> {
    (
        "[0-9a-f]{4}~[A-Za-z0-9_-]{1,32}",
        id(),
        "[A-Za-z0-9_-]{0,48}",
        any::<u64>(),
    )
        .prop_map(|(id, user_id, refresh_seed, refresh_generation)| Session {
            id,
            user_id,
            user_agent: String::new(),
            ip: String::new(),
            created_at: 0,
            last_seen_at: 0,
            expires_at: i64::MAX,
            max_expires_at: i64::MAX,
            refresh_seed,
            refresh_generation,
            refreshed_at: 0,
        })
}

fn authenticator() -> Authenticator {
    let clock = clock();
    Authenticator::new(
        Arc::new(issuer_at(false, clock.clone())),
        SessionStore::memory(clock),
        ServiceKeys::default(),
        Secret::from("property-test-app-secret-0123456789abcdef"),
        Duration::from_secs(3600),
    )
}

/// Whether the refresh endpoint would take `token` as `session`'s token of
/// `generation`: its id names the session and its secret is that
/// generation's (what `refresh_generation` in services/auth.rs checks).
fn refresh_accepts(auth: &Authenticator, session: &Session, generation: u64, token: &str) -> bool {
    split_refresh_token(token).is_some_and(|(id, secret)| {
        id == session.id
            && crate::identity::secrets::constant_time_eq(
                secret,
                &auth.refresh_secret(session, generation),
            )
    })
}

proptest! {
    /// Random text is never a token, whatever its shape or length; over
    /// MAX_TOKEN_LEN it is refused as malformed before anything is decoded.
    #[test]
    fn random_text_never_verifies(text in any_text(), eddsa in any::<bool>()) {
        let result = issuer(eddsa).verify_access(&text);
        prop_assert!(result.is_err(), "accepted {text:?}: {result:?}");
        if text.len() > MAX_TOKEN_LEN || text.split('.').count() != 3 {
            prop_assert_eq!(result, Err(TokenError::Malformed));
        }
    }

    /// An issued token verifies with exactly the claims it was issued with.
    #[test]
    fn issued_tokens_verify_with_their_claims(user in id(), session in id(), eddsa in any::<bool>()) {
        let issuer = issuer(eddsa);
        let (token, claims) = issuer.issue_access(&user, &session);
        prop_assert_eq!((claims.sub.as_str(), claims.sid.as_str()), (user.as_str(), session.as_str()));
        prop_assert_eq!(issuer.verify_access(&token), Ok(claims));
    }

    /// A token is good from `leeway` before its `iat` until `leeway` after
    /// its `exp`, and only then: `seconds` is the verifier's clock minus the
    /// issuer's.
    #[test]
    fn tokens_verify_only_within_their_lifetime(
        seconds in prop_oneof![-2000i64..2000, prop::sample::select(vec![-31i64, -30, -29, 929, 930, 931])],
        eddsa in any::<bool>(),
    ) {
        let (issuing_clock, verifying_clock) = (clock(), clock());
        let late = Duration::from_secs(seconds.unsigned_abs());
        if seconds >= 0 {
            verifying_clock.advance(late);
        } else {
            issuing_clock.advance(late);
        }
        let (token, claims) = issuer_at(eddsa, issuing_clock).issue_access("u", "s");
        let result = issuer_at(eddsa, verifying_clock).verify_access(&token);
        let leeway = LEEWAY.as_secs() as i64;
        let expected = if seconds >= TTL.as_secs() as i64 + leeway {
            Err(TokenError::Expired)
        } else if seconds < -leeway {
            Err(TokenError::NotYetValid)
        } else {
            Ok(claims)
        };
        prop_assert_eq!(result, expected, "{} s", seconds);
    }

    /// Damage of any kind to an issued token makes it fail; a "damage" that
    /// gives the token back unchanged (swapping a part with itself) keeps
    /// it good.
    #[test]
    fn damaged_tokens_never_verify(user in id(), eddsa in any::<bool>(), mutations in mutations()) {
        let issuer = issuer(eddsa);
        let (token, claims) = issuer.issue_access(&user, "session-1");
        let damaged = mutate(&token, &mutations);
        let result = issuer.verify_access(&damaged);
        if damaged == token {
            prop_assert_eq!(result, Ok(claims));
        } else {
            prop_assert!(result.is_err(), "accepted {damaged:?}, damaged from {token:?}");
        }
    }

    /// Parts of two real tokens, recombined, never verify: a signature
    /// belongs to its own header and payload only.
    #[test]
    fn spliced_tokens_never_verify(
        eddsa in any::<bool>(),
        picks in prop::array::uniform3(any::<bool>()),
        other_user in id(),
    ) {
        let issuer = issuer(eddsa);
        let (token, claims) = issuer.issue_access("user-1", "session-1");
        let (other, _) = issuer.issue_access(&other_user, "session-2");
        let (mine, theirs) = (parts(&token), parts(&other));
        let spliced: Vec<&str> = picks
            .iter()
            .zip(mine.iter().zip(&theirs))
            .map(|(take_mine, (m, t))| if *take_mine { *m } else { *t })
            .collect();
        let spliced = spliced.join(".");
        let result = issuer.verify_access(&spliced);
        if spliced == token {
            prop_assert_eq!(result, Ok(claims));
        } else if spliced != other {
            prop_assert!(result.is_err(), "accepted {spliced:?}");
        }
    }

    /// A token signed with any key but ours, even under our kid and
    /// algorithm, fails on its signature.
    #[test]
    fn tokens_signed_with_other_keys_never_verify(
        eddsa in any::<bool>(),
        secret in prop::collection::vec(any::<u8>(), 32..64),
    ) {
        let issuer = issuer(eddsa);
        let ours = &issuer.signing;
        let foreign = if eddsa {
            let seed: [u8; 32] = secret[..32].try_into().unwrap();
            SigningKey::EdDsa {
                kid: ours.kid().to_owned(),
                key: ed25519_dalek::SigningKey::from_bytes(&seed),
            }
        } else {
            SigningKey::Hs256 { kid: ours.kid().to_owned(), secret: secret.clone() }
        };
        let same_key = match (ours, &foreign) {
            (SigningKey::Hs256 { secret: a, .. }, SigningKey::Hs256 { secret: b, .. }) => a == b,
            (SigningKey::EdDsa { key: a, .. }, SigningKey::EdDsa { key: b, .. }) => {
                a.to_bytes() == b.to_bytes()
            }
            _ => false,
        };
        let forger = TokenIssuer::new(foreign, vec![], settings(), clock());
        let (token, claims) = forger.issue_access("user-1", "session-1");
        let result = issuer.verify_access(&token);
        if same_key {
            prop_assert_eq!(result, Ok(claims));
        } else {
            prop_assert_eq!(result, Err(TokenError::Signature));
        }
    }

    /// `split_refresh_token` takes exactly `<id>.<secret>`: the id before
    /// the first dot, both non-empty, at most 512 bytes in all; and what it
    /// returns is the token, split.
    #[test]
    fn refresh_tokens_split_at_their_first_dot(
        text in prop_oneof![any_text(), "[a-z.]{510,514}", "\\.?[a-z]{0,3}\\.?"],
    ) {
        let first_dot = text.find('.');
        let well_formed = text.len() <= 512
            && first_dot.is_some_and(|dot| dot > 0 && dot + 1 < text.len());
        match split_refresh_token(&text) {
            Some((id, secret)) => {
                prop_assert!(well_formed, "split {text:?}");
                prop_assert!(!id.is_empty() && !id.contains('.') && !secret.is_empty());
                prop_assert_eq!(format!("{id}.{secret}"), text);
            }
            None => prop_assert!(!well_formed, "refused {text:?}"),
        }
    }

    /// A session's refresh token is accepted as that session's token of its
    /// generation, and any damage to it makes it refused.
    #[test]
    fn damaged_refresh_tokens_are_refused(session in session(), mutations in mutations()) {
        let auth = authenticator();
        let generation = session.refresh_generation;
        let token = auth.refresh_token(&session, generation);
        prop_assert!(refresh_accepts(&auth, &session, generation, &token));
        let damaged = mutate(&token, &mutations);
        prop_assert_eq!(
            refresh_accepts(&auth, &session, generation, &damaged),
            damaged == token,
            "{:?} from {:?}", damaged, token
        );
    }
}

fn parts(token: &str) -> Vec<&str> {
    token.split('.').collect()
}
