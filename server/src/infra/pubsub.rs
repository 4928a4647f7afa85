//! The one Redis pub/sub connection of an instance, and the one loop that
//! keeps it: connect, subscribe, pass messages on, and after a drop
//! reconnect with a capped, jittered backoff and subscribe again.
//!
//! Stores do not open pub/sub connections of their own; they add a
//! [`Route`] with a handler:
//! - [`Route::Channel`]: one channel, subscribed for as long as the loop
//!   runs (session revocations);
//! - [`Route::Prefix`]: every channel under a prefix, each subscribed and
//!   unsubscribed on demand with [`PubSub::subscribe`] and
//!   [`PubSub::unsubscribe`] (the channel streams' watched channels).
//!   Subscriptions are counted: a channel stays subscribed until every
//!   subscribe has had its unsubscribe.
//!
//! A handler hears, in order, the messages of its channels, a
//! [`Notice::Subscribed`] after every (re)subscription (what was published
//! while it was not subscribed is lost: catch up), and [`Notice::Lost`]
//! when the connection drops. It runs on the loop, so it must not block:
//! hand anything slow to a task of its own.
//!
//! (Re)subscriptions are numbered ([`Mark`]): `Subscribed` carries the
//! number of the (re)subscription it announces and the channels it covers,
//! and [`PubSub::subscribe`] the number the channel was subscribed under.
//! A channel subscribed under the mark a `Subscribed` carries (or a later
//! one) missed nothing before it, even when its owner hears that notice
//! only after subscribing: catching it up from history then could skip
//! messages still queued behind the notice. Here each connection is one
//! mark and its `Subscribed` covers every channel; the sharded pub/sub of
//! a Redis Cluster ([`super::sharded_pubsub`]) announces the channels of
//! one shard, or those that moved, under a mark of their own.
//!
//! Where the connection goes is [`Servers`]: one server, the nodes of a
//! cluster in turn, or, under Sentinel, the primary the Sentinels name at
//! each (re)connect. Subscribing to a replica would still hear every
//! message (replicas pass PUBLISH on), but catching up reads the primary,
//! and a replica may be promoted or lag: so under Sentinel the health check
//! asks `ROLE` too, and a connection whose node is no longer the primary is
//! dropped and made again to the one the Sentinels name. It is also dropped
//! as soon as the Sentinels name another primary, asked by the commands
//! connection or readiness or announcing a failover (a primary cut off by a
//! partition keeps the connection open and silent until the next health
//! check; one replaced on request keeps it open and working), and a
//! reconnection waiting out its backoff starts at once.
//!
//! [`PubSub::listening`] is true once the connection is subscribed to every
//! channel and every handler has dropped the [`CaughtUp`] of its last
//! `Subscribed` (a handler that needs to read what it missed keeps it until
//! it has). Readiness follows it: no subscription can start without it, and
//! no revocation reaches this instance.

use std::{
    collections::{HashMap, hash_map::Entry},
    time::Duration,
};

use bytes::Bytes;
use redis::{PushInfo, PushKind, Value, aio::MultiplexedConnection};
use tokio::sync::{mpsc, oneshot, watch};

use super::{redis_context::TIMEOUT, redis_topology::Sentinels};

/// How often the loop checks its connection still answers.
pub(super) const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(10);

/// How often, when there are other nodes to go to (a cluster): a node that
/// stops answering is left within this and [`TIMEOUT`], and revocations
/// published meanwhile on other nodes are missed no longer.
const HEALTH_CHECK_EVERY_WITH_OTHERS: Duration = Duration::from_secs(1);

/// Most channels per SUBSCRIBE when resubscribing.
const SUBSCRIBE_BATCH: usize = 256;

/// Which messages a handler gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This one channel, subscribed whenever the connection is up.
    Channel(String),
    /// The channels whose names start with this, each subscribed with
    /// [`PubSub::subscribe`].
    Prefix(String),
}

impl Route {
    pub(super) fn matches(&self, channel: &str) -> bool {
        match self {
            Self::Channel(name) => channel == name,
            Self::Prefix(prefix) => channel.starts_with(prefix.as_str()),
        }
    }
}

