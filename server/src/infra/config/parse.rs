//! Reading each setting's value: every parser names what is wrong, never
//! echoing a secret, and bounds durations to what the setting can mean.

use std::time::Duration;

use super::*;

pub(super) fn parse_secret(value: &str) -> Result<Secret, String> {
    if value.len() > MAX_TEXT {
        return Err(format!("longer than {MAX_TEXT} characters"));
    }
    if value.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "too short: at least {MIN_SECRET_BYTES} characters of random data (e.g. `openssl rand -base64 48`)"
        ));
    }
    // A long run of few characters ("aaaa…", "changemechangeme…") is not
    // random data, whatever its length.
    let distinct = value
        .bytes()
        .collect::<std::collections::HashSet<_>>()
        .len();
    if distinct < 12 {
        return Err("not random enough: use e.g. `openssl rand -base64 48`".into());
    }
    Ok(Secret::from(value))
}

pub(super) fn parse_service_keys(value: &str) -> Result<ServiceKeys, String> {
    if value.len() > 16 * MAX_TEXT {
        return Err(format!("longer than {} characters", 16 * MAX_TEXT));
    }
    let mut keys: Vec<(String, Secret)> = Vec::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, secret)) = pair.split_once(':') else {
            return Err("expected name:secret pairs separated by commas".into());
        };
        let name = name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            // Not quoted: a pair written the wrong way round has its secret
            // here.
            return Err(format!(
                "pair {} does not start with a service name: name:secret, the name 1 to 64 letters, digits, '-', '_' or '.'",
                keys.len() + 1
            ));
        }
        if keys.iter().any(|(existing, _)| existing == name) {
            return Err(format!("service '{name}' is listed twice"));
        }
        let secret =
            parse_secret(secret.trim()).map_err(|why| format!("secret of '{name}' is {why}"))?;
        keys.push((name.to_owned(), secret));
    }
    Ok(ServiceKeys(keys))
}

pub(super) fn parse_key_prefix(value: &str) -> Result<String, String> {
    if value.len() > 128
        || value
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("at most 128 characters, no spaces".into());
    }
    if value.contains(['{', '}']) {
        // Keys carry Redis Cluster hash tags after the prefix; Redis hashes
        // the first `{…}` of a key, so a brace here would move every key.
        return Err("no '{' or '}': they would change the hash tags of the keys".into());
    }
    Ok(value.to_owned())
}

pub(super) fn parse_claim(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > 256 {
        return Err("1 to 256 characters".into());
    }
    Ok(value.to_owned())
}

pub(super) fn parse_database_url(value: &str) -> Result<String, String> {
    if value.len() > MAX_TEXT {
        return Err(format!("longer than {MAX_TEXT} characters"));
    }
    let supported = ["sqlite:", "postgres://", "postgresql://"];
    if supported.iter().any(|scheme| value.starts_with(scheme)) && value.len() > "sqlite:".len() {
        Ok(value.to_owned())
    } else {
        Err("expected sqlite:<path> or postgres://user@host:port/database".into())
    }
}

pub(super) fn parse_reset_url(value: &str) -> Result<String, String> {
    let valid = value.len() <= MAX_TEXT
        && (value.starts_with("https://") || value.starts_with("http://"))
        && !value.contains(['?', '#', ' ']);
    if valid {
        Ok(value.to_owned())
    } else {
        Err("expected an http(s) URL without query or fragment".into())
    }
}

pub(super) fn parse_token_ttl(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(
        value,
        Duration::from_secs(10),
        Duration::from_secs(7 * 86_400),
    )
}

pub(super) fn parse_session_duration(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(
        value,
        Duration::from_secs(60),
        Duration::from_secs(366 * 86_400),
    )
}

pub(super) const MAX_TEXT: usize = 2048;

pub(super) fn parse_host(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.parse::<std::net::IpAddr>().is_ok() {
        return Ok(value.to_owned());
    }
    let valid_name = value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid_name {
        Ok(value.to_owned())
    } else {
        Err("expected an IP address (0.0.0.0, ::, 127.0.0.1) or a host name".into())
    }
}

