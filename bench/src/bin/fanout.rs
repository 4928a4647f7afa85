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
//! To see where the work of a scaled-out deployment lands, `--instances`
//! runs several server processes per Redis row (sockets round robin,
//! every topic on every instance), `--topics` spreads the subscribers over
//! topics that each get `--rate` events/s, `--cluster` adds a row on a
//! Redis Cluster of the bench's own (3 primaries, 3 replicas) and
//! `--own-redis` puts the Redis row on a redis-server of its own. With any
//! of them, every Redis node's CPU time and commands are read too (`INFO`),
//! and a second table shows them per event and per socket.
//!
//! Build and run (the server binary is found beside this one):
//!
//! ```sh
//! cargo build --release -p slop-server -p slop-bench && target/release/fanout
//! target/release/fanout --subscribers 3000 --topics 30 --instances 3 \
//!     --no-memory --no-baseline --own-redis --cluster
//! ```

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::Parser;
use slop_bench::{
    client,
    fanout::{
        self, Opening, Outcome, Plan, Target,
        baseline::{self, BaselineProcess},
        spread,
    },
    redis_info::RedisNodes,
    redis_servers::{OwnCluster, OwnRedis},
    server::{Backend, Secrets, ServerProcess},
    setup::{
        Scratch, delete_prefix, exit_status, load_average, parse_duration, ping_redis,
        raise_open_files, random_hex,
    },
};

/// Fan-out load test of slop-server's notification streams: WebSocket
/// subscribers of one topic (or several), a gRPC publisher, memory and
/// Redis backends, one server instance (or several), and a Redis Cluster.
#[derive(Debug, Clone, Parser)]
#[command(name = "fanout", version)]
struct Args {
    /// WebSocket subscribers of the topic.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    subscribers: u32,

    /// Users signed in; the sockets are theirs, round robin.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    users: u32,

    /// Events published per second (to each topic).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rate: u32,

    /// How long events are published.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,

    /// How long to wait for deliveries after the last publish.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain: Duration,

    #[command(flatten)]
    opening: Opening,

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

    /// Server instances per Redis row, sharing its Redis: the sockets go
    /// to them round robin, the publisher to the first. Above 1 there is
    /// no memory row (instances share events through Redis only).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=16))]
    instances: u8,

    /// Topics: subscriber i subscribes to topic i mod this many, and each
    /// topic gets --rate events/s, a Publish call per event. Above 1 there
    /// is no baseline row (it serves one topic).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    topics: u16,

    /// Add a row on a Redis Cluster of the bench's own: 3 primaries with a
    /// replica each on free loopback ports, stopped at the end.
    #[arg(long)]
    cluster: bool,

    /// Run the Redis row on a redis-server of the bench's own (a free
    /// loopback port, no persistence, stopped at the end) instead of
    /// --redis-url, so that its CPU time and commands are the run's alone.
    #[arg(long)]
    own_redis: bool,

    /// The slop-server binary (default: beside this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

impl Args {
    /// Whether this run measures how work spreads (several instances or
    /// topics, a Redis or cluster of its own): then the Redis nodes are
    /// read and the report says so; otherwise it is the run of issue #4.
    fn scale_out(&self) -> bool {
        self.instances > 1 || self.topics > 1 || self.cluster || self.own_redis
    }

