//! The Redis streams beyond the conformance suite: several instances, lost
//! messages and connections, what is left in Redis.

use std::time::Duration;

use super::*;
use crate::{
    infra::{
        clock::{Clock as _, ManualClock},
        redis_context::testing::{
            ClusterGuard, PrefixGuard, clients_named, kill_clients_named, redis,
        },
    },
    notifications::{
        ChannelState, StreamBackend,
        conformance::{HISTORY, Recorder, event, topic},
    },
};

async fn streams(clock: Arc<ManualClock>, sink: Arc<Recorder>) -> (StreamBackend, PrefixGuard) {
    let guard = PrefixGuard::new();
    let streams = instance(&guard, clock, sink).await;
    (streams, guard)
}

/// Another instance (a Redis context of its own) on the guard's prefix.
async fn instance(
    guard: &PrefixGuard,
    clock: Arc<ManualClock>,
    sink: Arc<Recorder>,
) -> StreamBackend {
    StreamBackend::redis(&guard.context(clock), HISTORY, sink)
}

/// A hub over Redis streams on a prefix of its own.
async fn hub(clock: Arc<ManualClock>) -> (crate::notifications::hub::Hub, PrefixGuard) {
    use crate::notifications::hub::{Hub, QueueLimits, Registry};
    let guard = PrefixGuard::new();
    let registry = Arc::new(Registry::default());
    let backend = StreamBackend::redis(&guard.context(clock.clone()), HISTORY, registry.clone());
    let limits = QueueLimits {
        max_events: 10,
        max_bytes: 1 << 20,
    };
    (Hub::new(backend, registry, HISTORY, limits, clock), guard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_delivers_what_it_watches() {
    let clock = ManualClock::starting_now();
    let (a, guard) = streams(clock.clone(), Arc::new(Recorder::default())).await;
    let b_sink = Arc::new(Recorder::default());
    let b = instance(&guard, clock, b_sink.clone()).await;
    let (watched, other) = (topic("watched"), topic("other"));
    b.watch(&watched).await.unwrap();
    for _ in 0..3 {
        a.publish(&[other.clone(), watched.clone()], &event("x"))
            .await
            .unwrap();
    }
    b_sink.wait_for(3).await;
    b.unwatch(&watched);
    // Unwatching is asynchronous: wait until Redis has no subscriber.
    let key = format!("{}stream:{{topic:watched}}", guard.prefix);
    for _ in 0..100 {
        let counts: Vec<(String, usize)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&key)
            .query(&mut redis())
            .unwrap();
        if counts[0].1 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.publish(std::slice::from_ref(&watched), &event("late"))
        .await
        .unwrap();
    b.watch(&other).await.unwrap();
    a.publish(std::slice::from_ref(&other), &event("y"))
        .await
        .unwrap();
    b_sink.wait_for(4).await;
    assert_eq!(
        b_sink.seen(),
        [
            ("topic:watched".into(), 1),
            ("topic:watched".into(), 2),
            ("topic:watched".into(), 3),
            ("topic:other".into(), 4),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_twice_needs_two_unwatches() {
    let clock = ManualClock::starting_now();
    let sink = Arc::new(Recorder::default());
    let (streams, _guard) = streams(clock, sink.clone()).await;
    let c = topic("twice");
    streams.watch(&c).await.unwrap();
    streams.watch(&c).await.unwrap();
    streams.unwatch(&c);
    streams
        .publish(std::slice::from_ref(&c), &event("x"))
        .await
        .unwrap();
    assert_eq!(sink.wait_for(1).await.len(), 1, "still watched once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_history_starts_a_new_epoch_from_offset_one() {
    let clock = ManualClock::starting_now();
    let (streams, guard) = streams(clock, Arc::new(Recorder::default())).await;
    let c = topic("lost");
    let first = streams
        .publish(std::slice::from_ref(&c), &event("x"))
        .await
        .unwrap();
    streams
        .publish(std::slice::from_ref(&c), &event("x"))
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(format!("{}stream:{{topic:lost}}", guard.prefix))
        .arg(format!("{}stream:{{topic:lost}}:meta", guard.prefix))
        .query(&mut redis())
        .unwrap();
    let state = streams.channel(&c).await.unwrap();
    assert_eq!(state, ChannelState::unpublished());
    let next = streams
        .publish(std::slice::from_ref(&c), &event("x"))
        .await
        .unwrap();
    assert_eq!(next[0].offset, 1);
    assert_ne!(next[0].epoch, first[0].epoch, "a new epoch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_epoch_reaches_a_watcher_from_its_start() {
    let clock = ManualClock::starting_now();
    let sink = Arc::new(Recorder::default());
    let (streams, guard) = streams(clock, sink.clone()).await;
    let c = topic("reborn");
    streams.watch(&c).await.unwrap();
    streams
        .publish(std::slice::from_ref(&c), &event("x"))
        .await
        .unwrap();
    sink.wait_for(1).await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{}stream:{{topic:reborn}}:meta", guard.prefix))
        .query(&mut redis())
        .unwrap();
    let reborn = streams
        .publish(std::slice::from_ref(&c), &event("y"))
        .await
        .unwrap();
    let seen = sink.wait_for(2).await;
    assert_eq!((seen[1].offset, &seen[1].epoch), (1, &reborn[0].epoch));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_messages_is_filled_from_history() {
    let clock = ManualClock::starting_now();
    let sink = Arc::new(Recorder::default());
    let (streams, guard) = streams(clock.clone(), sink.clone()).await;
    let c = topic("gap");
    streams.watch(&c).await.unwrap();
    streams
        .publish(std::slice::from_ref(&c), &event("x"))
        .await
        .unwrap();
    sink.wait_for(1).await;
    // Two events whose messages were lost: what the publish script
    // stores, without the PUBLISH.
    let key = format!("{}stream:{{topic:gap}}", guard.prefix);
    let epoch = streams.channel(&c).await.unwrap().epoch;
    let now = to_millis(clock.now());
    let mut connection = redis();
    for offset in [2_u64, 3] {
        let lost = Event {
            channel: c.to_string(),
            offset,
            epoch: epoch.clone(),
            time: Some(to_timestamp(from_millis(now))),
            ..event("lost")
        };
        let _: String = redis::cmd("XADD")
            .arg(&key)
            .arg(format!("{offset}-0"))
            .arg("t")
            .arg(now)
            .arg("e")
            .arg(lost.encode_to_vec())
            .query(&mut connection)
            .unwrap();
        let _: i64 = redis::cmd("HINCRBY")
            .arg(format!("{key}:meta"))
            .arg("offset")
            .arg(1)
            .query(&mut connection)
            .unwrap();
    }
    streams
        .publish(std::slice::from_ref(&c), &event("after"))
        .await
        .unwrap();
    let seen = sink.wait_for(4).await;
    let offsets: Vec<u64> = seen.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, [1, 2, 3, 4]);
    assert_eq!(seen[1].r#type, "lost");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sink.seen().len(), 4, "nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_while_the_connection_is_down_arrive_once_in_order() {
    let clock = ManualClock::starting_now();
    let sink = Arc::new(Recorder::default());
    let (streams, guard) = streams(clock.clone(), sink.clone()).await;
    let publisher = instance(&guard, clock, Arc::new(Recorder::default())).await;
    let (a, b) = (topic("kill-a"), topic("kill-b"));
    streams.watch(&a).await.unwrap();
    streams.watch(&b).await.unwrap();
    publisher
        .publish(&[a.clone(), b.clone()], &event("before"))
        .await
        .unwrap();
    sink.wait_for(2).await;
    let name = format!("{}pubsub", guard.prefix);
    let killed = kill_clients_named(&name);
    assert_eq!(killed.len(), 2, "one pub/sub connection per instance");
    for _ in 0..5 {
        publisher
            .publish(&[a.clone(), b.clone()], &event("meanwhile"))
            .await
            .unwrap();
    }
    sink.wait_for(12).await;
    let mut reconnected = Vec::new();
    for _ in 0..500 {
        reconnected = clients_named(&name);
        reconnected.retain(|id| !killed.contains(id));
        if reconnected.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(reconnected.len(), 2, "both reconnected");
    publisher
        .publish(&[a.clone(), b.clone()], &event("after"))
        .await
        .unwrap();
    sink.wait_for(14).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    for channel in ["topic:kill-a", "topic:kill-b"] {
        let offsets: Vec<u64> = sink
            .seen()
            .into_iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, offset)| offset)
            .collect();
        assert_eq!(offsets, [1, 2, 3, 4, 5, 6, 7], "{channel}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_stay_under_the_prefix_and_expire() {
    let clock = ManualClock::starting_now();
    let (streams, guard) = streams(clock, Arc::new(Recorder::default())).await;
    streams
        .publish(&[topic("a"), ChannelName::user("u1")], &event("x"))
        .await
        .unwrap();
    streams.channel(&topic("empty")).await.unwrap();
    let mut connection = redis();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", guard.prefix))
        .query(&mut connection)
        .unwrap();
    keys.sort();
    let p = &guard.prefix;
    assert_eq!(
        keys,
        [
            format!("{p}stream:{{topic:a}}"),
            format!("{p}stream:{{topic:a}}:meta"),
            format!("{p}stream:{{user:u1}}"),
            format!("{p}stream:{{user:u1}}:meta"),
        ]
    );
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut connection).unwrap();
        let limit = duration_millis(HISTORY.max_age);
        assert!(
            ttl > 0 && ttl <= limit,
            "{key} expires within the age limit: {ttl}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_do_not_decode_are_skipped_not_fatal() {
    let clock = ManualClock::starting_now();
    let (streams, guard) = streams(clock.clone(), Arc::new(Recorder::default())).await;
    let c = topic("bad");
    streams
        .publish(std::slice::from_ref(&c), &event("x"))
        .await
        .unwrap();
    let key = format!("{}stream:{{topic:bad}}", guard.prefix);
    let now = to_millis(clock.now());
    for (id, time, bytes) in [
        ("2-0", now.to_string(), &[0xff_u8, 0xff, 0xff][..]),
        ("3-0", "soon".to_owned(), &b""[..]),
    ] {
        let _: String = redis::cmd("XADD")
            .arg(&key)
            .arg(id)
            .arg("t")
            .arg(time)
            .arg("e")
            .arg(bytes)
            .query(&mut redis())
            .unwrap();
    }
    let _: i64 = redis::cmd("HSET")
        .arg(format!("{key}:meta"))
        .arg("offset")
        .arg(3)
        .query(&mut redis())
        .unwrap();
    let next = streams
        .publish(std::slice::from_ref(&c), &event("y"))
        .await
        .unwrap();
    assert_eq!(next[0].offset, 4);
    let read = streams
        .read(&c, 0, 10)
        .await
        .expect("the channel stays readable");
    assert_eq!(
        read.iter().map(|e| e.offset).collect::<Vec<_>>(),
        [1, 4],
        "the entries that do not decode are left out; the gap shows"
    );
}

/// What a hole in history (an entry that does not decode, its live
/// message lost) does to the subscribers of a hub over Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_are_told_of_a_hole_live_and_when_resuming() {
    use crate::notifications::hub::Item;
    let clock = ManualClock::starting_now();
    let (hub, guard) = hub(clock.clone()).await;
    let backend = hub.backend().clone();
    let c = topic("holey");
    let first = backend
        .publish(std::slice::from_ref(&c), &event("x"))
        .await
        .unwrap()
        .remove(0);
    let mut live = hub.open(None);
    live.subscribe(c.clone(), &[], None).await.unwrap();
    async fn next(feed: &crate::notifications::hub::Feed) -> Item {
        tokio::time::timeout(Duration::from_secs(5), feed.next())
            .await
            .expect("an item within 5 s")
            .expect("the feed goes on")
    }
    assert!(matches!(next(&live).await, Item::Subscribed(_)));

    let key = format!("{}stream:{{topic:holey}}", guard.prefix);
    let _: String = redis::cmd("XADD")
        .arg(&key)
        .arg("2-0")
        .arg("t")
        .arg(to_millis(clock.now()))
        .arg("e")
        .arg(&[0xff_u8, 0xff][..])
        .query(&mut redis())
        .unwrap();
    let _: i64 = redis::cmd("HINCRBY")
        .arg(format!("{key}:meta"))
        .arg("offset")
        .arg(1)
        .query(&mut redis())
        .unwrap();
    backend
        .publish(std::slice::from_ref(&c), &event("after"))
        .await
        .unwrap();
    match next(&live).await {
        Item::Subscribed(lost) => {
            assert!(lost.was_recovering && !lost.recovered, "{lost:?}");
            assert_eq!(lost.position.unwrap().offset, 2);
        }
        other => panic!("expected the hole announced, got {other:?}"),
    }
    match next(&live).await {
        Item::Event(event) => assert_eq!(event.offset, 3),
        other => panic!("expected offset 3, got {other:?}"),
    }

    let mut resumed = hub.open(None);
    let from = slop_api::notification::StreamPosition {
        offset: first.offset,
        epoch: first.epoch.clone(),
    };
    resumed
        .subscribe(c.clone(), &[], Some(&from))
        .await
        .unwrap();
    match next(&resumed).await {
        Item::Subscribed(subscribed) => {
            assert!(!subscribed.recovered, "a hole is not a recovery");
            assert_eq!(subscribed.position.unwrap().offset, 3);
        }
        other => panic!("expected subscribed, got {other:?}"),
    }
    backend
        .publish(std::slice::from_ref(&c), &event("live"))
        .await
        .unwrap();
    match next(&resumed).await {
        Item::Event(event) => assert_eq!(event.offset, 4, "no replay, then live"),
        other => panic!("expected offset 4, got {other:?}"),
    }
}

/// Subscribing to topics nobody published to must not fill the shared
/// Redis: one user subscribed to 30,000 in seconds, each leaving a key
/// for 24 h.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_to_unpublished_topics_leaves_no_key() {
    let (hub, guard) = hub(ManualClock::starting_now()).await;
    for i in 0..300 {
        let mut feed = hub.open(None);
        feed.subscribe(topic(&format!("nobody-{i}")), &[], None)
            .await
            .unwrap();
    }
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", guard.prefix))
        .query(&mut redis())
        .unwrap();
    assert!(keys.is_empty(), "300 subscriptions left {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aged_out_entries_are_trimmed_in_long_histories() {
    let clock = ManualClock::starting_now();
    let guard = PrefixGuard::new();
    let history = History {
        max_events: 1000,
        ..HISTORY
    };
    let streams = StreamBackend::redis(
        &guard.context(clock.clone()),
        history,
        Arc::new(Recorder::default()),
    );
    let c = topic("long");
    for i in 0..300 {
        streams
            .publish(std::slice::from_ref(&c), &event("x"))
            .await
            .unwrap();
        if i == 136 {
            clock.advance(Duration::from_secs(30));
        }
    }
    clock.advance(Duration::from_secs(45));
    let state = streams.channel(&c).await.unwrap();
    assert_eq!((state.offset, state.earliest, state.size), (300, 138, 163));
    let len: usize = redis::cmd("XLEN")
        .arg(format!("{}stream:{{topic:long}}", guard.prefix))
        .query(&mut redis())
        .unwrap();
    assert_eq!(len, 163, "the old entries are gone");
    let read = streams.read(&c, 0, 2).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.offset).collect::<Vec<_>>(),
        [138, 139]
    );
}

#[tokio::test]
async fn ping_answers() {
    let clock = ManualClock::starting_now();
    let (streams, _guard) = streams(clock, Arc::new(Recorder::default())).await;
    streams.ping().await.unwrap();
    assert_eq!(streams.backend(), "redis");
}

/// A watch made on a connection that was already subscribed has nothing to
/// catch up: its position was read after its subscription. When the
/// listener heard that connection's `Subscribed` late (after the watch and
/// after more events than history keeps), it caught the channel up anyway
/// from a history that had dropped the first events, and then skipped their
/// messages, still queued, as already given (a flaky TLS conformance case,
/// where subscribing is slower).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_subscribed_notice_does_not_skip_queued_messages() {
    let guard = PrefixGuard::new();
    let mut held = HeldNotices::start(&guard);
    let channel = topic("late");
    held.streams.watch(&channel).await.unwrap();
    let published = held.publish_more_than_history(&channel).await;
    held.open();
    held.expect_offsets(published).await;
}

/// Streams whose pub/sub notices are held back until [`Self::open`], and a
/// way to put notices of the test's own ahead of them.
struct HeldNotices {
    streams: RedisStreams,
    sink: Arc<Recorder>,
    /// Into the listener's inbox, at once.
    inject: mpsc::UnboundedSender<Notice>,
    open: Option<oneshot::Sender<()>>,
}

impl HeldNotices {
    fn start(guard: &PrefixGuard) -> Self {
        let sink = Arc::new(Recorder::default());
        let (held, mut holding) = mpsc::unbounded_channel();
        let (inject, inbox) = mpsc::unbounded_channel();
        let (open, opened) = oneshot::channel::<()>();
        let release = inject.clone();
        tokio::spawn(async move {
            let _ = opened.await;
            while let Some(notice) = holding.recv().await {
                if release.send(notice).is_err() {
                    break;
                }
            }
        });
        let streams = RedisStreams::start(
            &guard.context(ManualClock::starting_now()),
            HISTORY,
            sink.clone(),
            Box::new(move |notice| held.send(notice).is_ok()),
            inbox,
        );
        Self {
            streams,
            sink,
            inject,
            open: Some(open),
        }
    }

    /// Publishes twice what history keeps to `channel`; how many.
    async fn publish_more_than_history(&self, channel: &ChannelName) -> usize {
        let published = HISTORY.max_events * 2;
        for _ in 0..published {
            self.streams
                .publish(std::slice::from_ref(channel), &event("x"), None)
                .await
                .unwrap();
        }
        published
    }

    /// Lets the held notices through.
    fn open(&mut self) {
        self.open.take().unwrap().send(()).unwrap();
    }

    /// The sink gets offsets 1 to `published`, in order, none skipped.
    async fn expect_offsets(&self, published: usize) {
        let offsets: Vec<u64> = self
            .sink
            .wait_for(published)
            .await
            .iter()
            .map(|e| e.offset)
            .collect();
        let expected: Vec<u64> = (1..=published as u64).collect();
        assert_eq!(offsets, expected);
    }
}

/// The keys one publish, `channel` and `read` name for a channel, and those
/// Redis then holds, all hash to the channel's slot; channels spread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channels_keys_share_its_slot() {
    use redis::cluster_routing::Slot;
    let clock = ManualClock::starting_now();
    let guard = PrefixGuard::new();
    let streams = RedisStreams::new(
        &guard.context(clock),
        HISTORY,
        Arc::new(Recorder::default()),
    );
    let shared = &streams.shared;
    for channel in [topic("news"), ChannelName::user("u1"), topic("a.b_c-9")] {
        let slot = Slot::for_key(shared.key(&channel));
        for key in [
            shared.meta_key(&channel),
            shared.dedup_key(&channel, "order-17"),
            shared.dedup_key(&channel, "{other}:x"),
        ] {
            assert_eq!(Slot::for_key(&key), slot, "{key}");
        }
        streams
            .publish(
                std::slice::from_ref(&channel),
                &event("x"),
                Some("order-17"),
            )
            .await
            .unwrap();
        let stored: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", guard.prefix))
            .query(&mut redis())
            .unwrap();
        let theirs: Vec<&String> = stored
            .iter()
            .filter(|key| key.contains(&format!("{{{channel}}}")))
            .collect();
        assert_eq!(theirs.len(), 3, "stream, meta, dedup: {theirs:?}");
        for key in theirs {
            assert_eq!(Slot::for_key(key), slot, "{key}");
        }
    }
    let slots: std::collections::HashSet<Slot> = (0..1000)
        .map(|i| Slot::for_key(shared.key(&topic(&format!("t{i}")))))
        .collect();
    assert!(slots.len() > 940, "1000 channels in {} slots", slots.len());
}

/// On Redis Cluster a publish makes one script call per slot of its
/// channels, and answers each channel in the caller's order; on standalone
/// Redis one call for all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_a_cluster_makes_one_call_per_slot_in_the_callers_order() {
    use std::{collections::HashSet, sync::atomic::Ordering};

    use redis::cluster_routing::Slot;
    let clock = ManualClock::starting_now();
    let cluster_guard = ClusterGuard::start();
    let guard = PrefixGuard::new();
    let cluster = RedisStreams::new(
        &cluster_guard.context(clock.clone()),
        HISTORY,
        Arc::new(Recorder::default()),
    );
    let standalone = RedisStreams::new(
        &guard.context(clock),
        HISTORY,
        Arc::new(Recorder::default()),
    );
    // 40 channels, two of them sharing a slot with an earlier one.
    let mut channels: Vec<ChannelName> = (0..38).map(|i| topic(&format!("c{i}"))).collect();
    let slot_of = |c: &ChannelName| Slot::for_key(cluster.shared.key(c));
    let same_slot = |of: &ChannelName| {
        (0..)
            .map(|i| topic(&format!("twin{i}")))
            .find(|twin| slot_of(twin) == slot_of(of))
            .unwrap()
    };
    channels.insert(20, same_slot(&channels[3]));
    channels.push(same_slot(&channels[0]));
    let slots: HashSet<Slot> = channels.iter().map(slot_of).collect();
    assert_eq!(slots.len(), 38);
    let groups = cluster.shared.slot_groups(&channels);
    assert_eq!(groups.len(), 38);
    for group in &groups {
        let of_group: HashSet<Slot> = group.iter().map(|&i| slot_of(&channels[i])).collect();
        assert_eq!(of_group.len(), 1, "{group:?}");
    }
    assert!(groups.contains(&vec![3, 20]) && groups.contains(&vec![0, 39]));
    assert_eq!(
        standalone.shared.slot_groups(&channels),
        [(0..40).collect::<Vec<_>>()]
    );

    let calls = |streams: &RedisStreams| streams.shared.publish_calls.load(Ordering::Relaxed);
    let asked: Vec<String> = channels.iter().map(ToString::to_string).collect();
    for round in 1..=2 {
        let before = calls(&cluster);
        let placed = cluster
            .publish(&channels, &event("x"), Some("once"))
            .await
            .unwrap();
        assert_eq!(calls(&cluster) - before, 38, "one call per slot");
        let names: Vec<String> = placed.iter().map(|s| s.event.channel.clone()).collect();
        assert_eq!(names, asked, "in the caller's order");
        assert!(placed.iter().all(|s| s.event.offset == 1));
        assert!(
            placed.iter().all(|s| s.duplicate == (round == 2)),
            "the idempotency key holds in every slot"
        );
    }
    let read = cluster.read(&channels[20], 0, 10).await.unwrap();
    assert_eq!(read.iter().map(|e| e.offset).collect::<Vec<_>>(), [1]);

    let before = calls(&standalone);
    let placed = standalone
        .publish(&channels, &event("y"), None)
        .await
        .unwrap();
    assert_eq!(
        calls(&standalone) - before,
        1,
        "one call on standalone Redis"
    );
    let names: Vec<String> = placed.iter().map(|s| s.event.channel.clone()).collect();
    assert_eq!(names, asked);
}

/// Marks `channel`'s meta as written under another primary, as after a
/// failover (the promoted replica has a replication history of its own).
fn as_if_written_under_another_primary(guard: &PrefixGuard, channel: &str) {
    let () = redis::cmd("HSET")
        .arg(format!("{}stream:{{{channel}}}:meta", guard.prefix))
        .arg("primary")
        .arg("the-replication-id-of-a-primary-now-gone")
        .query(&mut redis())
        .unwrap();
}

/// A channel last written under another primary may have lost events the
/// old primary acknowledged (replication is asynchronous), and the next
/// publish would reuse their offsets: a subscriber who saw one would skip
/// the new event in silence. So it starts a new epoch, at its next publish
/// or its next state read, and resuming subscribers are told
/// `recovered: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_written_under_another_primary_starts_a_new_epoch() {
    let clock = ManualClock::starting_now();
    let (streams, guard) = streams(clock, Arc::new(Recorder::default())).await;
    let (read_first, published_first) = (topic("read-first"), topic("published-first"));
    let mut epochs = Vec::new();
    for channel in [&read_first, &published_first] {
        for _ in 0..3 {
            let stored = streams
                .publish(std::slice::from_ref(channel), &event("x"))
                .await
                .unwrap();
            epochs.push(stored[0].epoch.clone());
        }
        as_if_written_under_another_primary(&guard, &channel.to_string());
    }

    // Its state says nothing was published in an epoch a resume could
    // continue; the next publish begins a new one.
    assert_eq!(
        streams.channel(&read_first).await.unwrap(),
        ChannelState::unpublished()
    );
    for channel in [&read_first, &published_first] {
        let stored = streams
            .publish(std::slice::from_ref(channel), &event("y"))
            .await
            .unwrap();
        assert_eq!(stored[0].offset, 1, "{channel}");
        assert!(!epochs.contains(&stored[0].epoch), "{channel}: a new epoch");
        let state = streams.channel(channel).await.unwrap();
        assert_eq!((state.offset, state.size), (1, 1), "{channel}");
    }

    // Under the same primary, nothing changes.
    let steady = streams
        .publish(std::slice::from_ref(&read_first), &event("z"))
        .await
        .unwrap();
    assert_eq!(steady[0].offset, 2);
}

/// The same on a real cluster: the primary of a channel's slot is killed
/// (SIGKILL), its replica takes over with a replication history of its
/// own, and the channel's next publish, once the cluster serves the slot
/// again, begins a new epoch at offset 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_a_channel_begins_a_new_epoch() {
    let mut guard = ClusterGuard::start();
    let streams = StreamBackend::redis(
        &guard.context(ManualClock::starting_now()),
        HISTORY,
        Arc::new(Recorder::default()),
    );
    let channel = topic("failover");
    let mut before = String::new();
    for _ in 0..3 {
        let stored = streams
            .publish(std::slice::from_ref(&channel), &event("x"))
            .await
            .unwrap();
        before.clone_from(&stored[0].epoch);
    }
    let primary = guard
        .cluster
        .primary_for("slop-cluster-test:stream:{topic:failover}");
    let killed = tokio::time::Instant::now();
    guard.cluster.kill(primary);
    // Publishing fails (each try within the timeout, none hangs) until a
    // replica is promoted and the client has learned it.
    let deadline = killed + Duration::from_secs(20);
    let mut failed = 0;
    let after = loop {
        match streams
            .publish(std::slice::from_ref(&channel), &event("y"))
            .await
        {
            Ok(stored) => {
                println!(
                    "publishing worked again {:?} after the kill ({failed} failed tries)",
                    killed.elapsed()
                );
                break stored;
            }
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no publish within 20 s of the failover: {error}"
                );
                failed += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(after[0].offset, 1);
    assert_ne!(after[0].epoch, before, "a new epoch");
}

/// A notice that names some channels (a shard of a cluster subscribed
/// again) catches up those only: another channel, whose messages are still
/// queued behind the notice, is not caught up from a history that dropped
/// its first events, so none of them is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_naming_other_channels_leaves_a_channels_queued_messages_alone() {
    let guard = PrefixGuard::new();
    let mut held = HeldNotices::start(&guard);
    let (moved, queued) = (topic("moved"), topic("queued"));
    held.streams.watch(&moved).await.unwrap();
    held.streams.watch(&queued).await.unwrap();
    let published = held.publish_more_than_history(&queued).await;
    // Ahead of the held messages: `moved` subscribed again elsewhere.
    let moved_key = held.streams.shared.key(&moved);
    held.inject
        .send(Notice::resubscribed(vec![moved_key]))
        .unwrap();
    held.open();
    held.expect_offsets(published).await;
}

/// On Redis Cluster a watched channel is subscribed with `SSUBSCRIBE` on
/// its slot's primary only, not with classic `SUBSCRIBE` anywhere, and a
/// publish reaches it: events travel within their shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_watched_channel_is_subscribed_on_its_shard_only() {
    let guard = ClusterGuard::start();
    let sink = Arc::new(Recorder::default());
    let context = guard.context(ManualClock::starting_now());
    let streams = RedisStreams::new(&context, HISTORY, sink.clone());
    let channel = topic("sharded");
    let name = streams.shared.key(&channel);
    streams.watch(&channel).await.unwrap();
    let owner = guard.cluster.primary_for(&name);
    let count = |port: u16, kind: &str| -> i64 {
        let (_, count): (String, i64) = redis::cmd("PUBSUB")
            .arg(kind)
            .arg(&name)
            .query(&mut crate::infra::cluster_testing::node_connection(port))
            .unwrap();
        count
    };
    for port in guard.cluster.primaries() {
        let sharded = i64::from(port == owner);
        assert_eq!(count(port, "SHARDNUMSUB"), sharded, "sharded on {port}");
        assert_eq!(count(port, "NUMSUB"), 0, "classic on {port}");
    }
    let placed = streams
        .publish(std::slice::from_ref(&channel), &event("x"), None)
        .await
        .unwrap();
    let seen = sink.wait_for(1).await;
    assert_eq!(
        (seen[0].offset, &seen[0].epoch),
        (1, &placed[0].event.epoch)
    );
}

