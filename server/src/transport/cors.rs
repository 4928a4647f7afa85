//! CORS: what lets a browser page on another origin call the server
//! (REST, WebSocket upgrades, grpc-web). Native gRPC skips it, and the
//! [security headers](crate::transport::security_headers) with it: browsers cannot
//! speak it, and the headers CORS adds to every answer (`vary`, and
//! `access-control-*` when there is an `origin`) would cost every backend
//! call for nothing.
//!
//! The rules are those tower-http's `CorsLayer` applies when configured as
//! below (a test holds the two to the same answers), worked out here with
//! no allocation per request: that layer clones its configuration, joins
//! its `vary` list into a new value and gathers its headers in a map of
//! their own on every call, and must clone the service beneath it (a boxed
//! route) to wrap it; the answers' headers here are `static`, and the
//! inner service is called in place.
//!
//! - Every answer: `vary: origin, access-control-request-method,
//!   access-control-request-headers` (added to the answer's own), and
//!   `access-control-allow-origin`: `*` when CORS_ORIGIN is `*`, else the
//!   request's `origin` when it is one of CORS_ORIGIN's (byte for byte), with
//!   `access-control-allow-credentials: true`.
//! - `OPTIONS` (a preflight) is answered here, 200 with an empty body,
//!   adding the allowed methods and headers and a day's `max-age`; the
//!   routes never see it.
//! - Any other method: `access-control-expose-headers`.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method, Request, header};
use tower::{Layer, Service};

use crate::{infra::config::CorsOrigin, transport::security_headers::SecurityHeaders};

/// The request headers a page may send.
const ALLOW_HEADERS: &str = "authorization,content-type,grpc-timeout,last-event-id,x-csrf-token,x-grpc-web,x-request-id,x-user-agent";
/// The answer headers a page may read.
const EXPOSE_HEADERS: &str =
    "grpc-message,grpc-status,grpc-status-details-bin,retry-after,www-authenticate,x-request-id";
/// The methods a page may use.
const ALLOW_METHODS: &str = "GET,POST,PUT,PATCH,DELETE";
/// How long a browser may keep a preflight's answer: a day.
const MAX_AGE: &str = "86400";
/// The request headers an answer depends on, for caches.
const VARY: &str = "origin, access-control-request-method, access-control-request-headers";

/// Which pages may call, from CORS_ORIGIN.
#[derive(Debug)]
enum AllowedOrigins {
    /// Any page, without credentials (`*`).
    Any,
    /// These pages (exact `origin` values), with credentials.
    List(Vec<HeaderValue>),
}

impl AllowedOrigins {
    fn new(origin: &CorsOrigin) -> Self {
        match origin {
            CorsOrigin::Any => Self::Any,
            CorsOrigin::List(origins) => Self::List(
                origins
                    .iter()
                    .filter_map(|origin| HeaderValue::from_str(origin).ok())
                    .collect(),
            ),
        }
    }

    /// The `access-control-allow-origin` and `-allow-credentials` values
    /// for a request from `origin`.
    fn answer(&self, origin: Option<&HeaderValue>) -> CorsAnswer {
        match self {
            Self::Any => CorsAnswer {
                allow_origin: Some(HeaderValue::from_static("*")),
                credentials: false,
            },
            Self::List(allowed) => CorsAnswer {
                allow_origin: origin.filter(|origin| allowed.contains(origin)).cloned(),
                credentials: true,
            },
        }
    }
}

/// The CORS headers of one answer that depend on its request.
pub struct CorsAnswer {
    allow_origin: Option<HeaderValue>,
    credentials: bool,
}

impl CorsAnswer {
    /// Adds the headers every answer gets: `vary` to the answer's own, the
    /// others replacing any the answer set.
    fn apply(self, headers: &mut HeaderMap) {
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.append(header::VARY, HeaderValue::from_static(VARY));
        if let Some(origin) = self.allow_origin {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
    }

    /// The answer to a preflight.
    fn preflight(self) -> Response {
        let mut response = Response::default();
        let headers = response.headers_mut();
        self.apply(headers);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE),
        );
        response
    }

    /// Adds the headers of an answer that is not a preflight's.
    fn apply_to_answer(self, headers: &mut HeaderMap) {
        self.apply(headers);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
}

/// What [`BrowsersOnly`] decides by, shared by every copy of it.
#[derive(Debug)]
struct BrowserRules {
    origins: AllowedOrigins,
    cookie_origins: CookieOrigins,
}

/// Applies CORS for CORS_ORIGIN, the cookie origin check
/// ([`CookieOrigins`]) and the [`SecurityHeaders`] to everything but native
/// gRPC.
#[derive(Clone)]
pub struct BrowsersOnlyLayer {
    rules: Arc<BrowserRules>,
    headers: SecurityHeaders,
}

impl BrowsersOnlyLayer {
    /// CORS and the cookie origin check for CORS_ORIGIN, and `headers` on
    /// every answer (preflights and refusals too).
    pub fn new(origin: &CorsOrigin, headers: SecurityHeaders) -> Self {
        Self {
            rules: Arc::new(BrowserRules {
                origins: AllowedOrigins::new(origin),
                cookie_origins: CookieOrigins::new(origin),
            }),
            headers,
        }
    }
}

impl<S> Layer<S> for BrowsersOnlyLayer {
    type Service = BrowsersOnly<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BrowsersOnly {
            inner,
            rules: self.rules.clone(),
            headers: self.headers,
        }
    }
}

