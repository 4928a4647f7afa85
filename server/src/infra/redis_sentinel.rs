//! The Sentinels of one primary (REDIS_SENTINELS, REDIS_SENTINEL_MASTER):
//! asked where the primary is ([`Sentinels::primary`]), and listened to for
//! failovers.
//!
//! Asking: every Sentinel at once (`SENTINEL MASTER <name>`), until more
//! than half answered or all did, and the primary named with the newest
//! configuration epoch wins; then that node must say (`ROLE`) it is a
//! primary. A Sentinel cut off from the others during a failover still
//! names the former primary, under the older epoch, and that primary, cut
//! off too, still says it is one: taking the first answer (as redis-rs's
//! sentinel client does) could send writes to a node whose data the
//! failover will throw away. A Sentinel that does not answer holds nothing
//! up once the others have.
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

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::{StreamExt as _, stream::FuturesUnordered};
use redis::{IntoConnectionInfo as _, PushKind, RedisResult, Value};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{redis_context::TIMEOUT, redis_topology::timed_out};

/// The channel on which a Sentinel announces a new primary.
const SWITCH_MASTER: &str = "+switch-master";

/// The pause before listening again, on the next Sentinel.
const LISTEN_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// How often the listening connection is checked.
const LISTENER_CHECK_EVERY: Duration = Duration::from_secs(10);

/// The Sentinels of one primary, asked where it is now. A cheap clone; the
/// listener ends with the last clone.
#[derive(Clone)]
pub struct Sentinels {
    /// A client of each Sentinel (RESP3), in the order given.
    sentinels: Arc<[redis::Client]>,
    /// How the primary is reached, but for its address.
    primary: Arc<PrimaryAccess>,
    master: Arc<str>,
    /// The `host:port` of the primary they named last.
    named: Arc<watch::Sender<Option<String>>>,
    _listener: Arc<DropGuard>,
}

impl Sentinels {
    /// The Sentinels at `urls` (`redis://` or all `rediss://`, as
    /// REDIS_SENTINELS gives them) watching the primary named `master`.
    /// The user and password of the URLs (the first that has some) are
    /// sent to the primary, and to the Sentinels unless `password` is given
    /// (REDIS_SENTINEL_PASSWORD), which the Sentinels get instead; with
    /// `rediss://`, both are reached over TLS, with `certificates` (a
    /// private CA, a client certificate) when given. Starts listening for
    /// failovers, so it must be called within a Tokio runtime; asks nothing
    /// yet.
    pub fn new(
        urls: &[String],
        master: &str,
        password: Option<&str>,
        certificates: Option<&redis::TlsCertificates>,
    ) -> RedisResult<Self> {
        let infos = urls
            .iter()
            .map(|url| url.as_str().into_connection_info())
            .collect::<RedisResult<Vec<_>>>()?;
        let tls = infos
            .iter()
            .any(|info| matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }));
        let settings = infos.iter().map(redis::ConnectionInfo::redis_settings);
        let mut credentials = redis::RedisConnectionInfo::default();
        if let Some(username) = settings.clone().find_map(|settings| settings.username()) {
            credentials = credentials.set_username(username);
        }
        if let Some(secret) = settings.clone().find_map(|settings| settings.password()) {
            credentials = credentials.set_password(secret);
        }
        let to_sentinels = match password {
            Some(password) => redis::RedisConnectionInfo::default().set_password(password),
            None => credentials.clone(),
        }
        .set_protocol(redis::ProtocolVersion::RESP3);
        let certificates = certificates.filter(|_| tls);
        let sentinels: Arc<[redis::Client]> = infos
            .into_iter()
            .map(|info| client(info.set_redis_settings(to_sentinels.clone()), certificates))
            .collect::<RedisResult<Vec<_>>>()?
            .into();
        let named = Arc::new(watch::Sender::new(None));
        let stop = CancellationToken::new();
        tokio::spawn(
            SwitchListener {
                clients: sentinels.to_vec(),
                master: master.into(),
                named: named.clone(),
            }
            .run(stop.clone()),
        );
        Ok(Self {
            sentinels,
            primary: Arc::new(PrimaryAccess {
                tls,
                credentials,
                certificates: certificates.cloned(),
            }),
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
        let (host, port) = newest(self.answers().await)?;
        let client = self.primary.client(&host, port)?;
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&connection_config())
            .await?;
        match redis::cmd("ROLE").query_async(&mut connection).await? {
            redis::Role::Primary { .. } => {}
            _ => {
                return Err(std::io::Error::other(format!(
                    "the node the Sentinels name as the primary `{}` ({host}:{port}) is not a primary (a failover is under way)",
                    self.master
                ))
                .into());
            }
        }
        name(&self.named, format!("{host}:{port}"));
        Ok(client)
    }

    /// What the Sentinels name: every answer until more than half of them
    /// answered, or all did (errors included).
    async fn answers(&self) -> Vec<RedisResult<Named>> {
        let mut asking: FuturesUnordered<_> = self
            .sentinels
            .iter()
            .map(|sentinel| ask_one(sentinel, &self.master))
            .collect();
        let majority = self.sentinels.len() / 2 + 1;
        let mut answers = Vec::new();
        while let Some(answer) = asking.next().await {
            answers.push(answer);
            if answers.iter().filter(|answer| answer.is_ok()).count() >= majority {
                break;
            }
        }
        answers
    }
}

