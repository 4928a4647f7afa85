//! The Redis channel streams: history in Redis Streams, live events over
//! Redis pub/sub, shared by every instance.
//!
//! Keys, under the configured prefix, per channel `<channel>` (`user:<id>`
//! or `topic:<name>`, never containing a further `:`):
//! - `stream:<channel>`: a Redis Stream of the retained events. Entry ids are
//!   `<offset>-0`, so reading "after offset n" is an `XRANGE`; each entry has
//!   the fields `t` (publish time, Unix ms from the publisher's clock) and `e`
//!   (the whole [`Event`], protobuf-encoded, channel, offset, epoch and time
//!   included);
//! - `stream:<channel>:meta`: a hash with `epoch` and `offset` (the latest
//!   offset given);
//! - `stream:<channel>:dedup:<idempotency key>`: `<offset> <until ms>
//!   <epoch>` of a publish made with that key, kept for the dedup window. A
//!   publish with the key that finds it (still within the window by the
//!   caller's clock, in the channel's current epoch) appends nothing and
//!   answers that position.
//!
//! Both keys expire after the age limit (`PEXPIRE`, refreshed by each
//! publish, and the meta key by each [`StreamBackend::channel`] call): an
//! idle channel's history ages out anyway, and once the meta key is gone the
//! channel starts again with a new epoch and offset 1, which is what an
//! epoch change tells a resuming client. A script that finds no meta key
//! deletes any leftover stream key, so a stream never mixes epochs.
//!
//! Each operation is one Lua script (atomic in Redis). Publishing runs one
//! script for all channels of the call: per channel it creates the epoch if
//! missing (`HSETNX` with a random epoch from the caller), increments the
//! offset, drops entries older than the age limit, appends the event
//! (`XADD … MAXLEN <max events>`), sets the TTLs, and `PUBLISH`es the same
//! bytes on the pub/sub channel `<prefix>stream:<channel>` (pub/sub channels
//! are a namespace apart from keys). Because the `PUBLISH` is inside the
//! script, pub/sub order is offset order, even with publishers on several
//! instances. The event is encoded once by the caller, without channel,
//! offset and epoch; the script appends those three fields to each copy
//! (protobuf allows fields in any order).
//!
//! Time is always the caller's clock, passed to the scripts, never Redis's.
//! Entries are dropped by age with a binary search for the first young
//! entry (times rise with offsets when the instances' clocks agree; with
//! skewed clocks the boundary is off by at most the events published within
//! the skew), `O(log n)` lookups per call plus the entries removed, each once.
//! [`StreamBackend::read`] also filters out old events itself. Requires
//! Redis 6.2 or later (`XTRIM MINID`, RESP3); the scripts name keys they
//! derive from their arguments, which standalone Redis allows (not Redis
//! Cluster).
//!
//! Live delivery: each [`RedisStreams`] has one pub/sub connection (RESP3,
//! named `<prefix>streams` in `CLIENT LIST`) owned by a listener task, to
//! which `watch` and `unwatch` send commands. The first watch of a channel
//! subscribes and, once Redis confirmed, reads where the channel stands; the
//! last unwatch unsubscribes. The listener hands each message to the sink in
//! order and remembers, per watched channel, the last (epoch, offset) given:
//! - an offset at or below it in the same epoch is dropped (already given,
//!   or published before the watch);
//! - an offset more than one above it means messages were lost: the gap is
//!   read from history first;
//! - a new epoch starts over: its earlier events still in history are given
//!   first (they were all published after the watch began).
//!
//! When the pub/sub connection drops (or stops answering PING), the listener
//! reconnects with a capped, jittered backoff, resubscribes every watched
//! channel and reads each one's history from its last offset, so the sink
//! sees every offset once, in order. Only events that history no longer
//! holds (more than `max_events` behind, or aged out) are skipped, and the
//! sink then sees the offset jump. While the connection is down, `watch`
//! fails at once rather than waiting.
//!
//! [`StreamBackend::channel`]: super::StreamBackend::channel
//! [`StreamBackend::read`]: super::StreamBackend::read

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::Arc,
    time::Duration,
};

use prost::Message as _;
use redis::{
    PushInfo, PushKind, Script, Value,
    aio::{ConnectionManager, MultiplexedConnection},
};
use slop_api::notification::Event;
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    ChannelName, ChannelState, Deliver, History, Result, Stored, StreamError, new_epoch, within_age,
};
use crate::{
    identity::sessions::duration_millis,
    infra::clock::{SharedClock, from_millis, to_millis, to_timestamp},
    infra::redis_connection::{self, Backoff},
};

