//! The task that turns the pub/sub messages of watched channels into live
//! events for the sink: every offset once, in order, filling gaps from
//! history. The connection itself is the instance's one pub/sub connection
//! ([`crate::infra::pubsub`]), which reconnects and resubscribes; this task
//! hears its messages (the route `<prefix>stream:`), subscribes the
//! channels `watch` asks for, and catches up from history after every
//! (re)subscription it hears of, for the channels that notice covers and
//! that were subscribed under an earlier mark.

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::Arc,
};

use slop_api::notification::Event;
use tokio::sync::{mpsc, oneshot};

use super::{Position, Shared, decode};
use crate::{
    infra::pubsub::{Mark, Notice, PubSub},
    notifications::{ChannelName, Deliver, Result, StreamError},
};

/// What `watch` and `unwatch` ask of the listener.
pub(super) enum Command {
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
    /// The pub/sub (re)subscription since which nothing was missed: the
    /// one it was subscribed under, then the one it last caught up after.
    since: Mark,
}

/// The listener task's state.
pub(super) struct Listener {
    shared: Arc<Shared>,
    sink: Arc<dyn Deliver>,
    pubsub: PubSub,
    commands: mpsc::UnboundedReceiver<Command>,
    notices: mpsc::UnboundedReceiver<Notice>,
    watched: HashMap<ChannelName, Watched>,
    /// A read from history failed and a new connection was asked for:
    /// messages wait for it (its catch-up gives them).
    resyncing: bool,
}

impl Listener {
    pub(super) fn new(
        shared: Arc<Shared>,
        sink: Arc<dyn Deliver>,
        pubsub: PubSub,
        commands: mpsc::UnboundedReceiver<Command>,
        notices: mpsc::UnboundedReceiver<Notice>,
    ) -> Self {
        Self {
            shared,
            sink,
            pubsub,
            commands,
            notices,
            watched: HashMap::new(),
            resyncing: false,
        }
    }

    /// Serves until every [`super::RedisStreams`] clone is gone, then
    /// leaves the channels it subscribed (the pub/sub connection may serve
    /// others still).
    pub(super) async fn run(mut self) {
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => break,
                    Some(command) => self.on_command(command).await,
                },
                notice = self.notices.recv() => match notice {
                    None => break,
                    Some(notice) => self.on_notice(notice).await,
                },
            }
        }
        for channel in self.watched.keys() {
            self.pubsub.unsubscribe(self.shared.key(channel));
        }
    }

    async fn on_notice(&mut self, notice: Notice) {
        match notice {
            Notice::Message { channel, payload } => {
                if self.resyncing {
                    return;
                }
                if let Err(error) = self.on_message(&channel, &payload).await {
                    self.resync(error);
                }
            }
            Notice::Subscribed {
                mark,
                channels,
                caught_up,
            } => {
                self.resyncing = false;
                // A channel subscribed under this mark (heard of before
                // this notice) missed nothing, and its messages may be
                // queued behind it: history could no longer hold them.
                let covered: Vec<ChannelName> = match channels {
                    None => self.watched.keys().cloned().collect(),
                    Some(names) => names
                        .iter()
                        .filter_map(|name| self.shared.channel_of(name))
                        .collect(),
                };
                let channels: Vec<ChannelName> = covered
                    .into_iter()
                    .filter(|channel| {
                        self.watched
                            .get(channel)
                            .is_some_and(|watched| watched.since < mark)
                    })
                    .collect();
                for channel in &channels {
                    if let Err(error) = self.catch_up(channel).await {
                        self.resync(error);
                        break;
                    }
                    if let Some(watched) = self.watched.get_mut(channel) {
                        watched.since = mark;
                    }
                }
                // Readiness waits for this.
                drop(caught_up);
            }
            Notice::Lost => {}
        }
    }

    /// History could not be read: start over on a new connection, whose
    /// catch-up gives what this one could not.
    fn resync(&mut self, error: StreamError) {
        tracing::warn!(%error, "cannot read stream history; reconnecting the pub/sub");
        self.resyncing = true;
        self.pubsub
            .reconnect("the stream listener could not read history");
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

    /// One pub/sub message: an event of a channel, maybe after a gap.
    async fn on_message(&mut self, pubsub: &str, bytes: &[u8]) -> Result<()> {
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

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Watch { channel, reply } => {
                if let Some(watched) = self.watched.get_mut(&channel) {
                    watched.count += 1;
                    self.answer(&channel, reply);
                    return;
                }
                let key = self.shared.key(&channel);
                // Once Redis confirmed, every later message reaches this
                // task, after the watch is counted.
                let since = match self.pubsub.subscribe(key.clone()).await {
                    Ok(mark) => mark,
                    Err(error) => {
                        let _ = reply.send(Err(error.into()));
                        return;
                    }
                };
                match self.shared.position(&channel).await {
                    Ok(last) => {
                        let watched = Watched {
                            count: 1,
                            last,
                            since,
                        };
                        self.watched.insert(channel.clone(), watched);
                        self.answer(&channel, reply);
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                        self.pubsub.unsubscribe(key);
                    }
                }
            }
            Command::Unwatch { channel } => {
                if self.release(&channel) {
                    self.pubsub.unsubscribe(self.shared.key(&channel));
                }
            }
        }
    }

    /// Replies to a watch of a counted channel; a watcher that is gone
    /// (cancelled) no longer counts.
    fn answer(&mut self, channel: &ChannelName, reply: oneshot::Sender<Result<()>>) {
        if reply.send(Ok(())).is_err() && self.release(channel) {
            self.pubsub.unsubscribe(self.shared.key(channel));
        }
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
