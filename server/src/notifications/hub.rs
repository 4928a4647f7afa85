//! This instance's subscribers: who follows which channel, their bounded
//! queues, resuming without gap or duplicate, and ending the streams of
//! sessions that end.
//!
//! Each open stream (a gRPC `Subscribe` call, whichever door it came
//! through) is a [`Feed`]: one bounded queue (count and bytes) and one
//! subscription per channel. The [`Registry`] is the backend's [`Deliver`]
//! sink: it hands each live event to the subscriptions of its channel, which
//! push it into their feed's queue without waiting. A feed whose queue is
//! full ends with [`End::SlowConsumer`] and its queue is dropped at once, so a
//! slow reader costs neither memory nor other subscribers' time; it resumes
//! from the last offset it saw.
//!
//! Starting a subscription without a seam: the subscription registers
//! first, buffering live events; then it reads where the channel stands and
//! the missed events, queues those, and only then drains its buffer,
//! skipping every offset it already queued. Live events carry on from
//! there. So a resume delivers each event after the resume position exactly
//! once, in order.
//!
//! Sessions: a feed opened by a user is tracked by session. A revocation
//! broadcast by the session store (on any instance) ends the session's feeds
//! at once (the store's re-check marker, sent when its broadcast
//! (re)connects, makes the hub re-read every tracked session); a sweep every [`SWEEP_INTERVAL`] ends those whose session
//! expired, and re-reads every tracked session at least every
//! [`RECHECK_INTERVAL`], in case a broadcast was lost.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError, Weak},
    task::{Context, Poll, Waker},
    time::Duration,
};

use prost::Message as _;
use slop_api::notification::{Event, StreamPosition, Subscribed};
use tokio::sync::{OnceCell, broadcast};
use tokio_util::sync::CancellationToken;

use super::{ChannelName, Deliver, History, Result, StreamBackend};
use crate::{
    identity::sessions::{RECHECK_SESSIONS, SessionStore},
    infra::clock::{SharedClock, to_millis},
};

/// How often the sweep looks for feeds whose session expired.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// How often each tracked session is re-read from the store at least.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Events handed to a subscriber's connection, live or from history
/// (counter).
pub const EVENTS_DELIVERED: &str = "slop_events_delivered_total";
/// Feeds ended because their reader fell behind (counter).
pub const SLOW_CONSUMERS: &str = "slop_slow_consumer_disconnects_total";

/// Bounds of each feed's outbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Live events waiting at most.
    pub max_events: usize,
    /// Encoded bytes of live events waiting at most.
    pub max_bytes: usize,
}

/// Why a feed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Its queue overflowed: the reader is too slow.
    SlowConsumer,
    /// Its session ended (logout, revocation, expiry).
    SessionEnded,
}

/// What a feed yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A channel's subscription started.
    Subscribed(Subscribed),
    /// An event.
    Event(Arc<Event>),
}

/// The live subscribers of this instance, by channel: the backend's sink.
#[derive(Default)]
pub struct Registry {
    channels: Mutex<HashMap<String, Arc<ChannelSubscribers>>>,
}

#[derive(Default)]
struct ChannelSubscribers {
    subscriptions: Mutex<Vec<Arc<Subscription>>>,
    /// Set once the backend delivers this channel's live events.
    watching: OnceCell<()>,
}

impl Deliver for Registry {
    fn deliver(&self, event: Arc<Event>) {
        let Some(subscribers) = lock(&self.channels).get(&event.channel).cloned() else {
            return;
        };
        let size = event.encoded_len();
        for subscription in lock(&subscribers.subscriptions).iter() {
            subscription.offer(&event, size);
        }
    }
}

impl Registry {
    /// Adds a subscription to its channel's subscribers.
    fn add(&self, subscription: &Arc<Subscription>) -> Arc<ChannelSubscribers> {
        let subscribers = lock(&self.channels)
            .entry(subscription.channel.to_string())
            .or_default()
            .clone();
        lock(&subscribers.subscriptions).push(subscription.clone());
        subscribers
    }

    /// Removes a subscription; true when it was its channel's last here.
    fn remove(&self, subscription: &Arc<Subscription>) -> bool {
        let name = subscription.channel.to_string();
        let mut channels = lock(&self.channels);
        let Some(subscribers) = channels.get(&name) else {
            return false;
        };
        let mut subscriptions = lock(&subscribers.subscriptions);
        subscriptions.retain(|s| !Arc::ptr_eq(s, subscription));
        let last = subscriptions.is_empty();
        drop(subscriptions);
        if last {
            channels.remove(&name);
        }
        last
    }

