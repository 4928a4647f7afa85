//! Sessions: one per login, shared by every server instance.
//!
//! A session is the unit of login. It records who (user), from where (user
//! agent, IP), and when (created, last seen). It ends when it has not been
//! used for the idle timeout (SESSION_TTL, which slides on every
//! authenticated use) or at its absolute lifetime (SESSION_MAX_LIFETIME),
//! whichever comes first, or when it is revoked. Every authenticated call
//! checks its session here, so a logout or revocation takes effect on the
//! very next call, on every instance sharing the store.
//!
//! Refresh tokens are not stored: each session keeps a random seed and a
//! generation counter, and the refresh secret of generation `g` is derived
//! from the seed and APP_SECRET (see `crate::identity::caller`). Rotating a refresh token
//! is advancing the generation with a compare-and-set, which both backends
//! make atomic.
//!
//! Backends: [`memory`] (the embedded default, one process) and [`redis`]
//! (shared by instances; survives restarts). Both pass one conformance suite
//! below, expiry included, driven by a manual clock instead of sleeps.
//!
//! A session id carries its user's *shard tag* ([`shard_tag`]):
//! `<tag>~<random>` ([`Session::new_id`]). On Redis Cluster all of one
//! user's session keys must live in one hash slot (the scripts that list or
//! revoke a user's sessions touch them together), and a session is looked
//! up by its id alone (a backend service asks for a session by id), so the
//! id itself must name the slot. Both backends refuse to create a session
//! whose id does not carry its user's tag, and find no session under an id
//! that carries none.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    identity::secrets,
    infra::{clock::SharedClock, redis_context::RedisContext},
};

pub mod memory;
pub mod redis;

/// The most sessions one user keeps; a login beyond it ends the user's least
/// recently used session, so repeated logins cannot grow the store without
/// bound.
pub const MAX_SESSIONS_PER_USER: usize = 100;

/// What [`SessionStore::revocations`] yields instead of a session id when
/// revocations may have been missed (the Redis store's subscriber has just
/// subscribed, the first time or after losing its connection): the receiver
/// re-checks every session it holds (with [`SessionStore::get`]). Never a
/// session id.
pub const RECHECK_SESSIONS: &str = "*";

/// How many revocations a [`SessionStore::revocations`] receiver may fall
/// behind before it lags (and then re-checks its sessions).
const REVOCATIONS_CAPACITY: usize = 1024;

/// Sits between a session id's shard tag and its random part. Neither in
/// base64url (the random part) nor a `.` (a refresh token is `<session
/// id>.<secret>`, split at its first `.`), URL- and cookie-safe.
const TAG_SEPARATOR: char = '~';

/// The shard tag of a user: the low 16 bits of the 32-bit FNV-1a hash of
/// the user id, as 4 lowercase hex digits. Every session key of the user
/// carries it as its Redis Cluster hash tag (`{<tag>}`), so one user's
/// sessions share a slot while users spread over all 16384 slots.
///
/// Fixed forever: the tag is part of every session id handed out, so
/// changing this function would orphan every stored session (and a session
/// id made with the old one would no longer match its user's tag).
pub fn shard_tag(user_id: &str) -> String {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let hash = user_id.bytes().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(PRIME)
    });
    format!("{:04x}", hash & 0xffff)
}

/// The shard tag a session id carries (see [`Session::new_id`]); None when
/// it does not start with 4 lowercase hex digits and `~` followed by
/// something.
pub fn tag_of(id: &str) -> Option<&str> {
    let (tag, rest) = id.split_at_checked(4)?;
    let tagged = tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && rest
            .strip_prefix(TAG_SEPARATOR)
            .is_some_and(|random| !random.is_empty());
    tagged.then_some(tag)
}

/// A login session. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// `<shard tag of the user>~<random>`, made by [`Session::new_id`]: 144
    /// random bits from the OS CSPRNG, base64url. Not a credential: users
    /// see it in session lists.
    pub id: String,
    /// The user it belongs to.
    pub user_id: String,
    /// The User-Agent at login.
    pub user_agent: String,
    /// The client IP at login.
    pub ip: String,
    /// When it was created.
    pub created_at: i64,
    /// When it was last used.
    pub last_seen_at: i64,
    /// When it ends if not used again; never after `max_expires_at`.
    pub expires_at: i64,
    /// Its absolute end.
    pub max_expires_at: i64,
    /// Random seed the refresh secrets derive from.
    pub refresh_seed: String,
    /// How many times the refresh token was rotated.
    pub refresh_generation: u64,
    /// When the refresh generation last advanced (creation at first).
    pub refreshed_at: i64,
}

