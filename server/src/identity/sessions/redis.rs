//! The Redis session store, shared by every instance and surviving server
//! restarts.
//!
//! Keys, under the configured prefix (REDIS_KEY_PREFIX, `slop:` by default),
//! where `<tag>` is the user's shard tag ([`shard_tag`]), which every
//! session id of the user starts with:
//! - `session:{<tag>}:<id>`: the session as JSON, expiring with its idle
//!   timeout;
//! - `user:{<tag>}:<user id>:sessions`: a sorted set of the user's session
//!   ids, scored by last use, for listing and revoking all of a user's
//!   sessions.
//!
//! `{<tag>}` is a Redis Cluster hash tag (the prefix may not contain braces,
//! so it is each key's first): all of a user's keys hash to one slot, and
//! users spread over the cluster. A session found by its id alone finds its
//! slot in the id. An id without a tag ([`tag_of`]) names no key: every
//! operation answers "no such session" without asking Redis.
//!
//! Every read-modify-write is one Lua script, so a revocation can never be
//! undone by a concurrent touch, and two concurrent refreshes cannot both
//! advance the refresh generation. Scripts compare expiry with the time the
//! caller passes (the server's clock), never Redis's own, so expiry behaves
//! the same on both backends; Redis key TTLs only collect the garbage.
//!
//! Every script gets, of one tag, `KEYS[1]` = `<prefix>session:{<tag>}:` and
//! `KEYS[2]` = `<prefix>user:{<tag>}:` (prefixes of keys, not keys: they
//! route the call to the tag's slot), then the keys it is about:
//! - touch, advance, revoke: `KEYS[3]`, the session's key; the user's index
//!   is `KEYS[2] .. <user id> .. ':sessions'`, the user id read from the
//!   session;
//! - create: `KEYS[3]` the session's key, `KEYS[4]` its user's index; an
//!   evicted session's key is `KEYS[1] .. <id>`;
//! - list, revoke_user: `KEYS[3]`, the user's index; each session's key is
//!   `KEYS[1] .. <id>`.
//!
//! A key built in a script is one of those prefixes followed by a session or
//! user id, so its first `{…}` is the tag's and it hashes to the declared
//! keys' slot (Redis Cluster lets a script touch undeclared keys of its own
//! slot). The ids in a user's index carry the user's tag (create refuses
//! others). A get is a plain `GET` of the session's key, and so is a touch
//! that would move the idle expiry by less than the touch granularity (most
//! of them): only a touch due a write runs its script.
//!
//! Revocations reach every instance: the scripts that end a session before
//! its expiry (revoke, revoke_user, eviction at create) `PUBLISH` `<origin>
//! <session id>` on the pub/sub channel `<prefix>sessions:revoked`, where
//! `<origin>` is a random id of the publishing store. This stays classic
//! pub/sub, which Redis Cluster delivers on every node. Each store sends its
//! own revocations to [`SessionStore::revocations`] directly (so they do not
//! depend on its subscription) and hears the others' on the instance's one
//! pub/sub connection ([`crate::infra::pubsub`]), skipping its own origin.
//! After every (re)subscription of that connection it sends
//! [`RECHECK_SESSIONS`], since revocations published while it was not
//! subscribed are lost.
//!
//! [`SessionStore::revocations`]: super::SessionStore::revocations

use std::{sync::Arc, time::Duration};

use redis::Script;
use tokio::sync::broadcast;

use super::{
    Advance, MAX_SESSIONS_PER_USER, RECHECK_SESSIONS, Result, Session, SessionError,
    duration_millis, shard_tag, tag_of, touch_granularity,
};
use crate::infra::{
    clock::{SharedClock, to_millis},
    observe::ObservedRedis,
    pubsub::{Notice, PubSub, Route},
    redis_context::RedisContext,
};

/// How long a revocation or a refresh rotation waits for a replica to
/// confirm it.
const REPLICA_WAIT: Duration = Duration::from_secs(1);

/// A key in the slot of session `id`'s keys, to route a WAIT by.
fn keys_route(id: &str) -> String {
    format!("{{{}}}", tag_of(id).unwrap_or(id))
}

