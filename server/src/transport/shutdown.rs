//! Ending long-lived gRPC streams when the server shuts down.
//!
//! A graceful HTTP/2 shutdown waits for every open stream, and a server
//! stream (a health Watch, a reflection session, a notification Subscribe)
//! never ends on its own. So every response of a streaming gRPC method is
//! wrapped: when shutdown begins, the wrapper ends the stream between two
//! messages with the status UNAVAILABLE and a message saying why, and drops
//! the producer. Unary calls are left alone, so in-flight requests finish.
//!
//! The wrapper sits inside the grpc-web translation, so grpc-web clients get
//! the same status in their trailer frame.

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use axum::{body::Body, extract::Request, response::Response};
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::transport::around::Around;

/// What a stream cut by shutdown tells its client.
pub const SHUTDOWN_MESSAGE: &str =
    "the server is shutting down; reconnect (to another instance) and resume";

/// The gRPC paths (`/package.Service/Method`) whose responses are streams.
#[derive(Debug, Default)]
pub struct StreamingMethods(HashSet<String>);

impl StreamingMethods {
    /// Collects the server-streaming methods of every service in the given
    /// encoded `FileDescriptorSet`s.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        Ok(Self(
            crate::transport::grpc_methods::methods(sets)?
                .filter(|(_, method)| method.server_streaming())
                .map(|(path, _)| path)
                .collect(),
        ))
    }

    /// Whether the request path names a streaming method.
    pub fn contains(&self, path: &str) -> bool {
        self.0.contains(path)
    }
}

/// State of the [`EndStreamsOnShutdown`] middleware.
#[derive(Clone)]
pub struct StreamCutoff {
    /// Which methods stream.
    pub methods: Arc<StreamingMethods>,
    /// Cancelled when shutdown begins.
    pub shutdown: CancellationToken,
}

/// Middleware: wraps the response body of streaming gRPC methods so it ends
/// with UNAVAILABLE when shutdown begins. Shared, not cloned per request: a
/// token's clone takes a lock.
#[derive(Clone)]
pub struct EndStreamsOnShutdown(pub Arc<StreamCutoff>);

impl Around for EndStreamsOnShutdown {
    /// Whether the call's method streams.
    type State = bool;

    fn before(&self, request: &mut Request) -> bool {
        self.0.methods.contains(request.uri().path())
    }

    fn after(&self, streaming: bool, response: Response) -> Response {
        if !streaming {
            return response;
        }
        response.map(|body| Body::new(CutOnShutdown::new(body, self.0.shutdown.clone())))
    }
}

/// A gRPC response body that ends with UNAVAILABLE trailers on shutdown.
struct CutOnShutdown {
    inner: Option<Body>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl CutOnShutdown {
    fn new(inner: Body, shutdown: CancellationToken) -> Self {
        Self {
            inner: Some(inner),
            shutdown: Box::pin(shutdown.cancelled_owned()),
        }
    }
}

impl HttpBody for CutOnShutdown {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // The inner body first: a frame that is ready goes out before the cut.
        if let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) {
            match &frame {
                Some(Ok(f)) if f.is_trailers() => self.inner = None,
                None | Some(Err(_)) => self.inner = None,
                Some(Ok(_)) => {}
            }
            return Poll::Ready(frame);
        }
        ready!(self.shutdown.as_mut().poll(cx));
        // Dropping the inner body tells the producer its client is gone.
        self.inner = None;
        let mut trailers = HeaderMap::new();
        // Cannot fail: the code and the fixed message encode as headers.
        let _ = tonic::Status::unavailable(SHUTDOWN_MESSAGE).add_header(&mut trailers);
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[test]
    fn finds_the_streaming_methods_of_health_and_the_contract() {
        let methods = StreamingMethods::from_descriptor_sets(&[
            slop_api::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ])
        .unwrap();
        assert!(methods.contains("/grpc.health.v1.Health/Watch"));
        assert!(methods.contains("/slop.notification.v1.NotificationService/Subscribe"));
        assert!(!methods.contains("/grpc.health.v1.Health/Check"));
        assert!(!methods.contains("/slop.auth.v1.AuthService/Login"));
    }

    #[tokio::test]
    async fn a_pending_stream_ends_with_unavailable_on_shutdown() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, axum::Error>>(1);
        let inner = Body::new(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        let token = CancellationToken::new();
        let mut body = CutOnShutdown::new(inner, token.clone());

        tx.send(Ok(Frame::data(Bytes::from_static(b"one"))))
            .await
            .unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"one"));

        token.cancel();
        let last = body.frame().await.unwrap().unwrap();
        let trailers = last.into_trailers().unwrap();
        assert_eq!(trailers["grpc-status"], "14");
        assert!(body.frame().await.is_none());
        assert!(tx.is_closed(), "the producer learns the client is gone");
    }
}
