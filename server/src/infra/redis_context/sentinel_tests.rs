//! A context under Redis Sentinel, against real Sentinels
//! ([`SentinelGuard`]): it works on the primary the Sentinels name, follows
//! it across a failover (a SIGKILL of the primary), and never hangs while
//! there is none.

use std::time::{Duration, Instant};

use super::{
    RedisContext, TIMEOUT, Topology,
    testing::SentinelGuard,
    tests::{heard, subscribed},
};
use crate::infra::{
    clock::ManualClock,
    pubsub::{Notice, Route},
    sentinel_testing::MASTER,
};

/// How much later than [`TIMEOUT`] a failing call may return (scheduling
/// on a busy two-core machine).
const SLACK: Duration = Duration::from_millis(500);

fn node(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap()
}

/// The names of the clients connected to the node on `port`.
fn client_names(port: u16) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut node(port))
        .unwrap();
    list.lines()
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("name=")))
        .map(str::to_owned)
        .collect()
}

/// Whether the context's pub/sub connection is on the node on `port`.
fn pubsub_on(port: u16) -> bool {
    client_names(port)
        .iter()
        .any(|name| name == "slop-sentinel-test:pubsub")
}

/// The notices of a route for the channel `news` on the context.
fn news(context: &RedisContext) -> tokio::sync::mpsc::UnboundedReceiver<Notice> {
    let (sender, notices) = tokio::sync::mpsc::unbounded_channel();
    context.pubsub().route(
        Route::Channel("news".into()),
        Box::new(move |notice| sender.send(notice).is_ok()),
    );
    notices
}

/// Publishes `message` on `news` through the node on `port`, and waits
/// for the route to hear it.
async fn published_and_heard(
    port: u16,
    notices: &mut tokio::sync::mpsc::UnboundedReceiver<Notice>,
    message: &str,
) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg(message)
        .query(&mut node(port))
        .unwrap();
    heard(notices, message).await;
}

async fn set(context: &RedisContext, key: &str, value: &str) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut context.commands())
        .await
}

/// A Sentinel context works on the primary: both of its connections are
/// there, under their names, and it hears what is published there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_context_works_on_the_primary() {
    let guard = SentinelGuard::start();
    let context = guard.context(ManualClock::starting_now());
    assert_eq!(context.topology().mode(), "sentinel");
    assert!(!context.cluster());
    let address = context.address();
    assert!(address.contains(MASTER), "{address}");
    let first_sentinel = guard.sentinels.sentinel_urls()[0].replace("redis://", "");
    assert!(address.contains(&first_sentinel), "{address}");

    context.ping().await.unwrap();
    set(&context, "greeting", "hello").await.unwrap();
    let value: String = redis::cmd("GET")
        .arg("greeting")
        .query_async(&mut context.commands())
        .await
        .unwrap();
    assert_eq!(value, "hello");
    let primary = guard.sentinels.primary();
    let there: String = redis::cmd("GET")
        .arg("greeting")
        .query(&mut node(primary))
        .unwrap();
    assert_eq!(there, "hello", "written on the primary the Sentinels name");

    let mut notices = news(&context);
    subscribed(&mut notices).await;
    published_and_heard(primary, &mut notices, "hello").await;

    let names = client_names(primary);
    for name in ["slop-sentinel-test:commands", "slop-sentinel-test:pubsub"] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
}

/// A Sentinel that stops answering (the first one given, SIGSTOP) holds
/// nothing up: the others name the primary, and the context works on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sentinel_does_not_hold_up_finding_the_primary() {
    let guard = SentinelGuard::start();
    guard.sentinels.pause_sentinel(0);
    let context = guard.context(ManualClock::starting_now());
    context.ping().await.unwrap();
    set(&context, "greeting", "hello").await.unwrap();
    let mut notices = news(&context);
    subscribed(&mut notices).await;
    published_and_heard(guard.sentinels.primary(), &mut notices, "hello").await;
    guard.sentinels.resume_sentinel(0);
}

