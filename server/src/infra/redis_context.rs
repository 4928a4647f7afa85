//! The one context through which an instance talks to Redis, built once at
//! start-up and handed to every store (sessions, rate limits, channel
//! streams) and to health: one multiplexed connection for commands, one
//! pub/sub connection ([`PubSub`]) for everything that listens, the key
//! prefix and the clock. So an instance holds two connections to Redis
//! whatever it does, and TLS or Redis Cluster would be added here alone.
//!
//! Connections are made lazily, with short timeouts and few retries: a
//! request fails fast (and the server reports not ready) while Redis is
//! down, the server can start before Redis does, and both connections come
//! back by themselves when Redis returns. In `CLIENT LIST` they are named
//! `<prefix>commands` and `<prefix>pubsub`.

use std::{sync::Arc, time::Duration};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::infra::observe::ObservedRedis;

use super::{clock::SharedClock, pubsub::PubSub};

/// How long connecting, or one command, may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Redis as every store of one instance sees it.
#[derive(Clone)]
pub struct RedisContext {
    commands: ConnectionManager,
    pubsub: PubSub,
    prefix: Arc<str>,
    clock: SharedClock,
    /// The commands connection's name in `CLIENT LIST`.
    name: Arc<str>,
}

impl RedisContext {
    /// The context of Redis at `url`, keys (and channels) under `prefix`,
    /// times from `clock`. Connects on first use; starts the pub/sub loop
    /// (so it must run within a Tokio runtime), which ends when the last
    /// clone is dropped.
    pub fn connect(url: &str, prefix: &str, clock: SharedClock) -> redis::RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let commands = ConnectionManager::new_lazy_with_config(redis::Client::open(url)?, config)?;
        let pubsub = PubSub::start(pubsub_client(url)?, format!("{prefix}pubsub"));
        Ok(Self {
            commands,
            pubsub,
            prefix: prefix.into(),
            clock,
            name: format!("{prefix}commands").into(),
        })
    }

    /// The shared connection for commands (a cheap clone of one
    /// multiplexed connection), every call on it timed and traced
    /// ([`crate::infra::observe`]).
    pub fn commands(&self) -> ObservedRedis {
        ObservedRedis::new(self.commands.clone())
    }

    /// The instance's pub/sub connection.
    pub fn pubsub(&self) -> &PubSub {
        &self.pubsub
    }

    /// What every key and channel of this instance starts with
    /// (REDIS_KEY_PREFIX).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The clock the stores compare expiry with (never Redis's own).
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// A round trip on the commands connection, for readiness. It names
    /// the connection again each time, since the connection manager
    /// reconnects without the name.
    pub async fn ping(&self) -> redis::RedisResult<()> {
        let (_, _pong): ((), String) = redis::pipe()
            .add_command(set_name(&self.name))
            .cmd("PING")
            .query_async(&mut self.commands())
            .await?;
        Ok(())
    }

    /// True while the pub/sub connection is subscribed and every listener
    /// caught up (see [`PubSub::listening`]).
    pub fn listening(&self) -> tokio::sync::watch::Receiver<bool> {
        self.pubsub.listening()
    }
}

/// `CLIENT SETNAME name`, with characters other than printable ASCII
/// replaced by `_` (Redis refuses them).
pub(super) fn set_name(name: &str) -> redis::Cmd {
    let name: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    redis::cmd("CLIENT").arg("SETNAME").arg(name).take()
}

/// A client for pub/sub connections to `url`, speaking RESP3 (Redis 6 or
/// later), so one connection can subscribe, unsubscribe and run ordinary
/// commands (PING, CLIENT SETNAME) while messages arrive.
fn pubsub_client(url: &str) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo as _;
    let info = url.into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
}

/// What the Redis tests share: the server they use and a key prefix of
/// their own.
#[cfg(test)]
pub(crate) mod testing {
    use std::time::Duration;

    use super::RedisContext;
    use crate::infra::clock::SharedClock;

    /// The Redis tests use, failing loudly when it is not running.
    pub(crate) fn redis_url() -> String {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let reachable = redis::Client::open(url.as_str())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(2)))
            .is_ok();
        assert!(
            reachable,
            "Redis is not reachable at {url}: start it (redis-server --daemonize yes --port 6379) or set REDIS_URL"
        );
        url
    }

    /// A synchronous connection to the test Redis, for looking behind a
    /// store's back.
    pub(crate) fn redis() -> redis::Connection {
        redis::Client::open(redis_url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// The client ids of connections whose name is exactly `name`.
    pub(crate) fn clients_named(name: &str) -> Vec<String> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut redis())
            .unwrap();
        list.lines()
            .filter(|line| line.split(' ').any(|f| f == format!("name={name}")))
            .filter_map(|line| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix("id="))
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Closes the connections named `name` from the server's side.
    pub(crate) fn kill_clients_named(name: &str) -> Vec<String> {
        let ids = clients_named(name);
        for id in &ids {
            let _: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query(&mut redis())
                .unwrap();
        }
        ids
    }

    /// A key prefix of a test's own; deletes every key under it when the
    /// test ends.
    pub(crate) struct PrefixGuard {
        pub(crate) url: String,
        pub(crate) prefix: String,
    }

    impl PrefixGuard {
        pub(crate) fn new() -> Self {
            Self {
                url: redis_url(),
                prefix: format!("slop-test:{}:", uuid::Uuid::new_v4().simple()),
            }
        }

        /// A context (one instance) on the guard's prefix.
        pub(crate) fn context(&self, clock: SharedClock) -> RedisContext {
            RedisContext::connect(&self.url, &self.prefix, clock).expect("a Redis URL")
        }
    }

    impl Drop for PrefixGuard {
        fn drop(&mut self) {
            let Ok(mut connection) =
                redis::Client::open(self.url.as_str()).and_then(|client| client.get_connection())
            else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query(&mut connection)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut connection);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use crate::infra::clock::ManualClock;

    /// One context is two connections, named after the prefix, whatever
    /// the stores on it do.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_context_holds_two_named_connections() {
        let guard = PrefixGuard::new();
        let context = guard.context(ManualClock::starting_now());
        context.ping().await.unwrap();
        let mut listening = context.listening();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            listening.wait_for(|up| *up),
        )
        .await
        .expect("the pub/sub connection comes up")
        .unwrap();
        assert_eq!(clients_named(&format!("{}commands", guard.prefix)).len(), 1);
        assert_eq!(clients_named(&format!("{}pubsub", guard.prefix)).len(), 1);
    }
}