/// What a handler hears.
#[derive(Debug)]
pub enum Notice {
    /// A message published on one of the route's channels.
    Message {
        /// The pub/sub channel it came on.
        channel: String,
        /// What was published: one buffer shared by every route that hears
        /// it (a clone per route is a reference count, not a copy).
        payload: Bytes,
    },
    /// Channels of the route are (again) subscribed; messages published
    /// before may have been missed by those of them subscribed under an
    /// earlier mark.
    Subscribed {
        /// The number of this (re)subscription.
        mark: Mark,
        /// The pub/sub channels it covers; `None`: every channel of the
        /// route.
        channels: Option<Vec<String>>,
        /// Dropped once the handler caught up.
        caught_up: CaughtUp,
    },
    /// The connection dropped; [`Notice::Subscribed`] follows when it is
    /// back.
    Lost,
}

#[cfg(test)]
impl Notice {
    /// A `Subscribed` of `channels` under a mark later than any, that
    /// nothing waits for: for tests that hand a listener notices of their
    /// own.
    pub(crate) fn resubscribed(channels: Vec<String>) -> Self {
        Self::Subscribed {
            mark: Mark(u64::MAX),
            channels: Some(channels),
            caught_up: CaughtUp::detached(),
        }
    }
}

/// The number of a (re)subscription, counting from 1: a later one has a
/// greater number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark(pub(super) u64);

/// Held by a handler until it has caught up after a [`Notice::Subscribed`];
/// [`PubSub::listening`] waits for every one to be dropped.
#[derive(Debug)]
pub struct CaughtUp {
    _pending: mpsc::Sender<()>,
}

impl CaughtUp {
    /// One whose drop closes `pending`.
    pub(super) fn new(pending: mpsc::Sender<()>) -> Self {
        Self { _pending: pending }
    }

    /// One that nothing waits for (a route added while the connection was
    /// already up).
    pub(super) fn detached() -> Self {
        Self {
            _pending: mpsc::channel(1).0,
        }
    }
}

/// Where the pub/sub connection goes.
pub enum Servers {
    /// These in turn (RESP3 clients): one server, or the nodes of a
    /// cluster, the next after each drop or failure.
    InTurn(Vec<redis::Client>),
    /// The primary these Sentinels name, asked at each (re)connect.
    SentinelPrimary(Sentinels),
}

impl Servers {
    /// How often the connection is checked: often where another node
    /// would hear what this one no longer passes on; otherwise (one
    /// server, or under Sentinel, which names another primary at once)
    /// every [`HEALTH_CHECK_EVERY`].
    fn check_every(&self) -> Duration {
        match self {
            Self::InTurn(clients) if clients.len() > 1 => HEALTH_CHECK_EVERY_WITH_OTHERS,
            _ => HEALTH_CHECK_EVERY,
        }
    }

    /// Under Sentinel, the primary the Sentinels named last.
    fn named(&self) -> Option<watch::Receiver<Option<String>>> {
        match self {
            Self::InTurn(_) => None,
            Self::SentinelPrimary(sentinels) => Some(sentinels.named()),
        }
    }

    /// Whether `connection` still answers, and under Sentinel whether its
    /// node is still the primary (one demoted to replica keeps its
    /// clients).
    async fn check(&self, connection: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        if let Self::SentinelPrimary(sentinels) = self {
            return match redis::cmd("ROLE").query_async(connection).await? {
                redis::Role::Primary { .. } => Ok(()),
                _ => Err(std::io::Error::other(format!(
                    "the pub/sub connection's node is no longer the primary `{}`",
                    sentinels.master()
                ))
                .into()),
            };
        }
        redis::cmd("PING")
            .query_async::<String>(connection)
            .await
            .map(drop)
    }
}

/// Receives a route's notices; false when its receiver is gone, which ends
/// the route (a [`Route::Channel`] is unsubscribed with it; the owner of a
/// [`Route::Prefix`] unsubscribes what it subscribed).
pub type Handler = Box<dyn FnMut(Notice) -> bool + Send>;

/// The handle on the loop; the loop ends when every clone is dropped.
#[derive(Clone)]
pub struct PubSub {
    requests: mpsc::UnboundedSender<Request>,
    listening: watch::Receiver<bool>,
}

