//! The Redis session store, shared by every instance and surviving server
//! restarts.
//!
//! Keys, under the configured prefix (REDIS_KEY_PREFIX, `slop:` by default):
//! - `session:<id>`: the session as JSON, expiring with its idle timeout;
//! - `user:<user id>:sessions`: a sorted set of the user's session ids,
//!   scored by last use, for listing and revoking all of a user's sessions.
//!
//! Every read-modify-write is one Lua script, so a revocation can never be
//! undone by a concurrent touch, and two concurrent refreshes cannot both
//! advance the refresh generation. Scripts compare expiry with the time the
//! caller passes (the server's clock), never Redis's own, so expiry behaves
//! the same on both backends; Redis key TTLs only collect the garbage. The
//! scripts name per-user keys they derive from the session, which standalone
//! Redis and Redis with a single primary allow (not Redis Cluster).
//!
//! Revocations reach every instance: the scripts that end a session before
//! its expiry (revoke, revoke_user, eviction at create) `PUBLISH` `<origin>
//! <session id>` on the pub/sub channel `<prefix>sessions:revoked`, where
//! `<origin>` is a random id of the publishing store. Each store sends its
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

use super::{Advance, MAX_SESSIONS_PER_USER, RECHECK_SESSIONS, Result, Session, duration_millis};
use crate::infra::{
    clock::{SharedClock, to_millis},
    observe::ObservedRedis,
    pubsub::{Notice, PubSub, Route},
    redis_context::RedisContext,
};

/// Helpers shared by the scripts: key names and liveness.
const PRELUDE: &str = r#"
local prefix = ARGV[1]
local now = tonumber(ARGV[2])
local origin = ARGV[3]
local function session_key(id) return prefix .. 'session:' .. id end
local function user_key(user_id) return prefix .. 'user:' .. user_id .. ':sessions' end
-- The session if live; deletes it (and its index entry) when expired.
local function live(id)
  local raw = redis.call('GET', session_key(id))
  if not raw then return nil end
  local s = cjson.decode(raw)
  if s.expires_at <= now then
    redis.call('DEL', session_key(id))
    redis.call('ZREM', user_key(s.user_id), id)
    return nil
  end
  return s
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
  redis.call('PUBLISH', prefix .. 'sessions:revoked', origin .. ' ' .. id)
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

/// ARGV[4] = session JSON, ARGV[5] = cap. Returns the evicted ids.
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

/// ARGV[4] = id, ARGV[5] = idle timeout (ms).
const TOUCH: &str = r#"
local s = live(ARGV[4])
if not s then return false end
s.last_seen_at = now
s.expires_at = math.min(now + tonumber(ARGV[5]), s.max_expires_at)
return store(s)
"#;

/// ARGV[4] = id, ARGV[5] = idle timeout (ms), ARGV[6] = expected generation.
const ADVANCE: &str = r#"
local s = live(ARGV[4])
if not s then return false end
if s.refresh_generation ~= tonumber(ARGV[6]) then return {2, cjson.encode(s)} end
s.refresh_generation = s.refresh_generation + 1
s.refreshed_at = now
s.last_seen_at = now
s.expires_at = math.min(now + tonumber(ARGV[5]), s.max_expires_at)
return {1, store(s)}
"#;

/// ARGV[4] = id.
const REVOKE: &str = r#"
local s = live(ARGV[4])
if not s then return false end
redis.call('DEL', session_key(s.id))
redis.call('ZREM', user_key(s.user_id), s.id)
ended(s.id)
return cjson.encode(s)
"#;

/// ARGV[4] = user id, ARGV[5] = id to keep ('' for none).
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
return out
"#;

/// ARGV[4] = user id.
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

/// Sessions in Redis.
#[derive(Clone)]
pub struct RedisSessions {
    connection: ObservedRedis,
    prefix: Arc<str>,
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
        redis.pubsub().route(
            Route::Channel(revocations_channel(redis.prefix())),
            Box::new(move |notice| {
                listener.on(notice);
                true
            }),
        );
        Self {
            connection: redis.commands(),
            prefix: redis.prefix().into(),
            clock: redis.clock().clone(),
            scripts: Arc::new(Scripts::new()),
            origin,
            revoked,
            _pubsub: redis.pubsub().clone(),
        }
    }

    fn invocation<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .arg(self.prefix.as_ref())
            .arg(to_millis(self.clock.now()))
            .arg(self.origin.as_ref());
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
        let mut invocation = self.invocation(&self.scripts.create);
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
        let raw: Option<String> = redis::cmd("GET")
            .arg(format!("{}session:{id}", self.prefix))
            .query_async(&mut self.connection.clone())
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        let session: Session = serde_json::from_str(&raw)?;
        Ok((session.expires_at > to_millis(self.clock.now())).then_some(session))
    }

    pub(super) async fn touch(&self, id: &str, idle_ttl: Duration) -> Result<Option<Session>> {
        let mut invocation = self.invocation(&self.scripts.touch);
        invocation.arg(id).arg(duration_millis(idle_ttl));
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
        let mut invocation = self.invocation(&self.scripts.advance);
        invocation
            .arg(id)
            .arg(duration_millis(idle_ttl))
            .arg(expected);
        let outcome: Option<(i64, String)> = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(match outcome {
            None => Advance::Gone,
            Some((1, raw)) => Advance::Advanced(serde_json::from_str(&raw)?),
            Some((_, raw)) => Advance::Stale(serde_json::from_str(&raw)?),
        })
    }

    pub(super) async fn revoke(&self, id: &str) -> Result<Option<Session>> {
        let mut invocation = self.invocation(&self.scripts.revoke);
        invocation.arg(id);
        let raw: Option<String> = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        if raw.is_some() {
            self.ended(id);
        }
        Ok(raw.map(|raw| serde_json::from_str(&raw)).transpose()?)
    }

    pub(super) async fn revoke_user(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<Vec<String>> {
        let mut invocation = self.invocation(&self.scripts.revoke_user);
        invocation.arg(user_id).arg(keep.unwrap_or(""));
        let ended: Vec<String> = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        for id in &ended {
            self.ended(id);
        }
        Ok(ended)
    }

    pub(super) async fn list_user(&self, user_id: &str) -> Result<Vec<Session>> {
        let mut invocation = self.invocation(&self.scripts.list);
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
    use super::*;
    use crate::{
        identity::sessions::{
            SessionStore,
            conformance::{next_revocation, revocations_are_announced, session},
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
        assert_eq!(second.get("s1").await.unwrap(), Some(s1));
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
        elsewhere.revoke("mine").await.unwrap();
        assert_eq!(
            next_revocation(&mut on_elsewhere).await,
            "mine",
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
        a.revoke("s1").await.unwrap();
        assert_eq!(next_revocation(&mut on_b).await, "s1");
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
        a.revoke("s1").await.unwrap();
        assert_eq!(next_revocation(&mut on_b).await, "s1");
    }

    #[tokio::test]
    async fn keys_stay_under_the_prefix() {
        let clock = ManualClock::starting_now();
        let guard = PrefixGuard::new();
        let store = instance(&guard, clock.clone());
        store.create(&session(&clock, "s1", "u1")).await.unwrap();
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", guard.prefix))
            .query(&mut redis())
            .unwrap();
        keys.sort();
        assert_eq!(
            keys,
            [
                format!("{}session:s1", guard.prefix),
                format!("{}user:u1:sessions", guard.prefix)
            ]
        );
    }
}
