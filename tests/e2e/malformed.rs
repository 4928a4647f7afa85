//! Bad input from outside clients is the caller's fault, answered as such:
//! a request message that does not decode is INVALID_ARGUMENT (not
//! INTERNAL), and a REST body over the limit is 413 with the JSON error,
//! refused before it is buffered.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

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
