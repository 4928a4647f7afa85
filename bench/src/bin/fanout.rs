//! `fanout`: the notification fan-out benchmark of `slop-server`.
//!
//! For each stream backend (memory, then Redis) it starts the release
//! `slop-server` binary as a child process on 127.0.0.1, signs in a number
//! of users, opens N authenticated WebSocket subscribers of one topic (the
//! users share them round robin; sockets come from several loopback
//! addresses), and publishes to the topic over gRPC at a steady rate with a
//! service key ([`slop_bench::fanout`]). Then the same subscribers measure
//! a minimal fan-out server, this binary in a process of its own
//! ([`slop_bench::fanout::baseline`]): the floor this machine allows. It
//! prints a Markdown table to stdout and progress to stderr, and exits 1 if
//! an event was lost or anything failed.
//!
//! Build and run (the server binary is found beside this one):
//!
//! ```sh
//! cargo build --release -p slop-server -p slop-bench && target/release/fanout
//! ```

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use slop_bench::{
    client::{self, SignedIn},
    fanout::{
        self, Outcome, Plan, Target,
        baseline::{self, BaselineProcess},
    },
    server::{Backend, Secrets, ServerProcess},
    setup::{Scratch, delete_prefix, parse_duration, ping_redis, random_hex},
};
use tokio::task::JoinSet;

/// Fan-out load test of slop-server's notification streams: WebSocket
/// subscribers of one topic, a gRPC publisher, memory and Redis backends.
#[derive(Debug, Clone, Parser)]
#[command(name = "fanout", version)]
struct Args {
    /// WebSocket subscribers of the topic.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    subscribers: u32,

    /// Users signed in; the sockets are theirs, round robin.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    users: u32,

    /// Events published per second.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rate: u32,

    /// How long events are published.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,

    /// How long to wait for deliveries after the last publish.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain: Duration,

    /// Loopback addresses the sockets connect from (127.0.0.1 and up).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=254))]
    addresses: u8,

    /// Sockets being opened at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    connect_concurrency: u16,

    /// Bytes of filler text in each event's payload.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=60_000))]
    payload_bytes: u32,

    /// Redis for the Redis backend (a unique key prefix is used and deleted).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,

    /// Skip the Redis backend.
    #[arg(long)]
    no_redis: bool,

    /// Skip the memory backend.
    #[arg(long)]
    no_memory: bool,

    /// Skip the baseline: a minimal fan-out server (this binary, in a
    /// process of its own) that shows what the machine itself allows.
    #[arg(long)]
    no_baseline: bool,

    /// The slop-server binary (default: beside this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(baseline::SERVE_FLAG) {
        return serve_baseline();
    }
    let args = Args::parse();
    // Each process needs a descriptor per socket; the server and the
    // baseline inherit this process's limit.
    let needed = u64::from(args.subscribers) + 1024;
    if let Err(error) = raise_open_files(needed) {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fanout-client")
        .build()
        .expect("client runtime");
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: events were lost or something failed (see the report)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// This binary as the baseline's process (see [`baseline::serve_forever`]).
fn serve_baseline() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fanout-baseline")
        .build()
        .expect("baseline runtime");
    match runtime.block_on(baseline::serve_forever()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the limit on open files to at least `needed`: the soft limit up
/// to the hard one, and the hard one too if it is lower (which takes
/// CAP_SYS_RESOURCE, as root has); an error saying what to do otherwise.
fn raise_open_files(needed: u64) -> Result<(), String> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|current| current < needed) {
        limit.current = Some(needed);
        if limit.maximum.is_some_and(|hard| hard < needed) {
            limit.maximum = Some(needed);
        }
        setrlimit(Resource::Nofile, limit).map_err(|error| {
            format!(
                "{needed} open files are needed and the limit could not be raised ({error}): raise the hard limit (ulimit -Hn, LimitNOFILE), or pass fewer --subscribers or --no-baseline"
            )
        })?;
    }
    Ok(())
}