pub(super) fn parse_log_filter(value: &str) -> Result<String, String> {
    if value.len() > MAX_TEXT {
        return Err(format!("longer than {MAX_TEXT} characters"));
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(value)
        .map(|_| value.to_owned())
        .map_err(|err| format!("not a log filter: {err}"))
}

pub(super) fn parse_trusted_proxies(value: &str) -> Result<TrustedProxies, String> {
    if value.len() > MAX_TEXT {
        return Err(format!("longer than {MAX_TEXT} characters"));
    }
    TrustedProxies::parse(value)
}

pub(super) fn parse_cors_origin(value: &str) -> Result<CorsOrigin, String> {
    if value.len() > MAX_TEXT {
        return Err(format!("longer than {MAX_TEXT} characters"));
    }
    let value = value.trim();
    if value == "*" {
        return Ok(CorsOrigin::Any);
    }
    let mut origins = Vec::new();
    for origin in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let origin = origin.trim_end_matches('/');
        let Some((scheme, rest)) = origin.split_once("://") else {
            return Err(format!(
                "'{origin}' is not an origin: expected scheme://host[:port], e.g. https://app.example.com"
            ));
        };
        if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('/') {
            return Err(format!(
                "'{origin}' is not an origin: expected scheme://host[:port], e.g. https://app.example.com"
            ));
        }
        if http::HeaderValue::from_str(origin).is_err() {
            return Err(format!("'{origin}' has characters not allowed in a header"));
        }
        origins.push(origin.to_owned());
    }
    if origins.is_empty() {
        return Err("expected `*` or a comma-separated list of origins".into());
    }
    Ok(CorsOrigin::List(origins))
}

/// A cookie's `Domain`: a host name of two labels or more, lowercased, its
/// leading dot dropped (RFC 6265 ignores it). A single label is a top-level
/// domain or `localhost`, which browsers refuse as a Domain; an IP address
/// cannot be shared with other hosts at all.
pub(super) fn parse_cookie_domain(value: &str) -> Result<String, String> {
    const HOST_NAME: &str = "expected a host name such as example.com (no scheme, port or path; unset for a cookie of the API's host only)";
    if value.is_empty() {
        return Err(format!("empty: {HOST_NAME}"));
    }
    if value.contains("://") {
        return Err(format!("has a scheme: {HOST_NAME}"));
    }
    let trimmed = value.trim_start_matches('[').trim_end_matches(']');
    if trimmed.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "an IP address: a cookie is shared only across host names; {HOST_NAME}"
        ));
    }
    if value.contains(':') {
        return Err(format!("has a port: {HOST_NAME}"));
    }
    let domain = value
        .strip_prefix('.')
        .unwrap_or(value)
        .to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    let valid = domain.len() <= 253
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return Err(format!("not a host name: {HOST_NAME}"));
    }
    if labels
        .last()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        // Browsers read a name ending in a number as an IPv4 address.
        return Err(format!("ends like an IP address: {HOST_NAME}"));
    }
    if labels.len() < 2 {
        return Err(format!(
            "a single label, which browsers refuse as a cookie's Domain: {HOST_NAME}"
        ));
    }
    Ok(domain)
}

pub(super) fn parse_redis_url(value: &str) -> Result<String, String> {
    if value.len() > MAX_TEXT {
        return Err(format!("longer than {MAX_TEXT} characters"));
    }
    // Verification off would make `rediss://` look safe while anyone on
    // the path could read and change every session: a private CA goes in
    // REDIS_TLS_CA_FILE instead.
    if redis::parse_redis_url(value).is_some_and(|url| url.fragment() == Some("insecure")) {
        return Err(
            "#insecure (TLS without certificate verification) is refused: put the CA that signed the Redis certificate in REDIS_TLS_CA_FILE".into(),
        );
    }
    redis::Client::open(value)
        .map(|_| value.to_owned())
        .map_err(|err| {
            format!("not a Redis URL (redis://host:port/db or rediss:// for TLS): {err}")
        })
}

