//! `redis-server` processes for tests, as the Cluster and Sentinel
//! harnesses (`cluster_testing.rs`, `sentinel_testing.rs`) start them: on a
//! free loopback port drawn from 20000..45000 (for a cluster node, the
//! port of its bus, 10000 above, free too), started again on another when
//! the port is taken meanwhile, in a temporary directory of the harness's
//! own.
//!
//! Written with `std` and the `redis` crate only: the binary's tests
//! (`server/tests/`) include it (`#[path]`) with the harnesses.

#![allow(dead_code)]

use std::{
    collections::HashSet,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// One `redis-server` process.
pub struct Process {
    pub child: Child,
    pub port: u16,
}

impl Process {
    /// SIGKILL, and the exit collected.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the process `make` makes for a free port not in `taken` (with
/// `bus`, port + 10000 free too), trying another port when it exits (most
/// likely its port was taken in the meantime), and waits until it answers.
/// `what` names the tests in the message when `redis-server` is missing.
pub fn start_process(
    taken: &mut HashSet<u16>,
    bus: bool,
    what: &str,
    make: impl Fn(u16) -> Command,
) -> Process {
    for _ in 0..20 {
        let port = random_port(taken, bus);
        taken.insert(port);
        let mut child = make(port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start redis-server ({error}): the {what} tests need Redis 7's redis-server on PATH; they do not skip")
            });
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if connect(port).is_some() {
                return Process { child, port };
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server did not listen on port {port} within 5 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    panic!("could not start redis-server on 20 different ports");
}

/// A port in 20000..45000 that is free when asked (with `bus`, port +
/// 10000 too).
fn random_port(taken: &HashSet<u16>, bus: bool) -> u16 {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    loop {
        let mut bytes = [0u8; 2];
        getrandom::fill(&mut bytes).expect("random bytes");
        let port = 20000 + u16::from_le_bytes(bytes) % 25000;
        if !taken.contains(&port) && free(port) && (!bus || free(port + 10000)) {
            return port;
        }
    }
}

/// A directory of the harness's own under the system's temporary one.
pub fn scratch(kind: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "slop-{kind}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// A connection to the process on `port`, if it answers within 500 ms.
pub fn connect(port: u16) -> Option<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .ok()?
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()
}
