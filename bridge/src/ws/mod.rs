//! The WebSocket adapter at `/api/v1/ws`, for browsers.
//!
//! It speaks JSON text frames, each an object with a `type` (docs/websocket.md
//! is the protocol). A socket signs in at the upgrade (bearer header or
//! session cookie) or with an `auth` frame within [`AUTH_TIMEOUT`]; it is
//! admitted through the [`ConnectionGate`](slop_context::ConnectionGate) by peer
//! address at the upgrade and by user once the user is known. A signed-in
//! socket follows the user's own channel without asking, and each
//! `subscribe` frame is one `Subscribe` call, made with the socket's
//! credentials and the [`Admitted`](slop_context::Admitted) extension, whose
//! messages become frames.
//!
//! One task serves a socket: it reads frames, forwards subscription
//! messages only as fast as the socket takes them ([`subscriptions`]), and
//! sends pings. Keep-alive runs both ways: the server sends WebSocket pings
//! every WS_PING_INTERVAL and drops a peer that has not answered the
//! previous one; browsers, which cannot send protocol pings, send a
//! `{"type":"ping"}` frame and get `{"type":"pong"}` back. Why a socket is
//! closed is in its close code ([`close`]).

use std::{future::Future as _, net::SocketAddr, sync::Arc, task::Poll, time::Duration};

use axum::{
    extract::{
        ConnectInfo, State,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
    },
    response::{IntoResponse, Response},
};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use http::HeaderValue;
use slop_api::{
    errors::ErrorReason,
    notification::{ChannelSubscription, SubscribeRequest, subscribe_response::Message as Sent},
};
use tonic::{Code, Status, metadata::MetadataMap, transport::server::TcpConnectInfo};

use slop_context::{Admitted, ClientAddr, Delivery, DeliveryStream, Notifications, SESSION_COOKIE};

use crate::{
    Bridge,
    error::{ApiError, reason, retry_after_seconds, status_response},
};

mod encoded;
mod frames;
mod subscriptions;
mod wakes;

use encoded::EncodedEvents;

use frames::{BadFrame, ClientFrame, ServerFrame};
use subscriptions::{Produced, Subscriptions};
use wakes::{Source, Wakes};

/// The largest message a client may send; a larger one closes the socket
/// with 1009 (message too big).
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// The largest single frame read whole before it is refused. A message over
/// [`MAX_CLIENT_FRAME`] in a frame up to this size is read to its end, so
/// the connection is still in step and the 1009 close reaches the client; a
/// larger frame is refused on its header, and its unread bytes end the
/// connection at once.
const MAX_READ_FRAME: usize = 1024 * 1024;

/// How long a socket opened without credentials has to send its `auth`
/// frame (the default of [`Bridge::ws_auth_timeout`]).
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The most `Subscribe` calls one socket may have open, the automatic one
/// included; each may follow many channels.
pub const MAX_SUBSCRIPTIONS: usize = 32;

/// The socket's read buffer, allocated up front: small, because most
/// sockets are idle (4 KiB cost each idle socket about 3 KiB more RSS than
/// this). An auth frame fits; a larger frame grows it while it is read.
const READ_BUFFER: usize = 1024;