    /// How many channels have subscribers here (for the tests).
    #[cfg(test)]
    pub fn channel_count(&self) -> usize {
        lock(&self.channels).len()
    }
}

/// One channel followed by one feed.
struct Subscription {
    channel: ChannelName,
    /// Bit `n` set: namespace `n` wanted; 0: every namespace.
    namespaces: u32,
    feed: Arc<Shared>,
    state: Mutex<SubscriptionState>,
}

struct SubscriptionState {
    /// Live events that arrived while the subscription was starting.
    starting: Option<Vec<Arc<Event>>>,
    /// The epoch and offset of the last event queued (or skipped).
    epoch: String,
    offset: u64,
}

impl Subscription {
    fn offer(&self, event: &Arc<Event>, size: usize) {
        let mut state = lock(&self.state);
        if let Some(starting) = &mut state.starting {
            if starting.len() >= self.feed.limits.max_events {
                self.feed.end(End::SlowConsumer);
            } else {
                starting.push(event.clone());
            }
            return;
        }
        self.pass(&mut state, event, size, true);
    }

    /// Queues `event` unless it was already passed or filtered out. An
    /// event that does not follow the last one passed (offsets the backend
    /// lost, or a new epoch: history lost) is preceded by a `Subscribed`
    /// that says so (`recovered: false`), never skipped in silence.
    fn pass(&self, state: &mut SubscriptionState, event: &Arc<Event>, size: usize, live: bool) {
        let same_epoch = event.epoch == state.epoch;
        if same_epoch && event.offset <= state.offset {
            return;
        }
        // The channel's first epoch begins after "no epoch yet, offset 0".
        let first_epoch = state.epoch.is_empty() && state.offset == 0 && event.offset == 1;
        if !first_epoch && (!same_epoch || event.offset != state.offset + 1) {
            let lost = Subscribed {
                channel: self.channel.to_string(),
                position: Some(StreamPosition {
                    offset: event.offset - 1,
                    epoch: event.epoch.clone(),
                }),
                was_recovering: true,
                recovered: false,
            };
            self.feed.push(Item::Subscribed(lost), 0, false);
        }
        state.epoch.clone_from(&event.epoch);
        state.offset = event.offset;
        if self.wants(event.namespace) {
            self.feed.push(Item::Event(event.clone()), size, live);
        }
    }

    fn wants(&self, namespace: i32) -> bool {
        self.namespaces == 0
            || u32::try_from(namespace)
                .ok()
                .and_then(|n| 1u32.checked_shl(n))
                .is_some_and(|bit| self.namespaces & bit != 0)
    }
}

/// The queue of one feed, shared with its subscriptions.
struct Shared {
    queue: Mutex<Queue>,
    limits: QueueLimits,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<(Item, usize)>,
    /// Live events waiting and their bytes (replayed ones do not count:
    /// history bounds them).
    live_events: usize,
    live_bytes: usize,
    end: Option<End>,
    /// The consumer waiting for the next item, woken outside the lock. (A
    /// feed has one consumer; keeping its waker under the queue's lock
    /// costs a push and a pop no lock of their own.)
    waiting: Option<Waker>,
}

impl Shared {
    fn push(&self, item: Item, size: usize, live: bool) {
        let mut queue = lock(&self.queue);
        if queue.end.is_some() {
            return;
        }
        if live {
            if queue.live_events + 1 > self.limits.max_events
                || queue.live_bytes + size > self.limits.max_bytes
            {
                drop(queue);
                metrics::counter!(SLOW_CONSUMERS).increment(1);
                self.end(End::SlowConsumer);
                return;
            }
            queue.live_events += 1;
            queue.live_bytes += size;
        }
        queue
            .items
            .push_back((item, if live { size } else { usize::MAX }));
        let waiting = queue.waiting.take();
        drop(queue);
        if let Some(waker) = waiting {
            waker.wake();
        }
    }

    /// Ends the feed now, dropping what it still holds.
    fn end(&self, why: End) {
        let mut queue = lock(&self.queue);
        if queue.end.is_none() {
            queue.end = Some(why);
            queue.items = VecDeque::new();
            queue.live_events = 0;
            queue.live_bytes = 0;
        }
        let waiting = queue.waiting.take();
        drop(queue);
        if let Some(waker) = waiting {
            waker.wake();
        }
    }

