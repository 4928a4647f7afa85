//! The standard `OTEL_*` variables of traces, read and checked here rather
//! than left to the OpenTelemetry SDK: the SDK drops a value it cannot read
//! (a malformed header, a sampler ratio of `1,5`) without a word, and an
//! operator then looks for traces that were never sent. Here a bad value
//! stops start-up with the variable and the reason, like every other
//! setting, and never echoes a header value (it may hold an API key).
//!
//! The formats are the specification's: headers and resource attributes
//! are `key=value` lists with percent-encoded values, the batch delay is in
//! milliseconds, the sampler ratio a number from 0 to 1.

use std::{fmt, time::Duration};

use clap::ValueEnum;

use super::MAX_TEXT;

/// Where traces go: an OTLP/gRPC collector reached over plain HTTP/2
/// (`http://host:port`), as collectors inside a cluster or on the node are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint(String);

impl OtlpEndpoint {
    /// The endpoint as the exporter takes it: `http://host:port`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The OTLP transport. Only gRPC is built in; the variable is read so that
/// a deployment set up for OTLP over HTTP is told so at start-up, instead
/// of sending gRPC to an HTTP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (port 4317 by convention).
    #[value(name = "grpc")]
    Grpc,
}

/// Headers sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`), e.g. a
/// vendor's API key. Their values never appear in `Debug` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OtlpHeaders(pub Vec<(String, String)>);

impl fmt::Debug for OtlpHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| format!("{name}=…")))
            .finish()
    }
}

/// Resource attributes (`OTEL_RESOURCE_ATTRIBUTES`): `key=value` pairs
/// every exported span carries, e.g. `deployment.environment=prod`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceAttributes(pub Vec<(String, String)>);

impl ResourceAttributes {
    /// The value of `key`, if it is given (the last one wins).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Which traces are kept (`OTEL_TRACES_SAMPLER`), with the specification's
/// names. The `parentbased_` samplers follow the caller's decision (the
/// sampled flag of its `traceparent`) and decide themselves only for
/// traces that start here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TracesSampler {
    /// Every trace.
    #[value(name = "always_on")]
    AlwaysOn,
    /// No trace.
    #[value(name = "always_off")]
    AlwaysOff,
    /// A share of traces, by trace id: OTEL_TRACES_SAMPLER_ARG (default 1).
    #[value(name = "traceidratio")]
    TraceIdRatio,
    /// The caller's decision; every trace that starts here.
    #[value(name = "parentbased_always_on")]
    ParentBasedAlwaysOn,
    /// The caller's decision; no trace that starts here.
    #[value(name = "parentbased_always_off")]
    ParentBasedAlwaysOff,
    /// The caller's decision; a share of the traces that start here.
    #[value(name = "parentbased_traceidratio")]
    ParentBasedTraceIdRatio,
}

impl TracesSampler {
    /// Whether OTEL_TRACES_SAMPLER_ARG means anything to this sampler.
    pub fn takes_ratio(self) -> bool {
        matches!(self, Self::TraceIdRatio | Self::ParentBasedTraceIdRatio)
    }
}

/// OTEL_EXPORTER_OTLP_ENDPOINT: `http://host[:port]`. An empty value is
/// refused here; clap treats an empty variable as unset.
pub(super) fn parse_endpoint(value: &str) -> Result<OtlpEndpoint, String> {
    let value = value.trim();
    if value.len() > MAX_TEXT {
        return Err(format!("longer than {MAX_TEXT} characters"));
    }
    let uri: http::Uri = value
        .parse()
        .map_err(|_| "not a URL: expected http://host:port, e.g. http://otel-collector:4317")?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https:// is not supported: this build has no TLS to the collector; use http:// to a collector in the cluster or on the node (an agent or sidecar can forward over TLS)".into(),
            );
        }
        _ => return Err("expected http://host:port, e.g. http://otel-collector:4317".into()),
    }
    let Some(authority) = uri.authority() else {
        return Err("no host: expected http://host:port".into());
    };
    if authority.as_str().contains('@') {
        return Err("must not carry credentials: send them in OTEL_EXPORTER_OTLP_HEADERS".into());
    }
    if authority.host().is_empty() {
        return Err("no host: expected http://host:port".into());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(
            "a gRPC endpoint has no path or query: expected http://host:port (the OTLP/HTTP path /v1/traces is not used)".into(),
        );
    }
    Ok(OtlpEndpoint(format!("http://{authority}")))
}