/// Helpers shared by the scripts: key names and liveness. KEYS[1] and
/// KEYS[2]: the key prefixes of the tag (see the module doc); ARGV[1] =
/// now (ms), ARGV[2] = origin, ARGV[3] = the revocation channel.
const PRELUDE: &str = r#"
local now = tonumber(ARGV[1])
local origin = ARGV[2]
local function session_key(id) return KEYS[1] .. id end
local function user_key(user_id) return KEYS[2] .. user_id .. ':sessions' end
-- The session if live, and its JSON as stored; deletes it (and its index
-- entry) when expired.
local function live(id)
  local raw = redis.call('GET', session_key(id))
  if not raw then return nil end
  local s = cjson.decode(raw)
  if s.expires_at <= now then
    redis.call('DEL', session_key(id))
    redis.call('ZREM', user_key(s.user_id), id)
    return nil
  end
  return s, raw
end
local function store(s)
  local out = cjson.encode(s)
  redis.call('SET', session_key(s.id), out, 'PX', s.expires_at - now)
  redis.call('ZADD', user_key(s.user_id), s.last_seen_at, s.id)
  local ttl = s.max_expires_at - now
  if redis.call('PTTL', user_key(s.user_id)) < ttl then
    redis.call('PEXPIRE', user_key(s.user_id), ttl)
  end
  return out
end
-- Tells every instance that a session ended before its expiry.
local function ended(id)
  redis.call('PUBLISH', ARGV[3], origin .. ' ' .. id)
end
-- How many replicas this primary has: when it has any, the caller waits
-- for one to have the script's writes before it answers (WAIT).
local function replicas()
  return tonumber(string.match(redis.call('INFO', 'replication'), 'connected_slaves:(%d+)')) or 0
end
-- The user's live session ids, least recently used first; prunes the rest.
local function live_ids(user_id)
  local ids = {}
  for _, id in ipairs(redis.call('ZRANGE', user_key(user_id), 0, -1)) do
    if live(id) then table.insert(ids, id) else redis.call('ZREM', user_key(user_id), id) end
  end
  return ids
end
"#;

/// KEYS[3] = the session's key, KEYS[4] = its user's index. ARGV[4] =
/// session JSON, ARGV[5] = cap. Returns the evicted ids.
const CREATE: &str = r#"
local s = cjson.decode(ARGV[4])
store(s)
local ids = live_ids(s.user_id)
local evicted = {}
for i = 1, #ids - tonumber(ARGV[5]) do
  redis.call('DEL', session_key(ids[i]))
  redis.call('ZREM', user_key(s.user_id), ids[i])
  ended(ids[i])
  table.insert(evicted, ids[i])
end
return evicted
"#;

/// KEYS[3] = the session's key. ARGV[4] = id, ARGV[5] = idle timeout (ms),
/// ARGV[6] = the least move of the expiry worth a write (ms).
const TOUCH: &str = r#"
local s, raw = live(ARGV[4])
if not s then return false end
local expires_at = math.min(now + tonumber(ARGV[5]), s.max_expires_at)
if expires_at - s.expires_at < tonumber(ARGV[6]) then return raw end
s.last_seen_at = now
s.expires_at = expires_at
return store(s)
"#;

/// KEYS[3] = the session's key. ARGV[4] = id, ARGV[5] = idle timeout (ms),
/// ARGV[6] = expected generation. Returns {replicas to wait for, outcome (0
/// gone, 1 advanced, 2 stale), session JSON or ''}.
const ADVANCE: &str = r#"
local s = live(ARGV[4])
if not s then return {0, 0, ''} end
if s.refresh_generation ~= tonumber(ARGV[6]) then return {0, 2, cjson.encode(s)} end
s.refresh_generation = s.refresh_generation + 1
s.refreshed_at = now
s.last_seen_at = now
s.expires_at = math.min(now + tonumber(ARGV[5]), s.max_expires_at)
return {replicas(), 1, store(s)}
"#;

/// KEYS[3] = the session's key. ARGV[4] = id. Returns {replicas to wait
/// for, the revoked session's JSON or ''}.
const REVOKE: &str = r#"
local s = live(ARGV[4])
if not s then return {0, ''} end
redis.call('DEL', session_key(s.id))
redis.call('ZREM', user_key(s.user_id), s.id)
ended(s.id)
return {replicas(), cjson.encode(s)}
"#;

