//! The Sentinels of one primary (REDIS_SENTINELS, REDIS_SENTINEL_MASTER):
//! asked where the primary is ([`Sentinels::primary`], redis-rs's sentinel
//! client, which also checks with `ROLE` that the node it names is a
//! primary), and listened to for failovers.
//!
//! Why listen: a connection to a primary that failed over is not always
//! told. A primary that crashed drops its connections, and one cut off
//! answers nothing (both are noticed by a failure or a timeout), but one
//! the Sentinels demoted in a failover they were asked for (`SENTINEL
//! FAILOVER`, maintenance) keeps serving as a primary, accepting writes the
//! replication will then throw away, until the Sentinels turn it into a
//! replica some 8 s later. So one connection at a time to a Sentinel
//! subscribes to `+switch-master`, which each Sentinel publishes when it
//! adopts a new primary, and [`Sentinels::named`] changes at once: the
//! commands and pub/sub connections leave the former primary on their next
//! use.

use std::{sync::Arc, time::Duration};

use redis::{
    IntoConnectionInfo as _, PushKind, RedisResult, Value,
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{redis_context::TIMEOUT, redis_topology::timed_out};

/// The channel on which a Sentinel announces a new primary.
const SWITCH_MASTER: &str = "+switch-master";

/// The pause before listening again, on the next Sentinel.
const LISTEN_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// How often the listening connection is checked.
const LISTENER_CHECK_EVERY: Duration = Duration::from_secs(10);

/// The Sentinels of one primary, asked where it is now. A cheap clone;
/// clones ask one at a time (the client keeps a connection to each
/// Sentinel). The listener ends with the last clone.
#[derive(Clone)]
pub struct Sentinels {
    client: Arc<tokio::sync::Mutex<SentinelClient>>,
    master: Arc<str>,
    /// The `host:port` of the primary they named last.
    named: Arc<watch::Sender<Option<String>>>,
    _listener: Arc<DropGuard>,
}

impl Sentinels {
    /// The Sentinels at `urls` (`redis://` or all `rediss://`, as
    /// REDIS_SENTINELS gives them) watching the primary named `master`.
    /// The user and password of the URLs (the first that has some) are
    /// sent to the Sentinels and to the primary alike; with `rediss://`,
    /// both are reached over TLS, with `certificates` (a private CA, a
    /// client certificate) when given. Starts listening for failovers, so
    /// it must be called within a Tokio runtime; asks nothing yet.
    pub fn new(
        urls: &[String],
        master: &str,
        certificates: Option<&redis::TlsCertificates>,
    ) -> RedisResult<Self> {
        let infos = urls
            .iter()
            .map(|url| url.as_str().into_connection_info())
            .collect::<RedisResult<Vec<_>>>()?;
        let tls = infos
            .iter()
            .any(|info| matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }));
        let mut builder = SentinelClientBuilder::new(
            infos.iter().map(|info| info.addr().clone()),
            master,
            SentinelServerType::Master,
        )?;
        let settings = infos.iter().map(redis::ConnectionInfo::redis_settings);
        if let Some(username) = settings.clone().find_map(|settings| settings.username()) {
            builder = builder
                .set_client_to_sentinel_username(username)
                .set_client_to_redis_username(username);
        }
        if let Some(password) = settings.clone().find_map(|settings| settings.password()) {
            builder = builder
                .set_client_to_sentinel_password(password)
                .set_client_to_redis_password(password);
        }
        if tls {
            builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
            if let Some(certificates) = certificates {
                builder = builder
                    .set_client_to_sentinel_certificates(certificates.clone())
                    .set_client_to_redis_certificates(certificates.clone());
            }
        }
        // The listener's clients: each Sentinel's own credentials, RESP3
        // (messages arrive on a connection that also answers PING).
        let listeners = infos
            .into_iter()
            .map(|info| {
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_protocol(redis::ProtocolVersion::RESP3);
                let info = info.set_redis_settings(settings);
                match certificates {
                    Some(certificates) if tls => {
                        redis::Client::build_with_tls(info, certificates.clone())
                    }
                    _ => redis::Client::open(info),
                }
            })
            .collect::<RedisResult<Vec<_>>>()?;
        let named = Arc::new(watch::Sender::new(None));
        let stop = CancellationToken::new();
        tokio::spawn(
            SwitchListener {
                clients: listeners,
                master: master.into(),
                named: named.clone(),
            }
            .run(stop.clone()),
        );
        Ok(Self {
            client: Arc::new(tokio::sync::Mutex::new(builder.build()?)),
            master: master.into(),
            named,
            _listener: Arc::new(stop.drop_guard()),
        })
    }

    /// The name the Sentinels know the primary by.
    pub fn master(&self) -> &str {
        &self.master
    }

    /// A client of the primary the Sentinels name now, once it said
    /// (`ROLE`) that it is the primary: within [`TIMEOUT`], else an error
    /// (no Sentinel answers, or none names a primary that is up, as during
    /// a failover).
    pub async fn primary(&self) -> RedisResult<redis::Client> {
        tokio::time::timeout(TIMEOUT, self.ask())
            .await
            .map_err(|_| timed_out("no Sentinel named a primary that answered in time"))?
    }

    /// The `host:port` of the primary they named last (asked, or
    /// announcing a failover), changed whenever that is another: a
    /// connection to the one before should leave it, even when nothing on
    /// it failed yet.
    pub fn named(&self) -> watch::Receiver<Option<String>> {
        self.named.subscribe()
    }

    /// [`primary`](Self::primary), without its time limit (the caller's
    /// bounds it).
    pub(super) async fn ask(&self) -> RedisResult<redis::Client> {
        let client = self.client.lock().await.async_get_client().await?;
        name(&self.named, client.get_connection_info().addr().to_string());
        Ok(client)
    }
}

