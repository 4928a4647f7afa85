//! The Redis channel streams: history in Redis Streams, live events over
//! Redis pub/sub, shared by every instance.
//!
//! Keys, under the configured prefix, per channel `<channel>` (`user:<id>`
//! or `topic:<name>`, never containing a further `:`, nor braces):
//! - `stream:{<channel>}`: a Redis Stream of the retained events. Entry ids
//!   are `<offset>-0`, so reading "after offset n" is an `XRANGE`; each entry
//!   has the fields `t` (publish time, Unix ms from the publisher's clock)
//!   and `e` (the whole [`Event`], protobuf-encoded, channel, offset, epoch
//!   and time included);
//! - `stream:{<channel>}:meta`: a hash with `epoch`, `offset` (the latest
//!   offset given) and `primary` (the replication history, `master_replid`,
//!   of the primary that began the epoch);
//! - `stream:{<channel>}:dedup:<idempotency key>`: `<offset> <until ms>
//!   <epoch>` of a publish made with that key, kept for the dedup window. A
//!   publish with the key that finds it (still within the window by the
//!   caller's clock, in the channel's current epoch) appends nothing and
//!   answers that position.
//!
//! `{<channel>}` is a Redis Cluster hash tag (the prefix may not contain
//! braces, so it is each key's first): a channel's keys share a slot, and
//! channels spread over the cluster. Every script gets each key it touches
//! in KEYS, and builds none.
//!
//! Both keys expire after the age limit (`PEXPIRE`, refreshed by each
//! publish, and the meta key by each [`StreamBackend::channel`] call): an
//! idle channel's history ages out anyway, and once the meta key is gone the
//! channel starts again with a new epoch and offset 1, which is what an
//! epoch change tells a resuming client. A script that finds no meta key
//! deletes any leftover stream key, so a stream never mixes epochs.
//!
//! A failover must not lose events in silence. Replication is
//! asynchronous: a primary that dies may take with it events it had
//! acknowledged (and published live), and the promoted replica would give
//! their offsets again to other events, which a subscriber that saw the lost
//! ones would then skip. A promoted replica starts a replication history of
//! its own, so the publish and state scripts compare the primary's
//! `master_replid` with the meta's `primary`, and a channel last written
//! under another history is forgotten: it begins a new epoch, and every
//! resuming subscriber is told `recovered: false`. The price is that a
//! failover (or a primary's restart that starts a new history) also ends
//! the epochs of channels that lost nothing; a subscriber then reloads.
//!
//! Each operation is one Lua script (atomic in Redis). Publishing runs one
//! script for all channels of the call on standalone Redis (the fan-out hot
//! path); on Redis Cluster ([`RedisContext::cluster`]) one per hash slot of
//! the call's channels, run concurrently, each channel's answer in the
//! caller's order. Should one slot's call fail, the publish fails, though
//! other slots' channels may have taken the event: a retry with the same
//! idempotency key places it only where it is missing. Per channel the
//! script creates the epoch if missing (`HSETNX` with a random epoch from
//! the caller), increments the offset, drops entries older than the age
//! limit, appends the event (`XADD … MAXLEN <max events>`), sets the TTLs,
//! and publishes the same bytes on the pub/sub channel
//! `<prefix>stream:{<channel>}`, the stream key's own name (pub/sub
//! channels are a namespace apart from keys; a sharded channel of that name
//! would live in the key's slot) with the command the caller passes:
//! `PUBLISH` (`SPUBLISH` on a cluster). Because the publish is inside the script, pub/sub
//! order is offset order, even with publishers on several instances. The
//! event is encoded once by the caller, without channel, offset and epoch;
//! the script appends those three fields to each copy (protobuf allows
//! fields in any order).
//!
//! Time is always the caller's clock, passed to the scripts, never Redis's.
//! Entries are dropped by age with a binary search for the first young
//! entry (times rise with offsets when the instances' clocks agree; with
//! skewed clocks the boundary is off by at most the events published within
//! the skew), `O(log n)` lookups per call plus the entries removed, each once.
//! [`StreamBackend::read`] also filters out old events itself. Requires
//! Redis 6.2 or later (`XTRIM MINID`, RESP3).
//!
//! Live delivery goes over the instance's stream pub/sub (its one
//! classic pub/sub connection, [`crate::infra::pubsub`]; on a cluster one
//! sharded connection per primary, [`crate::infra::sharded_pubsub`]), on
//! the route `<prefix>stream:`, to a
//! listener task (`listener`) to which `watch` and `unwatch` send
//! commands. The first watch of a channel subscribes and, once Redis
//! confirmed, reads where the channel stands; the last unwatch
//! unsubscribes. The listener hands each message to the sink in order and
//! remembers, per watched channel, the last (epoch, offset) given:
//! - an offset at or below it in the same epoch is dropped (already given,
//!   or published before the watch);
//! - an offset more than one above it means messages were lost: the gap is
//!   read from history first;
//! - a new epoch starts over: its earlier events still in history are given
//!   first (they were all published after the watch began).
//!
//! When the pub/sub connection drops (or stops answering PING), it
//! reconnects and resubscribes every watched channel, and the listener
//! reads each one's history from its last offset (readiness waits for
//! that), so the sink sees every offset once, in order. Only events that
//! history no longer holds (more than `max_events` behind, or aged out) are
//! skipped, and the sink then sees the offset jump. While the connection is
//! down, `watch` fails at once rather than waiting.
//!
//! The module's parts: `scripts` (the Lua), this file (the store's API),
//! `listener` (live delivery).
//!
//! [`StreamBackend::channel`]: super::StreamBackend::channel
//! [`StreamBackend::read`]: super::StreamBackend::read

