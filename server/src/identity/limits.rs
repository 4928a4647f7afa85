//! Rate limits that every instance of the server shares: login attempts (per
//! account and IP, and per IP), busy auth endpoints, new stream and WebSocket
//! connections.
//!
//! The algorithm is GCRA, the generic cell rate algorithm (what `governor`
//! implements): each key keeps one timestamp, its *theoretical arrival time*
//! (TAT), the moment the key would be back to a full burst. A rate of `limit`
//! per `window` lets one event through every `window / limit` (the emission
//! interval) and allows bursts of up to `limit`. One number per key, and the
//! exact wait until the next event fits falls out of it, which is what a
//! `Retry-After` needs.
//!
//! What "at most `limit` per `window`" means here: a full burst of `limit` at
//! once, then one more every `window / limit`. Over a long time that is the
//! rate asked for, but a sliding window of length `window` can see up to
//! `2 * limit - 1` events (a burst, then the refills), where a fixed window
//! would let `2 * limit` through across one of its boundaries.
//!
//! Why throttling cannot become a lockout: a limited attempt counts nothing
//! (see [`RateLimiter::hit`]), so hammering a key never extends its wait, and
//! every key refills on its own within one `window`. Keying login failures by
//! account and IP (with a looser limit per IP) keeps an attacker's failures
//! from throttling the account's owner, who comes from another address.
//!
//! Backends, a closed enum ([`RateLimiter`]):
//! - [`MemoryLimiter`]: in process, for a single instance or when Redis is
//!   not configured;
//! - [`RedisLimiter`]: shared by every instance, one atomic Lua script per
//!   event.
//!
//! Both compute in whole milliseconds from the time our [`Clock`] gives (Redis
//! gets "now" as an argument, never uses its own clock), so one conformance
//! suite with a manual clock tests both. With real clocks, instances whose
//! clocks disagree by `d` can let a key refill up to `d` early or late.
//!
//! Errors are returned, never hidden: whether a throttle fails open or closed
//! when Redis is down is the caller's decision.
//!
//! [`Clock`]: crate::infra::clock::Clock

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex, PoisonError},
    time::Duration,
};

use redis::{Script, aio::ConnectionManager};

use crate::infra::{
    clock::{SharedClock, to_millis},
    redis_context::RedisContext,
};

/// A rate: at most `limit` events per `window` (bursts up to `limit`).
///
/// Computed in whole milliseconds: the window is rounded up to whole
/// milliseconds, and so is the emission interval `window / limit` when it is
/// not whole (3 per second lets one through every 334 ms, never faster than
/// asked). A `limit` of 0 refuses everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed at once, and per `window` in the long run.
    pub limit: u32,
    /// The time in which `limit` events refill.
    pub window: Duration,
}

impl Rate {
    /// At most `limit` events per `window`.
    pub const fn new(limit: u32, window: Duration) -> Self {
        Self { limit, window }
    }
}

/// The answer to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The event fits; `remaining` more would fit right after it.
    Allowed {
        /// Further events that would be allowed now.
        remaining: u32,
    },
    /// The event does not fit; one will after `retry_after`.
    Limited {
        /// The exact wait until one more event fits.
        retry_after: Duration,
    },
}

impl Decision {
    /// Whether the event was allowed (callers match on the decision; the
    /// tests ask this).
    #[cfg(test)]
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

/// Why a limit could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// Redis did not answer, or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Rate limits over one of the backends.
#[derive(Debug, Clone)]
pub enum RateLimiter {
    /// In this process only.
    Memory(MemoryLimiter),
    /// In Redis, shared by every instance.
    Redis(RedisLimiter),
}

impl RateLimiter {
    /// Limits kept in this process.
    pub fn memory(clock: SharedClock) -> Self {
        Self::Memory(MemoryLimiter {
            table: Arc::default(),
            clock,
        })
    }

    /// Limits kept in Redis, under the keys `<prefix>limit:<key>`, on the
    /// instance's Redis context (see [`crate::infra::redis_context`]).
    pub fn redis(context: &RedisContext) -> Self {
        Self::Redis(RedisLimiter {
            connection: context.commands(),
            prefix: context.prefix().into(),
            clock: context.clock().clone(),
        })
    }

