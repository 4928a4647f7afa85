//! The server's one typed configuration, read once at start-up from flags and
//! the environment (a `.env` file is loaded into the environment first), then
//! validated and shared. Every setting is documented here, where `--help`
//! shows it, and listed in `.env.example`.
//!
//! The Node core's variable names keep their meaning, so a deployment can
//! switch servers without renaming anything.
//!
//! The settings' value types are in [`values`] (re-exported here), how each
//! value is read in `parse`, and what production refuses in
//! `secret_strength` and [`Config::load`].

use std::{path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

use crate::transport::proxy::TrustedProxies;

mod mail;
mod otel;
mod parse;
mod secret_strength;
#[cfg(test)]
mod tests;
mod values;

pub use mail::*;
pub use otel::{OtlpEndpoint, OtlpHeaders, OtlpProtocol, ResourceAttributes, TracesSampler};
pub(crate) use parse::humanize;
use parse::*;
pub use values::*;

/// The configuration of `slop-server`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "slop-server",
    version,
    about = "Slop Studios backend core: accounts, sessions and notification streams over gRPC, grpc-web, REST and WebSocket on one port.",
    long_about = None,
    after_help = "Every option can also be set by the environment variable shown, or in a .env file in the working directory."
)]
pub struct Config {
    /// Address to listen on: an IP address, or a host name to resolve.
    #[arg(long, env = "HOST", default_value = "0.0.0.0", value_parser = parse_host)]
    pub host: String,

    /// TCP port for every front door (gRPC, grpc-web, REST, WebSocket, health).
    /// 0 picks a free port.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Deployment environment: development or production. NODE_ENV is read
    /// when APP_ENV is not set. Production defaults LOG_FORMAT to json.
    #[arg(long, env = "APP_ENV", value_enum)]
    pub app_env: Option<AppEnv>,

    /// Log format: `pretty` (readable) or `json` (one object per line).
    /// Default: pretty in development, json in production.
    #[arg(long, env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Which logs to write, as a tracing filter: a level (error, warn, info,
    /// debug, trace) or per-module directives such as `info,slop_server=debug`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_parser = parse_log_filter)]
    pub log_level: String,

    /// Origins browsers may call from (CORS), comma-separated, or `*` for any.
    /// With a list, credentialed requests (cookies) are allowed from those
    /// origins; with `*` they are not.
    #[arg(long, env = "CORS_ORIGIN", default_value = "*", value_parser = parse_cors_origin)]
    pub cors_origin: CorsOrigin,

    /// The `Domain` of the readable CSRF cookie (`slop_csrf`) a cookie login
    /// sets, e.g. `example.com`, as Django's CSRF_COOKIE_DOMAIN: the pages
    /// of every host under it (an app at app.example.com calling the API at
    /// api.example.com) can then read the token and send it in
    /// `x-csrf-token`. It must be the API's host or a domain above it, or
    /// browsers refuse the cookie. Every host under it can read the token:
    /// name a domain whose hosts you all trust (the app's origin must still
    /// be in CORS_ORIGIN). The session cookie stays the API host's only
    /// (HttpOnly). Unset (the default): the CSRF cookie is the API host's
    /// only too.
    #[arg(long, env = "CSRF_COOKIE_DOMAIN", value_parser = parse_cookie_domain)]
    pub csrf_cookie_domain: Option<String>,

    /// Reverse proxies whose `X-Forwarded-For` names the client, for
    /// per-address limits and the address sessions record: IP addresses,
    /// CIDR networks, `loopback` and `private`, comma-separated. Empty (the
    /// default): the client is the TCP peer, and the header is ignored.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "", value_parser = parse_trusted_proxies)]
    pub trusted_proxies: TrustedProxies,

    /// Redis, e.g. `redis://127.0.0.1:6379/0`, or `rediss://host:6380/0` for
    /// TLS (certificate and host name verified; `#insecure` is refused).
    /// When set it is a required dependency: the server is not ready while
    /// Redis does not answer. Unset: everything is kept in process memory.
    #[arg(long, env = "REDIS_URL", value_parser = parse_redis_url)]
    pub redis_url: Option<String>,

    /// Redis Cluster instead of REDIS_URL: the URLs of some of its nodes,
    /// comma-separated (`redis://10.0.0.1:6379,redis://10.0.0.2:6379`, or
    /// all `rediss://` for TLS); the other nodes are found from them.
    /// Needs Redis 7.
    #[arg(long, env = "REDIS_CLUSTER_NODES", value_parser = parse_redis_cluster_nodes)]
    pub redis_cluster_nodes: Option<RedisNodes>,

