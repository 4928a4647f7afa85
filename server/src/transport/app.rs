//! The one service behind the one port: native gRPC, grpc-web, REST, the
//! WebSocket adapter and the health endpoints, with the layers they share.
//! Native gRPC over HTTP/2 to the Auth, Session, Notification and Health
//! services goes to them without the router's matching, under the same
//! layers ([`native_grpc`](super::native_grpc)); the router serves the rest:
//!
//! ```text
//! metrics (unless METRICS_ADDR=off) ─ request-id + log span ─
//! CORS and security headers (not native gRPC) ─┐
//!   ├─ /health, /health/ready, /health/live
//!   ├─ /api/v1/...            (bridge: REST, WebSocket)
//!   ├─ /.well-known/jwks.json (public keys of access tokens)
//!   ├─ /<package.Service>/... ─ grpc-web ─ grpc-status for metrics ─ decode errors
//!   │                           ─ stream cut-off ─ tonic
//!   └─ anything else: gRPC UNIMPLEMENTED for gRPC content types,
//!                     404 with a JSON error for the rest
//! ```

use std::{convert::Infallible, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, header};
use slop_api::{
    auth::auth_service_server::AuthServiceServer,
    notification::notification_service_server::NotificationServiceServer,
    session::session_service_server::SessionServiceServer,
};
use slop_bridge::Bridge;
use tonic::server::NamedService;
use tower::{Layer as _, Service};

use crate::{
    identity::{Identity, caller},
    infra::config::{Config, HealthDetails, MetricsAddr},
    services::{AuthApi, NotificationApi, SessionApi},
    transport::{
        around::AroundLayer,
        health::{self, Health},
        metrics,
        native_grpc::{self, App},
        shutdown::{EndStreamsOnShutdown, StreamCutoff, StreamingMethods},
        telemetry,
    },
};

