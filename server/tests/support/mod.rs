//! What every test that runs the built `slop-server` binary needs, shared
//! by the test binaries in `server/tests/` (each includes it with `mod
//! support;`, the way cargo shares code between integration tests): the
//! command with a cleared environment in a directory of its own, started
//! with JSON logs on a free port, its "listening" address and its log
//! lines as they come, SIGTERM by pid, and a kill when the test drops it.
//!
//! One copy, so a fix (say, to how the address is read) reaches every test
//! that starts the binary.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Output, Stdio},
    time::Duration,
};

use slop_api::{
    auth::{self, auth_service_client::AuthServiceClient},
    notification::{self, subscribe_response::Message},
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

/// How long a test waits for the server to listen, answer, or exit.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The password of every account [`register`] makes.
pub const ACCOUNT_PASSWORD: &str = "correct horse battery staple";

/// A gRPC client of the Auth service.
pub type AuthClient = AuthServiceClient<tonic::transport::Channel>;

/// The path of the built binary.
pub const BINARY: &str = env!("CARGO_BIN_EXE_slop-server");

/// An empty working directory of the server `name` (made now), so no
/// developer's .env is read; per process, as each test is one under nextest.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("slop-binary-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("make {}: {err}", dir.display()));
    dir
}

/// The binary in `dir`: see [`prepare`].
pub fn command(dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    prepare(&mut command, dir);
    command
}

/// Sets what every run of the binary needs on `command` (the binary, or a
/// shell that execs it): no inherited environment, a metrics port of its
/// own (not the default 0.0.0.0:9090, which parallel servers would share),
/// `dir` as working directory, no stdin, stdout and stderr piped, and a
/// kill when the test drops it.
pub fn prepare<'a>(command: &'a mut Command, dir: &Path) -> &'a mut Command {
    command
        .env_clear()
        .env("METRICS_ADDR", "127.0.0.1:0")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
}

/// Sets JSON logs and a free loopback port on `command`.
pub fn listen_on_a_free_port(command: &mut Command) -> &mut Command {
    command
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("LOG_FORMAT", "json")
}

/// Runs `command` until it exits (it must, within [`PATIENCE`]): for a
/// start-up that must fail, or `--help`.
pub async fn run_to_exit(command: &mut Command) -> Output {
    tokio::time::timeout(PATIENCE, command.output())
        .await
        .unwrap_or_else(|_| panic!("the server did not exit within {PATIENCE:?}"))
        .expect("run slop-server")
}

/// A running binary, killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// The address it listens on, from its "listening" line.
    pub addr: String,
    /// Its log lines after "listening", as they come; the channel ends
    /// when its stdout does.
    pub logs: mpsc::UnboundedReceiver<serde_json::Value>,
    /// Its log lines before "listening".
    pub before: Vec<serde_json::Value>,
}

