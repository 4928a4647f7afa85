//! Where Redis is, and the commands connection to it: one server
//! (REDIS_URL), a Redis Cluster (REDIS_CLUSTER_NODES) reached through
//! redis-rs's cluster client, which keeps a connection per node, routes
//! each command by the slot of its first key, follows MOVED and ASK, and
//! refreshes the slot map when a node fails, or a primary watched by Redis
//! Sentinel (REDIS_SENTINELS, REDIS_SENTINEL_MASTER), whose address the
//! Sentinels are asked for. Stores see one [`Commands`] either way.
//!
//! On a cluster a command that fails during a failover is retried (with
//! backoff, the slot map refreshed) for at most [`TIMEOUT`] in all, then
//! fails; the stores answer UNAVAILABLE, never hang.
//!
//! Under Sentinel there is one multiplexed connection to the primary
//! ([`SentinelPrimary`]). A command that fails in a way that says the
//! primary moved or died (the connection dropped or refused, `READONLY`
//! from a primary demoted to replica, `MASTERDOWN`, no answer in time)
//! fails, and drops the connection, so the next command asks the
//! Sentinels again and finds the new primary once they have promoted one.
//! So does a failover the Sentinels announce ([`Sentinels::named`]): a
//! primary replaced on request stays writable for seconds without telling
//! its clients. Commands are not retried: a script may have run before its
//! answer was lost. Asking the Sentinels and the command together take at
//! most [`TIMEOUT`].

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use redis::{
    Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, MultiplexedConnection},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};
use tokio::{sync::OnceCell, time::Instant};

pub use super::redis_sentinel::Sentinels;
use super::{config::Secret, redis_context::TIMEOUT};

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One Redis server (its primary, when it has replicas): REDIS_URL.
    Standalone(String),
    /// A Redis Cluster, by the URLs of some of its nodes (any will do to
    /// find the rest): REDIS_CLUSTER_NODES.
    Cluster(Vec<String>),
    /// A primary (and its replicas) watched by Redis Sentinel.
    Sentinel {
        /// The Sentinels' URLs (`redis://host:port`, or all `rediss://`):
        /// REDIS_SENTINELS.
        sentinels: Vec<String>,
        /// The name the Sentinels know the primary by:
        /// REDIS_SENTINEL_MASTER.
        master: String,
        /// The Sentinels' own password, when it is not the primary's:
        /// REDIS_SENTINEL_PASSWORD.
        password: Option<Secret>,
    },
}

impl Topology {
    /// The URLs given: the server, the cluster's seed nodes, or the
    /// Sentinels.
    pub fn urls(&self) -> &[String] {
        match self {
            Self::Standalone(url) => std::slice::from_ref(url),
            Self::Cluster(nodes) => nodes,
            Self::Sentinel { sentinels, .. } => sentinels,
        }
    }

    /// `standalone`, `cluster` or `sentinel`, for health and logs.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Standalone(_) => "standalone",
            Self::Cluster(_) => "cluster",
            Self::Sentinel { .. } => "sentinel",
        }
    }

    /// The variable that set it, for messages.
    pub fn variable(&self) -> &'static str {
        match self {
            Self::Standalone(_) => "REDIS_URL",
            Self::Cluster(_) => "REDIS_CLUSTER_NODES",
            Self::Sentinel { .. } => "REDIS_SENTINELS",
        }
    }
}

/// The commands connection of an instance: a cheap clone.
#[derive(Clone)]
pub enum Commands {
    /// To one server, reconnecting by itself.
    Standalone(ConnectionManager),
    /// To every node of a cluster, made on first use.
    Cluster(LazyCluster),
    /// To the primary the Sentinels name, made on first use and again
    /// after it moved or died.
    Sentinel(SentinelPrimary),
}

