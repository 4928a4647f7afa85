//! Traces: the caller's W3C trace context continued on every door, and
//! OpenTelemetry export over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT is
//! set.
//!
//! Every request passes through [`super::telemetry::RequestContext`],
//! which asks this module for the request's trace id: the caller's, from a
//! well-formed `traceparent`, or a fresh one. Operators grep the logs for
//! it, so it is there whether or not traces are exported.
//!
//! - Export off (the default): no OpenTelemetry layer is installed at all,
//!   so a request costs no more than parsing its `traceparent` (or drawing
//!   a fresh id from a counter) and one more log field.
//! - Export on: a `tracing-opentelemetry` layer turns the request span
//!   (and every span under it) into OpenTelemetry spans; the request span
//!   is a server span whose parent is the caller's span, and batches go to
//!   the collector every OTEL_BSP_SCHEDULE_DELAY. [`Traces::shutdown`]
//!   flushes what is left at graceful shutdown.
//!
//! A malformed `traceparent` is ignored (the request starts a new trace),
//! never an error: W3C Trace Context says so, and a caller's broken
//! tracing must not break its calls. The same strict parser decides in
//! both modes, so a header logged as the caller's trace is exported as
//! the caller's trace.
//!
//! No `traceresponse` header is sent back: it is a draft no client here
//! reads, and `x-request-id`, which every response carries, already finds
//! the request's log lines, which carry the trace id.

