//! Sharded pub/sub on a Redis Cluster (`SSUBSCRIBE`, Redis 7): the channel
//! streams' subscriptions of an instance, each on a connection to the
//! primary that owns the channel's hash slot, one connection per primary.
//! Unlike classic pub/sub, whose every message every node carries, a
//! sharded message stays within its shard: the cluster's pub/sub capacity
//! grows with its shards.
//!
//! It serves the requests of a [`PubSub`] handle, so the stream listener
//! does not know which pub/sub it has; what differs is what it hears:
//! - [`Notice::Subscribed`] names the channels it covers, under a mark of
//!   its own: those of a primary whose connection was made again, or
//!   those that moved to another primary (a failover promoted a replica,
//!   or a slot was migrated), once they are subscribed there. Channels of
//!   other shards are not caught up for nothing, and a channel subscribed
//!   on the same connection before the notice keeps its queued messages.
//! - [`Notice::Lost`] when the connection to one primary drops.
//!
//! Where each channel lives comes from `CLUSTER SLOTS` (module `slots`), asked
//! of every node this task is connected to at once (the first answer
//! wins; else of the seed nodes): every second, every 100 ms while a
//! channel has nowhere to go, and at once after any sign of a change: a
//! dropped connection, a command refused (`MOVED`, `CLUSTERDOWN`), or a
//! `sunsubscribe` Redis sent on its own (it does so for the channels of a
//! slot it gives away). Each channel whose slot has another owner in the
//! map is subscribed on the new owner and announced once confirmed; the
//! old owner unsubscribed it itself (a migration) or is gone (a failover),
//! and a connection to a node that serves no slot any more is left.
//!
//! Confirmations are read from the connection's pushes, never from
//! command replies: redis-rs takes a `sunsubscribe` Redis sent on its own
//! for the reply to whatever request is in flight, so replies cannot be
//! trusted while slots move. Each `SSUBSCRIBE` names one channel (one
//! confirmation each) and a channel counts as subscribed when its
//! `ssubscribe` push arrives; one not confirmed within [`TIMEOUT`] means a
//! connection that no longer answers, which is made again. Commands run on
//! tasks of their own, so a node that stopped answering delays nothing but
//! its own channels.
//!
//! [`PubSub::listening`] is true once the slot map is known, every
//! channel a subscriber was told of is subscribed on its primary, and
//! every handler dropped the [`CaughtUp`] of every notice.

use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use redis::{PushInfo, PushKind, Value, aio::MultiplexedConnection};
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};

use self::slots::{SlotMap, ask_slots, slot_of};
use super::{
    pubsub::{
        Backoff, CaughtUp, HEALTH_CHECK_EVERY, Handler, Mark, Notice, PubSub, Request, Route,
        message_of, not_connected, resp3, subscriber, tell,
    },
    redis_context::TIMEOUT,
};

/// How often the slot map is asked for when nothing suggests a change.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// The least time between two slot map requests.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_millis(100);

/// How often the loop looks at deadlines and due reconnections.
const TICK: Duration = Duration::from_millis(50);

/// Most commands per pipeline.
const BATCH: usize = 256;

/// Most events handled before the moved channels are announced.
const EVENTS_PER_TURN: usize = 1024;

/// Starts the sharded pub/sub of the cluster whose seed nodes are `seeds`
/// (RESP3 clients; a discovered node is reached with the first one's
/// credentials and TLS settings), its connections named `name`. Must be
/// called within a Tokio runtime.
pub fn start(seeds: Vec<redis::Client>, name: String) -> PubSub {
    let (requests, receiver) = mpsc::unbounded_channel();
    let (up, listening) = watch::channel(false);
    let (events, inbox) = mpsc::unbounded_channel();
    let shards = Shards {
        seeds,
        name,
        requests: receiver,
        events,
        inbox,
        routes: Vec::new(),
        slots: None,
        refreshing: false,
        refresh_wanted: true,
        last_refresh: None,
        nodes: HashMap::new(),
        shard_ids: 0,
        wanted: HashMap::new(),
        unsettled: HashSet::new(),
        marks: 0,
        moved: Vec::new(),
        asks: HashMap::new(),
        catching_up: 0,
        up,
    };
    tokio::spawn(shards.run());
    PubSub::from_parts(requests, listening)
}

