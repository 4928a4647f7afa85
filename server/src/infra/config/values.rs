//! The types of settings' values: what the configuration holds once read.

use std::{fmt, sync::Arc};

use clap::ValueEnum;

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

/// Where `/metrics` is served (METRICS_ADDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    /// No metrics listener at all.
    Off,
    /// A listener of its own at this address.
    At(std::net::SocketAddr),
}

/// Redis URLs in the order given: the nodes of REDIS_CLUSTER_NODES, or the
/// Sentinels of REDIS_SENTINELS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisNodes(pub Vec<String>);
