//! A gRPC request message that does not decode is the caller's fault:
//! INVALID_ARGUMENT, naming the message type the method takes.
//!
//! tonic answers INTERNAL when it cannot decode a request (the codes its
//! decoder uses are those of gRPC's own library errors), with the decoder's
//! text, so a client with a bad encoder reads "the server failed" and
//! retries. This layer sits on the gRPC routes, inside the grpc-web
//! translation (grpc-web clients get the same status), and rewrites those
//! answers. tonic decodes a unary or server-streaming request before the
//! method runs and answers a failure "trailers-only", with the status in
//! the response head, which is where this looks; the method's own statuses
//! are left as they are.
//!
//! Cost per gRPC call: one clone of the request URI (reference counts, no
//! copy) and, on the answer, one lookup of `grpc-status` in the head.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{HeaderMap, Request, Response, Uri};
use slop_api::errors::ErrorReason;
use tonic::Status;
use tower::{Layer, Service};

/// The request message type of every gRPC method, by path
/// (`/package.Service/Method` → `package.Request`).
#[derive(Debug, Default)]
pub struct RequestTypes(HashMap<String, String>);

impl RequestTypes {
    /// Collects the methods of every service in the given encoded
    /// `FileDescriptorSet`s.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        Ok(Self(
            crate::transport::grpc_methods::methods(sets)?
                .map(|(path, method)| {
                    let input = method.input_type().trim_start_matches('.').to_owned();
                    (path, input)
                })
                .collect(),
        ))
    }

    fn get(&self, path: &str) -> Option<&str> {
        self.0.get(path).map(String::as_str)
    }
}

/// What a decoder error of tonic says to the caller instead, if it is one.
fn caller_fault(message: &str, request_type: Option<&str>) -> Option<String> {
    let request_type = request_type.unwrap_or("the request type of this method");
    if let Some(what) = message.strip_prefix("failed to decode Protobuf message") {
        // What follows names the field and the fault ("LoginRequest.email:
        // invalid wire type: …"): the caller's own data, and what they need.
        let what = what.trim_start_matches(':').trim();
        return Some(if what.is_empty() {
            format!("the request message does not decode as {request_type}")
        } else {
            format!("the request message does not decode as {request_type}: {what}")
        });
    }
    if message == "Unexpected EOF decoding stream." {
        return Some(
            "the request body ends inside a message: its gRPC frame promises more bytes than were sent"
                .to_owned(),
        );
    }
    if message.starts_with("protocol error: received message with compressed-flag") {
        return Some(
            "a request message is marked compressed, but the call names no grpc-encoding"
                .to_owned(),
        );
    }
    if message.starts_with("protocol error: received message with invalid compression flag") {
        return Some(
            "a request message has an invalid compression flag (valid flags are 0 and 1)"
                .to_owned(),
        );
    }
    None
}

/// Rewrites a trailers-only INTERNAL answer of tonic's decoder.
fn rewrite(headers: &mut HeaderMap, path: &str, types: &RequestTypes) {
    if headers.get("grpc-status").map(|v| v.as_bytes()) != Some(b"13") {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let Some(message) = caller_fault(status.message(), types.get(path)) else {
        return;
    };
    let fixed = crate::services::status::with_reason(ErrorReason::MalformedMessage, message);
    headers.remove("grpc-status-details-bin");
    if fixed.add_header(headers).is_err() {
        tracing::warn!("cannot write the status of a request that does not decode");
    }
}

/// The layer of [`DecodeErrors`].
#[derive(Clone)]
pub struct DecodeErrorsLayer {
    types: Arc<RequestTypes>,
}

impl DecodeErrorsLayer {
    /// Rewrites decode errors of the methods in `types`.
    pub fn new(types: RequestTypes) -> Self {
        Self {
            types: Arc::new(types),
        }
    }
}

impl<S> Layer<S> for DecodeErrorsLayer {
    type Service = DecodeErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrors {
            inner,
            types: self.types.clone(),
        }
    }
}

/// Turns tonic's INTERNAL for a request that does not decode into
/// INVALID_ARGUMENT.
#[derive(Clone)]
pub struct DecodeErrors<S> {
    inner: S,
    types: Arc<RequestTypes>,
}

impl<S, B, ResBody> Service<Request<B>> for DecodeErrors<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = DecodeErrorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        DecodeErrorsFuture {
            uri: request.uri().clone(),
            types: self.types.clone(),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`DecodeErrors`].
    pub struct DecodeErrorsFuture<F> {
        #[pin]
        inner: F,
        uri: Uri,
        types: Arc<RequestTypes>,
    }
}

impl<F, ResBody, E> Future for DecodeErrorsFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        rewrite(response.headers_mut(), this.uri.path(), this.types);
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt as _;

    #[test]
    fn decoder_errors_become_the_callers_fault_and_others_stay() {
        let types = RequestTypes::from_descriptor_sets(&[slop_api::FILE_DESCRIPTOR_SET]).unwrap();
        let path = "/slop.auth.v1.AuthService/Login";
        let mut headers = HeaderMap::new();
        Status::internal(
            "failed to decode Protobuf message: LoginRequest.email: invalid wire type: Varint (expected LengthDelimited)",
        )
        .add_header(&mut headers)
        .unwrap();
        rewrite(&mut headers, path, &types);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "the request message does not decode as slop.auth.v1.LoginRequest: LoginRequest.email: invalid wire type: Varint (expected LengthDelimited)"
        );
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "MALFORMED_MESSAGE"
        );

        let mut headers = HeaderMap::new();
        Status::internal("the database said no")
            .add_header(&mut headers)
            .unwrap();
        rewrite(&mut headers, path, &types);
        assert_eq!(
            Status::from_header_map(&headers).unwrap().code(),
            Code::Internal
        );
    }
}
