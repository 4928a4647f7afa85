//! Starts the real server in-process on 127.0.0.1:0 and hands out clients:
//! tonic channels (native gRPC), a plain HTTP/1.1 client (REST, health,
//! grpc-web), and WebSocket URLs.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use slop_server::{
    Config,
    infra::{clock::ManualClock, config::MetricsAddr},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::{Channel, Endpoint};

/// How long a test waits for anything that should happen "at once".
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The service key tests call service-only operations with.
pub const SERVICE_KEY: &str = "test-service-key-0123456789abcdefghijklmnop";
/// The JWT secret test servers sign with (so tests can mint tokens too).
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdefghijklmnopq";
/// The application secret of test servers.
pub const APP_SECRET: &str = "test-app-secret-0123456789abcdefghijklmnopq";

/// A running server.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it serves `/metrics` (none with METRICS_ADDR=off).
    pub metrics_addr: Option<SocketAddr>,
    /// Where its mail goes.
    pub outbox: PathBuf,
    /// The clock of its accounts, sessions and tokens: tests move it.
    pub clock: Arc<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), slop_server::Error>>>,
    scratch: PathBuf,
}

/// A directory of its own for one test server, or one test's files.
pub fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("slop-e2e-{}", uuid_like()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The configuration every test server starts from: embedded defaults, an
/// SQLite file and a mail directory of its own, fixed secrets, one service
/// key.
pub fn test_config(scratch: &std::path::Path) -> Config {
    use slop_server::infra::config::{Secret, ServiceKeys};
    let mut config = Config::embedded_defaults();
    config.host = "127.0.0.1".into();
    config.port = 0;
    config.shutdown_timeout = Duration::from_secs(5);
    config.database_url = format!("sqlite:{}", scratch.join("accounts.db").display());
    config.mail_outbox_dir = Some(scratch.join("mail"));
    config.jwt_secret = Some(Secret::from(JWT_SECRET));
    config.app_secret = Some(Secret::from(APP_SECRET));
    config.service_keys = ServiceKeys(vec![("test-service".into(), Secret::from(SERVICE_KEY))]);
    config.redis_key_prefix = format!("slop-e2e:{}:", uuid_like());
    // Not the default 0.0.0.0:9090, which parallel servers would share.
    config.metrics_addr = MetricsAddr::At(([127, 0, 0, 1], 0).into());
    config
}

impl TestServer {
    /// Starts a server with the embedded defaults.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server with the embedded defaults as changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let scratch = scratch_dir();
        let mut config = test_config(&scratch);
        adjust(&mut config);
        let outbox = config.mail_outbox_dir.clone().unwrap_or_default();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        // A metrics port of its own, as METRICS_ADDR=127.0.0.1:0 would give
        // (unless the test turned metrics off).
        let metrics = match config.metrics_addr {
            MetricsAddr::Off => None,
            MetricsAddr::At(_) => Some(
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind 127.0.0.1:0"),
            ),
        };
        let metrics_addr = metrics
            .as_ref()
            .map(|listener| listener.local_addr().expect("local address"));
        let (stop, stopped) = oneshot::channel();
        let clock = ManualClock::starting_now();
        let task = tokio::spawn(slop_server::serve_on(
            config,
            slop_server::Listeners {
                public: listener,
                metrics,
            },
            async move {
                let _ = stopped.await;
            },
            clock.clone(),
        ));
        Self {
            addr,
            metrics_addr,
            outbox,
            clock,
            stop: Some(stop),
            task: Some(task),
            scratch,
        }
    }

    /// The mail the server has sent so far, oldest first.
    pub fn mail(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.outbox) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        paths
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .collect()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A native gRPC (HTTP/2 cleartext) channel.
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.url(""))
            .expect("endpoint")
            .connect_timeout(PATIENCE)
            .connect()
            .await
            .expect("gRPC connect")
    }

    /// Sends the shutdown signal (as SIGTERM does for the binary).
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the server future to complete; panics after `limit`.
    pub async fn stopped_within(&mut self, limit: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        let task = self.task.take().expect("server running");
        tokio::time::timeout(limit, task)
            .await
            .unwrap_or_else(|_| panic!("server still running {limit:?} after the signal"))
            .expect("server task")
            .expect("server result");
        started.elapsed()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends one HTTP/1.1 request and reads the whole answer.
pub async fn http(request: Request<Full<Bytes>>) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response: Response<hyper::body::Incoming> =
        tokio::time::timeout(PATIENCE, client.request(request))
            .await
            .expect("HTTP answer in time")
            .expect("HTTP request");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("HTTP body in time")
        .expect("HTTP body")
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A REST call with optional bearer token and JSON body (none when null).
pub async fn rest(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> Answer {
    rest_with(server, method, path, token, &[], body).await
}

/// [`rest`] with extra headers.
pub async fn rest_with(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: serde_json::Value,
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(server.url(path))
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    http(request.body(Full::from(body)).unwrap()).await
}

/// `GET url`.
pub async fn get(url: &str) -> Answer {
    http(Request::get(url).body(Full::default()).expect("request")).await
}

/// A grpc-web answer, parsed into its message and trailer frames.
pub struct GrpcWebAnswer {
    pub http: StatusCode,
    pub headers: HeaderMap,
    pub messages: Vec<Bytes>,
    pub trailers: HeaderMap,
}

impl GrpcWebAnswer {
    /// The grpc-status, from the trailer frame or (trailers-only) the head.
    pub fn grpc_status(&self) -> Option<i32> {
        self.trailers
            .get("grpc-status")
            .or_else(|| self.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }
}

/// Calls a unary method over grpc-web (binary) on HTTP/1.1, as a browser
/// does.
pub async fn grpc_web_call(
    server: &TestServer,
    path: &str,
    message: &impl prost::Message,
) -> GrpcWebAnswer {
    grpc_web_call_with(server, path, message, &[]).await
}

/// [`grpc_web_call`] with extra headers (credentials).
pub async fn grpc_web_call_with(
    server: &TestServer,
    path: &str,
    message: &impl prost::Message,
    headers: &[(&str, &str)],
) -> GrpcWebAnswer {
    let mut request = Request::post(server.url(path))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", "http://app.example");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(grpc_frame(0, &message.encode_to_vec())))
        .expect("request");
    let answer = http(request).await;
    let (messages, trailers) = parse_grpc_web_body(answer.body.clone());
    GrpcWebAnswer {
        http: answer.status,
        headers: answer.headers,
        messages,
        trailers,
    }
}

/// One gRPC length-prefixed frame.
pub fn grpc_frame(flags: u8, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + payload.len());
    frame.put_u8(flags);
    frame.put_u32(payload.len() as u32);
    frame.put_slice(payload);
    frame.freeze()
}

/// Splits a grpc-web body into message payloads and the trailer frame.
pub fn parse_grpc_web_body(mut body: Bytes) -> (Vec<Bytes>, HeaderMap) {
    let mut messages = Vec::new();
    let mut trailers = HeaderMap::new();
    while body.remaining() >= 5 {
        let flags = body.get_u8();
        let len = body.get_u32() as usize;
        assert!(body.remaining() >= len, "truncated grpc-web frame");
        let payload = body.split_to(len);
        if flags & 0x80 != 0 {
            for line in String::from_utf8_lossy(&payload).split("\r\n") {
                if let Some((name, value)) = line.split_once(':') {
                    trailers.insert(
                        http::HeaderName::from_bytes(name.trim().as_bytes()).expect("trailer name"),
                        value.trim().parse().expect("trailer value"),
                    );
                }
            }
        } else {
            messages.push(payload);
        }
    }
    assert_eq!(body.remaining(), 0, "trailing bytes after grpc-web frames");
    (messages, trailers)
}

/// Polls `check` until it returns true or PATIENCE runs out.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fails with a clear message when Redis is not running, instead of
/// skipping.
pub async fn require_redis() -> String {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let hostport = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_owned();
    if tokio::net::TcpStream::connect(&hostport).await.is_err() {
        panic!(
            "Redis is not reachable at {url}: start it (redis-server --daemonize yes --port 6379) or set REDIS_URL"
        );
    }
    url
}

/// `message` with `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The `ErrorInfo` reason of a status, or "".
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// The password of users made by [`sign_up`].
pub const PASSWORD: &str = "correct horse battery staple";

/// A registered, logged-in user.
pub struct SignedIn {
    /// Their user id.
    pub user_id: String,
    /// An access token of that session.
    pub access_token: String,
}

/// Registers `email` and logs in over gRPC.
pub async fn sign_up(server: &TestServer, email: &str) -> SignedIn {
    use slop_api::auth::{self, auth_service_client::AuthServiceClient};
    let mut client = AuthServiceClient::new(server.channel().await);
    client
        .register(auth::RegisterRequest {
            email: email.into(),
            password: PASSWORD.into(),
            display_name: "Test".into(),
        })
        .await
        .expect("register");
    log_in(server, email).await
}

/// Logs `email` (signed up with [`sign_up`]) in again over gRPC: a new
/// session.
pub async fn log_in(server: &TestServer, email: &str) -> SignedIn {
    use slop_api::auth::{self, auth_service_client::AuthServiceClient};
    let login = AuthServiceClient::new(server.channel().await)
        .login(auth::LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login")
        .into_inner();
    SignedIn {
        user_id: login.user.expect("user").id,
        access_token: login.tokens.expect("tokens").access_token,
    }
}
