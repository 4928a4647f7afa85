//! One socket's task: its loop over shutdown, subscription messages, client
//! frames and timers, and what each frame does (sign in, subscribe,
//! unsubscribe, ping).

use std::{future::Future, sync::Arc, task::Poll, time::Duration};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use slop_api::notification::{
    ChannelSubscription, SubscribeRequest, subscribe_response::Message as Sent,
};
use tonic::Status;

use slop_context::{Delivery, DeliveryStream};

use tokio_util::task::task_tracker::TaskTrackerToken;

use super::{
    MAX_SUBSCRIPTIONS, Sockets,
    close::{self, Ending},
    frames::{BadFrame, ClientFrame, ServerFrame},
    subscriptions::{Produced, Subscriptions},
    upgrade::{Credentials, OpenSocket, Peer, SignedIn, signed_in},
    wakes::{Source, Wakes},
};
use crate::Bridge;

/// How long a closing socket waits for the client's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What handling one thing leaves the socket with.
type Step = Result<(), Ending>;

/// What a pass of a socket's loop found ready.
enum Ready {
    Shutdown,
    Produced(Produced),
    Received(Option<Result<Message, axum::Error>>),
    Ping,
    AuthDeadline,
}

/// One socket and everything it holds between frames.
pub(super) struct Connection {
    sockets: Arc<Sockets>,
    credentials: Credentials,
    peer: Peer,
    identity: Option<SignedIn>,
    subscriptions: Subscriptions,
}

impl Connection {
    /// A socket from `peer` with these credentials, signed in as `identity`
    /// if they named someone.
    pub(super) fn new(
        sockets: Arc<Sockets>,
        credentials: Credentials,
        peer: Peer,
        identity: Option<SignedIn>,
    ) -> Self {
        Self {
            sockets,
            credentials,
            peer,
            identity,
            subscriptions: Subscriptions::default(),
        }
    }