    /// Counts one event for `key` if the rate allows it now (and then returns
    /// Allowed with how many more fit right now); otherwise counts nothing
    /// and returns Limited with the exact wait until one more event fits.
    pub async fn hit(&self, key: &str, rate: Rate) -> Result<Decision, LimitError> {
        let Some(gcra) = Gcra::of(rate) else {
            return Ok(refused(rate));
        };
        match self {
            Self::Memory(memory) => Ok(memory.hit(key, gcra)),
            Self::Redis(redis) => redis.hit(key, gcra).await,
        }
    }

    /// Like `hit` but counts nothing: would one more event be allowed now?
    /// The answer is the one `hit` would give at this moment.
    pub async fn peek(&self, key: &str, rate: Rate) -> Result<Decision, LimitError> {
        let Some(gcra) = Gcra::of(rate) else {
            return Ok(refused(rate));
        };
        let (tat, now) = match self {
            Self::Memory(memory) => memory.tat(key),
            Self::Redis(redis) => redis.tat(key).await?,
        };
        Ok(gcra.check(tat, now).decision)
    }

    /// Forgets `key` (e.g. failures of an account+IP after a successful
    /// login).
    pub async fn reset(&self, key: &str) -> Result<(), LimitError> {
        match self {
            Self::Memory(memory) => {
                memory.reset(key);
                Ok(())
            }
            Self::Redis(redis) => redis.reset(key).await,
        }
    }
}

/// What a rate of zero answers: never, and ask again after a window.
fn refused(rate: Rate) -> Decision {
    Decision::Limited {
        retry_after: rate.window,
    }
}

/// The longest window honoured (about 70 years). Keeps every sum of
/// milliseconds far below 2^53, where the doubles Lua computes with stop
/// being exact integers.
const MAX_WINDOW_MILLIS: u128 = 1 << 41;

/// A rate as both backends compute it, in whole milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gcra {
    /// One event refills every `interval`.
    interval: i64,
    /// How far ahead of now a TAT may be and the event still fit:
    /// `interval * limit`, so a full burst of `limit` always fits.
    tolerance: i64,
}

/// One event checked against a key's TAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Check {
    decision: Decision,
    /// The key's TAT once the event is counted; `None` when it is limited.
    tat: Option<i64>,
}

impl Gcra {
    /// `None` for a rate of zero, which nothing fits.
    fn of(rate: Rate) -> Option<Self> {
        if rate.limit == 0 {
            return None;
        }
        let window = rate
            .window
            .as_nanos()
            .div_ceil(1_000_000)
            .min(MAX_WINDOW_MILLIS);
        let limit = u128::from(rate.limit);
        let interval = window.div_ceil(limit).max(1);
        // Both at most 2^41 + 2^32: they fit, and stay exact as doubles.
        Some(Self {
            interval: i64::try_from(interval).expect("interval bounded by MAX_WINDOW_MILLIS"),
            tolerance: i64::try_from(interval * limit).expect("tolerance bounded"),
        })
    }

    /// One more event at `now` on a key whose TAT is `tat` (`None`: a key
    /// never seen, or forgotten). [`HIT_SCRIPT`] is the same computation.
    fn check(self, tat: Option<i64>, now: i64) -> Check {
        // A TAT in the past means a full burst, as if the key were new.
        let tat = tat.map_or(now, |tat| tat.max(now));
        let next = tat + self.interval;
        let wait = next - self.tolerance - now;
        if wait > 0 {
            return Check {
                decision: Decision::Limited {
                    retry_after: Duration::from_millis(wait.unsigned_abs()),
                },
                tat: None,
            };
        }
        // `next - now` is at least one interval and, when allowed, at most
        // the tolerance, so this is between 0 and limit - 1.
        let remaining = (self.tolerance - (next - now)) / self.interval;
        Check {
            decision: Decision::Allowed {
                remaining: u32::try_from(remaining).unwrap_or(0),
            },
            tat: Some(next),
        }
    }
}

/// Limits in process memory: a TAT per key.
///
/// Memory follows the number of active keys: a key whose TAT has passed holds
/// nothing a new key would not, and every 1024 hits a sweep drops all such
/// keys. Between sweeps at most that many stale keys can be added,
/// and each sweep costs one pass over the table, so the cost per hit stays
/// constant on average.
#[derive(Debug, Clone)]
pub struct MemoryLimiter {
    table: Arc<Mutex<Table>>,
    clock: SharedClock,
}

/// How many hits between two sweeps of the memory table.
const SWEEP_EVERY: u32 = 1024;

#[derive(Debug, Default)]
struct Table {
    /// TAT in milliseconds since the Unix epoch, per key.
    tats: HashMap<String, i64>,
    hits_since_sweep: u32,
}

