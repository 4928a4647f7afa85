use std::{sync::Arc, time::Duration};

use slop_api::notification::{Event, Namespace, StreamPosition};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::{
    identity::sessions::SessionStore,
    infra::clock::ManualClock,
    notifications::{
        conformance::{HISTORY, event, topic},
        memory::MemoryStreams,
    },
};

const LIMITS: QueueLimits = QueueLimits {
    max_events: 4,
    max_bytes: 64 * 1024,
};

fn hub_with(clock: Arc<ManualClock>, limits: QueueLimits) -> Hub {
    let registry = Arc::new(Registry::default());
    let backend =
        StreamBackend::Memory(MemoryStreams::new(clock.clone(), HISTORY, registry.clone()));
    Hub::new(backend, registry, HISTORY, limits, clock)
}

fn hub() -> Hub {
    hub_with(ManualClock::starting_now(), LIMITS)
}

async fn publish(hub: &Hub, channel: &ChannelName, kind: &str) -> Arc<Event> {
    hub.backend()
        .publish(std::slice::from_ref(channel), &event(kind))
        .await
        .unwrap()
        .remove(0)
}

/// The next item, failing the test after 2 s.
async fn next(feed: &Feed) -> Result<Item, End> {
    tokio::time::timeout(Duration::from_secs(2), feed.next())
        .await
        .expect("the feed yields within 2 s")
}

