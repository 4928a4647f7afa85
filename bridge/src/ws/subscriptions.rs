//! The `Subscribe` streams of one socket, polled by the socket's own task.
//!
//! No task and no queue per subscription: the socket's task takes the next
//! message of any stream only when it is ready to write it, so a socket that
//! cannot keep up leaves messages in each subscription's bounded queue on
//! the service side, which ends the subscription (SLOW_CONSUMER) rather than
//! letting memory grow here.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tonic::Status;

use slop_context::{Delivery, DeliveryStream};

/// One `Subscribe` call of a socket.
struct Subscription {
    /// The id the client chose; None for the automatic subscription to the
    /// user's own channel.
    id: Option<Box<str>>,
    /// The session it was opened in the name of.
    session: Arc<str>,
    stream: DeliveryStream,
}

/// The subscriptions of a socket.
#[derive(Default)]
pub(super) struct Subscriptions {
    list: Vec<Subscription>,
    /// Where the next poll starts, so a busy stream cannot starve the rest.
    next: usize,
}

/// What a subscription produced: its id, and its next message (None when
/// its stream ended without a status). The status is boxed: it is rare,
/// and inline (about 180 bytes) it would widen every future that holds a
/// `Produced` across a write, and with them every idle socket's task.
pub(super) struct Produced {
    pub id: Option<Box<str>>,
    pub item: Option<Result<Delivery, Box<Status>>>,
}

impl Subscriptions {
    /// How many there are, the automatic one included.
    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether a subscription has this client-chosen id.
    pub(super) fn contains(&self, id: &str) -> bool {
        self.list.iter().any(|s| s.id.as_deref() == Some(id))
    }

    /// Whether the automatic subscription to the user's channel is open.
    pub(super) fn has_automatic(&self) -> bool {
        self.list.iter().any(|s| s.id.is_none())
    }

    /// Whether one is open in the name of `session`: its stream ends when
    /// the session does.
    pub(super) fn follow_session(&self, session: &str) -> bool {
        self.list.iter().any(|s| *s.session == *session)
    }

    /// Adds a subscription, opened in the name of `session`; `id` None is
    /// the automatic one.
    pub(super) fn insert(&mut self, id: Option<&str>, session: Arc<str>, stream: DeliveryStream) {
        // Room for one more only: a socket has one or two subscriptions for
        // its whole life, and the default growth would hold room for four.
        self.list.reserve_exact(1);
        self.list.push(Subscription {
            id: id.map(Box::from),
            session,
            stream,
        });
    }

    /// Drops the subscription with this id (its call ends); false if none.
    pub(super) fn remove(&mut self, id: &str) -> bool {
        self.remove_where(|s| s.id.as_deref() == Some(id))
    }

    /// Drops the automatic subscription, if open.
    pub(super) fn remove_automatic(&mut self) {
        self.remove_where(|s| s.id.is_none());
    }

    fn remove_where(&mut self, matches: impl Fn(&Subscription) -> bool) -> bool {
        match self.list.iter().position(matches) {
            Some(index) => {
                self.list.remove(index);
                true
            }
            None => false,
        }
    }

    /// The next message of any subscription; pending while there are none.
    /// A stream that ended is removed.
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Produced> {
        let count = self.list.len();
        for i in 0..count {
            let index = (self.next + i) % count;
            if let Poll::Ready(item) = self.list[index].stream.as_mut().poll_next(cx) {
                self.next = index + 1;
                let id = if item.is_none() {
                    self.list.remove(index).id
                } else {
                    self.list[index].id.clone()
                };
                return Poll::Ready(Produced {
                    id,
                    item: item.map(|item| item.map_err(Box::new)),
                });
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    impl Subscriptions {
        async fn next(&mut self) -> Produced {
            poll_fn(|cx| self.poll_next(cx)).await
        }
    }
    use futures_util::{FutureExt as _, stream};
    use slop_api::notification::{Heartbeat, SubscribeResponse, subscribe_response::Message};

    fn heartbeats(n: usize) -> DeliveryStream {
        Box::pin(stream::iter((0..n).map(|_| {
            Ok(Delivery::Message(Box::new(SubscribeResponse {
                message: Some(Message::Heartbeat(Heartbeat::default())),
            })))
        })))
    }

    #[tokio::test]
    async fn streams_take_turns_and_ended_ones_leave() {
        let mut subscriptions = Subscriptions::default();
        subscriptions.insert(Some("a"), "s".into(), heartbeats(2));
        subscriptions.insert(None, "s".into(), heartbeats(2));
        let mut order = Vec::new();
        for _ in 0..4 {
            let produced = subscriptions.next().await;
            assert!(produced.item.is_some());
            order.push(produced.id);
        }
        assert_eq!(order, [Some("a".into()), None, Some("a".into()), None]);
        let ended = subscriptions.next().await;
        assert!(ended.item.is_none());
        let ended = subscriptions.next().await;
        assert!(ended.item.is_none());
        assert_eq!(subscriptions.len(), 0);
        assert!(subscriptions.next().now_or_never().is_none());
    }

    #[test]
    fn subscriptions_are_found_and_dropped_by_id() {
        let mut subscriptions = Subscriptions::default();
        subscriptions.insert(None, "s1".into(), heartbeats(1));
        subscriptions.insert(Some("a"), "s2".into(), heartbeats(1));
        assert!(subscriptions.contains("a") && subscriptions.has_automatic());
        assert!(subscriptions.follow_session("s1") && !subscriptions.follow_session("s"));
        assert!(!subscriptions.remove("b"));
        assert!(subscriptions.remove("a"));
        assert!(!subscriptions.follow_session("s2"));
        subscriptions.remove_automatic();
        assert_eq!(subscriptions.len(), 0);
    }
}