/// Helpers shared by the scripts: key names, entry fields, the age limit.
/// ARGV[1] = prefix, ARGV[2] = now (ms), ARGV[3] = age limit (ms).
const PRELUDE: &str = r#"
local prefix = ARGV[1]
local now = tonumber(ARGV[2])
local cutoff = now - tonumber(ARGV[3])
local function stream_key(name) return prefix .. 'stream:' .. name end
local function id(offset) return string.format('%d', offset) .. '-0' end
local function field(entry, name)
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end
local function offset_of(entry) return tonumber(string.match(entry[1], '^(%d+)')) end
local function young(entry) return (tonumber(field(entry, 't')) or 0) >= cutoff end
-- The offset of the first entry young enough to count, nil when there is
-- none; with trim, the older entries are deleted. Binary search over
-- offsets: P(x) = "the first entry at or after x is young" rises with x.
local function first_young(key, trim)
  local head = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1]
  if not head then return nil end
  if young(head) then return offset_of(head) end
  local tail = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
  if not young(tail) then
    if trim then redis.call('DEL', key) end
    return nil
  end
  local lo, hi, first = offset_of(head), offset_of(tail), offset_of(tail)
  while hi - lo > 1 do
    local mid = math.floor((lo + hi) / 2)
    local entry = redis.call('XRANGE', key, id(mid), '+', 'COUNT', 1)[1]
    if young(entry) then
      hi = mid
      first = offset_of(entry)
    else
      lo = mid
    end
  end
  if trim then redis.call('XTRIM', key, 'MINID', id(hi)) end
  return first
end
"#;

/// ARGV[4] = max events, ARGV[5] = key TTL (ms), ARGV[6] = the event
/// encoded without channel, offset and epoch, ARGV[7] = the idempotency key
/// ('' for none), ARGV[8] = the dedup window (ms), then (channel, new epoch)
/// pairs. Returns {offset, epoch, duplicate (0 or 1)} per channel.
const PUBLISH: &str = r#"
local function varint(n)
  local out = {}
  while n >= 128 do
    table.insert(out, string.char(n % 128 + 128))
    n = math.floor(n / 128)
  end
  table.insert(out, string.char(n))
  return table.concat(out)
end
local function bytes_field(number, s) return string.char(number * 8 + 2) .. varint(#s) .. s end
-- An earlier publish with the idempotency key, in the channel's current
-- epoch and within the window by the caller's clock: {offset, epoch}, else
-- nil. (PX only cleans up; the time in the value decides.)
local function earlier(dedup, meta)
  local prior = redis.call('GET', dedup)
  if not prior then return nil end
  local offset, until_ms, epoch = string.match(prior, '^(%d+) (%d+) (.+)$')
  if offset and tonumber(until_ms) > now and redis.call('HGET', meta, 'epoch') == epoch then
    return {tonumber(offset), epoch}
  end
  return nil
end
local out = {}
for i = 9, #ARGV, 2 do
  local key = stream_key(ARGV[i])
  local meta = key .. ':meta'
  local dedup = nil
  if ARGV[7] ~= '' then dedup = key .. ':dedup:' .. ARGV[7] end
  local prior = dedup and earlier(dedup, meta)
  if prior then
    table.insert(out, {prior[1], prior[2], 1})
  else
    if redis.call('HSETNX', meta, 'epoch', ARGV[i + 1]) == 1 then redis.call('DEL', key) end
    local offset = redis.call('HINCRBY', meta, 'offset', 1)
    local epoch = redis.call('HGET', meta, 'epoch')
    local event = ARGV[6] .. bytes_field(1, ARGV[i]) .. string.char(3 * 8) .. varint(offset) .. bytes_field(4, epoch)
    first_young(key, true)
    redis.call('XADD', key, 'MAXLEN', ARGV[4], id(offset), 't', ARGV[2], 'e', event)
    redis.call('PEXPIRE', key, ARGV[5])
    redis.call('PEXPIRE', meta, ARGV[5])
    if dedup then
      local value = string.format('%d %d ', offset, now + tonumber(ARGV[8])) .. epoch
      redis.call('SET', dedup, value, 'PX', ARGV[8])
    end
    redis.call('PUBLISH', key, event)
    table.insert(out, {offset, epoch, 0})
  end
end
return out
"#;

/// ARGV[4] = key TTL (ms), ARGV[5] = channel. Returns {epoch, offset,
/// earliest, size}; {'', 0, 0, 0} for a channel nobody published to, which
/// it leaves without a key (asking about a channel must not create one).
const CHANNEL: &str = r#"
local key = stream_key(ARGV[5])
local meta = key .. ':meta'
if redis.call('EXISTS', meta) == 0 then
  redis.call('DEL', key)
  return {'', 0, 0, 0}
end
redis.call('PEXPIRE', meta, ARGV[4])
local first = first_young(key, true)
local size = 0
if first then size = redis.call('XLEN', key) else first = 0 end
local offset = tonumber(redis.call('HGET', meta, 'offset') or '0')
return {redis.call('HGET', meta, 'epoch'), offset, first, size}
"#;

/// ARGV[4] = channel, ARGV[5] = after (offset), ARGV[6] = limit. Changes
/// nothing. Returns {epoch or nil, {t1, e1, t2, e2, …}}.
const READ: &str = r#"
local key = stream_key(ARGV[4])
local epoch = redis.call('HGET', key .. ':meta', 'epoch')
local out = {}
local first = first_young(key, false)
if first then
  local start = math.max(tonumber(ARGV[5]) + 1, first)
  for _, entry in ipairs(redis.call('XRANGE', key, id(start), '+', 'COUNT', ARGV[6])) do
    table.insert(out, field(entry, 't') or '')
    table.insert(out, field(entry, 'e') or '')
  end
end
return {epoch, out}
"#;

/// Offsets beyond this cannot occur (Lua counts in doubles).
const MAX_OFFSET: u64 = 1 << 53;

/// How often the listener checks its connection still answers.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(10);

/// Most channels per SUBSCRIBE when resubscribing.
const SUBSCRIBE_BATCH: usize = 256;

/// The scripts, loaded once (EVALSHA, falling back to EVAL after a Redis
/// restart).
struct Scripts {
    publish: Script,
    channel: Script,
    read: Script,
}

impl Scripts {
    fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Self {
            publish: script(PUBLISH),
            channel: script(CHANNEL),
            read: script(READ),
        }
    }
}