    /// The next item, or the end; pending (to be woken by [`Self::push`]
    /// or [`Self::end`]) while there is neither.
    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Result<Item, End>> {
        let mut queue = lock(&self.queue);
        if let Some(end) = queue.end {
            return Poll::Ready(Err(end));
        }
        let Some((item, size)) = queue.items.pop_front() else {
            match &mut queue.waiting {
                Some(waker) => waker.clone_from(cx.waker()),
                none => *none = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        };
        if size != usize::MAX {
            queue.live_events -= 1;
            queue.live_bytes -= size;
        } else if queue.items.is_empty() {
            // What starts a subscription (its `subscribed`, a replay) is
            // queued once; an idle feed, and most are, does not keep the
            // room it took for the rest of its life. A live event, when one
            // comes, takes room again, and keeps it.
            queue.items = VecDeque::new();
        }
        Poll::Ready(Ok(item))
    }

    /// What is queued now, without waiting.
    #[cfg(test)]
    fn pop(&self) -> Option<Result<Item, End>> {
        match self.poll_pop(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(next) => Some(next),
            Poll::Pending => None,
        }
    }
}

/// A session whose feeds this instance tracks.
struct Tracked {
    feeds: Vec<Weak<Shared>>,
    /// When the session expires unless used (ms), as last read.
    expires_at: i64,
    /// When it was last read from the store (ms).
    checked_at: i64,
}

/// This instance's notification hub: the backend and the subscribers.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    backend: StreamBackend,
    registry: Arc<Registry>,
    history: History,
    limits: QueueLimits,
    clock: SharedClock,
    sessions: Mutex<HashMap<String, Tracked>>,
    /// [`EVENTS_DELIVERED`], registered once: counted on every delivery, a
    /// `counter!` there would look the metric up in the recorder each time.
    delivered: metrics::Counter,
}

impl Hub {
    /// A hub over `backend`, which must deliver to `registry`.
    pub fn new(
        backend: StreamBackend,
        registry: Arc<Registry>,
        history: History,
        limits: QueueLimits,
        clock: SharedClock,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                registry,
                history,
                limits,
                clock,
                sessions: Mutex::new(HashMap::new()),
                // The server installs its recorder before it makes a hub.
                delivered: metrics::counter!(EVENTS_DELIVERED),
            }),
        }
    }

    /// The channel streams.
    pub fn backend(&self) -> &StreamBackend {
        &self.inner.backend
    }

    /// How much history channels keep.
    pub fn history(&self) -> History {
        self.inner.history
    }

    /// The live subscribers of this instance.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// A new, empty feed; tracked under `session` (its id and expiry in ms)
    /// when a user opens it.
    pub fn open(&self, session: Option<(&str, i64)>) -> Feed {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            limits: self.inner.limits,
        });
        if let Some((id, expires_at)) = session {
            let now = self.now();
            lock(&self.inner.sessions)
                .entry(id.to_owned())
                .or_insert_with(|| Tracked {
                    feeds: Vec::new(),
                    expires_at,
                    checked_at: now,
                })
                .feeds
                .push(Arc::downgrade(&shared));
        }
        Feed {
            hub: self.clone(),
            shared,
            subscriptions: Vec::new(),
        }
    }

    /// Ends every feed of the session `id` on this instance.
    pub fn end_session(&self, id: &str) {
        let tracked = lock(&self.inner.sessions).remove(id);
        for feed in tracked.into_iter().flat_map(|t| t.feeds) {
            if let Some(feed) = feed.upgrade() {
                feed.end(End::SessionEnded);
            }
        }
    }

    /// Ends the feeds of sessions revoked anywhere (`revocations`) and of
    /// sessions that expired, until `stop`.
    pub async fn watch_sessions(
        self,
        store: SessionStore,
        revocations: broadcast::Receiver<String>,
        stop: CancellationToken,
    ) {
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut revocations = Some(revocations);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                revoked = next_revocation(&mut revocations) => match revoked {
                    // The broadcast (re)connected: revocations may have
                    // been missed meanwhile.
                    Ok(id) if id == RECHECK_SESSIONS => self.sweep(&store, true).await,
                    Ok(id) => self.end_session(&id),
                    // Missed some: read every tracked session again now.
                    Err(broadcast::error::RecvError::Lagged(_)) => self.sweep(&store, true).await,
                    // No more broadcasts: the sweep alone has to do.
                    Err(broadcast::error::RecvError::Closed) => revocations = None,
                },
                _ = sweep.tick() => self.sweep(&store, false).await,
            }
        }
    }

    /// Re-reads the sessions that are due (expired, or not read for
    /// [`RECHECK_INTERVAL`]; all of them when `all`), ends the feeds of
    /// those that ended, and forgets sessions without feeds.
    async fn sweep(&self, store: &SessionStore, all: bool) {
        let now = self.now();
        let recheck = crate::identity::sessions::duration_millis(RECHECK_INTERVAL);
        let due: Vec<String> = {
            let mut sessions = lock(&self.inner.sessions);
            sessions.retain(|_, tracked| {
                tracked.feeds.retain(|feed| feed.strong_count() > 0);
                !tracked.feeds.is_empty()
            });
            sessions
                .iter()
                .filter(|(_, t)| all || t.expires_at <= now || now - t.checked_at >= recheck)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in due {
            match store.get(&id).await {
                Ok(Some(session)) => {
                    if let Some(tracked) = lock(&self.inner.sessions).get_mut(&id) {
                        tracked.expires_at = session.expires_at;
                        tracked.checked_at = now;
                    }
                }
                Ok(None) => self.end_session(&id),
                // Keep the feeds: a store outage must not end every stream;
                // the next sweep asks again.
                Err(error) => {
                    tracing::warn!(%error, "cannot re-read a streaming session");
                    return;
                }
            }
        }
    }

    fn now(&self) -> i64 {
        to_millis(self.inner.clock.now())
    }
}