    /// Redis Sentinel instead of REDIS_URL: the Sentinels, comma-separated
    /// `host:port` (`10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379`), or
    /// `redis://host:port`, or all `rediss://host:port` for TLS to the
    /// Sentinels and to the primary (with the REDIS_TLS_* files; the
    /// primary's certificate must name the address the Sentinels give for
    /// it). A user and password in the URLs are sent to the Sentinels and
    /// the primary alike.
    /// The server follows the primary they name across failovers. Needs
    /// REDIS_SENTINEL_MASTER.
    #[arg(long, env = "REDIS_SENTINELS", value_parser = parse_redis_sentinels)]
    pub redis_sentinels: Option<RedisNodes>,

    /// With REDIS_SENTINELS: the name the Sentinels know the primary by
    /// (their `sentinel monitor <name> …`).
    #[arg(long, env = "REDIS_SENTINEL_MASTER", value_parser = parse_sentinel_master)]
    pub redis_sentinel_master: Option<String>,

    /// With REDIS_SENTINELS: the Sentinels' password (their
    /// `requirepass`), when it is not the primary's. The user and password
    /// in the REDIS_SENTINELS URLs then go to the primary only.
    #[arg(long, env = "REDIS_SENTINEL_PASSWORD", hide_env_values = true, value_parser = parse_password)]
    pub redis_sentinel_password: Option<Secret>,

    /// With a `rediss://` REDIS_URL: the CA certificate (PEM) that signed
    /// Redis's certificate, trusted instead of the platform's roots.
    #[arg(long, env = "REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<PathBuf>,

    /// With a `rediss://` REDIS_URL: a client certificate chain (PEM) for
    /// Redis servers that ask for one (mutual TLS); needs REDIS_TLS_KEY_FILE.
    #[arg(long, env = "REDIS_TLS_CERT_FILE")]
    pub redis_tls_cert_file: Option<PathBuf>,

    /// The private key (PEM) of REDIS_TLS_CERT_FILE.
    #[arg(long, env = "REDIS_TLS_KEY_FILE")]
    pub redis_tls_key_file: Option<PathBuf>,

    /// Key prefix for everything this server keeps in Redis, so several
    /// deployments (or tests) can share one Redis without colliding.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "slop:", value_parser = parse_key_prefix)]
    pub redis_key_prefix: String,

    /// Account database: `sqlite:<path>` (a file, created on first run) or a
    /// PostgreSQL URL (`postgres://user@host:5432/db`). TLS to PostgreSQL
    /// as libpq spells it: `?sslmode=verify-full&sslrootcert=/path/ca.pem`
    /// (sslmode disable, prefer (the default), require, verify-ca or
    /// verify-full; sslcert and sslkey for a client certificate).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite:slop.db", value_parser = parse_database_url)]
    pub database_url: String,

    /// How long a request may wait for the account database: for a
    /// connection (connecting included), for SQLite's write lock, and for
    /// the answer (PostgreSQL's statement_timeout too). Past it the request
    /// fails with UNAVAILABLE / 503, and at start-up an unreachable database
    /// stops the server. Seconds, or a number with a unit: 500ms, 3s.
    #[arg(long, env = "DATABASE_TIMEOUT", default_value = "3s", value_parser = parse_database_timeout)]
    pub database_timeout: Duration,

    /// Secret that signs access tokens (HS256): at least 32 random bytes, e.g.
    /// `openssl rand -base64 48`. Required in production unless
    /// JWT_PRIVATE_KEY_FILE is set, where placeholders, patterned or
    /// phrase-like values and a value also used elsewhere are refused; in
    /// development a random one is made at start, so tokens do not outlive
    /// the process.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub jwt_secret: Option<Secret>,

    /// Ed25519 private key (PKCS#8 PEM, `openssl genpkey -algorithm ed25519`).
    /// When set, access tokens are signed with EdDSA and the public key is
    /// published at /.well-known/jwks.json.
    #[arg(long, env = "JWT_PRIVATE_KEY_FILE")]
    pub jwt_private_key_file: Option<PathBuf>,

    /// Retired Ed25519 keys (PEM files, comma-separated): they no longer sign
    /// but still verify, until removed, so keys rotate without logging anyone
    /// out.
    #[arg(long, env = "JWT_RETIRED_KEY_FILES", value_delimiter = ',')]
    pub jwt_retired_key_files: Vec<PathBuf>,

