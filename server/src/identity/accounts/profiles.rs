//! Profiles: what a signed-in user's own calls show of their account (id,
//! email, display name, times), cached in process so that `me` and
//! `GetCurrentUser` need no database read.
//!
//! A profile never holds the password hash: the flows that check or change
//! a password read the account from the database ([`super::AccountStore::by_id`],
//! [`super::AccountStore::by_email`]), never from here.
//!
//! Kept true on every instance by telling them of each change:
//! - the account store forgets a profile itself when it changes the account
//!   (display name, password hash: both move `updated_at`), before the
//!   change's call returns, so a caller reads its own writes;
//! - with Redis, it also publishes the account's id on
//!   `<prefix>accounts:changed`, over the same pub/sub connection and loop
//!   that carry session revocations ([`crate::infra::pubsub`]), and every
//!   instance forgets that profile when the message arrives;
//! - while that connection is down nothing is cached (a change elsewhere
//!   could not be heard), and every (re)subscription forgets everything
//!   (changes published while it was down were missed);
//! - a read that began before a change was heard is not cached, however
//!   late it ends: each change moves a generation, and a read caches what
//!   it read only if the generation it began under is still current;
//! - a profile is cached for [`MAX_AGE`] at most, so a change whose
//!   announcement was lost (Redis failed between the database write and
//!   the publish) is seen that late at worst.
//!
//! Where changes cannot be heard there is no cache: PostgreSQL accounts
//! without Redis may be shared by instances that cannot tell each other.
//! SQLite without Redis is one process's file, and caches.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use super::Account;
use crate::infra::{
    clock::SharedClock,
    observe::ObservedRedis,
    pubsub::{Notice, PubSub, Route},
    redis_context::RedisContext,
};

/// How long a profile is used at most before it is read again.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// How many profiles one instance keeps at most; past it, an arbitrary one
/// makes room (each is a few hundred bytes).
pub const CAPACITY: usize = 100_000;

/// Profile cache lookups by `result` (`hit` or `miss`) (counter).
pub const PROFILE_CACHE: &str = "slop_account_profile_cache_total";

/// What a user's own calls show of their account: everything but the
/// password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The account's id.
    pub id: String,
    /// Normalised; unique.
    pub email: String,
    /// As the user chose it.
    pub display_name: String,
    /// Whole milliseconds, as stored.
    pub created_at: SystemTime,
    /// Whole milliseconds, as stored; moves on every change.
    pub updated_at: SystemTime,
}

impl From<&Account> for Profile {
    fn from(account: &Account) -> Self {
        Self {
            id: account.id.clone(),
            email: account.email.clone(),
            display_name: account.display_name.clone(),
            created_at: account.created_at,
            updated_at: account.updated_at,
        }
    }
}

/// The profiles of an account store, and how their changes are heard.
/// Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct Profiles {
    /// None: nothing is cached.
    cache: Option<Arc<Cache>>,
    /// Where changes are told to other instances; None when there are none
    /// to tell.
    announce: Option<Announce>,
}

impl std::fmt::Debug for Profiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profiles")
            .field("cached", &self.cache.is_some())
            .field("shared", &self.announce.is_some())
            .finish()
    }
}

/// The Redis side: the channel, the connection that publishes on it, and
/// the pub/sub loop that hears it (held so it runs while the store lives).
#[derive(Clone)]
struct Announce {
    connection: ObservedRedis,
    channel: Arc<str>,
    _pubsub: PubSub,
}

impl Profiles {
    /// No cache: every lookup reads the database.
    pub fn uncached() -> Self {
        Self {
            cache: None,
            announce: None,
        }
    }

    /// A cache only this process changes (one SQLite file, no Redis).
    pub fn in_process(clock: SharedClock) -> Self {
        Self {
            cache: Some(Arc::new(Cache::new(clock, true))),
            announce: None,
        }
    }

    /// A cache kept true across the instances sharing `redis`'s prefix:
    /// changes are published on `<prefix>accounts:changed` and heard on the
    /// context's pub/sub connection. Nothing is cached until that
    /// connection is subscribed.
    pub fn shared(redis: &RedisContext) -> Self {
        let cache = Arc::new(Cache::new(redis.clock().clone(), false));
        let channel = changes_channel(redis.prefix());
        let heard = cache.clone();
        redis.pubsub().route(
            Route::Channel(channel.clone()),
            Box::new(move |notice| {
                heard.on(notice);
                true
            }),
        );
        Self {
            cache: Some(cache),
            announce: Some(Announce {
                connection: redis.commands(),
                channel: channel.into(),
                _pubsub: redis.pubsub().clone(),
            }),
        }
    }

    /// The cached profile of `id`, if any and not older than [`MAX_AGE`].
    pub(super) fn get(&self, id: &str) -> Option<Arc<Profile>> {
        let cache = self.cache.as_ref()?;
        let found = cache.get(id);
        match found {
            Some(_) => cache.hits.increment(1),
            None => cache.misses.increment(1),
        }
        found
    }

