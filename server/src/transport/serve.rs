//! The listener: accepts TCP connections, serves HTTP/1.1 and HTTP/2 (h2c
//! prior knowledge, for native gRPC) on each, and shuts down gracefully.
//!
//! We run our own accept loop over hyper-util rather than `axum::serve` to
//! set what long-lived gRPC streams and WebSockets need: TCP_NODELAY,
//! HTTP/2 keep-alive pings (a dead peer is noticed), the extended CONNECT
//! protocol (WebSocket over HTTP/2), and a drain that is bounded in time;
//! and what outside clients must not be able to do: keep a connection open
//! with no request in flight past HTTP_IDLE_TIMEOUT (see
//! [`crate::transport::connections`] for what counts as idle), take longer than
//! HTTP_BODY_TIMEOUT to send a request body ([`crate::transport::request_body`]), open
//! more connections than HTTP_MAX_CONNECTIONS(_PER_IP) allow (idle ones
//! make room; [`crate::transport::refusal`] answers the others), or take the server
//! offline by exhausting its file descriptors: it closes idle connections
//! to get some back, answers one waiting client from a reserve, and backs
//! off ([`crate::transport::fd_limit`]), so `/health/live` still answers.
//!
//! Shutdown, in order: readiness turns NOT_SERVING; the listener is closed
//! (new connections are refused); open streams and WebSockets are told to
//! end; for [`DRAIN_GRACE`] the open connections are still served, HTTP/1
//! answers carrying `connection: close`; then every connection finishes its
//! in-flight requests and closes. What is still open when SHUTDOWN_TIMEOUT
//! has passed since the signal is cut.
//!
//! The grace is there because hyper's graceful shutdown closes an idle
//! HTTP/1 keep-alive connection at once, even when the client's next
//! request is already in the socket, unread: that request would be lost
//! (HTTP/2 has GOAWAY for this; HTTP/1 has only `connection: close`, as in
//! Envoy's drain). So connections are served a little longer, told to
//! close after each answer, and only then shut down.

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::extract::ConnectInfo;
use hyper::body::{Body as _, Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulConnection},
};
use slop_context::ClientAddr;
use tokio::{net::TcpListener, sync::watch, task::JoinSet, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::server::TcpConnectInfo;

use crate::{
    transport::connections::{
        Caps, Connection, Counted, InFlight, OpenConnections, Refusal, Tracked,
    },
    transport::fd_limit,
    transport::health::Health,
    transport::proxy::TrustedProxies,
    transport::refusal::Refusals,
    transport::request_body::{StreamingRequests, TimedBody},
};

/// How often an HTTP/2 connection is pinged, and how long the answer may take.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long after the signal open connections are still served before
/// hyper's graceful shutdown closes the idle ones (less when
/// SHUTDOWN_TIMEOUT is shorter, none when every connection has closed):
/// long enough for a request a client sent just before the signal to be
/// read. Not a setting: it only needs to cover the trip from client to
/// server.
pub const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// How connections are served.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a connection may stay open with no request in flight
    /// (HTTP_IDLE_TIMEOUT). An HTTP/1 request head must arrive within it.
    pub idle_timeout: Duration,
    /// How long a request body may take to arrive (HTTP_BODY_TIMEOUT).
    pub body_timeout: Duration,
    /// The methods whose requests are streams, exempt from `body_timeout`.
    pub streaming_requests: Arc<StreamingRequests>,
    /// How many connections may be open, in total and per client address.
    pub caps: Caps,
}

/// What the listener needs to shut down.
pub struct Drain {
    /// Readiness, turned NOT_SERVING first.
    pub health: Arc<Health>,
    /// Cancelled to end open streams and WebSockets.
    pub stop: CancellationToken,
    /// Open WebSockets (upgraded connections leave hyper's tracking).
    pub websockets: TaskTracker,
    /// How long the drain may take from the signal on.
    pub timeout: Duration,
}

