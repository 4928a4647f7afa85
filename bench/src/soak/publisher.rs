//! The backend service of the soak: `NotificationService/Publish` calls with
//! a service key, each to one channel in turn, each event carrying when its
//! call started so that a subscriber can tell its delivery latency without
//! asking anyone.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use slop_api::notification::{
    PublishRequest, notification_service_client::NotificationServiceClient,
};
use tokio::time::Instant;
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};

use crate::load::Caller;

/// The `type` of every event the soak publishes.
const EVENT_TYPE: &str = "soak.tick";

/// The payload field that carries when the event's `Publish` call started,
/// in microseconds since the run's origin, as a string (a JSON number could
/// come back as `1.5e6`).
const SENT: &str = "sent";

/// Publishes to its channels in turn, one event per call.
pub(super) struct Publisher {
    client: NotificationServiceClient<Channel>,
    authorization: MetadataValue<Ascii>,
    /// Each channel, and how many sockets follow it.
    channels: Vec<(String, u64)>,
    next: usize,
    origin: Instant,
    /// Messages the sockets should receive, summed over every publisher:
    /// each successful call adds its channel's followers.
    expected: Arc<AtomicU64>,
}

impl Publisher {
    /// A publisher to `channels` (name, followers) in turn, over `channel`
    /// to the server, as the service whose key is `service_key`; event
    /// times are measured from `origin`, and every delivered-to-be message
    /// is counted into `expected`.
    pub(super) fn new(
        channel: Channel,
        service_key: &str,
        channels: Vec<(String, u64)>,
        origin: Instant,
        expected: Arc<AtomicU64>,
    ) -> Result<Self, String> {
        if channels.is_empty() {
            return Err("a publisher needs at least one channel".into());
        }
        Ok(Self {
            client: NotificationServiceClient::new(channel),
            authorization: format!("Bearer {service_key}")
                .parse()
                .map_err(|_| "the service key is not ASCII".to_owned())?,
            channels,
            next: 0,
            origin,
            expected,
        })
    }
}

impl Caller for Publisher {
    async fn call(&mut self) -> Result<(), String> {
        let (channel, followers) = &self.channels[self.next % self.channels.len()];
        self.next = self.next.wrapping_add(1);
        let mut request = tonic::Request::new(PublishRequest {
            channels: vec![channel.clone()],
            r#type: EVENT_TYPE.into(),
            payload: Some(payload(self.origin.elapsed())),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        let answer = self
            .client
            .publish(request)
            .await
            .map_err(|status| format!("Publish to {channel}: {status}"))?
            .into_inner();
        match answer.events.as_slice() {
            [event] if !event.duplicate => {
                self.expected.fetch_add(*followers, Ordering::Relaxed);
                Ok(())
            }
            events => Err(format!(
                "Publish to {channel}: {} events answered, one new one expected",
                events.len()
            )),
        }
    }
}

/// A gRPC connection to the server at `addr`, for the publishers to share.
pub(super) async fn connect(addr: SocketAddr) -> Result<Channel, String> {
    let mut channels = crate::client::grpc_channels(addr, 1).await?;
    channels
        .pop()
        .ok_or_else(|| "no gRPC connection".to_owned())
}

/// An event's payload: `{"sent": "<µs since the origin>"}`.
fn payload(sent: Duration) -> pbjson_types::Struct {
    use pbjson_types::value::Kind;
    pbjson_types::Struct {
        fields: [(
            SENT.to_owned(),
            pbjson_types::Value {
                kind: Some(Kind::StringValue(sent.as_micros().to_string())),
            },
        )]
        .into(),
    }
}

/// When an event frame's `Publish` call started, from its payload; None
/// for a frame without one.
pub(super) fn sent_at(frame: &[u8]) -> Option<Duration> {
    let field = format!(r#""{SENT}":""#);
    let at = frame
        .windows(field.len())
        .position(|window| window == field.as_bytes())?
        + field.len();
    let digits = &frame[at..];
    let end = digits.iter().position(|&byte| byte == b'"')?;
    let micros = std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?;
    Some(Duration::from_micros(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publish_time_goes_out_in_the_payload_and_comes_back_from_the_frame() {
        let sent = Duration::from_micros(612_345_678);
        let json = serde_json::to_string(&payload(sent)).unwrap();
        assert_eq!(json, r#"{"sent":"612345678"}"#);
        let frame = format!(
            r#"{{"type":"event","event":{{"channel":"topic:s","offset":"7","type":"soak.tick","payload":{json}}}}}"#
        );
        assert_eq!(sent_at(frame.as_bytes()), Some(sent));
        assert_eq!(sent_at(br#"{"type":"event","event":{"payload":{}}}"#), None);
        assert_eq!(sent_at(br#"{"payload":{"sent":"12x"}}"#), None);
        assert_eq!(sent_at(br#"{"payload":{"sent":"12"#), None);
    }
}
