//! CORS: what lets a browser page on another origin call the server
//! (REST, WebSocket upgrades, grpc-web). Native gRPC skips it, and the
//! [security headers](crate::security_headers) with it: browsers cannot
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
    config::CorsOrigin,
    security_headers::{Secured, SecurityHeaders},
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

/// Applies a [`CorsLayer`] and the [`SecurityHeaders`] to everything but
/// native gRPC.
#[derive(Clone)]
pub struct BrowsersOnlyLayer {
    cors: Arc<CorsLayer>,
    headers: SecurityHeaders,
}

impl BrowsersOnlyLayer {
    /// `cors`, and `headers` on every answer (preflights too), for every
    /// request that is not native gRPC.
    pub fn new(cors: CorsLayer, headers: SecurityHeaders) -> Self {
        Self {
            cors: Arc::new(cors),
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
            headers: self.headers.clone(),
        }
    }
}

/// The service of [`BrowsersOnlyLayer`]. The router clones it for every
/// request; the CORS settings and the headers are shared, and a [`Cors`]
/// service is made only for requests that need one.
#[derive(Clone)]
pub struct BrowsersOnly<S> {
    inner: S,
    cors: Arc<CorsLayer>,
    headers: SecurityHeaders,
}

/// Whether a request is native gRPC: `application/grpc` or
/// `application/grpc+<codec>`, not grpc-web (`application/grpc-web…`).
fn is_native_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| {
            let value = value.as_bytes();
            value == b"application/grpc" || value.starts_with(b"application/grpc+")
        })
}

impl<S, B, ResBody> Service<Request<B>> for BrowsersOnly<S>
where
    S: Service<Request<B>, Response = http::Response<ResBody>> + Clone,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Either<S::Future, Secured<<Cors<S> as Service<Request<B>>>::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if is_native_grpc(&request) {
            Either::Left(self.inner.call(request))
        } else {
            // The clone that was made ready goes into the CORS service, as
            // tower asks of a service that is called after poll_ready.
            let fresh = self.inner.clone();
            let ready = std::mem::replace(&mut self.inner, fresh);
            let answer = self.cors.layer(ready).call(request);
            Either::Right(Secured::new(answer, self.headers.clone()))
        }
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
