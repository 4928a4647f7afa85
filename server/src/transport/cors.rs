//! CORS: what lets a browser page on another origin call the server
//! (REST, WebSocket upgrades, grpc-web). Native gRPC skips it, and the
//! [security headers](crate::transport::security_headers) with it: browsers cannot
//! speak it, and the headers CORS adds to every answer (`vary`, and
//! `access-control-*` when there is an `origin`) would cost every backend
//! call for nothing.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::future::Either;
use http::{HeaderName, HeaderValue, Method, Request, header};
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};

use crate::{
    infra::config::CorsOrigin,
    transport::security_headers::{Secured, SecurityHeaders},
};

/// CORS for browsers: REST, WebSocket upgrades and grpc-web.
pub fn cors(origin: &CorsOrigin) -> CorsLayer {
    const ALLOW: &[&str] = &[
        "authorization",
        "content-type",
        "grpc-timeout",
        "last-event-id",
        "x-csrf-token",
        "x-grpc-web",
        "x-request-id",
        "x-user-agent",
    ];
    const EXPOSE: &[&str] = &[
        "grpc-message",
        "grpc-status",
        "grpc-status-details-bin",
        "retry-after",
        "www-authenticate",
        "x-request-id",
    ];
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers(
            ALLOW
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect::<Vec<_>>(),
        )
        .expose_headers(
            EXPOSE
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect::<Vec<_>>(),
        )
        .max_age(Duration::from_secs(24 * 60 * 60));
    match origin {
        CorsOrigin::Any => layer.allow_origin(AllowOrigin::any()),
        CorsOrigin::List(origins) => layer
            .allow_origin(AllowOrigin::list(
                origins
                    .iter()
                    .filter_map(|origin| HeaderValue::from_str(origin).ok()),
            ))
            .allow_credentials(true),
    }
}

/// Applies CORS for CORS_ORIGIN, the cookie origin check
/// ([`CookieOrigins`]) and the [`SecurityHeaders`] to everything but native
/// gRPC.
#[derive(Clone)]
pub struct BrowsersOnlyLayer {
    cors: Arc<CorsLayer>,
    cookie_origins: Arc<CookieOrigins>,
    headers: SecurityHeaders,
}

impl BrowsersOnlyLayer {
    /// CORS and the cookie origin check for CORS_ORIGIN, and `headers` on
    /// every answer (preflights and refusals too).
    pub fn new(origin: &CorsOrigin, headers: SecurityHeaders) -> Self {
        Self {
            cors: Arc::new(cors(origin)),
            cookie_origins: Arc::new(CookieOrigins::new(origin)),
            headers,
        }
    }
}

impl<S: Clone> Layer<S> for BrowsersOnlyLayer {
    type Service = BrowsersOnly<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BrowsersOnly {
            inner,
            cors: self.cors.clone(),
            cookie_origins: self.cookie_origins.clone(),
            headers: self.headers.clone(),
        }
    }
}

/// The service of [`BrowsersOnlyLayer`]. The router clones it for every
/// request; the settings are shared, and a [`Cors`] service is made only for
/// requests that need one.
#[derive(Clone)]
pub struct BrowsersOnly<S> {
    inner: S,
    cors: Arc<CorsLayer>,
    cookie_origins: Arc<CookieOrigins>,
    headers: SecurityHeaders,
}

/// Which pages may make a browser send its session cookie (or get one).
///
/// SameSite=Lax keeps the cookie off cross-site subrequests, but not off
/// requests from sibling subdomains (same site, another origin), and a
/// cross-site form could still *log a browser in* (login CSRF). So a request
/// that carries the session cookie or asks for one (`?cookie=true`) and
/// comes from a page (it has an `Origin`) is refused unless that page is the
/// API's own origin or listed in CORS_ORIGIN. (`*` lists none: it never
/// allows credentials.) Programs send no `Origin`, and bearer tokens are
/// not ambient: neither is checked.
#[derive(Debug)]
pub struct CookieOrigins {
    allowed: Vec<String>,
}