/// One open stream: its subscriptions and its bounded queue. Dropping it
/// ends its subscriptions.
pub struct Feed {
    hub: Hub,
    shared: Arc<Shared>,
    subscriptions: Vec<Arc<Subscription>>,
}

impl Feed {
    /// Follows `channel` (only `namespaces`, or all when empty), resuming
    /// after `resume_from` when given: queues the `Subscribed` message, the
    /// missed events when they can all be recovered, then live events.
    pub async fn subscribe(
        &mut self,
        channel: ChannelName,
        namespaces: &[i32],
        resume_from: Option<&StreamPosition>,
    ) -> Result<()> {
        let subscription = Arc::new(Subscription {
            channel: channel.clone(),
            namespaces: namespaces
                .iter()
                .filter_map(|&n| u32::try_from(n).ok().and_then(|n| 1u32.checked_shl(n)))
                .fold(0, |bits, bit| bits | bit),
            feed: self.shared.clone(),
            state: Mutex::new(SubscriptionState {
                starting: Some(Vec::new()),
                epoch: String::new(),
                offset: 0,
            }),
        });
        let hub = &self.hub.inner;
        let subscribers = hub.registry.add(&subscription);
        // From here on, dropping the feed removes the subscription.
        self.subscriptions.push(subscription.clone());
        subscribers
            .watching
            .get_or_try_init(|| hub.backend.watch(&channel))
            .await?;

        let state = hub.backend.channel(&channel).await?;
        let mut start_after = state.offset;
        let mut recovered = false;
        let mut missed = Vec::new();
        if let Some(position) = resume_from
            && state.continues_from(position)
        {
            if position.offset == state.offset {
                recovered = true;
            } else {
                let events = hub
                    .backend
                    .read(&channel, position.offset, hub.history.max_events)
                    .await?;
                // Every offset from the position on, or nothing: a hole
                // (an event that no longer decodes) is not a recovery.
                if super::contiguous_after(&events, position.offset)
                    && events
                        .last()
                        .is_some_and(|event| event.offset >= state.offset)
                {
                    recovered = true;
                    start_after = position.offset;
                    missed = events;
                }
            }
        }

        let subscribed = Subscribed {
            channel: channel.to_string(),
            position: Some(StreamPosition {
                offset: state.offset,
                epoch: state.epoch.clone(),
            }),
            was_recovering: resume_from.is_some(),
            recovered,
        };
        let mut sub_state = lock(&subscription.state);
        self.shared.push(Item::Subscribed(subscribed), 0, false);
        sub_state.epoch = state.epoch;
        sub_state.offset = start_after;
        for event in &missed {
            subscription.pass(&mut sub_state, event, event.encoded_len(), false);
        }
        for event in sub_state.starting.take().unwrap_or_default() {
            subscription.pass(&mut sub_state, &event, event.encoded_len(), true);
        }
        Ok(())
    }

    /// The next item; `Err` once the feed ended (and forever after).
    pub async fn next(&self) -> Result<Item, End> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// [`Feed::next`], polled: pending until there is an item or the end.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Result<Item, End>> {
        let next = self.shared.poll_pop(cx);
        if let Poll::Ready(Ok(Item::Event(_))) = next {
            self.hub.inner.delivered.increment(1);
        }
        next
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        let hub = &self.hub.inner;
        for subscription in &self.subscriptions {
            if hub.registry.remove(subscription) {
                hub.backend.unwatch(&subscription.channel);
            }
        }
    }
}

/// The next revocation, or never once there are none.
async fn next_revocation(
    revocations: &mut Option<broadcast::Receiver<String>>,
) -> Result<String, broadcast::error::RecvError> {
    match revocations {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