/// On Redis Cluster the instance's readiness follows the streams' sharded
/// pub/sub too: while a watched channel's primary is dead and not yet
/// replaced, `listening` is false, and true again once the channel is
/// subscribed on the promoted replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_readiness_waits_for_the_shard_of_a_watched_channel() {
    let mut guard = ClusterGuard::start();
    let context = guard.context(ManualClock::starting_now());
    let streams = RedisStreams::new(&context, HISTORY, Arc::new(Recorder::default()));
    // A channel away from the first node, where the classic pub/sub
    // connection (revocations) goes.
    let first = guard.cluster.primaries()[0];
    let channel = (0..)
        .map(|i| topic(&format!("ready-{i}")))
        .find(|channel| guard.cluster.primary_for(&streams.shared.key(channel)) != first)
        .unwrap();
    streams.watch(&channel).await.unwrap();
    let listening = context.listening();
    let became = |up: bool, within: u64| {
        let mut listening = listening.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(within),
                listening.wait_for(|now| *now == up),
            )
            .await
            .unwrap_or_else(|_| panic!("listening did not become {up} within {within} s"))
            .map(|_| ())
            .unwrap();
        }
    };
    became(true, 10).await;
    let victim = guard.cluster.primary_for(&streams.shared.key(&channel));
    guard.cluster.kill(victim);
    became(false, 5).await;
    became(true, 20).await;
}
