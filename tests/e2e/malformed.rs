//! Bad input from outside clients is the caller's fault, answered as such:
//! a request message that does not decode is INVALID_ARGUMENT (not
//! INTERNAL), and a REST body over the limit is 413 with the JSON error,
//! refused before it is buffered.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{PATIENCE, TestServer, grpc_frame, http, parse_grpc_web_body};

/// Bytes that are no protobuf message: a field whose varint never ends.
const NOT_PROTOBUF: &[u8] = &[0x08, 0xff, 0xff, 0xff];

/// The gRPC status (code, decoded message) of a native gRPC call with
/// `body` as its raw request body.
async fn native_grpc(server: &TestServer, path: &str, body: Bytes) -> (i32, String) {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = Request::post(server.url(path))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(body))
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .expect("an answer in time")
        .expect("an answer");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("the body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let headers = if parts.headers.contains_key("grpc-status") {
        parts.headers
    } else {
        trailers
    };
    let status = tonic::Status::from_header_map(&headers).expect("a gRPC status");
    (status.code() as i32, status.message().to_owned())
}

/// The same over grpc-web (HTTP/1.1).
async fn grpc_web(server: &TestServer, path: &str, body: Bytes) -> (i32, String) {
    let answer = http(
        Request::post(server.url(path))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(Full::new(body))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let (_, trailers) = parse_grpc_web_body(answer.body.clone());
    let headers = if answer.headers.contains_key("grpc-status") {
        answer.headers
    } else {
        trailers
    };
    let status = tonic::Status::from_header_map(&headers).expect("a gRPC status");
    (status.code() as i32, status.message().to_owned())
}

#[tokio::test]
async fn a_request_message_that_does_not_decode_is_invalid_argument() {
    let server = TestServer::start().await;
    let login = "/slop.auth.v1.AuthService/Login";
    for (door, (code, message)) in [
        (
            "native",
            native_grpc(&server, login, grpc_frame(0, NOT_PROTOBUF)).await,
        ),
        (
            "grpc-web",
            grpc_web(&server, login, grpc_frame(0, NOT_PROTOBUF)).await,
        ),
    ] {
        assert_eq!(
            code,
            tonic::Code::InvalidArgument as i32,
            "{door}: {message}"
        );
        assert!(
            message.starts_with("the request message does not decode as slop.auth.v1.LoginRequest"),
            "{door}: {message}"
        );
    }

    // A frame cut short (the header promises more bytes than come) is the
    // caller's fault too, and so is one the health service cannot decode.
    let mut truncated = grpc_frame(0, &[0x0a, 0x01, b'a']).to_vec();
    truncated[4] = 10;
    let (code, message) = native_grpc(&server, login, Bytes::from(truncated)).await;
    assert_eq!(code, tonic::Code::InvalidArgument as i32, "{message}");
    assert!(message.contains("ends inside a message"), "{message}");
    let (code, message) = native_grpc(
        &server,
        "/grpc.health.v1.Health/Check",
        grpc_frame(0, NOT_PROTOBUF),
    )
    .await;
    assert_eq!(code, tonic::Code::InvalidArgument as i32, "{message}");
    assert!(
        message.contains("grpc.health.v1.HealthCheckRequest"),
        "{message}"
    );
}

/// Sends `head` and then `body` in pieces on a raw HTTP/1.1 connection,
/// stopping early if the server answers; returns the whole answer.
async fn raw_http1(server: &TestServer, head: &str, body: &[&[u8]]) -> String {
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    for piece in body {
        if stream.write_all(piece).await.is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes in time");
    String::from_utf8_lossy(&answer).into_owned()
}

fn assert_too_large(answer: &str) {
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("content-type: application/json"),
        "{answer}"
    );
    let body = &answer[answer.find("\r\n\r\n").expect("a head") + 4..];
    let body: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(body["error"]["code"], 413, "{body}");
    assert_eq!(
        body["error"]["details"][0]["reason"], "REQUEST_TOO_LARGE",
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("65536 bytes"),
        "{body}"
    );
}

#[tokio::test]
async fn a_rest_body_over_64_kib_is_413_with_the_json_error_before_it_is_read() {
    let server = TestServer::start().await;
    // Announced too large: refused from the head, while the body is still
    // to come (none is sent), and whatever the size (2 MB was axum's limit).
    for length in [65_537, 3_000_000] {
        let head = format!(
            "POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
        );
        assert_too_large(&raw_http1(&server, &head, &[]).await);
    }
    // Chunked, so no length up front: refused once 64 KiB have come.
    let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
    let chunks: Vec<&[u8]> = std::iter::repeat_n(chunk.as_bytes(), 8).collect();
    let head = "POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    assert_too_large(&raw_http1(&server, head, &chunks).await);

    // At the limit, the body is read (and is not the JSON login takes).
    let body = format!("{{\"email\":\"{}\"}}", "a".repeat(65_536 - 12));
    assert_eq!(body.len(), 65_536);
    let head = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let answer = raw_http1(&server, &head, &[body.as_bytes()]).await;
    assert!(!answer.starts_with("HTTP/1.1 413"), "{answer}");
}
