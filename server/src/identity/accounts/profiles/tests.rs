//! The cache's rules on its own, then changes heard across instances on a
//! real Redis.

use std::time::Duration;

use super::*;
use crate::infra::{
    clock::{ManualClock, from_millis},
    pubsub::Notice,
    redis_context::testing::{PrefixGuard, kill_clients_named},
};

fn profile(id: &str, display_name: &str) -> Arc<Profile> {
    Arc::new(Profile {
        id: id.to_owned(),
        email: format!("{id}@example.com"),
        display_name: display_name.to_owned(),
        created_at: from_millis(1_000),
        updated_at: from_millis(2_000),
    })
}

/// Reads `profile` as the store does on a miss: a ticket, then the put.
fn read(profiles: &Profiles, profile: Arc<Profile>) {
    let ticket = profiles.ticket();
    profiles.put(ticket, profile);
}

fn in_process() -> (Arc<ManualClock>, Profiles) {
    let clock = ManualClock::starting_now();
    (clock.clone(), Profiles::in_process(clock))
}

#[tokio::test]
async fn a_profile_is_served_until_its_account_changes() {
    let (_, profiles) = in_process();
    assert_eq!(profiles.get("u1"), None);
    read(&profiles, profile("u1", "Ada"));
    read(&profiles, profile("u2", "Grace"));
    assert_eq!(profiles.get("u1"), Some(profile("u1", "Ada")));
    profiles.changed("u1").await;
    assert_eq!(profiles.get("u1"), None, "forgotten when it changed");
    assert_eq!(
        profiles.get("u2"),
        Some(profile("u2", "Grace")),
        "another account's profile stays"
    );
}

