//! Native gRPC calls to the services on the hot path, handed straight to
//! their tonic servers.
//!
//! Through axum's router a gRPC call pays for a path match, the route's
//! extensions, and a boxed clone of the route's whole stack of services:
//! 5 % of `ValidateToken`'s CPU in a profile (issue #13). [`App`] sends
//! native gRPC over HTTP/2 to a service of its own ([`Services`] under the
//! same layers the router gives gRPC), and everything else (grpc-web, CORS
//! preflights, gRPC over HTTP/1.1, reflection, unknown services, REST) to
//! the router, as before.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use axum::{
    Router, body::Body, extract::Request, response::Response, routing::future::RouteFuture,
};
use bytes::Bytes;
use futures_util::future::{BoxFuture, Either};
use http::{Method, Version};
use slop_api::{
    auth::auth_service_server::AuthServiceServer,
    notification::notification_service_server::NotificationServiceServer,
    session::session_service_server::SessionServiceServer,
};
use tonic::server::NamedService;
use tonic_health::{pb::health_server::HealthServer, server::HealthService};
use tower::Service;

use crate::{
    services::{AuthApi, NotificationApi, SessionApi},
    transport::{
        around::AroundService,
        cors::is_native_grpc,
        decode_errors::DecodeErrors,
        metrics::{GrpcStatus, MaybeRecord},
        shutdown::EndStreamsOnShutdown,
        telemetry::RequestContext,
    },
};

/// The tonic servers of the services native gRPC calls reach without the
/// router.
#[derive(Clone)]
pub struct Services {
    /// `slop.auth.v1.AuthService`.
    pub auth: AuthServiceServer<AuthApi>,
    /// `slop.session.v1.SessionService`.
    pub sessions: SessionServiceServer<SessionApi>,
    /// `slop.notification.v1.NotificationService`.
    pub notifications: NotificationServiceServer<NotificationApi>,
    /// `grpc.health.v1.Health`.
    pub health: HealthServer<HealthService>,
}

/// Which of [`Services`] a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    Auth,
    Sessions,
    Notifications,
    Health,
}

impl Named {
    /// The service of `path` (`/<package.Service>/<Method>`), if it is one
    /// of [`Services`].
    fn of(path: &str) -> Option<Self> {
        let (service, _method) = path.strip_prefix('/')?.split_once('/')?;
        [
            (AuthServiceServer::<AuthApi>::NAME, Self::Auth),
            (SessionServiceServer::<SessionApi>::NAME, Self::Sessions),
            (
                NotificationServiceServer::<NotificationApi>::NAME,
                Self::Notifications,
            ),
            (HealthServer::<HealthService>::NAME, Self::Health),
        ]
        .into_iter()
        .find_map(|(name, named)| (name == service).then_some(named))
    }
}

impl Service<Request> for Services {
    type Response = Response;
    type Error = Infallible;
    type Future = ServicesFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        ready!(Service::<Request>::poll_ready(&mut self.auth, cx))?;
        ready!(Service::<Request>::poll_ready(&mut self.sessions, cx))?;
        ready!(Service::<Request>::poll_ready(&mut self.notifications, cx))?;
        Service::<Request>::poll_ready(&mut self.health, cx)
    }

    fn call(&mut self, request: Request) -> ServicesFuture {
        let inner = match Named::of(request.uri().path()) {
            Some(Named::Auth) => self.auth.call(request),
            Some(Named::Sessions) => self.sessions.call(request),
            Some(Named::Notifications) => self.notifications.call(request),
            Some(Named::Health) => self.health.call(request),
            // `App` sends only paths `Named::of` knows; were it to send
            // another, the caller learns it, rather than some service
            // answering for a method it does not have.
            None => {
                let answer = unnamed(request.uri().path());
                Box::pin(std::future::ready(Ok(answer)))
            }
        };
        ServicesFuture(inner)
    }
}

/// UNIMPLEMENTED, as a gRPC answer, for a call to `path`, which names none
/// of [`Services`].
fn unnamed(path: &str) -> http::Response<tonic::body::Body> {
    tonic::Status::unimplemented(format!("{path} is not a method of this server")).into_http()
}

/// A tonic server's answer, with the body axum's responses carry.
pub struct ServicesFuture(
    BoxFuture<'static, Result<http::Response<tonic::body::Body>, Infallible>>,
);

impl Future for ServicesFuture {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(response) = ready!(self.0.as_mut().poll(cx));
        Poll::Ready(Ok(response.map(Body::new)))
    }
}

/// [`Services`] under the layers the router gives gRPC, outermost first:
/// request metrics, the request's id and span, the grpc-status for
/// metrics, decode errors, the stream cut-off. (The router's CORS and
/// grpc-web layers pass native gRPC over HTTP/2 through untouched.)
pub type Layered = AroundService<
    MaybeRecord,
    AroundService<
        RequestContext,
        AroundService<GrpcStatus, DecodeErrors<AroundService<EndStreamsOnShutdown, Services>>>,
    >,
>;

/// The service behind the port: native gRPC to one of [`Services`]
/// straight to it, everything else to the router.
#[derive(Clone)]
pub struct App {
    router: Router,
    grpc: Layered,
}