/// The least a use must move a session's idle expiry for it to be written:
/// a thousandth of the idle timeout (3.6 s of an hour, 86 s of a day). So a
/// session in steady use is written about once per that much time, not on
/// every call, and its idle timeout and `last_seen_at` are exact to within
/// it.
pub fn touch_granularity(idle_ttl: Duration) -> Duration {
    idle_ttl / 1000
}

impl Session {
    /// A new session id for `user_id`: its [`shard_tag`], `~`, and 144
    /// random bits (URL-safe).
    pub fn new_id(user_id: &str) -> String {
        format!(
            "{}{TAG_SEPARATOR}{}",
            shard_tag(user_id),
            secrets::random_token(18)
        )
    }

    /// Whether the id carries the shard tag of the session's user.
    fn id_carries_its_users_tag(&self) -> bool {
        tag_of(&self.id) == Some(shard_tag(&self.user_id).as_str())
    }

    /// The idle expiry after a use at `now`: `now + idle_ttl`, capped at the
    /// absolute lifetime.
    pub fn slid_expiry(&self, now: i64, idle_ttl: Duration) -> i64 {
        now.saturating_add(duration_millis(idle_ttl))
            .min(self.max_expires_at)
    }

    /// Whether a use at `now` moves the idle expiry by at least
    /// [`touch_granularity`], so that it is to be written.
    pub fn due_a_touch(&self, now: i64, idle_ttl: Duration) -> bool {
        self.slid_expiry(now, idle_ttl) - self.expires_at
            >= duration_millis(touch_granularity(idle_ttl))
    }
}

/// What [`SessionStore::advance_refresh`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// The generation was as expected and is now one higher.
    Advanced(Session),
    /// The generation had already moved on (another refresh won the race, or
    /// an old token was replayed); nothing changed.
    Stale(Session),
    /// No such live session.
    Gone,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Redis did not answer or refused.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// A stored session did not decode.
    #[error("corrupt session record: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// A session to create whose id does not carry its user's shard tag
    /// (ids come from [`Session::new_id`]).
    #[error("a session id must carry the shard tag of its user")]
    UntaggedId,
    /// A revocation or refresh rotation that no Redis replica confirmed in
    /// time: a failover could still undo it, so it is not answered OK.
    #[error("the change is not yet on a Redis replica; retry")]
    NotReplicated,
}

/// Result of a session store operation.
pub type Result<T, E = SessionError> = std::result::Result<T, E>;

/// The session store: a closed set of backends.
#[derive(Clone)]
pub enum SessionStore {
    /// In this process only.
    Memory(memory::MemorySessions),
    /// In Redis, shared by instances.
    Redis(redis::RedisSessions),
}

impl SessionStore {
    /// An in-memory store.
    pub fn memory(clock: SharedClock) -> Self {
        Self::Memory(memory::MemorySessions::new(clock))
    }

    /// A Redis store on the instance's Redis context (its key prefix, its
    /// clock, its connections).
    pub fn redis(context: &RedisContext) -> Self {
        Self::Redis(redis::RedisSessions::new(context))
    }