/// What a [`PubSub`] handle asks of the subscriber task.
pub(super) enum Request {
    Route(Route, Handler),
    Subscribe {
        channel: String,
        reply: oneshot::Sender<redis::RedisResult<Mark>>,
    },
    Unsubscribe(String),
    Reconnect(&'static str),
}

impl PubSub {
    /// Starts the loop on a connection to one of `servers`, named `name`
    /// in `CLIENT LIST`. Must be called within a Tokio runtime.
    pub fn start(servers: Servers, name: String) -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        let (up, listening) = watch::channel(false);
        let subscriber = Subscriber {
            named: servers.named(),
            servers,
            turn: 0,
            node: String::new(),
            connection: Mark(0),
            name,
            requests: receiver,
            routes: Vec::new(),
            channels: HashMap::new(),
            up,
        };
        tokio::spawn(subscriber.run());
        Self {
            requests,
            listening,
        }
    }

    /// The handle on a loop that serves `requests` and says on `listening`
    /// when it listens (the sharded pub/sub's).
    pub(super) fn from_parts(
        requests: mpsc::UnboundedSender<Request>,
        listening: watch::Receiver<bool>,
    ) -> Self {
        Self {
            requests,
            listening,
        }
    }

    /// Adds a route; its handler hears [`Notice::Subscribed`] once its
    /// channel is subscribed (at once when the connection is up).
    pub fn route(&self, route: Route, handler: Handler) {
        // Fails only when the loop is gone, at shutdown.
        let _ = self.requests.send(Request::Route(route, handler));
    }

    /// Subscribes `channel` (under a [`Route::Prefix`]) and returns, once
    /// Redis confirmed, the mark it is subscribed under: every message
    /// published after that reaches the route. Fails at once while the
    /// connection is down.
    pub async fn subscribe(&self, channel: String) -> redis::RedisResult<Mark> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Subscribe { channel, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Unsubscribes `channel`.
    pub fn unsubscribe(&self, channel: String) {
        let _ = self.requests.send(Request::Unsubscribe(channel));
    }

    /// Drops the connection and starts over (after the backoff), so every
    /// handler hears [`Notice::Subscribed`] again: for a handler that could
    /// not catch up (Redis failed a read), as a new connection would make it
    /// try again.
    pub fn reconnect(&self, why: &'static str) {
        let _ = self.requests.send(Request::Reconnect(why));
    }

    /// True while the connection is subscribed to every channel and every
    /// handler caught up.
    pub fn listening(&self) -> watch::Receiver<bool> {
        self.listening.clone()
    }
}

/// The error of a request once the loop has ended (only at shutdown).
pub(super) fn stopped() -> redis::RedisError {
    std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the Redis pub/sub loop has stopped",
    )
    .into()
}

/// The error of a subscription while the connection is down.
pub(super) fn not_connected() -> redis::RedisError {
    std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "the pub/sub connection to Redis is down",
    )
    .into()
}

/// Why the loop left a connection.
enum Exit {
    /// Every [`PubSub`] handle is gone.
    Shutdown,
    /// The connection failed, or a handler asked for a new one.
    Reconnect(redis::RedisError),
}

/// The task that owns the connection.
struct Subscriber {
    /// Where to connect.
    servers: Servers,
    /// Which of [`Servers::InTurn`] the next connection is to (modulo
    /// their number).
    turn: usize,
    /// The `host:port` of the node of the current (or last) connection.
    node: String,
    /// Under Sentinel, the primary the Sentinels named last.
    named: Option<watch::Receiver<Option<String>>>,
    /// The mark of the current (or last) connection.
    connection: Mark,
    name: String,
    requests: mpsc::UnboundedReceiver<Request>,
    routes: Vec<(Route, Handler)>,
    /// Channels subscribed under a [`Route::Prefix`], and how many times.
    channels: HashMap<String, usize>,
    up: watch::Sender<bool>,
}

