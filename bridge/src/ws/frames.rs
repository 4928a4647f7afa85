//! The JSON frames of the WebSocket protocol (docs/websocket.md): what a
//! client may send, parsed strictly so a typo gets an error frame instead of
//! silence, and what the server sends.

use serde::Serialize;
use serde_json::{Map, Value};
use slop_api::notification::{ChannelSubscription, Event, Subscribed};
use tonic::Status;

use crate::error::{code_name, public_details, public_message};

/// The longest subscription or ping id a client may choose, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// A frame from the client.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ClientFrame {
    /// Application-level ping; answered by a pong with the same id.
    Ping { id: Option<String> },
    /// Signs the socket in with an access token, or replaces its token.
    Auth { token: String },
    /// Starts one `Subscribe` call for one or several channels.
    Subscribe {
        id: String,
        subscriptions: Vec<ChannelSubscription>,
    },
    /// Ends the subscription with this id.
    Unsubscribe { id: String },
}

/// A frame the server could not read: the error to answer, with the id the
/// frame carried if it had a readable one.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct BadFrame {
    pub id: Option<String>,
    pub message: String,
}

impl ClientFrame {
    /// Parses a text frame.
    pub(super) fn parse(text: &str) -> Result<Self, BadFrame> {
        let bad = |id: Option<&str>, message: String| BadFrame {
            id: id.map(str::to_owned),
            message: format!("{message}; see docs/websocket.md"),
        };
        let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(text) else {
            return Err(bad(None, "a frame is a JSON object with a `type`".into()));
        };
        let id = match fields.remove("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_ID_LEN => Some(id),
            Some(_) => {
                return Err(bad(
                    None,
                    format!("`id` is a string of 1 to {MAX_ID_LEN} bytes"),
                ));
            }
        };
        let kind = match fields.remove("type") {
            Some(Value::String(kind)) => kind,
            _ => return Err(bad(id.as_deref(), "a frame needs a string `type`".into())),
        };
        let needs_id = |id: Option<String>| {
            id.ok_or_else(|| bad(None, format!("a `{kind}` frame needs an `id`")))
        };
        let frame = match kind.as_str() {
            "ping" => {
                only(&fields, &[], &kind).map_err(|m| bad(id.as_deref(), m))?;
                Self::Ping { id }
            }
            "auth" => {
                let token = match fields.remove("token") {
                    Some(Value::String(token)) if !token.is_empty() => token,
                    _ => {
                        return Err(bad(
                            id.as_deref(),
                            "an `auth` frame carries the access token in `token`".into(),
                        ));
                    }
                };
                only(&fields, &[], &kind).map_err(|m| bad(id.as_deref(), m))?;
                Self::Auth { token }
            }
            "subscribe" => {
                let id = needs_id(id)?;
                let subscriptions = subscriptions(fields).map_err(|m| bad(Some(&id), m))?;
                Self::Subscribe { id, subscriptions }
            }
            "unsubscribe" => {
                let id = needs_id(id)?;
                only(&fields, &[], &kind).map_err(|m| bad(Some(&id), m))?;
                Self::Unsubscribe { id }
            }
            _ => {
                return Err(bad(
                    id.as_deref(),
                    format!(
                        "`{kind}` is not a frame type; clients send auth, subscribe, unsubscribe and ping"
                    ),
                ));
            }
        };
        Ok(frame)
    }
}

/// An error unless `fields` holds only `allowed` names.
fn only(fields: &Map<String, Value>, allowed: &[&str], kind: &str) -> Result<(), String> {
    match fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(unknown) => Err(format!("a `{kind}` frame has no field `{unknown}`")),
    }
}

