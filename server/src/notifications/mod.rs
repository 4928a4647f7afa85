//! Channel streams: ordered, bounded event logs that every instance shares.
//!
//! A channel (`user:<id>` or `topic:<name>`, see [`ChannelName`]) is an
//! ordered log of [`Event`]s. Publishing appends: the backend gives the event
//! the next offset of its channel (1, 2, 3, …) and the channel's epoch, an
//! opaque string that changes whenever the channel's history is lost (a new
//! in-memory backend after a restart, Redis keys flushed or expired), so a
//! resume position (offset, epoch) is never mistaken for one in a different
//! history. History is bounded by count and by age ([`History`]); events
//! older than the age limit are treated as gone even before they are trimmed.
//!
//! Live events reach the [`Deliver`] sink given to the backend, in offset
//! order per channel:
//! - [`memory::MemoryStreams`] delivers every event as it is published, on
//!   the publisher's call, under the channel's lock;
//! - [`redis::RedisStreams`] keeps history in Redis Streams and delivers the
//!   events of the channels this instance [`StreamBackend::watch`]es, whoever
//!   published them, from a Redis pub/sub subscription; it fills any gap (a
//!   lost connection) from history, so the sink still sees every offset once,
//!   in order.
//!
//! The sink is the [`hub`], which hands events to this instance's
//! subscribers. One conformance suite (`conformance`) runs against both
//! backends.

use std::{fmt, sync::Arc, time::Duration};

use slop_api::notification::{Event, StreamPosition};

use crate::infra::redis_context::RedisContext;

pub mod hub;
pub mod memory;
pub mod redis;

/// The longest topic name, in characters.
pub const MAX_TOPIC_NAME_CHARS: usize = 64;
/// The longest user id in a channel name (user ids are UUIDs, 36).
const MAX_USER_ID_CHARS: usize = 64;

/// A channel's name, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelName {
    /// `user:<user id>`: one user's private channel.
    User(String),
    /// `topic:<name>`: a public topic.
    Topic(String),
}

/// Why a string is not a channel name; completes "The channel …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    /// Neither `user:` nor `topic:`.
    #[error("must be `user:<user id>` or `topic:<name>`")]
    UnknownKind,
    /// A topic name that is empty, too long or has other characters.
    #[error("topic names are 1 to 64 characters of a-z, 0-9, `.`, `_` and `-`")]
    BadTopic,
    /// A user id that is empty, too long or has other characters.
    #[error("user ids are 1 to 64 characters of letters, digits and `-`")]
    BadUserId,
}

impl ChannelName {
    /// Parses `user:<id>` or `topic:<name>` (topic names: 1 to 64 characters
    /// of `a-z`, `0-9`, `.`, `_`, `-`).
    pub fn parse(name: &str) -> Result<Self, ChannelNameError> {
        if let Some(topic) = name.strip_prefix("topic:") {
            let valid = !topic.is_empty()
                && topic.len() <= MAX_TOPIC_NAME_CHARS
                && topic.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                });
            return if valid {
                Ok(Self::Topic(topic.to_owned()))
            } else {
                Err(ChannelNameError::BadTopic)
            };
        }
        if let Some(user) = name.strip_prefix("user:") {
            let valid = !user.is_empty()
                && user.len() <= MAX_USER_ID_CHARS
                && user.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            return if valid {
                Ok(Self::User(user.to_owned()))
            } else {
                Err(ChannelNameError::BadUserId)
            };
        }
        Err(ChannelNameError::UnknownKind)
    }

    /// The private channel of `user_id`.
    pub fn user(user_id: &str) -> Self {
        Self::User(user_id.to_owned())
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(id) => write!(f, "user:{id}"),
            Self::Topic(name) => write!(f, "topic:{name}"),
        }
    }
}

/// How much history each channel keeps, and how long it remembers the
/// idempotency keys of publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// At most this many events (at least 1).
    pub max_events: usize,
    /// Events older than this are gone.
    pub max_age: Duration,
    /// A publish with the idempotency key of one made less than this long
    /// ago, to the same channel, stores nothing and answers that one's
    /// position.
    pub dedup_window: Duration,
}