    /// "memory" or "redis".
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }

    /// Stores a new session; ends the user's least recently used sessions
    /// beyond [`MAX_SESSIONS_PER_USER`]. Refuses one whose id does not
    /// carry its user's shard tag ([`SessionError::UntaggedId`]).
    pub async fn create(&self, session: &Session) -> Result<()> {
        if !session.id_carries_its_users_tag() {
            return Err(SessionError::UntaggedId);
        }
        match self {
            Self::Memory(store) => {
                store.create(session);
                Ok(())
            }
            Self::Redis(store) => store.create(session).await,
        }
    }

    /// The live session with this id: None when it does not exist, was
    /// revoked, or has expired (and for an id without a shard tag).
    pub async fn get(&self, id: &str) -> Result<Option<Session>> {
        match self {
            Self::Memory(store) => Ok(store.get(id)),
            Self::Redis(store) => store.get(id).await,
        }
    }

    /// Records a use now: `last_seen_at` moves to now and the idle expiry
    /// slides (never past the absolute lifetime), unless that would move
    /// the expiry by less than [`touch_granularity`]: then nothing is
    /// written and the session comes back as stored, so the hot path only
    /// reads. None when the session is not live.
    pub async fn touch(&self, id: &str, idle_ttl: Duration) -> Result<Option<Session>> {
        match self {
            Self::Memory(store) => Ok(store.touch(id, idle_ttl)),
            Self::Redis(store) => store.touch(id, idle_ttl).await,
        }
    }

    /// Advances the refresh generation from `expected` to `expected + 1`
    /// (and records a use), atomically.
    pub async fn advance_refresh(
        &self,
        id: &str,
        expected: u64,
        idle_ttl: Duration,
    ) -> Result<Advance> {
        match self {
            Self::Memory(store) => Ok(store.advance_refresh(id, expected, idle_ttl)),
            Self::Redis(store) => store.advance_refresh(id, expected, idle_ttl).await,
        }
    }

    /// Ends a session; returns it if it was live.
    pub async fn revoke(&self, id: &str) -> Result<Option<Session>> {
        match self {
            Self::Memory(store) => Ok(store.revoke(id)),
            Self::Redis(store) => store.revoke(id).await,
        }
    }

    /// Ends every live session of a user except `keep`; returns the ended
    /// sessions' ids.
    pub async fn revoke_user(&self, user_id: &str, keep: Option<&str>) -> Result<Vec<String>> {
        match self {
            Self::Memory(store) => Ok(store.revoke_user(user_id, keep)),
            Self::Redis(store) => store.revoke_user(user_id, keep).await,
        }
    }

    /// The user's live sessions, most recently used first.
    pub async fn list_user(&self, user_id: &str) -> Result<Vec<Session>> {
        match self {
            Self::Memory(store) => Ok(store.list_user(user_id)),
            Self::Redis(store) => store.list_user(user_id).await,
        }
    }

    /// The ids of sessions as they end before their expiry: revoked,
    /// revoked with all of a user's sessions (but the kept one), or evicted
    /// beyond [`MAX_SESSIONS_PER_USER`] at a login. The memory store reports
    /// its own; the Redis store those of every store sharing its key prefix,
    /// within a pub/sub round trip. Natural expiry is not reported: holders
    /// of a session check its expiry time themselves.
    ///
    /// Nothing is replayed: a receiver sees what ends after it was made.
    /// When it may have missed some, it must re-check every session it
    /// holds: on [`RECHECK_SESSIONS`] (the Redis subscriber reconnected) and
    /// on [`broadcast::error::RecvError::Lagged`] (it fell more than 1024
    /// behind).
    ///
    /// [`broadcast::error::RecvError::Lagged`]: tokio::sync::broadcast::error::RecvError::Lagged
    pub fn revocations(&self) -> tokio::sync::broadcast::Receiver<String> {
        match self {
            Self::Memory(store) => store.revocations(),
            Self::Redis(store) => store.revocations(),
        }
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(store) => store.ping().await,
        }
    }
}

/// Milliseconds in `duration`, saturating.
pub fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The conformance suite every backend passes. Each test gets a fresh store
/// (and for Redis a key prefix of its own) and a manual clock.
#[cfg(test)]
pub(crate) mod conformance {
    use std::{future::Future, sync::Arc, time::Duration};

    use super::*;
    use crate::infra::{
        clock::{Clock, ManualClock, to_millis},
        redis_context::testing::{ClusterGuard, PrefixGuard, SentinelGuard, TlsRedisGuard},
    };

