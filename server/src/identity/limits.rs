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

use redis::Script;

use crate::infra::{
    clock::{SharedClock, to_millis},
    observe::ObservedRedis,
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
            return Ok(counted(key, refused(rate)));
        };
        let decision = match self {
            Self::Memory(memory) => memory.hit(key, gcra),
            Self::Redis(redis) => redis.hit(key, gcra).await?,
        };
        Ok(counted(key, decision))
    }

    /// Like `hit` but counts nothing: would one more event be allowed now?
    /// The answer is the one `hit` would give at this moment.
    pub async fn peek(&self, key: &str, rate: Rate) -> Result<Decision, LimitError> {
        let Some(gcra) = Gcra::of(rate) else {
            return Ok(counted(key, refused(rate)));
        };
        let (tat, now) = match self {
            Self::Memory(memory) => memory.tat(key),
            Self::Redis(redis) => redis.tat(key).await?,
        };
        Ok(counted(key, gcra.check(tat, now).decision))
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

/// Events a rate limit refused, by `limiter` (counter).
pub const RATE_LIMITED: &str = "slop_rate_limited_total";

/// Counts `decision` in [`RATE_LIMITED`] when it refuses.
fn counted(key: &str, decision: Decision) -> Decision {
    if let Decision::Limited { .. } = decision {
        metrics::counter!(RATE_LIMITED, "limiter" => limiter(key)).increment(1);
    }
    decision
}

/// Which limit a key belongs to, from its first parts (never the address,
/// account or recipient that follows).
fn limiter(key: &str) -> &'static str {
    const LIMITERS: [(&str, &str); 5] = [
        ("anonymous:", "anonymous_requests"),
        ("login-failures:", "login_failures"),
        ("mail-recipient:", "mail_per_recipient"),
        ("streams:ip:", "stream_connections_per_ip"),
        ("streams:user:", "stream_connections_per_user"),
    ];
    LIMITERS
        .into_iter()
        .find(|(prefix, _)| key.starts_with(prefix))
        .map_or("other", |(_, name)| name)
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
/// value of `<prefix>limit:<key>`, expiring `EXPIRY_MARGIN_MS` after the
/// TAT passes (the expiry only collects garbage; the script compares with
/// our clock, so Redis's clock must never forget a key before ours would).
#[derive(Debug, Clone)]
pub struct RedisLimiter {
    connection: ObservedRedis,
    prefix: Arc<str>,
    clock: SharedClock,
}

/// How long a key outlives its TAT: Redis expires keys by its own clock,
/// which may run ahead of an instance's, and a hit can take longer than a
/// short rate's interval to arrive.
const EXPIRY_MARGIN_MS: u64 = 1000;

/// [`Gcra::check`] as one atomic step in Redis. KEYS[1]: the key. ARGV: now,
/// the interval, the tolerance and [`EXPIRY_MARGIN_MS`], in milliseconds.
/// Returns `{1, remaining}` or `{0, wait}`. Numbers are Lua doubles, exact
/// below 2^53; they are written with `%.0f` because Lua's own conversion
/// would use an exponent.
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
mod tests;
