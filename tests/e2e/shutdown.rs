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