/// Serves `app` on `listener` until `signal` resolves, then drains. A
/// request from one of `proxies` carries the client's address it forwarded
/// as a [`ClientAddr`].
pub async fn serve(
    listener: TcpListener,
    app: crate::transport::native_grpc::App,
    proxies: TrustedProxies,
    settings: Settings,
    signal: impl Future<Output = ()> + Send,
    drain: Drain,
) {
    let proxies = Arc::new(proxies);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own timer for the head runs from the end of the previous
    // answer, so it is the HTTP/1 idle timeout too: the same setting.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.idle_timeout);
    configure_http2(&mut builder.http2());

    // Tells every connection to finish its requests and close.
    let (close_all, closing) = watch::channel(false);
    let mut connections = JoinSet::new();
    let open = OpenConnections::new(settings.caps);
    let refusals = Refusals::new(settings.caps);
    let mut refused = RefusalLog::default();
    let mut reserve = fd_limit::Reserve::new();
    let mut exhausted = RareLog::default();
    let mut accept_errors = RareLog::default();
    let local_addr = listener.local_addr().ok();
    // A flag, not a clone of the stop token: cloning a CancellationToken
    // takes a lock, and this is cloned for every request.
    let draining = Arc::new(AtomicBool::new(false));

    tokio::pin!(signal);
    loop {
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    let backoff = if fd_limit::is_exhaustion(&error) {
                        make_room(&listener, &open, &refusals, &mut reserve, &mut exhausted, &error)
                    } else {
                        accept_errors.note(&error);
                        ACCEPT_BACKOFF
                    };
                    // Wait, do not spin, but stop at once on the signal.
                    tokio::select! {
                        () = &mut signal => break,
                        () = tokio::time::sleep(backoff) => continue,
                    }
                }
            },
        };
        let place = match open.admit(peer.ip()) {
            Ok(place) => place,
            Err(why) => {
                refused.note(why, peer, &open);
                refusals.refuse(stream, why);
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        // hyper calls the service through a shared reference; the app is
        // called in place (`App::answer`), borrowed only for that call.
        let app = std::cell::RefCell::new(app.clone());
        let proxies = proxies.clone();
        let draining = draining.clone();
        let connection = place.connection().clone();
        let requests = connection.clone();
        let streaming_requests = settings.streaming_requests.clone();
        let body_timeout = settings.body_timeout;
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let in_flight = InFlight::begin(&requests);
            let timeout = (!request.body().is_end_stream()
                && !streaming_requests.contains(request.uri().path()))
            .then_some(body_timeout);
            let mut request = request.map(|body| TimedBody::new(body, timeout));
            if let Some(client) = proxies.forwarded_client(peer.ip(), request.headers()) {
                request.extensions_mut().insert(ClientAddr(client));
            }
            let extensions = request.extensions_mut();
            extensions.insert(ConnectInfo(peer));
            extensions.insert(TcpConnectInfo {
                local_addr,
                remote_addr: Some(peer),
            });
            let http1 = request.version() < http::Version::HTTP_2;
            let answer = app.borrow_mut().answer(request);
            let draining = draining.clone();
            async move {
                let mut response = answer.await.unwrap_or_else(|never| match never {});
                // Shutting down: the client must not send another request
                // on this connection. (An upgrade's 101 keeps its own
                // `connection: upgrade`.)
                if http1 && draining.load(Ordering::Relaxed) {
                    response
                        .headers_mut()
                        .entry(http::header::CONNECTION)
                        .or_insert(http::HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
            }
        });
        let served = builder
            .serve_connection_with_upgrades(TokioIo::new(Counted::new(stream, place)), service)
            .into_owned();
        connections.spawn(serve_connection(
            served,
            connection,
            settings.idle_timeout,
            closing.clone(),
            peer,
        ));
    }

    let started = Instant::now();
    tracing::info!(
        open_connections = connections.len(),
        timeout_ms = drain.timeout.as_millis() as u64,
        "shutting down"
    );
    drain.health.begin_shutdown().await;
    drop(listener);
    draining.store(true, Ordering::Relaxed);
    drain.stop.cancel();
    drain.websockets.close();

    // A request already on its way is read and answered meanwhile; each
    // HTTP/1 connection closes after its next answer.
    let grace = DRAIN_GRACE.min(drain.timeout.saturating_sub(started.elapsed()));
    let all_closed = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(grace, all_closed).await;

    let drained = async {
        let _ = close_all.send(true);
        while connections.join_next().await.is_some() {}
        drain.websockets.wait().await;
    };
    match tokio::time::timeout(drain.timeout.saturating_sub(started.elapsed()), drained).await {
        Ok(()) => tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shutdown complete"
        ),
        Err(_) => tracing::warn!(
            open_connections = connections.len(),
            open_websockets = drain.websockets.len(),
            "shutdown timeout reached; closing what is still open"
        ),
    }
    connections.shutdown().await;
}