/// REDIS_CLUSTER_NODES: one or more Redis URLs, comma-separated, all
/// `rediss://` or all `redis://`, database 0 (the only one a cluster has).
pub(super) fn parse_redis_cluster_nodes(value: &str) -> Result<RedisNodes, String> {
    if value.trim().is_empty() {
        return Err("expected at least one node URL (redis://host:port), comma-separated".into());
    }
    let mut nodes = Vec::new();
    for node in value.split(',').map(str::trim) {
        if node.is_empty() {
            return Err("an empty node URL between commas".into());
        }
        let url = parse_redis_url(node)?;
        let database = redis::parse_redis_url(&url)
            .map(|parsed| parsed.path().trim_matches('/').to_owned())
            .unwrap_or_default();
        if !database.is_empty() && database != "0" {
            return Err(
                "a Redis Cluster has database 0 only: leave the database out of the node URLs"
                    .into(),
            );
        }
        nodes.push(url);
    }
    let tls = |url: &String| url.starts_with("rediss://") || url.starts_with("valkeys://");
    if nodes.iter().any(tls) && !nodes.iter().all(tls) {
        return Err("the node URLs must be all rediss:// or all redis://: one cluster speaks TLS or does not".into());
    }
    Ok(RedisNodes(nodes))
}

/// REDIS_SENTINELS: one or more Sentinels, comma-separated, each
/// `host:port` or a `redis://` or `rediss://` URL with a port and no
/// database, all with TLS or all without; returned as URLs (`host:port`
/// becomes `redis://host:port`). Their users and passwords, when several
/// carry one, must agree: one serves the Sentinels and the primary.
pub(super) fn parse_redis_sentinels(value: &str) -> Result<RedisNodes, String> {
    if value.len() > MAX_TEXT {
        return Err(format!("longer than {MAX_TEXT} characters"));
    }
    if value.trim().is_empty() {
        return Err(
            "expected at least one Sentinel (host:port, e.g. 10.0.0.1:26379), comma-separated"
                .into(),
        );
    }
    let mut sentinels = Vec::new();
    let mut credentials: Option<(String, Option<String>)> = None;
    for (index, entry) in value.split(',').map(str::trim).enumerate() {
        let which = index + 1;
        if entry.is_empty() {
            return Err("an empty Sentinel between commas".into());
        }
        let url = if entry.contains("://") {
            if !(entry.starts_with("redis://") || entry.starts_with("rediss://")) {
                return Err(format!(
                    "Sentinel {which} is not host:port, redis://host:port or rediss://host:port"
                ));
            }
            parse_redis_url(entry).map_err(|why| format!("Sentinel {which}: {why}"))?
        } else {
            format!("redis://{entry}")
        };
        let Ok(parsed) = url::Url::parse(&url) else {
            return Err(format!(
                "Sentinel {which} is not host:port, redis://host:port or rediss://host:port"
            ));
        };
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!("Sentinel {which} names no host"));
        }
        if parsed.port().is_none() {
            return Err(format!(
                "Sentinel {which} names no port: write host:port (Sentinels listen on 26379 unless told otherwise)"
            ));
        }
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            return Err(format!(
                "Sentinel {which} names a database or options: a Sentinel has none, and the primary's database 0 is used"
            ));
        }
        if parsed.fragment().is_some() {
            return Err(format!("Sentinel {which} has a #fragment"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            let these = (
                parsed.username().to_owned(),
                parsed.password().map(str::to_owned),
            );
            match &credentials {
                Some(first) if *first != these => {
                    return Err("the Sentinels' URLs carry different users or passwords: one user and password serve the Sentinels and the primary".into());
                }
                _ => credentials = Some(these),
            }
        }
        redis::Client::open(url.as_str()).map_err(|_| {
            format!("Sentinel {which} is not host:port, redis://host:port or rediss://host:port")
        })?;
        sentinels.push(url);
    }
    let tls = |url: &String| url.starts_with("rediss://");
    if sentinels.iter().any(tls) && !sentinels.iter().all(tls) {
        return Err("the Sentinels must be all rediss:// or all plain (host:port, redis://): TLS to the Sentinels and the primary, or none".into());
    }
    Ok(RedisNodes(sentinels))
}

