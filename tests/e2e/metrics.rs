//! Prometheus metrics, as Prometheus sees them: every door is driven, then
//! `/metrics` on the metrics listener is scraped and parsed by the
//! reference parser (Python `prometheus_client`, installed into .tools/ by
//! scripts/test.sh), and the counts must have moved.

use std::{net::SocketAddr, path::PathBuf, process::Stdio};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use slop_api::{
    auth::{GetCurrentUserRequest, auth_service_client::AuthServiceClient},
    notification::{
        ChannelSubscription, SubscribeRequest,
        notification_service_client::NotificationServiceClient, subscribe_response::Message,
    },
};
use tonic_health::pb::HealthCheckRequest;

use crate::harness::{
    PATIENCE, TestServer, bearer, eventually, get, grpc_web_call, require_redis, rest, sign_up,
};

/// One sample of a scrape: its name (with `_total`, `_count`, `_bucket`…),
/// labels and value.
#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed by `prometheus_client`.
pub struct Scrape {
    /// The scrape as served.
    pub text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The sum of the samples named `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|sample| {
                sample.name == name
                    && labels.iter().all(|(key, value)| {
                        sample.labels.get(*key).map(String::as_str) == Some(value)
                    })
            })
            .map(|sample| sample.value)
            .sum()
    }
}

/// The parser: every sample of every family, as JSON.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples = [
    {"name": s.name, "labels": s.labels, "value": s.value}
    for family in text_string_to_metric_families(sys.stdin.read())
    for s in family.samples
]
print(json.dumps(samples))
"#;

fn python() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/test.sh`, which installs prometheus_client into .tools/",
        path.display()
    );
    path
}

