//! Property tests of REST request bodies (issue #8): [`Call::message`] over
//! every message type a REST route reads from its body, fed arbitrary bytes
//! and arbitrary JSON (deep nesting, numbers no double holds, wrong types,
//! unknown and repeated fields).
//!
//! What must hold: parsing never panics; it yields the message or
//! INVALID_ARGUMENT with a message; a blank body is the empty message, text
//! that is not JSON and top-level fields the message does not have are
//! refused; and a message that parsed is what its own canonical JSON parses
//! to, so nothing a client sent is read one way now and another way when
//! the message is stored or forwarded as JSON. Cases: `PROPTEST_CASES` (256
//! unless set); docs/testing.md has the long run.

use std::fmt::Debug;

use axum::body::Bytes;
use proptest::{prelude::*, test_runner::TestCaseError};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use slop_api::{auth, notification};
use tonic::{Code, metadata::MetadataMap};

use super::Call;

/// A request message a route reads from its body, by its proto field names.
struct Body {
    name: &'static str,
    fields: &'static [&'static str],
    /// The fields of type `string`.
    strings: &'static [&'static str],
    check: fn(&[u8]) -> Result<(), TestCaseError>,
    /// The body parsed as this message, as its canonical JSON.
    parse: fn(&[u8]) -> Result<Value, String>,
}

/// Every body the REST routes take (rest.rs and notifications.rs).
const BODIES: &[Body] = &[
    Body {
        name: "RegisterRequest",
        fields: &["email", "password", "display_name"],
        strings: &["email", "password", "display_name"],
        check: check::<auth::RegisterRequest>,
        parse: parse::<auth::RegisterRequest>,
    },
    Body {
        name: "LoginRequest",
        fields: &["email", "password"],
        strings: &["email", "password"],
        check: check::<auth::LoginRequest>,
        parse: parse::<auth::LoginRequest>,
    },
    Body {
        name: "RefreshTokenRequest",
        fields: &["refresh_token"],
        strings: &["refresh_token"],
        check: check::<auth::RefreshTokenRequest>,
        parse: parse::<auth::RefreshTokenRequest>,
    },
    Body {
        name: "LogoutRequest",
        fields: &["refresh_token"],
        strings: &["refresh_token"],
        check: check::<auth::LogoutRequest>,
        parse: parse::<auth::LogoutRequest>,
    },
    Body {
        name: "User",
        fields: &["id", "email", "display_name", "create_time", "update_time"],
        strings: &["id", "email", "display_name"],
        check: check::<auth::User>,
        parse: parse::<auth::User>,
    },
    Body {
        name: "ChangePasswordRequest",
        fields: &["current_password", "new_password"],
        strings: &["current_password", "new_password"],
        check: check::<auth::ChangePasswordRequest>,
        parse: parse::<auth::ChangePasswordRequest>,
    },
    Body {
        name: "RequestPasswordResetRequest",
        fields: &["email"],
        strings: &["email"],
        check: check::<auth::RequestPasswordResetRequest>,
        parse: parse::<auth::RequestPasswordResetRequest>,
    },
    Body {
        name: "ResetPasswordRequest",
        fields: &["reset_token", "new_password"],
        strings: &["reset_token", "new_password"],
        check: check::<auth::ResetPasswordRequest>,
        parse: parse::<auth::ResetPasswordRequest>,
    },
    Body {
        name: "ValidateTokenRequest",
        fields: &["access_token"],
        strings: &["access_token"],
        check: check::<auth::ValidateTokenRequest>,
        parse: parse::<auth::ValidateTokenRequest>,
    },
    Body {
        name: "PublishRequest",
        fields: &["channels", "namespace", "type", "payload", "job"],
        strings: &["type"],
        check: check::<notification::PublishRequest>,
        parse: parse::<notification::PublishRequest>,
    },
];