/// The channels of a subscribe frame: `subscriptions`, a list of
/// `ChannelSubscription`s in canonical JSON, or the fields of one
/// (`channel`, `namespaces`, `resumeFrom`) in the frame itself. Neither:
/// none, which `Subscribe` takes as the caller's own channel.
fn subscriptions(mut fields: Map<String, Value>) -> Result<Vec<ChannelSubscription>, String> {
    let invalid = |error: serde_json::Error| format!("invalid subscription: {error}");
    match fields.remove("subscriptions") {
        Some(list) => {
            only(&fields, &[], "subscribe")
                .map_err(|_| "give either `subscriptions` or `channel`, not both".to_owned())?;
            serde_json::from_value(list).map_err(invalid)
        }
        None if fields.is_empty() => Ok(Vec::new()),
        None => {
            if !fields.contains_key("channel") {
                return Err(
                    "a `subscribe` frame names its `channel` or lists `subscriptions`".into(),
                );
            }
            let one = serde_json::from_value(Value::Object(fields)).map_err(invalid)?;
            Ok(vec![one])
        }
    }
}

/// A frame to the client.
#[derive(Debug, Serialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub(super) enum ServerFrame<'a> {
    /// The socket is signed in (at the upgrade or by an `auth` frame).
    Welcome {
        user_id: &'a str,
        session_id: &'a str,
    },
    /// Answer to a ping frame.
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
    /// A channel's subscription started (the proto `Subscribed`).
    Subscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        subscribed: &'a Subscribed,
    },
    /// An event on a channel (the proto `Event`).
    Event {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        event: &'a Event,
    },
    /// Answer to an unsubscribe frame.
    Unsubscribed { id: &'a str },
    /// Something the server could not do.
    Error {
        code: &'static str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        details: Vec<Value>,
    },
}

impl<'a> ServerFrame<'a> {
    /// The error frame for a status (internal errors show no detail).
    pub(super) fn status(status: &'a Status, id: Option<&'a str>) -> Self {
        Self::Error {
            code: code_name(status.code()),
            message: public_message(status),
            id,
            details: public_details(status),
        }
    }

    /// An INVALID_ARGUMENT error frame.
    pub(super) fn invalid(message: &'a str, id: Option<&'a str>) -> Self {
        Self::Error {
            code: "INVALID_ARGUMENT",
            message,
            id,
            details: Vec::new(),
        }
    }