/// Scrapes `/metrics` at `addr` and parses it with `prometheus_client`.
pub async fn scrape(addr: SocketAddr) -> Scrape {
    let answer = get(&format!("http://{addr}/metrics")).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        answer.headers
    );
    let text = String::from_utf8(answer.body.to_vec()).expect("UTF-8");
    let input = text.clone();
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = std::process::Command::new(python())
            .args(["-c", PARSE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "prometheus_client cannot parse the scrape: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples = serde_json::from_slice(&output.stdout).expect("the parser's JSON");
    Scrape { text, samples }
}

/// An SSE stream of `channel`, read as it comes.
struct Sse {
    body: hyper::body::Incoming,
    seen: String,
}

impl Sse {
    async fn open(server: &TestServer, channel: &str, token: &str) -> Self {
        let request =
            Request::get(server.url(&format!("/api/v1/notifications/stream?channel={channel}")))
                .header("authorization", format!("Bearer {token}"))
                .body(Full::<Bytes>::default())
                .unwrap();
        let response = tokio::time::timeout(
            PATIENCE,
            Client::builder(TokioExecutor::new())
                .build_http()
                .request(request),
        )
        .await
        .expect("SSE answer in time")
        .expect("SSE answer");
        assert_eq!(response.status(), 200);
        Self {
            body: response.into_body(),
            seen: String::new(),
        }
    }

    /// Reads until an SSE message of type `event` has come.
    async fn until(&mut self, event: &str) {
        let marker = format!("event: {event}\n");
        while !self.seen.contains(&marker) {
            let frame = tokio::time::timeout(PATIENCE, self.body.frame())
                .await
                .expect("SSE data in time")
                .expect("the stream goes on")
                .expect("SSE frame");
            if let Ok(data) = frame.into_data() {
                self.seen.push_str(&String::from_utf8_lossy(&data));
            }
        }
        self.seen.clear();
    }
}

#[tokio::test]
async fn every_door_is_counted_and_prometheus_reads_the_scrape() {
    let redis = require_redis().await;
    let server = TestServer::start_with(|config| config.redis_url = Some(redis)).await;
    let metrics = server.metrics_addr.expect("a metrics listener");

    // Never on the public port.
    assert_eq!(get(&server.url("/metrics")).await.status, 404);

    // Native gRPC: register and log in (status in the trailers), and a
    // call refused before any message (status in the head).
    let ada = sign_up(&server, "ada@example.com").await;
    let refused = AuthServiceClient::new(server.channel().await)
        .get_current_user(GetCurrentUserRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    // grpc-web: the status is in the body's trailer frame.
    let health = grpc_web_call(
        &server,
        "/grpc.health.v1.Health/Check",
        &HealthCheckRequest::default(),
    )
    .await;
    assert_eq!(health.grpc_status(), Some(0));
    // REST, and a path no route knows.
    let me = rest(
        &server,
        "GET",
        "/api/v1/auth/me",
        Some(&ada.access_token),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(me.status, 200);
    assert_eq!(get(&server.url("/no/such/path-4242")).await.status, 404);

    // One stream of each kind, open at once.
    let channel = format!("user:{}", ada.user_id);
    let mut grpc_stream = NotificationServiceClient::new(server.channel().await)
        .subscribe(bearer(
            SubscribeRequest {
                subscriptions: vec![ChannelSubscription {
                    channel: channel.clone(),
                    ..Default::default()
                }],
            },
            &ada.access_token,
        ))
        .await
        .expect("subscribe")
        .into_inner();
    let mut sse = Sse::open(&server, &channel, &ada.access_token).await;
    sse.until("subscribed").await;
    let (socket, _bob) = crate::websocket::connect_signed_in(&server, "bob@example.com").await;

    let open = scrape(metrics).await;
    for door in ["grpc", "sse", "websocket"] {
        assert_eq!(
            open.value("slop_open_streams", &[("door", door)]),
            1.0,
            "{door}: {}",
            open.text
        );
    }

    // An event published once reaches both of Ada's streams.
    crate::websocket::publish(&server, &channel, "note").await;
    sse.until("event").await;
    loop {
        let message = tokio::time::timeout(PATIENCE, grpc_stream.message())
            .await
            .expect("a message in time")
            .expect("the stream goes on")
            .expect("a message")
            .message;
        if let Some(Message::Event(_)) = message {
            break;
        }
    }

    // Streams that end leave the gauges; the gRPC stream the client left
    // is counted as CANCELLED.
    drop(grpc_stream);
    drop(sse);
    drop(socket);
    eventually("every stream gauge back to 0", || async {
        let scraped = scrape(metrics).await;
        ["grpc", "sse", "websocket"]
            .iter()
            .all(|door| scraped.value("slop_open_streams", &[("door", door)]) == 0.0)
    })
    .await;

    // Wrong passwords until the login limit answers 429.
    let mut throttled = false;
    for _ in 0..10 {
        let answer = rest(
            &server,
            "POST",
            "/api/v1/auth/login",
            None,
            serde_json::json!({"email": "ada@example.com", "password": "wrong password!"}),
        )
        .await;
        if answer.status == 429 {
            throttled = true;
            break;
        }
        assert_eq!(answer.status, 401);
    }
    assert!(throttled, "no 429 after 10 wrong passwords");

    let scraped = scrape(metrics).await;
    let requests = |door: &str, route: &str, code: &str| {
        scraped.value(
            "slop_requests_total",
            &[("door", door), ("route", route), ("code", code)],
        )
    };
    let text = &scraped.text;
    // Ada, and Bob of the WebSocket.
    assert_eq!(
        requests("grpc", "/slop.auth.v1.AuthService/Register", "OK"),
        2.0,
        "{text}"
    );
    assert!(
        requests("grpc", "/slop.auth.v1.AuthService/Login", "OK") >= 2.0,
        "{text}"
    );
    assert_eq!(
        requests(
            "grpc",
            "/slop.auth.v1.AuthService/GetCurrentUser",
            "UNAUTHENTICATED"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        requests("grpc-web", "/grpc.health.v1.Health/Check", "OK"),
        1.0,
        "{text}"
    );
    assert_eq!(requests("rest", "/api/v1/auth/me", "200"), 1.0, "{text}");
    // /metrics on the public port, and /no/such/path-4242.
    assert_eq!(requests("rest", "unmatched", "404"), 2.0, "{text}");
    assert_eq!(requests("rest", "/api/v1/auth/login", "429"), 1.0, "{text}");
    assert!(
        requests("rest", "/api/v1/auth/login", "401") >= 5.0,
        "{text}"
    );
    assert_eq!(
        requests("sse", "/api/v1/notifications/stream", "200"),
        1.0,
        "{text}"
    );
    assert_eq!(requests("websocket", "/api/v1/ws", "101"), 1.0, "{text}");
    eventually("the left gRPC stream counted as CANCELLED", || async {
        scrape(metrics).await.value(
            "slop_requests_total",
            &[
                ("door", "grpc"),
                (
                    "route",
                    "/slop.notification.v1.NotificationService/Subscribe",
                ),
                ("code", "CANCELLED"),
            ],
        ) == 1.0
    })
    .await;
    // Every request counted is timed in the same series.
    assert_eq!(
        scraped.value(
            "slop_request_duration_seconds_count",
            &[
                ("door", "rest"),
                ("route", "/api/v1/auth/me"),
                ("code", "200")
            ],
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        scraped.value(
            "slop_request_duration_seconds_bucket",
            &[
                ("door", "rest"),
                ("route", "/api/v1/auth/me"),
                ("code", "200"),
                ("le", "+Inf")
            ],
        ),
        1.0,
        "{text}"
    );
    // No raw path, address or email ever becomes a label.
    for private in ["path-4242", "ada@example.com", "127.0.0.1"] {
        assert!(!text.contains(private), "{private} in the scrape: {text}");
    }

    assert!(
        scraped.value("slop_events_published_total", &[]) >= 1.0,
        "{text}"
    );
    assert!(
        scraped.value("slop_events_delivered_total", &[]) >= 2.0,
        "{text}"
    );
    assert!(
        scraped.value("slop_rate_limited_total", &[("limiter", "login_failures")]) >= 1.0,
        "{text}"
    );
    assert!(
        scraped.value("slop_password_hash_duration_seconds_count", &[]) >= 4.0,
        "{text}"
    );
    assert_eq!(
        scraped.value("slop_password_hash_queue_depth", &[]),
        0.0,
        "{text}"
    );
    for store in ["redis", "sqlite"] {
        assert!(
            scraped.value("slop_store_duration_seconds_count", &[("store", store)]) >= 1.0,
            "{store}: {text}"
        );
    }
    assert!(
        scraped.value(
            "slop_store_duration_seconds_count",
            &[("store", "sqlite"), ("operation", "account_by_email")],
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        scraped.value("slop_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0,
        "{text}"
    );
    assert!(scraped.value("slop_uptime_seconds", &[]) > 0.0, "{text}");
}