use std::{
    sync::{
        LazyLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{extract::MatchedPath, extract::Request, response::Response};
use http::HeaderMap;
use opentelemetry::{
    KeyValue,
    propagation::{Extractor, TextMapPropagator as _},
    trace::{Status, TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    resource::TelemetryResourceDetector,
    trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider},
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::infra::config::{Config, OtlpEndpoint, TracesSampler};

/// The service name when neither OTEL_SERVICE_NAME nor a `service.name`
/// resource attribute gives one.
pub const DEFAULT_SERVICE_NAME: &str = "slop-server";

/// How long a graceful shutdown waits, after SHUTDOWN_TIMEOUT's drain, for
/// the last spans to reach the collector. A collector that answers takes
/// milliseconds; short, so a pod's grace period (SHUTDOWN_TIMEOUT + the
/// preStop sleep + a few seconds) still covers a collector that does not.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the OpenTelemetry layer is installed in this process.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (the OpenTelemetry layer is installed).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Why traces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// The OTLP exporter could not be built from the OTEL_* settings.
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT {endpoint}: cannot set up the OTLP exporter: {source}")]
    Exporter {
        /// The collector's address (never carries credentials: the
        /// parser refuses them).
        endpoint: OtlpEndpoint,
        /// What the exporter said.
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The trace export of this process: nothing when
/// OTEL_EXPORTER_OTLP_ENDPOINT is unset.
#[derive(Debug, Default)]
pub struct Traces {
    provider: Option<SdkTracerProvider>,
}

impl Traces {
    /// Builds the exporter and the tracer provider from the OTEL_*
    /// settings, when OTEL_EXPORTER_OTLP_ENDPOINT is set. Connects lazily:
    /// a collector that is down costs dropped spans, never the start.
    pub fn from_config(config: &Config) -> Result<Self, TracesError> {
        let Some(endpoint) = &config.otel_exporter_otlp_endpoint else {
            return Ok(Self::default());
        };
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (name, value) in &config.otel_exporter_otlp_headers.0 {
            // Both were checked when the setting was read.
            if let (Ok(name), Ok(value)) = (
                name.parse::<tonic::metadata::AsciiMetadataKey>(),
                value.parse::<tonic::metadata::AsciiMetadataValue>(),
            ) {
                metadata.append(name, value);
            }
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.as_str())
            .with_metadata(metadata)
            .build()
            .map_err(|source| TracesError::Exporter {
                endpoint: endpoint.clone(),
                source,
            })?;
        let batches = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(config.otel_bsp_schedule_delay)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batches)
            .with_sampler(sampler(config))
            .with_resource(resource(config))
            .build();
        Ok(Self {
            provider: Some(provider),
        })
    }

    /// The tracer the OpenTelemetry layer records into, when exporting.
    pub fn tracer(&self) -> Option<SdkTracer> {
        self.provider
            .as_ref()
            .map(|provider| provider.tracer("slop-server"))
    }

    /// Marks the layer as installed: requests now continue traces through
    /// it. Called once the subscriber with the layer is the global one.
    pub(crate) fn mark_installed(&self) {
        if self.provider.is_some() {
            EXPORTING.store(true, Ordering::Relaxed);
        }
    }

    /// Sends the spans still waiting and stops the exporter; at most
    /// [`FLUSH_TIMEOUT`]. Call at graceful shutdown, after the server has
    /// stopped serving.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK blocks while it flushes: keep that off the runtime's
        // workers, which drive the exporter's connection.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        match flushed {
            Ok(Ok(())) => tracing::info!("traces flushed"),
            Ok(Err(error)) => tracing::warn!(%error, "traces not all flushed at shutdown"),
            Err(error) => tracing::warn!(%error, "traces not all flushed at shutdown"),
        }
    }
}

/// OTEL_TRACES_SAMPLER and its argument as the SDK's sampler.
fn sampler(config: &Config) -> Sampler {
    let ratio = config.otel_traces_sampler_arg.unwrap_or(1.0);
    let parent_based = |root: Sampler| Sampler::ParentBased(Box::new(root));
    match config.otel_traces_sampler {
        TracesSampler::AlwaysOn => Sampler::AlwaysOn,
        TracesSampler::AlwaysOff => Sampler::AlwaysOff,
        TracesSampler::TraceIdRatio => Sampler::TraceIdRatioBased(ratio),
        TracesSampler::ParentBasedAlwaysOn => parent_based(Sampler::AlwaysOn),
        TracesSampler::ParentBasedAlwaysOff => parent_based(Sampler::AlwaysOff),
        TracesSampler::ParentBasedTraceIdRatio => parent_based(Sampler::TraceIdRatioBased(ratio)),
    }
}

/// The service name: OTEL_SERVICE_NAME, else `service.name` from
/// OTEL_RESOURCE_ATTRIBUTES, else [`DEFAULT_SERVICE_NAME`] (the
/// specification's order).
pub fn service_name(config: &Config) -> &str {
    config
        .otel_service_name
        .as_deref()
        .or_else(|| config.otel_resource_attributes.get("service.name"))
        .unwrap_or(DEFAULT_SERVICE_NAME)
}

/// What every exported span is from: the SDK's own attributes, then
/// OTEL_RESOURCE_ATTRIBUTES, then the service's name and version.
fn resource(config: &Config) -> Resource {
    let mut builder = Resource::builder_empty().with_detector(Box::new(TelemetryResourceDetector));
    builder = builder.with_attributes(
        config
            .otel_resource_attributes
            .0
            .iter()
            .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
    );
    if config
        .otel_resource_attributes
        .get("service.version")
        .is_none()
    {
        builder =
            builder.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    builder
        .with_service_name(service_name(config).to_owned())
        .build()
}

/// A trace id as it is logged: 32 lowercase hex digits.
#[derive(Clone, Copy)]
pub struct TraceIdText([u8; 32]);

impl TraceIdText {
    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        // Only ever filled with ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    fn from_u128(id: u128) -> Self {
        Self(hex128(id))
    }

    fn from_hex(hex: &[u8]) -> Self {
        let mut text = [0u8; 32];
        text.copy_from_slice(hex);
        Self(text)
    }
}

/// `id` as 32 lowercase hex digits, most significant first.
pub(crate) fn hex128(id: u128) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    for (at, digit) in text.iter_mut().enumerate() {
        *digit = HEX[((id >> (124 - 4 * at)) & 0xf) as usize];
    }
    text
}