    /// The event frame for an event already encoded as JSON: the same text
    /// as [`ServerFrame::Event`]'s, without encoding the event again.
    pub(super) fn event_json(id: Option<&str>, event: &str) -> String {
        let mut frame = String::with_capacity(event.len() + 32 + id.map_or(0, str::len));
        frame.push_str(r#"{"type":"event","#);
        if let Some(id) = id {
            frame.push_str(r#""id":"#);
            // A string always encodes.
            frame.push_str(&slop_api::json::to_string(id).unwrap_or_default());
            frame.push(',');
        }
        frame.push_str(r#""event":"#);
        frame.push_str(event);
        frame.push('}');
        frame
    }

    /// The frame as JSON text.
    pub(super) fn to_json(&self) -> String {
        slop_api::json::to_string(self).unwrap_or_else(|error| {
            // Only maps with non-string keys fail, which no frame has.
            tracing::error!(%error, "a WebSocket frame did not encode as JSON");
            r#"{"type":"error","code":"INTERNAL","message":"internal error"}"#.to_owned()
        })
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use slop_api::notification::{Namespace, StreamPosition};

    #[test]
    fn a_pre_encoded_event_frame_is_the_event_frame() {
        let event = Event {
            channel: "topic:news".into(),
            offset: 7,
            r#type: "story.published".into(),
            ..Default::default()
        };
        let json = serde_json::to_string(&event).unwrap();
        for id in [None, Some("s1"), Some("quote\"and\\slash")] {
            let frame = ServerFrame::Event { id, event: &event };
            assert_eq!(ServerFrame::event_json(id, &json), frame.to_json());
        }
    }

    #[test]
    fn client_frames_parse() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ping","id":"7"}"#),
            Ok(ClientFrame::Ping {
                id: Some("7".into())
            })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"auth","token":"t"}"#),
            Ok(ClientFrame::Auth { token: "t".into() })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"unsubscribe","id":"s"}"#),
            Ok(ClientFrame::Unsubscribe { id: "s".into() })
        );
        let one = ClientFrame::parse(
            r#"{"type":"subscribe","id":"s","channel":"user:1","namespaces":["NAMESPACE_MEDIA"],"resumeFrom":{"offset":"42","epoch":"e"}}"#,
        );
        let expected = ChannelSubscription {
            channel: "user:1".into(),
            namespaces: vec![Namespace::Media as i32],
            resume_from: Some(StreamPosition {
                offset: 42,
                epoch: "e".into(),
            }),
        };
        assert_eq!(
            one,
            Ok(ClientFrame::Subscribe {
                id: "s".into(),
                subscriptions: vec![expected.clone()]
            })
        );
        let many = ClientFrame::parse(
            r#"{"type":"subscribe","id":"s","subscriptions":[{"channel":"user:1","namespaces":["NAMESPACE_MEDIA"],"resume_from":{"offset":42,"epoch":"e"}},{"channel":"topic:news"}]}"#,
        );
        let Ok(ClientFrame::Subscribe { subscriptions, .. }) = many else {
            panic!("{many:?}");
        };
        assert_eq!(subscriptions[0], expected);
        assert_eq!(subscriptions[1].channel, "topic:news");
        assert_eq!(
            ClientFrame::parse(r#"{"type":"subscribe","id":"own"}"#),
            Ok(ClientFrame::Subscribe {
                id: "own".into(),
                subscriptions: vec![]
            })
        );
    }

    #[test]
    fn bad_frames_keep_their_id() {
        for (text, id) in [
            ("not json", None),
            ("[]", None),
            (r#"{"id":"1"}"#, Some("1")),
            (r#"{"type":"dance","id":"2"}"#, Some("2")),
            (r#"{"type":"ping","extra":1}"#, None),
            (r#"{"type":"auth"}"#, None),
            (r#"{"type":"subscribe","channel":"topic:a"}"#, None),
            (
                r#"{"type":"subscribe","id":"3","chanel":"topic:a"}"#,
                Some("3"),
            ),
            (
                r#"{"type":"subscribe","id":"4","channel":"topic:a","subscriptions":[]}"#,
                Some("4"),
            ),
            (
                r#"{"type":"subscribe","id":"5","channel":"topic:a","resumeFrom":{"offset":"x"}}"#,
                Some("5"),
            ),
            (r#"{"type":"unsubscribe"}"#, None),
            (r#"{"type":"ping","id":7}"#, None),
        ] {
            let error = ClientFrame::parse(text).unwrap_err();
            assert_eq!(error.id.as_deref(), id, "{text}: {}", error.message);
        }
        let long = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(MAX_ID_LEN + 1));
        assert!(ClientFrame::parse(&long).is_err());
    }

    #[test]
    fn server_frames_are_tagged_camel_case_json() {
        let frame = ServerFrame::Welcome {
            user_id: "u",
            session_id: "s",
        };
        assert_eq!(
            serde_json::to_value(&frame).unwrap(),
            json!({"type": "welcome", "userId": "u", "sessionId": "s"})
        );
        let status = Status::permission_denied("not yours");
        assert_eq!(
            serde_json::to_value(ServerFrame::status(&status, Some("s1"))).unwrap(),
            json!({"type": "error", "code": "PERMISSION_DENIED", "message": "not yours", "id": "s1"})
        );
        let event = Event {
            channel: "topic:a".into(),
            offset: 3,
            namespace: Namespace::Notifications as i32,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(ServerFrame::Event {
                id: None,
                event: &event
            })
            .unwrap(),
            json!({"type": "event", "event": {"channel": "topic:a", "offset": "3", "namespace": "NAMESPACE_NOTIFICATIONS"}})
        );
    }
}
