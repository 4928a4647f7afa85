//! `auth-hot-path`: a reproducible load test of the authenticated hot path
//! of `slop-server`, against a minimal handler doing the same store round
//! trips and against the floor (the least work that answers correctly),
//! measured in one run.
//!
//! For each session backend (memory, then Redis; then Redis again with the
//! accounts in PostgreSQL instead of SQLite, [`accounts`]) it starts the
//! release `slop-server` binary as a child process on 127.0.0.1
//! ([`server`]), registers a user and logs in, and measures, closed loop
//! after a warm-up:
//!
//! - REST `GET /api/v1/auth/me` with the access token, one HTTP/1.1
//!   keep-alive connection per client task;
//! - gRPC `slop.auth.v1.AuthService/ValidateToken` with a service key, the
//!   client tasks sharing a few HTTP/2 connections;
//!
//! each against the server, against the [`baseline`], an in-process axum
//! server on its own runtime doing the same session use (and, for `me`,
//! the same in-process profile look-up) and nothing else, and against the
//! [`floor`], an
//! in-process axum server on its own runtime that verifies the server's JWT
//! and reads the session with one `GETEX` (issue #13). The three alternate
//! in the same rounds. With the memory backend it
//! then measures `me` at low concurrency while idle and while bursts of
//! concurrent logins hash passwords ([`burst`]). It prints Markdown tables
//! ([`report`]) to stdout and progress to stderr, and exits 1 if any request
//! failed.
//!
//! Build and run (the server binary is found beside this one):
//!
//! ```sh
//! cargo build --release -p slop-server -p slop-bench && target/release/auth-hot-path
//! ```

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::Parser;

mod accounts;
mod baseline;
mod burst;
mod floor;
mod in_process;
mod report;
mod validate_only;

// The parts the fan-out benchmark shares live in the library; named here,
// `crate::client` and the rest resolve for this binary's own modules.
use slop_bench::{
    client, cpu, load, server,
    setup::{self, Scratch, delete_prefix, parse_duration, ping_redis, random_hex},
};

use baseline::Identity;
use client::{GrpcValidate, RestMe};
use server::{Backend, Secrets, ServerProcess};

/// Load test of the authenticated hot path (REST me, gRPC ValidateToken) of
/// slop-server, memory and Redis backends, against a minimal baseline doing
/// the same work and against the floor (JWT verify and one GETEX).
#[derive(Debug, Clone, Parser)]
#[command(name = "auth-hot-path", version)]
struct Args {
    /// How long each throughput scenario is measured, after the warm-up.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    duration: Duration,

    /// Load before measuring starts (connections warm, caches filled).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,

    /// The throughput scenarios alternate between server, baseline and floor
    /// in this many windows each (of duration ÷ rounds), so all see the same
    /// machine when other work on it comes and goes.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=100))]
    rounds: u16,

    /// Concurrent client tasks in the throughput scenarios.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,

    /// HTTP/2 connections the gRPC client tasks share.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    grpc_connections: u16,

    /// Redis for the Redis backend (a unique key prefix is used and deleted).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,

    /// Skip the Redis backend (and with it the PostgreSQL accounts run).
    #[arg(long)]
    no_redis: bool,

    /// PostgreSQL for the run with Redis sessions and PostgreSQL accounts
    /// (a schema of the run's own is created and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres_url: String,

    /// Skip the run with PostgreSQL accounts.
    #[arg(long)]
    no_postgres: bool,

    /// Skip the throughput scenarios (server vs baseline and floor).
    #[arg(long)]
    no_throughput: bool,

    /// Skip the login burst test.
    #[arg(long)]
    no_burst: bool,

    /// Concurrent logins per burst.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=500))]
    burst_logins: u16,

    /// Bursts, one after the other (their `me` samples are pooled).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    bursts: u16,

    /// `me` client tasks during the burst test.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    burst_concurrency: u16,

    /// Total `me` requests/s of the paced run of the burst test (the
    /// closed-loop run follows it). 0 skips the paced run.
    #[arg(long, default_value_t = 1000)]
    burst_rate: u32,

    /// How long `me` is measured idle in the burst test.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    idle: Duration,

