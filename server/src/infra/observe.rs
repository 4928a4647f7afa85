//! What a store call costs: one place that times every Redis command and
//! SQL statement, counts the ones that fail, and, when traces are exported,
//! runs each in a `tracing` span (`redis` or `sql`, with `db.system` and
//! `db.operation`), so the metrics and the traces of store calls come from
//! the same choke points:
//! [`ObservedRedis`] (the commands connection every Redis store is handed)
//! and the [`StoreCalls`] of the account store's one bounded-operation
//! helper.
//! The password hash, the other costly step, is observed here too
//! ([`password_hash`], [`HashQueue`]).
//!
//! Metric names are in docs/metrics.md; labels are static strings from a
//! closed set, so a scrape's size does not grow with the traffic.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::Instant,
};

use metrics::Histogram;
use redis::{Cmd, Pipeline, RedisFuture, Value, aio::ConnectionLike};
use tracing::Instrument as _;

use super::redis_topology::Commands;

/// Latency of store calls, by `store` and `operation` (histogram, seconds).
pub const STORE_DURATION: &str = "slop_store_duration_seconds";
/// Store calls that failed, by `store` and `operation` (counter).
pub const STORE_ERRORS: &str = "slop_store_errors_total";
/// Time one argon2 hash or verification took on its thread (histogram,
/// seconds).
pub const PASSWORD_HASH_DURATION: &str = "slop_password_hash_duration_seconds";
/// Hashes and verifications waiting for a hashing thread (gauge).
pub const PASSWORD_HASH_QUEUE: &str = "slop_password_hash_queue_depth";

/// The stores whose calls are observed (the `store` label, and the span's
/// `db.system`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// Sessions, limits and channel streams in Redis.
    Redis,
    /// Accounts in SQLite.
    Sqlite,
    /// Accounts in PostgreSQL.
    Postgres,
}

impl Store {
    /// The label value, as OpenTelemetry spells `db.system`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgresql",
        }
    }
}

/// The calls to one store, observed: each operation's [`STORE_DURATION`]
/// series is registered on its first call and held, so later calls record
/// into it with no look-up in the recorder (building the series' key and
/// finding it in the registry on every call was 1.5 % of an authenticated
/// REST call's CPU). Like `counter!()`, a series registers with the
/// recorder in force at its first call.
#[derive(Debug)]
pub struct StoreCalls {
    store: Store,
    durations: RwLock<HashMap<&'static str, Histogram>>,
}

impl StoreCalls {
    /// Observes calls to `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            durations: RwLock::default(),
        }
    }

    /// Runs one call: timed into [`STORE_DURATION`], counted in
    /// [`STORE_ERRORS`] when `failed` says its error is one, and, when
    /// traces are exported, in a span named after the kind of store.
    pub async fn call<T, E>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, E>>,
        failed: impl FnOnce(&E) -> bool,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = traced(self.store, operation, call).await;
        self.duration(operation)
            .record(started.elapsed().as_secs_f64());
        if let Err(error) = &result
            && failed(error)
        {
            let labels = [("store", self.store.as_str()), ("operation", operation)];
            metrics::counter!(STORE_ERRORS, &labels).increment(1);
        }
        result
    }

    /// The held series of `operation`, registered if this is its first
    /// call.
    fn duration(&self, operation: &'static str) -> Histogram {
        let held = self
            .durations
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(operation)
            .cloned();
        held.unwrap_or_else(|| {
            self.durations
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(operation)
                .or_insert_with(|| {
                    let labels = [("store", self.store.as_str()), ("operation", operation)];
                    metrics::histogram!(STORE_DURATION, &labels)
                })
                .clone()
        })
    }
}

/// `call`, in a span of its kind of store when traces are exported.
async fn traced<T>(store: Store, operation: &'static str, call: impl Future<Output = T>) -> T {
    // The span exists for traces only (nothing logs inside a store call):
    // made when they are exported, it costs a request a few per cent of
    // its CPU otherwise (BENCHMARKS.md, issue #13).
    if crate::transport::traces::exporting() {
        // The span name must be a literal: one per kind of store.
        let span = match store {
            Store::Redis => {
                tracing::info_span!(
                    "redis",
                    db.system = store.as_str(),
                    db.operation = operation
                )
            }
            Store::Sqlite | Store::Postgres => {
                tracing::info_span!("sql", db.system = store.as_str(), db.operation = operation)
            }
        };
        call.instrument(span).await
    } else {
        call.await
    }
}

/// The instance's Redis commands connection, with every command and
/// pipeline observed ([`StoreCalls`]). A cheap clone, like the connection
/// it wraps; clones share the held series.
#[derive(Debug, Clone)]
pub struct ObservedRedis {
    connection: Commands,
    calls: Arc<StoreCalls>,
}

impl ObservedRedis {
    /// Observes the calls made on `connection`.
    pub fn new(connection: Commands) -> Self {
        Self {
            connection,
            calls: Arc::new(StoreCalls::new(Store::Redis)),
        }
    }
}

impl ObservedRedis {
    /// [`Commands::wait_for_replica`], observed as `WAIT`.
    pub async fn wait_for_replica(
        &mut self,
        key: &str,
        timeout: std::time::Duration,
    ) -> redis::RedisResult<i64> {
        self.calls
            .call(
                "WAIT",
                self.connection.wait_for_replica(key, timeout),
                is_redis_failure,
            )
            .await
    }
}

