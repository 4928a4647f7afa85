//! The conformance suite every backend passes. Each test gets a fresh
//! backend (for Redis, a key prefix of its own), a manual clock and a sink
//! that records what it is given.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use slop_api::notification::{Event, Namespace};
use tokio::sync::Notify;

use super::*;
use crate::infra::{
    clock::ManualClock,
    redis_context::testing::{ClusterGuard, PrefixGuard, SentinelGuard, TlsRedisGuard},
};

crate::infra::conformance::backend_conformance! {
    backends: [
        memory_backend => on_memory,
        redis_backend => on_redis,
        redis_tls_backend => on_redis_tls,
        redis_cluster_backend => on_redis_cluster,
        redis_sentinel_backend => on_redis_sentinel,
    ],
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

/// On a Redis of its own that speaks mutual TLS only (both connections,
/// commands and pub/sub).
async fn on_redis_tls<F, Fut>(case: F)
where
    F: FnOnce(StreamBackend, Arc<ManualClock>, Arc<Recorder>) -> Fut,
    Fut: Future<Output = ()>,
{
    let clock = ManualClock::starting_now();
    let sink = Arc::new(Recorder::default());
    let guard = TlsRedisGuard::start();
    let streams = StreamBackend::redis(&guard.context(clock.clone()), HISTORY, sink.clone());
    case(streams, clock, sink).await;
}

/// On a Redis Cluster of its own (3 primaries, 3 replicas): every script
/// call touches one slot, and a publish to channels of several slots makes
/// one call per slot.
async fn on_redis_cluster<F, Fut>(case: F)
where
    F: FnOnce(StreamBackend, Arc<ManualClock>, Arc<Recorder>) -> Fut,
    Fut: Future<Output = ()>,
{
    let clock = ManualClock::starting_now();
    let sink = Arc::new(Recorder::default());
    let guard = ClusterGuard::start();
    let streams = StreamBackend::redis(&guard.context(clock.clone()), HISTORY, sink.clone());
    case(streams, clock, sink).await;
}

/// On a primary, its replica and three Sentinels of its own.
async fn on_redis_sentinel<F, Fut>(case: F)
where
    F: FnOnce(StreamBackend, Arc<ManualClock>, Arc<Recorder>) -> Fut,
    Fut: Future<Output = ()>,
{
    let clock = ManualClock::starting_now();
    let sink = Arc::new(Recorder::default());
    let guard = SentinelGuard::start();
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
