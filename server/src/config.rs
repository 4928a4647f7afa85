//! The server's one typed configuration, read once at start-up from flags and
//! the environment (a `.env` file is loaded into the environment first), then
//! validated and shared. Every setting is documented here, where `--help`
//! shows it, and listed in `.env.example`.
//!
//! The Node core's variable names keep their meaning, so a deployment can
//! switch servers without renaming anything.

use std::{fmt, time::Duration};

use clap::{Parser, ValueEnum};

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

    /// Redis, e.g. `redis://127.0.0.1:6379/0`. When set it is a required
    /// dependency: the server is not ready while Redis does not answer.
    /// Unset: everything is kept in process memory.
    #[arg(long, env = "REDIS_URL", value_parser = parse_redis_url)]
    pub redis_url: Option<String>,

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
        let mut config = Self::parse();
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
        config
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
    /// These origins (scheme://host[:port]), with credentials.
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

/// Parses a duration: a whole number of seconds (`900`), or a number with a
/// unit: `ms`, `s`, `m`, `h`, `d` (`500ms`, `15m`, `7d`).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    if number.is_empty() || number.len() > 12 {
        return Err(format!(
            "'{value}' is not a duration: expected seconds (900) or a number with a unit (500ms, 10s, 15m, 1h, 7d)"
        ));
    }
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{value}' is too large"))?;
    let millis_per_unit: u64 = match unit.trim() {
        "" | "s" => 1_000,
        "ms" => 1,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "'{other}' is not a duration unit: use ms, s, m, h or d"
            ));
        }
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("'{value}' is too large"))
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

fn humanize(duration: Duration) -> String {
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

fn parse_health_interval(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(value, Duration::from_millis(100), Duration::from_secs(3600))
}

fn parse_ping_interval(value: &str) -> Result<Duration, String> {
    parse_bounded_duration(value, Duration::from_secs(1), Duration::from_secs(3600))
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
        assert!(parse_duration("1.5s").is_err());
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
