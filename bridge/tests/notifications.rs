//! The REST routes and Server-Sent Events of notifications over a fake
//! service: requests become the proto messages, answers and statuses
//! become JSON, and every SSE event id resumes every channel of its stream.

mod support;

use std::time::Duration;

use axum::body::Body;
use futures_util::StreamExt as _;
use http::{Request, StatusCode, header};
use serde_json::{Value, json};
use slop_api::notification::{Heartbeat, SubscribeResponse, subscribe_response::Message};
use support::{Harness, SERVICE_KEY, peer, status_with_reason};
use tonic::Code;
use tower::ServiceExt as _;

fn get(uri: &str) -> http::request::Builder {
    Request::get(uri)
        .extension(peer())
        .header("authorization", "Bearer token-ada")
}

async fn call(harness: &Harness, request: Request<Body>) -> http::Response<Body> {
    harness.router.clone().oneshot(request).await.unwrap()
}

async fn json_body(response: http::Response<Body>) -> Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// One SSE message: its fields in order.
type SseMessage = Vec<(String, String)>;

/// Reads SSE messages from a body as they come.
struct SseReader {
    body: axum::body::BodyDataStream,
    buffer: String,
}

impl SseReader {
    fn new(response: http::Response<Body>) -> Self {
        Self {
            body: response.into_body().into_data_stream(),
            buffer: String::new(),
        }
    }

    /// The next message, or None when the body ends.
    async fn next(&mut self) -> Option<SseMessage> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let fields = block
                    .lines()
                    .filter(|line| !line.is_empty())
                    .map(|line| {
                        let (name, value) = line.split_once(':').unwrap_or((line, ""));
                        (name.to_owned(), value.trim_start().to_owned())
                    })
                    .collect();
                return Some(fields);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.body.next())
                .await
                .expect("an SSE message in time")?
                .unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

fn field<'a>(message: &'a SseMessage, name: &str) -> Option<&'a str> {
    message
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn data(message: &SseMessage) -> Value {
    serde_json::from_str(field(message, "data").expect("data")).unwrap()
}