    /// Access token lifetime. Seconds, or a number with a unit: 900, 15m, 1h.
    #[arg(long, env = "JWT_EXPIRES_IN", default_value = "15m", value_parser = parse_token_ttl)]
    pub jwt_expires_in: Duration,

    /// The `iss` claim of access tokens.
    #[arg(long, env = "JWT_ISSUER", default_value = "slop-studios", value_parser = parse_claim)]
    pub jwt_issuer: String,

    /// The `aud` claim of access tokens.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "slop-api", value_parser = parse_claim)]
    pub jwt_audience: String,

    /// Server secret for refresh tokens, session cookies, CSRF tokens and
    /// the keyed hashes of mail recipients: at least 32 random bytes, its
    /// own. Required in production (checked like JWT_SECRET); in
    /// development a random one is made at start.
    #[arg(long, env = "APP_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub app_secret: Option<Secret>,

    /// Idle session timeout: a session not used for this long ends. It slides
    /// on every authenticated use. Seconds, or a number with a unit.
    #[arg(long, env = "SESSION_TTL", default_value = "86400", value_parser = parse_session_duration)]
    pub session_ttl: Duration,

    /// Absolute session lifetime, however often the session is used.
    #[arg(long, env = "SESSION_MAX_LIFETIME", default_value = "30d", value_parser = parse_session_duration)]
    pub session_max_lifetime: Duration,

    /// Keys of backend services, as `name:secret` pairs, comma-separated.
    /// Only they may validate tokens, publish notifications and end a
    /// user's sessions. Secrets: at least 32 characters; in production
    /// each random and its own. A service sends only the secret:
    /// `authorization: Bearer <secret>`.
    #[arg(long, env = "SERVICE_KEYS", default_value = "", hide_env_values = true, hide_default_value = true, value_parser = parse_service_keys)]
    pub service_keys: ServiceKeys,

    /// How many password hashes may run at once (each takes ~19 MiB and a
    /// core for tens of milliseconds). Default: one less than the number of
    /// CPUs (at least 1), so logins never take every core from the requests
    /// in flight.
    #[arg(long, env = "PASSWORD_HASH_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub password_hash_concurrency: Option<u16>,

    /// How many requests one IP address may make to the account endpoints
    /// that need no sign-in (register, login, refresh, password reset) per
    /// RATE_LIMIT_WINDOW_MS; more get 429 / RESOURCE_EXHAUSTED with the wait.
    /// Counted in Redis when REDIS_URL is set, so across instances.
    #[arg(long, env = "RATE_LIMIT_MAX_REQUESTS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit_max_requests: u32,

    /// The window of RATE_LIMIT_MAX_REQUESTS, in milliseconds.
    #[arg(long, env = "RATE_LIMIT_WINDOW_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1_000..=86_400_000))]
    pub rate_limit_window_ms: u64,

    /// The page that completes a password reset; reset mails link to it
    /// with `?token=<reset token>` appended. Required in production, where
    /// it must be https; in development it defaults to
    /// http://localhost:3000/reset-password.
    #[arg(long, env = "PASSWORD_RESET_URL", value_parser = parse_reset_url)]
    pub password_reset_url: Option<String>,

    /// A directory where outgoing mail (password reset links, account
    /// notices) is written instead of sent, one .eml file each (the very
    /// message SMTP would send), readable by the server's user only: for
    /// development, to follow reset links without a relay. Use SMTP_URL to
    /// send mail. The log never shows a mail's address, body, link or
    /// token.
    #[arg(long, env = "MAIL_OUTBOX_DIR")]
    pub mail_outbox_dir: Option<PathBuf>,

    // Mail delivery (issue #11), kept together so the settings of other
    // work merge cleanly.
    /// Where mail goes: `smtp` (SMTP_URL), `directory` (MAIL_OUTBOX_DIR) or
    /// `none`. Default: the one of SMTP_URL and MAIL_OUTBOX_DIR that is
    /// set. Production refuses to start with neither, since password
    /// reset could not work; `none` runs without mail on purpose, with a
    /// warning at start.
    #[arg(long, env = "MAIL_TRANSPORT", value_enum)]
    pub mail_transport: Option<MailTransportKind>,

    /// The SMTP relay: `smtp://host[:port]` (plain, port 25),
    /// `smtp://host[:port]?tls=required` (STARTTLS, 587),
    /// `?tls=opportunistic` (STARTTLS when offered), or
    /// `smtps://host[:port]` (implicit TLS, 465), with
    /// `user:password@` (percent-encoded) for credentials and a path for
    /// the EHLO name, as lettre reads it. Mail is queued and retried: a
    /// request never waits for the relay.
    #[arg(long, env = "SMTP_URL", hide_env_values = true, value_parser = parse_smtp_url)]
    pub smtp_url: Option<SmtpUrl>,