/// The most a socket may have written but not yet sent. Each frame is
/// written out before the next is taken, so this only bounds one frame (an
/// event is at most 64 KiB of payload, more once escaped as JSON) and the
/// control frames around it.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// How long a closing socket waits for the client's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The close codes of the protocol: 4000 plus the HTTP status that means
/// the same, and the standard codes the adapter uses.
pub mod close {
    /// Not signed in: no valid `auth` frame in time, a frame other than
    /// `auth` first, or credentials that were refused.
    pub const UNAUTHENTICATED: u16 = 4401;
    /// The credentials may not do what the socket needed.
    pub const PERMISSION_DENIED: u16 = 4403;
    /// The socket read too slowly and a subscription's queue overflowed;
    /// reconnect and resume from the last offsets seen.
    pub const SLOW_CONSUMER: u16 = 4408;
    /// The session ended (logout, revocation, expiry): sign in again.
    pub const SESSION_ENDED: u16 = 4410;
    /// Too many new connections: wait the time in the close reason (and the
    /// error frame's `RetryInfo`) before reconnecting.
    pub const RATE_LIMITED: u16 = 4429;
    /// The server is shutting down (or the stream went away): reconnect
    /// with back-off and jitter, and resume.
    pub const GOING_AWAY: u16 = 1001;
    /// The client sent a binary frame.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// The client sent a frame over [`super::MAX_CLIENT_FRAME`].
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server failed; reconnect with back-off.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// A dependency of the server is unavailable; reconnect with back-off.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// The state of the WebSocket route: the bridge, the notification service
/// that subscriptions call, and the JSON of recent events.
pub struct Sockets {
    bridge: Bridge,
    notifications: Notifications,
    encoded: EncodedEvents,
}

impl Sockets {
    /// The state for `bridge`, calling `notifications` for subscriptions.
    pub fn new(bridge: Bridge, notifications: Notifications) -> Self {
        Self {
            bridge,
            notifications,
            encoded: EncodedEvents::default(),
        }
    }
}

/// `GET /api/v1/ws`: upgrades to a WebSocket (HTTP/1.1 Upgrade, or an
/// RFC 8441 extended CONNECT over HTTP/2).
pub async fn upgrade(
    State(sockets): State<Arc<Sockets>>,
    headers: http::HeaderMap,
    extensions: http::Extensions,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let http = rejection.status();
            let status = Status::new(
                Code::FailedPrecondition,
                format!(
                    "/api/v1/ws is a WebSocket endpoint: {}",
                    rejection.body_text()
                ),
            );
            return status_response(http, &status);
        }
    };
    let bridge = &sockets.bridge;
    if bridge.shutdown.is_cancelled() {
        return ApiError(Status::unavailable(
            "the server is shutting down; connect to another instance",
        ))
        .into_response();
    }
    let peer = Peer::of(&extensions);
    if let Err(status) = bridge.gate.admit(peer.ip(), None).await {
        return ApiError(status).into_response();
    }
    let credentials = Credentials::from_headers(&headers);
    let identity = if credentials.is_empty() {
        None
    } else {
        let identity = match signed_in(bridge, &credentials, &peer).await {
            Ok(identity) => identity,
            Err(status) => return ApiError(status).into_response(),
        };
        if let Err(status) = bridge.gate.admit(None, Some(&identity.user_id)).await {
            return ApiError(status).into_response();
        }
        Some(identity)
    };
    let connection = Connection {
        sockets: sockets.clone(),
        credentials,
        peer,
        identity,
        subscriptions: Subscriptions::default(),
    };
    // Held for the socket's whole life, so shutdown can wait for it to close.
    let open = bridge.connections.token();
    upgrade
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_READ_FRAME)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_failed_upgrade(|error| tracing::debug!(%error, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| async move {
            connection.serve(socket).await;
            drop(open);
        })
        .into_response()
}

/// Where the socket's client is: the connection information of the upgrade
/// request (and the address a trusted proxy forwarded), carried over to
/// every call made for the socket.
#[derive(Clone, Default)]
struct Peer {
    tcp: Option<TcpConnectInfo>,
    addr: Option<ConnectInfo<SocketAddr>>,
    forwarded: Option<ClientAddr>,
}

impl Peer {
    fn of(extensions: &http::Extensions) -> Self {
        Self {
            tcp: extensions.get::<TcpConnectInfo>().cloned(),
            addr: extensions.get::<ConnectInfo<SocketAddr>>().cloned(),
            forwarded: extensions.get::<ClientAddr>().copied(),
        }
    }

    fn ip(&self) -> Option<std::net::IpAddr> {
        ClientAddr::ip(self.forwarded.as_ref(), self.tcp.as_ref())
            .or(self.addr.map(|ConnectInfo(addr)| addr.ip().to_canonical()))
    }

    /// The extensions of a call made for the socket.
    fn extensions(&self, admitted: bool) -> http::Extensions {
        let mut extensions = http::Extensions::new();
        if let Some(tcp) = &self.tcp {
            extensions.insert(tcp.clone());
        }
        if let Some(addr) = self.addr {
            extensions.insert(addr);
        }
        if let Some(forwarded) = self.forwarded {
            extensions.insert(forwarded);
        }
        if admitted {
            extensions.insert(Admitted);
        }
        extensions
    }
}

