//! What every benchmark run needs: secrets and ids, a scratch directory,
//! Redis checked before and cleaned after, and durations on the command
//! line.

use std::{
    path::{Path, PathBuf},
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
    let value = value.trim();
    let duration = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // humantime wants a unit; a bare number means seconds.
        value.parse().map(Duration::from_secs).ok()
    } else {
        humantime::parse_duration(value).ok()
    }
    .ok_or_else(|| format!("'{value}' is not a duration such as 8s or 500ms"))?;
    if duration.is_zero() || duration > Duration::from_secs(600) {
        return Err("must be more than 0 and at most 10m".into());
    }
    Ok(duration)
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
    }

    #[test]
    fn secrets_pass_the_servers_rules() {
        let secret = random_hex(32);
        assert_eq!(secret.len(), 64);
        let distinct: std::collections::HashSet<u8> = secret.bytes().collect();
        assert!(distinct.len() >= 12);
    }
}
