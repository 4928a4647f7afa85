//! Prometheus metrics: the recorder, the `/metrics` listener of its own
//! (METRICS_ADDR, never the public port), and the middleware that counts
//! and times every request once, whichever door it came through.
//!
//! A request is labelled with its `door` (grpc, grpc-web, rest, sse,
//! websocket), its `route` (the axum route pattern, or the gRPC method; a
//! path no route knows is `unmatched`, never the raw path) and its `code`
//! (the HTTP status, or for gRPC the grpc-status name, read from the head
//! or from the trailers at the end of the body). Labels come from closed
//! sets, and each series' handles are registered once and then looked up,
//! so a request allocates no label.
//!
//! gRPC answers carry their status in trailers, which the grpc-web layer
//! folds into the body: [`GrpcStatus`] sits below that layer, reads the
//! trailers, and leaves the code in a slot the outer middleware
//! ([`RecordRequests`]) reads when the answer's body is done.
//!
//! Every metric is listed in docs/metrics.md.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, OnceLock, RwLock,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{MatchedPath, Request, State},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_body::Frame;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::transport::around::Around;

/// Requests answered, by `door`, `route` and `code` (counter).
pub const REQUESTS: &str = "slop_requests_total";
/// Time to answer, by `door`, `route` and `code` (histogram, seconds): to
/// the response head for HTTP doors, to the end of the call for gRPC (a
/// stream's whole life).
pub const REQUEST_DURATION: &str = "slop_request_duration_seconds";
/// Streams open now, by `door`: grpc and grpc-web (server-streaming
/// calls), sse, websocket (gauge).
pub const OPEN_STREAMS: &str = "slop_open_streams";
/// 1, labelled with the server's `version` (gauge).
pub const BUILD_INFO: &str = "slop_build_info";
/// Seconds since this process started serving (gauge).
pub const UPTIME: &str = "slop_uptime_seconds";

/// The WebSocket adapter's route, and the SSE route: their own doors.
const WEBSOCKET_ROUTE: &str = "/api/v1/ws";
const SSE_ROUTE: &str = "/api/v1/notifications/stream";

/// Histogram buckets (seconds): from a cache-hit REST call (sub-ms) through
/// a password hash (tens of ms) to minutes-long streams.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    300.0,
];

/// How often histograms are folded and idle state dropped when no one
/// scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process's recorder: installed once, shared by every server the
/// process runs (tests start several), and when it started.
static RECORDER: OnceLock<(PrometheusHandle, Instant)> = OnceLock::new();

/// Installs the Prometheus recorder as the process's metrics recorder (the
/// first call; later ones return the same handle), and records the build
/// info. Until this is called every metric is a no-op.
pub fn install() -> PrometheusHandle {
    let (handle, _) = RECORDER.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
            .map(PrometheusBuilder::build_recorder);
        let recorder = match recorder {
            Ok(recorder) => recorder,
            // Only an empty bucket list is refused, and ours is not.
            Err(error) => unreachable!("metric buckets: {error}"),
        };
        let handle = recorder.handle();
        if let Err(error) = metrics::set_global_recorder(recorder) {
            tracing::warn!(%error, "another metrics recorder is installed: /metrics stays empty");
        }
        describe();
        metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        (handle, Instant::now())
    });
    handle.clone()
}