/// Runs every backend; Ok(whether nothing was lost and nothing failed).
async fn run(args: Args) -> Result<bool, String> {
    let binary = slop_bench::server::locate(args.server_bin.clone())?;
    let run_id = random_hex(6);
    let scratch = Scratch::new(&run_id)?;
    let secrets = Secrets::random();
    let mut backends = Vec::new();
    if !args.no_memory {
        backends.push(Backend::Memory);
    }
    if !args.no_redis {
        ping_redis(&args.redis_url).await?;
        backends.push(Backend::Redis {
            url: args.redis_url.clone(),
            prefix: format!("slop-bench:{run_id}:"),
        });
    }
    if backends.is_empty() && args.no_baseline {
        return Err("--no-memory, --no-redis and --no-baseline leave nothing to measure".into());
    }
    let plan = Plan {
        subscribers: usize::try_from(args.subscribers).map_err(|e| e.to_string())?,
        addresses: args.addresses,
        connect_concurrency: usize::from(args.connect_concurrency),
        rate: args.rate,
        duration: args.duration,
        drain: args.drain,
        payload_bytes: usize::try_from(args.payload_bytes).map_err(|e| e.to_string())?,
        topic: format!("topic:bench-{run_id}"),
    };

    let mut outcomes = Vec::new();
    for backend in &backends {
        let outcome =
            run_backend(&args, &plan, &binary, &scratch, backend, &secrets, &run_id).await;
        if let Backend::Redis { url, prefix } = backend {
            match delete_prefix(url, prefix).await {
                Ok(deleted) => eprintln!("redis: deleted {deleted} keys under {prefix}"),
                Err(error) => {
                    eprintln!("warning: could not delete the keys under {prefix}: {error}")
                }
            }
        }
        outcomes.push(outcome?);
    }
    if !args.no_baseline {
        eprintln!("baseline: starting");
        let baseline = BaselineProcess::start().await?;
        outcomes.push(fanout::run(&plan, "baseline", Target::Baseline(&baseline)).await?);
    }

    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let command: Vec<String> = std::iter::once("fanout".to_owned())
        .chain(std::env::args().skip(1))
        .collect();
    let settings = format!(
        "`{}`: {} WebSocket subscribers of one topic ({} users, from {} loopback addresses), {} events/s for {}s with {} bytes of filler, published over gRPC; {cpus} CPUs shared by client and server.",
        command.join(" "),
        plan.subscribers,
        args.users,
        plan.addresses,
        plan.rate,
        plan.duration.as_secs_f64(),
        plan.payload_bytes,
    );
    println!("{}", fanout::render(&settings, cpus, &outcomes));
    Ok(outcomes
        .iter()
        .all(|o: &Outcome| o.lost == 0 && o.errors.1 == 0))
}

/// One backend: server, users, the fan-out run, and a graceful stop.
async fn run_backend(
    args: &Args,
    plan: &Plan,
    binary: &std::path::Path,
    scratch: &Scratch,
    backend: &Backend,
    secrets: &Secrets,
    run_id: &str,
) -> Result<Outcome, String> {
    let name = backend.name();
    eprintln!("{name}: starting {}", binary.display());
    let env = [
        // Every socket comes from a few addresses, faster than a person
        // could open them: lift the connection throttle.
        ("STREAM_CONNECTION_LIMIT", "1000000".to_owned()),
        // Thousands of sockets per source address: no per-address cap.
        ("HTTP_MAX_CONNECTIONS_PER_IP", "0".to_owned()),
    ];
    let server = ServerProcess::start(binary, scratch.path(), backend, secrets, &env).await?;
    let outcome = async {
        let users = sign_in(server.addr, args.users, run_id).await?;
        eprintln!("{name}: {} users signed in", users.len());
        let target = Target::Server {
            process: &server,
            users: &users,
            service_key: &secrets.service_key,
        };
        fanout::run(plan, name, target).await
    }
    .await;
    let stopped = server.stop().await;
    let outcome = outcome?;
    stopped?;
    Ok(outcome)
}

/// Registers and signs in `count` users, a few at a time.
async fn sign_in(
    addr: std::net::SocketAddr,
    count: u32,
    run_id: &str,
) -> Result<Vec<SignedIn>, String> {
    let password = random_hex(12);
    let mut users = Vec::new();
    let mut pending = JoinSet::new();
    for n in 0..count {
        if pending.len() >= 8
            && let Some(done) = pending.join_next().await
        {
            users.push(done.map_err(|error| error.to_string())??);
        }
        let email = format!("fanout-{run_id}-{n}@example.com");
        let password = password.clone();
        pending.spawn(async move {
            client::register(addr, &email, &password, "Fan-out").await?;
            client::login(addr, &email, &password).await
        });
    }
    while let Some(done) = pending.join_next().await {
        users.push(done.map_err(|error| error.to_string())??);
    }
    Ok(users)
}
