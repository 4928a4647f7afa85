//! Notification streams as Server-Sent Events:
//! `GET /api/v1/notifications/stream?channel=…` (docs/sse.md).
//!
//! The route makes one `Subscribe` call with the request's headers as
//! metadata and its extensions (the peer address), so authorization and the
//! connection throttle are the service's, and writes each message of the
//! stream as one SSE message: `subscribed`, `event` and `heartbeat`, with
//! the canonical proto JSON of the message as data. A stream that ends with
//! a status ends with an `error` message whose data is the AIP-193 error
//! body; when the server shuts down, the stream ends that way too
//! (UNAVAILABLE), so open streams never hold up the drain.
//!
//! Resume: one stream may follow several channels, and browsers keep only
//! the id of the last message. So every `subscribed` and `event` message's
//! id is the resume position of *every* channel of the stream
//! ([`ResumePositions`]); EventSource sends it back as `Last-Event-ID` when
//! it reconnects, and the new stream resumes each channel where it was.

use std::{convert::Infallible, fmt::Write as _, sync::Arc};

use axum::{
    Router,
    extract::{Query, State, rejection::QueryRejection},
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, Sse},
    },
    routing::on,
};
use futures_util::{Stream, StreamExt as _};
use http::{HeaderValue, header};
use serde::Serialize;
use slop_api::notification::{
    ChannelSubscription, StreamPosition, SubscribeRequest, SubscribeResponse,
    subscribe_response::Message,
};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt as _};

use slop_context::{Notifications, SubscribeStream};

use crate::{
    Operation,
    error::{ApiError, error_body, response_status, retry_delay},
    notifications::{QueryParams, bad_parameter, parse_namespaces},
};

/// The most channels one stream may follow, which bounds the length of its
/// event ids.
pub const MAX_CHANNELS: usize = 16;

/// The longest resume id accepted, in bytes.
pub const MAX_RESUME_ID_LEN: usize = 4096;

/// What the stream route needs.
pub(crate) struct StreamState {
    notifications: Notifications,
    shutdown: CancellationToken,
}

/// The stream's operation, routed where Subscribe's binding says
/// ([`crate::bound`]).
pub(crate) const OPERATIONS: &[Operation<Arc<StreamState>>] = &[(
    "/slop.notification.v1.NotificationService/Subscribe",
    |method| on(method, stream),
)];

/// The stream route: `GET /api/v1/notifications/stream`. Its streams end
/// when `shutdown` is cancelled.
pub fn router(notifications: Notifications, shutdown: CancellationToken) -> Router {
    crate::bound(OPERATIONS).with_state(Arc::new(StreamState {
        notifications,
        shutdown,
    }))
}

async fn stream(
    State(state): State<Arc<StreamState>>,
    headers: http::HeaderMap,
    extensions: http::Extensions,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let (request, positions) = match stream_request(&headers, query) {
        Ok(parsed) => parsed,
        Err(status) => return ApiError(status).into_response(),
    };
    if state.shutdown.is_cancelled() {
        return ApiError(shutting_down()).into_response();
    }
    let request =
        tonic::Request::from_parts(crate::rest::call_metadata(&headers), extensions, request);
    let stream = match state.notifications.subscribe(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return ApiError(status).into_response(),
    };
    let relay = Relay {
        stream,
        positions,
        shutdown: state.shutdown.clone(),
    };
    let mut response = Sse::new(relay.into_events()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx (and proxies that copy it) not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn shutting_down() -> Status {
    Status::unavailable("the server is shutting down; reconnect to resume")
}

/// The Subscribe request a stream's query and `Last-Event-ID` ask for, and
/// the resume positions it starts from.
fn stream_request(
    headers: &http::HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<(SubscribeRequest, ResumePositions), Status> {
    let mut params = QueryParams::new(query)?;
    let mut channels: Vec<String> = params
        .all(&["channel"])
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|channel| !channel.is_empty())
        .map(str::to_owned)
        .collect();
    let namespaces = parse_namespaces(params.all(&["namespace", "namespaces"]))?;
    let query_id = params.one(&["last_event_id", "lastEventId"])?;
    params.finish("channel, namespace, last_event_id")?;

    // The header is what EventSource sends when it reconnects: newer than
    // the query parameter of the URL it was first opened with.
    let resumed = match headers.get("last-event-id") {
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| bad_resume_id("Last-Event-ID", "it is not ASCII text"))?;
            ResumePositions::parse(value).map_err(|why| bad_resume_id("Last-Event-ID", &why))?
        }
        None => match query_id {
            Some(value) => ResumePositions::parse(&value)
                .map_err(|why| bad_resume_id("last_event_id", &why))?,
            None => ResumePositions::default(),
        },
    };

    // Without `channel`, the stream follows the caller's own channel; when
    // it resumes, the channels its id names are the ones it had.
    if channels.is_empty() {
        channels = resumed.channels().map(str::to_owned).collect();
    }
    if channels.len() > MAX_CHANNELS {
        return Err(bad_parameter(
            "channel",
            &format!("a stream follows at most {MAX_CHANNELS} channels"),
        ));
    }
    let mut positions = ResumePositions::default();
    let subscriptions = channels
        .into_iter()
        .map(|channel| {
            let resume_from = resumed.get(&channel).cloned();
            if let Some(position) = &resume_from {
                positions.set(&channel, position.clone());
            }
            ChannelSubscription {
                channel,
                namespaces: namespaces.clone(),
                resume_from,
            }
        })
        .collect();
    Ok((SubscribeRequest { subscriptions }, positions))
}

