//! Helmet's default security headers on every answer of the HTTP side
//! (REST, SSE, health, 404/405, WebSocket upgrade errors, grpc-web and CORS
//! preflights), HSTS only in production, and none on native gRPC.

use http::{HeaderMap, Request, StatusCode};
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use slop_server::infra::config::AppEnv;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::harness::{PATIENCE, TestServer, get, grpc_web_call, http, rest, sign_up};

const EXPECTED: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("origin-agent-cluster", "?1"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("x-dns-prefetch-control", "off"),
    ("x-download-options", "noopen"),
    ("x-frame-options", "DENY"),
    ("x-permitted-cross-domain-policies", "none"),
    ("x-xss-protection", "0"),
];

const HSTS: &str = "max-age=31536000; includeSubDomains";

fn assert_secured(what: &str, headers: &HeaderMap, production: bool) {
    for (name, value) in EXPECTED {
        assert_eq!(
            headers.get(*name).and_then(|v| v.to_str().ok()),
            Some(*value),
            "{what}: {name}"
        );
    }
    let hsts = headers
        .get("strict-transport-security")
        .and_then(|v| v.to_str().ok());
    assert_eq!(hsts, production.then_some(HSTS), "{what}: HSTS");
}

/// The head of a response whose body may never end (SSE).
async fn head_of(request: Request<Full<bytes::Bytes>>) -> (StatusCode, HeaderMap) {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .expect("an answer in time")
        .expect("an answer");
    (response.status(), response.headers().clone())
}

async fn every_http_answer_is_secured(server: &TestServer, production: bool) {
    let user = sign_up(server, "headers@example.com").await;
    let mut answers: Vec<(&str, StatusCode, HeaderMap)> = Vec::new();
    let mut add = |what, status, headers| answers.push((what, status, headers));

    let me = rest(
        server,
        "GET",
        "/api/v1/auth/me",
        Some(&user.access_token),
        serde_json::Value::Null,
    )
    .await;
    add("REST 200", me.status, me.headers);
    let me = rest(
        server,
        "GET",
        "/api/v1/auth/me",
        None,
        serde_json::Value::Null,
    )
    .await;
    add("REST 401", me.status, me.headers);
    for path in ["/health", "/health/ready", "/health/live", "/nope"] {
        let answer = get(&server.url(path)).await;
        add(path, answer.status, answer.headers);
    }
    let wrong_method = http(
        Request::delete(server.url("/health"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    add("405", wrong_method.status, wrong_method.headers);
    let (status, headers) = head_of(
        Request::get(server.url(&format!(
            "/api/v1/notifications/stream?channel=user:{}",
            user.user_id
        )))
        .header("authorization", format!("Bearer {}", user.access_token))
        .body(Full::default())
        .unwrap(),
    )
    .await;
    add("SSE", status, headers);
    let not_an_upgrade = get(&server.url("/api/v1/ws")).await;
    add(
        "WebSocket without upgrade",
        not_an_upgrade.status,
        not_an_upgrade.headers,
    );
    let preflight = http(
        Request::options(server.url("/api/v1/auth/login"))
            .header("origin", "http://app.example")
            .header("access-control-request-method", "POST")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    add("CORS preflight", preflight.status, preflight.headers);
    let web = grpc_web_call(
        server,
        "/grpc.health.v1.Health/Check",
        &HealthCheckRequest::default(),
    )
    .await;
    add("grpc-web", web.http, web.headers);

    let expected_status = [
        StatusCode::OK,
        StatusCode::UNAUTHORIZED,
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::NOT_FOUND,
        StatusCode::METHOD_NOT_ALLOWED,
        StatusCode::OK,
    ];
    for (index, (what, status, headers)) in answers.iter().enumerate() {
        if let Some(expected) = expected_status.get(index) {
            assert_eq!(status, expected, "{what}");
        }
        assert_secured(what, headers, production);
    }
}

#[tokio::test]
async fn every_http_answer_carries_the_security_headers_and_no_hsts_in_development() {
    let server = TestServer::start().await;
    every_http_answer_is_secured(&server, false).await;
}

#[tokio::test]
async fn production_adds_hsts() {
    let server = TestServer::start_with(|config| config.app_env = Some(AppEnv::Production)).await;
    every_http_answer_is_secured(&server, true).await;
}

#[tokio::test]
async fn native_grpc_answers_carry_none_of_them() {
    let server = TestServer::start_with(|config| config.app_env = Some(AppEnv::Production)).await;
    let mut client = HealthClient::new(server.channel().await);
    let response = client.check(HealthCheckRequest::default()).await.unwrap();
    let headers = response.metadata().clone().into_headers();
    for (name, _) in EXPECTED.iter().chain([&("strict-transport-security", "")]) {
        assert!(
            headers.get(*name).is_none(),
            "{name}: {:?}",
            headers.get(*name)
        );
    }
}