/// KEYS[3] = the user's index. ARGV[4] = user id, ARGV[5] = id to keep
/// ('' for none). Returns {replicas to wait for, {revoked ids}}.
const REVOKE_USER: &str = r#"
local out = {}
for _, id in ipairs(live_ids(ARGV[4])) do
  if id ~= ARGV[5] then
    redis.call('DEL', session_key(id))
    redis.call('ZREM', user_key(ARGV[4]), id)
    ended(id)
    table.insert(out, id)
  end
end
if #out == 0 then return {0, out} end
return {replicas(), out}
"#;

/// KEYS[3] = the user's index. ARGV[4] = user id.
const LIST: &str = r#"
local out = {}
for _, id in ipairs(live_ids(ARGV[4])) do
  table.insert(out, redis.call('GET', session_key(id)))
end
return out
"#;

/// The scripts, loaded once (EVALSHA, falling back to EVAL after a Redis
/// restart).
struct Scripts {
    create: Script,
    touch: Script,
    advance: Script,
    revoke: Script,
    revoke_user: Script,
    list: Script,
}

impl Scripts {
    fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Self {
            create: script(CREATE),
            touch: script(TOUCH),
            advance: script(ADVANCE),
            revoke: script(REVOKE),
            revoke_user: script(REVOKE_USER),
            list: script(LIST),
        }
    }
}

/// The names of the store's keys, under one prefix (see the module doc).
#[derive(Clone)]
struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    /// `<prefix>session:{<tag>}:`, which a session's id completes to its key.
    fn sessions_of(&self, tag: &str) -> String {
        format!("{}session:{{{tag}}}:", self.prefix)
    }

    /// `<prefix>user:{<tag>}:`, which a user id and `:sessions` complete to
    /// the user's index.
    fn users_of(&self, tag: &str) -> String {
        format!("{}user:{{{tag}}}:", self.prefix)
    }

    /// The key of the session `id`; None when the id carries no tag.
    fn session(&self, id: &str) -> Option<String> {
        Some(self.sessions_of(tag_of(id)?) + id)
    }

    /// The index of the sessions of `user_id`.
    fn user(&self, user_id: &str) -> String {
        format!("{}{user_id}:sessions", self.users_of(&shard_tag(user_id)))
    }

    /// The KEYS of a script about the session `id` (touch, advance,
    /// revoke); None when the id carries no tag.
    fn about_session(&self, id: &str) -> Option<Vec<String>> {
        let tag = tag_of(id)?;
        Some(vec![
            self.sessions_of(tag),
            self.users_of(tag),
            self.sessions_of(tag) + id,
        ])
    }

    /// The KEYS of a script about the sessions of `user_id` (list,
    /// revoke_user).
    fn about_user(&self, user_id: &str) -> Vec<String> {
        let tag = shard_tag(user_id);
        vec![
            self.sessions_of(&tag),
            self.users_of(&tag),
            self.user(user_id),
        ]
    }

    /// The KEYS of creating `session` (whose id carries its user's tag).
    fn creating(&self, session: &Session) -> Vec<String> {
        let tag = shard_tag(&session.user_id);
        vec![
            self.sessions_of(&tag),
            self.users_of(&tag),
            self.sessions_of(&tag) + &session.id,
            self.user(&session.user_id),
        ]
    }
}

/// Sessions in Redis.
#[derive(Clone)]
pub struct RedisSessions {
    connection: ObservedRedis,
    keys: Keys,
    /// The pub/sub channel of revocations.
    revocations: Arc<str>,
    clock: SharedClock,
    scripts: Arc<Scripts>,
    /// This store's id in revocation messages.
    origin: Arc<str>,
    revoked: broadcast::Sender<String>,
    /// Keeps the pub/sub loop, and with it other instances' revocations,
    /// running while the store lives.
    _pubsub: PubSub,
}

impl RedisSessions {
    /// A store on the instance's Redis context. It listens for other
    /// instances' revocations on the context's pub/sub connection.
    pub fn new(redis: &RedisContext) -> Self {
        let origin: Arc<str> = crate::identity::secrets::random_token(12).into();
        let (revoked, _) = broadcast::channel(super::REVOCATIONS_CAPACITY);
        let listener = Revocations {
            origin: origin.clone(),
            revoked: revoked.clone(),
        };
        let revocations = revocations_channel(redis.prefix());
        redis.pubsub().route(
            Route::Channel(revocations.clone()),
            Box::new(move |notice| {
                listener.on(notice);
                true
            }),
        );
        Self {
            connection: redis.commands(),
            keys: Keys {
                prefix: redis.prefix().into(),
            },
            revocations: revocations.into(),
            clock: redis.clock().clone(),
            scripts: Arc::new(Scripts::new()),
            origin,
            revoked,
            _pubsub: redis.pubsub().clone(),
        }
    }