    /// SMTP user name, when the credentials are not in SMTP_URL.
    #[arg(long, env = "SMTP_USERNAME")]
    pub smtp_username: Option<String>,

    /// SMTP password, when the credentials are not in SMTP_URL. Sent only
    /// over TLS (or to a relay on this machine).
    #[arg(long, env = "SMTP_PASSWORD", hide_env_values = true, value_parser = parse_password)]
    pub smtp_password: Option<Secret>,

    /// A PEM file of the CA certificates that sign the relay's
    /// certificate (a private relay). When set, only these are trusted;
    /// unset, the Mozilla roots (webpki-roots) are.
    #[arg(long, env = "SMTP_TLS_CA_FILE")]
    pub smtp_tls_ca_file: Option<PathBuf>,

    /// The sender of every mail: `no-reply@example.com` or
    /// `Name <no-reply@example.com>`. Required with SMTP_URL; otherwise
    /// `Slop Studios <no-reply@localhost>`.
    #[arg(long, env = "MAIL_FROM", value_parser = parse_mail_from)]
    pub mail_from: Option<lettre::message::Mailbox>,

    /// How long after a failed delivery the first retry waits; each next
    /// waits twice as long (with jitter), for 5 attempts in all (about 10
    /// minutes at the default). Seconds, or a number with a unit.
    #[arg(long, env = "MAIL_RETRY_DELAY", default_value = "30s", value_parser = parse_mail_retry_delay)]
    pub mail_retry_delay: Duration,

    /// How many mails one address may receive per MAIL_PER_RECIPIENT_WINDOW:
    /// password reset links and notices of a registration with a taken
    /// address, together. Past it no mail is sent, and the request answers
    /// as it always does, so the limit tells nobody whether the address has
    /// an account. Counted in Redis when REDIS_URL is set (across
    /// instances), under a keyed hash of the address, never the address.
    #[arg(long, env = "MAIL_PER_RECIPIENT_LIMIT", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub mail_per_recipient_limit: u32,

    /// The window of MAIL_PER_RECIPIENT_LIMIT. Seconds, or a number with a
    /// unit: 30m, 1h, 1d.
    #[arg(long, env = "MAIL_PER_RECIPIENT_WINDOW", default_value = "1h", value_parser = parse_mail_window)]
    pub mail_per_recipient_window: Duration,

    /// How long a graceful shutdown (SIGTERM, SIGINT) may take, from the
    /// signal to exit: in-flight requests finish, streams and WebSockets are
    /// closed. Seconds, or a number with a unit: 500ms, 10s, 1m.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_shutdown_timeout)]
    pub shutdown_timeout: Duration,

    /// How often dependencies (Redis) are checked for readiness and /health.
    /// Seconds, or a number with a unit.
    #[arg(long, env = "HEALTH_CHECK_INTERVAL", default_value = "5s", value_parser = parse_health_interval)]
    pub health_check_interval: Duration,

    /// How often an idle WebSocket is pinged; a client that has not answered
    /// by the next ping is disconnected. Seconds, or a number with a unit.
    #[arg(long, env = "WS_PING_INTERVAL", default_value = "25s", value_parser = parse_ping_interval)]
    pub ws_ping_interval: Duration,

    /// How many events each notification channel keeps for clients that
    /// reconnect and resume (at most; older ones are dropped first).
    #[arg(long, env = "STREAM_HISTORY_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub stream_history_size: u32,

    /// How long each notification channel keeps an event for resuming
    /// clients. Seconds, or a number with a unit: 90s, 1h, 7d.
    #[arg(long, env = "STREAM_HISTORY_TTL", default_value = "24h", value_parser = parse_history_ttl)]
    pub stream_history_ttl: Duration,

    /// How long a Publish's idempotency key is remembered per channel: a
    /// retry with the same key within this time publishes nothing again and
    /// answers the first position. Seconds, or a number with a unit.
    #[arg(long, env = "STREAM_DEDUP_WINDOW", default_value = "5m", value_parser = parse_history_ttl)]
    pub stream_dedup_window: Duration,

    /// How many live events may wait for one slow stream or WebSocket
    /// subscription before it is disconnected as a slow consumer (it
    /// resumes from its last offset).
    #[arg(long, env = "STREAM_QUEUE_MAX_EVENTS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub stream_queue_max_events: u32,