#[tokio::test]
async fn a_stream_is_one_subscribe_call_written_as_sse() {
    let harness = Harness::new();
    let response = call(
        &harness,
        get("/api/v1/notifications/stream?channel=topic:news&channel=user:ada&namespace=media")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");

    let stream = harness.notifications.stream(0).await;
    assert_eq!(
        stream.request.message,
        json!({"subscriptions": [
            {"channel": "topic:news", "namespaces": ["NAMESPACE_MEDIA"]},
            {"channel": "user:ada", "namespaces": ["NAMESPACE_MEDIA"]},
        ]})
    );
    assert_eq!(
        stream.request.authorization.as_deref(),
        Some("Bearer token-ada")
    );
    assert!(
        !stream.request.admitted,
        "SSE streams are admitted by the service itself"
    );
    assert_eq!(stream.request.peer, Some(peer().0));

    let mut sse = SseReader::new(response);
    let first = sse.next().await.unwrap();
    assert_eq!(field(&first, "event"), Some("subscribed"));
    assert_eq!(field(&first, "id"), Some("topic:news=10@e1"));
    assert_eq!(
        data(&first),
        json!({"channel": "topic:news", "position": {"offset": "10", "epoch": "e1"}})
    );
    let second = sse.next().await.unwrap();
    assert_eq!(
        field(&second, "id"),
        Some("topic:news=10@e1;user:ada=10@e1")
    );

    stream.event("topic:news", 11, "e1").await;
    let event = sse.next().await.unwrap();
    assert_eq!(field(&event, "event"), Some("event"));
    assert_eq!(field(&event, "id"), Some("topic:news=11@e1;user:ada=10@e1"));
    assert_eq!(data(&event)["offset"], "11");
    assert_eq!(data(&event)["type"], "comment.created");

    stream
        .send(Ok(SubscribeResponse {
            message: Some(Message::Heartbeat(Heartbeat::default())),
        }))
        .await;
    let heartbeat = sse.next().await.unwrap();
    assert_eq!(field(&heartbeat, "event"), Some("heartbeat"));
    assert_eq!(field(&heartbeat, "id"), None, "heartbeats keep the last id");

    stream
        .end(status_with_reason(
            Code::ResourceExhausted,
            "you read too slowly",
            "SLOW_CONSUMER",
        ))
        .await;
    let error = sse.next().await.unwrap();
    assert_eq!(field(&error, "event"), Some("error"));
    let body = data(&error);
    assert_eq!(body["error"]["code"], 429);
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(body["error"]["details"][0]["reason"], "SLOW_CONSUMER");
    assert!(
        sse.next().await.is_none(),
        "the stream ends after its error"
    );
}

#[tokio::test]
async fn last_event_id_resumes_every_channel_of_the_stream() {
    let harness = Harness::new();
    let uri = "/api/v1/notifications/stream?channel=topic:news&channel=user:ada";
    let response = call(&harness, get(uri).body(Body::empty()).unwrap()).await;
    let mut sse = SseReader::new(response);
    sse.next().await.unwrap();
    sse.next().await.unwrap();
    let stream = harness.notifications.stream(0).await;
    stream.event("user:ada", 12, "e1").await;
    stream.event("topic:news", 15, "e%1").await;
    sse.next().await.unwrap();
    let last = sse.next().await.unwrap();
    let id = field(&last, "id").unwrap().to_owned();
    assert_eq!(id, "topic:news=15@e%251;user:ada=12@e1");

    // EventSource reconnects with the id in Last-Event-ID.
    let response = call(
        &harness,
        get(uri)
            .header("last-event-id", &id)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let resumed = harness.notifications.stream(1).await;
    assert_eq!(
        resumed.request.message,
        json!({"subscriptions": [
            {"channel": "topic:news", "resumeFrom": {"offset": "15", "epoch": "e%1"}},
            {"channel": "user:ada", "resumeFrom": {"offset": "12", "epoch": "e1"}},
        ]})
    );
    // A recovering subscription keeps the position until the missed events
    // arrive.
    let mut sse = SseReader::new(response);
    let first = sse.next().await.unwrap();
    assert_eq!(field(&first, "id"), Some(id.as_str()));

    // The query parameter does the same for a first connect; channels the
    // stream does not follow are ignored.
    let response = call(
        &harness,
        get("/api/v1/notifications/stream?channel=topic:news&last_event_id=topic:news%3D3%40e1%3Btopic:old%3D9%40e1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        harness.notifications.stream(2).await.request.message,
        json!({"subscriptions": [{"channel": "topic:news", "resumeFrom": {"offset": "3", "epoch": "e1"}}]})
    );

    // Without `channel`, a resumed stream follows the channels of its id.
    let response = call(
        &harness,
        get("/api/v1/notifications/stream")
            .header("last-event-id", "user:ada=12@e1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        harness.notifications.stream(3).await.request.message,
        json!({"subscriptions": [{"channel": "user:ada", "resumeFrom": {"offset": "12", "epoch": "e1"}}]})
    );
}

#[tokio::test]
async fn a_malformed_last_event_id_is_400() {
    let harness = Harness::new();
    for (header, query) in [
        (Some("topic:news=x@e1"), ""),
        (Some("topic:news"), ""),
        (None, "&last_event_id=topic:news%3D1"),
        (None, "&channels=topic:news"),
        (None, "&namespace=chat"),
    ] {
        let mut request = get(&format!(
            "/api/v1/notifications/stream?channel=topic:news{query}"
        ));
        if let Some(value) = header {
            request = request.header("last-event-id", value);
        }
        let response = call(&harness, request.body(Body::empty()).unwrap()).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{header:?} {query}"
        );
        let body = json_body(response).await;
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
        assert!(
            body["error"]["details"][0]["fieldViolations"][0]["field"].is_string(),
            "{body}"
        );
    }
    assert_eq!(harness.notifications.stream_count(), 0);
}

#[tokio::test]
async fn a_refused_stream_is_the_json_error_with_its_http_status() {
    let harness = Harness::new();
    let cases = [
        ("channel=user:bob", Some("Bearer token-ada"), 403),
        ("channel=topic:bad!", Some("Bearer token-ada"), 400),
        ("channel=topic:throttled", Some("Bearer token-ada"), 429),
        ("channel=topic:news", None, 401),
    ];
    for (query, authorization, status) in cases {
        let mut request =
            Request::get(format!("/api/v1/notifications/stream?{query}")).extension(peer());
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = call(&harness, request.body(Body::empty()).unwrap()).await;
        assert_eq!(response.status().as_u16(), status, "{query}");
        if status == 429 {
            assert_eq!(response.headers()[header::RETRY_AFTER], "30");
        }
        if status == 401 {
            assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        }
        let body = json_body(response).await;
        assert_eq!(body["error"]["code"], status);
    }
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_unavailable() {
    let harness = Harness::new();
    let response = call(
        &harness,
        get("/api/v1/notifications/stream?channel=topic:news")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let mut sse = SseReader::new(response);
    sse.next().await.unwrap();
    harness.shutdown.cancel();
    let error = sse.next().await.unwrap();
    assert_eq!(field(&error, "event"), Some("error"));
    assert_eq!(data(&error)["error"]["status"], "UNAVAILABLE");
    assert!(sse.next().await.is_none());

    let response = call(
        &harness,
        get("/api/v1/notifications/stream?channel=topic:news")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_rate_limited_stream_end_tells_eventsource_when_to_retry() {
    let harness = Harness::new();
    let response = call(
        &harness,
        get("/api/v1/notifications/stream?channel=topic:news")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let mut sse = SseReader::new(response);
    sse.next().await.unwrap();
    harness
        .notifications
        .stream(0)
        .await
        .end(support::rate_limited())
        .await;
    let error = sse.next().await.unwrap();
    assert_eq!(field(&error, "retry"), Some("30000"));
    assert_eq!(data(&error)["error"]["code"], 429);
}

#[tokio::test]
async fn publish_is_the_publish_call() {
    let harness = Harness::new();
    let body = json!({"channels": ["user:ada", "topic:news"], "type": "comment.created",
                      "namespace": "NAMESPACE_NOTIFICATIONS", "payload": {"text": "hi"}});
    let response = call(
        &harness,
        Request::post("/api/v1/notifications")
            .extension(peer())
            .header("authorization", format!("Bearer {SERVICE_KEY}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_body(response).await,
        json!({"events": [
            {"channel": "user:ada", "position": {"offset": "11", "epoch": "e1"}},
            {"channel": "topic:news", "position": {"offset": "11", "epoch": "e1"}},
        ]})
    );
    assert_eq!(harness.calls()[0].message, body);

    let response = call(
        &harness,
        get("/api/v1/notifications")
            .method("POST")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        json_body(response).await["error"]["details"][0]["reason"],
        "SERVICE_REQUIRED"
    );

    let response = call(
        &harness,
        get("/api/v1/notifications")
            .method("POST")
            .header("content-type", "application/json")
            .body(Body::from("{\"channels\": 3}"))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

/// A REST call hands the service only the headers an operation can use
/// (as grpc-gateway does), not every header the client sent: a client
/// cannot reach metadata the server sets for itself, and hop-by-hop or
/// proxy headers never look like call metadata.
#[tokio::test]
async fn rest_and_sse_forward_only_the_allowed_headers() {
    let harness = Harness::new();
    let body = json!({"channels": ["topic:news"], "type": "comment.created",
                      "namespace": "NAMESPACE_NOTIFICATIONS"});
    let with_headers = |builder: http::request::Builder| {
        builder
            .header("cookie", "slop_session=s")
            .header("x-csrf-token", "c")
            .header("user-agent", "ua")
            .header("x-request-id", "r")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header("tracestate", "k=v")
            .header("x-slop-cookie-login", "1")
            .header("x-forwarded-for", "203.0.113.9")
            .header("origin", "https://evil.example")
            .header("grpc-timeout", "1S")
            .header("x-custom", "x")
    };
    let response = call(
        &harness,
        with_headers(
            Request::post("/api/v1/notifications")
                .extension(peer())
                .header("authorization", format!("Bearer {SERVICE_KEY}"))
                .header("content-type", "application/json"),
        )
        .body(Body::from(body.to_string()))
        .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = call(
        &harness,
        with_headers(get("/api/v1/notifications/stream?channel=topic:news"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    let calls = harness.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for call in calls {
        let mut keys = call.metadata_keys.clone();
        keys.sort();
        assert_eq!(
            keys,
            [
                "authorization",
                "cookie",
                "traceparent",
                "tracestate",
                "user-agent",
                "x-csrf-token",
                "x-request-id"
            ],
            "{}",
            call.method
        );
    }
}

#[tokio::test]
async fn channel_state_and_history_are_their_calls() {
    let harness = Harness::new();
    let response = call(
        &harness,
        get("/api/v1/notifications/channels/topic:news")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_body(response).await,
        json!({"channel": {"name": "topic:news", "position": {"offset": "10", "epoch": "e1"},
                           "earliestOffset": "1", "historySize": 10}})
    );
    let response = call(
        &harness,
        get("/api/v1/notifications/channels/topic:missing")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let response = call(
        &harness,
        get("/api/v1/notifications/channels/user:ada/events?after_offset=4&after_epoch=e1&namespace=media&page_size=2&page_token=t")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_body(response).await;
    assert_eq!(body["events"][0]["offset"], "11");
    assert_eq!(body["recovered"], true);
    let list = harness
        .calls()
        .into_iter()
        .find(|c| c.method == "ListChannelEvents")
        .unwrap();
    assert_eq!(
        list.message,
        json!({"channel": "user:ada", "after": {"offset": "4", "epoch": "e1"},
               "namespaces": ["NAMESPACE_MEDIA"], "pageSize": 2, "pageToken": "t"})
    );
    assert_eq!(list.authorization.as_deref(), Some("Bearer token-ada"));

    let response = call(
        &harness,
        get("/api/v1/notifications/channels/user:ada/events?page_size=lots")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