/// A field's proto3 JSON name: `display_name` → `displayName`.
fn json_name(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Field names of every body, in both spellings, and the names nested
/// messages use, so generated objects often hit real fields.
fn known_names() -> Vec<String> {
    let mut names: Vec<String> = BODIES
        .iter()
        .flat_map(|body| body.fields)
        .flat_map(|field| [(*field).to_owned(), json_name(field)])
        .collect();
    names.extend(
        [
            "job_id", "jobId", "state", "percent", "message", "seconds", "nanos",
        ]
        .map(str::to_owned),
    );
    names.sort();
    names.dedup();
    names
}

fn call(body: &[u8]) -> Call {
    Call {
        metadata: MetadataMap::new(),
        extensions: http::Extensions::new(),
        body: Bytes::copy_from_slice(body),
    }
}

fn blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// The contract of [`Call::message`] for one message type and one body.
fn check<T>(body: &[u8]) -> Result<(), TestCaseError>
where
    T: DeserializeOwned + Serialize + Default + PartialEq + Debug,
{
    let shown = String::from_utf8_lossy(body);
    match call(body).message::<T>() {
        Ok(message) if blank(body) => prop_assert_eq!(message, T::default()),
        Ok(message) => {
            let parsed: Result<Value, _> = serde_json::from_slice(body);
            prop_assert!(
                matches!(parsed, Ok(Value::Object(_))),
                "took a body that is not a JSON object: {shown}"
            );
            // Its canonical JSON says the same, and parses to the same.
            let canonical = serde_json::to_vec(&message);
            prop_assert!(
                canonical.is_ok(),
                "{message:?} does not encode: {canonical:?}"
            );
            let canonical = canonical.unwrap();
            let again = call(&canonical).message::<T>();
            prop_assert!(again.is_ok(), "its own JSON is refused: {again:?}");
            let again = again.unwrap();
            prop_assert_eq!(
                serde_json::to_value(&again).ok(),
                serde_json::to_value(&message).ok(),
                "{} read differently from its own JSON",
                String::from_utf8_lossy(&canonical)
            );
        }
        Err(status) => {
            prop_assert_eq!(status.code(), Code::InvalidArgument, "{}", shown);
            prop_assert!(!status.message().is_empty());
            prop_assert!(!blank(body));
        }
    }
    Ok(())
}

/// The body as the message `T`, as its canonical JSON, or why not.
fn parse<T: DeserializeOwned + Serialize + Default>(body: &[u8]) -> Result<Value, String> {
    let message = call(body)
        .message::<T>()
        .map_err(|status| status.message().to_owned())?;
    serde_json::to_value(message).map_err(|error| error.to_string())
}

fn check_every_body(body: &[u8]) -> Result<(), TestCaseError> {
    for Body { check, .. } in BODIES {
        check(body)?;
    }
    Ok(())
}

/// JSON text as a tree, so numbers can be any literal (not only what a
/// double holds) and keys can repeat.
#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    /// A string literal, quotes and escapes included.
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn render(&self, out: &mut String) {
        match self {
            Self::Null => out.push_str("null"),
            Self::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Self::Number(n) | Self::String(n) => out.push_str(n),
            Self::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.render(out);
                }
                out.push(']');
            }
            Self::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&quoted(key));
                    out.push(':');
                    value.render(out);
                }
                out.push('}');
            }
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        self.render(&mut out);
        out
    }
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string encodes")
}

/// Any double but NaN and the infinities, which JSON has no literal for.
fn finite() -> impl Strategy<Value = f64> {
    use prop::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

/// Number literals: integers of any size, doubles, and what no double
/// holds (1e400, 2^53 + 1, 40 digits).
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        finite().prop_map(|f| format!("{f:?}")),
        finite().prop_map(|f| format!("{f:e}")),
        "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,25})?([eE][+-]?[0-9]{1,4})?",
        prop::sample::select(vec![
            "0",
            "-0",
            "-0.0",
            "1e400",
            "-1e400",
            "1e-400",
            "4.9e-324",
            "1.7976931348623157e308",
            "9007199254740992",
            "9007199254740993",
            "-9007199254740993",
            "100",
            "100.0",
            "100.000001",
            "2147483648",
            "-2147483649",
            "1",
            "2",
            "3",
            "4",
            "5",
        ])
        .prop_map(str::to_owned),
    ]
}