/// The HELP line of every metric (docs/metrics.md says the same).
fn describe() {
    use crate::{identity::accounts::profiles, identity::limits, infra::observe, notifications};
    metrics::describe_counter!(REQUESTS, "Requests answered, by door, route and code.");
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time to answer a request (gRPC: to the end of the call), by door, route and code."
    );
    metrics::describe_gauge!(OPEN_STREAMS, "Streams open now, by door.");
    metrics::describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which build runs."
    );
    metrics::describe_gauge!(
        UPTIME,
        metrics::Unit::Seconds,
        "Seconds since the process started serving."
    );
    metrics::describe_counter!(
        notifications::EVENTS_PUBLISHED,
        "Events appended to channel streams (one per channel)."
    );
    metrics::describe_counter!(
        notifications::hub::EVENTS_DELIVERED,
        "Events handed to subscribers' connections on this instance."
    );
    metrics::describe_counter!(
        notifications::hub::SLOW_CONSUMERS,
        "Subscriptions ended because the reader fell behind its queue bounds."
    );
    metrics::describe_counter!(
        limits::RATE_LIMITED,
        "Events a rate limit refused, by limiter."
    );
    metrics::describe_gauge!(
        observe::PASSWORD_HASH_QUEUE,
        "Password hashes and verifications waiting for a hashing thread."
    );
    metrics::describe_histogram!(
        observe::PASSWORD_HASH_DURATION,
        metrics::Unit::Seconds,
        "Time one argon2 hash or verification took on its thread."
    );
    metrics::describe_histogram!(
        observe::STORE_DURATION,
        metrics::Unit::Seconds,
        "Time of store calls (Redis commands, SQL operations), by store and operation."
    );
    metrics::describe_counter!(
        observe::STORE_ERRORS,
        "Store calls that failed, by store and operation."
    );
    metrics::describe_counter!(
        profiles::PROFILE_CACHE,
        "Lookups of signed-in users' profiles in the in-process cache, by result (hit, miss)."
    );
}

/// Serves `GET /metrics` from `handle` on `listener` until `stop` is
/// cancelled, folding histograms every few seconds meanwhile.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, stop: CancellationToken) {
    let upkeep = {
        let handle = handle.clone();
        let stop = stop.clone();
        async move {
            let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => handle.run_upkeep(),
                }
            }
        }
    };
    let app = Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(handle);
    let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
    let (served, ()) = tokio::join!(served, upkeep);
    if let Err(error) = served {
        tracing::error!(%error, "metrics listener failed");
    }
}

async fn scrape(State(handle): State<PrometheusHandle>) -> Response {
    if let Some((_, started)) = RECORDER.get() {
        metrics::gauge!(UPTIME).set(started.elapsed().as_secs_f64());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// Binds METRICS_ADDR.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The front door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Door {
    /// Native gRPC over HTTP/2.
    Grpc,
    /// grpc-web, from browsers.
    GrpcWeb,
    /// JSON under /api/v1, health, and anything else over plain HTTP.
    Rest,
    /// Server-Sent Events.
    Sse,
    /// The WebSocket adapter.
    WebSocket,
}

impl Door {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::GrpcWeb => "grpc-web",
            Self::Rest => "rest",
            Self::Sse => "sse",
            Self::WebSocket => "websocket",
        }
    }

    /// The door of a request with these headers and this matched route.
    pub fn of(headers: &HeaderMap, route: Option<&str>) -> Self {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .map(|value| value.as_bytes())
            .unwrap_or_default();
        if content_type.starts_with(b"application/grpc-web") {
            Self::GrpcWeb
        } else if content_type.starts_with(b"application/grpc") {
            Self::Grpc
        } else if route == Some(WEBSOCKET_ROUTE) {
            Self::WebSocket
        } else if route == Some(SSE_ROUTE) {
            Self::Sse
        } else {
            Self::Rest
        }
    }

    fn is_grpc(self) -> bool {
        matches!(self, Self::Grpc | Self::GrpcWeb)
    }
}

/// A route label: the axum route pattern, a known gRPC method, or
/// `unmatched`.
#[derive(Debug, Clone)]
enum Route {
    Unmatched,
    Matched(MatchedPath),
    Method(Arc<str>),
}

impl Route {
    fn as_str(&self) -> &str {
        match self {
            Self::Unmatched => "unmatched",
            Self::Matched(path) => path.as_str(),
            Self::Method(method) => method,
        }
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

/// A `code` label: an HTTP status, or a gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Code {
    Http(u16),
    Grpc(u8),
}

/// The names of the gRPC status codes, by number.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CANCELLED: u8 = 1;
const GRPC_UNKNOWN: u8 = 2;

impl Code {
    fn label(self) -> String {
        match self {
            Self::Http(status) => status.to_string(),
            Self::Grpc(code) => GRPC_CODES
                .get(usize::from(code))
                .copied()
                .unwrap_or("UNKNOWN")
                .to_owned(),
        }
    }
}

/// The grpc-status a head or trailers carry; a value that is no code is
/// UNKNOWN, as clients read it.
fn grpc_code(headers: &HeaderMap) -> Option<u8> {
    let value = headers.get("grpc-status")?;
    Some(
        std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|text| text.parse::<u8>().ok())
            .filter(|code| usize::from(*code) < GRPC_CODES.len())
            .unwrap_or(GRPC_UNKNOWN),
    )
}