/// The channel streams in Redis, shared by every instance.
#[derive(Clone)]
pub struct RedisStreams {
    shared: Arc<Shared>,
    /// To the listener task, which ends when every clone is dropped.
    commands: mpsc::UnboundedSender<Command>,
    /// Whether the listener is subscribed and caught up (see
    /// [`RedisStreams::listening`]).
    listening: watch::Receiver<bool>,
}

/// What the streams and their listener share.
struct Shared {
    connection: ConnectionManager,
    prefix: String,
    clock: SharedClock,
    history: History,
    scripts: Scripts,
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
    /// Streams on Redis at `url`, keys under `prefix`, keeping `history`,
    /// giving live events of watched channels to `sink`. It connects on
    /// first use and reconnects after failures, so a server can start (not
    /// ready) while Redis is down. Must be called within a Tokio runtime:
    /// it starts the listener task, which ends when the last clone of the
    /// streams is dropped.
    pub async fn connect(
        url: &str,
        prefix: &str,
        clock: SharedClock,
        history: History,
        sink: Arc<dyn Deliver>,
    ) -> Result<Self> {
        let connection = redis_connection::connect(url)?;
        let client = redis_connection::pubsub_client(url)?;
        let shared = Arc::new(Shared {
            connection,
            prefix: prefix.to_owned(),
            clock,
            history: History {
                max_events: history.max_events.max(1),
                ..history
            },
            scripts: Scripts::new(),
        });
        let (commands, receiver) = mpsc::unbounded_channel();
        let (up, listening) = watch::channel(false);
        let listener = Listener {
            name: format!("{prefix}streams"),
            shared: shared.clone(),
            sink,
            client,
            commands: receiver,
            watched: HashMap::new(),
            up,
        };
        tokio::spawn(listener.run());
        Ok(Self {
            shared,
            commands,
            listening,
        })
    }