impl Subscriber {
    async fn run(mut self) {
        let mut backoff = Backoff::new();
        let mut was_up = true;
        loop {
            match self.connect().await {
                Ok((connection, pushes)) => {
                    if !was_up {
                        tracing::info!("Redis pub/sub connection is back");
                    }
                    was_up = true;
                    self.connection.0 += 1;
                    let connection_number = self.connection;
                    let (caught_up, waiting) = mpsc::channel(1);
                    self.notify(|| Notice::Subscribed {
                        mark: connection_number,
                        channels: None,
                        caught_up: CaughtUp::new(caught_up.clone()),
                    });
                    drop(caught_up);
                    let since = tokio::time::Instant::now();
                    let exit = self.serve(connection, pushes, waiting).await;
                    self.up.send_replace(false);
                    self.notify(|| Notice::Lost);
                    if since.elapsed() >= Backoff::STABLE {
                        backoff.reset();
                    }
                    match exit {
                        Exit::Shutdown => return,
                        Exit::Reconnect(error) => {
                            tracing::warn!(%error, "Redis pub/sub connection lost; reconnecting");
                        }
                    }
                }
                Err(error) => {
                    if was_up {
                        tracing::warn!(%error, "cannot connect the pub/sub to Redis; retrying");
                    } else {
                        tracing::debug!(%error, "pub/sub still cannot connect to Redis");
                    }
                    was_up = false;
                }
            }
            if !self.wait(backoff.next_delay()).await {
                return;
            }
        }
    }

    /// Gives every route the notice `make` makes, and drops the routes
    /// whose receivers are gone. A dropped [`Route::Channel`] stays
    /// subscribed until the next connection, its messages going nowhere.
    fn notify(&mut self, make: impl Fn() -> Notice) {
        for gone in tell(&mut self.routes, |_| Some(make())) {
            self.forget(gone);
        }
    }

    /// Forgets a route whose receiver is gone, and returns the channel no
    /// route needs any more (no longer resubscribed), if any.
    fn forget(&mut self, route: Route) -> Option<String> {
        let Route::Channel(name) = route else {
            return None;
        };
        let needed = self.routes.iter().any(|(other, _)| other.matches(&name))
            || self.channels.contains_key(&name);
        (!needed).then_some(name)
    }