/// One series' handles.
#[derive(Clone)]
struct Handles {
    requests: Counter,
    duration: Histogram,
}

/// The state of [`record`]: which paths are gRPC methods (and which of
/// them stream), and the handles of every series seen so far.
pub struct RequestMetrics {
    methods: HashMap<Box<str>, Arc<str>>,
    streaming: HashSet<Box<str>>,
    series: RwLock<HashMap<(Door, Route, Code), Handles>>,
}

impl RequestMetrics {
    /// The gRPC methods of the encoded descriptor sets are the method
    /// labels; every other gRPC path is `unmatched`.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        let mut methods = HashMap::new();
        let mut streaming = HashSet::new();
        for (path, method) in crate::transport::grpc_methods::methods(sets)? {
            if method.server_streaming() {
                streaming.insert(path.clone().into_boxed_str());
            }
            let label: Arc<str> = path.as_str().into();
            methods.insert(path.into_boxed_str(), label);
        }
        Ok(Self {
            methods,
            streaming,
            series: RwLock::default(),
        })
    }

    fn route(&self, door: Door, path: &str, matched: Option<&MatchedPath>) -> Route {
        if door.is_grpc() {
            return self
                .methods
                .get(path)
                .map_or(Route::Unmatched, |method| Route::Method(method.clone()));
        }
        matched.map_or(Route::Unmatched, |matched| Route::Matched(matched.clone()))
    }

    fn handles(&self, door: Door, route: &Route, code: Code) -> Handles {
        let key = (door, route.clone(), code);
        if let Some(handles) = self
            .series
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return handles.clone();
        }
        let mut series = self
            .series
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        series
            .entry(key)
            .or_insert_with(|| {
                let labels = [
                    ("door", door.as_str().to_owned()),
                    ("route", route.as_str().to_owned()),
                    ("code", code.label()),
                ];
                Handles {
                    requests: metrics::counter!(REQUESTS, &labels),
                    duration: metrics::histogram!(REQUEST_DURATION, &labels),
                }
            })
            .clone()
    }

    fn observe(&self, door: Door, route: &Route, code: Code, started: Instant) {
        let handles = self.handles(door, route, code);
        handles.requests.increment(1);
        handles.duration.record(started.elapsed().as_secs_f64());
    }
}

/// Middleware: counts and times every request by door, route and code.
#[derive(Clone)]
pub struct RecordRequests(pub Arc<RequestMetrics>);

/// [`RecordRequests`] when requests are measured (METRICS_ADDR is not
/// `off`), nothing otherwise.
#[derive(Clone)]
pub struct MaybeRecord(pub Option<RecordRequests>);

impl Around for MaybeRecord {
    type State = Option<<RecordRequests as Around>::State>;

    fn before(&self, request: &mut Request) -> Self::State {
        self.0.as_ref().map(|record| record.before(request))
    }

    fn after(&self, state: Self::State, response: Response) -> Response {
        match (&self.0, state) {
            (Some(record), Some(state)) => record.after(state, response),
            _ => response,
        }
    }
}

/// What [`RecordRequests`] knows of a request before its response.
pub struct Recording {
    door: Door,
    route: Route,
    started: Instant,
    /// gRPC: where the call's status is left, and whether the method streams.
    grpc: Option<(GrpcOutcome, bool)>,
}

impl Around for RecordRequests {
    type State = Recording;

    fn before(&self, request: &mut Request) -> Recording {
        let started = Instant::now();
        let matched = request.extensions().get::<MatchedPath>();
        let door = Door::of(request.headers(), matched.map(MatchedPath::as_str));
        let route = self.0.route(door, request.uri().path(), matched);
        let grpc = door.is_grpc().then(|| {
            let outcome = GrpcOutcome::unset();
            request.extensions_mut().insert(outcome.clone());
            (outcome, self.0.streaming.contains(request.uri().path()))
        });
        Recording {
            door,
            route,
            started,
            grpc,
        }
    }

