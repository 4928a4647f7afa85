//! Middleware as two plain functions around the inner service's future.
//!
//! Every request passes the request-id and metrics middleware, and every
//! gRPC call two more. Written with axum's `from_fn`, each of them clones
//! the whole service stack beneath it and boxes it and its own future, on
//! every request (about 4 % of an authenticated call's CPU, issue #13). An
//! [`Around`] says what to do [`before`](Around::before) the request goes in
//! and [`after`](Around::after) its response comes out; [`AroundLayer`]
//! wraps the inner service with it in a future of its own, allocating
//! nothing.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use axum::{extract::Request, response::Response};
use tower::{Layer, Service};
use tracing::Span;

/// A middleware that works on the request before the inner service sees it
/// and on the response after it answers.
pub trait Around: Clone + Send + Sync + 'static {
    /// What `before` hands to `after` (through the request's future).
    type State: Send + 'static;

    /// Looks at (or changes) the request; what it answers goes to `after`.
    fn before(&self, request: &mut Request) -> Self::State;

    /// The response to send, given the inner service's.
    fn after(&self, state: Self::State, response: Response) -> Response;

    /// A span entered whenever the inner service's future is polled.
    fn span(_state: &Self::State) -> Option<&Span> {
        None
    }
}

/// The [`Layer`] of an [`Around`].
#[derive(Clone)]
pub struct AroundLayer<A>(A);

impl<A> AroundLayer<A> {
    /// A layer running `around` on every request.
    pub fn new(around: A) -> Self {
        Self(around)
    }
}

impl<A: Clone, S> Layer<S> for AroundLayer<A> {
    type Service = AroundService<A, S>;

    fn layer(&self, inner: S) -> Self::Service {
        AroundService {
            around: self.0.clone(),
            inner,
        }
    }
}

/// The inner service `S` with `A` around each of its calls.
#[derive(Clone)]
pub struct AroundService<A, S> {
    around: A,
    inner: S,
}

impl<A, S> Service<Request> for AroundService<A, S>
where
    A: Around,
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AroundFuture<A, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let state = self.around.before(&mut request);
        AroundFuture {
            inner: self.inner.call(request),
            around: Some((self.around.clone(), state)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future, then [`Around::after`].
    pub struct AroundFuture<A: Around, F> {
        #[pin]
        inner: F,
        around: Option<(A, A::State)>,
    }
}

impl<A, F> Future for AroundFuture<A, F>
where
    A: Around,
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let entered = this
            .around
            .as_ref()
            .and_then(|(_, state)| A::span(state))
            .map(Span::enter);
        let Ok(response) = ready!(this.inner.poll(cx));
        drop(entered);
        let (around, state) = this
            .around
            .take()
            .expect("an AroundFuture is not polled after it completed");
        Poll::Ready(Ok(around.after(state, response)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::{Router, body::Body, routing::get};
    use tower::ServiceExt as _;

    use super::*;

    /// Counts in the request, then in the response, and names its span.
    #[derive(Clone)]
    struct Tag(Arc<Mutex<Vec<String>>>);

    impl Around for Tag {
        type State = (u32, Span);

        fn before(&self, request: &mut Request) -> Self::State {
            request
                .headers_mut()
                .insert("x-before", "1".parse().unwrap());
            self.0.lock().unwrap().push("before".to_owned());
            (7, tracing::info_span!("around"))
        }

        fn after(&self, (n, _): Self::State, mut response: Response) -> Response {
            self.0.lock().unwrap().push(format!("after {n}"));
            response.headers_mut().insert("x-after", n.into());
            response
        }

        fn span((_, span): &Self::State) -> Option<&Span> {
            Some(span)
        }
    }

    #[tokio::test]
    async fn before_changes_the_request_and_after_the_response_in_the_span() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let inner = seen.clone();
        let app = Router::new()
            .route(
                "/",
                get(move |headers: http::HeaderMap| {
                    let inner = inner.clone();
                    async move {
                        let current = Span::current()
                            .metadata()
                            .map_or("none", |meta| meta.name());
                        inner.lock().unwrap().push(format!(
                            "handler {} in {current}",
                            headers.contains_key("x-before")
                        ));
                        "ok"
                    }
                }),
            )
            .layer(AroundLayer::new(Tag(seen.clone())));
        // A subscriber, so spans exist (this test's thread only).
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry());
        let response = app
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.headers()["x-after"], "7");
        assert_eq!(
            *seen.lock().unwrap(),
            ["before", "handler true in around", "after 7"]
        );
    }
}