    /// One subscription of `channel` fewer; true when that was the last.
    fn release(&mut self, channel: &str) -> bool {
        match self.channels.entry(channel.to_owned()) {
            Entry::Occupied(mut count) => {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                    true
                } else {
                    false
                }
            }
            Entry::Vacant(_) => false,
        }
    }

    /// A new connection, subscribed to every channel.
    async fn connect(
        &mut self,
    ) -> redis::RedisResult<(MultiplexedConnection, mpsc::UnboundedReceiver<PushInfo>)> {
        let client = match &self.servers {
            Servers::InTurn(clients) => {
                let Some(client) = clients.get(self.turn % clients.len().max(1)) else {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "no Redis to subscribe on",
                    )
                    .into());
                };
                // A failure or a drop moves on to the next node.
                self.turn = self.turn.wrapping_add(1);
                client.clone()
            }
            Servers::SentinelPrimary(sentinels) => resp3(&sentinels.primary().await?)?,
        };
        self.node = client.get_connection_info().addr().to_string();
        let (mut connection, pushes) = subscriber(&client, &self.name).await?;
        let mut channels: Vec<&str> = self
            .routes
            .iter()
            .filter_map(|(route, _)| match route {
                Route::Channel(name) => Some(name.as_str()),
                Route::Prefix(_) => None,
            })
            .collect();
        channels.extend(self.channels.keys().map(String::as_str));
        for batch in channels.chunks(SUBSCRIBE_BATCH) {
            connection.subscribe(batch).await?;
        }
        Ok((connection, pushes))
    }

    /// Waits `delay` while disconnected, or under Sentinel until they name
    /// another primary: subscriptions fail at once, unsubscriptions and
    /// routes count. False when every [`PubSub`] handle is gone.
    async fn wait(&mut self, delay: Duration) -> bool {
        let until = tokio::time::sleep(delay);
        tokio::pin!(until);
        loop {
            tokio::select! {
                () = &mut until => return true,
                _ = named_next(&mut self.named) => return true,
                request = self.requests.recv() => match request {
                    None => return false,
                    Some(Request::Subscribe { reply, .. }) => {
                        let _ = reply.send(Err(not_connected()));
                    }
                    Some(Request::Unsubscribe(channel)) => {
                        self.release(&channel);
                    }
                    Some(Request::Route(route, handler)) => self.routes.push((route, handler)),
                    Some(Request::Reconnect(_)) => {}
                },
            }
        }
    }

    /// Passes messages on and serves requests until the connection fails.
    async fn serve(
        &mut self,
        mut connection: MultiplexedConnection,
        mut pushes: mpsc::UnboundedReceiver<PushInfo>,
        mut waiting: mpsc::Receiver<()>,
    ) -> Exit {
        let mut caught_up = false;
        let every = self.servers.check_every();
        let mut health = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Requests first: a handler that asks for a new connection
            // before dropping its CaughtUp must not look caught up.
            let outcome = tokio::select! {
                biased;
                request = self.requests.recv() => match request {
                    None => return Exit::Shutdown,
                    Some(request) => self.on_request(request, &mut connection).await,
                },
                push = pushes.recv() => match push {
                    None => Err(not_connected()),
                    Some(push) => match push.kind {
                        PushKind::Disconnection => Err(not_connected()),
                        PushKind::Message => self.on_message(push.data, &mut connection).await,
                        _ => Ok(()),
                    },
                },
                _ = waiting.recv(), if !caught_up => {
                    caught_up = true;
                    self.up.send_replace(true);
                    Ok(())
                }
                _ = health.tick() => self.servers.check(&mut connection).await,
                now = named_next(&mut self.named) => match now {
                    Some(primary) if primary != self.node => Err(std::io::Error::other(
                        "the Sentinels name another primary",
                    )
                    .into()),
                    _ => Ok(()),
                },
            };
            if let Err(error) = outcome {
                return Exit::Reconnect(error);
            }
        }
    }

    async fn on_request(
        &mut self,
        request: Request,
        connection: &mut MultiplexedConnection,
    ) -> redis::RedisResult<()> {
        match request {
            Request::Route(route, mut handler) => {
                if let Route::Channel(name) = &route {
                    connection.subscribe(name).await?;
                }
                let subscribed = Notice::Subscribed {
                    mark: self.connection,
                    channels: None,
                    caught_up: CaughtUp::detached(),
                };
                if handler(subscribed) {
                    self.routes.push((route, handler));
                }
                Ok(())
            }
            Request::Subscribe { channel, reply } => {
                if let Some(count) = self.channels.get_mut(&channel) {
                    *count += 1;
                    let _ = reply.send(Ok(self.connection));
                    return Ok(());
                }
                match connection.subscribe(&channel).await {
                    Ok(()) => {
                        self.channels.insert(channel, 1);
                        let _ = reply.send(Ok(self.connection));
                        Ok(())
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                        Err(not_connected())
                    }
                }
            }
            Request::Unsubscribe(channel) => {
                if self.release(&channel) {
                    connection.unsubscribe(&channel).await?;
                }
                Ok(())
            }
            Request::Reconnect(why) => Err(std::io::Error::other(why).into()),
        }
    }

    /// Hands a message to every route it belongs to.
    async fn on_message(
        &mut self,
        data: Vec<Value>,
        connection: &mut MultiplexedConnection,
    ) -> redis::RedisResult<()> {
        let Some((channel, payload)) = message_of(data) else {
            return Ok(());
        };
        // Routes whose receivers are gone: so are their subscriptions.
        let orphans: Vec<String> = tell(&mut self.routes, |route| {
            route.matches(&channel).then(|| Notice::Message {
                channel: channel.clone(),
                payload: payload.clone(),
            })
        })
        .into_iter()
        .filter_map(|gone| self.forget(gone))
        .collect();
        if !orphans.is_empty() {
            connection.unsubscribe(orphans).await?;
        }
        Ok(())
    }
}