/// SIGKILL of the primary: commands fail (each within TIMEOUT, never a
/// hang) until the Sentinels promote the replica, then succeed there;
/// readiness is an error meanwhile and Ok after; the pub/sub connection
/// moves to the new primary and hears what is published there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_context_follows_the_primary_across_a_failover() {
    let mut guard = SentinelGuard::start();
    let context = guard.context(ManualClock::starting_now());
    context.ping().await.unwrap();
    set(&context, "before", "1").await.unwrap();
    let mut notices = news(&context);
    let Notice::Subscribed { mark: before, .. } = notices.recv().await.unwrap() else {
        panic!("subscribed first");
    };

    let killed_at = Instant::now();
    let former = guard.sentinels.kill_primary();
    let started = Instant::now();
    let ready = context.ping().await;
    assert!(
        started.elapsed() < TIMEOUT + SLACK,
        "{:?}",
        started.elapsed()
    );
    assert!(ready.is_err(), "not ready without a primary");

    // A command every 50 ms until one succeeds.
    let mut failures = 0;
    let mut slowest_failure = Duration::ZERO;
    let recovered = loop {
        let started = Instant::now();
        let attempt = set(&context, "after", "2").await;
        let took = started.elapsed();
        match attempt {
            Ok(()) => break killed_at.elapsed(),
            Err(error) => {
                assert!(took < TIMEOUT + SLACK, "a failure after {took:?}: {error}");
                failures += 1;
                slowest_failure = slowest_failure.max(took);
            }
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "no command succeeded within 30 s of the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let promoted = guard.sentinels.wait_for_failover();
    let failed_over = killed_at.elapsed();
    println!(
        "first command to succeed: {recovered:?} after the kill ({failures} failed before, the slowest in {slowest_failure:?}); every Sentinel named the new primary by {failed_over:?}"
    );
    assert!(failures > 0, "commands failed while there was no primary");
    assert_ne!(promoted, former);
    let there: String = redis::cmd("GET")
        .arg("after")
        .query(&mut node(promoted))
        .unwrap();
    assert_eq!(there, "2", "written on the new primary");
    context.ping().await.unwrap();

    // The pub/sub connection: lost, then subscribed again on the new
    // primary.
    let again = loop {
        let notice = tokio::time::timeout(Duration::from_secs(30), notices.recv())
            .await
            .expect("a notice within 30 s")
            .unwrap();
        if let Notice::Subscribed {
            mark: connection, ..
        } = notice
        {
            break connection;
        }
    };
    assert!(again > before, "a new connection");
    let reconnected = killed_at.elapsed();
    println!("pub/sub subscribed again {reconnected:?} after the kill");
    assert!(
        pubsub_on(promoted),
        "the pub/sub connection is on the new primary"
    );
    published_and_heard(promoted, &mut notices, "after the failover").await;
}

/// An instance starts before its Sentinels, and while none answers, or
/// one accepts connections but never answers, readiness and commands fail
/// within TIMEOUT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sentinels_calls_fail_within_the_timeout() {
    // Accepts connections (the kernel does) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    for sentinels in [
        vec![format!("redis://127.0.0.1:{closed_port}")],
        vec![format!(
            "redis://127.0.0.1:{}",
            silent.local_addr().unwrap().port()
        )],
    ] {
        let topology = Topology::Sentinel {
            sentinels: sentinels.clone(),
            master: MASTER.into(),
            password: None,
        };
        let context = RedisContext::open(
            &topology,
            None,
            "slop-sentinel-test:",
            ManualClock::starting_now(),
        )
        .expect("made without reaching the Sentinels");
        for _ in 0..2 {
            let started = Instant::now();
            assert!(context.ping().await.is_err(), "{sentinels:?}");
            let error = set(&context, "key", "value").await.unwrap_err();
            let took = started.elapsed();
            assert!(
                took < 2 * TIMEOUT + SLACK,
                "{sentinels:?}: ping and SET took {took:?}: {error}"
            );
        }
        assert!(!*context.listening().borrow());
    }
}

