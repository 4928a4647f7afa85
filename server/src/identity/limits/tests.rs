//! One conformance suite, run against each backend with a manual clock.
//! Redis tests use the server at REDIS_URL (or the local default) and
//! fail, never skip, when it is unreachable; each test works under a
//! fresh prefix and deletes its keys afterwards, even when it fails.

use std::{collections::BTreeSet, future::Future, sync::Arc};

use super::*;
use crate::infra::{
    clock::{Clock, ManualClock},
    redis_context::testing::{ClusterGuard, PrefixGuard, SentinelGuard, redis_url},
};

const TEN_A_MINUTE: Rate = Rate::new(10, Duration::from_secs(60));
const INTERVAL: Duration = Duration::from_secs(6);

async fn hit(limiter: &RateLimiter, key: &str, rate: Rate) -> Decision {
    limiter.hit(key, rate).await.expect("hit")
}

async fn peek(limiter: &RateLimiter, key: &str, rate: Rate) -> Decision {
    limiter.peek(key, rate).await.expect("peek")
}

/// Hits `key` `rate.limit` times, checking the countdown.
async fn burst(limiter: &RateLimiter, key: &str, rate: Rate) {
    for remaining in (0..rate.limit).rev() {
        assert_eq!(
            hit(limiter, key, rate).await,
            Decision::Allowed { remaining },
            "{key}: {} of the burst",
            rate.limit - remaining
        );
    }
}

fn limited(retry_after: Duration) -> Decision {
    Decision::Limited { retry_after }
}

// ---- the conformance suite ----

async fn a_burst_of_limit_then_limited_for_one_interval(
    limiter: RateLimiter,
    _clock: Arc<ManualClock>,
) {
    burst(&limiter, "k", TEN_A_MINUTE).await;
    assert_eq!(hit(&limiter, "k", TEN_A_MINUTE).await, limited(INTERVAL));
}

async fn waiting_retry_after_allows_exactly_one_more(
    limiter: RateLimiter,
    clock: Arc<ManualClock>,
) {
    burst(&limiter, "k", TEN_A_MINUTE).await;
    clock.advance(INTERVAL - Duration::from_millis(1));
    assert_eq!(
        hit(&limiter, "k", TEN_A_MINUTE).await,
        limited(Duration::from_millis(1))
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        hit(&limiter, "k", TEN_A_MINUTE).await,
        Decision::Allowed { remaining: 0 }
    );
    assert_eq!(hit(&limiter, "k", TEN_A_MINUTE).await, limited(INTERVAL));
    // Two and a half intervals refill two events, and half of a third.
    clock.advance(INTERVAL * 5 / 2);
    assert_eq!(
        hit(&limiter, "k", TEN_A_MINUTE).await,
        Decision::Allowed { remaining: 1 }
    );
    assert_eq!(
        hit(&limiter, "k", TEN_A_MINUTE).await,
        Decision::Allowed { remaining: 0 }
    );
    assert_eq!(
        hit(&limiter, "k", TEN_A_MINUTE).await,
        limited(INTERVAL / 2)
    );
}

async fn a_whole_window_restores_a_full_burst_and_no_more(
    limiter: RateLimiter,
    clock: Arc<ManualClock>,
) {
    burst(&limiter, "k", TEN_A_MINUTE).await;
    clock.advance(TEN_A_MINUTE.window);
    burst(&limiter, "k", TEN_A_MINUTE).await;
    assert_eq!(hit(&limiter, "k", TEN_A_MINUTE).await, limited(INTERVAL));
    // Idle time does not bank more than one burst.
    clock.advance(TEN_A_MINUTE.window * 10);
    burst(&limiter, "k", TEN_A_MINUTE).await;
    assert_eq!(hit(&limiter, "k", TEN_A_MINUTE).await, limited(INTERVAL));
}

async fn peek_never_counts(limiter: RateLimiter, clock: Arc<ManualClock>) {
    for _ in 0..100 {
        assert_eq!(
            peek(&limiter, "k", TEN_A_MINUTE).await,
            Decision::Allowed { remaining: 9 }
        );
    }
    burst(&limiter, "k", TEN_A_MINUTE).await;
    for _ in 0..100 {
        assert_eq!(peek(&limiter, "k", TEN_A_MINUTE).await, limited(INTERVAL));
    }
    clock.advance(INTERVAL);
    assert_eq!(
        peek(&limiter, "k", TEN_A_MINUTE).await,
        Decision::Allowed { remaining: 0 }
    );
    assert_eq!(
        hit(&limiter, "k", TEN_A_MINUTE).await,
        Decision::Allowed { remaining: 0 }
    );
    assert_eq!(peek(&limiter, "k", TEN_A_MINUTE).await, limited(INTERVAL));
}