/// Gives each route the notice `make` makes for it (none: not its
/// business), and takes out and returns the routes whose receivers are
/// gone.
pub(super) fn tell(
    routes: &mut Vec<(Route, Handler)>,
    mut make: impl FnMut(&Route) -> Option<Notice>,
) -> Vec<Route> {
    let mut gone = Vec::new();
    let mut index = 0;
    while index < routes.len() {
        let (route, handler) = &mut routes[index];
        let heard = make(route).is_none_or(handler);
        if heard {
            index += 1;
        } else {
            gone.push(routes.remove(index).0);
        }
    }
    gone
}

/// The channel and payload of a message push (`message`, `smessage`);
/// none, logged, for another shape.
pub(super) fn message_of(data: Vec<Value>) -> Option<(String, Bytes)> {
    let mut data = data.into_iter();
    match (data.next(), data.next(), data.next()) {
        (Some(Value::BulkString(channel)), Some(Value::BulkString(payload)), None) => {
            Some((String::from_utf8(channel).ok()?, Bytes::from(payload)))
        }
        _ => {
            tracing::warn!("ignoring a pub/sub message of an unexpected shape");
            None
        }
    }
}

/// A new connection from `client` (RESP3) whose pushes (messages, then a
/// [`PushKind::Disconnection`] when it drops) arrive in order on the
/// returned receiver, with the timeouts of every Redis connection.
pub(super) async fn push_connection(
    client: &redis::Client,
) -> redis::RedisResult<(MultiplexedConnection, mpsc::UnboundedReceiver<PushInfo>)> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_push_sender(sender);
    let connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    Ok((connection, receiver))
}

/// A new pub/sub connection from `client` (RESP3), named `name` in `CLIENT
/// LIST` (characters other than printable ASCII become `_`). Its messages,
/// then a [`PushKind::Disconnection`] when it drops, arrive in order on the
/// returned receiver. It does not reconnect: the loop makes a new one, and
/// resubscribes.
pub(super) async fn subscriber(
    client: &redis::Client,
    name: &str,
) -> redis::RedisResult<(MultiplexedConnection, mpsc::UnboundedReceiver<PushInfo>)> {
    let (mut connection, receiver) = push_connection(client).await?;
    // The name only helps operators (and tests) find the connection.
    let named: redis::RedisResult<()> = super::redis_context::set_name(name)
        .query_async(&mut connection)
        .await;
    if let Err(error) = named {
        tracing::debug!(%error, "could not name the pub/sub connection");
    }
    Ok((connection, receiver))
}

/// The next primary the Sentinels name (never, without Sentinels).
async fn named_next(named: &mut Option<watch::Receiver<Option<String>>>) -> Option<String> {
    let Some(named) = named else {
        return std::future::pending().await;
    };
    if named.changed().await.is_err() {
        return std::future::pending().await;
    }
    named.borrow_and_update().clone()
}

/// `client`'s server and credentials, speaking RESP3 (pushes on a
/// connection that also runs commands).
pub(super) fn resp3(client: &redis::Client) -> redis::RedisResult<redis::Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
}

