//! `soak`: the 10-minute soak of issue #13.
//!
//! It starts the release `slop-server` binary as a child process on
//! 127.0.0.1, with sessions and notification streams in Redis (under a key
//! prefix of the run's own, deleted at the end) and accounts in SQLite;
//! signs in the sockets' users, the `me` user and an account for logins;
//! then holds 10,000 authenticated WebSocket subscribers open while `me`
//! runs at half the capacity measured just before, a backend service
//! publishes to the users' channels and to a topic every socket follows,
//! and logins come at a steady low rate ([`slop_bench::soak`]). Every 30 s
//! it prints a row of a Markdown table to stdout (the server's RSS, each
//! kind of request's rate and latency, errors, CPU), and at the end the
//! verdict on the goal: RSS flat within 5 %, p99 flat, no error. Progress
//! goes to stderr. It exits 1 if anything failed or a message was lost
//! (a goal missed without errors, RSS or p99, exits 0: the verdict says so).
//!
//! Build and run (the server binary is found beside this one):
//!
//! ```sh
//! cargo build --release -p slop-server -p slop-bench && target/release/soak
//! target/release/soak --duration 2m --warmup 20s
//! ```

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use slop_bench::{
    client,
    fanout::{self, Opening},
    server::{Backend, Secrets, ServerProcess, locate},
    setup::{
        Scratch, delete_prefix, exit_status, load_average, parse_duration, parse_duration_up_to,
        ping_redis, raise_open_files, random_hex,
    },
    soak::{self, Parties, Plan},
};

/// The longest soak: the sockets' sessions are never touched by the
/// sockets, and must outlive the run within the server's default idle
/// timeout of a day.
const LONGEST: Duration = Duration::from_secs(12 * 3600);

/// The soak of issue #13: slop-server held at a fraction of its measured
/// `me` capacity, with publishing to 10,000 WebSocket subscribers and
/// logins, for minutes; the server's RSS and each p99 interval by interval,
/// and whether they stay flat.
#[derive(Debug, Clone, Parser)]
#[command(name = "soak", version)]
struct Args {
    /// How long the soak is measured, after the warm-up (at most 12h): a
    /// whole number of --interval.
    #[arg(long, default_value = "10m", value_parser = parse_soak_duration)]
    duration: Duration,

    /// How often the server is sampled and a row printed; the verdict
    /// compares the first interval with the last.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    interval: Duration,

    /// Load before the first measured interval (a row of its own, left
    /// out of the verdict): pools, caches and connections settle.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    warmup: Duration,

    /// The share of the measured `me` capacity the soak paces `me` at
    /// (more than 0, at most 1).
    #[arg(long, default_value_t = 0.5, value_parser = parse_fraction)]
    fraction: f64,

    /// How long the capacity (closed-loop `me`) is measured, after 1s of
    /// warm-up.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    capacity_duration: Duration,

    /// `me` client tasks, one HTTP/1.1 connection each, closed loop for the
    /// capacity; in the soak, paced, at least as many and as many more as
    /// it takes for none to make a request more often than every 25 ms.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,

    /// Authenticated WebSocket subscribers, opened first and held for the
    /// whole run; each follows its user's own channel and the topic.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    sockets: u32,

    /// Users the sockets belong to, round robin (at most --sockets).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    users: u32,

    /// Events per second published to the users' own channels, one user
    /// after the other (each reaches that user's sockets); 0 for none.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    user_rate: u32,

    /// Events per second published to the topic every socket follows (each
    /// reaches every socket); 0 for none.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=1_000))]
    topic_rate: u32,

    /// Logins per minute, each an argon2id hash and a new session, to an
    /// account of their own; 0 for none.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=6_000))]
    logins_per_minute: u32,

    /// How long to wait after the last publish for deliveries.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain: Duration,

    #[command(flatten)]
    opening: Opening,

    /// Redis for sessions and streams (a unique key prefix is used and
    /// deleted at the end).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,