    /// How many bytes of live events may wait for one slow subscription
    /// before it is disconnected as a slow consumer.
    #[arg(long, env = "STREAM_QUEUE_MAX_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1024..))]
    pub stream_queue_max_bytes: u32,

    /// How often a quiet notification stream gets a heartbeat message.
    /// Seconds, or a number with a unit.
    #[arg(long, env = "STREAM_HEARTBEAT_INTERVAL", default_value = "25s", value_parser = parse_ping_interval)]
    pub stream_heartbeat_interval: Duration,

    /// How many new notification streams and WebSockets one IP address, and
    /// one user, may open per STREAM_CONNECTION_WINDOW; more are refused with
    /// 429 / RESOURCE_EXHAUSTED and the wait. Backend services are exempt.
    #[arg(long, env = "STREAM_CONNECTION_LIMIT", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub stream_connection_limit: u32,

    /// The window of STREAM_CONNECTION_LIMIT. Seconds, or a number with a
    /// unit.
    #[arg(long, env = "STREAM_CONNECTION_WINDOW", default_value = "1m", value_parser = parse_connection_window)]
    pub stream_connection_window: Duration,

    // Exposure and connections (issue #9), kept together so the settings
    // of other work merge cleanly.
    /// Who sees the detail of `GET /health` (version, uptime, each
    /// dependency with its check latency): `public` (anyone), `service`
    /// (callers with a SERVICE_KEYS bearer key; others get the bare status)
    /// or `off` (no one). Default: public in development, service in
    /// production. `/health/ready`, `/health/live` and gRPC health stay
    /// public.
    #[arg(long, env = "HEALTH_DETAILS", value_enum)]
    pub health_details: Option<HealthDetails>,

    /// gRPC server reflection (v1 and v1alpha, for grpcurl and `buf curl`):
    /// `on` or `off`. Default: on in development, off in production, where
    /// clients use the published contract in proto/.
    #[arg(long, env = "GRPC_REFLECTION", value_enum)]
    pub grpc_reflection: Option<Switch>,

    /// How long a connection may stay open with no request in flight: an
    /// HTTP/1 connection before its first request head is complete and
    /// between requests (keep-alive), an HTTP/2 connection with no open
    /// stream. Then it is closed (HTTP/2: with GOAWAY). gRPC streams,
    /// Server-Sent Events and WebSockets are requests in flight, never idle.
    /// Seconds, or a number with a unit.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_idle_timeout)]
    pub http_idle_timeout: Duration,

    /// How long a request body may take to arrive, from the first time the
    /// server waits for it: a body that trickles is cut (HTTP/1: 408 and
    /// the connection closed; HTTP/2: the stream reset). Calls of
    /// client-streaming gRPC methods are exempt. Seconds, or a number with
    /// a unit.
    #[arg(long, env = "HTTP_BODY_TIMEOUT", default_value = "30s", value_parser = parse_idle_timeout)]
    pub http_body_timeout: Duration,

    /// How many connections may be open at once (WebSockets included).
    /// When all are taken, a newcomer is served by closing a connection
    /// that has no request in flight; when none is idle, it is refused
    /// with 503. Default: the limit on open files (raised to its hard limit
    /// at start) less a headroom of at most 128 for the server's own files.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub http_max_connections: Option<u32>,

    /// How many connections one client address may have open at once
    /// (WebSockets included); more are refused with 429. 0: no cap. The
    /// client is the TCP peer: behind a reverse proxy that is the proxy, so
    /// raise this to what the proxies open, or set 0 and cap per client at
    /// the proxy.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS_PER_IP", default_value_t = 256, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub http_max_connections_per_ip: u32,

    /// Where Prometheus scrapes `/metrics`: an `IP:PORT` of its own, never
    /// the public port, or `off` for no metrics listener. Port 0 picks a
    /// free port (the address is logged as "metrics listening").
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9090", value_parser = parse_metrics_addr)]
    pub metrics_addr: MetricsAddr,

    // Traces (issue #11): the standard OTEL_* variables, kept together so
    // the settings of other work merge cleanly. Read from the environment
    // as every OpenTelemetry SDK reads them, and checked at start-up.
    /// OTLP/gRPC collector that traces are sent to, e.g.
    /// `http://otel-collector:4317`. Unset: no traces are exported (log
    /// lines still carry each request's trace id). Plain `http://` only:
    /// this build has no TLS to the collector.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = otel::parse_endpoint)]
    pub otel_exporter_otlp_endpoint: Option<OtlpEndpoint>,