/// INVALID_ARGUMENT for a resume id that does not parse; `field` is the
/// header or query parameter it came from.
fn bad_resume_id(field: &str, why: &str) -> Status {
    let why = format!(
        "not an event id of this stream ({why}); expected `<channel>=<offset>@<epoch>` \
         joined by `;`, as sent in the id of the stream's events"
    );
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("{field}: {why}"),
        ErrorDetails::with_bad_request_violation(field, why),
    )
}

/// A Subscribe stream on its way to an SSE body, keeping track of where
/// each channel stands.
struct Relay {
    stream: SubscribeStream,
    positions: ResumePositions,
    shutdown: CancellationToken,
}

impl Relay {
    /// The SSE messages: one per stream message, and a final `error` when
    /// the stream ends with a status or the server shuts down.
    fn into_events(self) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send {
        futures_util::stream::unfold(Some(self), |relay| async move {
            let mut relay = relay?;
            loop {
                let item = tokio::select! {
                    biased;
                    () = relay.shutdown.cancelled() => Some(Err(shutting_down())),
                    item = relay.stream.next() => item,
                };
                match item {
                    None => return None,
                    Some(Err(status)) => return Some((Ok(final_event(&status)), None)),
                    Some(Ok(response)) => {
                        if let Some(event) = relay.event(response) {
                            return Some((Ok(event), Some(relay)));
                        }
                    }
                }
            }
        })
    }

    /// The SSE message for one stream message (none for an empty one).
    fn event(&mut self, response: SubscribeResponse) -> Option<SseEvent> {
        let event = match response.message? {
            Message::Subscribed(subscribed) => {
                self.positions.record_subscribed(&subscribed);
                SseEvent::default()
                    .event("subscribed")
                    .id(self.positions.encode())
                    .data(json(&subscribed))
            }
            Message::Event(event) => {
                self.positions.set(
                    &event.channel,
                    StreamPosition {
                        offset: event.offset,
                        epoch: event.epoch.clone(),
                    },
                );
                SseEvent::default()
                    .event("event")
                    .id(self.positions.encode())
                    .data(json(&event))
            }
            Message::Heartbeat(heartbeat) => SseEvent::default()
                .event("heartbeat")
                .data(json(&heartbeat)),
        };
        Some(event)
    }
}

/// The `error` message that ends a stream: the AIP-193 body, and for a
/// status that says when to retry, that wait as the reconnection time.
fn final_event(status: &Status) -> SseEvent {
    let body = error_body(response_status(status), status);
    let event = SseEvent::default().event("error").data(json(&body));
    match retry_delay(status) {
        Some(delay) => event.retry(delay),
        None => event,
    }
}

/// Canonical JSON of a message (pbjson's serde impls).
fn json<T: Serialize>(value: &T) -> String {
    slop_api::json::to_string(value).unwrap_or_else(|error| {
        // Only a map with non-string keys fails, which proto messages never
        // have.
        tracing::error!(%error, "a stream message did not encode as JSON");
        "null".to_owned()
    })
}

/// The resume position of every channel of a stream: the id of its SSE
/// messages, and what `Last-Event-ID` gives back.
///
/// Text form: `<channel>=<offset>@<epoch>`, one per channel, joined by
/// `;`, for example `user:7f3a=42@kq3Vb1;topic:news=7@Zx81aa`. Characters
/// other than ASCII letters, digits, `-`, `.`, `_`, `~` and `:` are
/// percent-encoded, so the text is ASCII and never contains the separators.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResumePositions(Vec<(String, StreamPosition)>);

