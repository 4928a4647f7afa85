//! What every benchmark run needs: secrets and ids, a scratch directory,
//! Redis checked before and cleaned after, durations on the command line,
//! enough open files, the machine's load to report, and an exit status.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

/// Fails early, with advice, when Redis does not answer.
pub async fn ping_redis(url: &str) -> Result<(), String> {
    let advice = |error: redis::RedisError| {
        format!("Redis at {url} does not answer ({error}): start it, or pass --no-redis")
    };
    let client = redis::Client::open(url).map_err(advice)?;
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .map_err(advice)?;
    let _: String = redis::cmd("PING")
        .query_async(&mut connection)
        .await
        .map_err(advice)?;
    Ok(())
}

/// Deletes every key under `prefix`; answers how many.
pub async fn delete_prefix(url: &str, prefix: &str) -> Result<usize, String> {
    let client = redis::Client::open(url).map_err(|error| error.to_string())?;
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|error| error.to_string())?;
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .map_err(|error| error.to_string())?;
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .map_err(|error| error.to_string())?;
            deleted += keys.len();
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// A temporary directory for the run's SQLite files, removed at the end.
pub struct Scratch(PathBuf);

impl Scratch {
    /// Creates the directory.
    pub fn new(run_id: &str) -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!("slop-bench-{run_id}"));
        std::fs::create_dir_all(&path)
            .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
        Ok(Self(path))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `bytes` random bytes from the OS, in hex (secrets, passwords, ids).
pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).expect("the OS random generator works");
    buffer.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A duration: whole seconds (`8`) or what `humantime` reads (`500ms`,
/// `8s`, `1m`), more than 0 and at most 10 minutes.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    parse_duration_up_to(value, Duration::from_secs(600))
}

/// A duration as [`parse_duration`] reads it, more than 0 and at most
/// `most`.
pub fn parse_duration_up_to(value: &str, most: Duration) -> Result<Duration, String> {
    let value = value.trim();
    let duration = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // humantime wants a unit; a bare number means seconds.
        value.parse().map(Duration::from_secs).ok()
    } else {
        humantime::parse_duration(value).ok()
    }
    .ok_or_else(|| format!("'{value}' is not a duration such as 8s or 500ms"))?;
    if duration.is_zero() || duration > most {
        return Err(format!(
            "must be more than 0 and at most {}",
            humantime::format_duration(most)
        ));
    }
    Ok(duration)
}

/// Raises the limit on open files to at least `needed`: the soft limit up
/// to the hard one, and the hard one too if it is lower (which takes
/// CAP_SYS_RESOURCE, as root has); otherwise an error saying to raise the
/// hard limit or to `fewer` (what the benchmark can do with less).
/// Processes started afterwards (the server) inherit the limit.
pub fn raise_open_files(needed: u64, fewer: &str) -> Result<(), String> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|current| current < needed) {
        limit.current = Some(needed);
        if limit.maximum.is_some_and(|hard| hard < needed) {
            limit.maximum = Some(needed);
        }
        setrlimit(Resource::Nofile, limit).map_err(|error| {
            format!(
                "{needed} open files are needed and the limit could not be raised ({error}): raise the hard limit (ulimit -Hn, LimitNOFILE), or {fewer}"
            )
        })?;
    }
    Ok(())
}

/// The first three fields of /proc/loadavg (1, 5 and 15 minutes), or
/// `n/a`: how busy the machine the figures come from was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or("n/a".into(), |load| {
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// The end of a benchmark binary's `main`: runs `run` on a multi-threaded
/// runtime whose threads are named `threads`, and turns its answer into
/// the exit status: success for `Ok(true)`; failure for `Ok(false)`, saying
/// `unclean` (what went wrong, where the report says more), and for an
/// error, saying it.
pub fn exit_status(
    threads: &str,
    unclean: &str,
    run: impl Future<Output = Result<bool, String>>,
) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(threads)
        .build()
        .expect("client runtime");
    match runtime.block_on(run) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: {unclean}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Now, in Unix milliseconds (how sessions keep time).
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, millis)
}

/// The idle timeout a use slides a session by, in the baseline and the
/// floor: the server's default SESSION_TTL.
pub const IDLE_TTL: Duration = Duration::from_secs(86_400);

/// The absolute session lifetime in the baseline and the floor: the
/// server's default SESSION_MAX_LIFETIME.
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// A duration in whole milliseconds.
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_or_units() {
        assert_eq!(parse_duration("8"), Ok(Duration::from_secs(8)));
        assert_eq!(parse_duration("8s"), Ok(Duration::from_secs(8)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("x").is_err());
        assert_eq!(
            parse_duration("11m"),
            Err("must be more than 0 and at most 10m".into())
        );
        assert_eq!(
            parse_duration_up_to("2h", Duration::from_secs(3 * 3600)),
            Ok(Duration::from_secs(7200))
        );
    }

    #[test]
    fn secrets_pass_the_servers_rules() {
        let secret = random_hex(32);
        assert_eq!(secret.len(), 64);
        let distinct: std::collections::HashSet<u8> = secret.bytes().collect();
        assert!(distinct.len() >= 12);
    }
}
