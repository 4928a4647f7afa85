//! What every layer stands on: the configuration, the clock, and Redis.
//!
//! - [`config`]: the typed configuration (flags, environment, `.env`).
//! - [`clock`]: the time every expiry reads, so tests can move it.
//! - [`redis_context`]: the one Redis context of an instance (commands
//!   connection, key prefix, clock), handed to every store.
//! - [`redis_topology`]: where Redis is (one server, a cluster, or a
//!   primary watched by Sentinel) and the commands connection to it.
//! - [`redis_sentinel`]: the Sentinels, asked where the primary is and
//!   listened to for failovers.
//! - [`redis_health`]: Redis's mode and nodes, as `/health` shows them.
//! - [`pubsub`]: its one pub/sub connection and the loop that keeps it.
//! - [`sharded_pubsub`]: on a Redis Cluster, the channel streams'
//!   subscriptions, each on the primary of its slot (`SSUBSCRIBE`).
//! - [`tls`]: TLS to Redis and PostgreSQL: the ring crypto provider, the
//!   REDIS_TLS_* files, and a refused certificate told from an outage.
//! - [`observe`]: the time, failures and span of every store call and
//!   password hash (metrics and traces).
//! - `conformance` (tests only): the one macro that runs every backend
//!   conformance suite.
//! - `cluster_testing` (tests only): a Redis Cluster of a test's own.
//! - `sentinel_testing` (tests only): a primary, its replica and three
//!   Sentinels of a test's own.

pub mod clock;
#[cfg(test)]
pub(crate) mod cluster_testing;
pub mod config;
#[cfg(test)]
pub(crate) mod conformance;
pub mod observe;
pub mod pubsub;
pub mod redis_context;
pub mod redis_health;
#[cfg(test)]
pub(crate) mod redis_processes;
pub mod redis_sentinel;
pub mod redis_topology;
#[cfg(test)]
pub(crate) mod sentinel_testing;
pub mod sharded_pubsub;
pub mod tls;
