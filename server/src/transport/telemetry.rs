//! Logs, request ids and trace ids.
//!
//! Every request gets an `x-request-id`: the caller's, when it sent a sane
//! one, or a fresh random one. It is put back on the request (so the handlers
//! and the gRPC services see it as metadata), on the response, and on the
//! tracing span the request runs in, so every log line written while serving
//! it carries the id. The span carries the request's trace id too (the
//! caller's `traceparent`, or a fresh one: [`super::traces`]), and when
//! traces are exported it is the server span of the caller's trace.

use std::{
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use axum::{extract::Request, response::Response};
use http::{HeaderName, HeaderValue};
use tracing::{Span, field::Empty};
use tracing_subscriber::{
    EnvFilter, Layer, filter::LevelFilter, fmt, prelude::*, registry::LookupSpan,
};

use crate::{
    infra::config::{Config, LogFormat},
    transport::{
        around::Around,
        traces::{self, Traces, TracesError},
    },
};

/// The request id header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest caller-supplied request id we keep; a longer one is replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Installs the global log subscriber (readable lines or JSON, filtered by
/// LOG_LEVEL) and, when OTEL_EXPORTER_OTLP_ENDPOINT is set, the
/// OpenTelemetry layer that exports spans. Answers the trace export, to be
/// shut down (flushed) at exit. Installs nothing if a subscriber is
/// installed already (tests start several servers in one process).
pub fn init(config: &Config) -> Result<Traces, TracesError> {
    let filter = EnvFilter::builder()
        .parse(&config.log_level)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let traces = Traces::from_config(config)?;
    let installed = match traces.tracer() {
        // No OpenTelemetry layer at all: requests pay nothing for it.
        None => tracing_subscriber::registry()
            .with(filter)
            .with(logs(config.log_format()))
            .try_init(),
        // Each layer its own filter: LOG_LEVEL=warn must not stop the
        // request spans from being exported. Info and above is what is
        // exported, whatever the logs show.
        Some(tracer) => tracing_subscriber::registry()
            .with(logs(config.log_format()).with_filter(filter))
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_location(false)
                    .with_threads(false)
                    .with_tracked_inactivity(false)
                    .with_filter(LevelFilter::INFO),
            )
            .try_init(),
    };
    // Already installed: keep the first one (and export nothing from here).
    if installed.is_ok() {
        traces.mark_installed();
    }
    Ok(traces)
}

/// The log lines, readable or JSON.
fn logs<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    match format {
        LogFormat::Pretty => fmt::layer()
            .with_target(false)
            .with_ansi(std::io::stdout().is_terminal())
            .with_writer(std::io::stdout)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stdout)
            .boxed(),
    }
}

/// Middleware: gives the request its id and its trace id, runs it in a span
/// carrying both, and logs its outcome once the response head is ready.
#[derive(Clone, Copy)]
pub struct RequestContext;

/// What [`RequestContext`] keeps while a request is served.
pub struct Served {
    id: HeaderValue,
    span: Span,
    started: Instant,
    exporting: bool,
}

impl Around for RequestContext {
    type State = Served;

    fn before(&self, request: &mut Request) -> Served {
        let id = request
            .headers()
            .get(&X_REQUEST_ID)
            .filter(|value| is_acceptable_request_id(value))
            .cloned()
            .unwrap_or_else(new_request_id);
        request.headers_mut().insert(X_REQUEST_ID, id.clone());

        let exporting = traces::exporting();
        let span = if exporting {
            let span = tracing::info_span!(
                "request",
                request_id = id.to_str().unwrap_or_default(),
                trace_id = Empty,
                method = %request.method(),
                path = request.uri().path(),
                otel.name = Empty,
                otel.kind = Empty,
            );
            let trace_id = traces::continue_trace(&span, request);
            span.record("trace_id", trace_id.as_str());
            span
        } else {
            // The trace id is worked out only when the span is enabled.
            tracing::info_span!(
                "request",
                request_id = id.to_str().unwrap_or_default(),
                trace_id = traces::trace_id_of(request.headers()).as_str(),
                method = %request.method(),
                path = request.uri().path(),
            )
        };
        Served {
            id,
            span,
            started: Instant::now(),
            exporting,
        }
    }

    fn after(&self, served: Served, mut response: Response) -> Response {
        log_response(&served.span, &response, served.started.elapsed());
        if served.exporting {
            traces::finish_trace(&served.span, &response);
        }
        response.headers_mut().insert(X_REQUEST_ID, served.id);
        response
    }

    fn span(served: &Served) -> Option<&Span> {
        Some(&served.span)
    }
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
/// secret, only distinct across requests and instances), and written
/// without the formatting machinery (it was 0.6 % of REST `me`'s CPU).
fn new_request_id() -> HeaderValue {
    static PREFIX: std::sync::LazyLock<u64> =
        std::sync::LazyLock::new(|| u64::from_le_bytes(process_seed()));
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = (u128::from(*PREFIX) << 64) | u128::from(count);
    HeaderValue::from_bytes(&traces::hex128(id)).expect("hex is a valid header value")
}

/// Random bytes drawn once per use at start-up, for ids that need only be
/// distinct across processes (request and trace ids), not secret. The OS
/// RNG failing is no reason to fail requests: the time and the process id,
/// which still differ between processes, stand in.
pub(crate) fn process_seed<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let fallback = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
        for (byte, from) in bytes.iter_mut().zip(fallback.iter().cycle()) {
            *byte = *from;
        }
    }
    bytes
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
        // The process's prefix, then the counter.
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        assert_eq!(a[..16], b[..16]);
        let count = |id: &str| u64::from_str_radix(&id[16..], 16).unwrap();
        assert!(count(b) > count(a));
    }
}