/// Where a wanted channel is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// Subscribed nowhere: its primary is not known or not connected.
    Homeless,
    /// `SSUBSCRIBE` sent on this connection, not confirmed yet.
    Asked {
        node: String,
        shard: u64,
        at: Instant,
    },
    /// Confirmed on this connection.
    Home { node: String, shard: u64 },
}

/// A channel some subscriber wants.
struct Wanted {
    /// Subscriptions not yet unsubscribed.
    count: usize,
    place: Place,
    /// Subscriptions waiting for the first confirmation.
    waiters: Vec<oneshot::Sender<redis::RedisResult<Mark>>>,
    /// Whether a subscriber was told it is subscribed: a later
    /// confirmation is a move, announced with [`Notice::Subscribed`].
    told: bool,
    /// When it was first wanted: waiters give up [`TIMEOUT`] after.
    since: Instant,
}

/// A primary this task subscribes on.
enum Node {
    /// A connection is being made (its shard id).
    Connecting(u64),
    /// Connected.
    Up(Shard),
    /// Not connected; the next attempt is due then.
    Down { retry_at: Instant },
}

/// The state of one primary: its connection and when to try again.
struct NodeState {
    node: Node,
    backoff: Backoff,
}

/// One connection to a primary.
struct Shard {
    /// Tells events of this connection from those of earlier ones.
    id: u64,
    connection: MultiplexedConnection,
    /// This task's `SUNSUBSCRIBE`s not confirmed yet, per channel: a
    /// `sunsubscribe` beyond them is Redis's own (the slot moved).
    leaving: HashMap<String, usize>,
    /// When the connection was made.
    since: Instant,
    /// When it was last checked.
    checked: Instant,
}

/// What the tasks of the loop tell it.
enum Event {
    /// A push of a shard's connection (confirmations, messages, its drop);
    /// the node's name shared, not copied per message.
    Push {
        node: Arc<str>,
        shard: u64,
        push: PushInfo,
    },
    /// A connection was made, or could not be.
    Connected {
        node: String,
        shard: u64,
        outcome: redis::RedisResult<(MultiplexedConnection, mpsc::UnboundedReceiver<PushInfo>)>,
    },
    /// A command failed on a shard's connection.
    Failed {
        node: String,
        shard: u64,
        error: redis::RedisError,
    },
    /// The answer to a slot map request.
    Slots(redis::RedisResult<SlotMap>),
    /// A handler caught up after a notice.
    CaughtUp,
}

/// The task of the sharded pub/sub.
struct Shards {
    seeds: Vec<redis::Client>,
    name: String,
    requests: mpsc::UnboundedReceiver<Request>,
    events: mpsc::UnboundedSender<Event>,
    inbox: mpsc::UnboundedReceiver<Event>,
    routes: Vec<(Route, Handler)>,
    /// The last slot map (none before the first answer).
    slots: Option<SlotMap>,
    /// A slot map request is under way.
    refreshing: bool,
    /// Something suggests the map changed: ask as soon as allowed.
    refresh_wanted: bool,
    /// When the map was last asked for.
    last_refresh: Option<Instant>,
    /// The primaries, by `host:port`.
    nodes: HashMap<String, NodeState>,
    /// The id the last shard connection was given.
    shard_ids: u64,
    /// The channels subscribed through the handle, and the channels of
    /// [`Route::Channel`]s.
    wanted: HashMap<String, Wanted>,
    /// Those of them not [`Place::Home`] (none, most of the time: the
    /// periodic work looks at these only, never at every channel).
    unsettled: HashSet<String>,
    /// The last mark given.
    marks: u64,
    /// Channels confirmed again since the last notice, to announce.
    moved: Vec<String>,
    /// Channels to `SSUBSCRIBE` at the end of this turn, per node.
    asks: HashMap<String, Vec<String>>,
    /// Notices whose [`CaughtUp`] a handler still holds.
    catching_up: usize,
    up: watch::Sender<bool>,
}