/// The trace id of a request when nothing is exported: the caller's, from
/// a well-formed `traceparent`, else a fresh one.
pub fn trace_id_of(headers: &HeaderMap) -> TraceIdText {
    headers
        .get("traceparent")
        .and_then(|value| parent_trace_id(value.as_bytes()))
        .map(TraceIdText::from_hex)
        .unwrap_or_else(fresh_trace_id)
}

/// The trace id of a W3C `traceparent` (Trace Context level 1, section
/// 3.2), or `None` when it is not well formed: a version of two lowercase
/// hex digits other than `ff`, then trace id, parent id and flags of 32,
/// 16 and 2 lowercase hex digits, ids not all zero; version 00 has exactly
/// these fields, a later version may add more after a `-`.
pub fn parent_trace_id(traceparent: &[u8]) -> Option<&[u8]> {
    let value = traceparent.trim_ascii();
    if value.len() < 55 {
        return None;
    }
    let is_hex = |bytes: &[u8]| bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let not_zero = |bytes: &[u8]| bytes.iter().any(|&b| b != b'0');
    let (version, trace_id, parent_id, flags) =
        (&value[0..2], &value[3..35], &value[36..52], &value[53..55]);
    let dashes = value[2] == b'-' && value[35] == b'-' && value[52] == b'-';
    let well_formed = dashes
        && is_hex(version)
        && version != b"ff"
        && is_hex(trace_id)
        && not_zero(trace_id)
        && is_hex(parent_id)
        && not_zero(parent_id)
        && is_hex(flags);
    let length_fits = if version == b"00" {
        value.len() == 55
    } else {
        value.len() == 55 || value[55] == b'-'
    };
    (well_formed && length_fits).then_some(trace_id)
}

/// A fresh trace id, without a system call: a random key drawn once per
/// process, and a counter mixed through a bijection (the SplitMix64
/// finaliser), so ids are distinct within the process and look random
/// across processes. Never all zero.
fn fresh_trace_id() -> TraceIdText {
    static KEY: LazyLock<[u64; 2]> = LazyLock::new(|| {
        let bytes: [u8; 16] = super::telemetry::process_seed();
        let [a, b] = [&bytes[..8], &bytes[8..]]
            .map(|half| u64::from_le_bytes(half.try_into().unwrap_or_default()));
        [a, b]
    });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let [high_key, low_key] = *KEY;
    let high = mix(count.wrapping_add(high_key));
    let low = mix(count ^ low_key);
    let id = (u128::from(high) << 64) | u128::from(low);
    TraceIdText::from_u128(if id == 0 { 1 } else { id })
}

/// SplitMix64's finaliser: a bijection on u64 that spreads every input bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The request's headers as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// When exporting: names `span` after the call (the gRPC method, or the
/// HTTP method and route), makes it a server span whose parent is the
/// caller's span (from `traceparent` and `tracestate`, when well formed),
/// and answers its trace id.
pub fn continue_trace(span: &Span, request: &Request) -> TraceIdText {
    span.record("otel.name", span_name(request).as_str());
    span.record("otel.kind", "server");
    let headers = request.headers();
    let well_formed = headers
        .get("traceparent")
        .is_some_and(|value| parent_trace_id(value.as_bytes()).is_some());
    if well_formed {
        static PROPAGATOR: LazyLock<TraceContextPropagator> =
            LazyLock::new(TraceContextPropagator::new);
        let parent = PROPAGATOR.extract(&Headers(headers));
        // Fails only when the span is disabled (filtered out).
        let _ = span.set_parent(parent);
    }
    if is_grpc(headers) {
        span.set_attribute("rpc.system", "grpc");
    }
    let id = span.context().span().span_context().trace_id();
    if id == opentelemetry::trace::TraceId::INVALID {
        // The span is disabled: log an id all the same.
        return trace_id_of(headers);
    }
    TraceIdText::from_u128(u128::from_be_bytes(id.to_bytes()))
}

