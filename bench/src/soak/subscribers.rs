//! The soak's WebSocket subscribers: opened as the fan-out benchmark opens
//! them ([`crate::fanout`]), each following its user's own channel (which
//! the server adds) and the soak's topic, then held for the whole run. Each
//! reads in a task of its own and records every event's delivery latency,
//! read from the event itself ([`super::publisher::sent_at`]), and anything
//! wrong: a socket closed, an event of another channel, an offset that
//! does not rise.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::watch, task::JoinSet, time::Instant};

use super::publisher::sent_at;
use crate::{
    fanout::{event_channel, event_offset, ws::Socket},
    load::Recording,
};

/// What the subscribers received: a recording of deliveries (each at its
/// receipt, with its latency) and of failures, taken interval by interval,
/// and a count of every delivery, for the losses.
#[derive(Debug, Default)]
pub(super) struct Deliveries {
    recording: Mutex<Recording>,
    delivered: AtomicU64,
}

impl Deliveries {
    /// Messages delivered so far.
    pub(super) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// What was recorded since the last time.
    pub(super) fn take(&self) -> Recording {
        std::mem::take(&mut *self.lock())
    }

    fn record(&self, at: Duration, outcome: Result<Duration, String>) {
        let (latency, outcome) = match outcome {
            Ok(latency) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                (latency, Ok(()))
            }
            Err(error) => (Duration::ZERO, Err(error)),
        };
        self.lock().record(at, latency, outcome);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recording> {
        // A reader that panicked cannot leave the recording half-written:
        // a push either happened or not.
        self.recording
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The channels a socket follows: its user's own and the topic.
#[derive(Debug, Clone)]
pub(super) struct Followed {
    /// `user:<id>`.
    pub(super) own: String,
    /// `topic:<name>`.
    pub(super) topic: String,
}

/// The readers of every socket, until [`Readers::stop`].
pub(super) struct Readers {
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
}

impl Readers {
    /// A reader task per socket, with the channels it follows; times are
    /// measured from `origin`.
    pub(super) fn start(
        sockets: Vec<(Socket, Followed)>,
        origin: Instant,
        deliveries: &Arc<Deliveries>,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for (socket, followed) in sockets {
            tasks.spawn(read(
                socket,
                followed,
                origin,
                deliveries.clone(),
                stopped.clone(),
            ));
        }
        Self { tasks, stop }
    }

    /// Stops every reader and closes its socket.
    pub(super) async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Reads one socket until `stop`, or until it fails.
async fn read(
    mut socket: Socket,
    followed: Followed,
    origin: Instant,
    deliveries: Arc<Deliveries>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = Offsets::default();
    loop {
        let text = tokio::select! {
            biased;
            _ = stop.changed() => return,
            text = socket.next_text() => text,
        };
        let at = origin.elapsed();
        match text {
            Ok(text) => {
                if let Some(outcome) = last.receipt(text, &followed, at) {
                    deliveries.record(at, outcome);
                }
            }
            Err(error) => {
                deliveries.record(at, Err(error));
                return;
            }
        }
    }
}

/// The last offset a socket received of each channel it follows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Offsets {
    own: u64,
    topic: u64,
}

impl Offsets {
    /// What a text frame received at `at` says: None when it is not an
    /// event nor an error (`welcome`, `subscribed`…); the latency of an
    /// event of a followed channel whose offset is above the last one; an
    /// error otherwise.
    fn receipt(
        &mut self,
        text: &[u8],
        followed: &Followed,
        at: Duration,
    ) -> Option<Result<Duration, String>> {
        if text.starts_with(br#"{"type":"error""#) {
            return Some(Err(String::from_utf8_lossy(text).into_owned()));
        }
        let offset = event_offset(text)?;
        let channel = event_channel(text).unwrap_or(b"no channel");
        let last = if channel == followed.own.as_bytes() {
            &mut self.own
        } else if channel == followed.topic.as_bytes() {
            &mut self.topic
        } else {
            return Some(Err(format!(
                "an event of {} reached a socket of {} and {}",
                String::from_utf8_lossy(channel),
                followed.own,
                followed.topic
            )));
        };
        if offset <= *last {
            return Some(Err(format!(
                "offset {offset} of {} came after {last}",
                String::from_utf8_lossy(channel)
            )));
        }
        *last = offset;
        Some(
            sent_at(text)
                .map(|sent| at.saturating_sub(sent))
                .ok_or_else(|| {
                    format!(
                        "an event of {} without the soak's payload",
                        String::from_utf8_lossy(channel)
                    )
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(channel: &str, offset: u64, sent_micros: u64) -> String {
        format!(
            r#"{{"type":"event","event":{{"channel":"{channel}","namespace":"NAMESPACE_NOTIFICATIONS","offset":"{offset}","epoch":"e","type":"soak.tick","payload":{{"sent":"{sent_micros}"}}}}}}"#
        )
    }

    #[test]
    fn events_of_followed_channels_give_their_latency_in_offset_order() {
        let followed = Followed {
            own: "user:u7".into(),
            topic: "topic:soak".into(),
        };
        let at = Duration::from_millis(1_000);
        let mut last = Offsets::default();
        let mut receipt = |text: &str| last.receipt(text.as_bytes(), &followed, at);

        assert_eq!(receipt(r#"{"type":"welcome","userId":"u7"}"#), None);
        assert_eq!(
            receipt(r#"{"type":"subscribed","id":"t","subscribed":{"channel":"topic:soak"}}"#),
            None
        );
        assert_eq!(
            receipt(&event("topic:soak", 3, 990_000)),
            Some(Ok(Duration::from_millis(10)))
        );
        // Each channel has offsets of its own.
        assert_eq!(
            receipt(&event("user:u7", 1, 999_500)),
            Some(Ok(Duration::from_micros(500)))
        );
        assert_eq!(
            receipt(&event("topic:soak", 3, 995_000)),
            Some(Err("offset 3 of topic:soak came after 3".into()))
        );
        assert_eq!(
            receipt(&event("user:u8", 1, 0)),
            Some(Err(
                "an event of user:u8 reached a socket of user:u7 and topic:soak".into()
            ))
        );
        assert!(matches!(
            receipt(r#"{"type":"error","code":"UNAVAILABLE"}"#),
            Some(Err(error)) if error.contains("UNAVAILABLE")
        ));
        assert_eq!(
            receipt(r#"{"type":"event","event":{"channel":"user:u7","offset":"2"}}"#),
            Some(Err("an event of user:u7 without the soak's payload".into()))
        );
        assert_eq!(last, Offsets { own: 2, topic: 3 });
    }

    #[test]
    fn deliveries_count_and_are_taken_interval_by_interval() {
        let deliveries = Deliveries::default();
        deliveries.record(Duration::from_secs(1), Ok(Duration::from_millis(3)));
        deliveries.record(
            Duration::from_secs(2),
            Err("closed: 1001 going away".into()),
        );
        let first = deliveries.take();
        assert_eq!(first.samples.len(), 2);
        assert_eq!(
            first.first_error.as_deref(),
            Some("closed: 1001 going away")
        );
        assert!(deliveries.take().samples.is_empty());
        assert_eq!(deliveries.delivered(), 1);
    }
}
