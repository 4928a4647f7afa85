//! The account database (PostgreSQL) stops mid-load and comes back: every
//! request answers within a bound, with success or UNAVAILABLE / 503 (never
//! INTERNAL / 500, never a hang), readiness follows the database, and the
//! server recovers without a restart.
//!
//! The test runs a PostgreSQL of its own (initdb and pg_ctl in a temporary
//! directory, on a free loopback port), since it must stop and restart it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use slop_api::auth::{self, auth_service_client::AuthServiceClient};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::harness::{PASSWORD, TestServer, bearer, get};

/// The PostgreSQL 15 binaries (Debian's `postgresql-15`).
const POSTGRES_BIN: &str = "/usr/lib/postgresql/15/bin";
/// DATABASE_TIMEOUT: what a request may wait for the database.
const BOUND: Duration = Duration::from_secs(3);
/// Every request answers within this, whatever the database does.
const DEADLINE: Duration = Duration::from_secs(9);
/// How long the test waits for the outage (or the recovery) to be seen.
const PHASE: Duration = Duration::from_secs(40);

/// A PostgreSQL server in a temporary directory, stopped and removed on drop.
struct ThrowawayPostgres {
    dir: PathBuf,
    port: u16,
    /// The uid and gid to run PostgreSQL as: it refuses to run as root.
    user: Option<(u32, u32)>,
}

