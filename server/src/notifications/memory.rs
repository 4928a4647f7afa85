//! The in-process channel streams: one instance, history lost at restart
//! (every channel then gets a new epoch, so old resume positions are
//! recognised as unrecoverable).
//!
//! Each channel is a ring of its latest events behind its own lock; the
//! publisher appends, trims and delivers under that lock, so delivery order
//! is offset order. Channels whose history has aged out and that nobody
//! asked about for a while are dropped now and then, so memory follows the
//! channels in use, not every channel ever named.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
};

use slop_api::notification::Event;

use super::{ChannelName, ChannelState, Deliver, History, Stored, new_epoch, within_age};
use crate::infra::clock::{SharedClock, to_millis, to_timestamp};

/// The in-process channel streams.
#[derive(Clone)]
pub struct MemoryStreams {
    inner: Arc<Inner>,
}

struct Inner {
    channels: Mutex<Channels>,
    history: History,
    clock: SharedClock,
    sink: Arc<dyn Deliver>,
}

struct Channels {
    map: HashMap<ChannelName, Arc<Mutex<Log>>>,
    /// How many channels there were after the last sweep; the next sweep
    /// runs when there are twice as many, so sweeping costs O(1) amortised.
    swept_at: usize,
}

struct Log {
    epoch: String,
    offset: u64,
    /// Retained events with their time in milliseconds, oldest first.
    events: VecDeque<(i64, Arc<Event>)>,
    /// When the channel was last published to or asked about (ms).
    used_at: i64,
    /// Idempotency keys of recent publishes: the offset each got, and when
    /// the key is forgotten (ms).
    dedup: HashMap<String, (u64, i64)>,
    /// How many keys were left after the last purge of expired ones; the
    /// next purge runs when there are twice as many.
    dedup_purged_at: usize,
}

impl Log {
    /// Drops events beyond the count or older than the age limit.
    fn trim(&mut self, now: i64, history: History) {
        while self.events.len() > history.max_events {
            self.events.pop_front();
        }
        while let Some((time, _)) = self.events.front() {
            if within_age(*time, now, history.max_age) {
                break;
            }
            self.events.pop_front();
        }
    }

    /// The event published earlier with `key`, while the key is
    /// remembered. (If history no longer holds it, a stand-in with its
    /// position: the publisher needs only that.)
    fn earlier(&self, key: &str, now: i64) -> Option<Stored> {
        let &(offset, forget_at) = self.dedup.get(key)?;
        if forget_at <= now {
            return None;
        }
        let event = self
            .events
            .iter()
            .map(|(_, event)| event)
            .find(|event| event.offset == offset)
            .cloned()
            .unwrap_or_else(|| {
                Arc::new(Event {
                    offset,
                    epoch: self.epoch.clone(),
                    ..Event::default()
                })
            });
        Some(Stored {
            event,
            duplicate: true,
        })
    }

    /// Remembers that `key` published `offset`, until `forget_at`; purges
    /// expired keys now and then (amortised O(1) per publish).
    fn remember(&mut self, key: &str, offset: u64, forget_at: i64, now: i64) {
        if self.dedup.len() >= 2 * self.dedup_purged_at.max(64) {
            self.dedup.retain(|_, &mut (_, until)| until > now);
            self.dedup_purged_at = self.dedup.len();
        }
        self.dedup.insert(key.to_owned(), (offset, forget_at));
    }

    fn state(&self) -> ChannelState {
        ChannelState {
            epoch: self.epoch.clone(),
            offset: self.offset,
            earliest: self.events.front().map_or(0, |(_, e)| e.offset),
            size: self.events.len(),
        }
    }
}

impl MemoryStreams {
    /// Empty streams keeping `history`, delivering live events to `sink`.
    pub fn new(clock: SharedClock, history: History, sink: Arc<dyn Deliver>) -> Self {
        Self {
            inner: Arc::new(Inner {
                channels: Mutex::new(Channels {
                    map: HashMap::new(),
                    swept_at: 0,
                }),
                history: History {
                    max_events: history.max_events.max(1),
                    ..history
                },
                clock,
                sink,
            }),
        }
    }

    fn now(&self) -> i64 {
        to_millis(self.inner.clock.now())
    }