    /// What the options leave out or cannot combine, said before anything
    /// starts.
    fn check(&self) -> Result<(), String> {
        if self.instances > 1 && !self.no_memory {
            return Err(
                "--instances above 1 needs a store the instances share: add --no-memory".into(),
            );
        }
        if self.topics > 1 && !self.no_baseline {
            return Err("the baseline serves one topic: add --no-baseline to --topics".into());
        }
        if u32::from(self.topics) > self.subscribers {
            return Err("--topics is more than --subscribers: some topics would have none".into());
        }
        if self.no_memory && self.no_redis && !self.cluster && self.no_baseline {
            return Err(
                "--no-memory, --no-redis and --no-baseline leave nothing to measure".into(),
            );
        }
        Ok(())
    }
}

/// A row's name: the backend's, and `×N` with several instances.
fn row_name(backend: &str, instances: usize) -> String {
    if instances > 1 {
        format!("{backend} ×{instances}")
    } else {
        backend.to_owned()
    }
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(baseline::SERVE_FLAG) {
        return serve_baseline();
    }
    let args = Args::parse();
    // Each process needs a descriptor per socket; the server and the
    // baseline inherit this process's limit.
    let needed = u64::from(args.subscribers) + 1024;
    if let Err(error) = raise_open_files(needed, "pass fewer --subscribers or --no-baseline") {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    exit_status(
        "fanout-client",
        "events were lost or something failed (see the report)",
        run(args),
    )
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

/// Runs every backend; Ok(whether nothing was lost and nothing failed).
async fn run(args: Args) -> Result<bool, String> {
    args.check()?;
    let load_at_start = load_average();
    let binary = slop_bench::server::locate(args.server_bin.clone())?;
    let run_id = random_hex(6);
    let scratch = Scratch::new(&run_id)?;
    let secrets = Secrets::random();
    if !args.no_redis && !args.own_redis {
        ping_redis(&args.redis_url).await?;
    }
    let plan = Plan {
        subscribers: usize::try_from(args.subscribers).map_err(|e| e.to_string())?,
        addresses: args.opening.addresses,
        connect_concurrency: usize::from(args.opening.connect_concurrency),
        rate: args.rate,
        duration: args.duration,
        drain: args.drain,
        payload_bytes: usize::try_from(args.payload_bytes).map_err(|e| e.to_string())?,
        topics: spread::topic_names(&format!("bench-{run_id}"), usize::from(args.topics)),
    };
    let prefix = format!("slop-bench:{run_id}:");
    let rows = Rows {
        args: &args,
        plan: &plan,
        binary: &binary,
        scratch: &scratch,
        secrets: &secrets,
        run_id: &run_id,
    };

    let mut outcomes = Vec::new();
    if !args.no_memory {
        outcomes.push(rows.run(&Backend::Memory, None).await?);
    }
    if !args.no_redis {
        outcomes.push(if args.own_redis {
            let redis = OwnRedis::start().await?;
            eprintln!("redis: a redis-server of our own at {}", redis.url());
            rows.on_redis(&redis.url(), &prefix).await?
        } else {
            let outcome = rows.on_redis(&args.redis_url, &prefix).await;
            match delete_prefix(&args.redis_url, &prefix).await {
                Ok(deleted) => eprintln!("redis: deleted {deleted} keys under {prefix}"),
                Err(error) => {
                    eprintln!("warning: could not delete the keys under {prefix}: {error}")
                }
            }
            outcome?
        });
    }
    if args.cluster {
        eprintln!("cluster: starting 3 primaries and 3 replicas");
        let cluster = OwnCluster::start().await?;
        outcomes.push(rows.on_cluster(&cluster, &prefix).await?);
    }
    if !args.no_baseline {
        eprintln!("baseline: starting");
        let baseline = BaselineProcess::start().await?;
        outcomes.push(fanout::run(&plan, "baseline".into(), Target::Baseline(&baseline)).await?);
    }

    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let command: Vec<String> = std::iter::once("fanout".to_owned())
        .chain(std::env::args().skip(1))
        .collect();
    let settings = if args.scale_out() {
        let topics = plan.topics.len();
        let redis = match (args.no_redis, args.own_redis) {
            (true, _) => None,
            (false, true) => Some("one redis-server of the bench's own".to_owned()),
            (false, false) => Some(format!("the Redis at {}", args.redis_url)),
        };
        let stores: Vec<String> =
            redis
                .into_iter()
                .chain(args.cluster.then(|| {
                    "a Redis Cluster of the bench's own (3 primaries, 3 replicas)".to_owned()
                }))
                .collect();
        format!(
            "`{}`: {} WebSocket subscribers ({} users, from {} loopback addresses) over {topics} topic(s), subscriber i of topic i mod {topics}; {} server instance(s) per row, every topic's subscribers spread over them; {} events/s to each topic ({} in all), a Publish call per event, all through the first instance, for {}s with {} bytes of filler; Redis: {}; {cpus} CPUs shared by the client, the servers and every Redis node. Load average (1, 5, 15 min) at the start {load_at_start}, at the end {}.",
            command.join(" "),
            plan.subscribers,
            args.users,
            plan.addresses,
            args.instances,
            plan.rate,
            u64::from(plan.rate) * topics as u64,
            plan.duration.as_secs_f64(),
            plan.payload_bytes,
            if stores.is_empty() {
                "none".to_owned()
            } else {
                stores.join(", then ")
            },
            load_average(),
        )
    } else {
        format!(
            "`{}`: {} WebSocket subscribers of one topic ({} users, from {} loopback addresses), {} events/s for {}s with {} bytes of filler, published over gRPC; {cpus} CPUs shared by client and server.",
            command.join(" "),
            plan.subscribers,
            args.users,
            plan.addresses,
            plan.rate,
            plan.duration.as_secs_f64(),
            plan.payload_bytes,
        )
    };
    println!("{}", fanout::render(&settings, cpus, &outcomes));
    Ok(outcomes
        .iter()
        .all(|o: &Outcome| o.lost == 0 && o.errors.1 == 0))
}

/// What every row of a run shares.
struct Rows<'a> {
    args: &'a Args,
    plan: &'a Plan,
    binary: &'a Path,
    scratch: &'a Scratch,
    secrets: &'a Secrets,
    run_id: &'a str,
}

impl Rows<'_> {
    /// The row on the Redis at `url`, its node read in a scale-out run.
    async fn on_redis(&self, url: &str, prefix: &str) -> Result<Outcome, String> {
        let backend = Backend::Redis {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
        };
        let nodes = if self.args.scale_out() {
            let name = url.trim_start_matches("redis://").to_owned();
            Some(RedisNodes::connect(vec![(name, url.to_owned())]).await?)
        } else {
            None
        };
        self.run(&backend, nodes.as_ref()).await
    }

    /// The row on the bench's own cluster, every node read, after checking
    /// that the topics spread over every primary.
    async fn on_cluster(&self, cluster: &OwnCluster, prefix: &str) -> Result<Outcome, String> {
        // The server's stream key of a channel (notifications/redis).
        let keys = self
            .plan
            .topics
            .iter()
            .map(|topic| format!("{prefix}stream:{{{topic}}}"))
            .collect();
        let topics_per_primary: Vec<(String, usize)> = cluster
            .keys_per_primary(keys)
            .await?
            .into_iter()
            .map(|(port, topics)| (format!("primary 127.0.0.1:{port}"), topics))
            .collect();
        let spread: Vec<String> = topics_per_primary
            .iter()
            .map(|(primary, topics)| format!("{topics} on {primary}"))
            .collect();
        eprintln!("cluster: topics per primary: {}", spread.join(", "));
        if self.plan.topics.len() >= topics_per_primary.len()
            && topics_per_primary.iter().any(|(_, topics)| *topics == 0)
        {
            return Err(format!(
                "the topics do not reach every primary ({}): the row would not show sharding",
                spread.join(", ")
            ));
        }
        let backend = Backend::Cluster {
            nodes: cluster.nodes_variable(),
            prefix: prefix.to_owned(),
        };
        let nodes = RedisNodes::connect(cluster.nodes()).await?;
        let mut outcome = self.run(&backend, Some(&nodes)).await?;
        if let Some(redis) = &mut outcome.redis {
            redis.topics_per_primary = topics_per_primary;
        }
        Ok(outcome)
    }

    /// One backend: its server instances, users, the fan-out run, and a
    /// graceful stop of every instance.
    async fn run(&self, backend: &Backend, redis: Option<&RedisNodes>) -> Result<Outcome, String> {
        let instances = match backend {
            Backend::Memory => 1,
            _ => usize::from(self.args.instances),
        };
        let name = row_name(backend.name(), instances);
        let env = fanout::server_env();
        let mut servers = Vec::with_capacity(instances);
        // One after the other: the first creates the SQLite schema the
        // others then find.
        for _ in 0..instances {
            eprintln!("{name}: starting {}", self.binary.display());
            match ServerProcess::start(
                self.binary,
                self.scratch.path(),
                backend,
                self.secrets,
                &env,
            )
            .await
            {
                Ok(server) => servers.push(server),
                Err(error) => {
                    if let Err(stopping) = stop_all(servers).await {
                        eprintln!("warning: {stopping}");
                    }
                    return Err(error);
                }
            }
        }
        let outcome = async {
            let users = client::sign_in_many(
                servers[0].addr,
                self.args.users,
                &format!("fanout-{}", self.run_id),
                "Fan-out",
            )
            .await?;
            eprintln!("{name}: {} users signed in", users.len());
            let target = Target::Server {
                processes: &servers,
                users: &users,
                service_key: &self.secrets.service_key,
                redis,
            };
            fanout::run(self.plan, name.clone(), target).await
        }
        .await;
        let stopped = stop_all(servers).await;
        let outcome = outcome?;
        stopped?;
        Ok(outcome)
    }
}

/// Stops every instance, each with SIGTERM; the first failure.
async fn stop_all(servers: Vec<ServerProcess>) -> Result<(), String> {
    let mut result = Ok(());
    for server in servers {
        let stopped = server.stop().await;
        if result.is_ok() {
            result = stopped;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("fanout").chain(extra.iter().copied())).unwrap()
    }

    #[test]
    fn rows_are_named_by_backend_and_instances() {
        assert_eq!(row_name("redis", 1), "redis");
        assert_eq!(row_name("redis", 3), "redis ×3");
        assert_eq!(row_name("cluster", 3), "cluster ×3");
    }

    #[test]
    fn the_default_run_is_issue_4s_and_options_that_cannot_hold_are_refused() {
        let default = args(&[]);
        assert!(!default.scale_out());
        assert_eq!(default.check(), Ok(()));
        let cluster = args(&[
            "--subscribers",
            "3000",
            "--topics",
            "30",
            "--instances",
            "3",
            "--no-memory",
            "--no-baseline",
            "--own-redis",
            "--cluster",
        ]);
        assert!(cluster.scale_out());
        assert_eq!(cluster.check(), Ok(()));
        let why = |extra: &[&str]| args(extra).check().unwrap_err();
        assert!(why(&["--instances", "3"]).contains("--no-memory"));
        assert!(why(&["--topics", "3", "--no-memory"]).contains("--no-baseline"));
        assert!(
            why(&["--subscribers", "2", "--topics", "3", "--no-baseline"])
                .contains("more than --subscribers")
        );
        assert!(
            why(&["--no-memory", "--no-redis", "--no-baseline"]).contains("nothing to measure")
        );
        assert_eq!(
            args(&["--no-memory", "--no-redis", "--no-baseline", "--cluster"]).check(),
            Ok(())
        );
    }
}