async fn keys_are_independent_and_reset_forgets_one(
    limiter: RateLimiter,
    _clock: Arc<ManualClock>,
) {
    burst(&limiter, "login:alice:10.0.0.1", TEN_A_MINUTE).await;
    burst(&limiter, "login:alice:10.0.0.2", TEN_A_MINUTE).await;
    assert!(
        !hit(&limiter, "login:alice:10.0.0.1", TEN_A_MINUTE)
            .await
            .is_allowed()
    );

    limiter.reset("login:alice:10.0.0.1").await.expect("reset");
    burst(&limiter, "login:alice:10.0.0.1", TEN_A_MINUTE).await;
    assert_eq!(
        hit(&limiter, "login:alice:10.0.0.2", TEN_A_MINUTE).await,
        limited(INTERVAL),
        "resetting one key leaves the others"
    );
    limiter
        .reset("never-seen")
        .await
        .expect("reset of an unknown key");
}

async fn concurrent_hits_allow_exactly_limit(limiter: RateLimiter, _clock: Arc<ManualClock>) {
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move { hit(&limiter, "k", TEN_A_MINUTE).await })
        })
        .collect();
    let mut remaining = BTreeSet::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.expect("task") {
            Decision::Allowed { remaining: left } => {
                assert!(remaining.insert(left), "two hits saw {left} remaining");
            }
            Decision::Limited { retry_after } => {
                assert_eq!(retry_after, INTERVAL);
                refused += 1;
            }
        }
    }
    assert_eq!(remaining, (0..10).collect(), "exactly one burst allowed");
    assert_eq!(refused, 40);
}

async fn hammering_while_limited_does_not_extend_the_wait(
    limiter: RateLimiter,
    clock: Arc<ManualClock>,
) {
    burst(&limiter, "k", TEN_A_MINUTE).await;
    let step = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    while waited < INTERVAL {
        for _ in 0..5 {
            assert_eq!(
                hit(&limiter, "k", TEN_A_MINUTE).await,
                limited(INTERVAL - waited)
            );
        }
        clock.advance(step);
        waited += step;
    }
    assert_eq!(
        hit(&limiter, "k", TEN_A_MINUTE).await,
        Decision::Allowed { remaining: 0 }
    );
}

async fn uneven_and_degenerate_rates(limiter: RateLimiter, clock: Arc<ManualClock>) {
    // 1000 ms / 3 rounds the interval up to 334 ms; a full burst fits.
    let three_a_second = Rate::new(3, Duration::from_secs(1));
    burst(&limiter, "uneven", three_a_second).await;
    assert_eq!(
        hit(&limiter, "uneven", three_a_second).await,
        limited(Duration::from_millis(334))
    );
    clock.advance(Duration::from_millis(334));
    assert!(hit(&limiter, "uneven", three_a_second).await.is_allowed());

    let never = Rate::new(0, Duration::from_secs(60));
    assert_eq!(hit(&limiter, "never", never).await, limited(never.window));
    assert_eq!(peek(&limiter, "never", never).await, limited(never.window));

    // A window shorter than the limit in milliseconds still bursts.
    let instant = Rate::new(5, Duration::ZERO);
    burst(&limiter, "instant", instant).await;
    assert_eq!(
        hit(&limiter, "instant", instant).await,
        limited(Duration::from_millis(1))
    );
}

// ---- running it against each backend ----

crate::infra::conformance::backend_conformance! {
    backends: [
        memory_backend => on_memory,
        redis_backend => on_redis,
        redis_cluster_backend => on_redis_cluster,
        redis_sentinel_backend => on_redis_sentinel,
    ],
    cases: [
        a_burst_of_limit_then_limited_for_one_interval,
        waiting_retry_after_allows_exactly_one_more,
        a_whole_window_restores_a_full_burst_and_no_more,
        peek_never_counts,
        keys_are_independent_and_reset_forgets_one,
        concurrent_hits_allow_exactly_limit,
        hammering_while_limited_does_not_extend_the_wait,
        uneven_and_degenerate_rates,
    ],
}

async fn on_memory<F, Fut>(test: F)
where
    F: FnOnce(RateLimiter, Arc<ManualClock>) -> Fut,
    Fut: Future<Output = ()>,
{
    let clock = ManualClock::starting_now();
    test(RateLimiter::memory(clock.clone()), clock).await;
}

/// Runs `test` against Redis under a fresh prefix, whose keys go when
/// it ends, whether it passed or not.
async fn on_redis<F, Fut>(test: F)
where
    F: FnOnce(RateLimiter, Arc<ManualClock>) -> Fut,
    Fut: Future<Output = ()>,
{
    let guard = PrefixGuard::new();
    let clock = ManualClock::starting_now();
    test(RateLimiter::redis(&guard.context(clock.clone())), clock).await;
}