/// When exporting: the outcome on the request span, and an error status
/// for answers that mean the server failed (HTTP 5xx; gRPC codes a server
/// reports as errors, when they come in the response head).
pub fn finish_trace(span: &Span, response: &Response) {
    let status = response.status().as_u16();
    span.set_attribute("http.response.status_code", i64::from(status));
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i64>().ok());
    if let Some(code) = grpc_status {
        span.set_attribute("rpc.grpc.status_code", code);
    }
    // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
    // DATA_LOSS: the server's failures (OpenTelemetry's gRPC conventions).
    let grpc_failed = grpc_status.is_some_and(|code| matches!(code, 2 | 4 | 12 | 13 | 14 | 15));
    if status >= 500 || grpc_failed {
        span.set_status(Status::error(""));
    }
}

/// `slop.auth.v1.AuthService/Login` for gRPC (native or grpc-web), else
/// `POST /api/v1/auth/login`: the route, not the path, so ids in paths do
/// not make a span name per request.
fn span_name(request: &Request) -> String {
    let path = request.uri().path();
    if is_grpc(request.headers()) {
        return path.trim_start_matches('/').to_owned();
    }
    match request.extensions().get::<MatchedPath>() {
        Some(route) => format!("{} {}", request.method(), route.as_str()),
        None => request.method().to_string(),
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_well_formed_traceparent_gives_its_trace_id() {
        assert_eq!(
            parent_trace_id(VALID.as_bytes()),
            Some(&b"0af7651916cd43dd8448eb211c80319c"[..])
        );
        // Unsampled, and a later version with more fields.
        let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        assert!(parent_trace_id(unsampled.as_bytes()).is_some());
        let later = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes";
        assert!(parent_trace_id(later.as_bytes()).is_some());
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", VALID.parse().unwrap());
        assert_eq!(
            trace_id_of(&headers).as_str(),
            "0af7651916cd43dd8448eb211c80319c"
        );
    }

    /// Each of these starts a new trace, in both modes: the SDK's
    /// propagator, which is laxer (it takes `00-1-1-01`), is only given
    /// headers this parser accepts (`continue_trace`).
    #[test]
    fn a_malformed_traceparent_is_ignored() {
        let malformed = [
            "",
            "garbage",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331b7-01",
            "00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
            "00-1-1-01",
        ];
        for header in malformed {
            assert_eq!(parent_trace_id(header.as_bytes()), None, "{header}");
            let mut headers = HeaderMap::new();
            if let Ok(value) = header.parse() {
                headers.insert("traceparent", value);
            }
            let fresh = trace_id_of(&headers);
            assert_eq!(fresh.as_str().len(), 32, "{header}");
            assert!(!fresh.as_str().contains("0af7651916cd"), "{header}");
        }
        let valid = TraceContextPropagator::new().extract(&Headers(&{
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", VALID.parse().unwrap());
            headers
        }));
        assert_eq!(
            valid.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
    }

    #[test]
    fn fresh_trace_ids_are_distinct_hex_and_never_zero() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|_| fresh_trace_id().as_str().to_owned())
            .collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            assert_eq!(id.len(), 32);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert_ne!(id, &"0".repeat(32));
            // A well-formed traceparent could carry it.
            let header = format!("00-{id}-b7ad6b7169203331-01");
            assert!(parent_trace_id(header.as_bytes()).is_some());
        }
    }

    #[test]
    fn hex_text_is_big_endian() {
        assert_eq!(
            TraceIdText::from_u128(0x0af7651916cd43dd8448eb211c80319c).as_str(),
            "0af7651916cd43dd8448eb211c80319c"
        );
    }

    #[test]
    fn the_service_name_follows_the_specification_order() {
        let mut config = Config::embedded_defaults();
        assert_eq!(service_name(&config), "slop-server");
        config.otel_resource_attributes = crate::infra::config::ResourceAttributes(vec![(
            "service.name".into(),
            "from-attributes".into(),
        )]);
        assert_eq!(service_name(&config), "from-attributes");
        config.otel_service_name = Some("from-name".into());
        assert_eq!(service_name(&config), "from-name");
    }
}