async fn next_event(feed: &Feed) -> Arc<Event> {
    match next(feed).await {
        Ok(Item::Event(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn next_subscribed(feed: &Feed) -> Subscribed {
    match next(feed).await {
        Ok(Item::Subscribed(subscribed)) => subscribed,
        other => panic!("expected subscribed, got {other:?}"),
    }
}

/// Nothing more is queued right now.
fn assert_empty(feed: &Feed) {
    assert!(feed.shared.pop().is_none(), "nothing more should be queued");
}

fn position(event: &Event) -> StreamPosition {
    StreamPosition {
        offset: event.offset,
        epoch: event.epoch.clone(),
    }
}

#[tokio::test]
async fn a_subscription_starts_where_the_channel_stands_then_goes_live() {
    let hub = hub();
    let news = topic("news");
    let before = publish(&hub, &news, "before").await;
    let mut feed = hub.open(None);
    feed.subscribe(news.clone(), &[], None).await.unwrap();
    let subscribed = next_subscribed(&feed).await;
    assert_eq!(subscribed.channel, "topic:news");
    assert_eq!(subscribed.position, Some(position(&before)));
    assert!(!subscribed.was_recovering);
    assert!(!subscribed.recovered);
    assert_empty(&feed);
    for kind in ["a", "b"] {
        publish(&hub, &news, kind).await;
    }
    assert_eq!(next_event(&feed).await.r#type, "a");
    assert_eq!(next_event(&feed).await.offset, 3);
}

#[tokio::test]
async fn resuming_replays_exactly_what_was_missed() {
    let hub = hub();
    let news = topic("news");
    let mut seen = Vec::new();
    for i in 1..=4 {
        seen.push(publish(&hub, &news, &format!("e{i}")).await);
    }
    let mut feed = hub.open(None);
    feed.subscribe(news.clone(), &[], Some(&position(&seen[1])))
        .await
        .unwrap();
    let subscribed = next_subscribed(&feed).await;
    assert!(subscribed.was_recovering && subscribed.recovered);
    assert_eq!(subscribed.position.unwrap().offset, 4);
    assert_eq!(next_event(&feed).await.offset, 3);
    assert_eq!(next_event(&feed).await.offset, 4);
    assert_empty(&feed);
    publish(&hub, &news, "live").await;
    assert_eq!(next_event(&feed).await.offset, 5);
}

#[tokio::test]
async fn resuming_at_the_latest_offset_recovers_nothing_missing() {
    let hub = hub();
    let news = topic("news");
    let last = publish(&hub, &news, "x").await;
    let mut feed = hub.open(None);
    feed.subscribe(news, &[], Some(&position(&last)))
        .await
        .unwrap();
    let subscribed = next_subscribed(&feed).await;
    assert!(subscribed.recovered);
    assert_empty(&feed);
}

#[tokio::test]
async fn a_stale_epoch_or_a_gap_beyond_history_is_not_recovered() {
    let hub = hub();
    let news = topic("news");
    let first = publish(&hub, &news, "x").await;
    for _ in 0..HISTORY.max_events + 1 {
        publish(&hub, &news, "x").await;
    }
    for resume in [
        position(&first),
        StreamPosition {
            offset: 3,
            epoch: "another-epoch".into(),
        },
        StreamPosition {
            offset: 99,
            epoch: first.epoch.clone(),
        },
    ] {
        let mut feed = hub.open(None);
        feed.subscribe(news.clone(), &[], Some(&resume))
            .await
            .unwrap();
        let subscribed = next_subscribed(&feed).await;
        assert!(subscribed.was_recovering, "{resume:?}");
        assert!(!subscribed.recovered, "{resume:?}");
        assert_empty(&feed);
        let live = publish(&hub, &news, "live").await;
        assert_eq!(
            next_event(&feed).await.offset,
            live.offset,
            "continues live"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_while_events_are_published_has_no_gap_and_no_duplicate() {
    let hub = hub_with(
        ManualClock::starting_now(),
        QueueLimits {
            max_events: 10_000,
            max_bytes: 1 << 24,
        },
    );
    let news = topic("news");
    let first = publish(&hub, &news, "x").await;
    let publisher = {
        let hub = hub.clone();
        let news = news.clone();
        tokio::spawn(async move {
            for _ in 0..300 {
                publish(&hub, &news, "x").await;
                tokio::task::yield_now().await;
            }
        })
    };
    let mut feeds = Vec::new();
    for _ in 0..20 {
        let mut feed = hub.open(None);
        let resume = feeds.is_empty().then(|| position(&first));
        feed.subscribe(news.clone(), &[], resume.as_ref())
            .await
            .unwrap();
        feeds.push(feed);
        tokio::task::yield_now().await;
    }
    publisher.await.unwrap();
    for feed in &feeds {
        let subscribed = next_subscribed(feed).await;
        let mut expected = if subscribed.recovered {
            2
        } else {
            subscribed.position.unwrap().offset + 1
        };
        while let Some(item) = feed.shared.pop() {
            let Ok(Item::Event(event)) = item else {
                panic!("expected events, got {item:?}");
            };
            assert_eq!(event.offset, expected, "in order, once each");
            expected += 1;
        }
        assert_eq!(expected, 302, "up to the last published");
    }
}

#[tokio::test]
async fn namespace_filters_pass_only_what_was_asked_for() {
    let hub = hub();
    let me = ChannelName::user("u1");
    let mut media_only = hub.open(None);
    media_only
        .subscribe(me.clone(), &[Namespace::Media as i32], None)
        .await
        .unwrap();
    next_subscribed(&media_only).await;
    let mut all = hub.open(None);
    all.subscribe(me.clone(), &[], None).await.unwrap();
    next_subscribed(&all).await;
    publish(&hub, &me, "note").await;
    let media = Event {
        namespace: Namespace::Media as i32,
        ..event("job.progress")
    };
    hub.backend().publish(&[me], &media).await.unwrap();
    assert_eq!(next_event(&media_only).await.r#type, "job.progress");
    assert_empty(&media_only);
    assert_eq!(next_event(&all).await.r#type, "note");
    assert_eq!(next_event(&all).await.r#type, "job.progress");
}

#[tokio::test]
async fn a_slow_consumer_is_ended_and_others_keep_receiving() {
    let hub = hub();
    let news = topic("news");
    let mut slow = hub.open(None);
    slow.subscribe(news.clone(), &[], None).await.unwrap();
    let mut fast = hub.open(None);
    fast.subscribe(news.clone(), &[], None).await.unwrap();
    next_subscribed(&fast).await;
    for i in 0..LIMITS.max_events + 1 {
        publish(&hub, &news, "x").await;
        assert_eq!(next_event(&fast).await.offset, i as u64 + 1);
    }
    assert_eq!(next(&slow).await, Err(End::SlowConsumer));
    assert_eq!(next(&slow).await, Err(End::SlowConsumer), "and stays ended");
    assert!(
        slow.shared.queue.lock().unwrap().items.is_empty(),
        "memory freed"
    );
    publish(&hub, &news, "x").await;
    assert_eq!(next_event(&fast).await.offset, 6);
}

#[tokio::test]
async fn the_byte_limit_ends_a_slow_consumer_too() {
    let hub = hub_with(
        ManualClock::starting_now(),
        QueueLimits {
            max_events: 1000,
            max_bytes: 300,
        },
    );
    let news = topic("news");
    let mut feed = hub.open(None);
    feed.subscribe(news.clone(), &[], None).await.unwrap();
    let big = Event {
        r#type: "x".repeat(100),
        ..Event::default()
    };
    for _ in 0..3 {
        hub.backend()
            .publish(std::slice::from_ref(&news), &big)
            .await
            .unwrap();
    }
    assert_eq!(next(&feed).await, Err(End::SlowConsumer));
}

#[tokio::test]
async fn dropping_the_last_feed_of_a_channel_forgets_the_channel() {
    let hub = hub();
    let mut a = hub.open(None);
    a.subscribe(topic("a"), &[], None).await.unwrap();
    let mut b = hub.open(None);
    b.subscribe(topic("a"), &[], None).await.unwrap();
    b.subscribe(topic("b"), &[], None).await.unwrap();
    assert_eq!(hub.registry().channel_count(), 2);
    drop(b);
    assert_eq!(hub.registry().channel_count(), 1);
    drop(a);
    assert_eq!(hub.registry().channel_count(), 0);
}

#[tokio::test]
async fn ending_a_session_ends_only_its_feeds() {
    let hub = hub();
    let mine = hub.open(Some(("s1", i64::MAX)));
    let other = hub.open(Some(("s2", i64::MAX)));
    let service = hub.open(None);
    hub.end_session("s1");
    assert_eq!(next(&mine).await, Err(End::SessionEnded));
    assert!(other.shared.pop().is_none());
    assert!(service.shared.pop().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_sessions_end_their_feeds_within_a_second() {
    let clock = ManualClock::starting_now();
    let hub = hub_with(clock.clone(), LIMITS);
    let store = SessionStore::memory(clock.clone());
    let ttl = Duration::from_secs(60);
    let mut sessions = Vec::new();
    for id in ["revoked", "expiring", "kept"] {
        let session = crate::identity::sessions::conformance::session(&clock, id, "u1");
        store.create(&session).await.unwrap();
        sessions.push(session);
    }
    let (revocations, receiver) = broadcast::channel(16);
    let stop = CancellationToken::new();
    tokio::spawn(
        hub.clone()
            .watch_sessions(store.clone(), receiver, stop.clone()),
    );
    let feeds: Vec<Feed> = sessions
        .iter()
        .map(|s| hub.open(Some((&s.id, s.expires_at))))
        .collect();

    revocations.send(sessions[0].id.clone()).unwrap();
    assert_eq!(next(&feeds[0]).await, Err(End::SessionEnded));

    // Keep "kept" alive, let "expiring" lapse.
    clock.advance(ttl);
    store
        .touch(&sessions[2].id, Duration::from_secs(3600))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(3600) - ttl + Duration::from_secs(1));
    store
        .touch(&sessions[2].id, Duration::from_secs(3600))
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(1), feeds[1].next()).await;
    assert_eq!(ended, Ok(Err(End::SessionEnded)));
    tokio::time::sleep(SWEEP_INTERVAL * 2).await;
    assert!(
        feeds[2].shared.pop().is_none(),
        "a session still in use stays"
    );
    stop.cancel();
}

/// What the backend would deliver for `channel` at `offset` in `epoch`
/// (events handed to the registry directly stand in for a backend that
/// lost some: the Redis listener after an outage longer than history).
fn delivered(channel: &ChannelName, offset: u64, epoch: &str) -> Arc<Event> {
    Arc::new(Event {
        channel: channel.to_string(),
        offset,
        epoch: epoch.into(),
        ..event("x")
    })
}

#[tokio::test]
async fn live_events_the_backend_lost_are_announced_as_not_recovered() {
    let hub = hub();
    let news = topic("news");
    let first = publish(&hub, &news, "x").await;
    let mut feed = hub.open(None);
    feed.subscribe(news.clone(), &[Namespace::Media as i32], None)
        .await
        .unwrap();
    next_subscribed(&feed).await;
    let epoch = first.epoch.as_str();
    hub.registry().deliver(delivered(&news, 2, epoch));
    // Offsets 3 and 4 never arrive.
    hub.registry().deliver(delivered(&news, 5, epoch));
    let gap = next_subscribed(&feed).await;
    assert_eq!(gap.channel, "topic:news");
    assert!(gap.was_recovering && !gap.recovered, "{gap:?}");
    assert_eq!(
        gap.position,
        Some(StreamPosition {
            offset: 4,
            epoch: epoch.into()
        }),
        "live events follow the position, as after a subscribe"
    );
    assert_empty(&feed);

    // History was lost: a new epoch is a gap too, even for a feed whose
    // namespace filter passed none of the events.
    hub.registry().deliver(delivered(&news, 1, "reborn"));
    let reborn = next_subscribed(&feed).await;
    assert!(!reborn.recovered);
    assert_eq!(
        reborn.position,
        Some(StreamPosition {
            offset: 0,
            epoch: "reborn".into()
        })
    );
    hub.registry().deliver(delivered(&news, 2, "reborn"));
    assert_empty(&feed);
}

#[tokio::test]
async fn contiguous_live_events_announce_nothing() {
    let hub = hub();
    let news = topic("news");
    let mut feed = hub.open(None);
    feed.subscribe(news.clone(), &[], None).await.unwrap();
    next_subscribed(&feed).await;
    for i in 1..=3 {
        assert_eq!(publish(&hub, &news, "x").await.offset, i);
        assert_eq!(next_event(&feed).await.offset, i);
    }
    assert_empty(&feed);
}

#[tokio::test]
async fn a_channel_nobody_published_to_starts_its_first_epoch_without_a_gap() {
    let hub = hub();
    let fresh = topic("fresh");
    let mut feed = hub.open(None);
    feed.subscribe(fresh.clone(), &[], None).await.unwrap();
    let subscribed = next_subscribed(&feed).await;
    let start = subscribed.position.unwrap();
    assert_eq!((start.offset, start.epoch.as_str()), (0, ""));
    let first = publish(&hub, &fresh, "first").await;
    assert_eq!(next_event(&feed).await.offset, 1, "no recovered: false");
    assert_empty(&feed);

    // A client that held that start position resumes into the first epoch.
    publish(&hub, &fresh, "second").await;
    let mut resumed = hub.open(None);
    resumed
        .subscribe(fresh.clone(), &[], Some(&start))
        .await
        .unwrap();
    let subscribed = next_subscribed(&resumed).await;
    assert!(subscribed.recovered);
    assert_eq!(next_event(&resumed).await.epoch, first.epoch);
    assert_eq!(next_event(&resumed).await.offset, 2);
}

#[tokio::test]
async fn an_idle_feed_keeps_no_queue_room_and_a_live_one_keeps_it() {
    let hub = hub();
    let news = topic("news");
    let mut feed = hub.open(None);
    feed.subscribe(news.clone(), &[], None).await.unwrap();
    let capacity = |feed: &Feed| lock(&feed.shared.queue).items.capacity();
    assert!(capacity(&feed) > 0, "the subscribed message is queued");
    next_subscribed(&feed).await;
    assert_eq!(capacity(&feed), 0, "read: the idle feed holds no room");
    publish(&hub, &news, "a").await;
    next_event(&feed).await;
    assert!(capacity(&feed) > 0, "live events keep their room");
}