impl App {
    /// `router` for everything, except native gRPC calls to `grpc`'s
    /// services.
    pub fn new(router: Router, grpc: Layered) -> Self {
        Self { router, grpc }
    }

    /// Whether `request` goes to the services directly: native gRPC, over
    /// HTTP/2 (tonic-web refuses gRPC over HTTP/1.1 with a 400, and the
    /// router keeps doing so), POST, to one of [`Services`].
    fn is_direct<B>(request: &http::Request<B>) -> bool {
        request.version() == Version::HTTP_2
            && request.method() == Method::POST
            && is_native_grpc(request)
            && Named::of(request.uri().path()).is_some()
    }

    /// The answer to `request`, from this `App` in place when it is ready
    /// (the router and tonic's servers always are), else from a clone that
    /// waits until it is, as tower asks. Cloning it for every request
    /// instead (`oneshot`) counted a reference to each of its services, a
    /// dozen atomic operations on counts every connection shares.
    pub fn answer<B>(&mut self, request: http::Request<B>) -> Answer<B>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Service::<http::Request<B>>::poll_ready(self, &mut cx) {
            Poll::Ready(Ok(())) => Either::Left(self.call(request)),
            Poll::Pending => Either::Right(tower::ServiceExt::oneshot(self.clone(), request)),
        }
    }
}

/// What [`App::answer`] answers with.
pub type Answer<B> = Either<AppFuture, tower::util::Oneshot<App, http::Request<B>>>;

impl<B> Service<http::Request<B>> for App
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AppFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        ready!(self.grpc.poll_ready(cx))?;
        <Router as Service<Request>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: http::Request<B>) -> AppFuture {
        if Self::is_direct(&request) {
            AppFuture::Direct {
                inner: self.grpc.call(request.map(Body::new)),
            }
        } else {
            AppFuture::Routed {
                inner: self.router.call(request),
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`App`]: from the services directly or through the
    /// router. (`pin_project!` takes no doc comments on the fields: each
    /// is the answer its variant names.)
    #[allow(missing_docs)]
    #[project = AppFutureProjection]
    pub enum AppFuture {
        /// Native gRPC to one of [`Services`].
        Direct { #[pin] inner: <Layered as Service<Request>>::Future },
        /// Everything else.
        Routed { #[pin] inner: RouteFuture<Infallible> },
    }
}

impl Future for AppFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AppFutureProjection::Direct { inner } => inner.poll(cx),
            AppFutureProjection::Routed { inner } => inner.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hot_services_are_named() {
        for (path, named) in [
            ("/slop.auth.v1.AuthService/ValidateToken", Named::Auth),
            (
                "/slop.session.v1.SessionService/ListSessions",
                Named::Sessions,
            ),
            (
                "/slop.notification.v1.NotificationService/Subscribe",
                Named::Notifications,
            ),
            ("/grpc.health.v1.Health/Check", Named::Health),
        ] {
            assert_eq!(Named::of(path), Some(named), "{path}");
        }
        for other in [
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/slop.auth.v1.AuthServiceX/Login",
            "/slop.auth.v1.AuthService",
            "slop.auth.v1.AuthService/Login",
            "/",
            "/api/v1/auth/me",
        ] {
            assert_eq!(Named::of(other), None, "{other}");
        }
    }

    #[test]
    fn a_path_naming_none_of_the_services_is_unimplemented() {
        let answer = unnamed("/no.Such/Method");
        assert_eq!(answer.status(), http::StatusCode::OK);
        let status = tonic::Status::from_header_map(answer.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert_eq!(
            status.message(),
            "/no.Such/Method is not a method of this server"
        );
    }

    fn request(version: Version, method: Method, content_type: &str, path: &str) -> Request {
        http::Request::builder()
            .version(version)
            .method(method)
            .uri(path)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Body::empty())
            .unwrap()
    }

    #[test]
    fn only_native_grpc_over_http2_to_a_hot_service_is_direct() {
        let path = "/slop.auth.v1.AuthService/ValidateToken";
        for content_type in ["application/grpc", "application/grpc+proto"] {
            let native = request(Version::HTTP_2, Method::POST, content_type, path);
            assert!(App::is_direct(&native), "{content_type}");
        }
        for (version, method, content_type, path) in [
            (Version::HTTP_11, Method::POST, "application/grpc", path),
            (Version::HTTP_2, Method::GET, "application/grpc", path),
            (Version::HTTP_2, Method::OPTIONS, "application/grpc", path),
            (Version::HTTP_2, Method::POST, "application/grpc-web", path),
            (
                Version::HTTP_2,
                Method::POST,
                "application/grpc-web-text",
                path,
            ),
            (Version::HTTP_2, Method::POST, "application/json", path),
            (
                Version::HTTP_2,
                Method::POST,
                "application/grpc",
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            ),
            (
                Version::HTTP_2,
                Method::POST,
                "application/grpc",
                "/no.Such/Method",
            ),
        ] {
            assert!(
                !App::is_direct(&request(version, method.clone(), content_type, path)),
                "{version:?} {method} {content_type} {path}"
            );
        }
    }
}
