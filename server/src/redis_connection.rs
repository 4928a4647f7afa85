//! The one way this server connects to Redis: lazily, with short timeouts
//! and few retries. A request fails fast (and the server reports not ready)
//! while Redis is down, the server can start before Redis does, and the
//! connection comes back by itself when Redis returns.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

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