/// REDIS_SENTINEL_MASTER: the name of the primary in the Sentinels'
/// configuration, one word.
pub(super) fn parse_sentinel_master(value: &str) -> Result<String, String> {
    let name = value.trim();
    if name.is_empty() {
        return Err(
            "expected the name the Sentinels know the primary by (their `sentinel monitor <name> …`)"
                .into(),
        );
    }
    if name.len() > 255 {
        return Err("longer than 255 characters".into());
    }
    if !name.chars().all(|c| c.is_ascii_graphic()) {
        return Err(
            "a name of printable characters without spaces, as in `sentinel monitor <name> …`"
                .into(),
        );
    }
    Ok(name.to_owned())
}

/// Parses a duration: a whole number of seconds (`900`), or what
/// `humantime` reads: numbers with units (`500ms`, `15m`, `7d`, `1h 30m`,
/// `1.5s`).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // humantime wants a unit; a bare number has always meant seconds.
        return value
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("'{value}' is too large"));
    }
    humantime::parse_duration(value).map_err(|error| {
        format!(
            "'{value}' is not a duration ({error}): expected seconds (900) or a number with a unit (500ms, 10s, 15m, 1h, 7d)"
        )
    })
}

pub(super) fn parse_bounded_duration(
    value: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let duration = parse_duration(value)?;
    if duration < min || duration > max {
        return Err(format!(
            "must be between {} and {}",
            humanize(min),
            humanize(max)
        ));
    }
    Ok(duration)
}

/// `1500ms`, or `3s` when whole seconds: how settings and messages show a
/// duration.
pub(crate) fn humanize(duration: Duration) -> String {
    let millis = duration.as_millis();
    if !millis.is_multiple_of(1000) {
        format!("{millis}ms")
    } else {
        format!("{}s", millis / 1000)
    }
}

pub(super) fn parse_shutdown_timeout(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(value, Duration::ZERO, Duration::from_secs(3600))
}

pub(super) fn parse_database_timeout(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(value, Duration::from_millis(100), Duration::from_secs(300))
}

pub(super) fn parse_health_interval(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(value, Duration::from_millis(100), Duration::from_secs(3600))
}

pub(super) fn parse_history_ttl(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(
        value,
        Duration::from_secs(1),
        Duration::from_secs(30 * 86_400),
    )
}

pub(super) fn parse_connection_window(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(value, Duration::from_secs(1), Duration::from_secs(86_400))
}

pub(super) fn parse_mail_window(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(
        value,
        Duration::from_secs(60),
        Duration::from_secs(7 * 86_400),
    )
}

pub(super) fn parse_ping_interval(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(value, Duration::from_secs(1), Duration::from_secs(3600))
}

pub(super) fn parse_idle_timeout(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(value, Duration::from_secs(1), Duration::from_secs(3600))
}

pub(super) fn parse_mail_retry_delay(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(value, Duration::from_millis(100), Duration::from_secs(3600))
}

pub(super) fn parse_password(value: &str) -> Result<Secret, String> {
    if value.is_empty() || value.len() > MAX_TEXT {
        return Err(format!("1 to {MAX_TEXT} characters"));
    }
    Ok(Secret::from(value))
}

pub(super) fn parse_metrics_addr(value: &str) -> Result<MetricsAddr, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        return Ok(MetricsAddr::Off);
    }
    value.parse().map(MetricsAddr::At).map_err(|_| {
        format!(
            "'{value}' is not an address to listen on: expected IP:PORT (0.0.0.0:9090, [::]:9090, 127.0.0.1:0) or off"
        )
    })
}