/// A primary that stops answering without closing its connections (as
/// behind a partition): a command in flight fails at TIMEOUT, not later;
/// once the Sentinels promote the replica, commands go there; the pub/sub
/// connection leaves the silent node as soon as the Sentinels name another
/// (not at its next health check, 10 s away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_primary_fails_commands_within_the_timeout() {
    let mut guard = SentinelGuard::start();
    let context = guard.context(ManualClock::starting_now());
    set(&context, "before", "1").await.unwrap();
    let mut notices = news(&context);
    subscribed(&mut notices).await;

    let frozen_at = Instant::now();
    let former = guard.sentinels.freeze_primary();
    let error = set(&context, "after", "2").await.unwrap_err();
    let took = frozen_at.elapsed();
    println!("a command to the silent primary failed after {took:?}: {error}");
    assert!(
        took >= TIMEOUT - Duration::from_millis(100) && took < TIMEOUT + SLACK,
        "failed after {took:?}, not at TIMEOUT"
    );

    let recovered = loop {
        let started = Instant::now();
        let attempt = set(&context, "after", "2").await;
        let took = started.elapsed();
        match attempt {
            Ok(()) => break frozen_at.elapsed(),
            Err(error) => assert!(took < TIMEOUT + SLACK, "a failure after {took:?}: {error}"),
        }
        assert!(
            frozen_at.elapsed() < Duration::from_secs(30),
            "no command succeeded within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let promoted = guard.sentinels.wait_for_failover();
    assert_ne!(promoted, former);
    println!("first command to succeed: {recovered:?} after the primary went silent");
    context.ping().await.unwrap();

    subscribed(&mut notices).await;
    let resubscribed = frozen_at.elapsed();
    println!("pub/sub subscribed again {resubscribed:?} after the primary went silent");
    // Measured from the failover, not from the freeze: how long the
    // Sentinels take to promote varies with the machine's load (8 s under
    // CI's), and the health check would come up to 10 s after the freeze.
    assert!(
        resubscribed < recovered + Duration::from_secs(1),
        "the pub/sub connection waited for its health check: subscribed \
         {resubscribed:?} after the freeze, commands recovered after {recovered:?}"
    );
    published_and_heard(promoted, &mut notices, "after the partition").await;
}

/// A failover the Sentinels are asked for: the former primary lives on,
/// still a primary for some seconds (then a replica) and accepting writes
/// that will be lost; the context leaves it as soon as the Sentinels
/// announce the new primary, pub/sub and commands alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_context_leaves_a_primary_failed_over_on_request() {
    let mut guard = SentinelGuard::start();
    let context = guard.context(ManualClock::starting_now());
    set(&context, "before", "1").await.unwrap();
    let mut notices = news(&context);
    subscribed(&mut notices).await;
    // The listener subscribes to a Sentinel on its own time.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let asked_at = Instant::now();
    let former = guard.sentinels.fail_over();
    subscribed(&mut notices).await;
    let moved = asked_at.elapsed();
    let promoted = guard.sentinels.wait_for_failover();
    assert_ne!(promoted, former);
    println!("pub/sub subscribed again {moved:?} after SENTINEL FAILOVER");
    assert!(
        pubsub_on(promoted),
        "the pub/sub connection is on the new primary"
    );
    assert!(!pubsub_on(former), "and not on the former one");
    let mut former_node = node(former);
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut former_node).unwrap();
    println!("the former primary's role then: {:?}", role.first());

    // The next command goes to the new primary, not the former one that
    // would still take it.
    set(&context, "after", "2").await.unwrap();
    let there: Option<String> = redis::cmd("GET")
        .arg("after")
        .query(&mut node(promoted))
        .unwrap();
    assert_eq!(there.as_deref(), Some("2"), "written on the new primary");
    context.ping().await.unwrap();
    published_and_heard(promoted, &mut notices, "after the failover").await;
}
