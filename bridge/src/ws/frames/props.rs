//! Property tests of WebSocket client frames (issue #8):
//! [`ClientFrame::parse`] over arbitrary text, and over JSON objects of the
//! four frame types with random fields.
//!
//! What must hold: parsing never panics; an error always has a message; an
//! id the server repeats (in a frame or an error) is the client's own,
//! 1 to [`MAX_ID_LEN`] bytes; a frame that parsed is the one its fields
//! describe and carries nothing its type does not take; and every
//! well-formed frame parses to exactly what it says. Cases: `PROPTEST_CASES`
//! (256 unless set); docs/testing.md has the long run.

use proptest::{prelude::*, test_runner::TestCaseError};
use serde_json::{Map, Value, json};
use slop_api::notification::{ChannelSubscription, Namespace, StreamPosition};

use super::*;

const TYPES: [&str; 4] = ["ping", "auth", "subscribe", "unsubscribe"];

/// Field names frames have, in both spellings, and others.
const FIELDS: [&str; 9] = [
    "token",
    "channel",
    "namespaces",
    "resumeFrom",
    "resume_from",
    "subscriptions",
    "id",
    "type",
    "extra",
];

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN
}

/// What holds of every result, whatever the text.
fn check_result(text: &str, result: &Result<ClientFrame, BadFrame>) -> Result<(), TestCaseError> {
    match result {
        Ok(frame) => {
            let id = match frame {
                ClientFrame::Ping { id } => id.as_deref(),
                ClientFrame::Auth { token } => {
                    prop_assert!(!token.is_empty(), "empty token from {text}");
                    None
                }
                ClientFrame::Subscribe { id, .. } | ClientFrame::Unsubscribe { id } => Some(&**id),
            };
            if let Some(id) = id {
                prop_assert!(valid_id(id), "id of {} bytes from {text}", id.len());
            }
        }
        Err(bad) => {
            prop_assert!(!bad.message.is_empty(), "no message for {text}");
            if let Some(id) = &bad.id {
                prop_assert!(valid_id(id), "error id of {} bytes from {text}", id.len());
            }
        }
    }
    Ok(())
}

/// Any JSON value.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        prop::sample::select(&TYPES[..]).prop_map(Value::from),
        prop::sample::select(
            &[
                "NAMESPACE_MEDIA",
                "NAMESPACE_NOTIFICATIONS",
                "user:1",
                "topic:a"
            ][..]
        )
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..5)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(&FIELDS[..]).prop_map(str::to_owned),
        1 => any::<String>(),
        1 => prop::sample::select(&["offset", "epoch"][..]).prop_map(str::to_owned),
    ]
}

/// An id as a client might send one: good, empty, one byte too long
/// (multi-byte characters included), not a string, or absent.
fn id_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        "\\PC{1,32}".prop_map(|id| Some(Value::String(id))),
        Just(Some(Value::String(String::new()))),
        (MAX_ID_LEN - 2..MAX_ID_LEN + 3).prop_map(|n| Some(Value::String("x".repeat(n)))),
        (MAX_ID_LEN / 2 - 1..MAX_ID_LEN / 2 + 2).prop_map(|n| Some(Value::String("é".repeat(n)))),
        json_value().prop_map(Some),
    ]
}

/// A frame-like object: a known `type` (mostly), an id, and random fields.
fn frame_object() -> impl Strategy<Value = Map<String, Value>> {
    (
        prop_oneof![
            4 => prop::sample::select(&TYPES[..]).prop_map(Value::from),
            1 => json_value(),
        ],
        id_value(),
        prop::collection::vec((field_name(), json_value()), 0..4),
    )
        .prop_map(|(kind, id, fields)| {
            let mut object: Map<String, Value> = fields.into_iter().collect();
            object.insert("type".to_owned(), kind);
            match id {
                Some(id) => object.insert("id".to_owned(), id),
                None => object.remove("id"),
            };
            object
        })
}

/// Valid JSON with a few bytes changed.
fn damaged_text() -> impl Strategy<Value = String> {
    (
        frame_object(),
        prop::collection::vec(
            (any::<prop::sample::Index>(), any::<char>(), any::<bool>()),
            1..4,
        ),
    )
        .prop_map(|(object, edits)| {
            let mut chars: Vec<char> = Value::Object(object).to_string().chars().collect();
            for (at, c, insert) in edits {
                let i = at.index(chars.len() + 1);
                if insert || i == chars.len() {
                    chars.insert(i, c);
                } else {
                    chars.remove(i);
                }
            }
            chars.into_iter().collect()
        })
}

fn namespace() -> impl Strategy<Value = i32> {
    prop::sample::select(vec![
        Namespace::Unspecified as i32,
        Namespace::Notifications as i32,
        Namespace::Media as i32,
    ])
}

fn subscription() -> impl Strategy<Value = ChannelSubscription> {
    (
        any::<String>(),
        prop::collection::vec(namespace(), 0..3),
        prop::option::of((any::<u64>(), any::<String>())),
    )
        .prop_map(|(channel, namespaces, resume)| ChannelSubscription {
            channel,
            namespaces,
            resume_from: resume.map(|(offset, epoch)| StreamPosition { offset, epoch }),
        })
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof!["\\PC{1,32}", "[a-z0-9]{128}"]
}