/// String literals: any text, and texts the fields mean something with
/// (enum names, channels, timestamps), and raw escapes, lone surrogates
/// included. The strings that spell a non-finite double ("NaN") have a
/// property of their own.
fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>().prop_map(|s| quoted(&s)),
        prop::sample::select(vec![
            "NAMESPACE_MEDIA", "NAMESPACE_NOTIFICATIONS", "NAMESPACE_UNSPECIFIED", "JOB_STATE_RUNNING",
            "JOB_STATE_DONE", "user:u1", "topic:news", "",
            "1970-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "2016-12-31T23:59:60Z",
        ])
        .prop_map(quoted),
        "[0-9]{1,5}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})"
            .prop_map(|s| quoted(&s)),
        "\"(\\\\u[0-9a-fA-F]{4}|\\\\[nrt\"\\\\/]|[a-z])*\"",
    ]
}

fn key(names: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(names),
        1 => any::<String>(),
        1 => "[a-zA-Z_]{1,12}",
    ]
}

/// Any JSON value, keys mostly real field names.
fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        number().prop_map(Json::Number),
        string().prop_map(Json::String),
    ];
    let names = known_names();
    leaf.prop_recursive(5, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::vec((key(names.clone()), inner), 0..6).prop_map(Json::Object),
        ]
    })
}

/// A value nested `depth` arrays and objects deep (past serde_json's
/// recursion limit of 128 too).
fn nested() -> impl Strategy<Value = Json> {
    (
        json(),
        prop::collection::vec((any::<bool>(), key(known_names())), 0..160),
    )
        .prop_map(|(leaf, wraps)| {
            wraps.into_iter().fold(leaf, |inner, (array, key)| {
                if array {
                    Json::Array(vec![inner])
                } else {
                    Json::Object(vec![(key, inner)])
                }
            })
        })
}

/// A body: an object of real and unknown fields holding any values.
fn object_body() -> impl Strategy<Value = Json> {
    prop::collection::vec(
        (key(known_names()), prop_oneof![4 => json(), 1 => nested()]),
        0..8,
    )
    .prop_map(Json::Object)
}

/// A value of the kind `field` takes most of the time, of any other kind
/// sometimes.
fn field_value(field: &'static str) -> BoxedStrategy<Json> {
    let string_array = prop::collection::vec(string().prop_map(Json::String), 0..4);
    let fitting = match field {
        "channels" => string_array.prop_map(Json::Array).boxed(),
        "namespace" | "state" => prop_oneof![
            string().prop_map(Json::String),
            number().prop_map(Json::Number),
        ]
        .boxed(),
        "percent" => prop_oneof![
            number().prop_map(Json::Number),
            string().prop_map(Json::String),
        ]
        .boxed(),
        "payload" => prop_oneof![
            prop::collection::vec((any::<String>(), json()), 0..6).prop_map(Json::Object),
            nested().prop_map(|inner| Json::Object(vec![("deep".to_owned(), inner)])),
        ]
        .boxed(),
        "job" => prop::collection::vec(
            prop::sample::select(&["job_id", "jobId", "state", "percent", "message"][..])
                .prop_flat_map(|key| (Just(key.to_owned()), field_value(key))),
            0..5,
        )
        .prop_map(Json::Object)
        .boxed(),
        _ => string().prop_map(Json::String).boxed(),
    };
    prop_oneof![4 => fitting, 1 => json()].boxed()
}

/// An object of `body`'s fields, in either spelling and maybe repeated,
/// holding mostly values of their kind.
fn typed_body(body: &'static Body) -> impl Strategy<Value = Json> {
    let field = prop::sample::select(body.fields).prop_flat_map(|field| {
        let spelling = prop_oneof![Just(field.to_owned()), Just(json_name(field))];
        (spelling, field_value(field))
    });
    prop::collection::vec(field, 0..=body.fields.len() + 1).prop_map(Json::Object)
}

/// Valid JSON text with a few bytes changed.
fn damaged_json() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            object_body(),
            (0..BODIES.len()).prop_flat_map(|i| typed_body(&BODIES[i])),
        ],
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    )
        .prop_map(|(json, edits)| {
            let mut bytes = json.text().into_bytes();
            for (at, byte, how) in edits {
                let i = at.index(bytes.len() + 1);
                match how {
                    0 => bytes.insert(i, byte),
                    1 if i < bytes.len() => bytes[i] = byte,
                    _ if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => bytes.push(byte),
                }
            }
            bytes
        })
}