impl MemoryLimiter {
    fn hit(&self, key: &str, gcra: Gcra) -> Decision {
        let now = self.now();
        let mut table = self.lock();
        let check = gcra.check(table.tats.get(key).copied(), now);
        if let Some(tat) = check.tat {
            table.tats.insert(key.to_owned(), tat);
        }
        table.hits_since_sweep += 1;
        if table.hits_since_sweep >= SWEEP_EVERY {
            table.hits_since_sweep = 0;
            table.tats.retain(|_, tat| *tat > now);
        }
        check.decision
    }

    /// The key's TAT, and now.
    fn tat(&self, key: &str) -> (Option<i64>, i64) {
        let now = self.now();
        (self.lock().tats.get(key).copied(), now)
    }

    fn reset(&self, key: &str) {
        self.lock().tats.remove(key);
    }

    fn now(&self) -> i64 {
        to_millis(self.clock.now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every change is one insert or remove, so a panic elsewhere cannot
        // leave the table half-updated.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Limits in Redis, shared by every instance: the TAT of a key is the string
/// value of `<prefix>limit:<key>`, expiring [`EXPIRY_MARGIN_MS`] after the
/// TAT passes (the expiry only collects garbage; the script compares with
/// our clock, so Redis's clock must never forget a key before ours would).
#[derive(Debug, Clone)]
pub struct RedisLimiter {
    connection: ConnectionManager,
    prefix: Arc<str>,
    clock: SharedClock,
}

/// How long a key outlives its TAT: Redis expires keys by its own clock,
/// which may run ahead of an instance's, and a hit can take longer than a
/// short rate's interval to arrive.
const EXPIRY_MARGIN_MS: u64 = 1000;

/// [`Gcra::check`] as one atomic step in Redis. KEYS[1]: the key. ARGV: now,
/// the interval, the tolerance and [`EXPIRY_MARGIN_MS`], in milliseconds. Returns `{1, remaining}`
/// or `{0, wait}`. Numbers are Lua doubles, exact below 2^53; they are written
/// with `%.0f` because Lua's own conversion would use an exponent.
const HIT_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - tolerance - now
if wait > 0 then return {0, wait} end
local ahead = new_tat - now
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', ahead + tonumber(ARGV[4])))
return {1, math.floor((tolerance - ahead) / interval)}
";

/// Loaded once per process; sent by hash, and in full after a Redis restart.
static HIT: LazyLock<Script> = LazyLock::new(|| Script::new(HIT_SCRIPT));

impl RedisLimiter {
    async fn hit(&self, key: &str, gcra: Gcra) -> Result<Decision, LimitError> {
        let now = self.now();
        let (allowed, value): (i64, i64) = HIT
            .key(self.key(key))
            .arg(now)
            .arg(gcra.interval)
            .arg(gcra.tolerance)
            .arg(EXPIRY_MARGIN_MS)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(if allowed == 1 {
            Decision::Allowed {
                remaining: u32::try_from(value).unwrap_or(0),
            }
        } else {
            Decision::Limited {
                retry_after: Duration::from_millis(value.unsigned_abs()),
            }
        })
    }

    /// The key's TAT, and now. A single GET is atomic already, and the
    /// decision is then the same function the memory backend uses.
    async fn tat(&self, key: &str) -> Result<(Option<i64>, i64), LimitError> {
        let now = self.now();
        let stored: Option<String> = redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut self.connection.clone())
            .await?;
        // Like the script, anything that is not a number counts as no state.
        Ok((stored.and_then(|tat| tat.parse().ok()), now))
    }

    async fn reset(&self, key: &str) -> Result<(), LimitError> {
        let () = redis::cmd("DEL")
            .arg(self.key(key))
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    fn key(&self, key: &str) -> String {
        format!("{}limit:{key}", self.prefix)
    }

    fn now(&self) -> i64 {
        to_millis(self.clock.now())
    }
}

#[cfg(test)]
mod tests {
    //! One conformance suite, run against each backend with a manual clock.
    //! Redis tests use the server at REDIS_URL (or the local default) and
    //! fail, never skip, when it is unreachable; each test works under a
    //! fresh prefix and deletes its keys afterwards, even when it fails.

    use std::{collections::BTreeSet, future::Future, sync::Arc};

    use super::*;
    use crate::infra::{
        clock::{Clock, ManualClock},
        redis_context::testing::{PrefixGuard, redis_url},
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
        backends: [memory_backend => on_memory, redis_backend => on_redis],
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
}