impl ThrowawayPostgres {
    /// initdb, then start on a free loopback port.
    async fn start() -> Self {
        for tool in ["initdb", "pg_ctl"] {
            let path = Path::new(POSTGRES_BIN).join(tool);
            assert!(
                path.exists(),
                "{} is missing: these tests run a PostgreSQL of their own; install it \
                 (`apt-get install postgresql-15`). They do not skip.",
                path.display()
            );
        }
        let user = postgres_user_if_root();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("slop-pg-outage-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the directory");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let postgres = Self { dir, port, user };
        postgres
            .run(
                "initdb",
                &[
                    "-D",
                    &postgres.data(),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "--no-instructions",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
            )
            .await;
        postgres.start_server().await;
        postgres
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts (or restarts) the server on the same port and data.
    async fn start_server(&self) {
        let options = format!(
            "-F -p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .await;
    }

    /// Stops the server at once, as a crash or a kill does.
    async fn stop_immediately(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
        .await;
    }

    async fn run(&self, tool: &str, args: &[&str]) {
        let mut command = tokio::process::Command::new(Path::new(POSTGRES_BIN).join(tool));
        command.args(args).kill_on_drop(true);
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        let output = tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .unwrap_or_else(|_| panic!("{tool} did not finish in 120 s"))
            .unwrap_or_else(|error| panic!("cannot run {tool}: {error}"));
        assert!(
            output.status.success(),
            "{tool} {args:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let pid_file = self.dir.join("data").join("postmaster.pid");
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned))
        {
            // SIGQUIT is PostgreSQL's immediate shutdown: the postmaster
            // ends its children and exits.
            let _ = std::process::Command::new("kill")
                .args(["-QUIT", pid.trim()])
                .status();
            for _ in 0..100 {
                if !pid_file.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if pid_file.exists() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", pid.trim()])
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PostgreSQL will not run as root: as root, run it as the `postgres` user.
fn postgres_user_if_root() -> Option<(u32, u32)> {
    let uid = std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta))
        .expect("/proc/self");
    if uid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let entry = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres") && fields.len() > 3)
        .expect(
            "running as root, and there is no `postgres` user to run PostgreSQL as \
             (PostgreSQL refuses root): install postgresql-15, which creates it",
        );
    Some((
        entry[2].parse().expect("postgres uid"),
        entry[3].parse().expect("postgres gid"),
    ))
}

/// The database operations the load drives, over both front doors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Operation {
    /// REST `GET /api/v1/auth/me`: reads the account by id.
    RestMe,
    /// gRPC `GetCurrentUser`: reads the account by id.
    GrpcMe,
    /// gRPC `Login`: reads the account by email.
    GrpcLogin,
    /// gRPC `UpdateCurrentUser`: writes the account.
    GrpcRename,
    /// REST `POST /api/v1/auth/register`: inserts an account.
    RestRegister,
}

const OPERATIONS: [Operation; 5] = [
    Operation::RestMe,
    Operation::GrpcMe,
    Operation::GrpcLogin,
    Operation::GrpcRename,
    Operation::RestRegister,
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok,
    Unavailable,
    /// Anything else: a wrong answer, or none within DEADLINE.
    Wrong(String),
}

#[derive(Debug)]
struct Record {
    operation: Operation,
    outcome: Outcome,
    started: Instant,
    took: Duration,
}

struct Load {
    server_addr: String,
    token: String,
    channel: Channel,
    registrations: AtomicUsize,
}

impl Load {
    async fn call(&self, operation: Operation) -> Outcome {
        let grpc = |result: Result<(), tonic::Status>| match result {
            Ok(()) => Outcome::Ok,
            Err(status) if status.code() == tonic::Code::Unavailable => Outcome::Unavailable,
            Err(status) => Outcome::Wrong(format!("{:?}: {}", status.code(), status.message())),
        };
        let http = |status: http::StatusCode, body: &[u8]| {
            if status.is_success() {
                Outcome::Ok
            } else if status == http::StatusCode::SERVICE_UNAVAILABLE {
                Outcome::Unavailable
            } else {
                Outcome::Wrong(format!("{status}: {}", String::from_utf8_lossy(body)))
            }
        };
        let mut client = AuthServiceClient::new(self.channel.clone());
        match operation {
            Operation::RestMe => {
                let answer =
                    rest_at(&self.server_addr, "GET", "/api/v1/auth/me", &self.token).await;
                http(answer.status, &answer.body)
            }
            Operation::GrpcMe => grpc(
                client
                    .get_current_user(bearer(auth::GetCurrentUserRequest {}, &self.token))
                    .await
                    .map(drop),
            ),
            Operation::GrpcLogin => grpc(
                client
                    .login(auth::LoginRequest {
                        email: "ada@example.com".into(),
                        password: PASSWORD.into(),
                    })
                    .await
                    .map(drop),
            ),
            Operation::GrpcRename => grpc(
                client
                    .update_current_user(bearer(
                        auth::UpdateCurrentUserRequest {
                            user: Some(auth::User {
                                display_name: "Ada L.".into(),
                                ..Default::default()
                            }),
                            update_mask: Some(pbjson_types::FieldMask {
                                paths: vec!["display_name".into()],
                            }),
                        },
                        &self.token,
                    ))
                    .await
                    .map(drop),
            ),
            Operation::RestRegister => {
                let n = self.registrations.fetch_add(1, Ordering::Relaxed);
                let answer = register_at(&self.server_addr, &format!("user{n}@example.com")).await;
                http(answer.status, &answer.body)
            }
        }
    }
}

/// `rest` against an address (the load runs in tasks of its own).
async fn rest_at(addr: &str, method: &str, path: &str, token: &str) -> crate::harness::Answer {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::default())
        .expect("request");
    crate::harness::http(request).await
}

async fn register_at(addr: &str, email: &str) -> crate::harness::Answer {
    let body = serde_json::json!({
        "email": email,
        "password": PASSWORD,
        "displayName": "Load",
    });
    let request = http::Request::post(format!("http://{addr}/api/v1/auth/register"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::from(body.to_string()))
        .expect("request");
    crate::harness::http(request).await
}

/// Runs every operation in turn on `workers` tasks until `stop`, recording
/// each outcome and how long it took.
fn drive(
    load: Arc<Load>,
    workers: usize,
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|worker| {
            let (load, stop, records) = (load.clone(), stop.clone(), records.clone());
            tokio::spawn(async move {
                let mut turn = worker;
                while !stop.load(Ordering::SeqCst) {
                    let operation = OPERATIONS[turn % OPERATIONS.len()];
                    turn += 1;
                    let started = Instant::now();
                    let outcome = match tokio::time::timeout(DEADLINE, load.call(operation)).await {
                        Ok(outcome) => outcome,
                        Err(_) => Outcome::Wrong(format!("no answer within {DEADLINE:?}")),
                    };
                    records.lock().unwrap().push(Record {
                        operation,
                        outcome,
                        started,
                        took: started.elapsed(),
                    });
                }
            })
        })
        .collect()
}

/// `/health` says the database is `status`, and `/health/ready` answers
/// `ready`.
async fn health_is(server: &TestServer, database: &str, ready: http::StatusCode) -> bool {
    let health = get(&server.url("/health")).await;
    let readiness = get(&server.url("/health/ready")).await;
    health.json()["dependencies"]["database"]["status"] == database && readiness.status == ready
}

/// Waits up to PHASE for `done` over the records so far; false if it never
/// came.
async fn wait_for(
    records: &Mutex<Vec<Record>>,
    mut done: impl FnMut(&[Record]) -> bool,
    mut also: impl AsyncFnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + PHASE;
    loop {
        let records_done = done(&records.lock().unwrap());
        if records_done && also().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_load_answers_unavailable_then_recovers() {
    let postgres = ThrowawayPostgres::start().await;
    let url = postgres.url();
    let server = TestServer::start_with(|config| {
        config.database_url = url;
        config.database_timeout = BOUND;
        config.health_check_interval = Duration::from_millis(250);
        config.rate_limit_max_requests = 1_000_000;
    })
    .await;
    crate::harness::eventually("the server is ready", || {
        health_is(&server, "up", http::StatusCode::OK)
    })
    .await;

    let signed_in = crate::harness::sign_up(&server, "ada@example.com").await;
    let load = Arc::new(Load {
        server_addr: server.addr.to_string(),
        token: signed_in.access_token,
        channel: server.channel().await,
        registrations: AtomicUsize::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(Mutex::new(Vec::new()));
    let workers = drive(load.clone(), 8, stop.clone(), records.clone());

    // Every operation works before the outage.
    let all_succeeded_since = |since: Instant| {
        move |records: &[Record]| {
            OPERATIONS.iter().all(|operation| {
                records.iter().any(|r| {
                    r.operation == *operation && r.started >= since && r.outcome == Outcome::Ok
                })
            })
        }
    };
    let began = Instant::now();
    assert!(
        wait_for(&records, all_succeeded_since(began), async || true).await,
        "every operation succeeds before the outage: {:?}",
        summary(&records.lock().unwrap(), began)
    );

    postgres.stop_immediately().await;
    let stopped = Instant::now();
    // Requests started after the stop: each operation answers UNAVAILABLE,
    // and health reports the database down.
    let outage_seen = wait_for(
        &records,
        |records| {
            OPERATIONS.iter().all(|operation| {
                records
                    .iter()
                    .filter(|r| {
                        r.operation == *operation
                            && r.started >= stopped
                            && r.outcome == Outcome::Unavailable
                    })
                    .count()
                    >= 2
            })
        },
        async || health_is(&server, "down", http::StatusCode::SERVICE_UNAVAILABLE).await,
    )
    .await;
    let during = summary(&records.lock().unwrap(), stopped);
    let first_unavailable = records
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.outcome == Outcome::Unavailable)
        .map(|r| (r.started + r.took).duration_since(stopped))
        .min();

    postgres.start_server().await;
    let restarted = Instant::now();
    let recovered = wait_for(&records, all_succeeded_since(restarted), async || {
        health_is(&server, "up", http::StatusCode::OK).await
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.expect("load worker");
    }
    let records = records.lock().unwrap();
    eprintln!(
        "outage: first UNAVAILABLE {first_unavailable:?} after the stop; outcomes since the stop \
         until the restart: {during:?}; after the restart: {:?}",
        summary(&records, restarted)
    );

    let wrong: Vec<_> = records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Wrong(_)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} requests answered neither success nor UNAVAILABLE / 503 in time, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let slowest = records.iter().map(|r| r.took).max().unwrap_or_default();
    assert!(slowest <= DEADLINE, "a request took {slowest:?}");
    assert!(
        outage_seen,
        "each operation answered UNAVAILABLE and /health said the database was down: {during:?}"
    );
    assert!(
        recovered,
        "every operation succeeds again and readiness returns without a restart: {:?}",
        summary(&records, restarted)
    );
    drop(server);
    drop(postgres);
}

/// Outcomes of the requests started since `since`: per operation,
/// (ok, unavailable, wrong).
fn summary(records: &[Record], since: Instant) -> BTreeMap<String, (usize, usize, usize)> {
    let mut counts = BTreeMap::new();
    for record in records.iter().filter(|r| r.started >= since) {
        let entry = counts
            .entry(format!("{:?}", record.operation))
            .or_insert((0, 0, 0));
        match record.outcome {
            Outcome::Ok => entry.0 += 1,
            Outcome::Unavailable => entry.1 += 1,
            Outcome::Wrong(_) => entry.2 += 1,
        }
    }
    counts
}