    /// The slop-server binary (default: beside this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

impl Args {
    /// What the options cannot combine, said before anything starts.
    fn check(&self) -> Result<u32, String> {
        if self.users > self.sockets {
            return Err("--users is more than --sockets: some users would have no socket".into());
        }
        if self.interval > self.duration {
            return Err("--interval is longer than --duration".into());
        }
        let (duration, interval) = (self.duration.as_millis(), self.interval.as_millis());
        if duration % interval != 0 {
            return Err(format!(
                "--duration ({}) is not a whole number of --interval ({})",
                humantime::format_duration(self.duration),
                humantime::format_duration(self.interval)
            ));
        }
        let intervals = u32::try_from(duration / interval)
            .map_err(|_| "--duration is too many --intervals".to_owned())?;
        if intervals < 2 {
            return Err("a trend needs at least 2 intervals: shorten --interval".into());
        }
        Ok(intervals)
    }
}

fn parse_soak_duration(value: &str) -> Result<Duration, String> {
    parse_duration_up_to(value, LONGEST)
}

fn parse_fraction(value: &str) -> Result<f64, String> {
    let fraction: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("'{value}' is not a number such as 0.5"))?;
    if fraction > 0.0 && fraction <= 1.0 {
        Ok(fraction)
    } else {
        Err("must be more than 0 and at most 1".into())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    exit_status(
        "soak-client",
        "requests failed or messages were lost (see the verdict)",
        run(args),
    )
}

/// Runs the soak; Ok(whether nothing failed and nothing was lost).
async fn run(args: Args) -> Result<bool, String> {
    let intervals = args.check()?;
    // A descriptor per socket, and room for the rest; the server, started
    // below, inherits the limit (and raises its own).
    raise_open_files(u64::from(args.sockets) + 1024, "pass fewer --sockets")?;
    let load_at_start = load_average();
    let binary = locate(args.server_bin.clone())?;
    ping_redis(&args.redis_url).await?;
    let run_id = random_hex(6);
    let scratch = Scratch::new(&run_id)?;
    let secrets = Secrets::random();
    let prefix = format!("slop-bench:{run_id}:");
    let backend = Backend::Redis {
        url: args.redis_url.clone(),
        prefix: prefix.clone(),
    };
    let plan = Plan {
        sockets: usize::try_from(args.sockets).map_err(|e| e.to_string())?,
        addresses: args.opening.addresses,
        connect_concurrency: usize::from(args.opening.connect_concurrency),
        concurrency: usize::from(args.concurrency),
        capacity_duration: args.capacity_duration,
        fraction: args.fraction,
        user_rate: args.user_rate,
        topic_rate: args.topic_rate,
        logins_per_minute: args.logins_per_minute,
        warmup: args.warmup,
        interval: args.interval,
        intervals,
        drain: args.drain,
        topic: format!("topic:soak-{run_id}"),
    };
    let mut env = fanout::server_env();
    // The `me` user's access token must outlive the run (15 minutes by
    // default, shorter than set-up, warm-up and a 10-minute soak).
    let lifetime = args.warmup + args.duration + Duration::from_secs(3600);
    env.push(("JWT_EXPIRES_IN", format!("{}s", lifetime.as_secs())));
    eprintln!("soak: starting {}", binary.display());
    let server = ServerProcess::start(&binary, scratch.path(), &backend, &secrets, &env).await?;
    let outcome = async {
        let addr = server.addr;
        let users =
            client::sign_in_many(addr, args.users, &format!("soak-{run_id}"), "Soak").await?;
        let me = client::sign_in_many(addr, 1, &format!("soak-me-{run_id}"), "Soak me")
            .await?
            .pop()
            .ok_or("the `me` user did not sign in")?;
        let login_email = format!("soak-login-{run_id}@example.com");
        let login_password = random_hex(12);
        client::register(addr, &login_email, &login_password, "Soak logins").await?;
        eprintln!("soak: slop-server at {addr}, {} users signed in", users.len());

        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let command: Vec<String> = std::iter::once("soak".to_owned())
            .chain(std::env::args().skip(1))
            .collect();
        let settings = format!(
            "`{}`: sessions and streams in the Redis at {}, accounts in SQLite; {} WebSocket subscribers ({} users, from {} loopback addresses), each following its user's channel and one topic; {} events/s to the users' channels in turn and {} events/s to the topic, over gRPC; {} logins a minute to an account of their own; a {}s warm-up, then {} intervals of {}s. {cpus} CPUs shared by the bench, the server and Redis; load average (1, 5, 15 min) at the start {load_at_start}.",
            command.join(" "),
            args.redis_url,
            plan.sockets,
            args.users,
            plan.addresses,
            plan.user_rate,
            plan.topic_rate,
            plan.logins_per_minute,
            plan.warmup.as_secs_f64(),
            plan.intervals,
            plan.interval.as_secs_f64(),
        );
        let parties = Parties {
            server: &server,
            me: &me,
            users: &users,
            service_key: &secrets.service_key,
            login: (&login_email, &login_password),
        };
        soak::run(&plan, &parties, &settings).await
    }
    .await;
    eprintln!("soak: stopping the server");
    let stopped = server.stop().await;
    match delete_prefix(&args.redis_url, &prefix).await {
        Ok(deleted) => eprintln!("redis: deleted {deleted} keys under {prefix}"),
        Err(error) => eprintln!("warning: could not delete the keys under {prefix}: {error}"),
    }
    let outcome = outcome?;
    println!(
        "Load average (1, 5, 15 min) at the end: {}.",
        load_average()
    );
    if let Err(error) = stopped {
        eprintln!("warning: {error}");
    }
    Ok(outcome.verdict.clean())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Args, String> {
        Args::try_parse_from(std::iter::once("soak").chain(extra.iter().copied()))
            .map_err(|error| error.to_string())
    }

    #[test]
    fn the_default_is_the_issues_soak_and_bad_flags_say_why() {
        let default = args(&[]).unwrap();
        assert_eq!(default.check(), Ok(20));
        assert_eq!(default.duration, Duration::from_secs(600));
        assert_eq!(default.fraction, 0.5);
        assert_eq!(
            args(&["--duration", "2m", "--interval", "30s"])
                .unwrap()
                .check(),
            Ok(4)
        );
        let why = |extra: &[&str]| args(extra).unwrap().check().unwrap_err();
        assert!(why(&["--duration", "70s"]).contains("whole number of --interval"));
        assert!(why(&["--duration", "30s"]).contains("at least 2 intervals"));
        assert!(why(&["--duration", "20s"]).contains("longer than --duration"));
        assert!(why(&["--sockets", "10", "--users", "11"]).contains("no socket"));
        for (flags, reason) in [
            (&["--duration", "13h"][..], "at most 12h"),
            (&["--fraction", "0"], "more than 0"),
            (&["--fraction", "1.5"], "at most 1"),
            (&["--fraction", "half"], "such as 0.5"),
            (&["--sockets", "0"], "0 is not in 1..=100000"),
        ] {
            let refused = args(flags).unwrap_err();
            assert!(refused.contains(reason), "{flags:?}: {refused}");
        }
    }
}
