//! Traces, as an operator gets them: the built binary, configured by the
//! standard OTEL_* variables, exports over OTLP/gRPC to a real receiver
//! (a TraceService server built from the OpenTelemetry protos, started
//! here), and every door continues the caller's W3C trace.

#[allow(dead_code)] // Each test binary uses its own part of it.
mod support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value,
    trace::v1::span::SpanKind,
};
use slop_api::auth::{self, auth_service_client::AuthServiceClient};
use support::{PATIENCE, Server, auth_client, command, run_to_exit, scratch_dir};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::mpsc,
};

/// One exported span, as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    service_name: String,
    resource: HashMap<String, String>,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
    attributes: HashMap<String, String>,
}

/// An OTLP/gRPC receiver: keeps every span it is sent, and the API key
/// header of each export.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
    api_keys: Arc<Mutex<Vec<String>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Some(key) = request.metadata().get("x-api-key") {
            self.api_keys
                .lock()
                .unwrap()
                .push(key.to_str().unwrap_or_default().to_owned());
        }
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource: HashMap<String, String> = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                .collect();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        service_name: resource.get("service.name").cloned().unwrap_or_default(),
                        resource: resource.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name.clone(),
                        kind: span.kind,
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Serves on a free loopback port until the test ends; answers its
    /// endpoint.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    /// Waits until the server span of `trace_id` has arrived.
    async fn server_span(&self, trace_id: &str) -> Received {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let found = self
                    .spans
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|span| span.trace_id == trace_id && span.kind == SpanKind::Server as i32)
                    .cloned();
                if let Some(span) = found {
                    return span;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no server span of trace {trace_id} arrived; got {:#?}",
                self.spans.lock().unwrap()
            )
        })
    }
}

/// Starts the binary with `env`, its accounts in SQLite in its scratch
/// directory `name`.
async fn start(name: &str, env: &[(&str, &str)]) -> Server {
    let scratch = scratch_dir(name);
    let mut command = command(&scratch);
    command.env(
        "DATABASE_URL",
        format!("sqlite:{}", scratch.join("accounts.db").display()),
    );
    Server::start(command, env).await
}

/// A caller's trace: a trace id and the span id of the caller's span.
struct Caller {
    trace_id: String,
    span_id: String,
}

impl Caller {
    /// A caller's trace whose ids end in `n`, so each door has its own.
    fn new(n: u8) -> Self {
        Self {
            trace_id: format!("4bf92f3577b34da6a3ce929d0e0e47{n:02x}"),
            span_id: format!("00f067aa0ba902{n:02x}"),
        }
    }

    fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

/// Sends an HTTP/1.1 request and reads the answer's head (the body of a
/// stream or a socket never ends, so it is not read).
async fn request_head(addr: &str, head: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            let read = stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "connection closed before the head");
            answer.extend_from_slice(&chunk[..read]);
        }
    })
    .await
    .expect("an answer in time");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Signs a new user up over gRPC (no trace context): answers their user
/// id and an access token.
async fn sign_up(addr: &str) -> (String, String) {
    let login = support::sign_up(&mut auth_client(addr).await, "trace@example.com").await;
    (
        login.user.expect("user").id,
        login.tokens.expect("tokens").access_token,
    )
}

