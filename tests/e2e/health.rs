//! Health over gRPC (native and grpc-web) and HTTP, with and without Redis.

use prost::Message as _;
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    health_client::HealthClient,
};

use crate::harness::{TestServer, eventually, get, grpc_web_call, require_redis};

const SERVICES: &[&str] = &[
    "slop.auth.v1.AuthService",
    "slop.session.v1.SessionService",
    "slop.notification.v1.NotificationService",
];

async fn grpc_status(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<ServingStatus, tonic::Status> {
    let response = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(response.into_inner().status())
}

#[tokio::test]
async fn grpc_health_serves_overall_liveness_and_every_service() {
    let server = TestServer::start().await;
    let mut client = HealthClient::new(server.channel().await);
    for service in ["", "liveness"].iter().chain(SERVICES) {
        assert_eq!(
            grpc_status(&mut client, service).await.unwrap(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
    let unknown = grpc_status(&mut client, "no.such.Service")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn grpc_web_health_check_over_http1() {
    let server = TestServer::start().await;
    let answer = grpc_web_call(
        &server,
        "/grpc.health.v1.Health/Check",
        &HealthCheckRequest {
            service: String::new(),
        },
    )
    .await;
    assert_eq!(answer.http, http::StatusCode::OK);
    assert_eq!(answer.grpc_status(), Some(0));
    assert_eq!(answer.messages.len(), 1);
    let reply = HealthCheckResponse::decode(answer.messages[0].clone()).unwrap();
    assert_eq!(reply.status(), ServingStatus::Serving);
    // A browser reads the status only if CORS exposes it.
    let exposed = answer.headers["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("grpc-status"), "{exposed}");
}

#[tokio::test]
async fn http_health_endpoints_answer_as_specified() {
    let server = TestServer::start().await;

    let health = get(&server.url("/health")).await;
    assert_eq!(health.status, 200);
    let body = health.json();
    assert_eq!(body["status"], "serving");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_seconds"].is_u64());
    assert_eq!(body["dependencies"]["redis"]["status"], "not_configured");

    let ready = get(&server.url("/health/ready")).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");
    let live = get(&server.url("/health/live")).await;
    assert_eq!(live.status, 200);
    assert_eq!(live.headers["cache-control"], "no-store");
}

#[tokio::test]
async fn an_unreachable_redis_makes_the_server_not_ready_but_live() {
    // Port 1 on loopback: nothing listens, connections are refused at once.
    let server = TestServer::start_with(|config| {
        config.redis_url = Some("redis://127.0.0.1:1".into());
    })
    .await;
    let mut client = HealthClient::new(server.channel().await);

    eventually("/health reports Redis down", || async {
        get(&server.url("/health")).await.json()["dependencies"]["redis"]["status"] == "down"
    })
    .await;
    let health = get(&server.url("/health")).await;
    assert_eq!(health.status, 503);
    let body = health.json();
    assert_eq!(body["status"], "not_serving");
    assert_eq!(body["reason"], "redis is down");
    assert!(body["dependencies"]["redis"]["latency_ms"].is_f64());

    let ready = get(&server.url("/health/ready")).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["reason"], "redis is down");
    assert_eq!(get(&server.url("/health/live")).await.status, 200);

    for service in [""].iter().chain(SERVICES) {
        assert_eq!(
            grpc_status(&mut client, service).await.unwrap(),
            ServingStatus::NotServing,
            "service {service:?}"
        );
    }
    assert_eq!(
        grpc_status(&mut client, "liveness").await.unwrap(),
        ServingStatus::Serving
    );
}

#[tokio::test]
async fn a_reachable_redis_is_checked_and_reported_with_its_latency() {
    let redis_url = require_redis().await;
    let server = TestServer::start_with(|config| config.redis_url = Some(redis_url)).await;
    eventually("ready once Redis answered", || async {
        get(&server.url("/health/ready")).await.status == 200
    })
    .await;
    let body = get(&server.url("/health")).await.json();
    assert_eq!(body["status"], "serving");
    assert_eq!(body["dependencies"]["redis"]["status"], "up");
    assert!(
        body["dependencies"]["redis"]["latency_ms"]
            .as_f64()
            .unwrap()
            >= 0.0
    );
    // The mode, and the node as Redis sees it.
    assert_eq!(body["dependencies"]["redis"]["mode"], "standalone");
    assert_eq!(body["dependencies"]["redis"]["nodes"][0]["role"], "primary");
    assert_eq!(body["dependencies"]["redis"]["nodes"][0]["state"], "ok");
    let mut client = HealthClient::new(server.channel().await);
    assert_eq!(
        grpc_status(&mut client, "").await.unwrap(),
        ServingStatus::Serving
    );
}

/// `GET /health` with an optional bearer token.
async fn health_as(server: &TestServer, bearer: Option<&str>) -> crate::harness::Answer {
    let mut request = http::Request::get(server.url("/health"));
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    crate::harness::http(request.body(Default::default()).unwrap()).await
}

fn assert_bare(answer: &crate::harness::Answer, who: &str) {
    assert_eq!(answer.status, 200, "{who}");
    assert_eq!(
        answer.json(),
        serde_json::json!({"status": "serving"}),
        "{who} sees no version, uptime or dependencies"
    );
}

fn assert_detailed(answer: &crate::harness::Answer, who: &str) {
    assert_eq!(answer.status, 200, "{who}");
    let body = answer.json();
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"), "{who}");
    assert!(
        body["dependencies"]["database"]["latency_ms"].is_f64(),
        "{who}: {body}"
    );
}

/// The probes and gRPC health answer anyone, whatever HEALTH_DETAILS says.
async fn assert_probes_public(server: &TestServer) {
    assert_eq!(
        get(&server.url("/health/ready")).await.json()["status"],
        "ready"
    );
    assert_eq!(
        get(&server.url("/health/live")).await.json()["status"],
        "live"
    );
    let mut client = HealthClient::new(server.channel().await);
    for service in ["", "liveness"] {
        assert_eq!(
            grpc_status(&mut client, service).await.unwrap(),
            ServingStatus::Serving
        );
    }
}

#[tokio::test]
async fn in_production_only_services_see_the_detail_of_health() {
    use slop_server::infra::config::AppEnv;
    let server = TestServer::start_with(|config| config.app_env = Some(AppEnv::Production)).await;
    let user = crate::harness::sign_up(&server, "curious@example.com").await;
    assert_bare(&health_as(&server, None).await, "anyone");
    assert_bare(
        &health_as(&server, Some(&user.access_token)).await,
        "a user",
    );
    assert_bare(&health_as(&server, Some("not-a-key")).await, "a wrong key");
    assert_detailed(
        &health_as(&server, Some(crate::harness::SERVICE_KEY)).await,
        "a service",
    );
    assert_probes_public(&server).await;
}

#[tokio::test]
async fn health_details_public_shows_everyone_and_off_shows_no_one() {
    use slop_server::infra::config::{AppEnv, HealthDetails};
    let public = TestServer::start_with(|config| {
        config.app_env = Some(AppEnv::Production);
        config.health_details = Some(HealthDetails::Public);
    })
    .await;
    assert_detailed(&health_as(&public, None).await, "anyone, when public");
    let off =
        TestServer::start_with(|config| config.health_details = Some(HealthDetails::Off)).await;
    assert_bare(&health_as(&off, None).await, "anyone, when off");
    assert_bare(
        &health_as(&off, Some(crate::harness::SERVICE_KEY)).await,
        "a service, when off",
    );
    assert_probes_public(&off).await;
}