    fn after(&self, recording: Recording, response: Response) -> Response {
        let Recording {
            door,
            route,
            started,
            grpc,
        } = recording;
        let metrics = &self.0;
        let Some((outcome, streaming)) = grpc else {
            let code = Code::Http(response.status().as_u16());
            metrics.observe(door, &route, code, started);
            if door == Door::Sse && response.status() == StatusCode::OK {
                let open = OpenStream::new(door);
                return response
                    .map(|body| Body::new(Watched::new(body, Ending::Stream { _open: open })));
            }
            return response;
        };
        // Trailers-only (an error before any message): the status is in the head.
        if let Some(code) = grpc_code(response.headers()) {
            metrics.observe(door, &route, Code::Grpc(code), started);
            return response;
        }
        let pending = PendingCall {
            metrics: metrics.clone(),
            door,
            route,
            started,
            outcome,
            http: response.status(),
            _open: (streaming && response.status() == StatusCode::OK)
                .then(|| OpenStream::new(door)),
        };
        response.map(|body| Body::new(Watched::new(body, Ending::Call { _pending: pending })))
    }
}

/// Middleware for the gRPC services, below the grpc-web layer: hands the
/// grpc-status of the trailers (or of a trailers-only head) to
/// [`RecordRequests`].
#[derive(Clone, Copy)]
pub struct GrpcStatus;

impl Around for GrpcStatus {
    type State = Option<GrpcOutcome>;

    fn before(&self, request: &mut Request) -> Option<GrpcOutcome> {
        request.extensions().get::<GrpcOutcome>().cloned()
    }

    fn after(&self, outcome: Option<GrpcOutcome>, response: Response) -> Response {
        let Some(outcome) = outcome else {
            return response;
        };
        if let Some(code) = grpc_code(response.headers()) {
            outcome.set(code);
            return response;
        }
        response.map(|body| Body::new(Watched::new(body, Ending::Trailers(outcome))))
    }
}

/// Where the grpc-status of a call is left for [`RecordRequests`].
#[derive(Clone)]
pub struct GrpcOutcome(Arc<AtomicU8>);

impl GrpcOutcome {
    const UNSET: u8 = u8::MAX;

    fn unset() -> Self {
        Self(Arc::new(AtomicU8::new(Self::UNSET)))
    }

    fn set(&self, code: u8) {
        self.0.store(code, Ordering::Relaxed);
    }

    fn get(&self) -> Option<u8> {
        match self.0.load(Ordering::Relaxed) {
            Self::UNSET => None,
            code => Some(code),
        }
    }
}

/// A stream counted in [`OPEN_STREAMS`] while this lives.
struct OpenStream(Door);

impl OpenStream {
    fn new(door: Door) -> Self {
        metrics::gauge!(OPEN_STREAMS, "door" => door.as_str()).increment(1.0);
        Self(door)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!(OPEN_STREAMS, "door" => self.0.as_str()).decrement(1.0);
    }
}

/// A gRPC call whose status is not known until its body ends.
struct PendingCall {
    metrics: Arc<RequestMetrics>,
    door: Door,
    route: Route,
    started: Instant,
    outcome: GrpcOutcome,
    http: StatusCode,
    _open: Option<OpenStream>,
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        let code = match self.outcome.get() {
            Some(code) => Code::Grpc(code),
            // No gRPC answer at all (a proxy's or a refusal's HTTP error).
            None if self.http != StatusCode::OK => Code::Http(self.http.as_u16()),
            // The body was dropped before its trailers: the client left.
            None => Code::Grpc(CANCELLED),
        };
        self.metrics
            .observe(self.door, &self.route, code, self.started);
    }
}

/// What a watched body does as it ends.
enum Ending {
    /// Records the call when dropped.
    Call { _pending: PendingCall },
    /// Keeps the stream counted while the body lives.
    Stream { _open: OpenStream },
    /// Reads the grpc-status of the trailers into the slot.
    Trailers(GrpcOutcome),
}

pin_project_lite::pin_project! {
    /// A response body, unchanged, with an [`Ending`] riding along.
    struct Watched {
        #[pin]
        body: Body,
        ending: Ending,
    }
}