/// The encoded descriptor sets of every gRPC service the router serves.
pub const DESCRIPTOR_SETS: [&[u8]; 4] = [
    slop_api::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// Everything the router is built from.
pub struct Parts {
    /// Readiness and dependency state.
    pub health: Arc<Health>,
    /// The standard gRPC health service, fed by `health`.
    pub health_service:
        tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    /// Accounts, sessions and tokens.
    pub identity: Arc<Identity>,
    /// Notification streams.
    pub notifications: NotificationApi,
    /// The WebSocket adapter's view of the server.
    pub bridge: Bridge,
}

/// The cookies of browser sign-in, for the REST login and logout (the
/// services know none): the session cookie carries the session id and its
/// MAC, the CSRF cookie the session's CSRF token, both from APP_SECRET.
/// The CSRF cookie alone may name a domain (CSRF_COOKIE_DOMAIN).
struct BrowserCookies(Arc<Identity>);

impl slop_bridge::rest::SessionCookies for BrowserCookies {
    fn sign_in(&self, session_id: &str) -> Vec<String> {
        let settings = &self.0.settings;
        caller::login_cookies(
            &self.0.auth,
            session_id,
            settings.secure_cookies,
            settings.session_max_lifetime,
            settings.csrf_cookie_domain.as_deref(),
        )
        .into()
    }

    fn sign_out(&self) -> Vec<String> {
        let settings = &self.0.settings;
        caller::logout_cookies(
            settings.secure_cookies,
            settings.csrf_cookie_domain.as_deref(),
        )
        .into()
    }
}

/// Builds the service behind the port.
pub fn build(config: &Config, parts: Parts) -> Result<App, crate::Error> {
    let reflection_sets: [&[u8]; 2] = [
        slop_api::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ];
    let reflection = |router: Router| -> Result<Router, crate::Error> {
        if !config.grpc_reflection() {
            return Ok(router);
        }
        let v1 = reflection_sets
            .iter()
            .fold(tonic_reflection::server::Builder::configure(), |b, set| {
                b.register_encoded_file_descriptor_set(set)
            })
            .build_v1()?;
        let v1alpha = reflection_sets
            .iter()
            .fold(tonic_reflection::server::Builder::configure(), |b, set| {
                b.register_encoded_file_descriptor_set(set)
            })
            .build_v1alpha()?;
        Ok(grpc_service(grpc_service(router, v1), v1alpha))
    };

    let streaming = StreamingMethods::from_descriptor_sets(&DESCRIPTOR_SETS)?;
    let request_types =
        crate::transport::decode_errors::RequestTypes::from_descriptor_sets(&DESCRIPTOR_SETS)?;
    let cutoff = Arc::new(StreamCutoff {
        methods: Arc::new(streaming),
        shutdown: parts.bridge.shutdown.clone(),
    });

    let grpc = Router::new();
    let auth = AuthApi::new(parts.identity.clone());
    let sessions = SessionApi::new(parts.identity.clone());
    let rest = slop_bridge::rest::Services {
        auth: Arc::new(auth.clone()),
        sessions: Arc::new(sessions.clone()),
        notifications: Arc::new(parts.notifications.clone()),
        cookies: Arc::new(BrowserCookies(parts.identity.clone())),
    };
    let services = native_grpc::Services {
        auth: AuthServiceServer::new(auth),
        sessions: SessionServiceServer::new(sessions),
        notifications: NotificationServiceServer::new(parts.notifications),
        health: parts.health_service,
    };
    let grpc = grpc_service(grpc, services.auth.clone());
    let grpc = grpc_service(grpc, services.sessions.clone());
    let grpc = grpc_service(grpc, services.notifications.clone());
    let grpc = grpc_service(grpc, services.health.clone());
    let decode_errors = crate::transport::decode_errors::DecodeErrorsLayer::new(request_types);
    let end_streams = AroundLayer::new(EndStreamsOnShutdown(cutoff));
    let grpc_status = AroundLayer::new(metrics::GrpcStatus);
    let grpc = reflection(grpc)?
        .layer(end_streams.clone())
        .layer(decode_errors.clone())
        .layer(grpc_status.clone())
        .layer(tonic_web::GrpcWebLayer::new());
    let direct = grpc_status.layer(decode_errors.layer(end_streams.layer(services)));

    let tokens = parts.identity.tokens.clone();
    let jwks = Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let jwks = tokens.jwks();
            async move {
                (
                    [(header::CACHE_CONTROL, "public, max-age=300")],
                    axum::Json(jwks),
                )
            }
        }),
    );
    let router = slop_bridge::router(parts.bridge, rest)
        .merge(health::router(
            parts.health,
            health_details(config, &parts.identity),
        ))
        .merge(jwks)
        .merge(grpc)
        .fallback(unknown_route)
        .method_not_allowed_fallback(slop_bridge::method_not_allowed);
    let record = if config.metrics_addr == MetricsAddr::Off {
        None
    } else {
        Some(metrics::RecordRequests(Arc::new(
            metrics::RequestMetrics::from_descriptor_sets(&DESCRIPTOR_SETS)?,
        )))
    };
    // One layer of three, not three layers: axum boxes every route once
    // per `layer` call, and clones each box (allocating) on every request.
    let router = router.layer((
        AroundLayer::new(metrics::MaybeRecord(record.clone())),
        AroundLayer::new(telemetry::RequestContext),
        crate::transport::cors::BrowsersOnlyLayer::new(
            &config.cors_origin,
            crate::transport::security_headers::SecurityHeaders::new(
                config.app_env() == crate::infra::config::AppEnv::Production,
            ),
        ),
    ));
    let direct = AroundLayer::new(telemetry::RequestContext).layer(direct);
    let direct = AroundLayer::new(metrics::MaybeRecord(record)).layer(direct);
    Ok(App::new(router, direct))
}

/// Who sees the detail of `/health`, as HEALTH_DETAILS says.
fn health_details(config: &Config, identity: &Arc<Identity>) -> health::Details {
    match config.health_details() {
        HealthDetails::Public => health::Details::Public,
        HealthDetails::Off => health::Details::Off,
        HealthDetails::Service => {
            let identity = identity.clone();
            health::Details::To(Arc::new(move |headers| {
                let metadata = tonic::metadata::MetadataMap::from_headers(headers.clone());
                identity
                    .auth
                    .service_key_holder(&crate::services::credentials(&metadata))
                    .is_some()
            }))
        }
    }
}

/// Routes every method of a tonic service, as tonic's own router does.
fn grpc_service<S>(router: Router, service: S) -> Router
where
    S: Service<Request, Error = Infallible> + NamedService + Clone + Send + Sync + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    router.route_service(&format!("/{}/{{*method}}", S::NAME), service)
}

/// A path no route serves: gRPC clients get UNIMPLEMENTED in the form they
/// read (native gRPC or grpc-web), everyone else a 404 JSON error.
async fn unknown_route(request: Request) -> Response {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/grpc") {
        let status =
            tonic::Status::unimplemented(format!("unknown method {}", request.uri().path()));
        let mut response = status.into_http::<Body>();
        // Answer grpc-web in its own content type, so browsers read the status.
        if content_type.starts_with("application/grpc-web") {
            let reply = if content_type.starts_with("application/grpc-web-text") {
                "application/grpc-web-text+proto"
            } else {
                "application/grpc-web+proto"
            };
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(reply));
        }
        return response;
    }
    slop_bridge::error::route_not_found(request.method(), request.uri().path())
}