impl ResumePositions {
    /// Parses the text form; the error completes "not an event id (…)".
    /// The empty string has no positions.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_RESUME_ID_LEN {
            return Err(format!("longer than {MAX_RESUME_ID_LEN} bytes"));
        }
        let mut positions = Self::default();
        for entry in text.split(';').filter(|entry| !entry.is_empty()) {
            let (channel, position) = entry
                .split_once('=')
                .ok_or_else(|| format!("`{entry}` has no `=`"))?;
            let (offset, epoch) = position
                .split_once('@')
                .ok_or_else(|| format!("`{entry}` has no `@`"))?;
            let channel = percent_decode(channel)
                .filter(|channel| !channel.is_empty())
                .ok_or_else(|| format!("`{entry}` has no valid channel"))?;
            let offset = offset
                .parse()
                .map_err(|_| format!("`{entry}` has no valid offset"))?;
            let epoch =
                percent_decode(epoch).ok_or_else(|| format!("`{entry}` has no valid epoch"))?;
            if positions.get(&channel).is_some() {
                return Err(format!("{channel} appears twice"));
            }
            if positions.0.len() == MAX_CHANNELS {
                return Err(format!("more than {MAX_CHANNELS} channels"));
            }
            positions
                .0
                .push((channel, StreamPosition { offset, epoch }));
        }
        Ok(positions)
    }

    /// The text form.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        for (i, (channel, position)) in self.0.iter().enumerate() {
            if i > 0 {
                text.push(';');
            }
            percent_encode(channel, &mut text);
            let _ = write!(text, "={}@", position.offset);
            percent_encode(&position.epoch, &mut text);
        }
        text
    }

    /// The position of a channel.
    pub fn get(&self, channel: &str) -> Option<&StreamPosition> {
        self.0
            .iter()
            .find(|(name, _)| name == channel)
            .map(|(_, position)| position)
    }

    /// The channels that have a position, in order.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(channel, _)| channel.as_str())
    }

    /// Sets the position of a channel (a new channel goes last).
    pub fn set(&mut self, channel: &str, position: StreamPosition) {
        match self.0.iter_mut().find(|(name, _)| name == channel) {
            Some((_, old)) => *old = position,
            None => self.0.push((channel.to_owned(), position)),
        }
    }

    /// Where a channel stands once its subscription started: unchanged
    /// when the missed events follow (the client has not seen them yet),
    /// otherwise the channel's latest position, which live events follow.
    pub fn record_subscribed(&mut self, subscribed: &slop_api::notification::Subscribed) {
        if subscribed.was_recovering && subscribed.recovered {
            return;
        }
        if let Some(position) = &subscribed.position {
            self.set(&subscribed.channel, position.clone());
        }
    }
}

fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b':')
}

fn percent_encode(text: &str, out: &mut String) {
    for byte in text.bytes() {
        if is_plain(byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// None for anything but plain characters and `%XX` escapes of UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail
                .get(..2)
                .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))?;
            let hex = std::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else if is_plain(byte) {
            bytes.push(byte);
            rest = tail;
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn positions_round_trip_through_text() {
        let mut positions = ResumePositions::default();
        positions.set("user:7f3a", position(42, "kq3Vb1"));
        positions.set("topic:news", position(0, ""));
        positions.set("topic:odd", position(u64::MAX, "a;b=c@d%é"));
        let text = positions.encode();
        assert_eq!(
            text,
            "user:7f3a=42@kq3Vb1;topic:news=0@;topic:odd=18446744073709551615@a%3Bb%3Dc%40d%25%C3%A9"
        );
        assert_eq!(ResumePositions::parse(&text).unwrap(), positions);
        assert_eq!(
            ResumePositions::parse("").unwrap(),
            ResumePositions::default()
        );
    }

    #[test]
    fn malformed_ids_are_refused() {
        let long = format!("topic:a=1@{}", "x".repeat(MAX_RESUME_ID_LEN));
        let many = (0..=MAX_CHANNELS)
            .map(|i| format!("topic:t{i}=1@e"))
            .collect::<Vec<_>>()
            .join(";");
        for text in [
            "topic:a",
            "topic:a=1",
            "topic:a=x@e",
            "topic:a=-1@e",
            "=1@e",
            "topic:a=1@e;topic:a=2@e",
            "topic:a=1@e%ZZ",
            "topic:a=1@e%C3",
            "topic:a=1@e%+1",
            "topic a=1@e",
            &long,
            &many,
        ] {
            assert!(ResumePositions::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_recovering_subscription_keeps_its_resume_position() {
        let mut positions = ResumePositions::default();
        positions.set("topic:a", position(3, "e"));
        let mut subscribed = slop_api::notification::Subscribed {
            channel: "topic:a".into(),
            position: Some(position(9, "e")),
            was_recovering: true,
            recovered: true,
        };
        positions.record_subscribed(&subscribed);
        assert_eq!(positions.get("topic:a"), Some(&position(3, "e")));
        subscribed.recovered = false;
        subscribed.position = Some(position(1, "new"));
        positions.record_subscribed(&subscribed);
        assert_eq!(positions.get("topic:a"), Some(&position(1, "new")));
    }
}