    /// PASSWORD_HASH_CONCURRENCY for the server (default: the server's own,
    /// one less than the number of CPUs, at least 1).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    password_hash_concurrency: Option<u16>,

    /// The slop-server binary (default: beside this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The load generator runs on this runtime, the baseline and the floor
    // each on its own, so each has its own worker threads (one per CPU,
    // tokio's default); the server is a separate process. All share the
    // machine's CPUs.
    let client = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-client")
        .build()
        .expect("client runtime");
    let baseline = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(baseline::THREAD_NAME)
        .build()
        .expect("baseline runtime");
    let floor = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(floor::THREAD_NAME)
        .build()
        .expect("floor runtime");
    let runtimes = Runtimes {
        baseline: baseline.handle().clone(),
        floor: floor.handle().clone(),
    };
    let outcome = client.block_on(run(args, runtimes));
    floor.shutdown_timeout(Duration::from_secs(2));
    baseline.shutdown_timeout(Duration::from_secs(2));
    client.shutdown_timeout(Duration::from_secs(2));
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: some requests failed (see Errors above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Where the in-process comparison servers run.
struct Runtimes {
    baseline: tokio::runtime::Handle,
    floor: tokio::runtime::Handle,
}

/// Runs everything; Ok(whether every request succeeded).
async fn run(args: Args, runtimes: Runtimes) -> Result<bool, String> {
    let binary = server::locate(args.server_bin.clone())?;
    let run_id = random_hex(6);
    let scratch = Scratch::new(&run_id)?;
    let secrets = Secrets::random();
    let mut backends = vec![(Backend::Memory, Accounts::Sqlite)];
    // The Redis backend is measured by the throughput scenarios only.
    let mut postgres = None;
    if !args.no_redis && !args.no_throughput {
        ping_redis(&args.redis_url).await?;
        let redis = Backend::Redis {
            url: args.redis_url.clone(),
            prefix: format!("slop-bench:{run_id}:"),
        };
        backends.push((redis.clone(), Accounts::Sqlite));
        if !args.no_postgres {
            let schema = accounts::Schema::create(&args.postgres_url, &run_id).await?;
            backends.push((
                Backend::Redis {
                    url: args.redis_url.clone(),
                    prefix: format!("slop-bench:{run_id}:pg:"),
                },
                Accounts::Postgres(schema.url()),
            ));
            postgres = Some(schema);
        }
    }

    let mut hot_paths = Vec::new();
    let mut bursts = Vec::new();
    let mut failed = None;
    for (backend, accounts) in &backends {
        let outcome = run_backend(
            &args,
            &binary,
            scratch.path(),
            (backend, accounts),
            &secrets,
            &run_id,
            &runtimes,
        )
        .await;
        if let Backend::Redis { url, prefix } = backend {
            match delete_prefix(url, prefix).await {
                Ok(deleted) => eprintln!("redis: deleted {deleted} keys under {prefix}"),
                Err(error) => {
                    eprintln!("warning: could not delete the keys under {prefix}: {error}")
                }
            }
        }
        match outcome {
            Ok((rows, burst)) => {
                hot_paths.extend(rows);
                bursts.extend(burst);
            }
            Err(error) => {
                failed = Some(error);
                break;
            }
        }
    }
    if let Some(schema) = postgres {
        schema.drop().await;
    }
    if let Some(error) = failed {
        return Err(error);
    }

    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let command: Vec<String> = std::iter::once("auth-hot-path".to_owned())
        .chain(std::env::args().skip(1))
        .collect();
    let permits = args.password_hash_concurrency.map_or_else(
        || format!("default ({})", cpus.saturating_sub(1).max(1)),
        |permits| permits.to_string(),
    );
    let mut settings = format!("`{}`:", command.join(" "));
    if !args.no_throughput {
        settings += &format!(
            " {}s per target in {} alternating rounds after a {}s warm-up, {} client tasks, {} gRPC connections;",
            args.duration.as_secs_f64(),
            args.rounds,
            args.warmup.as_secs_f64(),
            args.concurrency,
            args.grpc_connections,
        );
    }
    if !args.no_burst {
        settings += &format!(
            " burst test: {} `me` tasks, {}s idle, {} × {} concurrent logins;",
            args.burst_concurrency,
            args.idle.as_secs_f64(),
            args.bursts,
            args.burst_logins,
        );
    }
    settings += &format!(
        " PASSWORD_HASH_CONCURRENCY {permits}; {cpus} CPUs shared by client, server, baseline and floor."
    );
    let (report, clean) = report::render(&settings, &hot_paths, &bursts);
    println!("{report}");
    Ok(clean)
}

/// One backend: server, user, baseline, floor, the two throughput
/// scenarios (three targets each), and
/// (memory backend) the burst test.
async fn run_backend(
    args: &Args,
    binary: &Path,
    scratch: &Path,
    (backend, accounts): (&Backend, &Accounts),
    secrets: &Secrets,
    run_id: &str,
    runtimes: &Runtimes,
) -> Result<(Vec<report::HotPath>, Vec<report::Burst>), String> {
    let name = match accounts {
        Accounts::Sqlite => backend.name(),
        Accounts::Postgres(_) => "redis, postgres accounts",
    };
    eprintln!("{name}: starting {}", binary.display());
    let mut env = Vec::new();
    if let Accounts::Postgres(url) = accounts {
        env.push(("DATABASE_URL", url.clone()));
    }
    if let Some(permits) = args.password_hash_concurrency {
        env.push(("PASSWORD_HASH_CONCURRENCY", permits.to_string()));
    }
    let server = ServerProcess::start(binary, scratch, backend, secrets, &env).await?;
    let addr = server.addr;
    let outcome = async {
        let email = format!("bench-{run_id}@example.com");
        let password = random_hex(12);
        client::register(addr, &email, &password, DISPLAY_NAME).await?;
        let user = client::login(addr, &email, &password).await?;
        eprintln!(
            "{name}: slop-server at {addr}, user {} signed in",
            user.user_id
        );

        let mut rows = Vec::new();
        if !args.no_throughput {
            let baseline = baseline::start(
                &runtimes.baseline,
                backend.clone(),
                Identity {
                    user_id: user.user_id.clone(),
                    email: email.clone(),
                    display_name: DISPLAY_NAME.into(),
                    session_id: user.session_id.clone(),
                    access_token: user.access_token.clone(),
                    service_key: secrets.service_key.clone(),
                },
            )
            .await?;
            eprintln!("{name}: baseline at {}", baseline.addr);
            let floor = floor::start(
                &runtimes.floor,
                backend.clone(),
                floor::Setup {
                    jwt_secret: secrets.jwt.clone(),
                    service_key: secrets.service_key.clone(),
                    users: vec![floor::SignedIn {
                        user_id: user.user_id.clone(),
                        session_id: user.session_id.clone(),
                        email: email.clone(),
                        display_name: DISPLAY_NAME.into(),
                    }],
                },
            )
            .await;
            let floor = match floor {
                Ok(floor) => floor,
                Err(error) => {
                    baseline.stop().await;
                    return Err(error);
                }
            };
            eprintln!("{name}: floor at {}", floor.addr);
            let measured = throughput(
                args,
                name,
                (addr, server.meter()),
                Targets {
                    baseline: baseline.addr,
                    floor: floor.addr,
                },
                &user.access_token,
                secrets,
            )
            .await;
            floor.stop().await;
            baseline.stop().await;
            rows = measured?;
        }

        let mut bursts = Vec::new();
        if matches!(backend, Backend::Memory) && !args.no_burst {
            let login_email = format!("bench-login-{run_id}@example.com");
            let login_password = random_hex(12);
            client::register(addr, &login_email, &login_password, "Bench logins").await?;
            let concurrency = usize::from(args.burst_concurrency);
            let mut plans = Vec::new();
            if args.burst_rate > 0 {
                let per_task = f64::from(args.burst_rate) / concurrency as f64;
                plans.push((
                    format!("paced {} req/s, {concurrency} tasks", args.burst_rate),
                    Some(Duration::from_secs_f64(1.0 / per_task)),
                ));
            }
            plans.push((format!("closed loop, {concurrency} tasks"), None));
            for (load, pace) in plans {
                let memory_before = server.memory();
                let plan = burst::Plan {
                    concurrency,
                    pace,
                    warmup: args.warmup,
                    idle: args.idle,
                    logins: usize::from(args.burst_logins),
                    bursts: usize::from(args.bursts),
                    gap: Duration::from_secs(1),
                };
                let outcome = burst::run(
                    addr,
                    &user.access_token,
                    &login_email,
                    &login_password,
                    &plan,
                )
                .await?;
                eprintln!(
                    "{name}: me p99 {load}: idle {}, during logins {} (logins p50 {})",
                    report::ms(outcome.idle.p99),
                    report::ms(outcome.during.p99),
                    report::ms(outcome.logins.p50)
                );
                bursts.push(report::Burst {
                    load,
                    logins: plan.logins,
                    outcome,
                    memory_before,
                    memory_after: server.memory(),
                });
            }
        }
        Ok::<_, String>((rows, bursts))
    }
    .await;
    if let Err(error) = server.stop().await {
        eprintln!("warning: {error}");
    }
    outcome
}

/// Where the server keeps accounts (sessions: [`Backend`]).
enum Accounts {
    /// An SQLite file in the run's scratch directory (the default).
    Sqlite,
    /// PostgreSQL, at this URL (a schema of the run's own).
    Postgres(String),
}

/// The display name of the bench's user.
const DISPLAY_NAME: &str = "Bench";

/// The in-process servers slop-server is compared with.
struct Targets {
    baseline: std::net::SocketAddr,
    floor: std::net::SocketAddr,
}

/// The two throughput scenarios of one backend, each on three targets.
async fn throughput(
    args: &Args,
    name: &'static str,
    (server, server_meter): (std::net::SocketAddr, cpu::Meter),
    targets: Targets,
    access_token: &str,
    secrets: &Secrets,
) -> Result<Vec<report::HotPath>, String> {
    let baseline_meter = cpu::Meter::Threads(baseline::THREAD_NAME);
    let floor_meter = cpu::Meter::Threads(floor::THREAD_NAME);
    let concurrency = usize::from(args.concurrency);
    let connections = usize::from(args.grpc_connections);
    let mut rows = Vec::new();

    let row = |scenario: &'static str, stats: Vec<load::Stats>| {
        let [server, baseline, floor] = <[load::Stats; 3]>::try_from(stats)
            .map_err(|_| "three targets measured, three answers expected".to_owned())?;
        for (target, stats) in [
            ("slop-server", &server),
            ("baseline", &baseline),
            ("floor", &floor),
        ] {
            eprintln!(
                "{name}: {scenario} → {target}: {:.0} req/s, p99 {}, {} errors",
                stats.per_second,
                report::ms(stats.p99),
                stats.errors
            );
        }
        Ok::<_, String>(report::HotPath {
            scenario,
            backend: name,
            server,
            baseline,
            floor,
        })
    };

    let stats = load::compare(
        vec![
            (
                RestMe::many(server, access_token, concurrency).await?,
                server_meter.clone(),
            ),
            (
                RestMe::many(targets.baseline, access_token, concurrency).await?,
                baseline_meter.clone(),
            ),
            (
                RestMe::many(targets.floor, access_token, concurrency).await?,
                floor_meter.clone(),
            ),
        ],
        args.warmup,
        args.duration,
        u32::from(args.rounds),
    )
    .await?;
    rows.push(row("REST `GET /api/v1/auth/me`", stats)?);

    let key = &secrets.service_key;
    let mut grpc = Vec::new();
    for (addr, meter) in [
        (server, server_meter),
        (targets.baseline, baseline_meter),
        (targets.floor, floor_meter),
    ] {
        let channels = client::grpc_channels(addr, connections).await?;
        grpc.push((
            GrpcValidate::many(&channels, key, access_token, concurrency)?,
            meter,
        ));
    }
    let stats = load::compare(grpc, args.warmup, args.duration, u32::from(args.rounds)).await?;
    rows.push(row("gRPC `AuthService/ValidateToken`", stats)?);
    Ok(rows)
}