impl ConnectionLike for ObservedRedis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let operation = redis_operation(cmd);
        Box::pin(self.calls.call(
            operation,
            self.connection.req_packed_command(cmd),
            is_redis_failure,
        ))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(self.calls.call(
            "PIPELINE",
            self.connection.req_packed_commands(pipeline, offset, count),
            is_redis_failure,
        ))
    }

    fn get_db(&self) -> i64 {
        self.connection.get_db()
    }
}

/// NOSCRIPT is how a script is loaded the first time (redis-rs then sends
/// it whole), not a failure of Redis.
fn is_redis_failure(error: &redis::RedisError) -> bool {
    !matches!(
        error.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
    )
}

/// The command's name as a label: the ones the stores send, by name, any
/// other as `OTHER` (so a label never carries a key or an argument).
fn redis_operation(cmd: &Cmd) -> &'static str {
    const KNOWN: [&str; 23] = [
        "EVALSHA",
        "EVAL",
        "GET",
        "SET",
        "DEL",
        "EXISTS",
        "EXPIRE",
        "PEXPIRE",
        "PING",
        "SCRIPT",
        "XADD",
        "XRANGE",
        "XREVRANGE",
        "HGET",
        "HSET",
        "HGETALL",
        "PUBLISH",
        "SCAN",
        "MGET",
        "CLIENT",
        "ZRANGE",
        "SMEMBERS",
        "WAIT",
    ];
    let Some(redis::Arg::Simple(name)) = cmd.args_iter().next() else {
        return "OTHER";
    };
    KNOWN
        .into_iter()
        .find(|known| known.as_bytes().eq_ignore_ascii_case(name))
        .unwrap_or("OTHER")
}

/// Runs a password hash or verification (`job`, already queued) in a
/// `password_hash` span.
pub async fn password_hash<T>(job: impl Future<Output = T>) -> T {
    job.instrument(tracing::info_span!("password_hash")).await
}

/// One hash waiting in the hashing queue, counted in
/// [`PASSWORD_HASH_QUEUE`] from when it is queued until a thread takes it
/// (or it is dropped untaken). [`HashQueue::started`] then times the hash.
pub struct HashQueue {
    waiting: bool,
}

impl HashQueue {
    /// A hash joins the queue.
    pub fn join() -> Self {
        metrics::gauge!(PASSWORD_HASH_QUEUE).increment(1.0);
        Self { waiting: true }
    }

    /// A thread took it: it leaves the queue; the returned guard records
    /// the hash's time into [`PASSWORD_HASH_DURATION`] when dropped.
    pub fn started(mut self) -> HashTimer {
        self.leave();
        HashTimer(Instant::now())
    }

    fn leave(&mut self) {
        if std::mem::take(&mut self.waiting) {
            metrics::gauge!(PASSWORD_HASH_QUEUE).decrement(1.0);
        }
    }
}

impl Drop for HashQueue {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Times one hash, from its start on a hashing thread to its drop.
pub struct HashTimer(Instant);

impl Drop for HashTimer {
    fn drop(&mut self) {
        metrics::histogram!(PASSWORD_HASH_DURATION).record(self.0.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `calls` record, rendered as Prometheus would scrape it while
    /// what they answer is still alive.
    fn recorded<T>(calls: impl Future<Output = T>) -> String {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let _alive = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(calls);
            handle.render()
        })
    }

    #[test]
    fn store_calls_are_timed_and_failures_counted_by_store_and_operation() {
        let text = recorded(async {
            let postgres = StoreCalls::new(Store::Postgres);
            let sqlite = StoreCalls::new(Store::Sqlite);
            let down: Result<(), &str> = postgres
                .call("account_by_id", async { Err("down") }, |_| true)
                .await;
            assert_eq!(down, Err("down"));
            let fine: Result<u8, &str> = postgres
                .call("account_by_id", async { Ok(7) }, |_| true)
                .await;
            assert_eq!(fine, Ok(7));
            // An error the caller says is an answer, not a failure.
            let taken: Result<(), &str> = sqlite
                .call("create_account", async { Err("taken") }, |_| false)
                .await;
            assert_eq!(taken, Err("taken"));
        });
        assert!(
            text.contains(
                r#"slop_store_errors_total{store="postgresql",operation="account_by_id"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"slop_store_duration_seconds_count{store="postgresql",operation="account_by_id"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"slop_store_duration_seconds_count{store="sqlite",operation="create_account"} 1"#
            ),
            "{text}"
        );
        assert!(!text.contains(r#"errors_total{store="sqlite""#), "{text}");
    }

    #[test]
    fn the_hash_queue_counts_waiting_hashes_and_times_started_ones() {
        let text = recorded(async {
            let waiting = HashQueue::join();
            let skipped = HashQueue::join();
            let started = HashQueue::join().started();
            drop(skipped);
            drop(started);
            drop(waiting);
            (HashQueue::join(), HashQueue::join().started())
        });
        assert!(
            text.contains("slop_password_hash_queue_depth 1\n"),
            "{text}"
        );
        // Only the one started and ended is timed.
        assert!(
            text.contains("slop_password_hash_duration_seconds_count 1\n"),
            "{text}"
        );
    }

    #[test]
    fn redis_operations_are_command_names_from_a_closed_set() {
        assert_eq!(redis_operation(redis::cmd("evalsha").arg("abc")), "EVALSHA");
        assert_eq!(redis_operation(&redis::cmd("GET")), "GET");
        // A command nobody listed, or one whose name is a user's data,
        // never becomes a label of its own.
        assert_eq!(redis_operation(redis::cmd("SETRANGE").arg("k")), "OTHER");
        assert_eq!(redis_operation(&redis::cmd("user@example.com")), "OTHER");
    }
}
