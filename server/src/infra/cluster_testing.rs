//! Redis Cluster for tests: six `redis-server` processes on loopback ports
//! of their own, three primaries (the 16384 slots in three even ranges)
//! each with one replica, made into a cluster with `CLUSTER` commands and
//! ready (`cluster_state:ok` on every node, every replica in sync) when
//! [`RedisCluster::start`] returns, about 2 s later (a primary reports `ok`
//! no sooner than 2 s after it started). A node can be killed (SIGKILL) to see
//! its replica take over. Every process is stopped by its id, and the
//! directory removed, when the cluster is dropped.
//!
//! A node's cluster bus listens on its port + 10000, so ports are drawn
//! from 20000..45000 (the bus from 30000..55000) and a node that cannot
//! bind is started again on others (`redis_processes.rs`).
//!
//! Written with `std` and the `redis` crate only, so that the binary's
//! tests (`server/tests/`) include this very file (`#[path]`) too.

#![allow(dead_code)]

use std::{
    collections::HashSet,
    path::PathBuf,
    process::{Child, Command},
    time::{Duration, Instant},
};

use super::redis_processes::{Process, connect, scratch, start_process};

/// How long forming the cluster, or a failover, may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// One `redis-server` of the cluster.
struct Node {
    child: Child,
    port: u16,
    /// Its cluster node id (40 hex digits).
    id: String,
}