    crate::infra::conformance::backend_conformance! {
        backends: [
            memory_backend => on_memory,
            redis_backend => on_redis,
            redis_tls_backend => on_redis_tls,
            redis_cluster_backend => on_redis_cluster,
            redis_sentinel_backend => on_redis_sentinel,
        ],
        cases: [
            create_then_get_round_trips,
            idle_sessions_expire,
            use_slides_the_idle_timeout_but_never_past_the_cap,
            a_use_that_would_barely_move_the_expiry_writes_nothing,
            refresh_generation_advances_once_per_expected_value,
            concurrent_advances_let_exactly_one_win,
            revoked_sessions_are_gone_for_every_operation,
            users_list_their_own_sessions_most_recent_first,
            revoking_a_user_spares_the_kept_session_and_other_users,
            logins_beyond_the_cap_end_the_least_recently_used,
            ids_without_their_users_tag_are_refused_and_never_found,
        ],
    }

    async fn on_memory<F, Fut>(case: F)
    where
        F: FnOnce(SessionStore, Arc<ManualClock>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let clock = ManualClock::starting_now();
        case(SessionStore::memory(clock.clone()), clock).await;
    }

    /// On a Redis context of its own, under a prefix whose keys go when the
    /// case ends.
    async fn on_redis<F, Fut>(case: F)
    where
        F: FnOnce(SessionStore, Arc<ManualClock>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let clock = ManualClock::starting_now();
        let guard = PrefixGuard::new();
        case(SessionStore::redis(&guard.context(clock.clone())), clock).await;
    }

    /// On a Redis of its own that speaks mutual TLS only.
    async fn on_redis_tls<F, Fut>(case: F)
    where
        F: FnOnce(SessionStore, Arc<ManualClock>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let clock = ManualClock::starting_now();
        let guard = TlsRedisGuard::start();
        case(SessionStore::redis(&guard.context(clock.clone())), clock).await;
    }

    /// On a Redis Cluster of its own (3 primaries, 3 replicas), where a
    /// script that touched keys of another slot than its declared ones
    /// would fail.
    async fn on_redis_cluster<F, Fut>(case: F)
    where
        F: FnOnce(SessionStore, Arc<ManualClock>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let clock = ManualClock::starting_now();
        let guard = ClusterGuard::start();
        case(SessionStore::redis(&guard.context(clock.clone())), clock).await;
    }

    /// On a primary, its replica and three Sentinels of its own.
    async fn on_redis_sentinel<F, Fut>(case: F)
    where
        F: FnOnce(SessionStore, Arc<ManualClock>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let clock = ManualClock::starting_now();
        let guard = SentinelGuard::start();
        case(SessionStore::redis(&guard.context(clock.clone())), clock).await;
    }

    pub(crate) const TTL: Duration = Duration::from_secs(3600);
    const MAX: Duration = Duration::from_secs(3 * 3600);

    /// The id a test names `name`, for a session of `user`: tagged as
    /// [`Session::new_id`] tags it, readable in test output.
    pub(crate) fn id(name: &str, user: &str) -> String {
        format!("{}{TAG_SEPARATOR}{name}", shard_tag(user))
    }

    /// A session of `user` whose id is [`id`]`(name, user)`.
    pub(crate) fn session(clock: &ManualClock, name: &str, user: &str) -> Session {
        let now = to_millis(clock.now());
        Session {
            id: id(name, user),
            user_id: user.into(),
            user_agent: "test-agent/1.0".into(),
            ip: "127.0.0.1".into(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + duration_millis(TTL),
            max_expires_at: now + duration_millis(MAX),
            refresh_seed: format!("seed-{name}"),
            refresh_generation: 0,
            refreshed_at: now,
        }
    }

    pub(crate) async fn create_then_get_round_trips(store: SessionStore, clock: Arc<ManualClock>) {
        let s = session(&clock, "s1", "u1");
        store.create(&s).await.unwrap();
        assert_eq!(store.get(&s.id).await.unwrap(), Some(s));
        assert_eq!(store.get(&id("nope", "u1")).await.unwrap(), None);
    }

    pub(crate) async fn idle_sessions_expire(store: SessionStore, clock: Arc<ManualClock>) {
        let s1 = id("s1", "u1");
        store.create(&session(&clock, "s1", "u1")).await.unwrap();
        clock.advance(TTL - Duration::from_millis(1));
        assert!(store.get(&s1).await.unwrap().is_some());
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            store.get(&s1).await.unwrap(),
            None,
            "expired at the idle timeout"
        );
        assert_eq!(
            store.touch(&s1, TTL).await.unwrap(),
            None,
            "an expired session cannot be revived"
        );
        assert!(store.list_user("u1").await.unwrap().is_empty());
    }