    /// The log of `channel`, made (with a new epoch) when it is new.
    fn log(&self, channel: &ChannelName, now: i64) -> Arc<Mutex<Log>> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(log) = channels.map.get(channel) {
            return log.clone();
        }
        if channels.map.len() >= 2 * channels.swept_at.max(512) {
            self.sweep(&mut channels, now);
        }
        let log = Arc::new(Mutex::new(Log {
            epoch: new_epoch(),
            offset: 0,
            events: VecDeque::new(),
            used_at: now,
            dedup: HashMap::new(),
            dedup_purged_at: 0,
        }));
        channels.map.insert(channel.clone(), log.clone());
        log
    }

    /// Forgets channels with no retained events that nobody used for longer
    /// than the age limit: a client still holding one of their positions
    /// has nothing to recover, and learns of the new epoch.
    fn sweep(&self, channels: &mut Channels, now: i64) {
        let history = self.inner.history;
        channels.map.retain(|_, log| {
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            log.trim(now, history);
            !log.events.is_empty() || within_age(log.used_at, now, history.max_age)
        });
        channels.swept_at = channels.map.len();
    }

    pub(super) fn publish(
        &self,
        channels: &[ChannelName],
        event: &Event,
        idempotency_key: Option<&str>,
    ) -> Vec<Stored> {
        let now = self.now();
        let time = to_timestamp(crate::infra::clock::from_millis(now));
        let history = self.inner.history;
        channels
            .iter()
            .map(|channel| {
                let log = self.log(channel, now);
                let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                log.used_at = now;
                if let Some(key) = idempotency_key
                    && let Some(earlier) = log.earlier(key, now)
                {
                    return earlier;
                }
                log.offset += 1;
                let stored = Arc::new(Event {
                    channel: channel.to_string(),
                    offset: log.offset,
                    epoch: log.epoch.clone(),
                    time: Some(time),
                    ..event.clone()
                });
                log.events.push_back((now, stored.clone()));
                log.trim(now, history);
                if let Some(key) = idempotency_key {
                    let forget_at =
                        now + crate::identity::sessions::duration_millis(history.dedup_window);
                    log.remember(key, stored.offset, forget_at, now);
                }
                self.inner.sink.deliver(stored.clone());
                Stored {
                    event: stored,
                    duplicate: false,
                }
            })
            .collect()
    }

    pub(super) fn channel(&self, channel: &ChannelName) -> ChannelState {
        let now = self.now();
        let Some(log) = self.existing(channel) else {
            return ChannelState::unpublished();
        };
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        log.used_at = now;
        log.trim(now, self.inner.history);
        log.state()
    }

    /// The log of `channel` if it was published to.
    fn existing(&self, channel: &ChannelName) -> Option<Arc<Mutex<Log>>> {
        let channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        channels.map.get(channel).cloned()
    }

    pub(super) fn read(&self, channel: &ChannelName, after: u64, limit: usize) -> Vec<Arc<Event>> {
        let now = self.now();
        let Some(log) = self.existing(channel) else {
            return Vec::new();
        };
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        log.trim(now, self.inner.history);
        log.events
            .iter()
            .map(|(_, event)| event)
            .filter(|event| event.offset > after)
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::{
        infra::clock::ManualClock,
        notifications::conformance::{HISTORY, Recorder, event, topic},
    };

    #[test]
    fn channels_nobody_uses_are_forgotten_and_come_back_with_a_new_epoch() {
        let clock = ManualClock::starting_now();
        let streams = MemoryStreams::new(clock.clone(), HISTORY, Arc::new(Recorder::default()));
        let old = topic("old");
        let epoch = streams.publish(std::slice::from_ref(&old), &event("x"), None)[0]
            .event
            .epoch
            .clone();
        clock.advance(HISTORY.max_age + Duration::from_secs(1));
        for i in 0..1100 {
            streams.publish(&[topic(&format!("t{i}"))], &event("x"), None);
        }
        let channels = streams.inner.channels.lock().unwrap();
        assert!(
            !channels.map.contains_key(&old),
            "the idle, empty channel was swept"
        );
        drop(channels);
        assert_eq!(
            streams.channel(&old),
            ChannelState::unpublished(),
            "its history is lost"
        );
        let again = streams.publish(std::slice::from_ref(&old), &event("x"), None);
        assert_ne!(again[0].event.epoch, epoch, "a new epoch");
        assert_eq!(again[0].event.offset, 1);
    }
}