/// A 3-primary, 3-replica Redis Cluster of the test's own.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts the six nodes and forms the cluster; panics (the test
    /// fails, it never skips) when `redis-server` cannot, saying why.
    pub fn start() -> Self {
        let dir = scratch("cluster");
        let mut nodes = Vec::new();
        let mut taken = HashSet::new();
        for _ in 0..6 {
            nodes.push(start_node(&dir, &mut taken));
        }
        let mut cluster = Self { nodes, dir };
        cluster.form();
        cluster
    }

    /// The nodes as `redis://127.0.0.1:PORT` URLs, primaries first.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}", node.port))
            .collect()
    }

    /// The value of REDIS_CLUSTER_NODES for this cluster: every node.
    pub fn nodes_variable(&self) -> String {
        self.urls().join(",")
    }

    /// The ports of the live nodes that are primaries serving slots now,
    /// as `CLUSTER NODES` of a live node says.
    pub fn primaries(&self) -> Vec<u16> {
        let live: HashSet<u16> = self.live_nodes().map(|node| node.port).collect();
        let mut primaries = Vec::new();
        for line in self.cluster_nodes().lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() > 8
                && fields[2].contains("master")
                && !fields[2].contains("fail")
                && let Some(port) = port_of(fields[1]).filter(|port| live.contains(port))
            {
                primaries.push(port);
            }
        }
        primaries.sort_unstable();
        primaries
    }

    /// The port of the primary that serves `key`'s slot now.
    pub fn primary_for(&self, key: &str) -> u16 {
        self.primary_of_slot(self.slot_of(key))
    }

    /// The hash slot of `key`.
    pub fn slot_of(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.any_connection())
            .expect("CLUSTER KEYSLOT")
    }

    /// Starts moving `slot` to the primary on `to`, as `redis-cli --cluster
    /// reshard` does: IMPORTING on `to`, MIGRATING on its owner. Its keys
    /// move with [`Migration::move_keys`], and [`Migration::finish`] gives
    /// the slot to `to` on every node. Between the two the slot is split,
    /// and clients meet ASK and TRYAGAIN.
    pub fn begin_migration(&self, slot: u16, to: u16) -> Migration<'_> {
        let from = self.primary_of_slot(slot);
        assert_ne!(from, to, "slot {slot} is on {to} already");
        let migration = Migration {
            cluster: self,
            slot,
            from,
            to,
        };
        let () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("IMPORTING")
            .arg(self.id_of(from))
            .query(&mut node_connection(to))
            .expect("CLUSTER SETSLOT IMPORTING");
        let () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("MIGRATING")
            .arg(self.id_of(to))
            .query(&mut node_connection(from))
            .expect("CLUSTER SETSLOT MIGRATING");
        migration
    }

    fn id_of(&self, port: u16) -> &str {
        &self
            .nodes
            .iter()
            .find(|node| node.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
            .id
    }

    /// The port of the primary that serves `slot` now. Right after a
    /// failover the node asked may not know the promotion yet (gossip
    /// reaches the nodes one by one), so this asks again until one does.
    pub fn primary_of_slot(&self, slot: u16) -> u16 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(port) = self.known_primary_of_slot(slot) {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no live primary serves slot {slot} after {PATIENCE:?}:\n{}",
                self.cluster_nodes()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The live primary serving `slot` as the first live node's view
    /// says, if that view names one.
    fn known_primary_of_slot(&self, slot: u16) -> Option<u16> {
        let live: HashSet<u16> = self.live_nodes().map(|node| node.port).collect();
        for line in self.cluster_nodes().lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() <= 8 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(low), Ok(high)) if (low..=high).contains(&slot))
            });
            let port = port_of(fields[1]).expect("a node address");
            if serves && live.contains(&port) {
                return Some(port);
            }
        }
        None
    }

    /// Kills the node on `port` with SIGKILL (no goodbye to the cluster),
    /// as a crash would.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"));
        let _ = node.child.kill();
        let _ = node.child.wait();
    }

    /// The ports of the replicas of the primary on `port`, as a live
    /// node's `CLUSTER NODES` says.
    pub fn replicas_of(&self, port: u16) -> Vec<u16> {
        let nodes = self.cluster_nodes();
        let Some(primary) = nodes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields.len() > 2 && port_of(fields[1]) == Some(port)).then(|| fields[0].to_owned())
        }) else {
            return Vec::new();
        };
        nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                (fields.len() > 3 && fields[2].contains("slave") && fields[3] == primary)
                    .then(|| port_of(fields[1]))
                    .flatten()
            })
            .collect()
    }

    /// Stops the node on `port` (SIGSTOP): it holds its connections but
    /// answers nothing, as a node stuck in a long pause would.
    pub fn pause(&self, port: u16) {
        self.signal(port, "-STOP");
    }

    /// Lets a paused node run again (SIGCONT).
    pub fn resume(&self, port: u16) {
        self.signal(port, "-CONT");
    }

    fn signal(&self, port: u16, signal: &str) {
        let node = self
            .nodes
            .iter()
            .find(|node| node.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"));
        let status = Command::new("kill")
            .arg(signal)
            .arg(node.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} of the node on {port}");
    }

    /// Waits until every live node sees the cluster as `ok` with three
    /// live primaries (after a kill: its replica promoted).
    pub fn wait_until_healthy(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let healthy = self.live_nodes().all(|node| {
                connect(node.port).is_some_and(|mut connection| {
                    info_field(&mut connection, "CLUSTER", "cluster_state").as_deref() == Some("ok")
                })
            }) && self.primaries().len() == 3;
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster is not healthy after {PATIENCE:?}:\n{}",
                self.cluster_nodes()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Assigns the slots, introduces the nodes, attaches the replicas, and
    /// waits for all of it.
    fn form(&mut self) {
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (node, (low, high)) in self.nodes.iter().zip(ranges) {
            let () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(low)
                .arg(high)
                .query(&mut node_connection(node.port))
                .expect("CLUSTER ADDSLOTSRANGE");
        }
        // Every pair directly: quicker than waiting for gossip.
        for (index, node) in self.nodes.iter().enumerate() {
            let mut connection = node_connection(node.port);
            for other in &self.nodes[index + 1..] {
                let () = redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(other.port)
                    .query(&mut connection)
                    .expect("CLUSTER MEET");
            }
        }
        // Every node must know every other before a replica can attach.
        self.wait_for("every node to know the others", |cluster| {
            cluster.nodes.iter().all(|node| {
                let known: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query(&mut node_connection(node.port))
                    .unwrap_or_default();
                known
                    .lines()
                    .filter(|line| !line.contains("handshake"))
                    .count()
                    == 6
            })
        });
        for index in 0..3 {
            let primary = self.nodes[index].id.clone();
            let () = redis::cmd("CLUSTER")
                .arg("REPLICATE")
                .arg(&primary)
                .query(&mut node_connection(self.nodes[index + 3].port))
                .expect("CLUSTER REPLICATE");
        }
        self.wait_for("cluster_state:ok and replicas in sync", |cluster| {
            cluster.nodes.iter().enumerate().all(|(index, node)| {
                let mut connection = node_connection(node.port);
                let ok = info_field(&mut connection, "CLUSTER", "cluster_state").as_deref()
                    == Some("ok");
                let synced = index < 3
                    || info_field(&mut connection, "INFO", "master_link_status").as_deref()
                        == Some("up");
                ok && synced
            })
        });
    }

    fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "waited {PATIENCE:?} for {what}:\n{}",
                self.cluster_nodes()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn live_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes
            .iter()
            .filter(|node| std::net::TcpStream::connect(("127.0.0.1", node.port)).is_ok())
    }

    fn any_connection(&self) -> redis::Connection {
        self.live_nodes()
            .find_map(|node| connect(node.port))
            .expect("a live node")
    }

    /// `CLUSTER NODES` as a live node sees it.
    fn cluster_nodes(&self) -> String {
        self.live_nodes()
            .find_map(|node| {
                let mut connection = connect(node.port)?;
                redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query(&mut connection)
                    .ok()
            })
            .unwrap_or_default()
    }
}