/// The log line "response" of the next request to `path`.
async fn response_line(
    logs: &mut mpsc::UnboundedReceiver<serde_json::Value>,
    path: &str,
) -> serde_json::Value {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let line = logs.recv().await.expect("logs");
            if line["message"] == "response" && line["span"]["path"] == path {
                return line;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no response line for {path}"))
}

#[tokio::test]
async fn every_door_continues_the_callers_trace_in_exported_spans() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let mut server = start(
        "doors",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "slop-traces-test"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=e2e,team=a%2Cb",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=find-me%3D%3D"),
        ],
    )
    .await;
    let addr = server.addr.clone();
    let (user_id, token) = sign_up(&addr).await;

    // Native gRPC.
    let grpc = Caller::new(1);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut call = tonic::Request::new(auth::GetCurrentUserRequest {});
    call.metadata_mut()
        .insert("traceparent", grpc.traceparent().parse().unwrap());
    call.metadata_mut()
        .insert("tracestate", "vendor=opaque".parse().unwrap());
    let status = AuthServiceClient::new(channel)
        .get_current_user(call)
        .await
        .expect_err("no credentials");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // grpc-web, over HTTP/1.1.
    let grpc_web = Caller::new(2);
    let head = request_head(
        &addr,
        &format!(
            "POST /slop.auth.v1.AuthService/GetCurrentUser HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ntraceparent: {}\r\ncontent-length: 5\r\n\r\n",
            grpc_web.traceparent()
        ),
        &[0, 0, 0, 0, 0],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // REST.
    let rest = Caller::new(3);
    let head = request_head(
        &addr,
        &format!(
            "GET /api/v1/auth/me HTTP/1.1\r\nhost: x\r\ntraceparent: {}\r\nauthorization: Bearer {token}\r\n\r\n",
            rest.traceparent()
        ),
        b"",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // Server-Sent Events: the stream stays open.
    let sse = Caller::new(4);
    let head = request_head(
        &addr,
        &format!(
            "GET /api/v1/notifications/stream?channel=user:{user_id} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\ntraceparent: {}\r\nauthorization: Bearer {token}\r\n\r\n",
            sse.traceparent()
        ),
        b"",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // The WebSocket upgrade: the socket stays open.
    let ws = Caller::new(5);
    let head = request_head(
        &addr,
        &format!(
            "GET /api/v1/ws HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\ntraceparent: {}\r\nauthorization: Bearer {token}\r\n\r\n",
            ws.traceparent()
        ),
        b"",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    // A malformed traceparent is ignored: a new trace, and the call works.
    let head = request_head(
        &addr,
        "GET /api/v1/auth/me HTTP/1.1\r\nhost: x\r\ntraceparent: 00-NOT-A-TRACE-01\r\nx-request-id: malformed-traceparent\r\n\r\n",
        b"",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");

    for (door, caller, name) in [
        ("gRPC", &grpc, "slop.auth.v1.AuthService/GetCurrentUser"),
        (
            "grpc-web",
            &grpc_web,
            "slop.auth.v1.AuthService/GetCurrentUser",
        ),
        ("REST", &rest, "GET /api/v1/auth/me"),
        ("SSE", &sse, "GET /api/v1/notifications/stream"),
        ("WebSocket", &ws, "GET /api/v1/ws"),
    ] {
        let span = receiver.server_span(&caller.trace_id).await;
        assert_eq!(span.parent_span_id, caller.span_id, "{door}: {span:#?}");
        assert_ne!(span.span_id, caller.span_id, "{door}");
        assert_eq!(span.name, name, "{door}");
        assert_eq!(span.service_name, "slop-traces-test", "{door}");
        assert_eq!(span.resource["deployment.environment"], "e2e", "{door}");
        assert_eq!(span.resource["team"], "a,b", "{door}");
    }
    let grpc_span = receiver.server_span(&grpc.trace_id).await;
    assert_eq!(grpc_span.attributes["rpc.system"], "grpc");
    assert_eq!(grpc_span.attributes["rpc.grpc.status_code"], "16");

    // The logs carry the caller's trace id next to the request id; the
    // malformed one got a fresh id, whose trace has no parent.
    let mut seen = Vec::new();
    let malformed = tokio::time::timeout(PATIENCE, async {
        loop {
            let line = server.logs.recv().await.expect("logs");
            if line["message"] != "response" {
                continue;
            }
            if line["span"]["request_id"] == "malformed-traceparent" {
                return line;
            }
            seen.push(
                line["span"]["trace_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
    })
    .await
    .expect("the response line of the malformed traceparent");
    for caller in [&grpc, &grpc_web, &rest, &sse, &ws] {
        assert!(
            seen.contains(&caller.trace_id),
            "{} not in {seen:?}",
            caller.trace_id
        );
    }
    let fresh = malformed["span"]["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(fresh.len(), 32, "{malformed}");
    let root = receiver.server_span(&fresh).await;
    assert_eq!(root.parent_span_id, "", "{root:#?}");
    assert_eq!(root.name, "GET /api/v1/auth/me");

    // The API key went with the exports, and into no log line.
    assert!(
        receiver
            .api_keys
            .lock()
            .unwrap()
            .iter()
            .all(|key| key == "find-me==")
    );
    assert!(!receiver.api_keys.lock().unwrap().is_empty());
    server.stop().await;
    for line in server.rest_of_log().await {
        assert!(!line.to_string().contains("find-me"), "{line}");
    }
}

/// With a batch delay longer than the test, spans reach the collector only
/// because shutdown flushes them.
#[tokio::test]
async fn graceful_shutdown_flushes_the_last_spans() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let mut server = start(
        "flush",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    )
    .await;
    let caller = Caller::new(9);
    let head = request_head(
        &server.addr,
        &format!(
            "GET /health HTTP/1.1\r\nhost: x\r\ntraceparent: {}\r\n\r\n",
            caller.traceparent()
        ),
        b"",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        receiver.spans.lock().unwrap().is_empty(),
        "exported before the batch delay"
    );
    assert_eq!(server.stop().await.code(), Some(0));
    let span = receiver.server_span(&caller.trace_id).await;
    assert_eq!(span.parent_span_id, caller.span_id);
    assert_eq!(span.service_name, "slop-server");
}

/// With no collector configured, nothing is exported, and the log line of
/// a request still carries the caller's trace id (or a fresh one).
#[tokio::test]
async fn without_export_the_log_line_carries_the_callers_trace_id() {
    let mut server = start("no-export", &[]).await;
    let addr = server.addr.clone();
    let caller = Caller::new(7);
    let head = request_head(
        &addr,
        &format!(
            "GET /health HTTP/1.1\r\nhost: x\r\nx-request-id: with-trace\r\ntraceparent: {}\r\n\r\n",
            caller.traceparent()
        ),
        b"",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let line = response_line(&mut server.logs, "/health").await;
    assert_eq!(line["span"]["request_id"], "with-trace", "{line}");
    assert_eq!(line["span"]["trace_id"], caller.trace_id.as_str(), "{line}");

    request_head(&addr, "GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n", b"").await;
    let line = response_line(&mut server.logs, "/health/live").await;
    let fresh = line["span"]["trace_id"].as_str().expect("a trace id");
    assert_eq!(fresh.len(), 32, "{line}");
    assert_ne!(fresh, caller.trace_id, "{line}");
    server.stop().await;
}

/// A bad OTEL_* value stops start-up with exit 2, naming the variable,
/// never showing a header's value.
#[tokio::test]
async fn bad_otel_settings_stop_start_up_naming_the_variable() {
    for (variable, value, expected) in [
        ("OTEL_TRACES_SAMPLER", "sometimes", "OTEL_TRACES_SAMPLER"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5", "OTEL_TRACES_SAMPLER_ARG"),
        ("OTEL_BSP_SCHEDULE_DELAY", "5s", "OTEL_BSP_SCHEDULE_DELAY"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://collector:4317",
            "TLS",
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/protobuf",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-api-key=sekrit%G0",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
    ] {
        let output = run_to_exit(
            command(&scratch_dir("bad-otel"))
                .env("PORT", "0")
                .env(variable, value),
        )
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{variable}={value}: {stderr}"
        );
        assert!(stderr.contains(expected), "{variable}={value}: {stderr}");
        assert!(!stderr.contains("sekrit"), "{stderr}");
    }
}

/// A collector that is down costs the spans, never the start nor a
/// request, and the failed export is logged.
#[tokio::test]
async fn a_collector_that_is_down_is_logged_and_costs_no_request() {
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut server = start(
        "collector-down",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{closed}")),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let addr = server.addr.clone();
    let head = request_head(&addr, "GET /health HTTP/1.1\r\nhost: x\r\n\r\n", b"").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let failure = tokio::time::timeout(PATIENCE, async {
        loop {
            let line = server.logs.recv().await.expect("logs");
            if line["level"] == "ERROR" {
                return line;
            }
        }
    })
    .await
    .expect("the failed export is logged");
    assert!(failure.to_string().contains("Export"), "{failure}");
    let head = request_head(&addr, "GET /health HTTP/1.1\r\nhost: x\r\n\r\n", b"").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // A span no one will take is waiting: the flush gives up after
    // FLUSH_TIMEOUT (2 s) instead of holding the exit.
    let head = request_head(&addr, "GET /health HTTP/1.1\r\nhost: x\r\n\r\n", b"").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let signalled = std::time::Instant::now();
    // In time, flush or no flush.
    assert_eq!(server.stop().await.code(), Some(0));
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
}