impl Watched {
    fn new(body: Body, ending: Ending) -> Self {
        Self { body, ending }
    }
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let frame = this.body.poll_frame(cx);
        if let (Ending::Trailers(outcome), Poll::Ready(Some(Ok(frame)))) = (&*this.ending, &frame)
            && let Some(trailers) = frame.trailers_ref()
            && let Some(code) = grpc_code(trailers)
        {
            outcome.set(code);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        headers
    }

    #[test]
    fn the_door_is_told_by_content_type_then_route() {
        let none = HeaderMap::new();
        assert_eq!(Door::of(&headers("application/grpc"), None), Door::Grpc);
        assert_eq!(
            Door::of(&headers("application/grpc+proto"), None),
            Door::Grpc
        );
        for web in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
        ] {
            assert_eq!(Door::of(&headers(web), None), Door::GrpcWeb, "{web}");
        }
        assert_eq!(Door::of(&none, Some("/api/v1/ws")), Door::WebSocket);
        assert_eq!(
            Door::of(&none, Some("/api/v1/notifications/stream")),
            Door::Sse
        );
        assert_eq!(
            Door::of(&headers("application/json"), Some("/api/v1/auth/login")),
            Door::Rest
        );
        assert_eq!(Door::of(&none, Some("/health")), Door::Rest);
        assert_eq!(Door::of(&none, None), Door::Rest);
    }

    /// The MatchedPath axum gives a request for `uri` on a router with
    /// only `route` (it has no public constructor).
    fn matched_path(route: &str, uri: &str) -> MatchedPath {
        use tower::ServiceExt as _;
        let seen = Arc::new(std::sync::Mutex::new(None));
        let keep = seen.clone();
        let app = Router::new().route(
            route,
            axum::routing::get(move |path: MatchedPath| async move {
                *keep.lock().unwrap() = Some(path);
            }),
        );
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let response = runtime.block_on(app.oneshot(request)).unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        seen.lock().unwrap().take().expect("the route matched")
    }

    fn request_metrics() -> RequestMetrics {
        RequestMetrics::from_descriptor_sets(&crate::transport::app::DESCRIPTOR_SETS).unwrap()
    }

    #[test]
    fn routes_are_patterns_or_known_methods_never_raw_paths() {
        let metrics = request_metrics();
        let login = "/slop.auth.v1.AuthService/Login";
        assert_eq!(metrics.route(Door::Grpc, login, None).as_str(), login);
        assert_eq!(metrics.route(Door::GrpcWeb, login, None).as_str(), login);
        // A method no service has, even under a real service's prefix.
        for unknown in [
            "/slop.auth.v1.AuthService/Nope",
            "/no.Such/Thing",
            "/slop.auth.v1.AuthService/Login/extra",
        ] {
            assert_eq!(
                metrics.route(Door::Grpc, unknown, None).as_str(),
                "unmatched"
            );
        }
        // No route matched: never the path itself.
        assert_eq!(
            metrics
                .route(Door::Rest, "/wp-admin/secret-123", None)
                .as_str(),
            "unmatched"
        );
        let matched = matched_path(
            "/api/v1/notifications/channels/{channel}",
            "/api/v1/notifications/channels/user:1",
        );
        assert_eq!(
            metrics
                .route(
                    Door::Rest,
                    "/api/v1/notifications/channels/user:1",
                    Some(&matched)
                )
                .as_str(),
            "/api/v1/notifications/channels/{channel}"
        );
        assert!(
            metrics
                .streaming
                .contains("/slop.notification.v1.NotificationService/Subscribe")
        );
        assert!(!metrics.streaming.contains(login));
    }

    #[test]
    fn grpc_codes_are_named_and_bounded() {
        let mut trailers = HeaderMap::new();
        assert_eq!(grpc_code(&trailers), None);
        trailers.insert("grpc-status", "16".parse().unwrap());
        assert_eq!(grpc_code(&trailers), Some(16));
        assert_eq!(Code::Grpc(16).label(), "UNAUTHENTICATED");
        assert_eq!(Code::Grpc(0).label(), "OK");
        for odd in ["17", "-1", "x", "999"] {
            trailers.insert("grpc-status", odd.parse().unwrap());
            assert_eq!(grpc_code(&trailers), Some(GRPC_UNKNOWN), "{odd}");
        }
        assert_eq!(Code::Http(429).label(), "429");
    }
}
