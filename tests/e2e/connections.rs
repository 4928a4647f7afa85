//! Connections from outside clients: idle ones are closed after
//! HTTP_IDLE_TIMEOUT (HTTP/1 keep-alive, HTTP/2 with no stream, and one that
//! never sent anything), while long-lived streams and WebSockets are not.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use slop_api::notification::{
    ChannelSubscription, SubscribeRequest, notification_service_client::NotificationServiceClient,
    subscribe_response::Message,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::{
    harness::{PATIENCE, TestServer, bearer, sign_up},
    websocket::{connect_with, next_json, publish},
};

/// A short idle timeout, so tests see it pass.
const IDLE: Duration = Duration::from_millis(300);

async fn server_with_short_idle_timeout() -> TestServer {
    TestServer::start_with(|config| config.http_idle_timeout = IDLE).await
}

/// Reads until the server closes the connection; panics if it does not
/// within PATIENCE. Answers what was read.
async fn closed_by_server(stream: &mut TcpStream) -> Vec<u8> {
    let mut read = Vec::new();
    let result = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut read))
        .await
        .expect("the server closes the idle connection");
    // A reset is a close too.
    drop(result);
    read
}

#[tokio::test]
async fn an_idle_http1_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = server_with_short_idle_timeout().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_by_server(&mut stream).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "answered first: {answer}"
    );
    assert!(
        !answer.contains("connection: close"),
        "kept alive: {answer}"
    );
}

#[tokio::test]
async fn a_connection_that_never_sends_anything_is_closed_after_the_idle_timeout() {
    let server = server_with_short_idle_timeout().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_by_server(&mut stream).await.is_empty());
    // Half a request head is no request either.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nhost:")
        .await
        .unwrap();
    closed_by_server(&mut stream).await;
}

#[tokio::test]
async fn an_http2_connection_with_no_open_stream_is_closed_after_the_idle_timeout() {
    let server = server_with_short_idle_timeout().await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let response = sender
        .send_request(
            Request::get(server.url("/health/live"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    tokio::time::timeout(PATIENCE, connection)
        .await
        .expect("the server ends the idle HTTP/2 connection")
        .unwrap()
        .expect("with GOAWAY, not an error");
}

/// Reads an SSE body until it holds `needle`.
async fn sse_until(body: &mut hyper::body::Incoming, needle: &str) {
    let mut seen = String::new();
    while !seen.contains(needle) {
        let frame = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .unwrap_or_else(|_| panic!("{needle:?} in time; saw {seen:?}"))
            .expect("the stream goes on")
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

#[tokio::test]
async fn streams_and_websockets_are_not_idle_however_quiet() {
    let server = server_with_short_idle_timeout().await;
    let user = sign_up(&server, "quiet@example.com").await;
    let channel = format!("user:{}", user.user_id);

    // A gRPC stream, an SSE stream and a WebSocket, each on a connection of
    // its own.
    let mut grpc = NotificationServiceClient::new(server.channel().await)
        .subscribe(bearer(
            SubscribeRequest {
                subscriptions: vec![ChannelSubscription {
                    channel: channel.clone(),
                    ..Default::default()
                }],
            },
            &user.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let sse = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http()
        .request(
            Request::get(server.url(&format!("/api/v1/notifications/stream?channel={channel}")))
                .header("authorization", format!("Bearer {}", user.access_token))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let mut sse = sse.into_body();
    sse_until(&mut sse, "event: subscribed").await;
    let mut socket = connect_with(
        &server,
        ("authorization", &format!("Bearer {}", user.access_token)),
    )
    .await
    .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "welcome");
    assert_eq!(next_json(&mut socket).await["type"], "subscribed");

    // Many idle timeouts of silence later, all three still deliver.
    tokio::time::sleep(IDLE * 5).await;
    publish(&server, &channel, "still.here").await;
    loop {
        let message = tokio::time::timeout(PATIENCE, grpc.message())
            .await
            .expect("an event in time")
            .expect("the gRPC stream is open")
            .expect("a message")
            .message;
        if let Some(Message::Event(event)) = message {
            assert_eq!(event.r#type, "still.here");
            break;
        }
    }
    sse_until(&mut sse, "still.here").await;
    loop {
        let frame = next_json(&mut socket).await;
        if frame["type"] == "event" {
            assert_eq!(frame["event"]["type"], "still.here");
            break;
        }
    }
    socket
        .send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await
        .ok();
    let _ = socket.next().await;
}

/// A short body timeout, so tests see it pass.
const BODY: Duration = Duration::from_millis(500);

/// One JSON byte every 100 ms: a body of 100 would take 10 s.
const TRICKLE: Duration = Duration::from_millis(100);

#[tokio::test]
async fn a_body_that_trickles_over_http1_is_cut_with_408() {
    let server = TestServer::start_with(|config| config.http_body_timeout = BODY).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(b"POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(TRICKLE).await;
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, reader.read_to_end(&mut answer))
        .await
        .expect("cut before the body is complete")
        .ok();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["error"]["code"], 408, "{body}");
    assert_eq!(body["error"]["status"], "DEADLINE_EXCEEDED", "{body}");
    assert_eq!(
        body["error"]["details"][0]["reason"], "REQUEST_BODY_TIMEOUT",
        "{body}"
    );
}

#[tokio::test]
async fn a_body_that_trickles_over_http2_is_cut() {
    let server = TestServer::start_with(|config| config.http_body_timeout = BODY).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let (bytes, body) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(1);
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if bytes
                .send(Ok(hyper::body::Frame::data(Bytes::from_static(b" "))))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(TRICKLE).await;
        }
    });
    let request = Request::post(server.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(body),
        ))
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("cut before the body is complete")
        .expect("an answer");
    assert_eq!(response.status(), 408);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["error"]["details"][0]["reason"], "REQUEST_BODY_TIMEOUT",
        "{body}"
    );
    // The stream is over: the rest of the body goes nowhere.
    tokio::time::timeout(PATIENCE, trickle)
        .await
        .expect("the trickle stops once the stream is reset")
        .unwrap();
}

#[tokio::test]
async fn a_client_streaming_grpc_call_is_not_cut_by_the_body_timeout() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let server = TestServer::start_with(|config| config.http_body_timeout = BODY).await;
    let (requests, outgoing) = tokio::sync::mpsc::channel(1);
    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    requests.send(list()).await.unwrap();
    let mut replies = ServerReflectionClient::new(server.channel().await)
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .unwrap()
        .into_inner();
    replies.next().await.unwrap().unwrap();
    // The request stream stays open, quiet, past the body timeout.
    tokio::time::sleep(BODY * 3).await;
    requests.send(list()).await.unwrap();
    tokio::time::timeout(PATIENCE, replies.next())
        .await
        .expect("an answer in time")
        .expect("the call goes on")
        .expect("a reply, not an error");
}

/// A connection from `source` (a loopback address) to the server, with one
/// request answered on it, so the server has admitted it; it stays open.
async fn kept_alive_from(server: &TestServer, source: &str) -> TcpStream {
    let stream = connect_from(server, source).await;
    let mut stream = stream;
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 1024];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    stream
}

