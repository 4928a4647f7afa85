//! The axum bridge: the same operations as the gRPC services, for clients
//! that speak JSON over HTTP or a WebSocket.
//!
//! It is a thin translator. REST handlers turn canonical proto3 JSON into
//! the proto request, call the very same tonic service method a gRPC client
//! reaches (with the caller's credentials as request metadata), and turn the
//! answer or the `Status` back into JSON. Validation, authorization and
//! business logic live only behind the service traits.
//!
//! Modules:
//! - [`error`]: gRPC status → HTTP status and the AIP-193 error body.
//! - [`json`]: JSON as the canonical proto3 JSON printers write it.
//! - [`rest`]: the REST routes of accounts and sessions, and what every
//!   REST route shares (a call's metadata, extensions and body).
//! - [`notifications`]: the REST routes of notifications (publish, channel
//!   state, history).
//! - [`sse`]: notification streams as Server-Sent Events, with the resume
//!   position of every channel in each event's id.
//! - [`ws`]: the WebSocket adapter at `/api/v1/ws`: sign-in, keep-alive and
//!   notification subscriptions over JSON frames.

use std::{net::IpAddr, pin::Pin, sync::Arc, time::Duration};

use axum::{Router, extract::OriginalUri, response::Response, routing::any};
use futures_util::Stream;
use slop_api::notification::{
    Event, SubscribeRequest, SubscribeResponse, notification_service_server::NotificationService,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::server::TcpConnectInfo;

pub mod error;
pub mod json;
pub mod notifications;
pub mod rest;
pub mod sse;
pub mod ws;

/// The stream a `Subscribe` call answers with. The server's
/// `NotificationService` implementation uses this type as its
/// `SubscribeStream`, so the bridge can hold it as a [`Notifications`].
pub type SubscribeStream =
    Pin<Box<dyn Stream<Item = Result<SubscribeResponse, tonic::Status>> + Send + 'static>>;

/// What a subscription hands the bridge: a message of the `Subscribe`
/// stream, or an event shared with every other subscriber of this instance
/// (the same allocation, so the bridge can encode it once for all of them).
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A message as the `Subscribe` stream has it (boxed: events, the
    /// common case, are a pointer).
    Message(Box<SubscribeResponse>),
    /// An event.
    Event(Arc<Event>),
}

/// The stream [`SharedSubscribe::subscribe_shared`] answers with.
pub type DeliveryStream =
    Pin<Box<dyn Stream<Item = Result<Delivery, tonic::Status>> + Send + 'static>>;

/// `slop.notification.v1.NotificationService` as the bridge calls it, with
/// one more way to call `Subscribe`.
#[tonic::async_trait]
pub trait SharedSubscribe: NotificationService<SubscribeStream = SubscribeStream> {
    /// `Subscribe`, for doors with a keep-alive of their own (the
    /// WebSocket): the same checks and the same messages, except that
    /// events are shared rather than copied per subscriber and no
    /// heartbeats are sent. By default, the `Subscribe` stream as it is.
    async fn subscribe_shared(
        &self,
        request: tonic::Request<SubscribeRequest>,
    ) -> Result<DeliveryStream, tonic::Status> {
        use futures_util::StreamExt as _;
        let stream = self.subscribe(request).await?.into_inner();
        Ok(Box::pin(stream.map(|item| {
            item.map(|message| Delivery::Message(Box::new(message)))
        })))
    }
}

/// The notification service, as the bridge holds it.
pub type Notifications = Arc<dyn SharedSubscribe>;

/// A request extension: the client's address as a trusted reverse proxy
/// forwarded it (the server's `TRUSTED_PROXIES`). Absent, the client is
/// the TCP peer of [`TcpConnectInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// The client's IP address from a request's extensions (http's or
    /// tonic's, both give these two): the forwarded one, else the TCP
    /// peer's; None when the transport has no address.
    pub fn ip(forwarded: Option<&ClientAddr>, tcp: Option<&TcpConnectInfo>) -> Option<IpAddr> {
        forwarded.map(|ClientAddr(ip)| *ip).or_else(|| {
            tcp.and_then(TcpConnectInfo::remote_addr)
                .map(|addr| addr.ip().to_canonical())
        })
    }
}

/// What the bridge needs from the server it runs in.
#[derive(Clone)]
pub struct Bridge {
    /// Authenticates WebSocket upgrades (the session of the credentials).
    pub sessions: Arc<dyn slop_api::session::session_service_server::SessionService>,
    /// Cancelled when the server begins to shut down: open WebSockets close.
    pub shutdown: CancellationToken,
    /// Tracks open WebSockets, so shutdown can wait for them to close.
    pub connections: TaskTracker,
    /// How often the server pings an idle WebSocket.
    pub ws_ping_interval: Duration,
    /// How long a WebSocket opened without credentials has to send its
    /// `auth` frame ([`ws::AUTH_TIMEOUT`] unless configured otherwise).
    pub ws_auth_timeout: Duration,
    /// The connection throttle: every WebSocket is admitted by peer address
    /// at the upgrade and by user once the user is known.
    pub gate: Arc<dyn ConnectionGate>,
}

/// The connection throttle for long-lived connections (notification streams
/// and WebSockets), which the server implements over its rate limiter.
#[tonic::async_trait]
pub trait ConnectionGate: Send + Sync {
    /// Counts one new connection from `peer` and, when known, by `user`;
    /// RESOURCE_EXHAUSTED (with the wait in `RetryInfo`) when either is over
    /// its limit.
    async fn admit(
        &self,
        peer: Option<std::net::IpAddr>,
        user: Option<&str>,
    ) -> Result<(), tonic::Status>;
}

/// A request extension the WebSocket adapter puts on the `Subscribe` calls
/// it makes for a socket it already admitted through the [`ConnectionGate`],
/// so they are not counted as new connections again. Extensions never come
/// from the wire, so clients cannot set it.
#[derive(Debug, Clone, Copy)]
pub struct Admitted;

/// The bridge's routes: REST under `/api/v1`, notification streams as
/// Server-Sent Events, and the WebSocket adapter.
/// It has no fallback of its own: the server decides what an unknown path
/// gets, a gRPC status or a JSON error ([`error::route_not_found`],
/// [`method_not_allowed`]).
pub fn router(bridge: Bridge, services: rest::Services) -> Router {
    let streams = sse::router(services.notifications.clone(), bridge.shutdown.clone());
    let notifications = notifications::router(services.notifications.clone());
    let sockets = ws::Sockets::new(bridge, services.notifications.clone());
    Router::new()
        .route("/api/v1/ws", any(ws::upgrade))
        .with_state(Arc::new(sockets))
        .merge(rest::router(services))
        .merge(notifications)
        .merge(streams)
}

/// Handler for a known path called with a method it does not take: 405 with
/// the JSON error body.
pub async fn method_not_allowed(method: http::Method, OriginalUri(uri): OriginalUri) -> Response {
    error::method_not_allowed(&method, uri.path())
}