/// Delays between reconnection attempts: 100 ms doubling up to 5 s, each
/// drawn at random from its upper half so instances that lost Redis together
/// do not return together. Never zero, so a connection that drops as soon as
/// it is made does not spin.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The first delay.
    const BASE: Duration = Duration::from_millis(100);
    /// The longest delay.
    const CAP: Duration = Duration::from_secs(5);
    /// A connection that stayed up this long starts the delays over.
    pub(super) const STABLE: Duration = Duration::from_secs(5);

    pub(super) fn new() -> Self {
        Self::default()
    }

    /// A connection worked (for [`Self::STABLE`] or more): start over.
    pub(super) fn reset(&mut self) {
        self.failures = 0;
    }

    /// The delay before the next attempt.
    pub(super) fn next_delay(&mut self) -> Duration {
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
    use crate::infra::{
        clock::ManualClock,
        redis_context::testing::{PrefixGuard, kill_clients_named, redis},
    };

    /// A route whose notices go to the returned receiver.
    fn forwarding(pubsub: &PubSub, route: Route) -> mpsc::UnboundedReceiver<Notice> {
        let (sender, receiver) = mpsc::unbounded_channel();
        pubsub.route(route, Box::new(move |notice| sender.send(notice).is_ok()));
        receiver
    }

    async fn next(notices: &mut mpsc::UnboundedReceiver<Notice>) -> Notice {
        tokio::time::timeout(Duration::from_secs(5), notices.recv())
            .await
            .expect("a notice within 5 s")
            .expect("the route goes on")
    }

    async fn listening_becomes(pubsub: &PubSub, up: bool) {
        tokio::time::timeout(
            Duration::from_secs(5),
            pubsub.listening().wait_for(|now| *now == up),
        )
        .await
        .unwrap_or_else(|_| panic!("listening did not become {up} within 5 s"))
        .unwrap();
    }

    fn subscribers(channel: &str) -> i64 {
        let (_, count): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query(&mut redis())
            .unwrap();
        count
    }

    /// Readiness waits for every handler to catch up after a
    /// (re)subscription, and drops while the connection is away.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listening_waits_until_every_route_caught_up() {
        let guard = PrefixGuard::new();
        let context = guard.context(ManualClock::starting_now());
        let pubsub = context.pubsub();
        let channel = format!("{}fixed", guard.prefix);
        let mut fixed = forwarding(pubsub, Route::Channel(channel.clone()));
        let Notice::Subscribed {
            mark: first_connection,
            caught_up: first,
            ..
        } = next(&mut fixed).await
        else {
            panic!("subscribed first");
        };
        drop(first);
        listening_becomes(pubsub, true).await;

        kill_clients_named(&format!("{}pubsub", guard.prefix));
        assert!(matches!(next(&mut fixed).await, Notice::Lost));
        let Notice::Subscribed {
            mark: connection,
            caught_up: catching_up,
            ..
        } = next(&mut fixed).await
        else {
            panic!("subscribed again");
        };
        assert!(connection > first_connection, "a new connection's number");
        assert_eq!(subscribers(&channel), 1, "resubscribed");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!*pubsub.listening().borrow(), "not while catching up");
        drop(catching_up);
        listening_becomes(pubsub, true).await;

        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg("hello")
            .query(&mut redis())
            .unwrap();
        match next(&mut fixed).await {
            Notice::Message {
                channel: on,
                payload,
            } => {
                assert_eq!((on, payload.to_vec()), (channel, b"hello".to_vec()));
            }
            other => panic!("expected the message, got {other:?}"),
        }
    }

    /// Channels under a prefix are subscribed on demand, and stay so until
    /// every subscribe had its unsubscribe.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prefix_routes_subscribe_on_demand_counting_subscriptions() {
        let guard = PrefixGuard::new();
        let context = guard.context(ManualClock::starting_now());
        let pubsub = context.pubsub();
        let prefix = format!("{}on-demand:", guard.prefix);
        let mut notices = forwarding(pubsub, Route::Prefix(prefix.clone()));
        let Notice::Subscribed {
            mark: connection, ..
        } = next(&mut notices).await
        else {
            panic!("subscribed first");
        };
        let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
        assert_eq!(pubsub.subscribe(a.clone()).await.unwrap(), connection);
        pubsub.subscribe(a.clone()).await.unwrap();
        pubsub.subscribe(b.clone()).await.unwrap();
        assert_eq!((subscribers(&a), subscribers(&b)), (1, 1));
        pubsub.unsubscribe(a.clone());
        pubsub.unsubscribe(b.clone());
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&a)
            .arg("x")
            .query(&mut redis())
            .unwrap();
        match next(&mut notices).await {
            Notice::Message { channel, .. } => assert_eq!(channel, a, "a is still wanted once"),
            other => panic!("expected a message, got {other:?}"),
        }
        assert_eq!(subscribers(&b), 0);
        pubsub.unsubscribe(a.clone());
        for _ in 0..500 {
            if subscribers(&a) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{a} still subscribed after its last unsubscribe");
    }

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

    #[test]
    fn routes_match_their_channel_or_prefix() {
        let channel = Route::Channel("p:sessions:revoked".into());
        assert!(channel.matches("p:sessions:revoked"));
        assert!(!channel.matches("p:sessions:revoked2"));
        let prefix = Route::Prefix("p:stream:".into());
        assert!(prefix.matches("p:stream:topic:a"));
        assert!(!prefix.matches("q:stream:topic:a"));
    }
}