    /// Taken before reading an account from the database, to cache what
    /// was read with [`Self::put`]: None when nothing may be cached now.
    pub(super) fn ticket(&self) -> Option<Ticket> {
        self.cache.as_ref()?.ticket()
    }

    /// Caches `profile`, read under `ticket`, unless a change was heard
    /// since the ticket was taken.
    pub(super) fn put(&self, ticket: Option<Ticket>, profile: Arc<Profile>) {
        if let (Some(cache), Some(ticket)) = (&self.cache, ticket) {
            cache.put(ticket, profile);
        }
    }

    /// Account `id` changed: forgets its profile here and tells the other
    /// instances. A failure to tell them is logged (the change is made; the
    /// others see it within [`MAX_AGE`], or sooner if their pub/sub
    /// connection dropped too).
    pub(super) async fn changed(&self, id: &str) {
        if let Some(cache) = &self.cache {
            cache.forget(id);
        }
        if let Some(announce) = &self.announce {
            let told: redis::RedisResult<()> = redis::cmd("PUBLISH")
                .arg(announce.channel.as_ref())
                .arg(id)
                .query_async(&mut announce.connection.clone())
                .await;
            if let Err(error) = told {
                tracing::warn!(
                    user_id = %id,
                    %error,
                    "could not tell the other instances that an account changed; they may show its old profile for up to {}",
                    crate::infra::config::humanize(MAX_AGE)
                );
            }
        }
    }
}

/// The pub/sub channel account changes go out on.
fn changes_channel(prefix: &str) -> String {
    format!("{prefix}accounts:changed")
}

/// Proof that a read began under the current generation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket {
    generation: u64,
}

/// The profiles themselves.
struct Cache {
    state: RwLock<State>,
    clock: SharedClock,
    /// [`PROFILE_CACHE`]'s two series, registered once: a `counter!` per
    /// lookup would look the series up in the recorder on every `me`.
    hits: metrics::Counter,
    misses: metrics::Counter,
}

struct State {
    entries: HashMap<String, Entry>,
    /// Moves on every change heard, and whenever everything is forgotten.
    generation: u64,
    /// Whether changes can be heard now; nothing is cached while not.
    hearing: bool,
}

struct Entry {
    profile: Arc<Profile>,
    /// When it was read from the database.
    read_at: SystemTime,
}

impl Cache {
    fn new(clock: SharedClock, hearing: bool) -> Self {
        Self {
            state: RwLock::new(State {
                entries: HashMap::new(),
                generation: 0,
                hearing,
            }),
            clock,
            // The server installs its recorder before it builds a store.
            hits: metrics::counter!(PROFILE_CACHE, "result" => "hit"),
            misses: metrics::counter!(PROFILE_CACHE, "result" => "miss"),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half
        // written (every write is one map call), so a poisoned lock's
        // state is still good.
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, id: &str) -> Option<Arc<Profile>> {
        let state = self.read();
        let entry = state.entries.get(id)?;
        let age = self
            .clock
            .now()
            .duration_since(entry.read_at)
            .unwrap_or_default();
        (age < MAX_AGE).then(|| entry.profile.clone())
    }

    fn ticket(&self) -> Option<Ticket> {
        let state = self.read();
        state.hearing.then_some(Ticket {
            generation: state.generation,
        })
    }

    fn put(&self, ticket: Ticket, profile: Arc<Profile>) {
        let read_at = self.clock.now();
        let mut state = self.write();
        if !state.hearing || state.generation != ticket.generation {
            return;
        }
        if state.entries.len() >= CAPACITY
            && !state.entries.contains_key(&profile.id)
            && let Some(any) = state.entries.keys().next().cloned()
        {
            state.entries.remove(&any);
        }
        state
            .entries
            .insert(profile.id.clone(), Entry { profile, read_at });
    }

    fn forget(&self, id: &str) {
        let mut state = self.write();
        state.generation += 1;
        state.entries.remove(id);
    }

    fn forget_all(&self, hearing: bool) {
        let mut state = self.write();
        state.generation += 1;
        state.hearing = hearing;
        state.entries.clear();
    }

    /// What the pub/sub connection tells.
    fn on(&self, notice: Notice) {
        match notice {
            Notice::Message { payload, .. } => match std::str::from_utf8(&payload) {
                Ok(id) if !id.is_empty() => self.forget(id),
                _ => {
                    // Not a message of ours; forgetting everything is
                    // always safe.
                    tracing::warn!("a malformed account change message: forgetting every profile");
                    self.forget_all(true);
                }
            },
            // Changes published while not subscribed were missed. Nothing
            // to read back: forgetting is catching up (`caught_up` drops
            // here).
            Notice::Subscribed { .. } => self.forget_all(true),
            Notice::Lost => self.forget_all(false),
        }
    }
}

#[cfg(test)]
mod tests;