    /// Serves the socket until it ends, then closes it saying why; `open`
    /// is held until then, so shutdown can wait for the socket to close.
    ///
    /// This future is most of what an idle socket costs, so whatever runs
    /// once or rarely (signing in, subscribing, a write that has to wait,
    /// the close) is boxed: inline, each would grow every socket's task by
    /// its size for the socket's whole life. And it is an `async move`
    /// block, not an `async fn`: an async fn's future holds each argument
    /// twice (rust-lang/rust#62958), which for the WebSocket is 368 bytes.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold the socket twice (above)"
    )]
    pub(super) fn serve(
        mut self: Box<Self>,
        mut socket: WebSocket,
        open: TaskTrackerToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        async move {
            let _counted = OpenSocket::new();
            tracing::debug!(
                user_id = self.identity.as_ref().map(|i| i.user_id.as_str()),
                "WebSocket opened"
            );
            let ending = match Box::pin(self.start(&mut socket)).await {
                Ok(()) => self.run(&mut socket).await,
                Err(ending) => ending,
            };
            self.subscriptions = Subscriptions::default();
            Box::pin(finish(socket, ending)).await;
            tracing::debug!("WebSocket closed");
            drop(open);
        }
    }

    /// Greets a socket signed in at the upgrade.
    async fn start(&mut self, socket: &mut WebSocket) -> Step {
        if self.identity.is_some() {
            self.welcome_following_own_channel(socket).await?;
        }
        Ok(())
    }

    async fn run(&mut self, socket: &mut WebSocket) -> Ending {
        let bridge = &self.sockets.bridge;
        // Made once, a new one per frame would register with the token
        // again each time; and on a child token of the socket's own, whose
        // state no other socket's task reads at the same time.
        let shutdown = bridge.shutdown.child_token().cancelled_owned();
        tokio::pin!(shutdown);
        let mut ping = tokio::time::interval(bridge.ws_ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut awaiting_pong = false;
        // Only a socket that has yet to sign in has a deadline for it.
        let mut auth_deadline = self
            .identity
            .is_none()
            .then(|| Box::pin(tokio::time::sleep(bridge.ws_auth_timeout)));
        let wakes = Wakes::new();

        loop {
            // In this order, and only until one is ready: shutdown, then an
            // event (the common case), then the client and the timers. The
            // subscriptions' queues are bounded, so the socket's own frames
            // and pings wait for at most that many events. Shutdown, the
            // client and the timers are polled only when they woke (`wakes`):
            // an event's pass touches nothing else.
            let ready = std::future::poll_fn(|cx| {
                wakes.register(cx.waker());
                if wakes.take(Source::Shutdown)
                    && shutdown
                        .as_mut()
                        .poll(&mut wakes.context(Source::Shutdown))
                        .is_ready()
                {
                    return Poll::Ready(Ready::Shutdown);
                }
                if let Poll::Ready(produced) = self.subscriptions.poll_next(cx) {
                    return Poll::Ready(Ready::Produced(produced));
                }
                if wakes.take(Source::Read)
                    && let Poll::Ready(message) =
                        socket.poll_next_unpin(&mut wakes.context(Source::Read))
                {
                    wakes.again(Source::Read);
                    return Poll::Ready(Ready::Received(message));
                }
                if wakes.take(Source::Timers) {
                    let mut timers = wakes.context(Source::Timers);
                    if ping.poll_tick(&mut timers).is_ready() {
                        wakes.again(Source::Timers);
                        return Poll::Ready(Ready::Ping);
                    }
                    if self.identity.is_none()
                        && let Some(deadline) = auth_deadline.as_mut()
                        && deadline.as_mut().poll(&mut timers).is_ready()
                    {
                        return Poll::Ready(Ready::AuthDeadline);
                    }
                }
                Poll::Pending
            })
            .await;
            let step = match ready {
                Ready::Shutdown => Err(Ending::close(close::GOING_AWAY, "server shutting down")),
                Ready::Produced(produced) => self.forward(socket, produced).await,
                Ready::Received(message) => match message {
                    Some(Ok(Message::Close(_))) => Err(Ending::ClientClosed),
                    Some(Err(error)) if too_big(&error) => Err(Ending::close(
                        close::MESSAGE_TOO_BIG,
                        "frames are at most 64 KiB",
                    )),
                    None | Some(Err(_)) => Err(Ending::ClientGone),
                    Some(Ok(Message::Pong(_))) => {
                        awaiting_pong = false;
                        Ok(())
                    }
                    // Protocol pings are answered by the WebSocket layer itself.
                    Some(Ok(Message::Ping(_))) => Ok(()),
                    Some(Ok(Message::Binary(_))) => Err(Ending::close(
                        close::UNSUPPORTED_DATA,
                        "send JSON text frames",
                    )),
                    // Boxed, like `start`: client frames are rare.
                    Some(Ok(Message::Text(text))) => Box::pin(self.receive(socket, &text)).await,
                },
                Ready::Ping => {
                    if awaiting_pong {
                        tracing::debug!("WebSocket peer did not answer a ping");
                        Err(Ending::ClientGone)
                    } else {
                        awaiting_pong = true;
                        send_message(
                            socket,
                            &self.sockets.bridge,
                            Message::Ping(Default::default()),
                        )
                        .await
                    }
                }
                Ready::AuthDeadline => Err(Ending::close(
                    close::UNAUTHENTICATED,
                    "no auth frame in time",
                )),
            };
            if let Err(ending) = step {
                return ending;
            }
        }
    }

    /// Acts on a text frame from the client.
    async fn receive(&mut self, socket: &mut WebSocket, text: &str) -> Step {
        let frame = ClientFrame::parse(text);
        if self.identity.is_none() {
            // Until it signs in, a socket may only send its auth frame.
            return match frame {
                Ok(ClientFrame::Auth { token }) => self.sign_in(socket, &token).await,
                _ => Err(Ending::close(
                    close::UNAUTHENTICATED,
                    "sign in first: send an auth frame",
                )),
            };
        }
        match frame {
            Ok(ClientFrame::Ping { id }) => {
                send(
                    socket,
                    &self.sockets.bridge,
                    &ServerFrame::Pong { id: id.as_deref() },
                )
                .await
            }
            Ok(ClientFrame::Auth { token }) => self.sign_in(socket, &token).await,
            Ok(ClientFrame::Subscribe { id, subscriptions }) => {
                self.subscribe(socket, &id, subscriptions).await
            }
            Ok(ClientFrame::Unsubscribe { id }) => {
                if self.subscriptions.remove(&id) {
                    send(
                        socket,
                        &self.sockets.bridge,
                        &ServerFrame::Unsubscribed { id: &id },
                    )
                    .await
                } else {
                    let status = Status::not_found(format!("no subscription has id `{id}`"));
                    send(
                        socket,
                        &self.sockets.bridge,
                        &ServerFrame::status(&status, Some(&id)),
                    )
                    .await
                }
            }
            Err(BadFrame { id, message }) => {
                send(
                    socket,
                    &self.sockets.bridge,
                    &ServerFrame::invalid(&message, id.as_deref()),
                )
                .await
            }
        }
    }

    /// An `auth` frame: signs the socket in, or gives a signed-in socket a
    /// new access token (for the same user) for its later subscriptions.
    async fn sign_in(&mut self, socket: &mut WebSocket, token: &str) -> Step {
        let first = self.identity.is_none();
        let Some(credentials) = Credentials::bearer(token) else {
            let status = Status::unauthenticated("the token is not a valid header value");
            return self.refuse_sign_in(socket, &status, first).await;
        };
        let sockets = self.sockets.clone();
        let bridge = &sockets.bridge;
        let identity = match signed_in(bridge, &credentials, &self.peer).await {
            Ok(identity) => identity,
            Err(status) => return self.refuse_sign_in(socket, &status, first).await,
        };
        match self.identity.clone() {
            None => {
                if let Err(status) = bridge.gate.admit(None, Some(&identity.user_id)).await {
                    send(
                        socket,
                        &self.sockets.bridge,
                        &ServerFrame::status(&status, None),
                    )
                    .await?;
                    return Err(Ending::for_status(&status, bridge.shutdown.is_cancelled()));
                }
            }
            Some(current) if current.user_id != identity.user_id => {
                let status = Status::permission_denied(
                    "this socket is signed in as another user; open a new socket to switch users",
                );
                return send(
                    socket,
                    &self.sockets.bridge,
                    &ServerFrame::status(&status, None),
                )
                .await;
            }
            Some(_) => {}
        }
        self.credentials = credentials;
        self.identity = Some(identity);
        if first {
            self.welcome_following_own_channel(socket).await
        } else {
            self.welcome(socket).await
        }
    }

    /// Refused credentials: a socket not yet signed in is closed; a signed-in
    /// one keeps its credentials unless its session ended.
    async fn refuse_sign_in(
        &mut self,
        socket: &mut WebSocket,
        status: &Status,
        first: bool,
    ) -> Step {
        send(
            socket,
            &self.sockets.bridge,
            &ServerFrame::status(status, None),
        )
        .await?;
        let ending = Ending::for_status(status, self.sockets.bridge.shutdown.is_cancelled());
        match ending {
            Ending::Close(close::SESSION_ENDED, _) => Err(ending),
            _ if first => Err(ending),
            _ => Ok(()),
        }
    }

    async fn welcome(&mut self, socket: &mut WebSocket) -> Step {
        let Some(identity) = &self.identity else {
            return Ok(());
        };
        let welcome = ServerFrame::Welcome {
            user_id: &identity.user_id,
            session_id: &identity.session_id,
        };
        send(socket, &self.sockets.bridge, &welcome).await
    }

    /// Greets a newly signed-in socket once the subscription every
    /// signed-in socket has is open: the user's own channel, every
    /// namespace, live (as Socket.IO's per-user room was). So `welcome`
    /// means the channel is live: an event published from then on arrives
    /// (its `subscribed` frame, queued first, follows `welcome`).
    async fn welcome_following_own_channel(&mut self, socket: &mut WebSocket) -> Step {
        let Some(identity) = &self.identity else {
            return Ok(());
        };
        let request = SubscribeRequest {
            subscriptions: vec![ChannelSubscription {
                channel: identity.own_channel(),
                ..Default::default()
            }],
        };
        // Signing in has just established the caller.
        let own = self.call_subscribe(request, true).await;
        self.welcome(socket).await?;
        match own {
            Ok((session, stream)) => {
                self.subscriptions.insert(None, session, stream);
                Ok(())
            }
            Err(status) => self.refused(socket, &status, None).await,
        }
    }

    /// A `subscribe` frame: one `Subscribe` call. A subscription to the
    /// user's own channel replaces the automatic one once it is open.
    async fn subscribe(
        &mut self,
        socket: &mut WebSocket,
        id: &str,
        subscriptions: Vec<ChannelSubscription>,
    ) -> Step {
        if self.subscriptions.contains(id) {
            let status = Status::already_exists(format!(
                "a subscription with id `{id}` is open; choose another id or unsubscribe first"
            ));
            return send(
                socket,
                &self.sockets.bridge,
                &ServerFrame::status(&status, Some(id)),
            )
            .await;
        }
        let own = self
            .identity
            .as_ref()
            .map(SignedIn::own_channel)
            .unwrap_or_default();
        let replaces_own =
            subscriptions.is_empty() || subscriptions.iter().any(|s| s.channel == own);
        let replaced = usize::from(replaces_own && self.subscriptions.has_automatic());
        if self.subscriptions.len() - replaced >= MAX_SUBSCRIPTIONS {
            let status = Status::resource_exhausted(format!(
                "a socket has at most {MAX_SUBSCRIPTIONS} subscriptions; unsubscribe one first, or follow several channels in one"
            ));
            return send(
                socket,
                &self.sockets.bridge,
                &ServerFrame::status(&status, Some(id)),
            )
            .await;
        }
        match self
            .call_subscribe(SubscribeRequest { subscriptions }, false)
            .await
        {
            Ok((session, stream)) => {
                if replaces_own {
                    self.subscriptions.remove_automatic();
                }
                self.subscriptions.insert(Some(id), session, stream);
                Ok(())
            }
            Err(status) => self.refused(socket, &status, Some(id)).await,
        }
    }

    /// One `Subscribe` call in the name of the socket's session; answers
    /// the session with the stream. It carries the caller signing in
    /// established (which the server takes instead of authenticating the
    /// credentials again) when signing in has `just` happened or while a
    /// subscription of the same session is open, whose end (the server ends
    /// it when the session ends) would end the socket. Otherwise nothing
    /// here would notice that the session ended, so the server reads it.
    /// The credentials always go too: the server falls back on them when
    /// the established caller cannot vouch for the call any more (an
    /// expired access token, say).
    async fn call_subscribe(
        &mut self,
        request: SubscribeRequest,
        just: bool,
    ) -> Result<(Arc<str>, DeliveryStream), Status> {
        let Some(identity) = &self.identity else {
            return Err(Status::unauthenticated("sign in first: send an auth frame"));
        };
        let mut extensions = self.peer.extensions(true);
        if let Some(caller) = &identity.caller
            && (just || self.subscriptions.follow_session(&identity.session_id))
        {
            extensions.insert(caller.clone());
        }
        let session = identity.session_id.clone();
        let request = tonic::Request::from_parts(self.credentials.metadata(), extensions, request);
        let stream = self.sockets.notifications.subscribe_shared(request).await?;
        Ok((session, stream))
    }

    /// A refused `Subscribe` call: an error frame, and the socket stays
    /// open with its other subscriptions, unless the session has ended or
    /// the server cannot serve subscriptions now (a dependency is down:
    /// 1013, or shutting down: 1001), so the client reconnects with back-off
    /// instead of lingering with a subscription missing.
    async fn refused(&mut self, socket: &mut WebSocket, status: &Status, id: Option<&str>) -> Step {
        send(
            socket,
            &self.sockets.bridge,
            &ServerFrame::status(status, id),
        )
        .await?;
        match Ending::for_status(status, self.sockets.bridge.shutdown.is_cancelled()) {
            ending @ Ending::Close(
                close::SESSION_ENDED | close::TRY_AGAIN_LATER | close::GOING_AWAY,
                _,
            ) => Err(ending),
            _ => Ok(()),
        }
    }

    /// Forwards one message of a subscription; a subscription that ends
    /// ends the socket, with a close code that says why.
    async fn forward(&mut self, socket: &mut WebSocket, produced: Produced) -> Step {
        // The message becomes JSON before the write, so the socket's task
        // does not hold it (an event can be large) while the client reads.
        let (frame, ending) = self.forwarded(produced);
        if let Some(text) = frame {
            send_message(socket, &self.sockets.bridge, Message::Text(text)).await?;
        }
        ending.map_or(Ok(()), Err)
    }

    /// The frame for a subscription's message, and how the socket ends
    /// after it, if it does.
    fn forwarded(&self, produced: Produced) -> (Option<Utf8Bytes>, Option<Ending>) {
        let Produced { id, item } = produced;
        let id = id.as_deref();
        match item {
            Some(Ok(Delivery::Event(event))) => {
                (Some(self.sockets.encoded.frame(&event, id)), None)
            }
            Some(Ok(Delivery::Message(response))) => match response.message {
                Some(Sent::Subscribed(subscribed)) => {
                    let frame = ServerFrame::Subscribed {
                        id,
                        subscribed: &subscribed,
                    };
                    (Some(frame.to_json().into()), None)
                }
                Some(Sent::Event(event)) => {
                    let frame = ServerFrame::Event { id, event: &event };
                    (Some(frame.to_json().into()), None)
                }
                // The socket has its own keep-alive.
                Some(Sent::Heartbeat(_)) | None => (None, None),
            },
            Some(Err(status)) => {
                let shutting_down = self.sockets.bridge.shutdown.is_cancelled();
                (
                    Some(ServerFrame::status(&status, id).to_json().into()),
                    Some(Ending::for_status(&status, shutting_down)),
                )
            }
            None => (
                None,
                Some(Ending::close(close::GOING_AWAY, "subscription ended")),
            ),
        }
    }
}