impl Commands {
    /// `WAIT 1 <timeout>` on the primary of `key`'s slot: how many
    /// replicas have every write this connection sent it so far (0 when
    /// none confirmed within `timeout`). On a cluster it goes to that one
    /// primary (redis-rs would send a bare WAIT to every primary).
    pub async fn wait_for_replica(
        &mut self,
        key: &str,
        timeout: std::time::Duration,
    ) -> redis::RedisResult<i64> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(1).arg(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        match self {
            Self::Standalone(_) | Self::Sentinel(_) => wait.query_async(self).await,
            Self::Cluster(cluster) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(key, SlotAddr::Master);
                let value = cluster
                    .connection()
                    .await?
                    .route_command(
                        wait,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                Ok(redis::from_redis_value(value)?)
            }
        }
    }
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::Standalone(_) => "Commands::Standalone",
            Self::Cluster(_) => "Commands::Cluster",
            Self::Sentinel(_) => "Commands::Sentinel",
        })
    }
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(connection) => connection.req_packed_command(cmd),
            Self::Cluster(cluster) => Box::pin(async move {
                let mut connection = cluster.connection().await?;
                connection.req_packed_command(cmd).await
            }),
            Self::Sentinel(primary) => Box::pin(async move {
                let deadline = Instant::now() + TIMEOUT;
                let mut current = primary.current(deadline).await?;
                let answer = within(deadline, current.connection.req_packed_command(cmd)).await;
                primary.answered(&current, &answer);
                answer
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(cluster) => Box::pin(async move {
                let mut connection = cluster.connection().await?;
                connection
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }),
            Self::Sentinel(primary) => Box::pin(async move {
                let deadline = Instant::now() + TIMEOUT;
                let mut current = primary.current(deadline).await?;
                let answer = within(
                    deadline,
                    current
                        .connection
                        .req_packed_commands(pipeline, offset, count),
                )
                .await;
                primary.answered(&current, &answer);
                answer
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(connection) => connection.get_db(),
            Self::Cluster(_) | Self::Sentinel(_) => 0,
        }
    }
}

/// A cluster connection made on first use, and again on the next use after
/// making it failed (no node answered), so an instance can start before
/// its cluster does.
#[derive(Clone)]
pub struct LazyCluster {
    client: Arc<ClusterClient>,
    connection: Arc<OnceCell<ClusterConnection>>,
}

impl LazyCluster {
    /// Commands to the cluster of `nodes` (`redis://` or `rediss://` URLs,
    /// with `certificates` for the latter when given).
    pub fn new(
        nodes: &[String],
        certificates: Option<&redis::TlsCertificates>,
    ) -> redis::RedisResult<Self> {
        let mut builder =
            redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                .connection_timeout(TIMEOUT)
                .response_timeout(TIMEOUT)
                // Retries (a failover, a slot moving) end within TIMEOUT.
                .overall_response_timeout(Some(TIMEOUT))
                .retries(5)
                .min_retry_wait(50)
                .max_retry_wait(500);
        if let Some(certificates) = certificates {
            builder = builder.certs(certificates.clone());
        }
        Ok(Self {
            client: Arc::new(builder.build()?),
            connection: Arc::new(OnceCell::new()),
        })
    }

    /// The connection, made now if it is not yet (within [`TIMEOUT`]).
    async fn connection(&self) -> redis::RedisResult<ClusterConnection> {
        self.connection
            .get_or_try_init(|| async {
                tokio::time::timeout(TIMEOUT, self.client.get_async_connection())
                    .await
                    .map_err(|_| timed_out("no node of the Redis Cluster answered in time"))?
            })
            .await
            .cloned()
    }
}

/// The commands connection to the primary the Sentinels name: one
/// multiplexed connection, made on first use, and again on the next use
/// after a failure that says the primary moved or died, or after the
/// Sentinels named another primary (asked for the pub/sub connection). A
/// cheap clone.
#[derive(Clone)]
pub struct SentinelPrimary {
    sentinels: Sentinels,
    /// The connection's name in `CLIENT LIST`.
    name: Arc<str>,
    current: Arc<Mutex<Option<Current>>>,
    /// Held while asking the Sentinels and connecting, so that callers
    /// waiting for a connection share one instead of making one each.
    connecting: Arc<tokio::sync::Mutex<()>>,
    /// How many connections were made, to number the next.
    made: Arc<AtomicU64>,
}

/// The connection to the primary, numbered so a failure drops only the
/// connection it happened on.
#[derive(Clone)]
struct Current {
    connection: MultiplexedConnection,
    number: u64,
    /// The primary's `host:port`.
    address: String,
}

impl SentinelPrimary {
    /// Commands to the primary `sentinels` name, the connection named
    /// `name` in `CLIENT LIST`.
    pub fn new(sentinels: Sentinels, name: &str) -> Self {
        Self {
            sentinels,
            name: name.into(),
            current: Arc::new(Mutex::new(None)),
            connecting: Arc::new(tokio::sync::Mutex::new(())),
            made: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The Sentinels asked.
    pub fn sentinels(&self) -> &Sentinels {
        &self.sentinels
    }

    /// Drops the connection, so the next command asks the Sentinels again
    /// (readiness found the node no longer a primary).
    pub fn forget(&self) {
        *self.lock() = None;
    }

    /// The connection, made by `deadline` when there is none, or when the
    /// Sentinels (asked for the pub/sub connection) have named another
    /// primary since it was made.
    async fn current(&self, deadline: Instant) -> RedisResult<Current> {
        if let Some(current) = self.usable() {
            return Ok(current);
        }
        tokio::time::timeout_at(deadline, self.connect())
            .await
            .map_err(|_| timed_out("no Sentinel named a primary that answered in time"))?
    }

    /// Asks the Sentinels and connects to the primary they name, unless a
    /// caller that held the turn before did.
    async fn connect(&self) -> RedisResult<Current> {
        let _turn = self.connecting.lock().await;
        if let Some(current) = self.usable() {
            return Ok(current);
        }
        let client = self.sentinels.ask().await?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // The name only helps operators (and tests) find the connection.
        let named: RedisResult<()> = super::redis_context::set_name(&self.name)
            .query_async(&mut connection)
            .await;
        if let Err(error) = named {
            tracing::debug!(%error, "could not name the commands connection");
        }
        tracing::info!(
            master = %self.sentinels.master(),
            primary = %client.get_connection_info().addr(),
            "Redis commands connection to the primary the Sentinels name"
        );
        let current = Current {
            connection,
            number: self.made.fetch_add(1, Ordering::Relaxed),
            address: client.get_connection_info().addr().to_string(),
        };
        *self.lock() = Some(current.clone());
        Ok(current)
    }

    /// After a command on `current`: when it failed in a way that says the
    /// primary moved or died, drops that connection (not one made since).
    fn answered<T>(&self, current: &Current, answer: &RedisResult<T>) {
        let Err(error) = answer else {
            return;
        };
        if !primary_lost(error) {
            return;
        }
        let mut slot = self.lock();
        if slot
            .as_ref()
            .is_some_and(|now| now.number == current.number)
        {
            tracing::warn!(%error, "Redis primary lost; asking the Sentinels again on the next command");
            *slot = None;
        }
    }

    /// The connection, unless there is none or the Sentinels named
    /// another primary since it was made (then it is dropped).
    fn usable(&self) -> Option<Current> {
        let named = self.sentinels.named().borrow().clone();
        let mut slot = self.lock();
        if let Some(current) = &*slot
            && named.is_some_and(|named| named != current.address)
        {
            *slot = None;
        }
        slot.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether a command's failure says the node is not (or no longer) the
/// primary: the connection dropped or refused, no answer in time,
/// `READONLY` (a replica now), `MASTERDOWN` (a replica cut off from its
/// primary), `LOADING` (restarted).
fn primary_lost(error: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::ReadOnly
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
            )
        )
}

/// `answer`, or a timeout error when it is not there by `deadline`.
async fn within<T>(
    deadline: Instant,
    answer: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    tokio::time::timeout_at(deadline, answer)
        .await
        .unwrap_or_else(|_| Err(timed_out("the Redis primary did not answer in time")))
}

/// A timeout error (one that [`primary_lost`] and the stores count as
/// Redis unavailable).
pub(super) fn timed_out(what: &'static str) -> RedisError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failures_that_say_the_primary_moved_drop_the_connection() {
        let server = |code: &str| {
            redis::parse_redis_value(format!("-{code} details\r\n").as_bytes())
                .and_then(redis::Value::extract_error)
                .unwrap_err()
        };
        assert!(primary_lost(&server("READONLY")));
        assert!(primary_lost(&server("MASTERDOWN")));
        assert!(primary_lost(&server("LOADING")));
        assert!(primary_lost(&timed_out("slow")));
        let dropped: RedisError =
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "gone").into();
        assert!(primary_lost(&dropped));
        // A script's own error, a wrong type: the primary is fine.
        assert!(!primary_lost(&server("ERR")));
        assert!(!primary_lost(&server("WRONGTYPE")));
        assert!(!primary_lost(&server("NOSCRIPT")));
    }
}
