//! One port, four front doors: what each kind of client gets for known and
//! unknown paths, request ids, and CORS.

use bytes::Bytes;
use http::{Request, StatusCode, uri::PathAndQuery};
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use prost::Message as _;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::harness::{TestServer, get, grpc_frame, grpc_web_call, http, parse_grpc_web_body};

async fn raw_grpc_call(server: &TestServer, path: &'static str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    grpc.unary(
        tonic::Request::new(HealthCheckRequest::default()),
        PathAndQuery::from_static(path),
        codec,
    )
    .await
    .expect_err("the call must fail")
}

#[tokio::test]
async fn unknown_rest_paths_are_404_with_a_json_error() {
    let server = TestServer::start().await;
    for path in ["/nope", "/api/v1/nope", "/api/v2/auth/login"] {
        let answer = get(&server.url(path)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        let body = answer.json();
        assert_eq!(body["error"]["code"], 404);
        assert_eq!(body["error"]["status"], "NOT_FOUND");
        assert_eq!(body["error"]["details"][0]["reason"], "ROUTE_NOT_FOUND");
        assert!(body["error"]["message"].as_str().unwrap().contains(path));
    }
}

#[tokio::test]
async fn a_known_path_with_the_wrong_method_is_405_with_a_json_error() {
    let server = TestServer::start().await;
    let answer = http(
        Request::delete(server.url("/health"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    let error = &answer.json()["error"];
    assert_eq!(error["details"][0]["reason"], "METHOD_NOT_ALLOWED");
    // Not the caller's data but the operation: the gRPC code of an
    // operation a path does not have.
    assert_eq!(error["status"], "UNIMPLEMENTED", "{error}");
}

#[tokio::test]
async fn unknown_grpc_services_and_methods_are_unimplemented() {
    let server = TestServer::start().await;
    let status = raw_grpc_call(&server, "/no.such.v1.Service/Call").await;
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(
        status.message().contains("/no.such.v1.Service/Call"),
        "{status:?}"
    );
    let status = raw_grpc_call(&server, "/grpc.health.v1.Health/NoSuchMethod").await;
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
}

#[tokio::test]
async fn unknown_grpc_web_methods_are_unimplemented_in_grpc_web_form() {
    let server = TestServer::start().await;
    let answer = grpc_web_call(
        &server,
        "/no.such.v1.Service/Call",
        &HealthCheckRequest::default(),
    )
    .await;
    assert_eq!(answer.http, StatusCode::OK);
    assert_eq!(answer.grpc_status(), Some(12));
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web"),
    );
}

#[tokio::test]
async fn grpc_web_works_over_http2_too() {
    let server = TestServer::start().await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = Request::post(server.url("/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(Full::new(grpc_frame(
            0,
            &HealthCheckRequest::default().encode_to_vec(),
        )))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body: Bytes = response.into_body().collect().await.unwrap().to_bytes();
    let (messages, trailers) = parse_grpc_web_body(body);
    assert_eq!(trailers["grpc-status"], "0");
    let reply = HealthCheckResponse::decode(messages[0].clone()).unwrap();
    assert_eq!(reply.status, 1, "SERVING");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let server = TestServer::start().await;

    let given = http(
        Request::get(server.url("/health/live"))
            .header("x-request-id", "trace-me-123")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(given.headers["x-request-id"], "trace-me-123");

    let generated = get(&server.url("/nope")).await;
    let id = generated.headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(id, get(&server.url("/nope")).await.headers["x-request-id"]);

    let too_long = "x".repeat(200);
    let replaced = http(
        Request::get(server.url("/health/live"))
            .header("x-request-id", &too_long)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_ne!(replaced.headers["x-request-id"], too_long.as_str());

    // gRPC responses carry it as metadata.
    let mut client = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-call-7".parse().unwrap());
    let response = client.check(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "grpc-call-7"
    );
}

#[tokio::test]
async fn browsers_may_call_grpc_web_and_rest_cross_origin() {
    let server = TestServer::start().await;
    let preflight = http(
        Request::options(server.url("/grpc.health.v1.Health/Check"))
            .header("origin", "http://app.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "x-grpc-web,content-type,authorization",
            )
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(preflight.status, StatusCode::OK);
    assert_eq!(preflight.headers["access-control-allow-origin"], "*");
    let allowed = preflight.headers["access-control-allow-headers"]
        .to_str()
        .unwrap();
    for header in ["x-grpc-web", "content-type", "authorization"] {
        assert!(allowed.contains(header), "{header} not in {allowed}");
    }
}

#[tokio::test]
async fn native_grpc_answers_carry_no_cors_headers() {
    // Browsers cannot speak native gRPC, so it skips CORS (and its cost).
    let server = TestServer::start().await;
    let mut client = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request
        .metadata_mut()
        .insert("origin", "http://app.example".parse().unwrap());
    let response = client.check(request).await.unwrap();
    let headers = response.metadata().clone().into_headers();
    for name in [
        "access-control-allow-origin",
        "access-control-expose-headers",
        "vary",
    ] {
        assert!(
            headers.get(name).is_none(),
            "{name}: {:?}",
            headers.get(name)
        );
    }
    // grpc-web, from a browser, still gets them.
    let web = http(
        Request::post(server.url("/grpc.health.v1.Health/Check"))
            .header("origin", "http://app.example")
            .header("content-type", "application/grpc-web+proto")
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
            .unwrap(),
    )
    .await;
    assert_eq!(web.headers["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn a_configured_origin_list_allows_only_those_origins_with_credentials() {
    let server = TestServer::start_with(|config| {
        config.cors_origin =
            slop_server::infra::config::CorsOrigin::List(vec!["https://app.example".into()]);
    })
    .await;
    let preflight = |origin: &'static str| {
        http(
            Request::options(server.url("/health"))
                .header("origin", origin)
                .header("access-control-request-method", "GET")
                .body(Full::default())
                .unwrap(),
        )
    };
    let allowed = preflight("https://app.example").await;
    assert_eq!(
        allowed.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(allowed.headers["access-control-allow-credentials"], "true");
    let refused = preflight("https://evil.example").await;
    assert!(refused.headers.get("access-control-allow-origin").is_none());
}

/// The REST routes and the contract's `google.api.http` annotations agree.
/// The bridge makes its routes from the bindings (`slop_bridge::bound`), so
/// no route exists that no annotation binds; its table of operations has
/// exactly the annotated RPCs, each once; every binding's method and path
/// are served (the answer is the operation's, here UNAUTHENTICATED or a
/// refusal of the request, never a route error); and a path the
/// annotations bind answers every method they do not bind with 405.
#[tokio::test]
async fn the_rest_routes_are_the_contracts_google_api_http_bindings() {
    let server = TestServer::start().await;
    let rules = slop_api::rest::HTTP_RULES;
    let mut operations: Vec<&str> = slop_bridge::rest_operations().collect();
    operations.sort_unstable();
    let mut annotated: Vec<&str> = rules.iter().map(|rule| rule.grpc_path).collect();
    annotated.sort_unstable();
    annotated.dedup();
    assert_eq!(
        operations, annotated,
        "the bridge's operations (rest.rs, notifications.rs, sse.rs) are not the annotated RPCs"
    );
    assert_eq!(
        rules.len(),
        19,
        "one binding per RPC of the three services: {rules:#?}"
    );
    // The reason of a routing refusal (an unknown path, a method the path
    // does not have), if the answer is one.
    let route_error = |answer: &crate::harness::Answer| -> Option<String> {
        if answer.status != StatusCode::NOT_FOUND && answer.status != StatusCode::METHOD_NOT_ALLOWED
        {
            return None;
        }
        let reason = answer.json()["error"]["details"][0]["reason"]
            .as_str()?
            .to_owned();
        ["ROUTE_NOT_FOUND", "METHOD_NOT_ALLOWED"]
            .contains(&reason.as_str())
            .then_some(reason)
    };
    // A value for each `{field}` of a path template.
    let concrete = |template: &str| -> String {
        template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') && segment.ends_with('}') {
                    "x"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    for rule in rules {
        assert!(rule.path.starts_with("/api/v1/"), "{rule:?}");
        let body = if rule.body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::json!({})
        };
        let path = concrete(rule.path);
        let answer = crate::harness::rest(&server, rule.method, &path, None, body).await;
        assert_eq!(
            route_error(&answer),
            None,
            "{} {path} ({}) is not routed",
            rule.method,
            rule.grpc_path
        );
    }
    let mut paths: Vec<&str> = rules.iter().map(|rule| rule.path).collect();
    paths.sort_unstable();
    paths.dedup();
    for template in paths {
        let path = concrete(template);
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if rules
                .iter()
                .any(|rule| rule.path == template && rule.method == method)
            {
                continue;
            }
            let answer =
                crate::harness::rest(&server, method, &path, None, serde_json::Value::Null).await;
            assert_eq!(
                route_error(&answer).as_deref(),
                Some("METHOD_NOT_ALLOWED"),
                "{method} {path}: routed, but no annotation binds it"
            );
        }
    }
}