/// Serves one connection until it ends: closes it gracefully (HTTP/1 after
/// the answer in flight, HTTP/2 with GOAWAY) once it has had no request in
/// flight for `idle_timeout`, when it is told to make room for another, or
/// when `closing` says so.
async fn serve_connection<C>(
    served: C,
    connection: Arc<Connection>,
    idle_timeout: Duration,
    mut closing: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) where
    C: GracefulConnection<Error: std::fmt::Display>,
{
    tokio::pin!(served);
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut closed = false;
    let result = loop {
        tokio::select! {
            result = served.as_mut() => break result,
            _ = closing.changed(), if !closed => {
                served.as_mut().graceful_shutdown();
                closed = true;
            }
            () = connection.told_to_close(), if !closed => {
                tracing::debug!(%peer, "closing an idle connection to make room");
                served.as_mut().graceful_shutdown();
                closed = true;
            }
            () = idle.as_mut(), if !closed => {
                let now = Instant::now();
                match connection.idle_deadline(idle_timeout) {
                    Some(deadline) if deadline <= now => {
                        tracing::debug!(%peer, "closing an idle connection");
                        served.as_mut().graceful_shutdown();
                        closed = true;
                    }
                    Some(deadline) => idle.as_mut().reset(deadline),
                    // Busy: look again a whole timeout later at the earliest.
                    None => idle.as_mut().reset(now + idle_timeout),
                }
            }
        }
    };
    connection.served_no_more();
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// How long the accept loop waits after an accept failed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long it waits after running out of descriptors when idle
/// connections were told to close (they give theirs back at once).
const EXHAUSTION_BACKOFF: Duration = Duration::from_millis(10);
/// How many idle connections are told to close each time the process runs
/// out of descriptors.
const CLOSE_WHEN_EXHAUSTED: usize = 32;

/// Out of file descriptors: tells idle connections to close to get some
/// back, and answers one waiting client with the reserve descriptor (503)
/// so it is not left hanging; answers how long to back off.
fn make_room(
    listener: &TcpListener,
    open: &OpenConnections,
    refusals: &Refusals,
    reserve: &mut fd_limit::Reserve,
    log: &mut RareLog,
    error: &std::io::Error,
) -> Duration {
    let closing = open.close_idle(CLOSE_WHEN_EXHAUSTED);
    reserve.release();
    if let Some(Ok((stream, _))) = futures_util::FutureExt::now_or_never(listener.accept()) {
        refusals.refuse_at_once(stream, Refusal::Total);
    }
    reserve.restore();
    if let Some(unlogged) = log.due() {
        tracing::warn!(
            %error,
            times = unlogged,
            open_connections = open.len(),
            closing_idle = closing,
            "out of file descriptors: closing idle connections and backing off (raise the open files limit, or lower HTTP_MAX_CONNECTIONS)"
        );
    }
    if closing > 0 {
        EXHAUSTION_BACKOFF
    } else {
        ACCEPT_BACKOFF
    }
}

/// How often the same trouble is logged at most: a flood must not become
/// a flood of log lines.
const RARE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Counts occurrences of one trouble and says when one is due to be logged
/// (at most every [`RARE_LOG_INTERVAL`]), with how many since the last.
#[derive(Default)]
struct RareLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RareLog {
    fn due(&mut self) -> Option<u64> {
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < RARE_LOG_INTERVAL)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    fn note(&mut self, error: &std::io::Error) {
        if let Some(times) = self.due() {
            tracing::error!(%error, times, "accept failed");
        }
    }
}

/// Logs refused connections rarely, with how many were refused since.
#[derive(Default)]
struct RefusalLog(RareLog);

impl RefusalLog {
    fn note(&mut self, why: Refusal, peer: std::net::SocketAddr, open: &OpenConnections) {
        let Some(refused) = self.0.due() else {
            return;
        };
        let caps = open.caps();
        let reason = match why {
            Refusal::PerAddress => "its address has HTTP_MAX_CONNECTIONS_PER_IP open",
            Refusal::Total => "HTTP_MAX_CONNECTIONS are open, none idle",
        };
        tracing::warn!(
            %peer,
            refused,
            open_connections = open.len(),
            max_connections = caps.total,
            max_per_ip = caps.per_address,
            "connection refused: {reason}"
        );
    }
}
fn configure_http2(http2: &mut auto::Http2Builder<'_, TokioExecutor>) {
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
        .enable_connect_protocol();
}