/// A well-formed frame.
fn frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        prop::option::of(id()).prop_map(|id| ClientFrame::Ping { id }),
        "\\PC{1,64}".prop_map(|token| ClientFrame::Auth { token }),
        (id(), prop::collection::vec(subscription(), 0..4))
            .prop_map(|(id, subscriptions)| ClientFrame::Subscribe { id, subscriptions }),
        id().prop_map(|id| ClientFrame::Unsubscribe { id }),
    ]
}

/// A frame as a client writes it. A subscribe frame of one channel may put
/// that subscription's fields in the frame itself (`inline`).
fn render(frame: &ClientFrame, inline: bool) -> String {
    let value = match frame {
        ClientFrame::Ping { id: None } => json!({"type": "ping"}),
        ClientFrame::Ping { id: Some(id) } => json!({"type": "ping", "id": id}),
        ClientFrame::Auth { token } => json!({"type": "auth", "token": token}),
        ClientFrame::Unsubscribe { id } => json!({"type": "unsubscribe", "id": id}),
        ClientFrame::Subscribe { id, subscriptions } => match &subscriptions[..] {
            [] => json!({"type": "subscribe", "id": id}),
            [one] if inline => {
                let mut value = serde_json::to_value(one).expect("a subscription encodes");
                let fields = value.as_object_mut().expect("an object");
                fields.insert("channel".to_owned(), one.channel.clone().into());
                fields.insert("type".to_owned(), "subscribe".into());
                fields.insert("id".to_owned(), id.clone().into());
                value
            }
            many => json!({"type": "subscribe", "id": id, "subscriptions": many}),
        },
    };
    value.to_string()
}

proptest! {
    /// Any text at all.
    #[test]
    fn any_text_parses_or_is_a_bad_frame(
        text in prop_oneof![
            any::<String>(),
            damaged_text(),
            json_value().prop_map(|value| value.to_string()),
        ],
    ) {
        let result = ClientFrame::parse(&text);
        check_result(&text, &result)?;
        if result.is_ok() {
            let kind = serde_json::from_str::<Value>(&text).ok().and_then(|v| v.get("type").cloned());
            prop_assert!(
                kind.as_ref().and_then(Value::as_str).is_some_and(|k| TYPES.contains(&k)),
                "parsed a frame without a frame type: {text}"
            );
        }
    }

    /// Objects with a frame type, an id or not, and random fields: a frame
    /// that parses is the one its type and fields say, and an error keeps
    /// the client's id only when that id is readable.
    #[test]
    fn frames_with_random_fields_parse_as_they_say(object in frame_object()) {
        let text = Value::Object(object.clone()).to_string();
        let result = ClientFrame::parse(&text);
        check_result(&text, &result)?;
        let sent_id = match object.get("id") {
            Some(Value::String(id)) if valid_id(id) => Some(id.as_str()),
            _ => None,
        };
        let id_readable = matches!(object.get("id"), None | Some(Value::Null)) || sent_id.is_some();
        let others = |allowed: &[&str]| {
            object.keys().filter(|k| !["type", "id"].contains(&k.as_str()) && !allowed.contains(&k.as_str())).count()
        };
        match &result {
            Ok(frame) => {
                prop_assert!(id_readable, "took an unreadable id: {text}");
                let kind = object.get("type").and_then(Value::as_str);
                match frame {
                    ClientFrame::Ping { id } => {
                        prop_assert_eq!(kind, Some("ping"));
                        prop_assert_eq!(id.as_deref(), sent_id);
                        prop_assert_eq!(others(&[]), 0, "{}", text);
                    }
                    ClientFrame::Auth { token } => {
                        prop_assert_eq!(kind, Some("auth"));
                        prop_assert_eq!(object.get("token").and_then(Value::as_str), Some(token.as_str()));
                        prop_assert_eq!(others(&["token"]), 0, "{}", text);
                    }
                    ClientFrame::Subscribe { id, .. } => {
                        prop_assert_eq!(kind, Some("subscribe"));
                        prop_assert_eq!(Some(id.as_str()), sent_id);
                    }
                    ClientFrame::Unsubscribe { id } => {
                        prop_assert_eq!(kind, Some("unsubscribe"));
                        prop_assert_eq!(Some(id.as_str()), sent_id);
                        prop_assert_eq!(others(&[]), 0, "{}", text);
                    }
                }
            }
            Err(bad) => {
                if let Some(id) = &bad.id {
                    prop_assert_eq!(Some(id.as_str()), sent_id, "{}", text);
                }
                if !id_readable {
                    prop_assert_eq!(&bad.id, &None, "{}", text);
                }
            }
        }
    }

    /// Every well-formed frame parses to exactly itself, its one
    /// subscription written inline or in a list.
    #[test]
    fn well_formed_frames_parse_to_themselves(frame in frame(), inline in any::<bool>()) {
        let text = render(&frame, inline);
        prop_assert_eq!(ClientFrame::parse(&text), Ok(frame), "{}", text);
    }
}
