//! The in-process session store: the embedded default for a single
//! instance. Expired sessions are dropped when touched and swept now and
//! then, so memory follows the number of live sessions.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::sync::broadcast;

use super::{Advance, MAX_SESSIONS_PER_USER, Session};
use crate::infra::clock::{SharedClock, to_millis};

/// Sweep expired sessions every this many creations.
const SWEEP_EVERY: u64 = 1024;

/// Sessions in this process.
#[derive(Clone)]
pub struct MemorySessions {
    inner: Arc<Mutex<Inner>>,
    clock: SharedClock,
    revoked: broadcast::Sender<String>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    by_user: HashMap<String, HashSet<String>>,
    creations: u64,
}

impl Inner {
    fn live(&mut self, id: &str, now: i64) -> Option<&mut Session> {
        let expired = self.sessions.get(id).is_some_and(|s| s.expires_at <= now);
        if expired {
            self.remove(id);
        }
        self.sessions.get_mut(id)
    }

    fn remove(&mut self, id: &str) -> Option<Session> {
        let session = self.sessions.remove(id)?;
        if let Some(ids) = self.by_user.get_mut(&session.user_id) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_user.remove(&session.user_id);
            }
        }
        Some(session)
    }

    fn user_sessions(&mut self, user_id: &str, now: i64) -> Vec<Session> {
        let ids: Vec<String> = self
            .by_user
            .get(user_id)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        let mut sessions: Vec<Session> = ids
            .iter()
            .filter_map(|id| self.live(id, now).cloned())
            .collect();
        sessions.sort_by(|a, b| {
            b.last_seen_at
                .cmp(&a.last_seen_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        sessions
    }

    fn sweep(&mut self, now: i64) {
        let expired: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.expires_at <= now)
            .map(|s| s.id.clone())
            .collect();
        for id in expired {
            self.remove(&id);
        }
    }
}

impl MemorySessions {
    /// An empty store.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            inner: Arc::default(),
            clock,
            revoked: broadcast::channel(super::REVOCATIONS_CAPACITY).0,
        }
    }

    /// Sessions that ended before their expiry.
    pub(super) fn revocations(&self) -> broadcast::Receiver<String> {
        self.revoked.subscribe()
    }

    fn ended(&self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            // Fails only when nobody listens.
            let _ = self.revoked.send(id);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a session half
        // written (every change is one insert or remove), so keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now(&self) -> i64 {
        to_millis(self.clock.now())
    }

    pub(super) fn create(&self, session: &Session) {
        let now = self.now();
        let mut inner = self.lock();
        inner.creations += 1;
        if inner.creations.is_multiple_of(SWEEP_EVERY) {
            inner.sweep(now);
        }
        inner.remove(&session.id);
        inner.sessions.insert(session.id.clone(), session.clone());
        inner
            .by_user
            .entry(session.user_id.clone())
            .or_default()
            .insert(session.id.clone());
        let sessions = inner.user_sessions(&session.user_id, now);
        let evicted: Vec<String> = sessions
            .into_iter()
            .skip(MAX_SESSIONS_PER_USER)
            .map(|extra| extra.id)
            .collect();
        for id in &evicted {
            inner.remove(id);
        }
        drop(inner);
        self.ended(evicted);
    }

    pub(super) fn get(&self, id: &str) -> Option<Session> {
        let now = self.now();
        self.lock().live(id, now).cloned()
    }

    pub(super) fn touch(&self, id: &str, idle_ttl: Duration) -> Option<Session> {
        let now = self.now();
        let mut inner = self.lock();
        let session = inner.live(id, now)?;
        if session.due_a_touch(now, idle_ttl) {
            session.last_seen_at = now;
            session.expires_at = session.slid_expiry(now, idle_ttl);
        }
        Some(session.clone())
    }

    pub(super) fn advance_refresh(&self, id: &str, expected: u64, idle_ttl: Duration) -> Advance {
        let now = self.now();
        let mut inner = self.lock();
        let Some(session) = inner.live(id, now) else {
            return Advance::Gone;
        };
        if session.refresh_generation != expected {
            return Advance::Stale(session.clone());
        }
        session.refresh_generation += 1;
        session.refreshed_at = now;
        session.last_seen_at = now;
        session.expires_at = session.slid_expiry(now, idle_ttl);
        Advance::Advanced(session.clone())
    }

    pub(super) fn revoke(&self, id: &str) -> Option<Session> {
        let now = self.now();
        let mut inner = self.lock();
        inner.live(id, now)?;
        let revoked = inner.remove(id);
        drop(inner);
        self.ended(revoked.iter().map(|s| s.id.clone()));
        revoked
    }

    pub(super) fn revoke_user(&self, user_id: &str, keep: Option<&str>) -> Vec<String> {
        let now = self.now();
        let mut inner = self.lock();
        let ended: Vec<String> = inner
            .user_sessions(user_id, now)
            .into_iter()
            .map(|s| s.id)
            .filter(|id| Some(id.as_str()) != keep)
            .collect();
        for id in &ended {
            inner.remove(id);
        }
        drop(inner);
        self.ended(ended.iter().cloned());
        ended
    }

    pub(super) fn list_user(&self, user_id: &str) -> Vec<Session> {
        let now = self.now();
        self.lock().user_sessions(user_id, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        identity::sessions::SessionStore,
        infra::clock::{Clock as _, ManualClock},
    };

    #[tokio::test]
    async fn revocations_are_announced() {
        let clock = ManualClock::starting_now();
        let store = SessionStore::memory(clock.clone());
        let watchers = vec![store.revocations(), store.revocations()];
        crate::identity::sessions::conformance::revocations_are_announced(store, clock, watchers)
            .await;
    }

    #[test]
    fn expired_sessions_are_swept_without_being_touched() {
        let clock = ManualClock::starting_now();
        let store = MemorySessions::new(clock.clone());
        store.create(&crate::identity::sessions::conformance::session(
            &clock, "old", "u1",
        ));
        clock.advance(Duration::from_secs(24 * 3600));
        for i in 1..SWEEP_EVERY {
            let mut s = crate::identity::sessions::conformance::session(
                &clock,
                &format!("n{i}"),
                &format!("user{i}"),
            );
            s.expires_at = to_millis(clock.now()) + 1;
            store.create(&s);
        }
        let old = crate::identity::sessions::conformance::id("old", "u1");
        assert!(!store.lock().sessions.contains_key(&old));
    }
}
