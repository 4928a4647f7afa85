//! A request body must arrive within HTTP_BODY_TIMEOUT, counted from the
//! first time the server waits for it: one that trickles (a byte every few
//! seconds) would otherwise hold its connection, and a request in flight,
//! for as long as the client likes, and the idle timeout never applies to a
//! connection with a request in flight.
//!
//! When the time is up the body ends with DEADLINE_EXCEEDED (reason
//! `REQUEST_BODY_TIMEOUT`) and lets go of the connection's body: REST
//! answers 408, gRPC the status; HTTP/1 then closes the connection (the
//! rest of the body is never read), HTTP/2 resets the stream.
//!
//! Exempt: calls of client-streaming gRPC methods (server reflection),
//! whose request is a stream by design and may be quiet for long.
//!
//! Cost per request: for a body that has not fully arrived with the head,
//! one lookup of the path in the set of client-streaming methods; a timer
//! (one allocation) only once the server actually has to wait for the body.

use std::{
    collections::HashSet,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use slop_api::errors::ErrorReason;
use tokio::time::Sleep;
use tonic::Status;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC paths (`/package.Service/Method`) whose requests are streams.
#[derive(Debug, Default)]
pub struct StreamingRequests(HashSet<String>);

impl StreamingRequests {
    /// Collects the client-streaming methods of every service in the given
    /// encoded `FileDescriptorSet`s.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        Ok(Self(
            crate::transport::grpc_methods::methods(sets)?
                .filter(|(_, method)| method.client_streaming())
                .map(|(path, _)| path)
                .collect(),
        ))
    }

    /// Whether a request to `path` is a stream.
    pub fn contains(&self, path: &str) -> bool {
        self.0.contains(path)
    }
}

/// A request body that must arrive within a time.
pub struct TimedBody<B> {
    /// None once the time is up.
    inner: Option<B>,
    /// None: no limit.
    timeout: Option<Duration>,
    /// Started the first time the body is not there when asked for.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> TimedBody<B> {
    /// `inner`, which must arrive within `timeout` (None: no limit).
    pub fn new(inner: B, timeout: Option<Duration>) -> Self {
        Self {
            inner: Some(inner),
            timeout,
            timer: None,
        }
    }
}

/// What a body that did not arrive in time ends with.
fn timed_out(timeout: Duration) -> Status {
    crate::services::status::with_reason(
        ErrorReason::RequestBodyTimeout,
        format!(
            "the request body did not arrive within {} (HTTP_BODY_TIMEOUT)",
            crate::infra::config::humanize(timeout)
        ),
    )
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|frame| frame.map_err(Into::into))),
            Poll::Pending => {
                let Some(timeout) = this.timeout else {
                    return Poll::Pending;
                };
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Let go of the rest: HTTP/1 stops reading (and closes after
                // the answer), HTTP/2 resets the stream.
                this.inner = None;
                Poll::Ready(Some(Err(Box::new(timed_out(timeout)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use tonic::Code;
    use tonic_types::StatusExt as _;

    /// A body that never sends anything.
    struct Silent;

    impl Body for Silent {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_that_does_not_come_ends_with_deadline_exceeded() {
        let mut body = TimedBody::new(Silent, Some(Duration::from_millis(50)));
        let error = body.frame().await.unwrap().unwrap_err();
        let status = error.downcast_ref::<Status>().unwrap();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "REQUEST_BODY_TIMEOUT"
        );
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());

        let mut unlimited = TimedBody::new(Silent, None);
        let waited = tokio::time::timeout(Duration::from_millis(100), unlimited.frame()).await;
        assert!(waited.is_err(), "no limit, no end");
    }

    #[test]
    fn reflection_is_the_client_streaming_method() {
        let streaming = StreamingRequests::from_descriptor_sets(&[
            slop_api::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        ])
        .unwrap();
        assert!(streaming.contains("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"));
        assert!(!streaming.contains("/slop.notification.v1.NotificationService/Subscribe"));
    }
}