impl Server {
    /// Starts `command` with JSON logs on a free port and then `env`, and
    /// waits (up to [`PATIENCE`]) for its "listening" line. Every line of
    /// stdout must be JSON.
    pub async fn start(mut command: Command, env: &[(&str, &str)]) -> Self {
        listen_on_a_free_port(&mut command).envs(env.iter().copied());
        let mut child = command.spawn().expect("spawn slop-server");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines_tx, mut logs) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|err| panic!("log line is not JSON ({err}): {line}"));
                if lines_tx.send(value).is_err() {
                    break;
                }
            }
        });
        let mut before = Vec::new();
        let addr = tokio::time::timeout(PATIENCE, async {
            loop {
                let Some(line) = logs.recv().await else {
                    panic!("the server exited before listening: {before:#?}");
                };
                if line["message"] == "listening" {
                    return line["addr"].as_str().expect("listening addr").to_owned();
                }
                before.push(line);
            }
        })
        .await
        .expect("the server listens in time");
        Self {
            child,
            addr,
            logs,
            before,
        }
    }

    /// Starts the binary, in the scratch directory `name`, with `env`.
    pub async fn start_in(name: &str, env: &[(&str, &str)]) -> Self {
        Self::start(command(&scratch_dir(name)), env).await
    }

    /// Sends SIGTERM to the process, by its pid.
    pub fn sigterm(&self) {
        sigterm(&self.child);
    }

    /// SIGTERM, then its exit status (it must exit within `limit`).
    pub async fn stop_within(&mut self, limit: Duration) -> ExitStatus {
        self.sigterm();
        tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the server did not exit within {limit:?}"))
            .expect("wait for the server")
    }

    /// [`Server::stop_within`] [`PATIENCE`].
    pub async fn stop(&mut self) -> ExitStatus {
        self.stop_within(PATIENCE).await
    }

    /// The log lines not yet taken, up to the end of the log; call it once
    /// the process has exited (the lines may still be on their way then).
    pub async fn rest_of_log(&mut self) -> Vec<serde_json::Value> {
        tokio::time::timeout(PATIENCE, async {
            let mut lines = Vec::new();
            while let Some(line) = self.logs.recv().await {
                lines.push(line);
            }
            lines
        })
        .await
        .expect("the log ends once the server has exited")
    }

    /// SIGTERM; once it has exited (within [`PATIENCE`]), its exit status,
    /// the log lines not yet taken (as text) and its stderr.
    pub async fn stop_and_read(&mut self) -> Stopped {
        let status = self.stop().await;
        let stderr = self.stderr().await;
        let lines = self
            .rest_of_log()
            .await
            .iter()
            .map(ToString::to_string)
            .collect();
        Stopped {
            status,
            lines,
            stderr,
        }
    }

    /// Everything it wrote to stderr; call it once the process has exited.
    pub async fn stderr(&mut self) -> String {
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .expect("stderr is piped and read once")
            .read_to_string(&mut stderr)
            .await
            .expect("read stderr");
        stderr
    }

    /// Log lines until one says `message` (within `limit`).
    pub async fn wait_for(&mut self, message: &str, limit: Duration) -> serde_json::Value {
        tokio::time::timeout(limit, async {
            loop {
                let line = self.logs.recv().await.expect("the server logs");
                if line["message"] == message {
                    return line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {message:?} logged in time"))
    }
}

/// What a server left when it stopped: see [`Server::stop_and_read`].
pub struct Stopped {
    /// How it exited.
    pub status: ExitStatus,
    /// Its log lines from where the test stopped reading, as JSON text.
    pub lines: Vec<String>,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// A gRPC client of the Auth service at `addr` (plain HTTP/2).
pub async fn auth_client(addr: &str) -> AuthClient {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid address")
        .connect()
        .await
        .expect("gRPC connect");
    AuthServiceClient::new(channel)
}

/// Registers `email` with [`ACCOUNT_PASSWORD`] through `client`.
pub async fn register(client: &mut AuthClient, email: &str) {
    client
        .register(auth::RegisterRequest {
            email: email.into(),
            password: ACCOUNT_PASSWORD.into(),
            display_name: "Ada".into(),
        })
        .await
        .expect("register");
}

/// [`register`]s `email`, then logs in.
pub async fn sign_up(client: &mut AuthClient, email: &str) -> auth::LoginResponse {
    register(client, email).await;
    log_in(client, email).await
}

/// Logs `email` in with [`ACCOUNT_PASSWORD`]: a new session.
pub async fn log_in(client: &mut AuthClient, email: &str) -> auth::LoginResponse {
    client
        .login(auth::LoginRequest {
            email: email.into(),
            password: ACCOUNT_PASSWORD.into(),
        })
        .await
        .expect("login")
        .into_inner()
}

/// A gRPC client of the Notification service at `addr`.
pub async fn notification_client(
    addr: &str,
) -> notification::notification_service_client::NotificationServiceClient<tonic::transport::Channel>
{
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connect");
    notification::notification_service_client::NotificationServiceClient::new(channel)
}

/// The next message of a Subscribe stream (within [`PATIENCE`]),
/// heartbeats skipped; the stream's error if it ends with one.
pub async fn next_message(
    stream: &mut tonic::Streaming<notification::SubscribeResponse>,
) -> Result<Message, tonic::Status> {
    loop {
        let message = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("a stream message in time")?
            .expect("the stream goes on")
            .message
            .expect("a message");
        if !matches!(message, Message::Heartbeat(_)) {
            return Ok(message);
        }
    }
}

/// `message` as a request with `token` as its bearer credential.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .expect("a valid header value"),
    );
    request
}

/// Sends SIGTERM to `child`, by its pid.
pub fn sigterm(child: &Child) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}: {status}");
}

/// The shared configuration of servers that share Redis and PostgreSQL: the
/// same secrets, a key prefix and a database schema of this test's own.
pub struct SharedStores {
    env: Vec<(&'static str, String)>,
    schema: String,
    admin: sqlx::PgPool,
}

impl SharedStores {
    /// On the test Redis (REDIS_URL, or 127.0.0.1:6379), under a key prefix
    /// of its own.
    pub async fn new() -> Self {
        let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let redis_addr = redis
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(
            tokio::net::TcpStream::connect(&redis_addr).await.is_ok(),
            "Redis is not reachable at {redis}: start it or set REDIS_URL"
        );
        Self::on_redis(vec![("REDIS_URL", redis)]).await
    }

    /// On the Redis these variables name (REDIS_URL, REDIS_CLUSTER_NODES,
    /// …), under a key prefix of its own.
    pub async fn on_redis(redis: Vec<(&'static str, String)>) -> Self {
        let base = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let admin = sqlx::PgPool::connect(&base).await.unwrap_or_else(|err| {
            panic!(
                "PostgreSQL is not reachable at {base} ({err}): start it or set TEST_DATABASE_URL"
            )
        });
        let id = uuid::Uuid::new_v4().simple().to_string();
        let schema = format!("t_{id}");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        let database_url = format!("{base}?options=-c%20search_path%3D{schema}");
        let mut env = redis;
        env.extend([
            ("DATABASE_URL", database_url),
            ("REDIS_KEY_PREFIX", format!("slop-binary-test:{id}:")),
            (
                "JWT_SECRET",
                "binary-test-jwt-secret-0123456789abcdefghijkl".into(),
            ),
            (
                "APP_SECRET",
                "binary-test-app-secret-0123456789abcdefghijkl".into(),
            ),
        ]);
        Self { env, schema, admin }
    }

    /// The variables every server on these stores gets.
    pub fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    /// Drops the test's database schema.
    pub async fn drop_schema(&self) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.schema
        )))
        .execute(&self.admin)
        .await
        .unwrap();
    }
}