    /// The OTLP transport: only `grpc` is built in. Read so that a
    /// deployment set up for OTLP over HTTP is refused with a reason.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_enum)]
    pub otel_exporter_otlp_protocol: Option<OtlpProtocol>,

    /// Headers sent with every export, `name=value,…` with percent-encoded
    /// values, e.g. a vendor's API key. Never logged.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS", hide_env_values = true, default_value = "", value_parser = otel::parse_headers)]
    pub otel_exporter_otlp_headers: OtlpHeaders,

    /// The service name traces are filed under. Default: `service.name`
    /// from OTEL_RESOURCE_ATTRIBUTES, else `slop-server`.
    #[arg(long, env = "OTEL_SERVICE_NAME", value_parser = otel::parse_service_name)]
    pub otel_service_name: Option<String>,

    /// Attributes of every exported span's resource, `key=value,…` with
    /// percent-encoded values, e.g. `deployment.environment=prod`.
    #[arg(long, env = "OTEL_RESOURCE_ATTRIBUTES", default_value = "", value_parser = otel::parse_resource_attributes)]
    pub otel_resource_attributes: ResourceAttributes,

    /// Which traces are kept: `always_on`, `always_off`, `traceidratio`,
    /// or `parentbased_` one of these (follow the caller's sampled flag,
    /// decide only for traces that start here).
    #[arg(
        long,
        env = "OTEL_TRACES_SAMPLER",
        value_enum,
        default_value = "parentbased_always_on"
    )]
    pub otel_traces_sampler: TracesSampler,

    /// The share of traces a `traceidratio` sampler keeps, 0 to 1
    /// (default 1). Ignored by the other samplers.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", value_parser = otel::parse_sampler_ratio)]
    pub otel_traces_sampler_arg: Option<f64>,

    /// Milliseconds between two exports of a batch of spans.
    #[arg(long, env = "OTEL_BSP_SCHEDULE_DELAY", default_value = "5000", value_parser = otel::parse_schedule_delay)]
    pub otel_bsp_schedule_delay: Duration,
}

impl Config {
    /// Reads the configuration from the command line and the environment,
    /// after loading `.env` (if present) into the environment. Exits with a
    /// message naming the setting when a value is malformed.
    pub fn load() -> Self {
        // A missing .env is normal; a malformed one must not be ignored.
        if let Err(err) = dotenvy::dotenv()
            && !err.not_found()
        {
            eprintln!("error: cannot read .env: {err}");
            std::process::exit(2);
        }
        let mut config = match Self::try_parse() {
            Ok(config) => config,
            // --help and --version print to stdout and exit 0.
            Err(error) if !error.use_stderr() => error.exit(),
            Err(error) => {
                eprint!("{}", without_values(&error));
                std::process::exit(2);
            }
        };
        if config.app_env.is_none() {
            config.app_env = match std::env::var("NODE_ENV") {
                Ok(value) if !value.is_empty() => match AppEnv::from_str(&value, true) {
                    Ok(env) => Some(env),
                    Err(_) => {
                        eprintln!(
                            "error: invalid value '{value}' for NODE_ENV: expected development or production"
                        );
                        std::process::exit(2);
                    }
                },
                _ => None,
            };
        }
        if let Err(why) = config.validate() {
            eprintln!("error: {why}");
            std::process::exit(2);
        }
        config
    }

    /// Checks what no single setting can: production needs real secrets,
    /// each of its own, and a reset page of its own. Messages name the
    /// variable and the reason, never a secret's value.
    pub fn validate(&self) -> Result<(), String> {
        self.check_redis_topology()?;
        self.check_redis_tls()?;
        if self.app_env() == AppEnv::Production {
            if self.jwt_secret.is_none() && self.jwt_private_key_file.is_none() {
                return Err(
                    "JWT_SECRET (or JWT_PRIVATE_KEY_FILE) must be set in production".into(),
                );
            }
            if self.app_secret.is_none() {
                return Err("APP_SECRET must be set in production".into());
            }
            self.check_production_secrets()?;
            match &self.password_reset_url {
                None => {
                    return Err(
                        "PASSWORD_RESET_URL must be set in production: the https page of your app where users choose a new password (reset mails link to it)".into(),
                    );
                }
                Some(url) if !url.starts_with("https://") => {
                    return Err(
                        "PASSWORD_RESET_URL must be an https URL in production: reset links carry a token".into(),
                    );
                }
                Some(_) => {}
            }
        }
        self.mail_transport()?;
        Ok(())
    }

