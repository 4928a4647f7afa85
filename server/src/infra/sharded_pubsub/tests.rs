//! The sharded pub/sub against clusters of the tests' own (3 primaries,
//! 3 replicas, `cluster-node-timeout` 1 s): where channels are subscribed,
//! and how they follow a primary's death, a silent primary and a slot
//! migration, each announced for the moved channels only.

use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::infra::{
    cluster_testing::{RedisCluster, node_connection},
    pubsub::Route,
};

/// A cluster of the test's own, started off the runtime's threads.
async fn cluster() -> RedisCluster {
    tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap()
}

/// The sharded pub/sub of `cluster`, and the notices of one route under
/// `prefix`, past the first (nothing to catch up for a new route).
async fn sharded(
    cluster: &RedisCluster,
    prefix: &str,
) -> (PubSub, mpsc::UnboundedReceiver<Notice>) {
    let seeds = cluster
        .urls()
        .iter()
        .map(|url| resp3(&redis::Client::open(url.as_str()).unwrap()).unwrap())
        .collect();
    let pubsub = start(seeds, format!("{prefix}streams"));
    let (sender, mut notices) = mpsc::unbounded_channel();
    pubsub.route(
        Route::Prefix(prefix.to_owned()),
        Box::new(move |notice| sender.send(notice).is_ok()),
    );
    let (_, first, _) = next_subscribed(&mut notices, Duration::from_secs(5)).await;
    assert!(first.is_empty(), "{first:?}");
    (pubsub, notices)
}

async fn next(notices: &mut mpsc::UnboundedReceiver<Notice>, within: Duration) -> Notice {
    tokio::time::timeout(within, notices.recv())
        .await
        .unwrap_or_else(|_| panic!("no notice within {within:?}"))
        .expect("the route goes on")
}

/// The next notice that is not a message or a `Lost`.
async fn next_subscribed(
    notices: &mut mpsc::UnboundedReceiver<Notice>,
    within: Duration,
) -> (Mark, Vec<String>, CaughtUp) {
    let deadline = Instant::now() + within;
    loop {
        match next(notices, deadline.saturating_duration_since(Instant::now())).await {
            Notice::Subscribed {
                mark,
                channels,
                caught_up,
            } => {
                let mut channels = channels.expect("a sharded notice names its channels");
                channels.sort();
                return (mark, channels, caught_up);
            }
            Notice::Message { .. } | Notice::Lost => {}
        }
    }
}

/// The next message, skipping other notices.
async fn next_message(notices: &mut mpsc::UnboundedReceiver<Notice>) -> (String, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Notice::Message { channel, payload } =
            next(notices, deadline.saturating_duration_since(Instant::now())).await
        {
            return (channel, payload.to_vec());
        }
    }
}

/// `SPUBLISH` on the primary that owns `channel` now; how many heard it.
fn spublish(cluster: &RedisCluster, channel: &str, payload: &str) -> i64 {
    redis::cmd("SPUBLISH")
        .arg(channel)
        .arg(payload)
        .query(&mut node_connection(cluster.primary_for(channel)))
        .expect("SPUBLISH")
}

/// How many clients the node on `port` has subscribed to `channel`.
fn shard_subscribers(port: u16, channel: &str) -> i64 {
    let (_, count): (String, i64) = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(channel)
        .query(&mut node_connection(port))
        .expect("PUBSUB SHARDNUMSUB");
    count
}

async fn listening(pubsub: &PubSub, within: Duration) {
    tokio::time::timeout(within, pubsub.listening().wait_for(|up| *up))
        .await
        .unwrap_or_else(|_| panic!("not listening within {within:?}"))
        .unwrap();
}

/// Channels named `<prefix>stream:{n}` for `n` in `0..count`, and the
/// primaries their slots are on.
fn channels(cluster: &RedisCluster, prefix: &str, count: usize) -> Vec<(String, u16)> {
    (0..count)
        .map(|n| {
            let channel = format!("{prefix}stream:{{{n}}}");
            let primary = cluster.primary_for(&channel);
            (channel, primary)
        })
        .collect()
}

