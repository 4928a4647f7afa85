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

use std::{sync::Arc, time::Duration};

use redis::{Script, aio::ConnectionManager};

use super::{Advance, MAX_SESSIONS_PER_USER, Result, Session, duration_millis};
use crate::clock::{SharedClock, to_millis};

/// Helpers shared by the scripts: key names and liveness.
const PRELUDE: &str = r#"
local prefix = ARGV[1]
local now = tonumber(ARGV[2])
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
-- The user's live session ids, least recently used first; prunes the rest.
local function live_ids(user_id)
  local ids = {}
  for _, id in ipairs(redis.call('ZRANGE', user_key(user_id), 0, -1)) do
    if live(id) then table.insert(ids, id) else redis.call('ZREM', user_key(user_id), id) end
  end
  return ids
end
"#;

/// ARGV[3] = session JSON, ARGV[4] = cap.
const CREATE: &str = r#"
local s = cjson.decode(ARGV[3])
store(s)
local ids = live_ids(s.user_id)
for i = 1, #ids - tonumber(ARGV[4]) do
  redis.call('DEL', session_key(ids[i]))
  redis.call('ZREM', user_key(s.user_id), ids[i])
end
return 1
"#;

/// ARGV[3] = id, ARGV[4] = idle timeout (ms).
const TOUCH: &str = r#"
local s = live(ARGV[3])
if not s then return false end
s.last_seen_at = now
s.expires_at = math.min(now + tonumber(ARGV[4]), s.max_expires_at)
return store(s)
"#;

/// ARGV[3] = id, ARGV[4] = idle timeout (ms), ARGV[5] = expected generation.
const ADVANCE: &str = r#"
local s = live(ARGV[3])
if not s then return false end
if s.refresh_generation ~= tonumber(ARGV[5]) then return {2, cjson.encode(s)} end
s.refresh_generation = s.refresh_generation + 1
s.refreshed_at = now
s.last_seen_at = now
s.expires_at = math.min(now + tonumber(ARGV[4]), s.max_expires_at)
return {1, store(s)}
"#;

/// ARGV[3] = id.
const REVOKE: &str = r#"
local s = live(ARGV[3])
if not s then return false end
redis.call('DEL', session_key(s.id))
redis.call('ZREM', user_key(s.user_id), s.id)
return cjson.encode(s)
"#;

/// ARGV[3] = user id, ARGV[4] = id to keep ('' for none).
const REVOKE_USER: &str = r#"
local ended = {}
for _, id in ipairs(live_ids(ARGV[3])) do
  if id ~= ARGV[4] then
    redis.call('DEL', session_key(id))
    redis.call('ZREM', user_key(ARGV[3]), id)
    table.insert(ended, id)
  end
end
return ended
"#;

/// ARGV[3] = user id.
const LIST: &str = r#"
local out = {}
for _, id in ipairs(live_ids(ARGV[3])) do
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
    connection: ConnectionManager,
    prefix: Arc<str>,
    clock: SharedClock,
    scripts: Arc<Scripts>,
}

impl RedisSessions {
    /// A store on Redis at `url`, keys under `prefix`. It connects on first
    /// use and reconnects after failures, so a server can start (not ready)
    /// while Redis is down and recover when it returns.
    pub async fn connect(url: &str, prefix: &str, clock: SharedClock) -> Result<Self> {
        let connection = crate::redis_connection::connect(url)?;
        Ok(Self {
            connection,
            prefix: prefix.into(),
            clock,
            scripts: Arc::new(Scripts::new()),
        })
    }

    fn invocation<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .arg(self.prefix.as_ref())
            .arg(to_millis(self.clock.now()));
        invocation
    }

    pub(super) async fn create(&self, session: &Session) -> Result<()> {
        let json = serde_json::to_string(session)?;
        let mut invocation = self.invocation(&self.scripts.create);
        invocation.arg(json).arg(MAX_SESSIONS_PER_USER);
        let _: i64 = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
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
        Ok(raw.map(|raw| serde_json::from_str(&raw)).transpose()?)
    }

    pub(super) async fn revoke_user(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<Vec<String>> {
        let mut invocation = self.invocation(&self.scripts.revoke_user);
        invocation.arg(user_id).arg(keep.unwrap_or(""));
        Ok(invocation
            .invoke_async(&mut self.connection.clone())
            .await?)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{clock::ManualClock, sessions::SessionStore};

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

    /// Deletes every key under a test's prefix when the test ends.
    pub(crate) struct PrefixGuard {
        url: String,
        pub(crate) prefix: String,
    }

    impl PrefixGuard {
        pub(crate) fn new() -> Self {
            Self {
                url: redis_url(),
                prefix: format!("slop-test:{}:", uuid::Uuid::new_v4().simple()),
            }
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

    async fn store(clock: Arc<ManualClock>) -> (SessionStore, PrefixGuard) {
        let guard = PrefixGuard::new();
        let store = SessionStore::redis(&guard.url, &guard.prefix, clock)
            .await
            .expect("connect to Redis");
        (store, guard)
    }

    crate::sessions::conformance::conformance_suite!(store);

    #[tokio::test]
    async fn sessions_survive_a_new_connection_as_after_a_restart() {
        let clock = ManualClock::starting_now();
        let (first, guard) = store(clock.clone()).await;
        let session = crate::sessions::conformance::session(&clock, "s1", "u1");
        first.create(&session).await.unwrap();
        drop(first);
        let second = SessionStore::redis(&guard.url, &guard.prefix, clock)
            .await
            .unwrap();
        assert_eq!(second.get("s1").await.unwrap(), Some(session));
    }

    #[tokio::test]
    async fn keys_stay_under_the_prefix() {
        let clock = ManualClock::starting_now();
        let (store, guard) = store(clock.clone()).await;
        store
            .create(&crate::sessions::conformance::session(&clock, "s1", "u1"))
            .await
            .unwrap();
        let mut connection = redis::Client::open(guard.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", guard.prefix))
            .query(&mut connection)
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