    /// Where Redis is (REDIS_URL, REDIS_CLUSTER_NODES, or REDIS_SENTINELS
    /// with REDIS_SENTINEL_MASTER); None keeps everything in process
    /// memory.
    pub fn redis_topology(&self) -> Option<crate::infra::redis_topology::Topology> {
        use crate::infra::redis_topology::Topology;
        if let Some(url) = &self.redis_url {
            return Some(Topology::Standalone(url.clone()));
        }
        if let Some(nodes) = &self.redis_cluster_nodes {
            return Some(Topology::Cluster(nodes.0.clone()));
        }
        match (&self.redis_sentinels, &self.redis_sentinel_master) {
            (Some(sentinels), Some(master)) => Some(Topology::Sentinel {
                sentinels: sentinels.0.clone(),
                master: master.clone(),
                password: self.redis_sentinel_password.clone(),
            }),
            _ => None,
        }
    }

    /// One way to reach Redis at a time; the Sentinels with the name of
    /// their primary.
    fn check_redis_topology(&self) -> Result<(), String> {
        match (&self.redis_sentinels, &self.redis_sentinel_master) {
            (Some(_), None) => {
                return Err("REDIS_SENTINELS is set without REDIS_SENTINEL_MASTER: name the primary the Sentinels watch (their `sentinel monitor <name> …`)".into());
            }
            (None, Some(_)) => {
                return Err("REDIS_SENTINEL_MASTER is set without REDIS_SENTINELS: list the Sentinels (host:port, comma-separated)".into());
            }
            _ => {}
        }
        if self.redis_sentinel_password.is_some() && self.redis_sentinels.is_none() {
            return Err("REDIS_SENTINEL_PASSWORD is set without REDIS_SENTINELS: it is the Sentinels' password; the password of REDIS_URL or REDIS_CLUSTER_NODES goes in their URLs".into());
        }
        let set: Vec<&str> = [
            (self.redis_url.is_some(), "REDIS_URL"),
            (self.redis_cluster_nodes.is_some(), "REDIS_CLUSTER_NODES"),
            (self.redis_sentinels.is_some(), "REDIS_SENTINELS"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        if set.len() > 1 {
            let how_many = if set.len() == 2 { "both" } else { "all" };
            return Err(format!(
                "{} are {how_many} set: one way to reach Redis at a time: REDIS_URL for one Redis server, REDIS_CLUSTER_NODES for a Redis Cluster, or REDIS_SENTINELS (with REDIS_SENTINEL_MASTER) for a primary watched by Sentinel",
                set.join(" and ")
            ));
        }
        Ok(())
    }

    /// The certificate files of TLS to Redis (REDIS_TLS_*).
    pub fn redis_tls_files(&self) -> crate::infra::tls::RedisTlsFiles {
        crate::infra::tls::RedisTlsFiles {
            ca: self.redis_tls_ca_file.clone(),
            cert: self.redis_tls_cert_file.clone(),
            key: self.redis_tls_key_file.clone(),
        }
    }

    /// REDIS_TLS_* need `rediss://` URLs (over plain TCP they would
    /// be ignored, and the operator believe the link encrypted), and a
    /// client certificate needs its key.
    fn check_redis_tls(&self) -> Result<(), String> {
        let files = self.redis_tls_files();
        if files.is_empty() {
            return Ok(());
        }
        let tls = self.redis_topology().is_some_and(|topology| {
            topology
                .urls()
                .iter()
                .all(|url| url.starts_with("rediss://") || url.starts_with("valkeys://"))
        });
        if !tls {
            return Err(
                "REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE need rediss:// in REDIS_URL, REDIS_CLUSTER_NODES or REDIS_SENTINELS (TLS); with redis:// they would be ignored".into(),
            );
        }
        match (&files.cert, &files.key) {
            (Some(_), None) => Err("REDIS_TLS_CERT_FILE is set without REDIS_TLS_KEY_FILE: a client certificate needs its key".into()),
            (None, Some(_)) => Err("REDIS_TLS_KEY_FILE is set without REDIS_TLS_CERT_FILE: a client key needs its certificate".into()),
            _ => Ok(()),
        }
    }

    /// The page reset mails link to (development's default when unset).
    pub fn password_reset_url(&self) -> &str {
        self.password_reset_url
            .as_deref()
            .unwrap_or(DEVELOPMENT_RESET_URL)
    }

    /// The default configuration, as a server started with no flags and an
    /// empty environment has it; tests start from this.
    pub fn embedded_defaults() -> Self {
        Self::parse_from_iter_ignoring_env()
    }

    fn parse_from_iter_ignoring_env() -> Self {
        let mut command = <Self as clap::CommandFactory>::command();
        // Clear every `env` binding so the caller's environment cannot leak in.
        command = command.mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from(["slop-server"])
            .expect("the defaults parse");
        <Self as clap::FromArgMatches>::from_arg_matches(&matches).expect("the defaults parse")
    }

    /// The deployment environment, development when not set.
    pub fn app_env(&self) -> AppEnv {
        self.app_env.unwrap_or(AppEnv::Development)
    }

    /// The log format in force.
    pub fn log_format(&self) -> LogFormat {
        self.log_format.unwrap_or(match self.app_env() {
            AppEnv::Development => LogFormat::Pretty,
            AppEnv::Production => LogFormat::Json,
        })
    }
}

/// The page reset mails link to in development, when PASSWORD_RESET_URL is
/// unset.
pub const DEVELOPMENT_RESET_URL: &str = "http://localhost:3000/reset-password";

/// The shortest secret accepted: 256 bits (RFC 8725 §3.5).
pub const MIN_SECRET_BYTES: usize = 32;

/// Settings whose values are secret, or hold one (a password in a URL):
/// their values never appear in an error message.
const SECRET_SETTINGS: &[&str] = &[
    "--jwt-secret",
    "--app-secret",
    "--service-keys",
    "--database-url",
    "--redis-url",
    "--redis-cluster-nodes",
    "--redis-sentinels",
    "--smtp-url",
    "--smtp-password",
    "--otel-exporter-otlp-endpoint",
    "--otel-exporter-otlp-headers",
];

/// A command-line or environment error as printed: clap's message, except
/// that for a secret setting it is rebuilt without the value clap quotes
/// (`invalid value '<the secret>' for …`): only the setting and why.
fn without_values(error: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let secret = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => SECRET_SETTINGS
            .iter()
            .any(|setting| arg.starts_with(setting))
            .then(|| arg.clone()),
        _ => None,
    };
    let Some(arg) = secret else {
        return error.to_string();
    };
    let why = std::error::Error::source(error)
        .map(|why| format!(": {why}"))
        .unwrap_or_default();
    format!("error: invalid value for '{arg}'{why}\n\nFor more information, try '--help'.\n")
}

impl Config {
    /// In production every secret must be strong (no placeholder, at least
    /// [`secret_strength::MIN_SECRET_BITS`] by its estimate) and used for
    /// one thing only: JWT_SECRET, APP_SECRET and each service's key all
    /// differ.
    fn check_production_secrets(&self) -> Result<(), String> {
        let mut secrets: Vec<(String, &Secret)> = Vec::new();
        if let Some(secret) = &self.jwt_secret {
            secrets.push(("JWT_SECRET".into(), secret));
        }
        if let Some(secret) = &self.app_secret {
            secrets.push(("APP_SECRET".into(), secret));
        }
        for (name, secret) in &self.service_keys.0 {
            secrets.push((format!("SERVICE_KEYS: the secret of '{name}'"), secret));
        }
        for (what, secret) in &secrets {
            let text = String::from_utf8_lossy(secret.expose());
            if let Some(why) = secret_strength::weakness(&text) {
                return Err(format!(
                    "{what} {why}; in production use random data, e.g. `openssl rand -base64 48`"
                ));
            }
        }
        for (at, (what, secret)) in secrets.iter().enumerate() {
            if let Some((first, _)) = secrets[..at].iter().find(|(_, other)| other == secret) {
                let first = first.trim_start_matches("SERVICE_KEYS: ");
                return Err(format!(
                    "{what} is the same as {first}; in production each needs a secret of its own (`openssl rand -base64 48`), so that one leaked cannot forge the others"
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Who sees the detail of `GET /health`.
    pub fn health_details(&self) -> HealthDetails {
        self.health_details.unwrap_or(match self.app_env() {
            AppEnv::Development => HealthDetails::Public,
            AppEnv::Production => HealthDetails::Service,
        })
    }

    /// Whether gRPC server reflection is served.
    pub fn grpc_reflection(&self) -> bool {
        self.grpc_reflection.unwrap_or(match self.app_env() {
            AppEnv::Development => Switch::On,
            AppEnv::Production => Switch::Off,
        }) == Switch::On
    }
}