/// Ends a socket the way `ending` says: a close frame and a moment for the
/// client's answer, or the answer to the client's own close.
async fn finish(mut socket: WebSocket, ending: Ending) {
    match ending {
        Ending::Close(code, reason) => {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            };
            if socket.send(Message::Close(Some(frame))).await.is_ok() {
                // Give the client a moment to answer the close, as the
                // protocol asks, without letting it hold shutdown up.
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    while let Some(Ok(message)) = socket.recv().await {
                        if matches!(message, Message::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        Ending::ClientClosed => {
            // The WebSocket layer has queued its answer to the client's
            // close frame; send it, so the client sees a clean close.
            let _ = tokio::time::timeout(CLOSE_GRACE, socket.flush()).await;
        }
        Ending::ClientGone => {}
    }
}

/// Whether a read failed because the client's message was over
/// [`MAX_CLIENT_FRAME`].
fn too_big(error: &axum::Error) -> bool {
    use std::error::Error as _;
    matches!(
        error
            .source()
            .and_then(|inner| inner.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// Sends one frame.
async fn send(socket: &mut WebSocket, bridge: &Bridge, frame: &ServerFrame<'_>) -> Step {
    send_text(socket, bridge, frame.to_json()).await
}

/// Sends one text frame.
async fn send_text(socket: &mut WebSocket, bridge: &Bridge, json: String) -> Step {
    send_message(socket, bridge, Message::Text(json.into())).await
}

/// Sends one message. A client that does not take it within a ping
/// interval, or by the time the server shuts down, is gone.
async fn send_message(socket: &mut WebSocket, bridge: &Bridge, message: Message) -> Step {
    let mut send = futures_util::SinkExt::send(socket, message);
    // Most frames go out at once, with no timer and no watch on shutdown;
    // the wait for the others is boxed (see `Connection::serve`).
    if let Some(sent) = (&mut send).now_or_never() {
        return sent.map_err(|_| Ending::ClientGone);
    }
    Box::pin(send_waiting(send, bridge)).await
}

/// The rest of a send that could not finish at once.
async fn send_waiting(
    send: futures_util::sink::Send<'_, WebSocket, Message>,
    bridge: &Bridge,
) -> Step {
    tokio::select! {
        // A frame that goes out at once still goes out during shutdown
        // (the error frame before a close, say).
        biased;
        sent = tokio::time::timeout(bridge.ws_ping_interval, send) => {
            match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) | Err(_) => Err(Ending::ClientGone),
            }
        }
        () = bridge.shutdown.cancelled() => Err(Ending::ClientGone),
    }
}
