//! Redis Sentinel for tests: a primary and one replica (`redis-server` on
//! loopback ports of their own) watched by three Sentinels (`redis-server
//! <file> --sentinel`, each with a configuration file of its own, since a
//! Sentinel rewrites its file), quorum 2, a primary declared down after
//! 500 ms without an answer. Ready when [`RedisSentinels::start`] returns:
//! every Sentinel knows the primary, its replica and the two other
//! Sentinels, and the replica is in sync. [`RedisSentinels::kill_primary`]
//! kills the primary (SIGKILL) as a crash would,
//! [`RedisSentinels::freeze_primary`] stops it (SIGSTOP) as a partition
//! would (its connections stay open, nothing answers),
//! [`RedisSentinels::fail_over`] asks the Sentinels for a failover (the
//! primary lives on as a replica), and
//! [`RedisSentinels::wait_for_failover`] waits until the Sentinels name the
//! former replica instead. Every process is stopped by its id, and the
//! directory removed, when the harness is dropped.
//!
//! Written with `std` and the `redis` crate only, so that the binary's
//! tests (`server/tests/`) can include this very file (`#[path]`) too.

#![allow(dead_code)]

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use super::redis_processes::{Process, connect, scratch, start_process};

/// The name the Sentinels monitor the primary by (REDIS_SENTINEL_MASTER).
pub const MASTER: &str = "slop-primary";

/// How long a Sentinel may go without hearing from the primary before it
/// thinks it down (`down-after-milliseconds`).
pub const DOWN_AFTER: Duration = Duration::from_millis(500);

/// How long forming the set, or a failover, may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// A primary, its replica and three Sentinels of the test's own.
pub struct RedisSentinels {
    /// The data nodes: the primary at start, then its replica.
    nodes: Vec<Process>,
    sentinels: Vec<Process>,
    /// The port of the primary [`Self::kill_primary`] or
    /// [`Self::freeze_primary`] took away last.
    lost: Option<u16>,
    dir: PathBuf,
}

impl RedisSentinels {
    /// Starts the five processes and waits until the Sentinels know each
    /// other and both data nodes; panics (the test fails, it never skips)
    /// when `redis-server` cannot, saying why.
    pub fn start() -> Self {
        let dir = scratch("sentinel");
        let mut taken = HashSet::new();
        let primary = start_process(&mut taken, false, "Sentinel", |port| {
            data_node(&dir, port, None)
        });
        let replica = start_process(&mut taken, false, "Sentinel", |port| {
            data_node(&dir, port, Some(primary.port))
        });
        let sentinels = (0..3)
            .map(|_| {
                start_process(&mut taken, false, "Sentinel", |port| {
                    sentinel(&dir, port, primary.port)
                })
            })
            .collect();
        let set = Self {
            nodes: vec![primary, replica],
            sentinels,
            lost: None,
            dir,
        };
        set.wait_until_ready();
        set
    }