/// The service of [`BrowsersOnlyLayer`]. The router clones it for every
/// request; the settings are shared.
#[derive(Clone)]
pub struct BrowsersOnly<S> {
    inner: S,
    rules: Arc<BrowserRules>,
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
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BrowsersFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if is_native_grpc(&request) {
            return BrowsersFuture::Native {
                inner: self.inner.call(request),
            };
        }
        let headers = self.headers;
        let answered = |mut response: Response| {
            headers.apply(response.headers_mut());
            BrowsersFuture::Answered {
                response: Some(response),
            }
        };
        if self.rules.cookie_origins.refuses(&request) {
            return answered(origin_not_allowed());
        }
        let cors = self
            .rules
            .origins
            .answer(request.headers().get(header::ORIGIN));
        if request.method() == Method::OPTIONS {
            return answered(cors.preflight());
        }
        BrowsersFuture::Called {
            inner: self.inner.call(request),
            answer: Some(cors),
            headers,
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`BrowsersOnly`]. (`pin_project!` takes no doc
    /// comments on the fields.)
    #[allow(missing_docs)]
    #[project = BrowsersFutureProjection]
    pub enum BrowsersFuture<F> {
        /// Native gRPC: the inner service's answer, untouched.
        Native { #[pin] inner: F },
        /// Answered here (a preflight, a refusal), with the security
        /// headers already on.
        Answered { response: Option<Response> },
        /// The inner service's answer, with the CORS and security headers.
        Called { #[pin] inner: F, answer: Option<CorsAnswer>, headers: SecurityHeaders },
    }
}

impl<F, E> Future for BrowsersFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            BrowsersFutureProjection::Native { inner } => inner.poll(cx),
            BrowsersFutureProjection::Answered { response } => Poll::Ready(Ok(response
                .take()
                .expect("a BrowsersFuture is not polled after it completed"))),
            BrowsersFutureProjection::Called {
                inner,
                answer,
                headers,
            } => {
                let mut response = ready!(inner.poll(cx))?;
                let answer = answer
                    .take()
                    .expect("a BrowsersFuture is not polled after it completed");
                answer.apply_to_answer(response.headers_mut());
                headers.apply(response.headers_mut());
                Poll::Ready(Ok(response))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, time::Duration};

    use axum::body::Body;
    use http::HeaderName;
    use tower::ServiceExt as _;
    use tower_http::cors::{AllowOrigin, CorsLayer};

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

    /// tower-http's CORS as the server configured it before it had its own.
    fn tower_http_cors(origin: &CorsOrigin) -> CorsLayer {
        let names = |list: &str| {
            list.split(',')
                .map(|name| HeaderName::from_bytes(name.as_bytes()).unwrap())
                .collect::<Vec<_>>()
        };
        let layer = CorsLayer::new()
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers(names(ALLOW_HEADERS))
            .expose_headers(names(EXPOSE_HEADERS))
            .max_age(Duration::from_secs(24 * 60 * 60));
        match origin {
            CorsOrigin::Any => layer.allow_origin(AllowOrigin::any()),
            CorsOrigin::List(origins) => layer
                .allow_origin(AllowOrigin::list(
                    origins.iter().map(|o| HeaderValue::from_str(o).unwrap()),
                ))
                .allow_credentials(true),
        }
    }

    /// Answers 201 with headers of its own that CORS adds to or replaces.
    async fn inner(_request: Request<Body>) -> Result<Response, Infallible> {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = http::StatusCode::CREATED;
        let headers = response.headers_mut();
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("https://set.by.the.handler"),
        );
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("origin"));
        Ok(response)
    }

    fn request(method: &Method, origin: Option<&str>, preflight: bool) -> Request<Body> {
        let mut request = Request::builder().method(method.clone()).uri("/api/v1/x");
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        if preflight {
            request = request
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type");
        }
        request.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn answers_as_tower_https_cors_did_with_the_security_headers() {
        let configs = [
            CorsOrigin::Any,
            CorsOrigin::List(vec![
                "https://app.example".into(),
                "https://admin.example:8443".into(),
            ]),
        ];
        let origins = [
            None,
            Some("https://app.example"),
            Some("https://admin.example:8443"),
            Some("https://APP.example"),
            Some("https://evil.example"),
        ];
        let methods = [
            Method::GET,
            Method::POST,
            Method::DELETE,
            Method::OPTIONS,
            Method::HEAD,
        ];
        let mut compared = 0;
        for config in &configs {
            for production in [false, true] {
                let security = SecurityHeaders::new(production);
                let ours = BrowsersOnlyLayer::new(config, security).layer(tower::service_fn(inner));
                let theirs = tower_http_cors(config).layer(tower::service_fn(inner));
                for origin in origins {
                    for method in &methods {
                        for preflight in [false, true] {
                            let case = format!(
                                "{config:?} production={production} {method} origin={origin:?} preflight={preflight}"
                            );
                            let mine = ours
                                .clone()
                                .oneshot(request(method, origin, preflight))
                                .await
                                .unwrap();
                            let mut expected = theirs
                                .clone()
                                .oneshot(request(method, origin, preflight))
                                .await
                                .unwrap();
                            security.apply(expected.headers_mut());
                            assert_eq!(mine.status(), expected.status(), "{case}");
                            assert_eq!(mine.headers(), expected.headers(), "{case}");
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(compared, 2 * 2 * 5 * 5 * 2);
    }

    #[tokio::test]
    async fn native_grpc_passes_untouched() {
        let service = BrowsersOnlyLayer::new(&CorsOrigin::Any, SecurityHeaders::new(true))
            .layer(tower::service_fn(inner));
        let request = Request::builder()
            .method(Method::POST)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::ORIGIN, "https://app.example")
            .body(Body::empty())
            .unwrap();
        let answer = service.oneshot(request).await.unwrap();
        let expected = inner(Request::new(Body::empty())).await.unwrap();
        assert_eq!(answer.headers(), expected.headers());
    }
}