/// Runs `test` against a Redis Cluster of its own (3 primaries, 3
/// replicas).
async fn on_redis_cluster<F, Fut>(test: F)
where
    F: FnOnce(RateLimiter, Arc<ManualClock>) -> Fut,
    Fut: Future<Output = ()>,
{
    let guard = ClusterGuard::start();
    let clock = ManualClock::starting_now();
    test(RateLimiter::redis(&guard.context(clock.clone())), clock).await;
}

/// Runs `test` against a primary, its replica and three Sentinels of its
/// own.
async fn on_redis_sentinel<F, Fut>(test: F)
where
    F: FnOnce(RateLimiter, Arc<ManualClock>) -> Fut,
    Fut: Future<Output = ()>,
{
    let guard = SentinelGuard::start();
    let clock = ManualClock::starting_now();
    test(RateLimiter::redis(&guard.context(clock.clone())), clock).await;
}

// ---- one backend only ----

#[tokio::test]
async fn memory_sweeps_stale_keys() {
    let clock = ManualClock::starting_now();
    let limiter = RateLimiter::memory(clock.clone());
    let RateLimiter::Memory(memory) = &limiter else {
        unreachable!()
    };
    let per_second = Rate::new(1, Duration::from_secs(1));
    for n in 0..100 {
        hit(&limiter, &format!("passing-{n}"), per_second).await;
    }
    let hour = Rate::new(1, Duration::from_secs(3600));
    hit(&limiter, "lasting", hour).await;
    assert_eq!(memory.lock().tats.len(), 101);

    clock.advance(Duration::from_secs(1));
    // Refused hits count towards the sweep too, and add nothing.
    while memory.lock().hits_since_sweep != 0 {
        hit(&limiter, "lasting", hour).await;
    }
    let keys: Vec<_> = memory.lock().tats.keys().cloned().collect();
    assert_eq!(keys, ["lasting"], "stale keys go, live ones stay");
    assert_eq!(
        hit(&limiter, "lasting", hour).await,
        limited(Duration::from_secs(3599))
    );
}

/// Redis expires a key by its own clock, the script counts by the
/// instance's: a key that expired the moment its TAT passed was
/// forgotten early whenever Redis ran ahead of an instance or a hit took
/// longer than a short rate's interval (a burst of 5 in 0 s allowed a
/// sixth hit 2 ms later). The key outlives its TAT by a margin.
#[tokio::test]
async fn redis_keeps_a_key_past_its_tat_by_a_margin() {
    on_redis(|limiter, _clock| async move {
        let instant = Rate::new(5, Duration::ZERO);
        burst(&limiter, "instant", instant).await;
        // Real time passes; the instance's clock does not.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            hit(&limiter, "instant", instant).await,
            limited(Duration::from_millis(1))
        );
    })
    .await;
}

#[tokio::test]
async fn redis_instances_share_counters_under_the_prefix() {
    on_redis(|limiter, clock| async move {
        let RateLimiter::Redis(redis) = &limiter else {
            unreachable!()
        };
        let other = RateLimiter::redis(
            &RedisContext::connect(&redis_url(), &redis.prefix, clock.clone())
                .expect("a second instance"),
        );
        burst(&limiter, "k", TEN_A_MINUTE).await;
        assert_eq!(hit(&other, "k", TEN_A_MINUTE).await, limited(INTERVAL));

        let name = format!("{}limit:k", redis.prefix);
        let mut connection = redis.connection.clone();
        let (tat, ttl): (i64, i64) = redis::pipe()
            .cmd("GET")
            .arg(&name)
            .cmd("PTTL")
            .arg(&name)
            .query_async(&mut connection)
            .await
            .expect("GET and PTTL");
        let now = to_millis(clock.now());
        assert_eq!(tat, now + 60_000, "the TAT, as a plain number");
        assert!(
            (60_000..=61_000).contains(&ttl),
            "the key expires a second after its TAT: {ttl} ms"
        );

        other.reset("k").await.expect("reset");
        let exists: bool = redis::cmd("EXISTS")
            .arg(&name)
            .query_async(&mut connection)
            .await
            .expect("EXISTS");
        assert!(!exists);
    })
    .await;
}

#[test]
fn refusals_are_counted_by_limit_never_by_key() {
    assert_eq!(limiter("anonymous:203.0.113.9"), "anonymous_requests");
    assert_eq!(
        limiter("login-failures:someone@example.com:203.0.113.9"),
        "login_failures"
    );
    assert_eq!(limiter("mail-recipient:0f3a"), "mail_per_recipient");
    assert_eq!(
        limiter("streams:ip:2001:db8::1"),
        "stream_connections_per_ip"
    );
    assert_eq!(limiter("streams:user:u-1"), "stream_connections_per_user");
    assert_eq!(limiter("someone@example.com"), "other");
}