use std::{
    collections::{HashMap, hash_map::Entry},
    fmt,
    sync::Arc,
};

use prost::Message as _;
use redis::{Script, cluster_routing::Slot};
use slop_api::notification::Event;
use tokio::sync::{mpsc, oneshot};

use self::{
    listener::{Command, Listener},
    scripts::{MAX_OFFSET, Scripts},
};
use super::{
    ChannelName, ChannelState, Deliver, History, Result, Stored, StreamError, new_epoch, within_age,
};
use crate::{
    identity::sessions::duration_millis,
    infra::{
        clock::{SharedClock, from_millis, to_millis, to_timestamp},
        observe::ObservedRedis,
        pubsub::{Handler, Notice, Route},
        redis_context::RedisContext,
    },
};

mod listener;
mod scripts;
#[cfg(test)]
mod tests;

/// The channel streams in Redis, shared by every instance.
#[derive(Clone)]
pub struct RedisStreams {
    shared: Arc<Shared>,
    /// To the listener task, which ends when every clone is dropped.
    commands: mpsc::UnboundedSender<Command>,
}

/// What the streams and their listener share.
struct Shared {
    connection: ObservedRedis,
    prefix: String,
    clock: SharedClock,
    history: History,
    scripts: Scripts,
    /// On Redis Cluster: a publish makes one script call per slot.
    cluster: bool,
    /// Publish script calls made, for tests.
    #[cfg(test)]
    publish_calls: std::sync::atomic::AtomicUsize,
}

/// Where a watched channel stands for the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    /// The channel's epoch; None when the channel did not exist.
    epoch: Option<String>,
    /// The last offset given to the sink (or standing when watched).
    offset: u64,
}

impl Position {
    /// Whether `event` comes after this position: later in the same epoch,
    /// or in another (newer) epoch.
    fn precedes(&self, event: &Event) -> bool {
        self.epoch.as_deref() != Some(event.epoch.as_str()) || event.offset > self.offset
    }

    /// The offset after which `event`'s epoch continues from here.
    fn after_in(&self, epoch: &str) -> u64 {
        if self.epoch.as_deref() == Some(epoch) {
            self.offset
        } else {
            0
        }
    }
}