proptest! {
    /// Any bytes: blank, random, or JSON with bytes changed.
    #[test]
    fn any_bytes_parse_or_are_invalid_arguments(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            "[ \t\r\n]{0,8}".prop_map(String::into_bytes),
            damaged_json(),
        ],
    ) {
        check_every_body(&body)?;
    }

    /// Any JSON value, as the whole body or as the fields of an object.
    #[test]
    fn any_json_parses_or_is_an_invalid_argument(
        json in prop_oneof![json(), nested(), object_body()],
    ) {
        check_every_body(json.text().as_bytes())?;
    }

    /// Objects of a message's own fields (the values mostly of the right
    /// kind) as that message.
    #[test]
    fn typed_bodies_parse_or_are_invalid_arguments(
        (body, json) in (0..BODIES.len()).prop_flat_map(|i| (Just(i), typed_body(&BODIES[i]))),
    ) {
        (BODIES[body].check)(json.text().as_bytes())?;
    }

    /// A top-level field the message does not have is refused, whatever
    /// else the body holds.
    #[test]
    fn unknown_fields_are_refused(
        json in object_body(),
        unknown in "[a-zA-Z_]{1,12}",
        value in json(),
        at in any::<prop::sample::Index>(),
    ) {
        let Json::Object(fields) = json else { unreachable!("an object") };
        for body in BODIES {
            let known = body.fields.iter().any(|f| *f == unknown || json_name(f) == unknown);
            if known {
                continue;
            }
            let mut fields = fields.clone();
            fields.insert(at.index(fields.len() + 1), (unknown.clone(), value.clone()));
            let text = Json::Object(fields).text();
            (body.check)(text.as_bytes())?;
            prop_assert!(
                (body.parse)(text.as_bytes()).is_err(),
                "{} took unknown field {unknown:?}: {text}", body.name
            );
        }
    }

    /// Bodies of string fields, in either spelling, parse to exactly those
    /// strings (the empty string being the field's absence).
    #[test]
    fn string_fields_parse_to_themselves(
        body in 0..BODIES.len(),
        values in prop::collection::vec((any::<bool>(), any::<String>()), 3),
    ) {
        let body = &BODIES[body];
        let mut fields = Vec::new();
        let mut expected = serde_json::Map::new();
        for (field, (proto_name, value)) in body.strings.iter().zip(values) {
            let name = if proto_name { (*field).to_owned() } else { json_name(field) };
            fields.push((name, Json::String(quoted(&value))));
            if !value.is_empty() {
                expected.insert(json_name(field), Value::String(value));
            }
        }
        let text = Json::Object(fields).text();
        (body.check)(text.as_bytes())?;
        prop_assert_eq!((body.parse)(text.as_bytes()), Ok(Value::Object(expected)), "{}", text);
    }
}

proptest! {
    /// A number in a body is read as exactly the double it names, however
    /// it is written, so a payload is stored as the client sent it and its
    /// JSON reads back the same.
    #[test]
    fn numbers_are_read_as_the_doubles_they_name(number in finite(), exponent in any::<bool>()) {
        let literal = if exponent { format!("{number:e}") } else { format!("{number:?}") };
        let body = format!(r#"{{"payload":{{"n":{literal}}},"job":{{"percent":{literal}}}}}"#);
        let request = call(body.as_bytes()).message::<notification::PublishRequest>();
        prop_assert!(request.is_ok(), "{body}: {request:?}");
        let request = request.unwrap();
        let read = request.payload.as_ref().and_then(|p| p.fields.get("n")).and_then(|n| n.kind.clone());
        prop_assert!(
            matches!(read, Some(pbjson_types::value::Kind::NumberValue(n)) if n.to_bits() == number.to_bits()),
            "{literal} read as {read:?}"
        );
        let percent = request.job.map(|job| job.percent);
        prop_assert_eq!(percent.map(f64::to_bits), Some(number.to_bits()), "{} read as {:?}", literal, percent);
    }
}