/// Records `address` as the primary named last, telling the receivers
/// only when it is another.
fn name(named: &watch::Sender<Option<String>>, address: String) {
    named.send_if_modified(|named| {
        let other = named.as_deref() != Some(address.as_str());
        if other {
            *named = Some(address);
        }
        other
    });
}

/// Listens for `+switch-master` on one Sentinel at a time, the next after
/// each failure.
struct SwitchListener {
    clients: Vec<redis::Client>,
    master: Arc<str>,
    named: Arc<watch::Sender<Option<String>>>,
}

impl SwitchListener {
    async fn run(self, stop: CancellationToken) {
        for client in self.clients.iter().cycle() {
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                outcome = self.listen(client) => outcome,
            };
            if let Err(error) = outcome {
                tracing::debug!(%error, "not listening to a Sentinel for failovers; trying the next");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(LISTEN_AGAIN_AFTER) => {}
            }
        }
    }

    /// Subscribes on `client`'s Sentinel and passes announcements on until
    /// the connection fails.
    async fn listen(&self, client: &redis::Client) -> RedisResult<()> {
        let (mut connection, mut pushes) = super::pubsub::push_connection(client).await?;
        connection.subscribe(SWITCH_MASTER).await?;
        let mut check = tokio::time::interval_at(
            tokio::time::Instant::now() + LISTENER_CHECK_EVERY,
            LISTENER_CHECK_EVERY,
        );
        loop {
            tokio::select! {
                push = pushes.recv() => match push {
                    Some(push) if push.kind == PushKind::Message => self.on_switch(&push.data),
                    Some(push) if push.kind != PushKind::Disconnection => {}
                    _ => return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "the Sentinel closed the connection",
                    )
                    .into()),
                },
                _ = check.tick() => {
                    redis::cmd("PING").query_async::<String>(&mut connection).await?;
                }
            }
        }
    }

    /// `+switch-master <master> <old ip> <old port> <new ip> <new port>`.
    fn on_switch(&self, data: &[Value]) {
        let [_channel, Value::BulkString(payload)] = data else {
            return;
        };
        let payload = String::from_utf8_lossy(payload);
        let fields: Vec<&str> = payload.split_whitespace().collect();
        if let [master, _, _, ip, port] = fields[..]
            && master == &*self.master
        {
            tracing::info!(master, primary = %format!("{ip}:{port}"), "the Sentinels switched to a new primary");
            name(&self.named, format!("{ip}:{port}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sentinels_take_plain_or_tls_urls_and_the_master_name() {
        let plain = Sentinels::new(
            &[
                "redis://127.0.0.1:26379".into(),
                "redis://10.0.0.2:26379".into(),
            ],
            "mymaster",
            None,
        )
        .unwrap();
        assert_eq!(plain.master(), "mymaster");
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: None,
        };
        let tls = Sentinels::new(
            &["rediss://:secret@10.0.0.1:26380".into()],
            "mymaster",
            Some(&certificates),
        );
        assert!(tls.is_ok());
    }

    #[test]
    fn a_switch_of_this_master_names_its_new_primary() {
        let (named, mut receiver) = watch::channel(None);
        let listener = SwitchListener {
            clients: Vec::new(),
            master: "mymaster".into(),
            named: Arc::new(named),
        };
        let announce = |payload: &str| {
            [
                Value::BulkString(SWITCH_MASTER.into()),
                Value::BulkString(payload.into()),
            ]
        };
        listener.on_switch(&announce("other 10.0.0.1 6379 10.0.0.2 6379"));
        assert!(!receiver.has_changed().unwrap(), "another master's");
        listener.on_switch(&announce("mymaster 10.0.0.1 6379 10.0.0.2 6380"));
        assert!(receiver.has_changed().unwrap());
        assert_eq!(
            receiver.borrow_and_update().as_deref(),
            Some("10.0.0.2:6380")
        );
        listener.on_switch(&announce("mymaster 10.0.0.1 6379 10.0.0.2 6380"));
        assert!(!receiver.has_changed().unwrap(), "the same again");
    }
}