    /// True while the listener's pub/sub connection is up, subscribed to
    /// every watched channel and caught up: only then can a subscription
    /// start (readiness follows it).
    pub fn listening(&self) -> watch::Receiver<bool> {
        self.listening.clone()
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
        let mut invocation = shared.invocation(&shared.scripts.publish, now);
        invocation
            .arg(shared.history.max_events)
            .arg(shared.ttl_millis());
        // The event is encoded once; the script appends each channel's
        // name, offset and epoch to its copy.
        invocation.arg(template.encode_to_vec());
        invocation
            .arg(idempotency_key.unwrap_or_default())
            .arg(duration_millis(shared.history.dedup_window).max(1));
        let names: Vec<String> = channels.iter().map(ToString::to_string).collect();
        for name in &names {
            invocation.arg(name).arg(new_epoch());
        }
        let placed: Vec<(u64, String, u8)> = invocation
            .invoke_async(&mut shared.connection.clone())
            .await?;
        if placed.len() != names.len() {
            return Err(StreamError::Malformed(format!(
                "publishing to {} channels placed {} events",
                names.len(),
                placed.len()
            )));
        }
        // A duplicate's event is the earlier one; the caller needs its
        // position, and reads it from history when it needs more.
        Ok(names
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
        invocation.arg(shared.ttl_millis()).arg(channel.to_string());
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

/// The error of a watch while the pub/sub connection is down.
fn not_connected() -> StreamError {
    StreamError::Redis(
        std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "the pub/sub connection to Redis is down",
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
    fn key(&self, channel: &ChannelName) -> String {
        format!("{}stream:{channel}", self.prefix)
    }

    /// The watched channel a pub/sub channel name stands for.
    fn channel_of(&self, pubsub: &[u8]) -> Option<ChannelName> {
        let name = std::str::from_utf8(pubsub).ok()?;
        let name = name.strip_prefix(&self.prefix)?.strip_prefix("stream:")?;
        ChannelName::parse(name).ok()
    }

    fn invocation<'a>(&self, script: &'a Script, now: i64) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .arg(&self.prefix)
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
        invocation.arg(channel.to_string()).arg(after).arg(limit);
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
            .arg(format!("{}:meta", self.key(channel)))
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

/// An event as stored and published.
fn decode(bytes: &[u8]) -> Result<Event> {
    Event::decode(bytes)
        .map_err(|error| StreamError::Malformed(format!("an event does not decode: {error}")))
}

/// What `watch` and `unwatch` ask of the listener.
enum Command {
    Watch {
        channel: ChannelName,
        reply: oneshot::Sender<Result<()>>,
    },
    Unwatch {
        channel: ChannelName,
    },
}

/// A channel this instance watches.
struct Watched {
    /// Watches not yet unwatched.
    count: usize,
    /// What the sink was given last (where the channel stood when watched,
    /// before any event).
    last: Position,
}

/// Why the listener left a connection.
enum Exit {
    /// Every [`RedisStreams`] clone is gone.
    Shutdown,
    /// The connection failed; make a new one.
    Reconnect(StreamError),
}

/// The task that owns the pub/sub connection.
struct Listener {
    name: String,
    shared: Arc<Shared>,
    sink: Arc<dyn Deliver>,
    client: redis::Client,
    commands: mpsc::UnboundedReceiver<Command>,
    watched: HashMap<ChannelName, Watched>,
    /// Whether a connection is subscribed and caught up.
    up: watch::Sender<bool>,
}

impl Listener {
    async fn run(mut self) {
        let mut backoff = Backoff::new();
        let mut was_up = true;
        loop {
            match self.connect().await {
                Ok((connection, pushes)) => {
                    if !was_up {
                        tracing::info!("stream pub/sub connection to Redis is back");
                    }
                    was_up = true;
                    self.up.send_replace(true);
                    let since = tokio::time::Instant::now();
                    let exit = self.serve(connection, pushes).await;
                    self.up.send_replace(false);
                    if since.elapsed() >= Backoff::STABLE {
                        backoff.reset();
                    }
                    match exit {
                        Exit::Shutdown => return,
                        Exit::Reconnect(error) => {
                            tracing::warn!(%error, "stream pub/sub connection to Redis lost; reconnecting");
                        }
                    }
                }
                Err(error) => {
                    if was_up {
                        tracing::warn!(%error, "cannot connect the stream pub/sub to Redis; retrying");
                    } else {
                        tracing::debug!(%error, "stream pub/sub still cannot connect to Redis");
                    }
                    was_up = false;
                }
            }
            if !self.wait(backoff.next_delay()).await {
                return;
            }
        }
    }

    /// Waits `delay` while disconnected: watches fail at once, unwatches
    /// count. False when every [`RedisStreams`] clone is gone.
    async fn wait(&mut self, delay: Duration) -> bool {
        let until = tokio::time::sleep(delay);
        tokio::pin!(until);
        loop {
            tokio::select! {
                () = &mut until => return true,
                command = self.commands.recv() => match command {
                    None => return false,
                    Some(Command::Watch { reply, .. }) => {
                        let _ = reply.send(Err(not_connected()));
                    }
                    Some(Command::Unwatch { channel }) => {
                        self.release(&channel);
                    }
                },
            }
        }
    }

    /// A new connection, subscribed to every watched channel, each caught
    /// up from history.
    async fn connect(
        &mut self,
    ) -> Result<(MultiplexedConnection, mpsc::UnboundedReceiver<PushInfo>)> {
        let (mut connection, pushes) =
            redis_connection::subscriber(&self.client, &self.name).await?;
        let channels: Vec<ChannelName> = self.watched.keys().cloned().collect();
        for batch in channels.chunks(SUBSCRIBE_BATCH) {
            let keys: Vec<String> = batch.iter().map(|c| self.shared.key(c)).collect();
            connection.subscribe(keys).await?;
        }
        for channel in &channels {
            self.catch_up(channel).await?;
        }
        Ok((connection, pushes))
    }

    /// Gives the sink what `channel`'s history holds after the last event it
    /// was given (in the channel's current epoch, everything retained when
    /// that is a new one).
    async fn catch_up(&mut self, channel: &ChannelName) -> Result<()> {
        let Some(last) = self.watched.get(channel).map(|w| w.last.clone()) else {
            return Ok(());
        };
        let max = self.shared.history.max_events;
        let outcome = match self.shared.read(channel, last.offset, max).await {
            // A new epoch: everything it retains is new to the sink.
            Ok((Some(epoch), _)) if last.offset > 0 && last.epoch.as_ref() != Some(&epoch) => {
                self.shared.read(channel, 0, max).await
            }
            outcome => outcome,
        };
        match outcome {
            Ok((_, events)) => {
                for event in events {
                    self.give(channel, event);
                }
                Ok(())
            }
            Err(StreamError::Malformed(error)) => {
                tracing::error!(%channel, %error, "cannot catch up a channel from history");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Hands `event` to the sink if it comes after what the sink was given
    /// for `channel`.
    fn give(&mut self, channel: &ChannelName, event: Arc<Event>) {
        let Some(watched) = self.watched.get_mut(channel) else {
            return;
        };
        if !watched.last.precedes(&event) {
            return;
        }
        watched.last = Position {
            epoch: Some(event.epoch.clone()),
            offset: event.offset,
        };
        self.sink.deliver(event);
    }

    /// Receives messages and commands until the connection fails.
    async fn serve(
        &mut self,
        mut connection: MultiplexedConnection,
        mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    ) -> Exit {
        let mut health = tokio::time::interval_at(
            tokio::time::Instant::now() + HEALTH_CHECK_EVERY,
            HEALTH_CHECK_EVERY,
        );
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let outcome = tokio::select! {
                push = pushes.recv() => match push {
                    None => Err(not_connected()),
                    Some(push) => match push.kind {
                        PushKind::Disconnection => Err(not_connected()),
                        PushKind::Message => self.on_message(push.data).await,
                        _ => Ok(()),
                    },
                },
                command = self.commands.recv() => match command {
                    None => return Exit::Shutdown,
                    Some(command) => self.on_command(command, &mut connection).await,
                },
                _ = health.tick() => redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .map(drop)
                    .map_err(StreamError::from),
            };
            if let Err(error) = outcome {
                return Exit::Reconnect(error);
            }
        }
    }

    /// One pub/sub message: an event of a channel, maybe after a gap.
    async fn on_message(&mut self, data: Vec<Value>) -> Result<()> {
        let [Value::BulkString(pubsub), Value::BulkString(bytes)] = &data[..] else {
            tracing::warn!("ignoring a pub/sub message of an unexpected shape");
            return Ok(());
        };
        let Some(channel) = self.shared.channel_of(pubsub) else {
            return Ok(());
        };
        let event = match decode(bytes) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%channel, %error, "ignoring an undecodable stream message");
                return Ok(());
            }
        };
        let Some(watched) = self.watched.get(&channel) else {
            return Ok(());
        };
        if !watched.last.precedes(&event) {
            return Ok(());
        }
        let after = watched.last.after_in(&event.epoch);
        if event.offset > after + 1 {
            // Lost messages: give what history holds of the gap first.
            let missing = usize::try_from(event.offset - after - 1).unwrap_or(usize::MAX);
            match self.shared.read(&channel, after, missing).await {
                Ok((_, events)) => {
                    for missed in events {
                        if missed.epoch == event.epoch && missed.offset < event.offset {
                            self.give(&channel, missed);
                        }
                    }
                }
                Err(StreamError::Malformed(error)) => {
                    tracing::error!(%channel, %error, "cannot fill a gap from history");
                }
                Err(error) => return Err(error),
            }
        }
        self.give(&channel, Arc::new(event));
        Ok(())
    }

    async fn on_command(
        &mut self,
        command: Command,
        connection: &mut MultiplexedConnection,
    ) -> Result<()> {
        match command {
            Command::Watch { channel, reply } => {
                if let Some(watched) = self.watched.get_mut(&channel) {
                    watched.count += 1;
                    self.answer(&channel, reply, connection).await
                } else {
                    let key = self.shared.key(&channel);
                    if let Err(error) = connection.subscribe(&key).await {
                        let _ = reply.send(Err(error.into()));
                        return Err(not_connected());
                    }
                    match self.shared.position(&channel).await {
                        Ok(last) => {
                            self.watched
                                .insert(channel.clone(), Watched { count: 1, last });
                            self.answer(&channel, reply, connection).await
                        }
                        Err(error) => {
                            let _ = reply.send(Err(error));
                            connection.unsubscribe(&key).await.map_err(Into::into)
                        }
                    }
                }
            }
            Command::Unwatch { channel } => {
                if self.release(&channel) {
                    connection.unsubscribe(self.shared.key(&channel)).await?;
                }
                Ok(())
            }
        }
    }

    /// Replies to a watch of a counted channel; a watcher that is gone
    /// (cancelled) no longer counts.
    async fn answer(
        &mut self,
        channel: &ChannelName,
        reply: oneshot::Sender<Result<()>>,
        connection: &mut MultiplexedConnection,
    ) -> Result<()> {
        if reply.send(Ok(())).is_err() && self.release(channel) {
            connection.unsubscribe(self.shared.key(channel)).await?;
        }
        Ok(())
    }

    /// One watch of `channel` fewer; true when that was the last.
    fn release(&mut self, channel: &ChannelName) -> bool {
        match self.watched.entry(channel.clone()) {
            Entry::Occupied(mut watched) => {
                watched.get_mut().count -= 1;
                if watched.get().count == 0 {
                    watched.remove();
                    true
                } else {
                    false
                }
            }
            Entry::Vacant(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        identity::sessions::redis::tests::{PrefixGuard, redis_url},
        infra::clock::{Clock as _, ManualClock},
        notifications::{
            ChannelState, StreamBackend,
            conformance::{HISTORY, Recorder, event, topic},
        },
    };

    async fn streams(clock: Arc<ManualClock>, sink: Arc<Recorder>) -> (StreamBackend, PrefixGuard) {
        let guard = PrefixGuard::new();
        let streams = instance(&guard, clock, sink).await;
        (streams, guard)
    }

    /// Another instance on the guard's prefix.
    async fn instance(
        guard: &PrefixGuard,
        clock: Arc<ManualClock>,
        sink: Arc<Recorder>,
    ) -> StreamBackend {
        StreamBackend::redis(&redis_url(), &guard.prefix, clock, HISTORY, sink)
            .await
            .expect("connect to Redis")
    }

    crate::notifications::conformance::conformance_suite!(streams);

    /// A hub over Redis streams on a prefix of its own.
    async fn hub(clock: Arc<ManualClock>) -> (crate::notifications::hub::Hub, PrefixGuard) {
        use crate::notifications::hub::{Hub, QueueLimits, Registry};
        let guard = PrefixGuard::new();
        let registry = Arc::new(Registry::default());
        let backend = StreamBackend::redis(
            &redis_url(),
            &guard.prefix,
            clock.clone(),
            HISTORY,
            registry.clone(),
        )
        .await
        .expect("connect to Redis");
        let limits = QueueLimits {
            max_events: 10,
            max_bytes: 1 << 20,
        };
        (Hub::new(backend, registry, HISTORY, limits, clock), guard)
    }

    fn redis() -> redis::Connection {
        redis::Client::open(redis_url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// The client ids of connections whose name is exactly `name`.
    fn clients_named(name: &str) -> Vec<String> {
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_instance_delivers_what_it_watches() {
        let clock = ManualClock::starting_now();
        let (a, guard) = streams(clock.clone(), Arc::new(Recorder::default())).await;
        let b_sink = Arc::new(Recorder::default());
        let b = instance(&guard, clock, b_sink.clone()).await;
        let (watched, other) = (topic("watched"), topic("other"));
        b.watch(&watched).await.unwrap();
        for _ in 0..3 {
            a.publish(&[other.clone(), watched.clone()], &event("x"))
                .await
                .unwrap();
        }
        b_sink.wait_for(3).await;
        b.unwatch(&watched);
        // Unwatching is asynchronous: wait until Redis has no subscriber.
        let key = format!("{}stream:topic:watched", guard.prefix);
        for _ in 0..100 {
            let counts: Vec<(String, usize)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&key)
                .query(&mut redis())
                .unwrap();
            if counts[0].1 == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        a.publish(std::slice::from_ref(&watched), &event("late"))
            .await
            .unwrap();
        b.watch(&other).await.unwrap();
        a.publish(std::slice::from_ref(&other), &event("y"))
            .await
            .unwrap();
        b_sink.wait_for(4).await;
        assert_eq!(
            b_sink.seen(),
            [
                ("topic:watched".into(), 1),
                ("topic:watched".into(), 2),
                ("topic:watched".into(), 3),
                ("topic:other".into(), 4),
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watching_twice_needs_two_unwatches() {
        let clock = ManualClock::starting_now();
        let sink = Arc::new(Recorder::default());
        let (streams, _guard) = streams(clock, sink.clone()).await;
        let c = topic("twice");
        streams.watch(&c).await.unwrap();
        streams.watch(&c).await.unwrap();
        streams.unwatch(&c);
        streams
            .publish(std::slice::from_ref(&c), &event("x"))
            .await
            .unwrap();
        assert_eq!(sink.wait_for(1).await.len(), 1, "still watched once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lost_history_starts_a_new_epoch_from_offset_one() {
        let clock = ManualClock::starting_now();
        let (streams, guard) = streams(clock, Arc::new(Recorder::default())).await;
        let c = topic("lost");
        let first = streams
            .publish(std::slice::from_ref(&c), &event("x"))
            .await
            .unwrap();
        streams
            .publish(std::slice::from_ref(&c), &event("x"))
            .await
            .unwrap();
        let _: () = redis::cmd("DEL")
            .arg(format!("{}stream:topic:lost", guard.prefix))
            .arg(format!("{}stream:topic:lost:meta", guard.prefix))
            .query(&mut redis())
            .unwrap();
        let state = streams.channel(&c).await.unwrap();
        assert_eq!(state, ChannelState::unpublished());
        let next = streams
            .publish(std::slice::from_ref(&c), &event("x"))
            .await
            .unwrap();
        assert_eq!(next[0].offset, 1);
        assert_ne!(next[0].epoch, first[0].epoch, "a new epoch");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_epoch_reaches_a_watcher_from_its_start() {
        let clock = ManualClock::starting_now();
        let sink = Arc::new(Recorder::default());
        let (streams, guard) = streams(clock, sink.clone()).await;
        let c = topic("reborn");
        streams.watch(&c).await.unwrap();
        streams
            .publish(std::slice::from_ref(&c), &event("x"))
            .await
            .unwrap();
        sink.wait_for(1).await;
        let _: () = redis::cmd("DEL")
            .arg(format!("{}stream:topic:reborn:meta", guard.prefix))
            .query(&mut redis())
            .unwrap();
        let reborn = streams
            .publish(std::slice::from_ref(&c), &event("y"))
            .await
            .unwrap();
        let seen = sink.wait_for(2).await;
        assert_eq!((seen[1].offset, &seen[1].epoch), (1, &reborn[0].epoch));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gap_in_messages_is_filled_from_history() {
        let clock = ManualClock::starting_now();
        let sink = Arc::new(Recorder::default());
        let (streams, guard) = streams(clock.clone(), sink.clone()).await;
        let c = topic("gap");
        streams.watch(&c).await.unwrap();
        streams
            .publish(std::slice::from_ref(&c), &event("x"))
            .await
            .unwrap();
        sink.wait_for(1).await;
        // Two events whose messages were lost: what the publish script
        // stores, without the PUBLISH.
        let key = format!("{}stream:topic:gap", guard.prefix);
        let epoch = streams.channel(&c).await.unwrap().epoch;
        let now = to_millis(clock.now());
        let mut connection = redis();
        for offset in [2_u64, 3] {
            let lost = Event {
                channel: c.to_string(),
                offset,
                epoch: epoch.clone(),
                time: Some(to_timestamp(from_millis(now))),
                ..event("lost")
            };
            let _: String = redis::cmd("XADD")
                .arg(&key)
                .arg(format!("{offset}-0"))
                .arg("t")
                .arg(now)
                .arg("e")
                .arg(lost.encode_to_vec())
                .query(&mut connection)
                .unwrap();
            let _: i64 = redis::cmd("HINCRBY")
                .arg(format!("{key}:meta"))
                .arg("offset")
                .arg(1)
                .query(&mut connection)
                .unwrap();
        }
        streams
            .publish(std::slice::from_ref(&c), &event("after"))
            .await
            .unwrap();
        let seen = sink.wait_for(4).await;
        let offsets: Vec<u64> = seen.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [1, 2, 3, 4]);
        assert_eq!(seen[1].r#type, "lost");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(sink.seen().len(), 4, "nothing twice");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_published_while_the_connection_is_down_arrive_once_in_order() {
        let clock = ManualClock::starting_now();
        let sink = Arc::new(Recorder::default());
        let (streams, guard) = streams(clock.clone(), sink.clone()).await;
        let publisher = instance(&guard, clock, Arc::new(Recorder::default())).await;
        let (a, b) = (topic("kill-a"), topic("kill-b"));
        streams.watch(&a).await.unwrap();
        streams.watch(&b).await.unwrap();
        publisher
            .publish(&[a.clone(), b.clone()], &event("before"))
            .await
            .unwrap();
        sink.wait_for(2).await;
        let name = format!("{}streams", guard.prefix);
        let killed = clients_named(&name);
        assert_eq!(killed.len(), 2, "one pub/sub connection per instance");
        for id in &killed {
            let _: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query(&mut redis())
                .unwrap();
        }
        for _ in 0..5 {
            publisher
                .publish(&[a.clone(), b.clone()], &event("meanwhile"))
                .await
                .unwrap();
        }
        sink.wait_for(12).await;
        let mut reconnected = Vec::new();
        for _ in 0..500 {
            reconnected = clients_named(&name);
            reconnected.retain(|id| !killed.contains(id));
            if reconnected.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(reconnected.len(), 2, "both reconnected");
        publisher
            .publish(&[a.clone(), b.clone()], &event("after"))
            .await
            .unwrap();
        sink.wait_for(14).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        for channel in ["topic:kill-a", "topic:kill-b"] {
            let offsets: Vec<u64> = sink
                .seen()
                .into_iter()
                .filter(|(c, _)| c == channel)
                .map(|(_, offset)| offset)
                .collect();
            assert_eq!(offsets, [1, 2, 3, 4, 5, 6, 7], "{channel}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_stay_under_the_prefix_and_expire() {
        let clock = ManualClock::starting_now();
        let (streams, guard) = streams(clock, Arc::new(Recorder::default())).await;
        streams
            .publish(&[topic("a"), ChannelName::user("u1")], &event("x"))
            .await
            .unwrap();
        streams.channel(&topic("empty")).await.unwrap();
        let mut connection = redis();
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", guard.prefix))
            .query(&mut connection)
            .unwrap();
        keys.sort();
        let p = &guard.prefix;
        assert_eq!(
            keys,
            [
                format!("{p}stream:topic:a"),
                format!("{p}stream:topic:a:meta"),
                format!("{p}stream:user:u1"),
                format!("{p}stream:user:u1:meta"),
            ]
        );
        for key in keys {
            let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut connection).unwrap();
            let limit = duration_millis(HISTORY.max_age);
            assert!(
                ttl > 0 && ttl <= limit,
                "{key} expires within the age limit: {ttl}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_that_do_not_decode_are_skipped_not_fatal() {
        let clock = ManualClock::starting_now();
        let (streams, guard) = streams(clock.clone(), Arc::new(Recorder::default())).await;
        let c = topic("bad");
        streams
            .publish(std::slice::from_ref(&c), &event("x"))
            .await
            .unwrap();
        let key = format!("{}stream:topic:bad", guard.prefix);
        let now = to_millis(clock.now());
        for (id, time, bytes) in [
            ("2-0", now.to_string(), &[0xff_u8, 0xff, 0xff][..]),
            ("3-0", "soon".to_owned(), &b""[..]),
        ] {
            let _: String = redis::cmd("XADD")
                .arg(&key)
                .arg(id)
                .arg("t")
                .arg(time)
                .arg("e")
                .arg(bytes)
                .query(&mut redis())
                .unwrap();
        }
        let _: i64 = redis::cmd("HSET")
            .arg(format!("{key}:meta"))
            .arg("offset")
            .arg(3)
            .query(&mut redis())
            .unwrap();
        let next = streams
            .publish(std::slice::from_ref(&c), &event("y"))
            .await
            .unwrap();
        assert_eq!(next[0].offset, 4);
        let read = streams
            .read(&c, 0, 10)
            .await
            .expect("the channel stays readable");
        assert_eq!(
            read.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [1, 4],
            "the entries that do not decode are left out; the gap shows"
        );
    }

    /// What a hole in history (an entry that does not decode, its live
    /// message lost) does to the subscribers of a hub over Redis.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscribers_are_told_of_a_hole_live_and_when_resuming() {
        use crate::notifications::hub::Item;
        let clock = ManualClock::starting_now();
        let (hub, guard) = hub(clock.clone()).await;
        let backend = hub.backend().clone();
        let c = topic("holey");
        let first = backend
            .publish(std::slice::from_ref(&c), &event("x"))
            .await
            .unwrap()
            .remove(0);
        let mut live = hub.open(None);
        live.subscribe(c.clone(), &[], None).await.unwrap();
        async fn next(feed: &crate::notifications::hub::Feed) -> Item {
            tokio::time::timeout(Duration::from_secs(5), feed.next())
                .await
                .expect("an item within 5 s")
                .expect("the feed goes on")
        }
        assert!(matches!(next(&live).await, Item::Subscribed(_)));

        let key = format!("{}stream:topic:holey", guard.prefix);
        let _: String = redis::cmd("XADD")
            .arg(&key)
            .arg("2-0")
            .arg("t")
            .arg(to_millis(clock.now()))
            .arg("e")
            .arg(&[0xff_u8, 0xff][..])
            .query(&mut redis())
            .unwrap();
        let _: i64 = redis::cmd("HINCRBY")
            .arg(format!("{key}:meta"))
            .arg("offset")
            .arg(1)
            .query(&mut redis())
            .unwrap();
        backend
            .publish(std::slice::from_ref(&c), &event("after"))
            .await
            .unwrap();
        match next(&live).await {
            Item::Subscribed(lost) => {
                assert!(lost.was_recovering && !lost.recovered, "{lost:?}");
                assert_eq!(lost.position.unwrap().offset, 2);
            }
            other => panic!("expected the hole announced, got {other:?}"),
        }
        match next(&live).await {
            Item::Event(event) => assert_eq!(event.offset, 3),
            other => panic!("expected offset 3, got {other:?}"),
        }

        let mut resumed = hub.open(None);
        let from = slop_api::notification::StreamPosition {
            offset: first.offset,
            epoch: first.epoch.clone(),
        };
        resumed
            .subscribe(c.clone(), &[], Some(&from))
            .await
            .unwrap();
        match next(&resumed).await {
            Item::Subscribed(subscribed) => {
                assert!(!subscribed.recovered, "a hole is not a recovery");
                assert_eq!(subscribed.position.unwrap().offset, 3);
            }
            other => panic!("expected subscribed, got {other:?}"),
        }
        backend
            .publish(std::slice::from_ref(&c), &event("live"))
            .await
            .unwrap();
        match next(&resumed).await {
            Item::Event(event) => assert_eq!(event.offset, 4, "no replay, then live"),
            other => panic!("expected offset 4, got {other:?}"),
        }
    }

    /// Subscribing to topics nobody published to must not fill the shared
    /// Redis: one user subscribed to 30,000 in seconds, each leaving a key
    /// for 24 h.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscribing_to_unpublished_topics_leaves_no_key() {
        let (hub, guard) = hub(ManualClock::starting_now()).await;
        for i in 0..300 {
            let mut feed = hub.open(None);
            feed.subscribe(topic(&format!("nobody-{i}")), &[], None)
                .await
                .unwrap();
        }
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", guard.prefix))
            .query(&mut redis())
            .unwrap();
        assert!(keys.is_empty(), "300 subscriptions left {keys:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aged_out_entries_are_trimmed_in_long_histories() {
        let clock = ManualClock::starting_now();
        let guard = PrefixGuard::new();
        let history = History {
            max_events: 1000,
            ..HISTORY
        };
        let streams = StreamBackend::redis(
            &redis_url(),
            &guard.prefix,
            clock.clone(),
            history,
            Arc::new(Recorder::default()),
        )
        .await
        .unwrap();
        let c = topic("long");
        for i in 0..300 {
            streams
                .publish(std::slice::from_ref(&c), &event("x"))
                .await
                .unwrap();
            if i == 136 {
                clock.advance(Duration::from_secs(30));
            }
        }
        clock.advance(Duration::from_secs(45));
        let state = streams.channel(&c).await.unwrap();
        assert_eq!((state.offset, state.earliest, state.size), (300, 138, 163));
        let len: usize = redis::cmd("XLEN")
            .arg(format!("{}stream:topic:long", guard.prefix))
            .query(&mut redis())
            .unwrap();
        assert_eq!(len, 163, "the old entries are gone");
        let read = streams.read(&c, 0, 2).await.unwrap();
        assert_eq!(
            read.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [138, 139]
        );
    }

    #[tokio::test]
    async fn ping_answers() {
        let clock = ManualClock::starting_now();
        let (streams, _guard) = streams(clock, Arc::new(Recorder::default())).await;
        streams.ping().await.unwrap();
        assert_eq!(streams.backend(), "redis");
    }
}