impl Shards {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                request = self.requests.recv() => match request {
                    None => return,
                    Some(request) => self.on_request(request),
                },
                Some(event) = self.inbox.recv() => {
                    self.on_event(event);
                    for _ in 1..EVENTS_PER_TURN {
                        match self.inbox.try_recv() {
                            Ok(event) => self.on_event(event),
                            Err(_) => break,
                        }
                    }
                }
                _ = tick.tick() => self.on_tick(),
            }
            self.flush_asks();
            self.announce();
            self.up.send_if_modified(|up| {
                let now = self.listening();
                std::mem::replace(up, now) != now
            });
        }
    }

    /// Whether the map is known, every channel a subscriber was told of is
    /// subscribed, and every handler caught up.
    fn listening(&self) -> bool {
        self.slots.is_some()
            && self.catching_up == 0
            && self.moved.is_empty()
            && self
                .unsettled
                .iter()
                .all(|channel| self.wanted.get(channel).is_none_or(|wanted| !wanted.told))
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Route(route, mut handler) => {
                let subscribed = Notice::Subscribed {
                    mark: Mark(self.marks),
                    channels: Some(Vec::new()),
                    caught_up: CaughtUp::detached(),
                };
                if !handler(subscribed) {
                    return;
                }
                if let Route::Channel(name) = &route {
                    self.want(name.clone(), None);
                }
                self.routes.push((route, handler));
            }
            Request::Subscribe { channel, reply } => self.want(channel, Some(reply)),
            Request::Unsubscribe(channel) => self.release(&channel),
            Request::Reconnect(why) => {
                tracing::warn!(why, "resubscribing every shard channel");
                let nodes: Vec<String> = self.nodes.keys().cloned().collect();
                for node in nodes {
                    self.drop_shard(&node);
                }
            }
        }
    }

    /// One subscription more of `channel`; `reply` hears once it is
    /// subscribed (at once when it is), or that it cannot be now.
    fn want(&mut self, channel: String, reply: Option<oneshot::Sender<redis::RedisResult<Mark>>>) {
        let mark = Mark(self.marks);
        match self.wanted.entry(channel.clone()) {
            Entry::Occupied(mut entry) => {
                let wanted = entry.get_mut();
                wanted.count += 1;
                if let Some(reply) = reply {
                    if matches!(wanted.place, Place::Home { .. }) {
                        let _ = reply.send(Ok(mark));
                    } else if !wanted.told {
                        wanted.waiters.push(reply);
                    } else {
                        wanted.count -= 1;
                        let _ = reply.send(Err(not_connected()));
                    }
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(Wanted {
                    count: 1,
                    place: Place::Homeless,
                    waiters: reply.into_iter().collect(),
                    told: false,
                    since: Instant::now(),
                });
                self.unsettled.insert(channel.clone());
                self.place(&channel);
                // Nowhere to go now (a known primary that is down, a slot
                // nobody serves): fail at once, as the classic pub/sub does
                // while its connection is down. Before the first slot map,
                // or while its primary is being connected, wait.
                let hopeless = match self.owner(&channel) {
                    None => self.slots.is_some(),
                    Some(node) => matches!(
                        self.nodes.get(node).map(|state| &state.node),
                        Some(Node::Down { .. })
                    ),
                };
                if hopeless
                    && self
                        .wanted
                        .get(&channel)
                        .is_some_and(|wanted| wanted.place == Place::Homeless)
                {
                    self.fail_waiters(&channel);
                }
            }
        }
    }

    /// One subscription of `channel` fewer; the last unsubscribes it.
    fn release(&mut self, channel: &str) {
        let Entry::Occupied(mut entry) = self.wanted.entry(channel.to_owned()) else {
            return;
        };
        entry.get_mut().count = entry.get().count.saturating_sub(1);
        if entry.get().count > 0 {
            return;
        }
        let wanted = entry.remove();
        self.unsettled.remove(channel);
        if let Place::Asked { node, shard, .. } | Place::Home { node, shard } = wanted.place {
            self.leave(&node, shard, vec![channel.to_owned()]);
        }
    }

    /// Answers the waiting subscriptions of `channel` that it cannot be
    /// subscribed now, and forgets it when nothing else wants it.
    fn fail_waiters(&mut self, channel: &str) {
        let Some(wanted) = self.wanted.get_mut(channel) else {
            return;
        };
        let waiters = std::mem::take(&mut wanted.waiters);
        wanted.count = wanted.count.saturating_sub(waiters.len());
        for waiter in waiters {
            let _ = waiter.send(Err(not_connected()));
        }
        if wanted.count == 0 {
            self.wanted.remove(channel);
            self.unsettled.remove(channel);
        }
    }

    /// The primary that owns `channel`'s slot, by the last map.
    fn owner(&self, channel: &str) -> Option<&str> {
        self.slots.as_ref()?.owner(slot_of(channel))
    }

    /// Sends `channel` where the map says it lives: asked there when that
    /// primary is connected, else homeless until it is (and a connection
    /// is on its way).
    fn place(&mut self, channel: &str) {
        let Some(node) = self.owner(channel).map(str::to_owned) else {
            self.set_place(channel, Place::Homeless);
            self.refresh_wanted = true;
            return;
        };
        match self.nodes.get(&node).map(|state| &state.node) {
            Some(Node::Up(shard)) => {
                let place = Place::Asked {
                    node: node.clone(),
                    shard: shard.id,
                    at: Instant::now(),
                };
                self.set_place(channel, place);
                self.asks.entry(node).or_default().push(channel.to_owned());
            }
            _ => {
                self.set_place(channel, Place::Homeless);
                self.connect(&node);
            }
        }
    }

    /// Where `channel` is now; every change of place goes through here.
    fn set_place(&mut self, channel: &str, place: Place) {
        let Some(wanted) = self.wanted.get_mut(channel) else {
            return;
        };
        if matches!(place, Place::Home { .. }) {
            self.unsettled.remove(channel);
        } else if !self.unsettled.contains(channel) {
            self.unsettled.insert(channel.to_owned());
        }
        wanted.place = place;
    }

    /// Starts a connection to `node` unless there is one, or one is being
    /// made, or its next attempt is not due yet.
    fn connect(&mut self, node: &str) {
        let now = Instant::now();
        let state = self
            .nodes
            .entry(node.to_owned())
            .or_insert_with(|| NodeState {
                node: Node::Down { retry_at: now },
                backoff: Backoff::new(),
            });
        match state.node {
            Node::Down { retry_at } if retry_at <= now => {}
            _ => return,
        }
        self.shard_ids += 1;
        let shard = self.shard_ids;
        state.node = Node::Connecting(shard);
        let client = self.client_for(node);
        let (events, name, node) = (self.events.clone(), self.name.clone(), node.to_owned());
        tokio::spawn(async move {
            let outcome = match client {
                Ok(client) => tokio::time::timeout(TIMEOUT, subscriber(&client, &name))
                    .await
                    .unwrap_or_else(|_| Err(super::redis_topology::timed_out("connecting"))),
                Err(error) => Err(error),
            };
            let _ = events.send(Event::Connected {
                node,
                shard,
                outcome,
            });
        });
    }

    /// A RESP3 client for `node` (`host:port`), with the first seed's
    /// credentials and TLS settings.
    fn client_for(&self, node: &str) -> redis::RedisResult<redis::Client> {
        let Some(seed) = self.seeds.first() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no Redis Cluster seed node",
            )
            .into());
        };
        let (host, port) = node
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a cluster node address without a port: {node}"),
                )
            })?;
        let info = seed.get_connection_info().clone();
        let addr = match info.addr() {
            redis::ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => redis::ConnectionAddr::Tcp(host, port),
        };
        resp3(&redis::Client::open(info.set_addr(addr))?)
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Push { node, shard, push } => {
                if self.shard(&node, shard).is_some() {
                    self.on_push(&node, shard, push);
                }
            }
            Event::Connected {
                node,
                shard,
                outcome,
            } => self.on_connected(node, shard, outcome),
            Event::Failed { node, shard, error } => {
                if self.shard(&node, shard).is_none() {
                    return;
                }
                if error.is_io_error()
                    || error.is_timeout()
                    || error.is_connection_dropped()
                    || error.is_unrecoverable_error()
                {
                    tracing::warn!(%node, %error, "a shard pub/sub connection failed; reconnecting");
                    self.drop_shard(&node);
                } else {
                    tracing::debug!(%node, %error, "a shard refused a command; asking for the slots");
                }
                self.refresh_wanted = true;
            }
            Event::Slots(outcome) => {
                self.refreshing = false;
                match outcome {
                    Ok(map) => self.on_slots(map),
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the Redis Cluster's slots");
                        self.refresh_wanted = true;
                    }
                }
            }
            Event::CaughtUp => self.catching_up = self.catching_up.saturating_sub(1),
        }
    }

    /// The connection `shard` of `node`, while it is the current one.
    fn shard(&mut self, node: &str, shard: u64) -> Option<&mut Shard> {
        match self.nodes.get_mut(node).map(|state| &mut state.node) {
            Some(Node::Up(up)) if up.id == shard => Some(up),
            _ => None,
        }
    }

    fn on_connected(
        &mut self,
        node: String,
        shard: u64,
        outcome: redis::RedisResult<(MultiplexedConnection, mpsc::UnboundedReceiver<PushInfo>)>,
    ) {
        let Some(state) = self.nodes.get_mut(&node) else {
            return;
        };
        if !matches!(state.node, Node::Connecting(id) if id == shard) {
            return;
        }
        let (connection, mut pushes) = match outcome {
            Ok(made) => made,
            Err(error) => {
                let delay = state.backoff.next_delay();
                tracing::warn!(%node, %error, "cannot connect the shard pub/sub; retrying");
                state.node = Node::Down {
                    retry_at: Instant::now() + delay,
                };
                self.refresh_wanted = true;
                let waiting: Vec<String> = self
                    .wanted
                    .iter()
                    .filter(|(channel, wanted)| {
                        !wanted.waiters.is_empty() && self.owner(channel) == Some(node.as_str())
                    })
                    .map(|(channel, _)| channel.clone())
                    .collect();
                for channel in waiting {
                    self.fail_waiters(&channel);
                }
                return;
            }
        };
        let now = Instant::now();
        state.node = Node::Up(Shard {
            id: shard,
            connection,
            leaving: HashMap::new(),
            since: now,
            checked: now,
        });
        let events = self.events.clone();
        let from: Arc<str> = node.as_str().into();
        tokio::spawn(async move {
            while let Some(push) = pushes.recv().await {
                let node = from.clone();
                if events.send(Event::Push { node, shard, push }).is_err() {
                    return;
                }
            }
        });
        let homeless: Vec<String> = self
            .unsettled
            .iter()
            .filter(|channel| {
                self.wanted
                    .get(*channel)
                    .is_some_and(|wanted| wanted.place == Place::Homeless)
                    && self.owner(channel) == Some(node.as_str())
            })
            .cloned()
            .collect();
        for channel in homeless {
            self.place(&channel);
        }
    }

    fn on_push(&mut self, node: &str, shard: u64, push: PushInfo) {
        if matches!(push.kind, PushKind::SMessage | PushKind::Message) {
            if let Some((channel, payload)) = message_of(push.data) {
                self.dispatch(channel, payload);
            }
            return;
        }
        let mut data = push.data.into_iter();
        match push.kind {
            PushKind::SSubscribe => {
                if let Some(channel) = channel_name(data.next()) {
                    self.on_confirmed(node, shard, channel);
                }
            }
            PushKind::SUnsubscribe => {
                if let Some(channel) = channel_name(data.next()) {
                    self.on_unsubscribed(node, shard, channel);
                }
            }
            PushKind::Disconnection => {
                tracing::warn!(%node, "a shard pub/sub connection dropped; reconnecting");
                self.drop_shard(node);
                self.refresh_wanted = true;
            }
            _ => {}
        }
    }

    /// Redis confirmed `channel` on `shard` of `node`.
    fn on_confirmed(&mut self, node: &str, shard: u64, channel: String) {
        let mark = Mark(self.marks);
        let Some(wanted) = self.wanted.get_mut(&channel) else {
            // Unsubscribed while the confirmation was on its way.
            self.leave(node, shard, vec![channel]);
            return;
        };
        match &wanted.place {
            Place::Asked {
                node: asked,
                shard: on,
                ..
            } if asked == node && *on == shard => {}
            Place::Home {
                node: home,
                shard: on,
            } if home == node && *on == shard => return,
            // Asked here before it moved on: not wanted here any more.
            _ => {
                self.leave(node, shard, vec![channel]);
                return;
            }
        }
        if wanted.told {
            self.moved.push(channel.clone());
        } else {
            for waiter in wanted.waiters.drain(..) {
                let _ = waiter.send(Ok(mark));
            }
            wanted.told = true;
        }
        let home = Place::Home {
            node: node.to_owned(),
            shard,
        };
        self.set_place(&channel, home);
    }

    /// Redis unsubscribed `channel` on `shard` of `node`: as asked, or on
    /// its own, when the channel's slot left that node.
    fn on_unsubscribed(&mut self, node: &str, shard: u64, channel: String) {
        if let Some(up) = self.shard(node, shard)
            && let Entry::Occupied(mut leaving) = up.leaving.entry(channel.clone())
        {
            *leaving.get_mut() -= 1;
            if *leaving.get() == 0 {
                leaving.remove();
            }
            return;
        }
        let Some(wanted) = self.wanted.get(&channel) else {
            return;
        };
        if let Place::Asked {
            node: on,
            shard: id,
            ..
        }
        | Place::Home {
            node: on,
            shard: id,
        } = &wanted.place
            && on == node
            && *id == shard
        {
            tracing::info!(%node, %channel, "Redis moved a shard channel away; following it");
            self.set_place(&channel, Place::Homeless);
            self.refresh_wanted = true;
        }
    }

    /// `SUNSUBSCRIBE`s `channels` on `shard` of `node`, if it is still up
    /// and still owns them (a node that gave a slot away unsubscribed its
    /// channels itself, and would refuse).
    fn leave(&mut self, node: &str, shard: u64, mut channels: Vec<String>) {
        channels.retain(|channel| self.owner(channel) == Some(node));
        let events = self.events.clone();
        let Some(up) = self.shard(node, shard) else {
            return;
        };
        if channels.is_empty() {
            return;
        }
        for channel in &channels {
            *up.leaving.entry(channel.clone()).or_default() += 1;
        }
        send(events, node, up, "SUNSUBSCRIBE", channels);
    }

    /// Sends this turn's `SSUBSCRIBE`s.
    fn flush_asks(&mut self) {
        for (node, channels) in std::mem::take(&mut self.asks) {
            let events = self.events.clone();
            if let Some(Node::Up(shard)) = self.nodes.get(&node).map(|state| &state.node) {
                send(events, &node, shard, "SSUBSCRIBE", channels);
            }
        }
    }

    /// Announces the channels subscribed again since the last notice.
    fn announce(&mut self) {
        if self.moved.is_empty() {
            return;
        }
        let moved = std::mem::take(&mut self.moved);
        self.marks += 1;
        let mark = Mark(self.marks);
        let (pending, mut closed) = mpsc::channel(1);
        let gone = tell(&mut self.routes, |route| {
            let channels: Vec<String> = moved
                .iter()
                .filter(|channel| route.matches(channel))
                .cloned()
                .collect();
            (!channels.is_empty()).then(|| Notice::Subscribed {
                mark,
                channels: Some(channels),
                caught_up: CaughtUp::new(pending.clone()),
            })
        });
        self.forget(gone);
        drop(pending);
        self.catching_up += 1;
        let events = self.events.clone();
        tokio::spawn(async move {
            let _ = closed.recv().await;
            let _ = events.send(Event::CaughtUp);
        });
    }

    /// Hands a message to every route it belongs to.
    fn dispatch(&mut self, channel: String, payload: Bytes) {
        let gone = tell(&mut self.routes, |route| {
            route.matches(&channel).then(|| Notice::Message {
                channel: channel.clone(),
                payload: payload.clone(),
            })
        });
        self.forget(gone);
    }

    /// Tells every route the notice `make` makes.
    fn notify(&mut self, make: impl Fn() -> Notice) {
        let gone = tell(&mut self.routes, |_| Some(make()));
        self.forget(gone);
    }

    /// Forgets routes whose receivers are gone, and with a
    /// [`Route::Channel`] its subscription (the owner of a
    /// [`Route::Prefix`] unsubscribes what it subscribed).
    fn forget(&mut self, gone: Vec<Route>) {
        for route in gone {
            if let Route::Channel(name) = route {
                self.release(&name);
            }
        }
    }

    /// Leaves `node`'s connection (dropped, or no longer answering): its
    /// channels become homeless, to be subscribed again where the map says
    /// once there is a connection there, after the backoff. Subscriptions
    /// still waiting for their confirmation fail.
    fn drop_shard(&mut self, node: &str) {
        let Some(state) = self.nodes.get_mut(node) else {
            return;
        };
        let Node::Up(shard) = &state.node else {
            return;
        };
        if shard.since.elapsed() >= Backoff::STABLE {
            state.backoff.reset();
        }
        let delay = state.backoff.next_delay();
        let id = shard.id;
        state.node = Node::Down {
            retry_at: Instant::now() + delay,
        };
        let affected: Vec<String> = self
            .wanted
            .iter()
            .filter(|(_, wanted)| match &wanted.place {
                Place::Asked {
                    node: on, shard, ..
                }
                | Place::Home { node: on, shard } => on == node && *shard == id,
                Place::Homeless => false,
            })
            .map(|(channel, _)| channel.clone())
            .collect();
        for channel in &affected {
            self.set_place(channel, Place::Homeless);
            self.fail_waiters(channel);
        }
        self.notify(|| Notice::Lost);
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        // While a channel has nowhere to go (its primary died, a failover
        // is under way) the map is asked for as often as allowed: the
        // promotion is seen within that, not at the next periodic ask.
        if self.unsettled.iter().any(|channel| {
            self.wanted
                .get(channel)
                .is_some_and(|wanted| wanted.place == Place::Homeless)
        }) {
            self.refresh_wanted = true;
        }
        let due = self
            .last_refresh
            .is_none_or(|last| now >= last + REFRESH_EVERY)
            || (self.refresh_wanted
                && self
                    .last_refresh
                    .is_none_or(|last| now >= last + REFRESH_AT_MOST_EVERY));
        if due && !self.refreshing {
            self.refresh();
        }
        // A confirmation long overdue: the connection no longer answers.
        let stuck: HashSet<String> = self
            .unsettled
            .iter()
            .filter_map(|channel| match &self.wanted.get(channel)?.place {
                Place::Asked { node, at, .. } if now >= *at + TIMEOUT => Some(node.clone()),
                _ => None,
            })
            .collect();
        for node in stuck {
            tracing::warn!(%node, "a shard did not confirm a subscription in time; reconnecting");
            self.drop_shard(&node);
        }
        // Subscriptions that waited for a map or a connection in vain.
        let waited: Vec<String> = self
            .unsettled
            .iter()
            .filter(|channel| {
                self.wanted.get(*channel).is_some_and(|wanted| {
                    !wanted.waiters.is_empty()
                        && wanted.place == Place::Homeless
                        && now >= wanted.since + TIMEOUT
                })
            })
            .cloned()
            .collect();
        for channel in waited {
            self.fail_waiters(&channel);
        }
        // Homeless channels whose primary can be tried again.
        let mut nodes: HashSet<String> = HashSet::new();
        for channel in &self.unsettled {
            if self
                .wanted
                .get(channel)
                .is_some_and(|wanted| wanted.place == Place::Homeless)
                && let Some(node) = self.owner(channel)
            {
                nodes.insert(node.to_owned());
            }
        }
        for node in nodes {
            self.connect(&node);
        }
        self.check_health(now);
    }

    /// PINGs each connection not checked for [`HEALTH_CHECK_EVERY`].
    fn check_health(&mut self, now: Instant) {
        for (node, state) in &mut self.nodes {
            let Node::Up(shard) = &mut state.node else {
                continue;
            };
            if now < shard.checked + HEALTH_CHECK_EVERY {
                continue;
            }
            shard.checked = now;
            let (mut connection, events, node, id) = (
                shard.connection.clone(),
                self.events.clone(),
                node.clone(),
                shard.id,
            );
            tokio::spawn(async move {
                let pinged = redis::cmd("PING")
                    .query_async::<Value>(&mut connection)
                    .await;
                if let Err(error) = pinged {
                    let _ = events.send(Event::Failed {
                        node,
                        shard: id,
                        error,
                    });
                }
            });
        }
    }

    /// Asks for the slot map: of a connected shard, else of the seeds.
    fn refresh(&mut self) {
        self.refreshing = true;
        self.refresh_wanted = false;
        self.last_refresh = Some(Instant::now());
        let connected: Vec<(String, MultiplexedConnection)> = self
            .nodes
            .iter()
            .filter_map(|(node, state)| match &state.node {
                Node::Up(shard) => Some((node.clone(), shard.connection.clone())),
                _ => None,
            })
            .collect();
        let seeds = self.seeds.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let _ = events.send(Event::Slots(ask_slots(connected, seeds).await));
        });
    }

    /// A new map: channels whose slot has another owner move there, and
    /// connections to nodes that own nothing any more are left.
    fn on_slots(&mut self, map: SlotMap) {
        let changed = self.slots.as_ref() != Some(&map);
        if changed {
            tracing::debug!(?map, "the Redis Cluster's slot map");
        }
        let primaries = map.primaries();
        self.slots = Some(map);
        for node in &primaries {
            self.connect(node);
        }
        // The same map moves nothing: only the unsettled may go somewhere.
        let channels: Vec<String> = if changed {
            self.wanted.keys().cloned().collect()
        } else {
            self.unsettled.iter().cloned().collect()
        };
        for channel in channels {
            let owner = self.owner(&channel).map(str::to_owned);
            let Some(wanted) = self.wanted.get(&channel) else {
                continue;
            };
            match wanted.place.clone() {
                Place::Homeless => self.place(&channel),
                Place::Asked { node, shard, .. } | Place::Home { node, shard }
                    if owner.as_deref() != Some(node.as_str()) =>
                {
                    self.leave(&node, shard, vec![channel.clone()]);
                    self.place(&channel);
                }
                _ => {}
            }
        }
        let serving = |node: &str| self.slots.as_ref().is_some_and(|map| map.serves(node));
        let idle: Vec<String> = self
            .nodes
            .keys()
            .filter(|node| !serving(node))
            .cloned()
            .collect();
        for node in idle {
            self.nodes.remove(&node);
        }
    }
}

/// The channel a confirmation push names.
fn channel_name(value: Option<Value>) -> Option<String> {
    match value {
        Some(Value::BulkString(bytes)) => String::from_utf8(bytes).ok(),
        _ => None,
    }
}

/// Sends `command` once per channel on `shard`'s connection, in pipelines,
/// on a task of its own; a failure comes back as [`Event::Failed`]. The
/// replies are not read: the pushes say what Redis did.
fn send(
    events: mpsc::UnboundedSender<Event>,
    node: &str,
    shard: &Shard,
    command: &'static str,
    channels: Vec<String>,
) {
    let (mut connection, node, id) = (shard.connection.clone(), node.to_owned(), shard.id);
    tokio::spawn(async move {
        for batch in channels.chunks(BATCH) {
            let mut pipeline = redis::pipe();
            for channel in batch {
                pipeline.cmd(command).arg(channel);
            }
            if let Err(error) = pipeline.query_async::<Value>(&mut connection).await {
                let _ = events.send(Event::Failed {
                    node,
                    shard: id,
                    error,
                });
                return;
            }
        }
    });
}

mod slots;
#[cfg(test)]
mod tests;