impl RedisStreams {
    /// Streams on the instance's Redis context, keeping `history`, giving
    /// live events of watched channels to `sink`. Must be called within a
    /// Tokio runtime: it starts the listener task, which ends when the last
    /// clone of the streams is dropped.
    pub fn new(redis: &RedisContext, history: History, sink: Arc<dyn Deliver>) -> Self {
        let (notices, inbox) = mpsc::unbounded_channel();
        Self::start(
            redis,
            history,
            sink,
            Box::new(move |notice| notices.send(notice).is_ok()),
            inbox,
        )
    }

    /// [`Self::new`], with the pub/sub route's handler and the listener's
    /// inbox given (a test holds notices back between the two).
    fn start(
        redis: &RedisContext,
        history: History,
        sink: Arc<dyn Deliver>,
        handler: Handler,
        inbox: mpsc::UnboundedReceiver<Notice>,
    ) -> Self {
        let shared = Arc::new(Shared {
            connection: redis.commands(),
            prefix: redis.prefix().to_owned(),
            clock: redis.clock().clone(),
            history: History {
                max_events: history.max_events.max(1),
                ..history
            },
            scripts: Scripts::new(),
            cluster: redis.cluster(),
            #[cfg(test)]
            publish_calls: Default::default(),
        });
        let (commands, receiver) = mpsc::unbounded_channel();
        let pubsub = redis.stream_pubsub().clone();
        pubsub.route(Route::Prefix(format!("{}stream:", redis.prefix())), handler);
        let listener = Listener::new(shared.clone(), sink, pubsub, receiver, inbox);
        tokio::spawn(listener.run());
        Self { shared, commands }
    }

    pub(super) async fn publish(
        &self,
        channels: &[ChannelName],
        event: &Event,
        idempotency_key: Option<&str>,
    ) -> Result<Vec<Stored>> {
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        let shared = &self.shared;
        let now = shared.now();
        let template = Event {
            channel: String::new(),
            offset: 0,
            epoch: String::new(),
            time: Some(to_timestamp(from_millis(now))),
            ..event.clone()
        };
        let call = Publish {
            names: channels.iter().map(ToString::to_string).collect(),
            // The event is encoded once; the script appends each channel's
            // name, offset and epoch to its copy.
            template: template.encode_to_vec(),
            idempotency_key: idempotency_key.filter(|key| !key.is_empty()),
            now,
        };
        let groups = shared.slot_groups(channels);
        let placed = if let [group] = groups.as_slice() {
            shared.publish(&call, group).await?
        } else {
            let answers = futures_util::future::try_join_all(
                groups.iter().map(|group| shared.publish(&call, group)),
            )
            .await?;
            let mut placed = vec![None; channels.len()];
            for (group, answers) in groups.iter().zip(answers) {
                for (&index, answer) in group.iter().zip(answers) {
                    placed[index] = Some(answer);
                }
            }
            placed.into_iter().flatten().collect()
        };
        // A duplicate's event is the earlier one; the caller needs its
        // position, and reads it from history when it needs more.
        Ok(call
            .names
            .into_iter()
            .zip(placed)
            .map(|(channel, (offset, epoch, duplicate))| Stored {
                event: Arc::new(Event {
                    channel,
                    offset,
                    epoch,
                    ..template.clone()
                }),
                duplicate: duplicate == 1,
            })
            .collect())
    }

    pub(super) async fn channel(&self, channel: &ChannelName) -> Result<ChannelState> {
        let shared = &self.shared;
        let mut invocation = shared.invocation(&shared.scripts.channel, shared.now());
        invocation
            .key(shared.key(channel))
            .key(shared.meta_key(channel))
            .arg(shared.ttl_millis());
        let (epoch, offset, earliest, size): (String, u64, u64, usize) = invocation
            .invoke_async(&mut shared.connection.clone())
            .await?;
        Ok(ChannelState {
            epoch,
            offset,
            earliest,
            size,
        })
    }