/// How the primary is reached: all but its address, which the Sentinels
/// give.
struct PrimaryAccess {
    tls: bool,
    credentials: redis::RedisConnectionInfo,
    certificates: Option<redis::TlsCertificates>,
}

impl PrimaryAccess {
    fn client(&self, host: &str, port: u16) -> RedisResult<redis::Client> {
        let addr = if self.tls {
            redis::ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host.to_owned(), port)
        };
        let info = addr
            .into_connection_info()?
            .set_redis_settings(self.credentials.clone());
        client(info, self.certificates.as_ref())
    }
}

/// A client of `info`, over TLS with `certificates` when given.
fn client(
    info: redis::ConnectionInfo,
    certificates: Option<&redis::TlsCertificates>,
) -> RedisResult<redis::Client> {
    match certificates {
        Some(certificates) => redis::Client::build_with_tls(info, certificates.clone()),
        None => redis::Client::open(info),
    }
}

/// The timeouts of a connection made to ask one question.
fn connection_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
}

/// The primary one Sentinel names, and under which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    host: String,
    port: u16,
    epoch: u64,
}

/// `SENTINEL MASTER <master>` of the Sentinel `sentinel` reaches.
async fn ask_one(sentinel: &redis::Client, master: &str) -> RedisResult<Named> {
    let mut connection = sentinel
        .get_multiplexed_async_connection_with_config(&connection_config())
        .await?;
    let fields: HashMap<String, String> = redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(master)
        .query_async(&mut connection)
        .await?;
    named_by(&fields).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a Sentinel's SENTINEL MASTER reply without ip, port and config-epoch",
        )
        .into()
    })
}

/// The primary and epoch of a `SENTINEL MASTER` reply.
fn named_by(fields: &HashMap<String, String>) -> Option<Named> {
    Some(Named {
        host: fields.get("ip")?.clone(),
        port: fields.get("port")?.parse().ok()?,
        epoch: fields.get("config-epoch")?.parse().ok()?,
    })
}

/// The primary named under the newest epoch (the first so named), or the
/// last error when no Sentinel answered.
fn newest(answers: Vec<RedisResult<Named>>) -> RedisResult<(String, u16)> {
    let mut best: Option<Named> = None;
    let mut last_error = None;
    for answer in answers {
        match answer {
            Ok(named) if best.as_ref().is_none_or(|best| named.epoch > best.epoch) => {
                best = Some(named);
            }
            Ok(_) => {}
            Err(error) => last_error = Some(error),
        }
    }
    match best {
        Some(named) => Ok((named.host, named.port)),
        None => Err(last_error.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no Sentinel to ask").into()
        })),
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
            None,
            Some(&certificates),
        )
        .unwrap();
        let primary = tls.primary.client("10.0.0.9", 6380).unwrap();
        assert!(matches!(
            primary.get_connection_info().addr(),
            redis::ConnectionAddr::TcpTls { host, port: 6380, .. } if host == "10.0.0.9"
        ));
        assert_eq!(
            primary.get_connection_info().redis_settings().password(),
            Some("secret")
        );
    }

    /// The URLs' credentials go to the primary, and to the Sentinels
    /// unless they have a password of their own.
    #[tokio::test]
    async fn a_sentinel_password_goes_to_the_sentinels_only() {
        let urls = ["redis://app:primary-secret@10.0.0.1:26379".to_owned()];
        let shared = Sentinels::new(&urls, "mymaster", None, None).unwrap();
        let settings = shared.sentinels[0].get_connection_info().redis_settings();
        assert_eq!(
            (settings.username(), settings.password()),
            (Some("app"), Some("primary-secret"))
        );
        let own = Sentinels::new(&urls, "mymaster", Some("sentinel-secret"), None).unwrap();
        let settings = own.sentinels[0].get_connection_info().redis_settings();
        assert_eq!(
            (settings.username(), settings.password()),
            (None, Some("sentinel-secret"))
        );
        let primary = own.primary.client("10.0.0.2", 6379).unwrap();
        let settings = primary.get_connection_info().redis_settings();
        assert_eq!(
            (settings.username(), settings.password()),
            (Some("app"), Some("primary-secret"))
        );
    }

    /// The primary named under the newest configuration epoch wins, however
    /// many name an older one and in whatever order they answered.
    #[test]
    fn the_newest_epoch_names_the_primary() {
        let named = |host: &str, epoch: u64| {
            Ok(Named {
                host: host.into(),
                port: 6379,
                epoch,
            })
        };
        let refused = || Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into());
        let answers = vec![named("old", 3), refused(), named("new", 4), named("old", 3)];
        assert_eq!(newest(answers).unwrap(), ("new".to_owned(), 6379));
        assert_eq!(
            newest(vec![named("first", 2), named("second", 2)])
                .unwrap()
                .0,
            "first"
        );
        let error = newest(vec![refused()]).unwrap_err();
        assert!(error.is_io_error(), "{error}");
        let fields: HashMap<String, String> = [
            ("name", "mymaster"),
            ("ip", "10.0.0.5"),
            ("port", "6380"),
            ("config-epoch", "7"),
            ("flags", "master"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            named_by(&fields),
            Some(Named {
                host: "10.0.0.5".into(),
                port: 6380,
                epoch: 7
            })
        );
        let mut partial = fields.clone();
        partial.remove("config-epoch");
        assert_eq!(named_by(&partial), None);
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
