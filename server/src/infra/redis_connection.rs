//! The one way this server connects to Redis: lazily, with short timeouts
//! and few retries. A request fails fast (and the server reports not ready)
//! while Redis is down, the server can start before Redis does, and the
//! connection comes back by itself when Redis returns.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};

/// How long connecting, or one command, may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to Redis at `url`, made on first use.
pub fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config)
}

/// A client for pub/sub connections to `url`, speaking RESP3 (Redis 6 or
/// later), so one connection can subscribe, unsubscribe and run ordinary
/// commands (PING, CLIENT SETNAME) while messages arrive.
pub fn pubsub_client(url: &str) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo as _;
    let info = url.into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
}

/// A new pub/sub connection from `client` (see [`pubsub_client`]), named
/// `name` in `CLIENT LIST` (characters other than printable ASCII become
/// `_`). Its messages, then a [`redis::PushKind::Disconnection`] when it
/// drops, arrive in order on the returned receiver. It does not reconnect:
/// the caller makes a new one, and resubscribes.
pub async fn subscriber(
    client: &redis::Client,
    name: &str,
) -> redis::RedisResult<(
    MultiplexedConnection,
    tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
)> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_push_sender(sender);
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let name: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    // The name only helps operators (and tests) find the connection.
    let named: redis::RedisResult<()> = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(name)
        .query_async(&mut connection)
        .await;
    if let Err(error) = named {
        tracing::debug!(%error, "could not name the pub/sub connection");
    }
    Ok((connection, receiver))
}

/// Delays between reconnection attempts: 100 ms doubling up to 5 s, each
/// drawn at random from its upper half so instances that lost Redis together
/// do not return together. Never zero, so a connection that drops as soon as
/// it is made does not spin.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The first delay.
    const BASE: Duration = Duration::from_millis(100);
    /// The longest delay.
    const CAP: Duration = Duration::from_secs(5);
    /// A connection that stayed up this long starts the delays over.
    pub const STABLE: Duration = Duration::from_secs(5);

    /// A backoff with no failures yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A connection worked (for [`Self::STABLE`] or more): start over.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = Self::BASE
            .saturating_mul(1 << self.failures.min(16))
            .min(Self::CAP);
        self.failures = self.failures.saturating_add(1);
        let fraction = f64::from(getrandom::u32().unwrap_or(u32::MAX)) / f64::from(u32::MAX);
        ceiling.mul_f64(0.5 + 0.5 * fraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_and_starts_over() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        for (i, delay) in delays.iter().enumerate() {
            let ceiling = (Backoff::BASE * (1 << i)).min(Backoff::CAP);
            assert!(
                *delay >= ceiling / 2 && *delay <= ceiling,
                "delay {i}: {delay:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Backoff::BASE);
    }
}
