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
        match self {
            Self::Memory(streams) => Ok(streams.publish(channels, event, idempotency_key)),
            Self::Redis(streams) => streams.publish(channels, event, idempotency_key).await,
        }
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

    /// For a backend that receives live events over a connection of its
    /// own (Redis pub/sub): whether that connection is up and caught up.
    /// Readiness follows it, since no subscription can start without it.
    pub fn listening(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        match self {
            Self::Memory(_) => None,
            Self::Redis(streams) => Some(streams.listening()),
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
    crate::identity::tokens::random_token(8)
}

/// The conformance suite every backend passes. Each test gets a fresh
/// backend (for Redis, a key prefix of its own), a manual clock and a sink
/// that records what it is given.
#[cfg(test)]
pub(crate) mod conformance {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use std::future::Future;

    use slop_api::notification::{Event, Namespace};
    use tokio::sync::Notify;

    use super::*;
    use crate::infra::{clock::ManualClock, redis_context::testing::PrefixGuard};

    crate::infra::conformance::backend_conformance! {
        backends: [memory_backend => on_memory, redis_backend => on_redis],
        cases: [
            offsets_count_up_from_one_per_channel,
            a_channel_nobody_published_to_has_no_epoch_yet,
            reads_return_what_follows_an_offset,
            history_keeps_the_latest_events_up_to_the_count,
            events_older_than_the_age_limit_are_gone,
            watched_channels_deliver_live_events_in_order,
            publishing_to_many_users_stores_each_channel,
            stored_events_keep_every_field,
            an_idempotency_key_publishes_once_per_channel_within_the_window,
        ],
    }

    async fn on_memory<F, Fut>(case: F)
    where
        F: FnOnce(StreamBackend, Arc<ManualClock>, Arc<Recorder>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let clock = ManualClock::starting_now();
        let sink = Arc::new(Recorder::default());
        let streams = StreamBackend::Memory(memory::MemoryStreams::new(
            clock.clone(),
            HISTORY,
            sink.clone(),
        ));
        case(streams, clock, sink).await;
    }

    /// On a Redis context of its own, under a prefix whose keys go when the
    /// case ends.
    async fn on_redis<F, Fut>(case: F)
    where
        F: FnOnce(StreamBackend, Arc<ManualClock>, Arc<Recorder>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let clock = ManualClock::starting_now();
        let sink = Arc::new(Recorder::default());
        let guard = PrefixGuard::new();
        let streams = StreamBackend::redis(&guard.context(clock.clone()), HISTORY, sink.clone());
        case(streams, clock, sink).await;
    }

    /// History of the suite's backends.
    pub(crate) const HISTORY: History = History {
        max_events: 5,
        max_age: Duration::from_secs(60),
        dedup_window: Duration::from_secs(10),
    };

    /// A sink that records what it is given.
    #[derive(Default)]
    pub(crate) struct Recorder {
        events: Mutex<Vec<Arc<Event>>>,
        arrived: Notify,
    }

    impl Deliver for Recorder {
        fn deliver(&self, event: Arc<Event>) {
            self.events.lock().unwrap().push(event);
            self.arrived.notify_waiters();
        }
    }

    impl Recorder {
        /// The (channel, offset) pairs delivered so far.
        pub(crate) fn seen(&self) -> Vec<(String, u64)> {
            self.events
                .lock()
                .unwrap()
                .iter()
                .map(|e| (e.channel.clone(), e.offset))
                .collect()
        }

        /// Waits (at most 5 s) until `count` events were delivered.
        pub(crate) async fn wait_for(&self, count: usize) -> Vec<Arc<Event>> {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let arrived = self.arrived.notified();
                {
                    let events = self.events.lock().unwrap();
                    if events.len() >= count {
                        return events.clone();
                    }
                }
                if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                    panic!(
                        "waited 5 s for {count} delivered events, got {:?}",
                        self.seen()
                    );
                }
            }
        }
    }

    pub(crate) fn topic(name: &str) -> ChannelName {
        ChannelName::Topic(name.into())
    }

    pub(crate) fn event(kind: &str) -> Event {
        Event {
            namespace: Namespace::Notifications as i32,
            r#type: kind.into(),
            ..Event::default()
        }
    }

    fn offsets(events: &[Arc<Event>]) -> Vec<u64> {
        events.iter().map(|e| e.offset).collect()
    }

    pub(crate) async fn offsets_count_up_from_one_per_channel(
        streams: StreamBackend,
        _: Arc<ManualClock>,
        _: Arc<Recorder>,
    ) {
        let (a, b) = (topic("a"), topic("b"));
        let first = streams
            .publish(std::slice::from_ref(&a), &event("x"))
            .await
            .unwrap();
        let both = streams
            .publish(&[a.clone(), b.clone()], &event("y"))
            .await
            .unwrap();
        assert_eq!(offsets(&first), [1]);
        assert_eq!(offsets(&both), [2, 1]);
        assert_eq!(both[0].channel, "topic:a");
        assert_eq!(both[1].channel, "topic:b");
        assert_eq!(both[0].r#type, "y");
        assert!(both[0].time.is_some(), "the backend stamps the time");
        assert_eq!(first[0].epoch, both[0].epoch, "one epoch per channel");
        assert!(!first[0].epoch.is_empty());
        let state = streams.channel(&a).await.unwrap();
        assert_eq!(
            state,
            ChannelState {
                epoch: first[0].epoch.clone(),
                offset: 2,
                earliest: 1,
                size: 2
            }
        );
    }

    pub(crate) async fn a_channel_nobody_published_to_has_no_epoch_yet(
        streams: StreamBackend,
        _: Arc<ManualClock>,
        _: Arc<Recorder>,
    ) {
        let c = topic("fresh");
        let before = streams.channel(&c).await.unwrap();
        assert_eq!(before, ChannelState::unpublished());
        assert_eq!(
            streams.channel(&c).await.unwrap(),
            before,
            "asking changes nothing"
        );
        let published = streams
            .publish(std::slice::from_ref(&c), &event("x"))
            .await
            .unwrap();
        assert!(!published[0].epoch.is_empty());
        let after = streams.channel(&c).await.unwrap();
        assert_eq!(after.epoch, published[0].epoch);
        let start = StreamPosition {
            offset: before.offset,
            epoch: before.epoch,
        };
        assert!(after.continues_from(&start), "the first epoch continues");
        assert!(!after.continues_from(&StreamPosition {
            offset: 0,
            epoch: "another".into()
        }));
    }

    pub(crate) async fn reads_return_what_follows_an_offset(
        streams: StreamBackend,
        _: Arc<ManualClock>,
        _: Arc<Recorder>,
    ) {
        let c = topic("r");
        for i in 0..4 {
            streams
                .publish(std::slice::from_ref(&c), &event(&format!("e{i}")))
                .await
                .unwrap();
        }
        assert_eq!(
            offsets(&streams.read(&c, 0, 100).await.unwrap()),
            [1, 2, 3, 4]
        );
        assert_eq!(offsets(&streams.read(&c, 2, 100).await.unwrap()), [3, 4]);
        assert_eq!(offsets(&streams.read(&c, 1, 2).await.unwrap()), [2, 3]);
        assert!(streams.read(&c, 4, 100).await.unwrap().is_empty());
        assert!(streams.read(&c, 9, 100).await.unwrap().is_empty());
        let read = streams.read(&c, 3, 1).await.unwrap();
        assert_eq!(read[0].r#type, "e3");
        assert!(
            streams
                .read(&topic("none"), 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub(crate) async fn history_keeps_the_latest_events_up_to_the_count(
        streams: StreamBackend,
        _: Arc<ManualClock>,
        _: Arc<Recorder>,
    ) {
        let c = topic("count");
        for _ in 0..8 {
            streams
                .publish(std::slice::from_ref(&c), &event("x"))
                .await
                .unwrap();
        }
        assert_eq!(
            offsets(&streams.read(&c, 0, 100).await.unwrap()),
            [4, 5, 6, 7, 8]
        );
        let state = streams.channel(&c).await.unwrap();
        assert_eq!((state.offset, state.earliest, state.size), (8, 4, 5));
    }

    pub(crate) async fn events_older_than_the_age_limit_are_gone(
        streams: StreamBackend,
        clock: Arc<ManualClock>,
        _: Arc<Recorder>,
    ) {
        let c = topic("age");
        streams
            .publish(std::slice::from_ref(&c), &event("old"))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(40));
        streams
            .publish(std::slice::from_ref(&c), &event("young"))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(30));
        assert_eq!(offsets(&streams.read(&c, 0, 100).await.unwrap()), [2]);
        let state = streams.channel(&c).await.unwrap();
        assert_eq!((state.offset, state.earliest, state.size), (2, 2, 1));
        clock.advance(Duration::from_secs(60));
        let state = streams.channel(&c).await.unwrap();
        assert_eq!(
            (state.offset, state.earliest, state.size),
            (2, 0, 0),
            "the offset stays; history is empty"
        );
        let next = streams
            .publish(std::slice::from_ref(&c), &event("new"))
            .await
            .unwrap();
        assert_eq!(next[0].offset, 3);
    }

    pub(crate) async fn watched_channels_deliver_live_events_in_order(
        streams: StreamBackend,
        _: Arc<ManualClock>,
        sink: Arc<Recorder>,
    ) {
        let (a, b) = (topic("live-a"), topic("live-b"));
        streams.watch(&a).await.unwrap();
        streams.watch(&b).await.unwrap();
        // Concurrent publishers: each channel's deliveries still come in
        // offset order, each offset once.
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let streams = streams.clone();
            let (a, b) = (a.clone(), b.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    streams
                        .publish(&[a.clone(), b.clone()], &event("x"))
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        sink.wait_for(80).await;
        let mut per_channel: HashMap<String, Vec<u64>> = HashMap::new();
        for (channel, offset) in sink.seen() {
            per_channel.entry(channel).or_default().push(offset);
        }
        let expected: Vec<u64> = (1..=40).collect();
        assert_eq!(per_channel["topic:live-a"], expected);
        assert_eq!(per_channel["topic:live-b"], expected);
    }

    pub(crate) async fn publishing_to_many_users_stores_each_channel(
        streams: StreamBackend,
        _: Arc<ManualClock>,
        _: Arc<Recorder>,
    ) {
        let users: Vec<ChannelName> = (0..50)
            .map(|i| ChannelName::user(&format!("u{i}")))
            .collect();
        let published = streams.publish(&users, &event("x")).await.unwrap();
        assert_eq!(published.len(), 50);
        for (channel, event) in users.iter().zip(&published) {
            assert_eq!(event.channel, channel.to_string());
            assert_eq!(event.offset, 1);
            assert_eq!(streams.channel(channel).await.unwrap().offset, 1);
        }
    }

    pub(crate) async fn stored_events_keep_every_field(
        streams: StreamBackend,
        _: Arc<ManualClock>,
        _: Arc<Recorder>,
    ) {
        use slop_api::notification::{JobProgress, JobState};
        let c = ChannelName::user("u1");
        let mut payload = pbjson_types::Struct::default();
        payload.fields.insert(
            "text".into(),
            pbjson_types::Value::from("héllo \"quoted\" \n".to_string()),
        );
        let sent = Event {
            namespace: Namespace::Media as i32,
            r#type: "job.progress".into(),
            payload: Some(payload),
            job: Some(JobProgress {
                job_id: "j1".into(),
                state: JobState::Running as i32,
                percent: 42.5,
                message: "encoding".into(),
            }),
            ..Event::default()
        };
        let published = streams
            .publish(std::slice::from_ref(&c), &sent)
            .await
            .unwrap();
        let read = streams.read(&c, 0, 10).await.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(*read[0], *published[0]);
        let expected = Event {
            channel: "user:u1".into(),
            offset: 1,
            epoch: published[0].epoch.clone(),
            time: published[0].time,
            ..sent
        };
        assert_eq!(*read[0], expected);
    }

    pub(crate) async fn an_idempotency_key_publishes_once_per_channel_within_the_window(
        streams: StreamBackend,
        clock: Arc<ManualClock>,
        sink: Arc<Recorder>,
    ) {
        let (a, b) = (topic("once-a"), topic("once-b"));
        streams.watch(&a).await.unwrap();
        let once = |channels: Vec<ChannelName>, key: Option<&'static str>| {
            let streams = streams.clone();
            async move {
                streams
                    .publish_once(&channels, &event("x"), key)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|s| (s.event.channel.clone(), s.event.offset, s.duplicate))
                    .collect::<Vec<_>>()
            }
        };
        let (ta, tb) = ("topic:once-a".to_owned(), "topic:once-b".to_owned());
        assert_eq!(
            once(vec![a.clone()], Some("k1")).await,
            [(ta.clone(), 1, false)]
        );
        assert_eq!(
            once(vec![a.clone()], Some("k1")).await,
            [(ta.clone(), 1, true)],
            "a retry stores nothing and answers the first position"
        );
        assert_eq!(
            once(vec![a.clone(), b.clone()], Some("k1")).await,
            [(ta.clone(), 1, true), (tb.clone(), 1, false)],
            "per channel"
        );
        assert_eq!(
            once(vec![a.clone()], Some("k2")).await,
            [(ta.clone(), 2, false)]
        );
        assert_eq!(once(vec![a.clone()], None).await, [(ta.clone(), 3, false)]);
        assert_eq!(once(vec![a.clone()], None).await, [(ta.clone(), 4, false)]);
        clock.advance(HISTORY.dedup_window + Duration::from_secs(1));
        assert_eq!(
            once(vec![a.clone()], Some("k1")).await,
            [(ta.clone(), 5, false)],
            "the window has passed"
        );
        assert_eq!(
            offsets(&streams.read(&a, 0, 100).await.unwrap()),
            [1, 2, 3, 4, 5]
        );
        sink.wait_for(5).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let delivered: Vec<u64> = sink
            .seen()
            .into_iter()
            .filter(|(c, _)| *c == ta)
            .map(|(_, o)| o)
            .collect();
        assert_eq!(delivered, [1, 2, 3, 4, 5], "a duplicate is not delivered");
    }
}

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
