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
//! - [`rest`]: the REST routes of accounts and sessions, and what every
//!   REST route shares (a call's metadata, extensions and body).
//! - [`notifications`]: the REST routes of notifications (publish, channel
//!   state, history).
//! - [`openapi`]: `GET /api/v1/openapi.json`, the OpenAPI document of the
//!   REST routes, generated from the contract at build time.
//! - [`sse`]: notification streams as Server-Sent Events, with the resume
//!   position of every channel in each event's id.
//! - [`ws`]: the WebSocket adapter at `/api/v1/ws`: sign-in, keep-alive and
//!   notification subscriptions over JSON frames.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::OriginalUri,
    response::Response,
    routing::{MethodFilter, MethodRouter, any},
};
use slop_context::ConnectionGate;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub mod error;
pub mod notifications;
pub mod openapi;
pub mod rest;
pub mod sse;
pub mod ws;

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

/// The bridge's routes: REST under `/api/v1`, notification streams as
/// Server-Sent Events, the WebSocket adapter, and the OpenAPI document.
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
        .merge(openapi::router())
}

/// A REST operation: an RPC's gRPC path, and its handler for the method
/// its `google.api.http` binding names.
pub(crate) type Operation<S> = (&'static str, fn(MethodFilter) -> MethodRouter<S>);

/// The routes of `operations`: each at the method and path of every
/// binding of its RPC (`slop_api::rest::HTTP_RULES`). The REST routes are
/// made from the annotations, so none exists that no annotation binds;
/// [`rest_operations`] lets a test check that every binding has its
/// operation.
pub(crate) fn bound<S: Clone + Send + Sync + 'static>(operations: &[Operation<S>]) -> Router<S> {
    let mut router = Router::new();
    for rule in slop_api::rest::HTTP_RULES {
        let Some((_, handler)) = operations.iter().find(|(rpc, _)| *rpc == rule.grpc_path) else {
            continue;
        };
        let filter = http::Method::from_bytes(rule.method.as_bytes())
            .ok()
            .and_then(|method| MethodFilter::try_from(method).ok())
            .unwrap_or_else(|| panic!("{rule:?}: not a method axum routes"));
        router = router.route(rule.path, handler(filter));
    }
    router
}

/// The gRPC paths of the RPCs the bridge serves over REST (routed by
/// [`bound`]), from the tables of [`rest`], [`notifications`] and [`sse`].
pub fn rest_operations() -> impl Iterator<Item = &'static str> {
    let rest = rest::OPERATIONS.iter().map(|(rpc, _)| *rpc);
    let notifications = notifications::OPERATIONS.iter().map(|(rpc, _)| *rpc);
    let streams = sse::OPERATIONS.iter().map(|(rpc, _)| *rpc);
    rest.chain(notifications).chain(streams)
}

/// Handler for a known path called with a method it does not take: 405 with
/// the JSON error body.
pub async fn method_not_allowed(method: http::Method, OriginalUri(uri): OriginalUri) -> Response {
    error::method_not_allowed(&method, uri.path())
}