    pub(crate) async fn use_slides_the_idle_timeout_but_never_past_the_cap(
        store: SessionStore,
        clock: Arc<ManualClock>,
    ) {
        let s = session(&clock, "s1", "u1");
        store.create(&s).await.unwrap();
        // Use it every 50 minutes: it lives past one idle timeout...
        for _ in 0..2 {
            clock.advance(Duration::from_secs(50 * 60));
            let touched = store.touch(&s.id, TTL).await.unwrap().expect("still live");
            assert_eq!(touched.last_seen_at, to_millis(clock.now()));
            assert_eq!(
                touched.expires_at,
                to_millis(clock.now()) + duration_millis(TTL)
            );
        }
        // ...but sliding stops at the absolute lifetime...
        clock.advance(Duration::from_secs(50 * 60));
        let touched = store.touch(&s.id, TTL).await.unwrap().expect("still live");
        assert_eq!(touched.expires_at, s.max_expires_at);
        clock.advance(Duration::from_secs(29 * 60));
        assert!(store.touch(&s.id, TTL).await.unwrap().is_some());
        // ...and there it ends, however often it is used.
        clock.advance(Duration::from_secs(60));
        assert_eq!(to_millis(clock.now()), s.max_expires_at);
        assert_eq!(store.touch(&s.id, TTL).await.unwrap(), None);
        assert_eq!(store.get(&s.id).await.unwrap(), None);
    }

    /// A use whose slide would move the idle expiry by less than
    /// [`touch_granularity`] changes nothing (the stored session comes
    /// back, and nothing is written); one that moves it by that much or
    /// more slides as always.
    pub(crate) async fn a_use_that_would_barely_move_the_expiry_writes_nothing(
        store: SessionStore,
        clock: Arc<ManualClock>,
    ) {
        let s = session(&clock, "s1", "u1");
        store.create(&s).await.unwrap();
        let step = touch_granularity(TTL);
        assert_eq!(
            step,
            Duration::from_millis(3600),
            "a thousandth of the idle timeout"
        );
        clock.advance(step - Duration::from_millis(1));
        let touched = store.touch(&s.id, TTL).await.unwrap().expect("live");
        assert_eq!(
            (touched.last_seen_at, touched.expires_at),
            (s.last_seen_at, s.expires_at),
            "unchanged"
        );
        assert_eq!(store.get(&s.id).await.unwrap(), Some(s.clone()));
        clock.advance(Duration::from_millis(1));
        let touched = store.touch(&s.id, TTL).await.unwrap().expect("live");
        let now = to_millis(clock.now());
        assert_eq!(
            (touched.last_seen_at, touched.expires_at),
            (now, now + duration_millis(TTL))
        );
        assert_eq!(store.get(&s.id).await.unwrap(), Some(touched));
    }

    pub(crate) async fn refresh_generation_advances_once_per_expected_value(
        store: SessionStore,
        clock: Arc<ManualClock>,
    ) {
        let s1 = id("s1", "u1");
        store.create(&session(&clock, "s1", "u1")).await.unwrap();
        clock.advance(Duration::from_secs(5));
        let Advance::Advanced(after) = store.advance_refresh(&s1, 0, TTL).await.unwrap() else {
            panic!("the first advance wins");
        };
        assert_eq!(after.refresh_generation, 1);
        assert_eq!(after.refreshed_at, to_millis(clock.now()));
        assert_eq!(after.last_seen_at, to_millis(clock.now()));
        let Advance::Stale(current) = store.advance_refresh(&s1, 0, TTL).await.unwrap() else {
            panic!("a second advance from the same generation is stale");
        };
        assert_eq!(current.refresh_generation, 1);
        assert_eq!(
            store
                .advance_refresh(&id("nope", "u1"), 0, TTL)
                .await
                .unwrap(),
            Advance::Gone
        );
    }