/// OTEL_EXPORTER_OTLP_HEADERS: `name=value,…`, values percent-encoded.
/// Errors name the header, never its value.
pub(super) fn parse_headers(value: &str) -> Result<OtlpHeaders, String> {
    if value.len() > 16 * MAX_TEXT {
        return Err(format!("longer than {} characters", 16 * MAX_TEXT));
    }
    let mut headers = Vec::new();
    for (at, pair) in list_items(value).enumerate() {
        let Some((name, raw)) = pair.split_once('=') else {
            return Err(format!(
                "item {} is not name=value (items are separated by commas)",
                at + 1
            ));
        };
        let name = name.trim().to_ascii_lowercase();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() || name.is_empty() {
            return Err(format!("item {}: not a header name", at + 1));
        }
        if name.ends_with("-bin") {
            return Err(format!(
                "header {name}: binary (-bin) headers are not supported"
            ));
        }
        let value = percent_decode(raw.trim())
            .ok_or_else(|| format!("header {name}: its value is not valid percent-encoding"))?;
        if value.is_empty() || http::HeaderValue::from_str(&value).is_err() {
            return Err(format!(
                "header {name}: its value is empty or has characters a header cannot carry"
            ));
        }
        headers.push((name, value));
    }
    Ok(OtlpHeaders(headers))
}

/// OTEL_SERVICE_NAME: what the traces are filed under.
pub(super) fn parse_service_name(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() || value.len() > 255 {
        return Err("expected a name of 1 to 255 characters".into());
    }
    if value.chars().any(char::is_control) {
        return Err("has control characters".into());
    }
    Ok(value.to_owned())
}

/// OTEL_RESOURCE_ATTRIBUTES: `key=value,…`, values percent-encoded.
pub(super) fn parse_resource_attributes(value: &str) -> Result<ResourceAttributes, String> {
    if value.len() > 16 * MAX_TEXT {
        return Err(format!("longer than {} characters", 16 * MAX_TEXT));
    }
    let mut attributes = Vec::new();
    for (at, pair) in list_items(value).enumerate() {
        let Some((key, raw)) = pair.split_once('=') else {
            return Err(format!(
                "item {} is not key=value (items are separated by commas)",
                at + 1
            ));
        };
        let key = key.trim();
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("item {}: an empty key or one with spaces", at + 1));
        }
        let value = percent_decode(raw.trim()).ok_or_else(|| {
            format!("attribute {key}: its value is not valid percent-encoding (write % as %25)")
        })?;
        attributes.push((key.to_owned(), value));
    }
    Ok(ResourceAttributes(attributes))
}

/// OTEL_TRACES_SAMPLER_ARG: the share of traces a ratio sampler keeps.
pub(super) fn parse_sampler_ratio(value: &str) -> Result<f64, String> {
    let ratio: f64 = value
        .trim()
        .parse()
        .map_err(|_| "expected a number from 0 to 1, e.g. 0.25")?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err("expected a number from 0 to 1, e.g. 0.25".into());
    }
    Ok(ratio)
}

/// OTEL_BSP_SCHEDULE_DELAY: milliseconds between two exports of a batch.
pub(super) fn parse_schedule_delay(value: &str) -> Result<Duration, String> {
    let millis: u64 = value
        .trim()
        .parse()
        .map_err(|_| "expected whole milliseconds, e.g. 5000")?;
    if !(1..=600_000).contains(&millis) {
        return Err("expected 1 to 600000 milliseconds".into());
    }
    Ok(Duration::from_millis(millis))
}