#[test]
fn lookups_are_counted_as_hits_and_misses() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let text = metrics::with_local_recorder(&recorder, || {
        let (_, profiles) = in_process();
        assert_eq!(profiles.get("u1"), None);
        read(&profiles, profile("u1", "Ada"));
        for _ in 0..3 {
            assert!(profiles.get("u1").is_some());
        }
        handle.render()
    });
    assert!(
        text.contains(&format!(r#"{PROFILE_CACHE}{{result="hit"}} 3"#)),
        "{text}"
    );
    assert!(
        text.contains(&format!(r#"{PROFILE_CACHE}{{result="miss"}} 1"#)),
        "{text}"
    );
}

#[tokio::test]
async fn a_read_that_began_before_a_change_is_not_cached() {
    let (_, profiles) = in_process();
    // The read starts, the change lands, then the read (of the old row)
    // ends: caching it would show the old name until MAX_AGE.
    let ticket = profiles.ticket();
    profiles.changed("u1").await;
    profiles.put(ticket, profile("u1", "Old name"));
    assert_eq!(profiles.get("u1"), None);
    // A read that begins after the change caches.
    read(&profiles, profile("u1", "New name"));
    assert_eq!(profiles.get("u1"), Some(profile("u1", "New name")));
}

#[test]
fn a_profile_is_read_again_after_max_age() {
    let (clock, profiles) = in_process();
    read(&profiles, profile("u1", "Ada"));
    clock.advance(MAX_AGE - Duration::from_millis(1));
    assert!(profiles.get("u1").is_some());
    clock.advance(Duration::from_millis(1));
    assert_eq!(profiles.get("u1"), None, "at MAX_AGE it is read again");
}

#[test]
fn nothing_is_cached_while_changes_cannot_be_heard() {
    let clock = ManualClock::starting_now();
    let cache = Cache::new(clock, false);
    assert!(
        cache.ticket().is_none(),
        "not before the first subscription"
    );
    cache.on(Notice::resubscribed(vec![]));
    let ticket = cache.ticket().expect("subscribed: caches");
    cache.put(ticket, profile("u1", "Ada"));
    assert!(cache.get("u1").is_some());

    cache.on(Notice::Lost);
    assert_eq!(cache.get("u1"), None, "forgotten when the connection drops");
    assert!(
        cache.ticket().is_none(),
        "and nothing cached while it is down"
    );

    // A read that began before the drop ends after the resubscription:
    // a change published meanwhile was missed, so it must not be cached.
    cache.on(Notice::resubscribed(vec![]));
    let before = cache.ticket().unwrap();
    cache.on(Notice::Lost);
    cache.on(Notice::resubscribed(vec![]));
    cache.put(before, profile("u1", "Old name"));
    assert_eq!(cache.get("u1"), None);
}

#[test]
fn a_resubscription_forgets_every_profile() {
    let cache = Cache::new(ManualClock::starting_now(), true);
    cache.put(cache.ticket().unwrap(), profile("u1", "Ada"));
    cache.on(Notice::resubscribed(vec![]));
    assert_eq!(cache.get("u1"), None);
}

#[test]
fn a_malformed_message_forgets_every_profile() {
    let cache = Cache::new(ManualClock::starting_now(), true);
    cache.put(cache.ticket().unwrap(), profile("u1", "Ada"));
    cache.on(Notice::Message {
        channel: "p:accounts:changed".into(),
        payload: vec![0xff, 0xfe].into(),
    });
    assert_eq!(cache.get("u1"), None);
    assert!(cache.ticket().is_some(), "and goes on caching");
}

#[test]
fn the_cache_holds_at_most_capacity_profiles() {
    let cache = Cache::new(ManualClock::starting_now(), true);
    for i in 0..=CAPACITY {
        cache.put(cache.ticket().unwrap(), profile(&format!("u{i}"), "Ada"));
    }
    assert_eq!(cache.read().entries.len(), CAPACITY);
    let last = format!("u{CAPACITY}");
    assert!(cache.get(&last).is_some(), "the newest is in");
}

#[test]
fn an_uncached_store_remembers_nothing() {
    let profiles = Profiles::uncached();
    assert!(profiles.ticket().is_none());
    read(&profiles, profile("u1", "Ada"));
    assert_eq!(profiles.get("u1"), None);
}

/// Waits (at most 5 s) until `profiles` has forgotten `id`.
async fn forgets(profiles: &Profiles, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while profiles.get(id).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id}'s profile still cached 5 s after its change"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (at most 5 s) until `profiles` hears of changes, so it may cache.
async fn hearing(profiles: &Profiles) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while profiles.ticket().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cache does not hear of changes 5 s after its connection listened"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (at most 5 s) until `context` listens on every route.
async fn listening(context: &RedisContext) {
    let mut listening = context.listening();
    tokio::time::timeout(Duration::from_secs(5), listening.wait_for(|up| *up))
        .await
        .expect("the pub/sub connection subscribed within 5 s")
        .expect("the pub/sub loop runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_instance_is_forgotten_on_the_others() {
    let clock = ManualClock::starting_now();
    let guard = PrefixGuard::new();
    let other_prefix = PrefixGuard::new();
    let (a, b, elsewhere) = (
        guard.context(clock.clone()),
        guard.context(clock.clone()),
        other_prefix.context(clock.clone()),
    );
    let (on_a, on_b, on_elsewhere) = (
        Profiles::shared(&a),
        Profiles::shared(&b),
        Profiles::shared(&elsewhere),
    );
    for context in [&a, &b, &elsewhere] {
        listening(context).await;
    }
    for profiles in [&on_a, &on_b, &on_elsewhere] {
        // The connection may be up before the cache's own channel is
        // subscribed: until then nothing is cached (and, under load, a
        // read before it proved nothing).
        hearing(profiles).await;
        read(profiles, profile("u1", "Ada"));
        read(profiles, profile("u2", "Grace"));
        assert!(profiles.get("u1").is_some() && profiles.get("u2").is_some());
    }
    on_a.changed("u1").await;
    assert_eq!(on_a.get("u1"), None, "the changer forgets at once");
    forgets(&on_b, "u1").await;
    assert!(on_b.get("u2").is_some(), "only the changed account");
    // The other prefix is another deployment: a message it missed would
    // show here within the time b took.
    assert!(on_elsewhere.get("u1").is_some());
}

// On this single-threaded runtime the pub/sub loop runs only when the test
// awaits, so the first assertion sees the state before it subscribed.
#[tokio::test]
async fn while_its_pub_sub_connection_is_down_an_instance_caches_nothing() {
    let clock = ManualClock::starting_now();
    let guard = PrefixGuard::new();
    let context = guard.context(clock.clone());
    let profiles = Profiles::shared(&context);
    assert!(
        profiles.ticket().is_none(),
        "nothing is cached before the connection is subscribed"
    );
    listening(&context).await;
    read(&profiles, profile("u1", "Ada"));
    assert!(profiles.get("u1").is_some());

    kill_clients_named(&format!("{}pubsub", guard.prefix));
    forgets(&profiles, "u1").await;
    // Back again: caching resumes.
    listening(&context).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while profiles.ticket().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "caching resumed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    read(&profiles, profile("u1", "Ada"));
    assert!(profiles.get("u1").is_some());
}