/// A slot on its way from one primary to another
/// ([`RedisCluster::begin_migration`]).
pub struct Migration<'a> {
    cluster: &'a RedisCluster,
    slot: u16,
    from: u16,
    to: u16,
}

impl Migration<'_> {
    /// Moves up to `count` of the slot's keys still on the old owner (all
    /// of them, with `usize::MAX`); how many it moved.
    pub fn move_keys(&self, count: usize) -> usize {
        let mut from = node_connection(self.from);
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(self.slot)
            .arg(count.min(100_000))
            .query(&mut from)
            .expect("CLUSTER GETKEYSINSLOT");
        if !keys.is_empty() {
            let () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut from)
                .expect("MIGRATE");
        }
        keys.len()
    }

    /// Moves the rest of the keys and gives the slot to the new owner on
    /// every primary (the replicas learn it from them).
    pub fn finish(self) {
        self.move_keys(usize::MAX);
        for port in self.cluster.primaries() {
            let () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(self.slot)
                .arg("NODE")
                .arg(self.cluster.id_of(self.to))
                .query(&mut node_connection(port))
                .expect("CLUSTER SETSLOT NODE");
        }
        self.cluster
            .wait_for("the slot's new owner known everywhere", |cluster| {
                cluster.primary_of_slot(self.slot) == self.to
            });
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            // A paused node must run again to die of SIGKILL promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &node.child.id().to_string()])
                .status();
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts one cluster node on ports (its own and its bus's) not in
/// `taken`, and reads its node id.
fn start_node(dir: &std::path::Path, taken: &mut HashSet<u16>) -> Node {
    let Process { child, port } = start_process(taken, true, "cluster", |port| {
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).expect("a node directory");
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            // Failovers within seconds, by any replica however stale.
            .args(["--cluster-node-timeout", "1000"])
            .args(["--cluster-replica-validity-factor", "0"])
            // A replica's first sync at once, not after the default 5 s.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&node_dir);
        command
    });
    let id = redis::cmd("CLUSTER")
        .arg("MYID")
        .query::<String>(&mut node_connection(port))
        .expect("CLUSTER MYID");
    Node { child, port, id }
}

/// A connection to the node on `port`; panics when it cannot be made.
pub fn node_connection(port: u16) -> redis::Connection {
    connect(port).unwrap_or_else(|| panic!("cannot connect to the node on port {port}"))
}

/// A `name:value` field of `CLUSTER INFO` (`section` "CLUSTER") or `INFO`.
fn info_field(connection: &mut redis::Connection, section: &str, name: &str) -> Option<String> {
    let info: String = if section == "CLUSTER" {
        redis::cmd("CLUSTER").arg("INFO").query(connection).ok()?
    } else {
        redis::cmd("INFO")
            .arg("replication")
            .query(connection)
            .ok()?
    };
    info.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(':')
            .map(|value| value.trim().to_owned())
    })
}

/// The port of a `CLUSTER NODES` address (`127.0.0.1:PORT@BUS`).
fn port_of(address: &str) -> Option<u16> {
    address.split('@').next()?.rsplit(':').next()?.parse().ok()
}