/// One channel's part of a publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The event as stored; when `duplicate`, only its channel, offset and
    /// epoch are meaningful: those of the event published earlier with the
    /// same idempotency key.
    pub event: Arc<Event>,
    /// Nothing was appended: the idempotency key was used on this channel
    /// within the dedup window.
    pub duplicate: bool,
}

/// Events appended to a channel's stream, one per channel (counter).
pub const EVENTS_PUBLISHED: &str = "slop_events_published_total";

/// Where a channel stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    /// The channel's current epoch; empty for a channel nobody published to
    /// (or whose history is gone), which has none until its first event.
    pub epoch: String,
    /// The latest event's offset; 0 before the first event.
    pub offset: u64,
    /// The oldest retained event's offset; 0 when history is empty.
    pub earliest: u64,
    /// How many events history holds.
    pub size: usize,
}

impl ChannelState {
    /// A channel with no events and no epoch yet.
    pub fn unpublished() -> Self {
        Self {
            epoch: String::new(),
            offset: 0,
            earliest: 0,
            size: 0,
        }
    }

    /// Whether a client at `position` can continue from here: the same
    /// epoch, not ahead of the channel; or offset 0 with no epoch ("before
    /// the channel's first event", what a subscriber of a channel nobody
    /// had published to holds), which continues into whatever epoch the
    /// channel got since.
    pub fn continues_from(&self, position: &StreamPosition) -> bool {
        let before_any = position.offset == 0 && position.epoch.is_empty();
        (before_any || position.epoch == self.epoch) && position.offset <= self.offset
    }
}

/// Where this instance's live events go: called once per event, in offset
/// order per channel, never concurrently for one channel. It must not block
/// (it runs under the channel's lock, or on the Redis listener).
pub trait Deliver: Send + Sync + 'static {
    /// One live event of a channel (its `channel`, `offset`, `epoch` and
    /// `time` set).
    fn deliver(&self, event: Arc<Event>);
}

/// Why a stream operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Redis failed or is unreachable.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis held something this server did not write.
    #[error("stream data in Redis is malformed: {0}")]
    Malformed(String),
}

/// What stream operations return.
pub type Result<T, E = StreamError> = std::result::Result<T, E>;

/// The channel streams, in process or in Redis.
#[derive(Clone)]
pub enum StreamBackend {
    /// In process: one instance only, history lost at restart.
    Memory(memory::MemoryStreams),
    /// In Redis, shared by every instance.
    Redis(redis::RedisStreams),
}

impl StreamBackend {
    /// Streams in Redis on the instance's Redis context (see [`redis`] for
    /// the layout), keeping `history`, delivering live events of watched
    /// channels to `sink`. Starts the listener task (so it must run within
    /// a Tokio runtime).
    pub fn redis(context: &RedisContext, history: History, sink: Arc<dyn Deliver>) -> Self {
        Self::Redis(redis::RedisStreams::new(context, history, sink))
    }