impl CookieOrigins {
    fn new(origin: &CorsOrigin) -> Self {
        Self {
            allowed: match origin {
                CorsOrigin::Any => Vec::new(),
                CorsOrigin::List(origins) => origins
                    .iter()
                    .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                    .collect(),
            },
        }
    }

    /// Whether `request` rides on the session cookie (or asks for one)
    /// from a page this server does not trust.
    fn refuses<B>(&self, request: &Request<B>) -> bool {
        let Some(origin) = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        if !cookie_mode(request) {
            return false;
        }
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        !(self.allowed.contains(&origin) || same_origin(&origin, request))
    }
}

/// Whether a request carries the session cookie or asks for one.
fn cookie_mode<B>(request: &Request<B>) -> bool {
    let asks = request
        .uri()
        .query()
        .is_some_and(|query| query.split('&').any(|pair| pair == "cookie=true"));
    let cookies = request.headers().get_all(header::COOKIE);
    asks || slop_context::cookie(
        cookies.iter().filter_map(|value| value.to_str().ok()),
        crate::identity::caller::SESSION_COOKIE,
    )
    .is_some()
}

/// Whether `origin` (lowercase `scheme://host[:port]`) is the server's own:
/// the host the request was sent to. (The scheme is not compared: behind a
/// TLS-terminating proxy the server cannot know it.)
fn same_origin<B>(origin: &str, request: &Request<B>) -> bool {
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    host.is_some_and(|host| host.eq_ignore_ascii_case(authority))
}

/// 403 for a cookie request from a page outside CORS_ORIGIN.
fn origin_not_allowed() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let status = crate::services::status::with_reason(
        slop_api::errors::ErrorReason::OriginNotAllowed,
        "requests that use the session cookie are accepted only from CORS_ORIGIN's origins (or the API's own)",
    );
    slop_bridge::error::ApiError(status).into_response()
}

/// Whether a request is native gRPC: `application/grpc` or
/// `application/grpc+<codec>`, not grpc-web (`application/grpc-web…`).
pub(crate) fn is_native_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| {
            let value = value.as_bytes();
            value == b"application/grpc" || value.starts_with(b"application/grpc+")
        })
}

impl<S, B> Service<Request<B>> for BrowsersOnly<S>
where
    S: Service<Request<B>, Response = axum::response::Response> + Clone,
{
    type Response = axum::response::Response;
    type Error = S::Error;
    type Future = Either<
        S::Future,
        Secured<
            Either<
                <Cors<S> as Service<Request<B>>>::Future,
                std::future::Ready<Result<Self::Response, Self::Error>>,
            >,
        >,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if is_native_grpc(&request) {
            return Either::Left(self.inner.call(request));
        }
        let answer = if self.cookie_origins.refuses(&request) {
            Either::Right(std::future::ready(Ok(origin_not_allowed())))
        } else {
            // The clone that was made ready goes into the CORS service, as
            // tower asks of a service that is called after poll_ready.
            let fresh = self.inner.clone();
            let ready = std::mem::replace(&mut self.inner, fresh);
            Either::Left(self.cors.layer(ready).call(request))
        };
        Either::Right(Secured::new(answer, self.headers.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_content_type(value: &str) -> Request<()> {
        Request::builder()
            .header(header::CONTENT_TYPE, value)
            .body(())
            .unwrap()
    }

    #[test]
    fn only_native_grpc_is_native_grpc() {
        assert!(is_native_grpc(&with_content_type("application/grpc")));
        assert!(is_native_grpc(&with_content_type("application/grpc+proto")));
        for other in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/json",
            "application/grpcx",
        ] {
            assert!(!is_native_grpc(&with_content_type(other)), "{other}");
        }
        assert!(!is_native_grpc(&Request::new(())));
    }
}