/// The socket's credentials: the `authorization` header (of the upgrade or
/// an `auth` frame) and the session cookie; nothing else of the upgrade
/// request is kept.
#[derive(Clone, Default)]
struct Credentials {
    authorization: Option<HeaderValue>,
    session_cookie: Option<HeaderValue>,
}

impl Credentials {
    fn from_headers(headers: &http::HeaderMap) -> Self {
        let cookies = headers.get_all(http::header::COOKIE);
        let session_cookie = slop_context::cookie(
            cookies.iter().filter_map(|value| value.to_str().ok()),
            SESSION_COOKIE,
        )
        .and_then(|value| HeaderValue::from_str(&format!("{SESSION_COOKIE}={value}")).ok());
        // A copy, not a clone: a clone shares the bytes of the connection's
        // read buffer, which the socket would then hold for its whole life.
        let authorization = headers.get(http::header::AUTHORIZATION).and_then(|value| {
            let mut copy = HeaderValue::from_bytes(value.as_bytes()).ok()?;
            copy.set_sensitive(true);
            Some(copy)
        });
        Self {
            authorization,
            session_cookie,
        }
    }

    /// An access token sent in an `auth` frame; None if it cannot be a
    /// header value.
    fn bearer(token: &str) -> Option<Self> {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
        value.set_sensitive(true);
        Some(Self {
            authorization: Some(value),
            session_cookie: None,
        })
    }

    fn is_empty(&self) -> bool {
        self.authorization.is_none() && self.session_cookie.is_none()
    }

    fn metadata(&self) -> MetadataMap {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = &self.authorization {
            headers.insert(http::header::AUTHORIZATION, value.clone());
        }
        if let Some(value) = &self.session_cookie {
            headers.insert(http::header::COOKIE, value.clone());
        }
        MetadataMap::from_headers(headers)
    }
}

/// Who signed the socket in.
#[derive(Debug, Clone)]
struct SignedIn {
    user_id: String,
    session_id: String,
}

impl SignedIn {
    fn own_channel(&self) -> String {
        format!("user:{}", self.user_id)
    }
}

/// Authenticates credentials the way every other call is: the session
/// service answers for "the session of these credentials". (A cookie is not
/// sent cross-site by browsers, being SameSite=Lax, so another site cannot
/// open a socket in a user's name.)
async fn signed_in(
    bridge: &Bridge,
    credentials: &Credentials,
    peer: &Peer,
) -> Result<SignedIn, Status> {
    let request = tonic::Request::from_parts(
        credentials.metadata(),
        peer.extensions(false),
        slop_api::session::GetSessionRequest {
            session_id: "current".into(),
        },
    );
    let session = bridge
        .sessions
        .get_session(request)
        .await?
        .into_inner()
        .session
        .ok_or_else(|| Status::internal("the session service answered without a session"))?;
    Ok(SignedIn {
        user_id: session.user_id,
        session_id: session.id,
    })
}

/// Why the server ends a socket.
enum Ending {
    /// The client went away or stopped reading.
    ClientGone,
    /// The client sent a close frame, which the WebSocket layer answers.
    ClientClosed,
    /// The server closes it with this code and reason.
    Close(u16, String),
}

impl Ending {
    fn close(code: u16, reason: &str) -> Self {
        Self::Close(code, reason.to_owned())
    }
}

/// The close code of an error that ends a socket, by its reason (of the
/// contract, `slop.errors.v1.ErrorReason`) where one has its own code, else
/// by its gRPC code. docs/errors.md lists the code of every reason; a test
/// holds it to this function.
pub fn close_code(code: Code, reason: Option<ErrorReason>, shutting_down: bool) -> u16 {
    match (reason, code) {
        (Some(ErrorReason::SessionEnded), _) => close::SESSION_ENDED,
        (Some(ErrorReason::SlowConsumer), _) => close::SLOW_CONSUMER,
        (_, Code::Unauthenticated) => close::UNAUTHENTICATED,
        (_, Code::PermissionDenied) => close::PERMISSION_DENIED,
        (_, Code::ResourceExhausted) => close::RATE_LIMITED,
        (_, Code::Unavailable) if shutting_down => close::GOING_AWAY,
        (_, Code::Unavailable) => close::TRY_AGAIN_LATER,
        _ => close::INTERNAL_ERROR,
    }
}

