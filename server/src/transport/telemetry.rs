//! Logs and request ids.
//!
//! Every request gets an `x-request-id`: the caller's, when it sent a sane
//! one, or a fresh random one. It is put back on the request (so the handlers
//! and the gRPC services see it as metadata), on the response, and on the
//! tracing span the request runs in, so every log line written while serving
//! it carries the id.

use std::{
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use axum::{extract::Request, middleware::Next, response::Response};
use http::{HeaderName, HeaderValue};
use tracing::{Instrument, Span};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::infra::config::{Config, LogFormat};

/// The request id header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest caller-supplied request id we keep; a longer one is replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Installs the global log subscriber: readable lines or JSON, filtered by
/// LOG_LEVEL. Does nothing if one is installed already (tests start several
/// servers in one process).
pub fn init_logging(config: &Config) {
    let filter = EnvFilter::builder()
        .parse(&config.log_level)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.log_format() {
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::stdout().is_terminal())
                    .with_writer(std::io::stdout),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stdout),
            )
            .try_init(),
    };
    // Already installed: keep the first one.
    drop(result);
}

/// Middleware: gives the request its id, runs it in a span carrying the id,
/// and logs its outcome once the response head is ready.
pub async fn request_context(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|value| is_acceptable_request_id(value))
        .cloned()
        .unwrap_or_else(new_request_id);
    request.headers_mut().insert(X_REQUEST_ID, id.clone());

    let span = tracing::info_span!(
        "request",
        request_id = id.to_str().unwrap_or_default(),
        method = %request.method(),
        path = request.uri().path(),
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    log_response(&span, &response, started.elapsed());
    response.headers_mut().insert(X_REQUEST_ID, id);
    response
}

fn log_response(span: &Span, response: &Response, latency: Duration) {
    let _entered = span.enter();
    let status = response.status().as_u16();
    // A gRPC call that failed before sending a message carries its status in
    // the response head ("trailers-only"); otherwise it comes at the end.
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok());
    // Microsecond precision is plenty, and keeps log lines short.
    let latency_ms = latency.as_micros() as f64 / 1000.0;
    match grpc_status {
        Some(code) => tracing::info!(status, grpc_status = code, latency_ms, "response"),
        None => tracing::info!(status, latency_ms, "response"),
    }
}

fn is_acceptable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes.iter().all(|b| b.is_ascii_graphic())
}

/// A request id: a random 64-bit prefix chosen once per process, then a
/// counter. Unique without a system call per request (ids need not be
/// secret, only distinct across requests and instances).
fn new_request_id() -> HeaderValue {
    static PREFIX: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        let mut bytes = [0u8; 8];
        // The OS RNG failing is no reason to fail requests: fall back to time.
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            bytes = (nanos as u64).to_le_bytes();
        }
        u64::from_le_bytes(bytes)
    });
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    HeaderValue::from_str(&format!("{:016x}{count:016x}", *PREFIX))
        .expect("hex is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_ids_are_kept_only_when_sane() {
        assert!(is_acceptable_request_id(&HeaderValue::from_static(
            "abc-123"
        )));
        assert!(!is_acceptable_request_id(&HeaderValue::from_static("")));
        assert!(!is_acceptable_request_id(&HeaderValue::from_static("a b")));
        let long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        assert!(!is_acceptable_request_id(
            &HeaderValue::from_str(&long).unwrap()
        ));
    }

    #[test]
    fn generated_ids_are_distinct_hex() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(is_acceptable_request_id(&a));
    }
}
