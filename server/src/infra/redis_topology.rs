//! Where Redis is, and the commands connection to it: one server
//! (REDIS_URL), or a Redis Cluster (REDIS_CLUSTER_NODES) reached through
//! redis-rs's cluster client, which keeps a connection per node, routes
//! each command by the slot of its first key, follows MOVED and ASK, and
//! refreshes the slot map when a node fails. Stores see one
//! [`Commands`] either way.
//!
//! On a cluster a command that fails during a failover is retried (with
//! backoff, the slot map refreshed) for at most [`TIMEOUT`] in all, then
//! fails; the stores answer UNAVAILABLE, never hang.

use std::sync::Arc;

use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};
use tokio::sync::OnceCell;

use super::redis_context::TIMEOUT;

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One Redis server (its primary, when it has replicas): REDIS_URL.
    Standalone(String),
    /// A Redis Cluster, by the URLs of some of its nodes (any will do to
    /// find the rest): REDIS_CLUSTER_NODES.
    Cluster(Vec<String>),
}

impl Topology {
    /// The URLs given: the server, or the cluster's seed nodes.
    pub fn urls(&self) -> &[String] {
        match self {
            Self::Standalone(url) => std::slice::from_ref(url),
            Self::Cluster(nodes) => nodes,
        }
    }

    /// `standalone` or `cluster`, for health and logs.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Standalone(_) => "standalone",
            Self::Cluster(_) => "cluster",
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
            Self::Standalone(connection) => wait.query_async(connection).await,
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(connection) => connection.get_db(),
            Self::Cluster(_) => 0,
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
                    .map_err(|_| {
                        redis::RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no node of the Redis Cluster answered in time",
                        ))
                    })?
            })
            .await
            .cloned()
    }
}