/// The close code and reason for a status that ends a socket.
fn close_for(status: &Status, shutting_down: bool) -> Ending {
    let code = close_code(status.code(), reason(status), shutting_down);
    let why = match code {
        close::SESSION_ENDED => "session ended",
        close::SLOW_CONSUMER => "slow consumer",
        close::UNAUTHENTICATED => "unauthenticated",
        close::PERMISSION_DENIED => "permission denied",
        close::RATE_LIMITED => {
            return Ending::Close(
                code,
                match retry_after_seconds(status) {
                    Some(seconds) => format!("rate limited; retry in {seconds} s"),
                    None => "rate limited".to_owned(),
                },
            );
        }
        close::GOING_AWAY => "server shutting down",
        close::TRY_AGAIN_LATER => "unavailable; try again later",
        _ => "internal error",
    };
    Ending::close(code, why)
}

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
struct Connection {
    sockets: Arc<Sockets>,
    credentials: Credentials,
    peer: Peer,
    identity: Option<SignedIn>,
    subscriptions: Subscriptions,
}

impl Connection {
    async fn serve(mut self, mut socket: WebSocket) {
        tracing::debug!(
            user_id = self.identity.as_ref().map(|i| i.user_id.as_str()),
            "WebSocket opened"
        );
        // Signing in and subscribing are boxed: they happen once or rarely,
        // and inline they would grow every idle socket's task by their size.
        let ending = match Box::pin(self.start(&mut socket)).await {
            Ok(()) => self.run(&mut socket).await,
            Err(ending) => ending,
        };
        self.subscriptions = Subscriptions::default();
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
        tracing::debug!("WebSocket closed");
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
        let auth_deadline = tokio::time::sleep(bridge.ws_auth_timeout);
        tokio::pin!(auth_deadline);
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
                        && auth_deadline.as_mut().poll(&mut timers).is_ready()
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
                    return Err(close_for(&status, bridge.shutdown.is_cancelled()));
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
        let ending = close_for(status, self.sockets.bridge.shutdown.is_cancelled());
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
        let own = self.call_subscribe(request).await;
        self.welcome(socket).await?;
        match own {
            Ok(stream) => {
                self.subscriptions.insert(None, stream);
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
            .call_subscribe(SubscribeRequest { subscriptions })
            .await
        {
            Ok(stream) => {
                if replaces_own {
                    self.subscriptions.remove_automatic();
                }
                self.subscriptions.insert(Some(id), stream);
                Ok(())
            }
            Err(status) => self.refused(socket, &status, Some(id)).await,
        }
    }

    async fn call_subscribe(
        &mut self,
        request: SubscribeRequest,
    ) -> Result<DeliveryStream, Status> {
        let request = tonic::Request::from_parts(
            self.credentials.metadata(),
            self.peer.extensions(true),
            request,
        );
        self.sockets.notifications.subscribe_shared(request).await
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
        match close_for(status, self.sockets.bridge.shutdown.is_cancelled()) {
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
                    Some(close_for(&status, shutting_down)),
                )
            }
            None => (
                None,
                Some(Ending::close(close::GOING_AWAY, "subscription ended")),
            ),
        }
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
    let mut send = std::pin::pin!(socket.send(message));
    // Most frames go out at once, with no timer and no watch on shutdown.
    if let Some(sent) = send.as_mut().now_or_never() {
        return sent.map_err(|_| Ending::ClientGone);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_copied_out_of_the_upgrade_request() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        headers.insert(
            http::header::COOKIE,
            HeaderValue::from_static("theme=dark; slop_session=s3cret"),
        );
        let credentials = Credentials::from_headers(&headers);
        let authorization = credentials.authorization.as_ref().unwrap();
        assert_eq!(authorization, "Bearer abc");
        assert!(authorization.is_sensitive());
        // Not the request's bytes (in a server, its connection's buffer).
        assert_ne!(
            authorization.as_bytes().as_ptr(),
            headers[http::header::AUTHORIZATION].as_bytes().as_ptr()
        );
        assert_eq!(
            credentials.session_cookie.as_ref().unwrap(),
            &format!("{SESSION_COOKIE}=s3cret")
        );
    }
}