/// The items of a comma-separated list, blank ones skipped.
fn list_items(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// `%XX` escapes decoded; `None` when an escape is cut short, not hex, or
/// the bytes are not UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes.get(at + 1..at + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_plain_http_host_and_port() {
        assert_eq!(
            parse_endpoint("http://otel-collector:4317")
                .unwrap()
                .as_str(),
            "http://otel-collector:4317"
        );
        assert_eq!(
            parse_endpoint(" http://127.0.0.1:4317/ ").unwrap().as_str(),
            "http://127.0.0.1:4317"
        );
        assert_eq!(
            parse_endpoint("http://[::1]:4317").unwrap().as_str(),
            "http://[::1]:4317"
        );
        let https = parse_endpoint("https://collector:4317").unwrap_err();
        assert!(https.contains("TLS"), "{https}");
        for bad in ["collector:4317", "ftp://x:1", "http://", "not a url", ""] {
            assert!(parse_endpoint(bad).is_err(), "{bad} was accepted");
        }
        let path = parse_endpoint("http://collector:4318/v1/traces").unwrap_err();
        assert!(path.contains("no path"), "{path}");
    }

    #[test]
    fn endpoint_errors_never_echo_credentials() {
        let err = parse_endpoint("http://user:hunter2-secret@collector:4317").unwrap_err();
        assert!(err.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn headers_are_decoded_and_their_values_never_shown() {
        let headers = parse_headers("api-key=abc%3D%3D123, X-Tenant = blue ,,").unwrap();
        assert_eq!(
            headers.0,
            vec![
                ("api-key".to_owned(), "abc==123".to_owned()),
                ("x-tenant".to_owned(), "blue".to_owned()),
            ]
        );
        let shown = format!("{headers:?}");
        assert!(!shown.contains("abc"), "{shown}");
        assert!(shown.contains("api-key"), "{shown}");
        assert_eq!(parse_headers("").unwrap(), OtlpHeaders::default());
    }

    #[test]
    fn bad_headers_are_refused_without_their_values() {
        for (input, expected) in [
            ("api-key", "item 1 is not name=value"),
            ("a=b,bad name=sekrit-value", "item 2: not a header name"),
            (
                "api-key=sekrit%zz",
                "api-key: its value is not valid percent-encoding",
            ),
            (
                "api-key=sekrit%4",
                "api-key: its value is not valid percent-encoding",
            ),
            ("api-key=", "api-key: its value is empty"),
            (
                "api-key=sekrit%0Avalue",
                "api-key: its value is empty or has characters",
            ),
            ("key-bin=c2Vrcml0", "binary"),
        ] {
            let err = parse_headers(input).unwrap_err();
            assert!(err.contains(expected), "{input}: {err}");
            assert!(!err.contains("sekrit"), "{input}: {err}");
        }
    }

    #[test]
    fn resource_attributes_are_key_value_pairs() {
        let attributes =
            parse_resource_attributes("deployment.environment=prod, team=a%2Cb,service.name=x")
                .unwrap();
        assert_eq!(attributes.get("deployment.environment"), Some("prod"));
        assert_eq!(attributes.get("team"), Some("a,b"));
        assert_eq!(attributes.get("service.name"), Some("x"));
        assert_eq!(attributes.get("missing"), None);
        assert!(parse_resource_attributes("").unwrap().0.is_empty());
        for bad in ["novalue", "=x", "a b=c", "k=%G1"] {
            assert!(
                parse_resource_attributes(bad).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn sampler_ratios_are_from_0_to_1() {
        assert_eq!(parse_sampler_ratio("0.25"), Ok(0.25));
        assert_eq!(parse_sampler_ratio("0"), Ok(0.0));
        assert_eq!(parse_sampler_ratio("1"), Ok(1.0));
        for bad in ["1.5", "-0.1", "NaN", "0,5", "", "half"] {
            assert!(parse_sampler_ratio(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn schedule_delays_are_milliseconds() {
        assert_eq!(parse_schedule_delay("5000"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_schedule_delay("100"), Ok(Duration::from_millis(100)));
        for bad in ["0", "5s", "-1", "", "600001", "1.5"] {
            assert!(parse_schedule_delay(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn service_names_are_short_and_printable() {
        assert_eq!(
            parse_service_name(" auth-core "),
            Ok("auth-core".to_owned())
        );
        assert!(parse_service_name("").is_err());
        assert!(parse_service_name("a\u{7}b").is_err());
        assert!(parse_service_name(&"x".repeat(256)).is_err());
    }
}

/// The OTEL_* settings as the server reads them: through clap, with errors
/// as start-up prints them.
#[cfg(test)]
mod settings {
    use super::super::{Config, without_values};
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut command = <Config as clap::CommandFactory>::command();
        command = command.mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from(std::iter::once("slop-server").chain(args.iter().copied()))?;
        <Config as clap::FromArgMatches>::from_arg_matches(&matches)
    }

    #[test]
    fn traces_are_off_by_default_with_the_specification_defaults() {
        let config = Config::embedded_defaults();
        assert_eq!(config.otel_exporter_otlp_endpoint, None);
        assert_eq!(
            config.otel_traces_sampler,
            TracesSampler::ParentBasedAlwaysOn
        );
        assert_eq!(config.otel_traces_sampler_arg, None);
        assert_eq!(config.otel_bsp_schedule_delay, Duration::from_secs(5));
        assert_eq!(config.otel_service_name, None);
        assert!(config.otel_exporter_otlp_headers.0.is_empty());
        assert!(config.otel_resource_attributes.0.is_empty());
    }

    #[test]
    fn samplers_take_the_specification_names() {
        for (name, sampler) in [
            ("always_on", TracesSampler::AlwaysOn),
            ("always_off", TracesSampler::AlwaysOff),
            ("traceidratio", TracesSampler::TraceIdRatio),
            ("parentbased_always_on", TracesSampler::ParentBasedAlwaysOn),
            (
                "parentbased_always_off",
                TracesSampler::ParentBasedAlwaysOff,
            ),
            (
                "parentbased_traceidratio",
                TracesSampler::ParentBasedTraceIdRatio,
            ),
        ] {
            let config = parse(&["--otel-traces-sampler", name]).unwrap();
            assert_eq!(config.otel_traces_sampler, sampler);
        }
        let err = parse(&["--otel-traces-sampler", "jaeger_remote"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("OTEL_TRACES_SAMPLER"), "{err}");
        assert!(err.contains("parentbased_traceidratio"), "{err}");
    }

    #[test]
    fn only_the_grpc_protocol_is_accepted() {
        assert_eq!(
            parse(&["--otel-exporter-otlp-protocol", "grpc"])
                .unwrap()
                .otel_exporter_otlp_protocol,
            Some(OtlpProtocol::Grpc)
        );
        let err = parse(&["--otel-exporter-otlp-protocol", "http/protobuf"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{err}");
    }

    /// As start-up prints them: the variable and why, never a header's
    /// value, nor the endpoint (it could carry a password).
    #[test]
    fn errors_name_the_variable_and_never_a_secret() {
        for (args, variable, secret) in [
            (
                ["--otel-exporter-otlp-headers", "api-key=sekrit%zz"],
                "OTEL_EXPORTER_OTLP_HEADERS",
                "sekrit",
            ),
            (
                ["--otel-exporter-otlp-headers", "sekrit-without-equals"],
                "OTEL_EXPORTER_OTLP_HEADERS",
                "sekrit",
            ),
            (
                [
                    "--otel-exporter-otlp-endpoint",
                    "http://me:sekrit@collector:4317",
                ],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "sekrit",
            ),
            (
                [
                    "--otel-exporter-otlp-endpoint",
                    "https://sekrit.example:4317",
                ],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "sekrit",
            ),
        ] {
            let printed = without_values(&parse(&args).unwrap_err());
            assert!(printed.contains(variable), "{printed}");
            assert!(!printed.contains(secret), "{printed}");
        }
        for (args, variable) in [
            (
                ["--otel-traces-sampler-arg", "2"],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                ["--otel-bsp-schedule-delay", "5s"],
                "OTEL_BSP_SCHEDULE_DELAY",
            ),
            (
                ["--otel-resource-attributes", "novalue"],
                "OTEL_RESOURCE_ATTRIBUTES",
            ),
            (["--otel-service-name", ""], "OTEL_SERVICE_NAME"),
        ] {
            let printed = without_values(&parse(&args).unwrap_err());
            assert!(printed.contains(variable), "{printed}");
        }
    }
}
