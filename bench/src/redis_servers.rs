//! Redis of the benchmark's own: one `redis-server`, or a Redis Cluster of
//! three primaries with a replica each, on free loopback ports, stopped
//! (by process id) when dropped, a panic included. Its CPU and command
//! counts are then the run's alone ([`crate::redis_info`]), which those of
//! a Redis shared with other work are not.
//!
//! The processes are started by the server's own test harness
//! (`server/src/infra/cluster_testing.rs` and `redis_processes.rs`,
//! included as they are, as `server/tests/cluster.rs` does): the bench's
//! cluster is the one the server's cluster tests run on. The harness is
//! synchronous and panics when it cannot start a node; here it runs on a
//! blocking thread and its panic becomes an error.

use std::{collections::HashSet, process::Command};

#[path = "../../server/src/infra/cluster_testing.rs"]
mod cluster_testing;
#[path = "../../server/src/infra/redis_processes.rs"]
mod redis_processes;

/// Runs `start` (a harness call that panics on failure) on a blocking
/// thread; its panic message as the error.
async fn start_blocking<T: Send + 'static>(
    what: &str,
    start: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(start).await.map_err(|error| {
        let why = if error.is_panic() {
            let panic = error.into_panic();
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".into())
        } else {
            error.to_string()
        };
        format!("cannot start {what}: {why}")
    })
}

/// One `redis-server` of the benchmark's own, configured as the cluster's
/// nodes are (no persistence), without cluster mode.
pub struct OwnRedis {
    process: redis_processes::Process,
    dir: std::path::PathBuf,
}

impl OwnRedis {
    /// Starts it on a free loopback port.
    pub async fn start() -> Result<Self, String> {
        let (process, dir) = start_blocking("a redis-server", || {
            let dir = redis_processes::scratch("bench-redis");
            let process =
                redis_processes::start_process(&mut HashSet::new(), false, "bench", |port| {
                    let mut command = Command::new("redis-server");
                    command
                        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                        .arg("--dir")
                        .arg(&dir);
                    command
                });
            (process, dir)
        })
        .await?;
        Ok(Self { process, dir })
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.process.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of the benchmark's own: three primaries, the 16384
/// slots in three even ranges, each with one replica.
pub struct OwnCluster {
    cluster: cluster_testing::RedisCluster,
}

impl OwnCluster {
    /// Starts the six nodes and waits until the cluster is ready (about
    /// 3 s).
    pub async fn start() -> Result<Self, String> {
        let cluster =
            start_blocking("a Redis Cluster", cluster_testing::RedisCluster::start).await?;
        Ok(Self { cluster })
    }

    /// The value of REDIS_CLUSTER_NODES: every node.
    pub fn nodes_variable(&self) -> String {
        self.cluster.nodes_variable()
    }

    /// Every node as (`primary 127.0.0.1:PORT` or `replica …`, its URL),
    /// primaries first.
    pub fn nodes(&self) -> Vec<(String, String)> {
        let primaries = self.cluster.primaries();
        let mut nodes: Vec<(String, String)> = self
            .cluster
            .urls()
            .into_iter()
            .map(|url| {
                let address = url.trim_start_matches("redis://").to_owned();
                let port = address.rsplit(':').next().and_then(|p| p.parse().ok());
                let role = if port.is_some_and(|port| primaries.contains(&port)) {
                    "primary"
                } else {
                    "replica"
                };
                (format!("{role} {address}"), url)
            })
            .collect();
        nodes.sort_by_key(|(name, _)| !name.starts_with("primary"));
        nodes
    }

    /// How many of `keys` each primary serves now, as the live cluster
    /// says (`CLUSTER KEYSLOT`, `CLUSTER NODES`): (port, count), by port,
    /// every primary listed.
    pub async fn keys_per_primary(&self, keys: Vec<String>) -> Result<Vec<(u16, usize)>, String> {
        let cluster = &self.cluster;
        // The harness's calls are synchronous and quick (a blocking thread
        // would need the cluster to be 'static), and panic when the
        // cluster has no live primary for a slot.
        let count = || {
            let mut counts: Vec<(u16, usize)> = cluster
                .primaries()
                .into_iter()
                .map(|port| (port, 0))
                .collect();
            for key in &keys {
                let port = cluster.primary_for(key);
                let (_, count) = counts
                    .iter_mut()
                    .find(|(primary, _)| *primary == port)
                    .ok_or_else(|| format!("{key} is on {port}, not a primary"))?;
                *count += 1;
            }
            Ok(counts)
        };
        tokio::task::block_in_place(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(count))
                .map_err(|_| "the cluster has no live primary for a topic's slot".to_owned())?
        })
    }
}