    /// Which backend: "memory" or "redis".
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }

    /// Appends `event` (its `channel`, `offset`, `epoch` and `time` are
    /// ignored and set here, `time` from the backend's clock) to each of
    /// `channels`, which must be distinct, and returns the stored events in
    /// the same order. Never waits for subscribers.
    pub async fn publish(
        &self,
        channels: &[ChannelName],
        event: &Event,
    ) -> Result<Vec<Arc<Event>>> {
        let stored = self.publish_once(channels, event, None).await?;
        Ok(stored.into_iter().map(|stored| stored.event).collect())
    }

    /// [`Self::publish`], at most once per channel for an `idempotency_key`
    /// within the dedup window: a channel that already got an event with the
    /// key gets nothing new, and its part of the answer is that event
    /// (`duplicate`). So a publisher that did not learn whether a publish
    /// happened (a timeout) retries with the same key safely. Without a key,
    /// every call appends.
    pub async fn publish_once(
        &self,
        channels: &[ChannelName],
        event: &Event,
        idempotency_key: Option<&str>,
    ) -> Result<Vec<Stored>> {
        let stored = match self {
            Self::Memory(streams) => streams.publish(channels, event, idempotency_key),
            Self::Redis(streams) => streams.publish(channels, event, idempotency_key).await?,
        };
        let appended = stored.iter().filter(|stored| !stored.duplicate).count();
        metrics::counter!(EVENTS_PUBLISHED).increment(appended as u64);
        Ok(stored)
    }

    /// Where `channel` stands. A channel nobody published to has no epoch
    /// (and gets no key or entry from being asked about): its position is
    /// offset 0 with an empty epoch, from which its first epoch continues.
    pub async fn channel(&self, channel: &ChannelName) -> Result<ChannelState> {
        match self {
            Self::Memory(streams) => Ok(streams.channel(channel)),
            Self::Redis(streams) => streams.channel(channel).await,
        }
    }

    /// The retained events of `channel` with offsets above `after`, oldest
    /// first, at most `limit`.
    pub async fn read(
        &self,
        channel: &ChannelName,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>> {
        match self {
            Self::Memory(streams) => Ok(streams.read(channel, after, limit)),
            Self::Redis(streams) => streams.read(channel, after, limit).await,
        }
    }

    /// Makes sure live events of `channel` reach the sink from when this
    /// returns on (the memory backend delivers every channel anyway).
    pub async fn watch(&self, channel: &ChannelName) -> Result<()> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(streams) => streams.watch(channel).await,
        }
    }

    /// This instance no longer needs live events of `channel`.
    pub fn unwatch(&self, channel: &ChannelName) {
        match self {
            Self::Memory(_) => {}
            Self::Redis(streams) => streams.unwatch(channel),
        }
    }

    /// Checks the backend answers (for readiness).
    pub async fn ping(&self) -> Result<()> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(streams) => streams.ping().await,
        }
    }
}

/// Whether `events` are exactly the offsets after `after`, one by one, with
/// no hole (an event that no longer decodes leaves one).
pub fn contiguous_after(events: &[Arc<Event>], after: u64) -> bool {
    events
        .iter()
        .zip(after + 1..)
        .all(|(event, offset)| event.offset == offset)
}

/// Whether a retained event is still young enough to count.
fn within_age(event_millis: i64, now_millis: i64, max_age: Duration) -> bool {
    now_millis.saturating_sub(event_millis) <= crate::identity::sessions::duration_millis(max_age)
}

/// A fresh random epoch.
fn new_epoch() -> String {
    crate::identity::secrets::random_token(8)
}

/// The conformance suite every backend passes.
#[cfg(test)]
pub(crate) mod conformance;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_parse_and_print_back() {
        for name in ["user:3f2a-77", "topic:news", "topic:a.b_c-9"] {
            assert_eq!(ChannelName::parse(name).unwrap().to_string(), name);
        }
        let long = format!("topic:{}", "a".repeat(MAX_TOPIC_NAME_CHARS));
        assert!(ChannelName::parse(&long).is_ok());
    }

    #[test]
    fn bad_channel_names_say_what_is_wrong() {
        use ChannelNameError::*;
        let too_long = format!("topic:{}", "a".repeat(MAX_TOPIC_NAME_CHARS + 1));
        for (name, why) in [
            ("", UnknownKind),
            ("news", UnknownKind),
            ("room:1", UnknownKind),
            ("topic:", BadTopic),
            ("topic:News", BadTopic),
            ("topic:a b", BadTopic),
            ("topic:a:b", BadTopic),
            (too_long.as_str(), BadTopic),
            ("user:", BadUserId),
            ("user:a:b", BadUserId),
            ("user:../x", BadUserId),
        ] {
            assert_eq!(ChannelName::parse(name), Err(why), "{name:?}");
        }
    }
}