    pub(super) async fn read(
        &self,
        channel: &ChannelName,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>> {
        Ok(self.shared.read(channel, after, limit).await?.1)
    }

    pub(super) async fn watch(&self, channel: &ChannelName) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Watch {
                channel: channel.clone(),
                reply,
            })
            .map_err(|_| listener_gone())?;
        answer.await.map_err(|_| listener_gone())?
    }

    pub(super) fn unwatch(&self, channel: &ChannelName) {
        // Fails only when the listener is gone, and with it every watch.
        let _ = self.commands.send(Command::Unwatch {
            channel: channel.clone(),
        });
    }

    pub(super) async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.shared.connection.clone())
            .await?;
        Ok(())
    }
}

/// The error of a watch whose listener task has ended (only at shutdown).
fn listener_gone() -> StreamError {
    StreamError::Redis(
        std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "the stream listener has stopped",
        )
        .into(),
    )
}

impl Shared {
    fn now(&self) -> i64 {
        to_millis(self.clock.now())
    }

    /// How long keys live without a publish: the age limit (at least 1 ms).
    fn ttl_millis(&self) -> i64 {
        duration_millis(self.history.max_age).max(1)
    }

    /// The stream key of `channel`, also its pub/sub channel.
    fn key(&self, channel: &(impl fmt::Display + ?Sized)) -> String {
        format!("{}stream:{{{channel}}}", self.prefix)
    }

    /// The key of `channel`'s epoch and offset.
    fn meta_key(&self, channel: &(impl fmt::Display + ?Sized)) -> String {
        self.key(channel) + ":meta"
    }

    /// The key of a publish to `channel` with `idempotency_key`.
    fn dedup_key(&self, channel: &(impl fmt::Display + ?Sized), idempotency_key: &str) -> String {
        self.key(channel) + ":dedup:" + idempotency_key
    }

    /// The watched channel a pub/sub channel name stands for.
    fn channel_of(&self, pubsub: &str) -> Option<ChannelName> {
        let name = pubsub
            .strip_prefix(&self.prefix)?
            .strip_prefix("stream:{")?
            .strip_suffix('}')?;
        ChannelName::parse(name).ok()
    }

    /// The indices of `channels` a publish makes one script call for each:
    /// all of them on standalone Redis; on Redis Cluster, those of one hash
    /// slot together, groups in the order of their first channel.
    fn slot_groups(&self, channels: &[ChannelName]) -> Vec<Vec<usize>> {
        if !self.cluster {
            return vec![(0..channels.len()).collect()];
        }
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut group_of: HashMap<Slot, usize> = HashMap::with_capacity(channels.len());
        for (index, channel) in channels.iter().enumerate() {
            let slot = Slot::for_key(self.key(channel));
            match group_of.entry(slot) {
                Entry::Occupied(group) => groups[*group.get()].push(index),
                Entry::Vacant(group) => {
                    group.insert(groups.len());
                    groups.push(vec![index]);
                }
            }
        }
        groups
    }

    /// One publish script call, for the channels of `call` at `indices` (of
    /// one slot on Redis Cluster): their answers in that order.
    async fn publish(&self, call: &Publish<'_>, indices: &[usize]) -> Result<Vec<Placed>> {
        let mut invocation = self.invocation(&self.scripts.publish, call.now);
        for &index in indices {
            let name = call.names[index].as_str();
            invocation.key(self.key(name)).key(self.meta_key(name));
            if let Some(idempotency_key) = call.idempotency_key {
                invocation.key(self.dedup_key(name, idempotency_key));
            }
        }
        invocation
            .arg(self.history.max_events)
            .arg(self.ttl_millis())
            .arg(&call.template)
            .arg(if call.idempotency_key.is_some() { 3 } else { 2 })
            .arg(duration_millis(self.history.dedup_window).max(1))
            .arg(if self.cluster {
                SHARDED_PUBLISH_COMMAND
            } else {
                PUBLISH_COMMAND
            });
        for &index in indices {
            invocation.arg(&call.names[index]).arg(new_epoch());
        }
        #[cfg(test)]
        self.publish_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let placed: Vec<Placed> = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        if placed.len() != indices.len() {
            return Err(StreamError::Malformed(format!(
                "publishing to {} channels placed {} events",
                indices.len(),
                placed.len()
            )));
        }
        Ok(placed)
    }

