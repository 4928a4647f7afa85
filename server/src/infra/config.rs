//! The server's one typed configuration, read once at start-up from flags and
//! the environment (a `.env` file is loaded into the environment first), then
//! validated and shared. Every setting is documented here, where `--help`
//! shows it, and listed in `.env.example`.
//!
//! The Node core's variable names keep their meaning, so a deployment can
//! switch servers without renaming anything.

use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use clap::{Parser, ValueEnum};

use crate::transport::proxy::TrustedProxies;

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

    /// Reverse proxies whose `X-Forwarded-For` names the client, for
    /// per-address limits and the address sessions record: IP addresses,
    /// CIDR networks, `loopback` and `private`, comma-separated. Empty (the
    /// default): the client is the TCP peer, and the header is ignored.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "", value_parser = parse_trusted_proxies)]
    pub trusted_proxies: TrustedProxies,

    /// Redis, e.g. `redis://127.0.0.1:6379/0`. When set it is a required
    /// dependency: the server is not ready while Redis does not answer.
    /// Unset: everything is kept in process memory.
    #[arg(long, env = "REDIS_URL", value_parser = parse_redis_url)]
    pub redis_url: Option<String>,

    /// Key prefix for everything this server keeps in Redis, so several
    /// deployments (or tests) can share one Redis without colliding.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "slop:", value_parser = parse_key_prefix)]
    pub redis_key_prefix: String,

    /// Account database: `sqlite:<path>` (a file, created on first run) or a
    /// PostgreSQL URL (`postgres://user@host:5432/db`).
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

    /// Where outgoing mail (password reset links, account notices) is
    /// written, one .eml file each, readable by the server's user only. No
    /// mail transport is built in yet: unset, mail is not sent. In
    /// development this is how to read reset links; the log never shows a
    /// mail's address, body, link or token.
    #[arg(long, env = "MAIL_OUTBOX_DIR")]
    pub mail_outbox_dir: Option<PathBuf>,

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
        Ok(())
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

/// Deployment environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AppEnv {
    /// Local development: readable logs.
    Development,
    /// Production: JSON logs.
    Production,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Which browser origins may call the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigin {
    /// Any origin, without credentials.
    Any,
    /// These origins (`scheme://host[:port]`), with credentials.
    List(Vec<String>),
}

impl fmt::Display for CorsOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::List(origins) => f.write_str(&origins.join(",")),
        }
    }
}