    pub(crate) async fn concurrent_advances_let_exactly_one_win(
        store: SessionStore,
        clock: Arc<ManualClock>,
    ) {
        let s1 = id("s1", "u1");
        store.create(&session(&clock, "s1", "u1")).await.unwrap();
        let attempts = (0..8).map(|_| {
            let (store, s1) = (store.clone(), s1.clone());
            tokio::spawn(async move { store.advance_refresh(&s1, 0, TTL).await.unwrap() })
        });
        let mut won = 0;
        for attempt in attempts {
            if matches!(attempt.await.unwrap(), Advance::Advanced(_)) {
                won += 1;
            }
        }
        assert_eq!(won, 1);
        assert_eq!(store.get(&s1).await.unwrap().unwrap().refresh_generation, 1);
    }

    pub(crate) async fn revoked_sessions_are_gone_for_every_operation(
        store: SessionStore,
        clock: Arc<ManualClock>,
    ) {
        let s1 = id("s1", "u1");
        store.create(&session(&clock, "s1", "u1")).await.unwrap();
        let revoked = store.revoke(&s1).await.unwrap().expect("it was live");
        assert_eq!(revoked.user_id, "u1");
        assert_eq!(store.get(&s1).await.unwrap(), None);
        assert_eq!(store.touch(&s1, TTL).await.unwrap(), None);
        assert_eq!(
            store.advance_refresh(&s1, 0, TTL).await.unwrap(),
            Advance::Gone
        );
        assert_eq!(
            store.revoke(&s1).await.unwrap(),
            None,
            "revoking twice is harmless"
        );
        assert!(store.list_user("u1").await.unwrap().is_empty());
    }