    fn invocation<'a>(&self, script: &'a Script, now: i64) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .arg(now)
            .arg(duration_millis(self.history.max_age));
        invocation
    }

    /// The channel's epoch (None when it has none) and its retained,
    /// young events with offsets above `after`, oldest first, at most
    /// `limit`.
    async fn read(
        &self,
        channel: &ChannelName,
        after: u64,
        limit: usize,
    ) -> Result<(Option<String>, Vec<Arc<Event>>)> {
        // History never holds more than max_events, nor offsets this high.
        let limit = limit.min(self.history.max_events);
        let after = after.min(MAX_OFFSET);
        let now = self.now();
        let mut invocation = self.invocation(&self.scripts.read, now);
        invocation
            .key(self.key(channel))
            .key(self.meta_key(channel))
            .arg(after)
            .arg(limit);
        let (epoch, raw): (Option<String>, Vec<Vec<u8>>) = if limit == 0 {
            (None, Vec::new())
        } else {
            invocation
                .invoke_async(&mut self.connection.clone())
                .await?
        };
        let mut events = Vec::with_capacity(raw.len() / 2);
        for pair in raw.chunks(2) {
            let [time, bytes] = pair else {
                return Err(StreamError::Malformed(
                    "a read returned an odd number of fields".into(),
                ));
            };
            // An entry that does not decode (written by something else, or
            // by an older server without the payload depth limit) is left
            // out rather than making the whole channel unreadable: its
            // offset is missing, which every reader treats as a gap.
            let time = std::str::from_utf8(time)
                .ok()
                .and_then(|t| t.parse::<i64>().ok());
            let (Some(time), Ok(event)) = (time, decode(bytes)) else {
                tracing::error!(%channel, "skipping a stored event that does not decode");
                continue;
            };
            if within_age(time, now, self.history.max_age) && event.offset > after {
                events.push(Arc::new(event));
            }
        }
        Ok((epoch, events))
    }

    /// Where `channel` stands now, without creating it.
    async fn position(&self, channel: &ChannelName) -> Result<Position> {
        let (epoch, offset): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.meta_key(channel))
            .arg("epoch")
            .arg("offset")
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(Position {
            offset: if epoch.is_some() {
                offset.unwrap_or(0)
            } else {
                0
            },
            epoch,
        })
    }
}

/// How the publish script hands an event to the listeners on standalone
/// Redis and under Sentinel: classic pub/sub.
const PUBLISH_COMMAND: &str = "PUBLISH";

/// How the publish script hands an event to the listeners on Redis
/// Cluster: sharded pub/sub, the pub/sub channel (the stream key's name) in
/// the slot of the channel's keys, heard only on that slot's shard, where
/// the instances subscribe with `SSUBSCRIBE`
/// ([`crate::infra::sharded_pubsub`]). A classic subscriber never hears
/// a sharded message.
const SHARDED_PUBLISH_COMMAND: &str = "SPUBLISH";

/// What one publish script call answers per channel: offset, epoch, and 1
/// for a duplicate.
type Placed = (u64, String, u8);

/// One publish, as its script calls take it.
struct Publish<'a> {
    /// The channels, in the caller's order.
    names: Vec<String>,
    /// The event without channel, offset and epoch, encoded.
    template: Vec<u8>,
    /// None for none (an empty key is none).
    idempotency_key: Option<&'a str>,
    now: i64,
}

/// An event as stored and published.
fn decode(bytes: &[u8]) -> Result<Event> {
    Event::decode(bytes)
        .map_err(|error| StreamError::Malformed(format!("an event does not decode: {error}")))
}