/// A secret from the configuration; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// A secret of `bytes` random bytes from the OS CSPRNG.
    pub fn random(bytes: usize) -> Self {
        let mut secret = vec![0u8; bytes];
        getrandom::fill(&mut secret).expect("the OS random number generator");
        Self(secret.into())
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for Secret {
    /// A secret taken as given (tests, tools); configuration goes through
    /// the checks of JWT_SECRET and APP_SECRET instead.
    fn from(value: &str) -> Self {
        Self(value.as_bytes().into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Backend service keys: (name, secret) pairs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ServiceKeys(pub Vec<(String, Secret)>);

impl fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

/// The page reset mails link to in development, when PASSWORD_RESET_URL is
/// unset.
pub const DEVELOPMENT_RESET_URL: &str = "http://localhost:3000/reset-password";

/// The shortest secret accepted: 256 bits (RFC 8725 §3.5).
pub const MIN_SECRET_BYTES: usize = 32;

mod secret_strength;

/// Settings whose values are secret, or hold one (a password in a URL):
/// their values never appear in an error message.
const SECRET_SETTINGS: &[&str] = &[
    "--jwt-secret",
    "--app-secret",
    "--service-keys",
    "--database-url",
    "--redis-url",
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

fn parse_secret(value: &str) -> Result<Secret, String> {
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
    Ok(Secret(value.as_bytes().into()))
}

fn parse_service_keys(value: &str) -> Result<ServiceKeys, String> {
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

fn parse_key_prefix(value: &str) -> Result<String, String> {
    if value.len() > 128
        || value
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("at most 128 characters, no spaces".into());
    }
    Ok(value.to_owned())
}

fn parse_claim(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > 256 {
        return Err("1 to 256 characters".into());
    }
    Ok(value.to_owned())
}

fn parse_database_url(value: &str) -> Result<String, String> {
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

fn parse_reset_url(value: &str) -> Result<String, String> {
    let valid = value.len() <= MAX_TEXT
        && (value.starts_with("https://") || value.starts_with("http://"))
        && !value.contains(['?', '#', ' ']);
    if valid {
        Ok(value.to_owned())
    } else {
        Err("expected an http(s) URL without query or fragment".into())
    }
}

fn parse_token_ttl(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(
        value,
        Duration::from_secs(10),
        Duration::from_secs(7 * 86_400),
    )
}

fn parse_session_duration(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(
        value,
        Duration::from_secs(60),
        Duration::from_secs(366 * 86_400),
    )
}

const MAX_TEXT: usize = 2048;

fn parse_host(value: &str) -> Result<String, String> {
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

fn parse_log_filter(value: &str) -> Result<String, String> {
    if value.len() > MAX_TEXT {
        return Err(format!("longer than {MAX_TEXT} characters"));
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(value)
        .map(|_| value.to_owned())
        .map_err(|err| format!("not a log filter: {err}"))
}

fn parse_trusted_proxies(value: &str) -> Result<TrustedProxies, String> {
    if value.len() > MAX_TEXT {
        return Err(format!("longer than {MAX_TEXT} characters"));
    }
    TrustedProxies::parse(value)
}

fn parse_cors_origin(value: &str) -> Result<CorsOrigin, String> {
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

fn parse_redis_url(value: &str) -> Result<String, String> {
    if value.len() > MAX_TEXT {
        return Err(format!("longer than {MAX_TEXT} characters"));
    }
    redis::Client::open(value)
        .map(|_| value.to_owned())
        .map_err(|err| format!("not a Redis URL (redis://host:port/db): {err}"))
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

fn parse_bounded_duration(value: &str, min: Duration, max: Duration) -> Result<Duration, String> {
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

fn parse_shutdown_timeout(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(value, Duration::ZERO, Duration::from_secs(3600))
}

fn parse_database_timeout(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(value, Duration::from_millis(100), Duration::from_secs(300))
}

fn parse_health_interval(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(value, Duration::from_millis(100), Duration::from_secs(3600))
}

fn parse_history_ttl(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(
        value,
        Duration::from_secs(1),
        Duration::from_secs(30 * 86_400),
    )
}

fn parse_connection_window(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(value, Duration::from_secs(1), Duration::from_secs(86_400))
}

fn parse_mail_window(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(
        value,
        Duration::from_secs(60),
        Duration::from_secs(7 * 86_400),
    )
}

fn parse_ping_interval(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(value, Duration::from_secs(1), Duration::from_secs(3600))
}

// Exposure and connections (issue #9): the settings' types, defaults and
// parsers, kept together.

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

fn parse_idle_timeout(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(value, Duration::from_secs(1), Duration::from_secs(3600))
}

/// Who sees the detail of `GET /health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HealthDetails {
    /// Anyone.
    Public,
    /// Backend services (a SERVICE_KEYS bearer key); others get the status.
    Service,
    /// No one: everyone gets the status.
    Off,
}

/// A feature that is on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Served.
    On,
    /// Not served.
    Off,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut command = <Config as clap::CommandFactory>::command();
        command = command.mut_args(|arg| arg.env(None::<&str>));
        let mut all = vec!["slop-server"];
        all.extend_from_slice(args);
        let matches = command.try_get_matches_from(all)?;
        <Config as clap::FromArgMatches>::from_arg_matches(&matches)
    }

    #[test]
    fn embedded_defaults_serve_on_port_3000_everywhere() {
        let config = Config::embedded_defaults();
        assert_eq!(config.host, "0.0.0.0");
        assert_eq!(config.port, 3000);
        assert_eq!(config.cors_origin, CorsOrigin::Any);
        assert!(config.trusted_proxies.is_empty());
        assert_eq!(config.redis_url, None);
        assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(config.app_env(), AppEnv::Development);
        assert_eq!(config.log_format(), LogFormat::Pretty);
    }

    #[test]
    fn production_defaults_to_json_logs() {
        let config = parse(&["--app-env", "production"]).unwrap();
        assert_eq!(config.log_format(), LogFormat::Json);
        let config = parse(&["--app-env", "production", "--log-format", "pretty"]).unwrap();
        assert_eq!(config.log_format(), LogFormat::Pretty);
    }

    #[test]
    fn durations_take_seconds_or_units() {
        assert_eq!(parse_duration("900"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("-5").is_err());
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 24h "), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("15 parsecs").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("99999999999999999999").is_err());
    }

    #[test]
    fn malformed_values_name_the_setting() {
        let err = parse(&["--shutdown-timeout", "ten"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("SHUTDOWN_TIMEOUT"), "{err}");
        let err = parse(&["--shutdown-timeout", "2h"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("between 0s and 3600s"), "{err}");
        let err = parse(&["--port", "70000"]).unwrap_err().to_string();
        assert!(err.contains("PORT"), "{err}");
        let err = parse(&["--trusted-proxies", "10.0.0.0/8,ingress"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("TRUSTED_PROXIES") && err.contains("'ingress' is not an IP address"),
            "{err}"
        );
        let err = parse(&["--cors-origin", "example.com"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CORS_ORIGIN") && err.contains("not an origin"),
            "{err}"
        );
        let err = parse(&["--redis-url", "http://x"]).unwrap_err().to_string();
        assert!(err.contains("REDIS_URL"), "{err}");
        let err = parse(&["--log-level", "info,=[x"]).unwrap_err().to_string();
        assert!(err.contains("LOG_LEVEL"), "{err}");
        let long = "a".repeat(300);
        let err = parse(&["--host", &long]).unwrap_err().to_string();
        assert!(err.contains("HOST"), "{err}");
    }

    const SECRET: &str = "s3cr3t-0123456789-abcdefghijklmnopqrstuvwxyz";

    /// Secrets as the docs say to make them (`openssl rand`), for production.
    const JWT: &str = "rbnJ//z/YXw6VFvWEp4oCC0xPX1dFFyu1jYnacwxRIiw4RefN0WHlLUal5Hgy24b";
    const APP: &str = "4a68814fc804a3cba8811a2023503868ff994c3fb6557daa66ba48fc3375ecee";
    const SERVICE: &str = "uJLJ60tdrhBniapIy9oOEtM3Fu/RwwaGyRiI5CaXrYA=";
    const RESET_URL: &str = "https://app.example.com/reset-password";

    /// Production with good secrets and a reset page, then `extra`.
    fn production(extra: &[&str]) -> Config {
        let mut args = vec![
            "--app-env",
            "production",
            "--jwt-secret",
            JWT,
            "--app-secret",
            APP,
            "--password-reset-url",
            RESET_URL,
        ];
        for pair in extra.chunks(2) {
            match args.iter().position(|arg| *arg == pair[0]) {
                Some(at) => args[at + 1] = pair[1],
                None => args.extend_from_slice(pair),
            }
        }
        parse(&args).unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn production_refuses_to_start_without_secrets() {
        let config = parse(&["--app-env", "production"]).unwrap();
        assert!(config.validate().unwrap_err().contains("JWT_SECRET"));
        let config = parse(&["--app-env", "production", "--jwt-secret", JWT]).unwrap();
        assert!(config.validate().unwrap_err().contains("APP_SECRET"));
        assert_eq!(production(&[]).validate(), Ok(()));
        assert_eq!(
            Config::embedded_defaults().validate(),
            Ok(()),
            "development runs without"
        );
    }

    /// Values people put in production: placeholders from .env.example and
    /// tutorials, sequences, keyboard runs, phrases, and test secrets.
    const WEAK: &[&str] = &[
        "change-me-to-32-random-characters-or-more",
        "changemechangemechangeme12345678",
        "your-jwt-secret-here-at-least-32-characters",
        "0123456789abcdef0123456789abcdef",
        "0123456789abcdefghijklmnopqrstuvwxyz",
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF",
        "qwertyuiopasdfghjklzxcvbnm1234567890",
        "QWERTYUIOP!@#$%^&*()asdfghjkl;'zxcvbnm",
        "thisismysupersecretkeyforjwtsigning",
        "ThisIsMySuperSecretKeyThatNobodyWillEverGuess2024!",
        "th1s-1s-my-sup3r-s3cr3t-k3y-f0r-jwt-s1gn1ng",
        "test-jwt-secret-0123456789abcdefghijklmnopq",
        "s3cr3t-0123456789-abcdefghijklmnopqrstuvwxyz",
        "password1234567890password1234567890",
    ];

    #[test]
    fn production_refuses_placeholder_patterned_and_phrase_like_secrets() {
        for weak in WEAK {
            let service_keys = format!("media:{weak}");
            for (variable, args) in [
                ("JWT_SECRET", ["--jwt-secret", weak]),
                ("APP_SECRET", ["--app-secret", weak]),
                ("SERVICE_KEYS", ["--service-keys", &service_keys]),
            ] {
                let err = production(&args)
                    .validate()
                    .expect_err(&format!("{variable}={weak} is accepted"));
                assert!(err.starts_with(variable), "{variable}={weak}: {err}");
                assert!(!err.contains(weak), "the value is printed: {err}");
                assert!(err.contains("openssl rand"), "says how to make one: {err}");
            }
            // Development takes what it parses: tests and laptops.
            assert_eq!(
                parse(&["--jwt-secret", weak]).map(|c| c.validate()).ok(),
                Some(Ok(())),
                "{weak}"
            );
        }
    }

    #[test]
    fn production_refuses_a_secret_used_twice() {
        let err = production(&["--app-secret", JWT]).validate().unwrap_err();
        assert!(
            err.contains("JWT_SECRET") && err.contains("APP_SECRET") && !err.contains(JWT),
            "{err}"
        );
        for reused in [JWT, APP] {
            let keys = format!("media:{SERVICE},billing:{reused}");
            let err = production(&["--service-keys", &keys])
                .validate()
                .unwrap_err();
            assert!(
                err.starts_with("SERVICE_KEYS") && err.contains("'billing'"),
                "{err}"
            );
            assert!(!err.contains(reused), "{err}");
        }
        let keys = format!("media:{SERVICE},billing:{SERVICE}");
        let err = production(&["--service-keys", &keys])
            .validate()
            .unwrap_err();
        assert!(
            err.contains("'media'") && err.contains("'billing'") && !err.contains(SERVICE),
            "{err}"
        );
        let keys = format!("media:{SERVICE}");
        assert_eq!(production(&["--service-keys", &keys]).validate(), Ok(()));
    }

    #[test]
    fn random_secrets_pass_the_production_checks() {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::STANDARD;
        for _ in 0..300 {
            let mut bytes = [0u8; 48];
            getrandom::fill(&mut bytes).unwrap();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            // `openssl rand -base64 24/32/48` (32 characters, the least
            // accepted, and more) and `-hex 32`. (`-hex 16`, 128 bits, is
            // at the very edge: about 1 in 10,000 is refused.)
            for secret in [
                engine.encode(&bytes[..24]),
                engine.encode(&bytes[..32]),
                engine.encode(bytes),
                hex[..64].to_owned(),
            ] {
                assert_eq!(secret_strength::weakness(&secret), None, "{secret}");
            }
        }
    }

    #[test]
    fn parse_errors_of_secrets_never_show_the_value() {
        for (args, value) in [
            (["--jwt-secret", "short-secret-value"], "short-secret-value"),
            (
                ["--app-secret", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"],
                "zzzzzzzzzzzz",
            ),
            (
                ["--service-keys", "Zm9vYmFy+c2VjcmV0/dmFsdWU=:media"],
                "Zm9vYmFy+c2VjcmV0",
            ),
            (
                ["--service-keys", "media=Zm9vYmFy+c2VjcmV0"],
                "Zm9vYmFy+c2VjcmV0",
            ),
            (
                ["--database-url", "mysql://slop:hunter2-do-not-print@db/x"],
                "hunter2",
            ),
            (
                ["--redis-url", "redis://:hunter3-do-not-print@[bad/"],
                "hunter3",
            ),
        ] {
            let error = parse(&args).expect_err(&format!("{args:?}"));
            let message = without_values(&error);
            let variable = args[0]
                .trim_start_matches("--")
                .replace('-', "_")
                .to_uppercase();
            assert!(message.contains(&variable), "{message}");
            assert!(!message.contains(value), "{message}");
        }
        // Other settings keep their value in the message: it helps.
        let error = parse(&["--shutdown-timeout", "ten"]).unwrap_err();
        assert!(without_values(&error).contains("'ten'"));
    }

    #[test]
    fn production_needs_an_https_reset_page() {
        assert_eq!(
            Config::embedded_defaults().password_reset_url(),
            "http://localhost:3000/reset-password",
            "development keeps its default"
        );
        let config = parse(&[
            "--app-env",
            "production",
            "--jwt-secret",
            JWT,
            "--app-secret",
            APP,
        ])
        .unwrap();
        let err = config.validate().unwrap_err();
        assert!(err.starts_with("PASSWORD_RESET_URL"), "{err}");
        let err = production(&["--password-reset-url", "http://app.example.com/reset"])
            .validate()
            .unwrap_err();
        assert!(
            err.starts_with("PASSWORD_RESET_URL") && err.contains("https"),
            "{err}"
        );
        assert_eq!(production(&[]).password_reset_url(), RESET_URL);
    }

    #[test]
    fn weak_secrets_are_refused() {
        let err = parse(&["--jwt-secret", "short"]).unwrap_err().to_string();
        assert!(
            err.contains("JWT_SECRET") && err.contains("too short"),
            "{err}"
        );
        let err = parse(&["--app-secret", &"a".repeat(64)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("APP_SECRET") && err.contains("not random"),
            "{err}"
        );
        let config = parse(&["--jwt-secret", SECRET]).unwrap();
        assert!(
            !format!("{config:?}").contains(SECRET),
            "secrets never print"
        );
    }

    #[test]
    fn service_keys_are_name_secret_pairs() {
        let config = parse(&[
            "--service-keys",
            &format!("media:{SECRET}, billing:{SECRET}x"),
        ])
        .unwrap();
        let names: Vec<_> = config
            .service_keys
            .0
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(names, ["media", "billing"]);
        for bad in [
            "media",
            "media:short",
            &format!("a b:{SECRET}"),
            &format!("m:{SECRET},m:{SECRET}"),
        ] {
            let err = parse(&["--service-keys", bad]).unwrap_err().to_string();
            assert!(err.contains("SERVICE_KEYS"), "{bad}: {err}");
        }
        assert!(Config::embedded_defaults().service_keys.0.is_empty());
    }

    #[test]
    fn database_urls_are_sqlite_or_postgres() {
        assert_eq!(Config::embedded_defaults().database_url, "sqlite:slop.db");
        assert!(parse(&["--database-url", "postgres://postgres@127.0.0.1/test"]).is_ok());
        let err = parse(&["--database-url", "mysql://x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
        assert_eq!(
            Config::embedded_defaults().database_timeout,
            Duration::from_secs(3)
        );
        let config = parse(&["--database-timeout", "500ms"]).unwrap();
        assert_eq!(config.database_timeout, Duration::from_millis(500));
        let err = parse(&["--database-timeout", "0"]).unwrap_err().to_string();
        assert!(
            err.contains("DATABASE_TIMEOUT") && err.contains("between 100ms and 300s"),
            "{err}"
        );
    }

    #[test]
    fn health_details_and_reflection_are_closed_in_production_by_default() {
        let development = Config::embedded_defaults();
        assert_eq!(development.health_details(), HealthDetails::Public);
        assert!(development.grpc_reflection());
        let production = parse(&["--app-env", "production"]).unwrap();
        assert_eq!(production.health_details(), HealthDetails::Service);
        assert!(!production.grpc_reflection());
        let opened = parse(&[
            "--app-env",
            "production",
            "--health-details",
            "public",
            "--grpc-reflection",
            "on",
        ])
        .unwrap();
        assert_eq!(opened.health_details(), HealthDetails::Public);
        assert!(opened.grpc_reflection());
        let err = parse(&["--health-details", "some"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HEALTH_DETAILS"), "{err}");
        let err = parse(&["--grpc-reflection", "yes"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("GRPC_REFLECTION"), "{err}");
    }

    #[test]
    fn cors_origins_are_a_list_or_any() {
        assert_eq!(parse_cors_origin("*"), Ok(CorsOrigin::Any));
        assert_eq!(
            parse_cors_origin("https://a.example, http://localhost:5173/"),
            Ok(CorsOrigin::List(vec![
                "https://a.example".into(),
                "http://localhost:5173".into()
            ]))
        );
        assert!(parse_cors_origin("https://a.example/path").is_err());
        assert!(parse_cors_origin(",").is_err());
    }
}
