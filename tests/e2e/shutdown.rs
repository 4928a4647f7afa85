//! Graceful shutdown: readiness first, then streams and sockets end cleanly,
//! in-flight requests finish, and the whole drain is bounded.

use std::time::Duration;

use futures_util::StreamExt as _;
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    harness::{PATIENCE, TestServer, grpc_frame},
    websocket::{connect, next_frame},
};

#[tokio::test]
async fn shutdown_turns_readiness_off_then_ends_streams_and_websockets() {
    let mut server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    let mut socket = connect(&server).await;

    server.begin_shutdown();

    // Readiness reads NOT_SERVING first...
    let update = tokio::time::timeout(PATIENCE, watch.next())
        .await
        .expect("an update in time")
        .expect("stream open")
        .expect("an update, not an error");
    assert_eq!(update.status(), ServingStatus::NotServing);
    // ...then the stream ends with UNAVAILABLE and a message saying why.
    let end = tokio::time::timeout(PATIENCE, watch.next())
        .await
        .expect("the stream ends in time")
        .expect("an error ends the stream")
        .expect_err("the stream ends with a status");
    assert_eq!(end.code(), tonic::Code::Unavailable);
    assert!(end.message().contains("shutting down"), "{end:?}");

    match next_frame(&mut socket).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Away);
            assert_eq!(frame.reason, "server shutting down");
        }
        other => panic!("expected close 1001, got {other:?}"),
    }
    // Answer the close, as a browser does.
    drop(socket);

    let took = server.stopped_within(Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "drain took {took:?}");
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "new connections are refused after shutdown"
    );
}

/// Starts a grpc-web health check over a raw HTTP/1.1 connection, sending
/// the head and only part of the body; returns the socket and the rest.
async fn start_partial_request(server: &TestServer) -> (tokio::net::TcpStream, Vec<u8>) {
    let body = grpc_frame(
        0,
        &HealthCheckRequest {
            service: "liveness".into(),
        }
        .encode_to_vec(),
    );
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: {}\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: {}\r\n\r\n",
        server.addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..3]).await.unwrap();
    // Let the server read the head: the request is now in flight.
    tokio::time::sleep(Duration::from_millis(200)).await;
    (stream, body[3..].to_vec())
}

#[tokio::test]
async fn in_flight_requests_finish_during_shutdown() {
    let mut server = TestServer::start().await;
    let (mut stream, rest) = start_partial_request(&server).await;

    server.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.write_all(&rest).await.unwrap();

    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the answer in time")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("grpc-status:0"), "{answer}");
    server.stopped_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_request_that_never_completes_cannot_hold_shutdown_past_the_timeout() {
    let mut server = TestServer::start_with(|config| {
        config.shutdown_timeout = Duration::from_secs(1);
    })
    .await;
    let (_stream, _never_sent) = start_partial_request(&server).await;
    server.begin_shutdown();
    let took = server.stopped_within(Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(900),
        "gave up early: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "overran the timeout: {took:?}"
    );
}

/// Reads one HTTP/1.1 response with a `content-length` body from a
/// keep-alive connection: the head, as text, and the body.
async fn read_one_response(stream: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 1024];
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(read > 0, "the connection closed before a response");
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .expect("content-length")
        .trim()
        .parse()
        .expect("a length");
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 1024];
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("the body in time")
            .expect("read");
        assert!(read > 0, "the connection closed mid-body");
        body.extend_from_slice(&chunk[..read]);
    }
    (head, body)
}

/// A request on a kept-alive HTTP/1.1 connection that reached the server
/// just before the shutdown signal is answered (with `connection: close`),
/// not lost with the connection. The race is narrow, so it is run many
/// times.
#[tokio::test]
async fn a_keep_alive_request_sent_just_before_shutdown_is_answered() {
    const ROUNDS: usize = 50;
    let mut lost = Vec::new();
    for round in 0..ROUNDS {
        let mut server = TestServer::start().await;
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let request = format!("GET /health/live HTTP/1.1\r\nhost: {}\r\n\r\n", server.addr);
        stream.write_all(request.as_bytes()).await.unwrap();
        let (head, _) = read_one_response(&mut stream).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");

        stream.write_all(request.as_bytes()).await.unwrap();
        server.begin_shutdown();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
            .await
            .expect("the connection ends in time");
        let answer = String::from_utf8_lossy(&rest).to_lowercase();
        let answered = read.is_ok()
            && answer.starts_with("http/1.1 200")
            && answer.contains("connection: close")
            && answer.contains(r#"{"status":"live"}"#);
        if !answered {
            lost.push((round, read.err().map(|e| e.to_string()), answer));
        }
        server.stopped_within(Duration::from_secs(5)).await;
    }
    assert!(
        lost.is_empty(),
        "{} of {ROUNDS} requests sent just before shutdown got no full answer, e.g. {:?}",
        lost.len(),
        lost.first()
    );
}