    /// A call of `script` with `keys` (see [`Keys`]) and the arguments every
    /// script takes.
    fn invocation<'a>(&self, script: &'a Script, keys: Vec<String>) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation
            .arg(to_millis(self.clock.now()))
            .arg(self.origin.as_ref())
            .arg(self.revocations.as_ref());
        invocation
    }

    /// Sessions that ended before their expiry: ids from this store, from
    /// other stores on the prefix, and [`RECHECK_SESSIONS`].
    pub(super) fn revocations(&self) -> broadcast::Receiver<String> {
        self.revoked.subscribe()
    }

    /// Tells this instance's listeners that `id` ended (the script told the
    /// others).
    fn ended(&self, id: &str) {
        // Fails only when nobody listens.
        let _ = self.revoked.send(id.to_owned());
    }

    pub(super) async fn create(&self, session: &Session) -> Result<()> {
        let json = serde_json::to_string(session)?;
        let mut invocation = self.invocation(&self.scripts.create, self.keys.creating(session));
        invocation.arg(json).arg(MAX_SESSIONS_PER_USER);
        let evicted: Vec<String> = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        for id in &evicted {
            self.ended(id);
        }
        Ok(())
    }

    pub(super) async fn get(&self, id: &str) -> Result<Option<Session>> {
        let Some(key) = self.keys.session(id) else {
            return Ok(None);
        };
        let raw: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.connection.clone())
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        let session: Session = serde_json::from_str(&raw)?;
        Ok((session.expires_at > to_millis(self.clock.now())).then_some(session))
    }

    /// A plain `GET` first: most uses would move the idle expiry by less
    /// than [`touch_granularity`], and then the read is the whole answer
    /// (a read cannot undo a revocation, so it needs no script). Only a use
    /// that is due a write runs the touch script, which checks everything
    /// again atomically.
    pub(super) async fn touch(&self, id: &str, idle_ttl: Duration) -> Result<Option<Session>> {
        let Some(session) = self.get(id).await? else {
            return Ok(None);
        };
        if !session.due_a_touch(to_millis(self.clock.now()), idle_ttl) {
            return Ok(Some(session));
        }
        // The script's keys only now: most uses end above, and the keys
        // are four strings to make.
        let Some(keys) = self.keys.about_session(id) else {
            return Ok(None);
        };
        let mut invocation = self.invocation(&self.scripts.touch, keys);
        invocation
            .arg(id)
            .arg(duration_millis(idle_ttl))
            .arg(duration_millis(touch_granularity(idle_ttl)));
        let raw: Option<String> = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(raw.map(|raw| serde_json::from_str(&raw)).transpose()?)
    }

    pub(super) async fn advance_refresh(
        &self,
        id: &str,
        expected: u64,
        idle_ttl: Duration,
    ) -> Result<Advance> {
        let Some(keys) = self.keys.about_session(id) else {
            return Ok(Advance::Gone);
        };
        let mut invocation = self.invocation(&self.scripts.advance, keys);
        invocation
            .arg(id)
            .arg(duration_millis(idle_ttl))
            .arg(expected);
        let (replicas, outcome, raw): (i64, i64, String) = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        let advance = match outcome {
            0 => Advance::Gone,
            1 => Advance::Advanced(serde_json::from_str(&raw)?),
            _ => Advance::Stale(serde_json::from_str(&raw)?),
        };
        // A rotation a failover undid would make the old refresh token
        // good again.
        self.replicated(replicas, &keys_route(id)).await?;
        Ok(advance)
    }

    pub(super) async fn revoke(&self, id: &str) -> Result<Option<Session>> {
        let Some(keys) = self.keys.about_session(id) else {
            return Ok(None);
        };
        let mut invocation = self.invocation(&self.scripts.revoke, keys);
        invocation.arg(id);
        let (replicas, raw): (i64, String) = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        if raw.is_empty() {
            return Ok(None);
        }
        // Ended here whatever the replicas say: this instance's streams of
        // the session close at once.
        self.ended(id);
        self.replicated(replicas, &keys_route(id)).await?;
        Ok(Some(serde_json::from_str(&raw)?))
    }

    pub(super) async fn revoke_user(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<Vec<String>> {
        let mut invocation =
            self.invocation(&self.scripts.revoke_user, self.keys.about_user(user_id));
        invocation.arg(user_id).arg(keep.unwrap_or(""));
        let (replicas, ended): (i64, Vec<String>) = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        for id in &ended {
            self.ended(id);
        }
        self.replicated(replicas, &self.keys.user(user_id)).await?;
        Ok(ended)
    }

    /// Once a script that ended or rotated a session reports `replicas`
    /// on its primary, waits (at most [`REPLICA_WAIT`]) until one of them
    /// has the change, which a failover then keeps: the caller is answered
    /// OK only for what survives one. None confirming in time is
    /// [`SessionError::NotReplicated`] (UNAVAILABLE: retry), though the
    /// change stands on the primary. `key` routes the WAIT to the slot's
    /// primary. With no replicas there is nothing to wait for.
    async fn replicated(&self, replicas: i64, key: &str) -> Result<()> {
        if replicas <= 0 {
            return Ok(());
        }
        let confirmed = self
            .connection
            .clone()
            .wait_for_replica(key, REPLICA_WAIT)
            .await?;
        if confirmed < 1 {
            return Err(SessionError::NotReplicated);
        }
        Ok(())
    }

    pub(super) async fn list_user(&self, user_id: &str) -> Result<Vec<Session>> {
        let mut invocation = self.invocation(&self.scripts.list, self.keys.about_user(user_id));
        invocation.arg(user_id);
        let raws: Vec<String> = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        let mut sessions = raws
            .iter()
            .map(|raw| serde_json::from_str(raw))
            .collect::<Result<Vec<Session>, _>>()?;
        sessions.sort_by(|a, b| {
            b.last_seen_at
                .cmp(&a.last_seen_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(sessions)
    }

    pub(super) async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }
}

/// The pub/sub channel revocations go out on.
fn revocations_channel(prefix: &str) -> String {
    format!("{prefix}sessions:revoked")
}

/// Passes other stores' revocations on to this store's listeners.
struct Revocations {
    origin: Arc<str>,
    revoked: broadcast::Sender<String>,
}

impl Revocations {
    fn on(&self, notice: Notice) {
        match notice {
            Notice::Message { payload, .. } => self.on_message(&payload),
            // Whatever was published while not subscribed is lost. Nothing
            // to read back: the holders of sessions re-check them.
            Notice::Subscribed { .. } => {
                let _ = self.revoked.send(RECHECK_SESSIONS.to_owned());
            }
            Notice::Lost => {}
        }
    }

    fn on_message(&self, payload: &[u8]) {
        let Some((origin, id)) = std::str::from_utf8(payload)
            .ok()
            .and_then(|payload| payload.split_once(' '))
        else {
            tracing::warn!("ignoring a malformed session revocation message");
            return;
        };
        if origin != self.origin.as_ref() && !id.is_empty() && id != RECHECK_SESSIONS {
            let _ = self.revoked.send(id.to_owned());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use redis::cluster_routing::Slot;

    use super::*;
    use crate::{
        identity::sessions::{
            SessionStore,
            conformance::{TTL, id, next_revocation, revocations_are_announced, session},
        },
        infra::{
            clock::ManualClock,
            redis_context::testing::{PrefixGuard, kill_clients_named, redis},
        },
    };

    /// Waits (at most 5 s) until `count` stores listen for revocations on
    /// the guard's prefix. Their first [`RECHECK_SESSIONS`] cannot tell:
    /// it may go out before a test holds a receiver.
    async fn subscribed(guard: &PrefixGuard, count: i64) {
        let channel = revocations_channel(&guard.prefix);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (_, listening): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query(&mut redis())
                .unwrap();
            if listening >= count {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{listening} of {count} stores subscribed to {channel} after 5 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A store on an instance (a Redis context) of its own.
    fn instance(guard: &PrefixGuard, clock: Arc<ManualClock>) -> SessionStore {
        SessionStore::redis(&guard.context(clock))
    }

    #[tokio::test]
    async fn sessions_survive_a_new_connection_as_after_a_restart() {
        let clock = ManualClock::starting_now();
        let guard = PrefixGuard::new();
        let first = instance(&guard, clock.clone());
        let s1 = session(&clock, "s1", "u1");
        first.create(&s1).await.unwrap();
        drop(first);
        let second = instance(&guard, clock);
        assert_eq!(second.get(&s1.id).await.unwrap(), Some(s1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revocations_reach_every_instance_on_the_prefix() {
        let clock = ManualClock::starting_now();
        let guard = PrefixGuard::new();
        let (a, b) = (
            instance(&guard, clock.clone()),
            instance(&guard, clock.clone()),
        );
        let other_prefix = PrefixGuard::new();
        let elsewhere = instance(&other_prefix, clock.clone());
        let (on_a, on_b, mut on_elsewhere) =
            (a.revocations(), b.revocations(), elsewhere.revocations());
        subscribed(&guard, 2).await;
        subscribed(&other_prefix, 1).await;
        revocations_are_announced(a, clock.clone(), vec![on_a, on_b]).await;
        elsewhere
            .create(&session(&clock, "mine", "u9"))
            .await
            .unwrap();
        elsewhere.revoke(&id("mine", "u9")).await.unwrap();
        assert_eq!(
            next_revocation(&mut on_elsewhere).await,
            id("mine", "u9"),
            "another prefix hears nothing of the first"
        );
    }

    /// Two stores on one context (as the server's sessions are, beside its
    /// streams) share its one pub/sub connection, and each hears the
    /// other's revocations once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stores_on_one_context_share_its_pub_sub_connection() {
        let clock = ManualClock::starting_now();
        let guard = PrefixGuard::new();
        let context = guard.context(clock.clone());
        let (a, b) = (SessionStore::redis(&context), SessionStore::redis(&context));
        let mut on_b = b.revocations();
        subscribed(&guard, 1).await;
        a.create(&session(&clock, "s1", "u1")).await.unwrap();
        a.revoke(&id("s1", "u1")).await.unwrap();
        assert_eq!(next_revocation(&mut on_b).await, id("s1", "u1"));
        let name = format!("{}pubsub", guard.prefix);
        assert_eq!(
            crate::infra::redis_context::testing::clients_named(&name).len(),
            1
        );
    }

    #[tokio::test]
    async fn the_revocation_subscriber_reconnects_and_asks_for_a_recheck() {
        let clock = ManualClock::starting_now();
        let guard = PrefixGuard::new();
        let a = instance(&guard, clock.clone());
        let b = instance(&guard, clock.clone());
        // On this single-threaded runtime b's pub/sub loop has not run yet,
        // so the receiver hears its first re-check, sent once it is
        // subscribed.
        let mut on_b = b.revocations();
        let first = tokio::time::timeout(Duration::from_secs(5), on_b.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first, RECHECK_SESSIONS);
        kill_clients_named(&format!("{}pubsub", guard.prefix));
        let again = tokio::time::timeout(Duration::from_secs(5), on_b.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, RECHECK_SESSIONS, "told to re-check");
        a.create(&session(&clock, "s1", "u1")).await.unwrap();
        a.revoke(&id("s1", "u1")).await.unwrap();
        assert_eq!(next_revocation(&mut on_b).await, id("s1", "u1"));
    }

    #[tokio::test]
    async fn keys_stay_under_the_prefix_with_the_users_tag() {
        let clock = ManualClock::starting_now();
        let guard = PrefixGuard::new();
        let store = instance(&guard, clock.clone());
        store.create(&session(&clock, "s1", "u1")).await.unwrap();
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", guard.prefix))
            .query(&mut redis())
            .unwrap();
        keys.sort();
        let (p, tag) = (&guard.prefix, shard_tag("u1"));
        assert_eq!(tag, "a7f3", "the shard tag never changes");
        assert_eq!(
            keys,
            [
                format!("{p}session:{{a7f3}}:a7f3~s1"),
                format!("{p}user:{{a7f3}}:u1:sessions")
            ]
        );
    }

    /// The slot of a key on Redis Cluster.
    fn slot(key: &str) -> Slot {
        Slot::for_key(key)
    }

    /// The one slot all of `keys` hash to.
    fn one_slot(keys: &[String]) -> Slot {
        let first = slot(&keys[0]);
        for key in keys {
            assert_eq!(
                slot(key),
                first,
                "{key} is in another slot than {}",
                keys[0]
            );
        }
        first
    }

    /// Every script call names keys of one slot, the user's, whatever the
    /// user id looks like; and so do the keys the scripts build from them,
    /// as Redis shows them after the calls.
    #[tokio::test]
    async fn every_call_touches_the_one_slot_of_its_user() {
        let clock = ManualClock::starting_now();
        let guard = PrefixGuard::new();
        let store = instance(&guard, clock.clone());
        let keys = Keys {
            prefix: guard.prefix.as_str().into(),
        };
        let users = [
            "u1",
            "u2",
            "7f3a0c52-4be1-4d7e-9a61-2f0e8c1d3b47",
            "{x}",
            "a:b}",
        ];
        for user in users {
            let mut made = session(&clock, "s1", user);
            made.id = Session::new_id(user);
            let slot = one_slot(&keys.creating(&made));
            assert_eq!(one_slot(&keys.about_session(&made.id).unwrap()), slot);
            assert_eq!(one_slot(&keys.about_user(user)), slot);
            assert_eq!(self::slot(&keys.session(&made.id).unwrap()), slot);
            let SessionStore::Redis(redis_store) = &store else {
                unreachable!()
            };
            redis_store.create(&made).await.unwrap();
            redis_store.touch(&made.id, TTL).await.unwrap();
            let stored: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", guard.prefix))
                .query(&mut redis())
                .unwrap();
            let theirs: Vec<String> = stored
                .into_iter()
                .filter(|key| key.contains(&format!("{{{}}}", shard_tag(user))))
                .collect();
            assert_eq!(theirs.len(), 2, "{user}: {theirs:?}");
            assert_eq!(one_slot(&theirs), slot, "{user}");
        }
    }

    #[test]
    fn ids_carry_their_users_tag_and_users_spread_over_the_slots() {
        let keys = Keys {
            prefix: "slop:".into(),
        };
        for user in ["u1", "u2", ""] {
            let id = Session::new_id(user);
            assert_eq!(tag_of(&id), Some(shard_tag(user).as_str()), "{id}");
            assert_eq!(id.len(), 4 + 1 + 24, "{id}");
        }
        let (u1, u2) = (keys.about_user("u1"), keys.about_user("u2"));
        assert_ne!(one_slot(&u1), one_slot(&u2), "two users, two slots");
        // 1000 users drawn into 16384 slots at random would hit about 970.
        let slots: std::collections::HashSet<Slot> = (0..1000)
            .map(|i| one_slot(&keys.about_user(&format!("user-{i}"))))
            .collect();
        assert!(slots.len() > 940, "1000 users in {} slots", slots.len());
        // The 65536 tags fall in 13152 of the 16384 slots (CRC16 is
        // linear), at most 12 in one, evenly over the slot ranges a cluster
        // hands its primaries.
        let number: std::collections::HashMap<Slot, u16> =
            (0..16384).map(|n| (Slot::new(n).unwrap(), n)).collect();
        let slots: Vec<u16> = (0..=0xffff_u32)
            .map(|tag| number[&slot(&keys.sessions_of(&format!("{tag:04x}")))])
            .collect();
        for primaries in [3_usize, 6, 10] {
            let mut tags = vec![0_usize; primaries];
            for slot in &slots {
                tags[usize::from(*slot) * primaries / 16384] += 1;
            }
            let even = 65536 / primaries;
            assert!(
                tags.iter().all(|n| n.abs_diff(even) < even / 100),
                "{primaries} primaries: {tags:?}"
            );
        }
    }
}

#[cfg(test)]
mod replication_tests {
    use super::*;
    use crate::{
        identity::sessions::{
            SessionStore,
            conformance::{TTL, id, session},
        },
        infra::{clock::ManualClock, redis_context::testing::ClusterGuard},
    };

    /// On a cluster, a revocation or a refresh rotation is answered OK
    /// only once a replica has it (a failover keeps it then): with the
    /// replica of the user's primary stopped (SIGSTOP), revoking, revoking
    /// the user's sessions and rotating fail UNAVAILABLE within the wait
    /// instead of answering OK for a change a failover could undo; with the
    /// replica back, they succeed. Reads never wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_cluster_ending_or_rotating_a_session_waits_for_a_replica() {
        let guard = ClusterGuard::start();
        let clock = ManualClock::starting_now();
        let store = SessionStore::redis(&guard.context(clock.clone()));
        let (first, second) = (id("a", "u1"), id("b", "u1"));
        for name in ["a", "b", "c"] {
            store.create(&session(&clock, name, "u1")).await.unwrap();
        }
        let primary = guard
            .cluster
            .primary_for(&format!("{{{}}}", shard_tag("u1")));
        let replicas = guard.cluster.replicas_of(primary);
        assert_eq!(replicas.len(), 1, "one replica of {primary}");

        guard.cluster.pause(replicas[0]);
        let started = std::time::Instant::now();
        let refused = store.revoke(&first).await.unwrap_err();
        assert!(matches!(refused, SessionError::NotReplicated), "{refused}");
        assert!(started.elapsed() < REPLICA_WAIT + Duration::from_secs(1));
        assert!(matches!(
            store.advance_refresh(&second, 0, TTL).await,
            Err(SessionError::NotReplicated)
        ));
        assert!(matches!(
            store.revoke_user("u1", Some(&second)).await,
            Err(SessionError::NotReplicated)
        ));
        assert!(store.get(&second).await.is_ok(), "reads do not wait");
        guard.cluster.resume(replicas[0]);

        let revoked = store.revoke(&second).await.unwrap();
        assert!(revoked.is_some());
        store.create(&session(&clock, "a", "u1")).await.unwrap();
        assert!(matches!(
            store.advance_refresh(&first, 0, TTL).await.unwrap(),
            Advance::Advanced(_)
        ));
        // The unconfirmed revocation of c stood on the primary all along.
        assert_eq!(store.get(&id("c", "u1")).await.unwrap(), None);
        assert_eq!(store.revoke_user("u1", None).await.unwrap(), [first]);
    }

    /// On a cluster, a slot moving to another primary (a reshard) is
    /// followed by the client: while the slot is split between the two
    /// (ASK, TRYAGAIN), each call answers right or fails (UNAVAILABLE)
    /// within the timeout, never wrong and never hanging; once it moved,
    /// every session is there and every operation works.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_cluster_sessions_follow_a_slot_that_moves() {
        let guard = ClusterGuard::start();
        let clock = ManualClock::starting_now();
        let store = SessionStore::redis(&guard.context(clock.clone()));
        let names = ["a", "b", "c", "d"];
        for name in names {
            store.create(&session(&clock, name, "u1")).await.unwrap();
        }
        let slot = guard.cluster.slot_of(&format!("{{{}}}", shard_tag("u1")));
        let from = guard.cluster.primary_of_slot(slot);
        let to = *guard
            .cluster
            .primaries()
            .iter()
            .find(|port| **port != from)
            .unwrap();

        let migration = guard.cluster.begin_migration(slot, to);
        assert_eq!(migration.move_keys(2), 2, "half of the slot's keys");
        for name in names {
            let started = std::time::Instant::now();
            match store.get(&id(name, "u1")).await {
                Ok(found) => assert_eq!(found.map(|s| s.id), Some(id(name, "u1"))),
                Err(error) => assert!(matches!(error, SessionError::Redis(_)), "{error}"),
            }
            match store.touch(&id(name, "u1"), TTL).await {
                Ok(found) => assert_eq!(found.map(|s| s.id), Some(id(name, "u1"))),
                Err(error) => assert!(matches!(error, SessionError::Redis(_)), "{error}"),
            }
            assert!(started.elapsed() < Duration::from_secs(5), "no hang");
        }
        migration.finish();

        for name in names {
            assert!(
                store.get(&id(name, "u1")).await.unwrap().is_some(),
                "{name}"
            );
            assert!(store.touch(&id(name, "u1"), TTL).await.unwrap().is_some());
        }
        assert_eq!(store.list_user("u1").await.unwrap().len(), names.len());
        assert!(store.revoke(&id("a", "u1")).await.unwrap().is_some());
        assert_eq!(store.revoke_user("u1", None).await.unwrap().len(), 3);
    }
}