    /// The Sentinels as `redis://127.0.0.1:PORT` URLs.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|sentinel| format!("redis://127.0.0.1:{}", sentinel.port))
            .collect()
    }

    /// The value of REDIS_SENTINELS for this set: every Sentinel, as
    /// `host:port`.
    pub fn sentinels_variable(&self) -> String {
        self.sentinels
            .iter()
            .map(|sentinel| format!("127.0.0.1:{}", sentinel.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the primary a Sentinel names now.
    pub fn primary(&self) -> u16 {
        self.named_primaries()
            .into_iter()
            .next()
            .expect("a Sentinel that names the primary")
    }

    /// The ports of the data nodes, the primary at start first.
    pub fn data_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// Kills the primary the Sentinels name with SIGKILL (no goodbye), as a
    /// crash would, and returns its port.
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary();
        self.node(port).kill();
        self.lost = Some(port);
        port
    }

    /// Stops the primary the Sentinels name with SIGSTOP, as a network
    /// partition would look from here: its connections stay open and
    /// nothing answers on them. Returns its port; it stays stopped until
    /// the set is dropped (SIGKILL ends a stopped process too).
    pub fn freeze_primary(&mut self) -> u16 {
        let port = self.primary();
        let pid = self.node(port).child.id();
        let stopped = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .expect("the kill command");
        assert!(stopped.success(), "SIGSTOP to redis-server {pid}");
        self.lost = Some(port);
        port
    }

    /// Asks a Sentinel to fail the primary over (`SENTINEL FAILOVER`):
    /// the replica is promoted and the primary, alive, made its replica.
    /// Returns the former primary's port.
    pub fn fail_over(&mut self) -> u16 {
        let port = self.primary();
        let mut sentinel = connect(self.sentinels[0].port).expect("a Sentinel");
        let () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER)
            .query(&mut sentinel)
            .expect("SENTINEL FAILOVER");
        self.lost = Some(port);
        port
    }

    /// Stops the Sentinel `index` (of [`Self::sentinel_urls`]) with
    /// SIGSTOP: its connections stay open and it answers nothing, until
    /// [`Self::resume_sentinel`] (or the set is dropped).
    pub fn pause_sentinel(&self, index: usize) {
        self.signal_sentinel(index, "-STOP");
    }

    /// Lets a paused Sentinel run again (SIGCONT).
    pub fn resume_sentinel(&self, index: usize) {
        self.signal_sentinel(index, "-CONT");
    }

    fn signal_sentinel(&self, index: usize, signal: &str) {
        let pid = self.sentinels[index].child.id();
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("the kill command");
        assert!(sent.success(), "kill {signal} of Sentinel {pid}");
    }

    fn node(&mut self, port: u16) -> &mut Process {
        self.nodes
            .iter_mut()
            .find(|node| node.port == port)
            .unwrap_or_else(|| panic!("the Sentinels name port {port}, not a node of this set"))
    }

    /// Waits until every Sentinel names as primary a node other than the
    /// one [`Self::kill_primary`], [`Self::freeze_primary`] or
    /// [`Self::fail_over`] took away, and that node says it is a primary;
    /// returns its port.
    pub fn wait_for_failover(&self) -> u16 {
        let former = self
            .lost
            .expect("kill_primary, freeze_primary or fail_over first");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let named: HashSet<u16> = self.named_primaries().into_iter().collect();
            if named.len() == 1
                && let Some(&port) = named.iter().next()
                && port != former
                && self
                    .sentinels
                    .iter()
                    .all(|sentinel| connect(sentinel.port).is_some())
                && connect(port)
                    .is_some_and(|mut node| role(&mut node).as_deref() == Some("master"))
            {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no failover after {PATIENCE:?}: the Sentinels name {named:?} (lost {former})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The primary every Sentinel names, each once, in no order.
    fn named_primaries(&self) -> Vec<u16> {
        self.sentinels
            .iter()
            .filter_map(|sentinel| {
                let mut connection = connect(sentinel.port)?;
                let (_host, port): (String, u16) = redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(MASTER)
                    .query(&mut connection)
                    .ok()?;
                Some(port)
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect()
    }

    /// Waits until the replica is in sync and every Sentinel sees the
    /// primary up, with its replica and the two other Sentinels.
    fn wait_until_ready(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let synced = connect(self.nodes[1].port).is_some_and(|mut replica| {
                info_field(&mut replica, "master_link_status").as_deref() == Some("up")
            });
            let known = self.sentinels.iter().all(|sentinel| {
                let Some(mut connection) = connect(sentinel.port) else {
                    return false;
                };
                let master: HashMap<String, String> = redis::cmd("SENTINEL")
                    .arg("MASTER")
                    .arg(MASTER)
                    .query(&mut connection)
                    .unwrap_or_default();
                let field = |name: &str| master.get(name).map(String::as_str);
                field("flags") == Some("master")
                    && field("num-slaves") == Some("1")
                    && field("num-other-sentinels") == Some("2")
            });
            if synced && known {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Sentinels are not ready after {PATIENCE:?} (replica in sync: {synced})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for process in self.sentinels.iter_mut().chain(self.nodes.iter_mut()) {
            process.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A data node on `port`: the primary, or a replica of the primary on
/// `primary`.
fn data_node(dir: &Path, port: u16, primary: Option<u16>) -> Command {
    let node_dir = dir.join(port.to_string());
    std::fs::create_dir_all(&node_dir).expect("a node directory");
    let mut command = Command::new("redis-server");
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        // A replica's first sync at once, not after the default 5 s.
        .args(["--repl-diskless-sync-delay", "0"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(&node_dir);
    if let Some(primary) = primary {
        command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
    }
    command
}

/// A Sentinel on `port` watching the primary on `primary`, from a
/// configuration file of its own (a Sentinel needs one it can rewrite).
fn sentinel(dir: &Path, port: u16, primary: u16) -> Command {
    let file = dir.join(format!("sentinel-{port}.conf"));
    let down_after = DOWN_AFTER.as_millis();
    std::fs::write(
        &file,
        format!(
            "port {port}\n\
             bind 127.0.0.1\n\
             dir {dir}\n\
             sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
             sentinel down-after-milliseconds {MASTER} {down_after}\n\
             sentinel failover-timeout {MASTER} 2000\n\
             sentinel parallel-syncs {MASTER} 1\n",
            dir = dir.display(),
        ),
    )
    .expect("a Sentinel configuration file");
    let mut command = Command::new("redis-server");
    command.arg(&file).arg("--sentinel");
    command
}

/// The first field of `ROLE`: `master`, `slave` or `sentinel`.
fn role(connection: &mut redis::Connection) -> Option<String> {
    let reply: Vec<redis::Value> = redis::cmd("ROLE").query(connection).ok()?;
    match reply.first()? {
        redis::Value::BulkString(role) => String::from_utf8(role.clone()).ok(),
        redis::Value::SimpleString(role) => Some(role.clone()),
        _ => None,
    }
}

/// A `name:value` field of `INFO replication`.
fn info_field(connection: &mut redis::Connection, name: &str) -> Option<String> {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(connection)
        .ok()?;
    info.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(':')
            .map(|value| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness itself: the Sentinels agree on the primary, and a
    /// killed primary's replica is promoted (about 2 s after the kill).
    #[test]
    fn the_sentinels_fail_the_primary_over_to_its_replica() {
        let started = Instant::now();
        let mut set = RedisSentinels::start();
        println!("ready in {:?}", started.elapsed());
        let ports = set.data_ports();
        assert_eq!(set.primary(), ports[0]);
        let killed = Instant::now();
        assert_eq!(set.kill_primary(), ports[0]);
        assert_eq!(set.wait_for_failover(), ports[1], "the replica took over");
        println!("failed over in {:?}", killed.elapsed());
    }
}
