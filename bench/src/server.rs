//! The real server, run the way an operator runs it: the release
//! `slop-server` binary as a child process, configured by its environment
//! only, on a free port it reports in its JSON "listening" log line.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
    sync::oneshot,
};

/// A process's resident memory, from `/proc/<pid>/status` (Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now, in KiB.
    pub resident_kib: u64,
    /// `VmHWM`: the most it has been resident, in KiB.
    pub peak_kib: u64,
}

impl Memory {
    /// Process `pid`'s, now; None where /proc cannot be read.
    pub fn of(pid: u32) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }

    fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status.lines().find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(':')?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
        };
        Some(Self {
            resident_kib: field("VmRSS")?,
            peak_kib: field("VmHWM")?,
        })
    }
}

/// How long the server may take to start, and to stop after SIGTERM.
const PATIENCE: Duration = Duration::from_secs(30);

/// Logs the server writes: warnings and errors, and the one line that says
/// where it listens (the crate root logs it at info). Per-request logs
/// (`slop_server::transport::telemetry`, `slop_server::services`) stay off, so
/// logging is not part of what is measured.
const LOG_LEVEL: &str =
    "warn,slop_server=info,slop_server::transport::telemetry=warn,slop_server::services=warn";

/// Where sessions live.
#[derive(Debug, Clone)]
pub enum Backend {
    /// In the server's memory.
    Memory,
    /// In Redis, under a prefix of its own.
    Redis {
        /// `redis://…`.
        url: String,
        /// REDIS_KEY_PREFIX; everything under it is deleted at the end.
        prefix: String,
    },
    /// On a Redis Cluster, under a prefix of its own.
    Cluster {
        /// REDIS_CLUSTER_NODES: `redis://…` URLs, comma-separated.
        nodes: String,
        /// REDIS_KEY_PREFIX.
        prefix: String,
    },
}

impl Backend {
    /// `memory`, `redis` or `cluster`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis { .. } => "redis",
            Self::Cluster { .. } => "cluster",
        }
    }
}

/// The secrets a server run is configured with.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// JWT_SECRET.
    pub jwt: String,
    /// APP_SECRET.
    pub app: String,
    /// The secret of the `bench` entry of SERVICE_KEYS.
    pub service_key: String,
}

impl Secrets {
    /// Fresh ones from the OS random generator, 64 hex characters each.
    pub fn random() -> Self {
        let secret = || crate::setup::random_hex(32);
        Self {
            jwt: secret(),
            app: secret(),
            service_key: secret(),
        }
    }
}

/// The `slop-server` binary: `explicit`, or the one beside this binary
/// (both are built into target/release by
/// `cargo build --release -p slop-server -p slop-bench`).
pub fn locate(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    let path = match explicit {
        Some(path) => path,
        None => std::env::current_exe()
            .map_err(|error| format!("cannot find this binary: {error}"))?
            .with_file_name(format!("slop-server{}", std::env::consts::EXE_SUFFIX)),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no slop-server binary at {}: build it with `cargo build --release -p slop-server -p slop-bench`, or pass --server-bin",
            path.display()
        ))
    }
}

/// A running `slop-server` process.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `binary` in `dir` (an empty working directory, so no `.env`
    /// is read), with an SQLite file in `dir` (one per backend: the
    /// instances of a backend share it, as they share their Redis),
    /// sessions in `backend` and `env` on top, and waits until it listens.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        backend: &Backend,
        secrets: &Secrets,
        env: &[(&str, String)],
    ) -> Result<Self, String> {
        let database = dir.join(format!("server-{}.db", backend.name()));
        let mut command = Command::new(binary);
        command
            .env_clear()
            .current_dir(dir)
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            // Metrics on, as deployed (their cost is part of the figures),
            // on a free port so several servers can run at once.
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .env("LOG_LEVEL", LOG_LEVEL)
            .env("DATABASE_URL", format!("sqlite:{}", database.display()))
            .env("JWT_SECRET", &secrets.jwt)
            .env("APP_SECRET", &secrets.app)
            .env("SERVICE_KEYS", format!("bench:{}", secrets.service_key))
            // Every request comes from 127.0.0.1: lift the per-address limit
            // of the anonymous endpoints, or the login burst is refused.
            .env("RATE_LIMIT_MAX_REQUESTS", "1000000")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        match backend {
            Backend::Memory => {}
            Backend::Redis { url, prefix } => {
                command
                    .env("REDIS_URL", url)
                    .env("REDIS_KEY_PREFIX", prefix);
            }
            Backend::Cluster { nodes, prefix } => {
                command
                    .env("REDIS_CLUSTER_NODES", nodes)
                    .env("REDIS_KEY_PREFIX", prefix);
            }
        }
        command.envs(env.iter().map(|(key, value)| (key, value)));
        let mut child = command
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (listening_tx, listening_rx) = oneshot::channel();
        tokio::spawn(async move {
            let mut listening_tx = Some(listening_tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                    eprintln!("[slop-server] {line}");
                    continue;
                };
                if entry["message"] == "listening"
                    && let Some(tx) = listening_tx.take()
                {
                    let _ = tx.send(entry["addr"].as_str().unwrap_or_default().to_owned());
                } else if matches!(entry["level"].as_str(), Some("WARN" | "ERROR")) {
                    // Kept visible: a warning during a run is worth knowing.
                    eprintln!("[slop-server] {line}");
                }
            }
        });
        let addr = match tokio::time::timeout(PATIENCE, listening_rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => {
                let status = child.wait().await.map_err(|error| error.to_string())?;
                return Err(format!("slop-server exited before listening: {status}"));
            }
            Err(_) => return Err("slop-server did not listen within 30s".into()),
        };
        let addr = addr
            .parse()
            .map_err(|error| format!("listening addr {addr:?}: {error}"))?;
        Ok(Self { child, addr })
    }

    /// Reads the server's CPU time.
    pub fn meter(&self) -> crate::cpu::Meter {
        crate::cpu::Meter::Process(self.child.id().unwrap_or_default())
    }

    /// Reads the server's resident memory now and at its peak.
    pub fn memory(&self) -> Option<Memory> {
        Memory::of(self.child.id()?)
    }

    /// Stops the server with SIGTERM (a graceful shutdown), killing it if
    /// it has not exited in time.
    pub async fn stop(mut self) -> Result<(), String> {
        let Some(pid) = self.child.id() else {
            return Ok(());
        };
        let signalled = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .is_ok_and(|status| status.success());
        if signalled && let Ok(Ok(status)) = tokio::time::timeout(PATIENCE, self.child.wait()).await
        {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("slop-server exited with {status}"))
            };
        }
        self.child.kill().await.map_err(|error| error.to_string())?;
        Err("slop-server did not stop on SIGTERM; killed it".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gives_resident_and_peak_memory() {
        let status = "Name:\tslop-server\nVmPeak:\t  900000 kB\nVmHWM:\t  675432 kB\nVmRSS:\t   54321 kB\nThreads:\t9\n";
        assert_eq!(
            Memory::parse(status),
            Some(Memory {
                resident_kib: 54_321,
                peak_kib: 675_432
            })
        );
        assert_eq!(Memory::parse("Name:\tx\n"), None);
        let ours = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(Memory::parse(&ours).is_some_and(|memory| memory.resident_kib > 0));
    }
}