    pub(crate) async fn users_list_their_own_sessions_most_recent_first(
        store: SessionStore,
        clock: Arc<ManualClock>,
    ) {
        store.create(&session(&clock, "a", "u1")).await.unwrap();
        clock.advance(Duration::from_secs(1));
        store.create(&session(&clock, "b", "u1")).await.unwrap();
        clock.advance(Duration::from_secs(1));
        store.create(&session(&clock, "other", "u2")).await.unwrap();
        // A use counts once it moves the expiry by the granularity.
        clock.advance(touch_granularity(TTL));
        store.touch(&id("a", "u1"), TTL).await.unwrap();
        let ids: Vec<_> = store
            .list_user("u1")
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, [id("a", "u1"), id("b", "u1")]);
        let ids: Vec<_> = store
            .list_user("u2")
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, [id("other", "u2")]);
    }

    pub(crate) async fn revoking_a_user_spares_the_kept_session_and_other_users(
        store: SessionStore,
        clock: Arc<ManualClock>,
    ) {
        for name in ["a", "b", "c"] {
            store.create(&session(&clock, name, "u1")).await.unwrap();
        }
        store.create(&session(&clock, "x", "u2")).await.unwrap();
        let mut ended = store.revoke_user("u1", Some(&id("b", "u1"))).await.unwrap();
        ended.sort();
        assert_eq!(ended, [id("a", "u1"), id("c", "u1")]);
        assert!(store.get(&id("b", "u1")).await.unwrap().is_some());
        assert!(store.get(&id("x", "u2")).await.unwrap().is_some());
        assert_eq!(
            store.revoke_user("u1", None).await.unwrap(),
            [id("b", "u1")]
        );
        assert!(store.list_user("u1").await.unwrap().is_empty());
    }

    pub(crate) async fn logins_beyond_the_cap_end_the_least_recently_used(
        store: SessionStore,
        clock: Arc<ManualClock>,
    ) {
        for i in 0..MAX_SESSIONS_PER_USER {
            store
                .create(&session(&clock, &format!("s{i}"), "u1"))
                .await
                .unwrap();
            clock.advance(Duration::from_millis(10));
        }
        // s0 is the oldest, but using it (later than the granularity) makes
        // s1 the least recently used.
        clock.advance(touch_granularity(TTL));
        store.touch(&id("s0", "u1"), TTL).await.unwrap();
        store
            .create(&session(&clock, "newest", "u1"))
            .await
            .unwrap();
        let sessions = store.list_user("u1").await.unwrap();
        assert_eq!(sessions.len(), MAX_SESSIONS_PER_USER);
        assert!(
            store.get(&id("s1", "u1")).await.unwrap().is_none(),
            "the least recently used ended"
        );
        assert!(store.get(&id("s0", "u1")).await.unwrap().is_some());
        assert!(store.get(&id("newest", "u1")).await.unwrap().is_some());
    }

    /// A session is created only under an id with its user's shard tag, and
    /// an id without a tag finds nothing: no operation fails on it.
    pub(crate) async fn ids_without_their_users_tag_are_refused_and_never_found(
        store: SessionStore,
        clock: Arc<ManualClock>,
    ) {
        let other_users = id("s1", "u2");
        assert_ne!(tag_of(&other_users), tag_of(&id("s1", "u1")));
        for bad in [
            "s1",
            "",
            "~s1",
            "0a1f~",
            "0A1F~s1",
            "0a1f.s1",
            other_users.as_str(),
        ] {
            let session = Session {
                id: bad.into(),
                ..session(&clock, "s1", "u1")
            };
            assert!(
                matches!(store.create(&session).await, Err(SessionError::UntaggedId)),
                "created {bad:?}"
            );
        }
        assert!(store.list_user("u1").await.unwrap().is_empty());
        let made = Session {
            id: Session::new_id("u1"),
            ..session(&clock, "s1", "u1")
        };
        store.create(&made).await.unwrap();
        assert_eq!(store.get(&made.id).await.unwrap(), Some(made.clone()));
        for untagged in ["s1", "", "é~s1", "0a1f", "0a1f~", "zzzz~s1"] {
            assert_eq!(store.get(untagged).await.unwrap(), None);
            assert_eq!(store.touch(untagged, TTL).await.unwrap(), None);
            assert_eq!(
                store.advance_refresh(untagged, 0, TTL).await.unwrap(),
                Advance::Gone
            );
            assert_eq!(store.revoke(untagged).await.unwrap(), None);
        }
        assert_eq!(store.list_user("u1").await.unwrap(), [made]);
    }

    /// The next session id `revocations` yields (skipping
    /// [`RECHECK_SESSIONS`]), waiting at most 5 s.
    pub(crate) async fn next_revocation(
        revocations: &mut tokio::sync::broadcast::Receiver<String>,
    ) -> String {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), revocations.recv()).await {
                Ok(Ok(id)) if id == RECHECK_SESSIONS => {}
                Ok(Ok(id)) => return id,
                other => panic!("no revocation within 5 s: {other:?}"),
            }
        }
    }

    /// Sessions ended on `store` by revoke, revoke_user (with and without a
    /// kept session) and eviction reach every receiver in `watchers`, in
    /// order; expiry and repeated revocations do not.
    pub(crate) async fn revocations_are_announced(
        store: SessionStore,
        clock: Arc<ManualClock>,
        mut watchers: Vec<tokio::sync::broadcast::Receiver<String>>,
    ) {
        for name in ["a", "b", "c"] {
            store.create(&session(&clock, name, "u1")).await.unwrap();
        }
        store.create(&session(&clock, "lru", "u2")).await.unwrap();
        let mut short = session(&clock, "short", "u3");
        short.expires_at = to_millis(clock.now()) + 1;
        store.create(&short).await.unwrap();
        clock.advance(Duration::from_millis(10));

        store.revoke(&id("a", "u1")).await.unwrap();
        store.revoke(&id("a", "u1")).await.unwrap();
        assert_eq!(store.get(&short.id).await.unwrap(), None, "expired");
        store.revoke_user("u1", Some(&id("b", "u1"))).await.unwrap();
        for i in 0..MAX_SESSIONS_PER_USER {
            clock.advance(Duration::from_millis(1));
            store
                .create(&session(&clock, &format!("n{i}"), "u2"))
                .await
                .unwrap();
        }
        store.revoke_user("u1", None).await.unwrap();
        store.create(&session(&clock, "last", "u4")).await.unwrap();
        store.revoke(&id("last", "u4")).await.unwrap();

        for watcher in &mut watchers {
            let mut seen = Vec::new();
            for _ in 0..5 {
                seen.push(next_revocation(watcher).await);
            }
            assert_eq!(
                seen,
                [
                    id("a", "u1"),
                    id("c", "u1"),
                    id("lru", "u2"),
                    id("b", "u1"),
                    id("last", "u4")
                ]
            );
        }
    }
}