/// Each channel is subscribed on the primary of its slot (and only there),
/// hears `SPUBLISH` there, and is left when the last subscription ends; a
/// subscription answers once Redis confirmed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_subscribed_on_the_primary_of_their_slot() {
    let cluster = cluster().await;
    let prefix = "sharded-a:";
    let (pubsub, mut notices) = sharded(&cluster, prefix).await;
    listening(&pubsub, Duration::from_secs(10)).await;
    let channels = channels(&cluster, prefix, 12);
    let primaries: HashSet<u16> = channels.iter().map(|(_, primary)| *primary).collect();
    assert_eq!(primaries.len(), 3, "the channels spread over every primary");
    for (channel, _) in &channels {
        assert_eq!(cluster.slot_of(channel), slot_of(channel));
        pubsub.subscribe(channel.clone()).await.unwrap();
    }
    for (channel, primary) in &channels {
        for port in cluster.primaries() {
            let expected = i64::from(port == *primary);
            assert_eq!(
                shard_subscribers(port, channel),
                expected,
                "{channel} on {port}"
            );
        }
        assert_eq!(spublish(&cluster, channel, "hello"), 1);
        assert_eq!(
            next_message(&mut notices).await,
            (channel.clone(), b"hello".to_vec())
        );
    }
    // Counted: the last unsubscribe leaves.
    let (first, primary) = &channels[0];
    pubsub.subscribe(first.clone()).await.unwrap();
    pubsub.unsubscribe(first.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(shard_subscribers(*primary, first), 1, "still wanted once");
    pubsub.unsubscribe(first.clone());
    let deadline = Instant::now() + Duration::from_secs(5);
    while shard_subscribers(*primary, first) != 0 {
        assert!(Instant::now() < deadline, "{first} still subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(*pubsub.listening().borrow());
}

/// A primary dies (SIGKILL): once its replica is promoted, its channels
/// are subscribed there and announced, under a mark after their
/// subscriptions', and the other primaries' channels are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primarys_channels_move_to_its_promoted_replica() {
    let mut cluster = cluster().await;
    let prefix = "sharded-b:";
    let (pubsub, mut notices) = sharded(&cluster, prefix).await;
    listening(&pubsub, Duration::from_secs(10)).await;
    let channels = channels(&cluster, prefix, 12);
    let mut marks = Vec::new();
    for (channel, _) in &channels {
        marks.push(pubsub.subscribe(channel.clone()).await.unwrap());
    }
    let victim = channels[0].1;
    let mut moving: Vec<String> = channels
        .iter()
        .filter(|(_, primary)| *primary == victim)
        .map(|(channel, _)| channel.clone())
        .collect();
    moving.sort();
    let replica = cluster.replicas_of(victim)[0];
    cluster.kill(victim);

    let (mark, announced, caught_up) = next_subscribed(&mut notices, Duration::from_secs(15)).await;
    assert_eq!(announced, moving, "only the dead primary's channels");
    assert!(marks.iter().all(|subscribed| *subscribed < mark));
    assert!(
        !*pubsub.listening().borrow(),
        "not until the handler caught up"
    );
    drop(caught_up);
    listening(&pubsub, Duration::from_secs(5)).await;
    for channel in &moving {
        assert_eq!(
            shard_subscribers(replica, channel),
            1,
            "{channel} on the new primary"
        );
        assert_eq!(spublish(&cluster, channel, "after"), 1);
        assert_eq!(next_message(&mut notices).await.0, *channel);
    }
}

/// A primary stops answering (SIGSTOP) without closing its connections:
/// the slot map shows its replica promoted within seconds, and the
/// channels follow, well before the 10 s health check would notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_primarys_channels_move_once_its_replica_is_promoted() {
    let cluster = cluster().await;
    let prefix = "sharded-c:";
    let (pubsub, mut notices) = sharded(&cluster, prefix).await;
    listening(&pubsub, Duration::from_secs(10)).await;
    let channels = channels(&cluster, prefix, 6);
    for (channel, _) in &channels {
        pubsub.subscribe(channel.clone()).await.unwrap();
    }
    let (channel, victim) = channels[0].clone();
    let replica = cluster.replicas_of(victim)[0];
    let paused = Instant::now();
    cluster.pause(victim);
    let (_, announced, caught_up) = next_subscribed(&mut notices, Duration::from_secs(9)).await;
    let moved_after = paused.elapsed();
    drop(caught_up);
    assert!(announced.contains(&channel), "{announced:?}");
    assert_eq!(shard_subscribers(replica, &channel), 1);
    assert_eq!(spublish(&cluster, &channel, "after"), 1);
    assert_eq!(next_message(&mut notices).await.0, channel);
    eprintln!(
        "channels of a paused primary subscribed on its replica {moved_after:?} after the pause"
    );
    cluster.resume(victim);
}

/// A slot migrated to another primary: Redis unsubscribes its channels on
/// the old owner on its own; they are subscribed on the new one and
/// announced, and the channels of other slots are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_slot_takes_its_channels_along() {
    let cluster = cluster().await;
    let prefix = "sharded-d:";
    let (pubsub, mut notices) = sharded(&cluster, prefix).await;
    listening(&pubsub, Duration::from_secs(10)).await;
    let channels = channels(&cluster, prefix, 6);
    for (channel, _) in &channels {
        pubsub.subscribe(channel.clone()).await.unwrap();
    }
    let (channel, from) = channels[0].clone();
    let to = cluster
        .primaries()
        .into_iter()
        .find(|port| *port != from)
        .unwrap();
    let slot = cluster.slot_of(&channel);
    let migration = cluster.begin_migration(slot, to);
    tokio::task::block_in_place(|| migration.finish());

    let (_, announced, caught_up) = next_subscribed(&mut notices, Duration::from_secs(10)).await;
    drop(caught_up);
    assert_eq!(
        announced,
        std::slice::from_ref(&channel),
        "only the moved slot's channel"
    );
    assert_eq!(shard_subscribers(to, &channel), 1);
    assert_eq!(shard_subscribers(from, &channel), 0);
    assert_eq!(spublish(&cluster, &channel, "moved"), 1);
    assert_eq!(
        next_message(&mut notices).await,
        (channel, b"moved".to_vec())
    );
    listening(&pubsub, Duration::from_secs(5)).await;
}