async fn connect_from(server: &TestServer, source: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server.addr).await.unwrap()
}

/// `GET /health/live` on a new connection from `source`, closed after:
/// the answer as text.
async fn live_from(server: &TestServer, source: &str) -> String {
    let mut stream = connect_from(server, source).await;
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The JSON error of a refusal, checked against its status line.
fn refusal(answer: &str, status_line: &str) -> serde_json::Value {
    assert!(answer.starts_with(status_line), "{answer}");
    assert!(
        answer.contains("content-type: application/json"),
        "{answer}"
    );
    serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap()
}

#[tokio::test]
async fn the_connection_over_the_per_address_cap_is_refused_and_others_are_served() {
    let server = TestServer::start_with(|config| config.http_max_connections_per_ip = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(kept_alive_from(&server, "127.0.0.1").await);
    }
    let body = refusal(&live_from(&server, "127.0.0.1").await, "HTTP/1.1 429");
    assert_eq!(body["error"]["code"], 429, "{body}");
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED", "{body}");
    assert_eq!(
        body["error"]["details"][0]["reason"], "TOO_MANY_CONNECTIONS",
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 4"),
        "{body}"
    );
    // Another address is served meanwhile.
    let other = live_from(&server, "127.0.0.2").await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    // Once one closes, the address gets a connection again.
    drop(held.pop());
    crate::harness::eventually("a connection is admitted again", || async {
        live_from(&server, "127.0.0.1")
            .await
            .starts_with("HTTP/1.1 200")
    })
    .await;
}

#[tokio::test]
async fn at_the_total_cap_an_idle_connection_makes_room_and_busy_ones_do_not() {
    let server = TestServer::start_with(|config| {
        config.http_max_connections = Some(4);
        config.http_max_connections_per_ip = 0;
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(kept_alive_from(&server, "127.0.0.1").await);
    }
    // A fifth is served: one idle connection is closed to make room.
    let fifth = live_from(&server, "127.0.0.2").await;
    assert!(fifth.starts_with("HTTP/1.1 200"), "{fifth}");
    let mut closed = 0;
    for stream in &mut idle {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no idle connection was closed to make room");
    drop(idle);

    // Four with a request in flight (a body still to come) are not closed
    // for a newcomer: it is refused.
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_from(&server, "127.0.0.1").await;
        stream
            .write_all(b"POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n")
            .await
            .unwrap();
        busy.push(stream);
    }
    crate::harness::eventually("the fifth is refused while four are busy", || async {
        live_from(&server, "127.0.0.2")
            .await
            .starts_with("HTTP/1.1 503")
    })
    .await;
    let body = refusal(&live_from(&server, "127.0.0.2").await, "HTTP/1.1 503");
    assert_eq!(body["error"]["status"], "UNAVAILABLE", "{body}");
    assert_eq!(
        body["error"]["details"][0]["reason"], "CONNECTION_LIMIT",
        "{body}"
    );
    for stream in &mut busy {
        stream.write_all(b"{\"x\":\"y\"}\n").await.unwrap();
    }
}
