//! The Slop Studios backend core server.
//!
//! One port serves every front door: native gRPC (HTTP/2), grpc-web
//! (HTTP/1.1 and HTTP/2), REST and a WebSocket adapter under `/api/v1`, and
//! health for Kubernetes (`grpc.health.v1` and `/health*`). The binary is a
//! thin `main` over [`run`], which tests call too, on a port-0 listener.
//!
//! The layers, in the order a request travels through them:
//! - [`transport`]: the HTTP side. One port, its connections and their
//!   caps, CORS and security headers, health, logs, metrics. It hands gRPC calls to
//!   the services and everything else to the bridge (`slop_bridge`: REST,
//!   WebSocket, SSE), which calls the very same services.
//! - [`services`]: the tonic implementations of the three services, the
//!   one implementation of each operation; they turn requests into calls on
//!   the core and the core's errors into statuses.
//! - [`identity`]: the core of accounts and sign-in: who is calling
//!   ([`identity::caller`]), the sign-in and password flows
//!   ([`identity::flows`]), accounts, passwords, tokens, sessions, rate
//!   limits and mail. docs/architecture.md has the whole map.
//! - [`notifications`]: channels, their history and this instance's hub
//!   of subscribers, in memory or in Redis.
//! - [`infra`]: the configuration, the clock, and the one Redis context
//!   (commands and pub/sub connections) every store shares.

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    identity::limits,
    infra::{clock, config::MetricsAddr, redis_context::RedisContext},
    transport::{app, connections, fd_limit, health, request_body, serve},
};

pub mod identity;
pub mod infra;
pub mod notifications;
pub mod services;
pub mod transport;

pub use infra::config::Config;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listener's address could not be read.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    /// REDIS_URL, REDIS_CLUSTER_NODES or REDIS_SENTINELS could not be used.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A REDIS_TLS_* file could not be used (the message names it).
    #[error("{0}")]
    RedisTlsFiles(String),
    /// Redis and this server refused each other's TLS certificates: a
    /// configuration error that waiting will not mend.
    #[error(
        "TLS to Redis at {at} failed on a certificate: {cause}; set REDIS_TLS_CA_FILE to the CA that signed the Redis certificate, check that the certificate names the host of REDIS_URL (or of each REDIS_CLUSTER_NODES node, or of each Sentinel and the address the Sentinels give for the primary), and REDIS_TLS_CERT_FILE/REDIS_TLS_KEY_FILE if Redis asks for a client certificate"
    )]
    RedisCertificate {
        /// `host:port`.
        at: String,
        /// Why, in rustls's words.
        cause: String,
    },
    /// The reflection service could not load the contract's descriptors.
    #[error("reflection descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// An embedded descriptor set did not decode.
    #[error("descriptor set: {0}")]
    Descriptor(#[from] prost::DecodeError),
    /// Accounts, sessions or keys could not be set up.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// METRICS_ADDR could not be listened on.
    #[error("METRICS_ADDR: cannot listen on {addr}: {source}")]
    MetricsListener {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why (in use, not an address of this host, ...).
        source: std::io::Error,
    },
}

/// The listeners a server serves on.
pub struct Listeners {
    /// Every front door (HOST:PORT).
    pub public: TcpListener,
    /// `/metrics` (METRICS_ADDR); none when metrics are off.
    pub metrics: Option<TcpListener>,
}

/// Serves on `listener` until `shutdown` resolves, then shuts down
/// gracefully within `config.shutdown_timeout` and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    run_with_clock(config, listener, shutdown, Arc::new(clock::SystemClock)).await
}

/// [`run`] with the clock accounts, sessions and tokens read, so tests can
/// move time instead of waiting for it.
pub async fn run_with_clock(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    clock: clock::SharedClock,
) -> Result<(), Error> {
    let metrics = match config.metrics_addr {
        MetricsAddr::Off => None,
        MetricsAddr::At(addr) => Some(
            transport::metrics::bind(addr)
                .await
                .map_err(|source| Error::MetricsListener { addr, source })?,
        ),
    };
    let listeners = Listeners {
        public: listener,
        metrics,
    };
    serve_on(config, listeners, shutdown, clock).await
}

/// [`run_with_clock`] on listeners bound already: `listeners.metrics`
/// serves `/metrics` in place of METRICS_ADDR (which then only says
/// whether requests are measured: not when it is `off`).
pub async fn serve_on(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
    clock: clock::SharedClock,
) -> Result<(), Error> {
    let Listeners {
        public: listener,
        metrics,
    } = listeners;
    // Before anything is measured: until then every metric is a no-op.
    let metrics = match metrics {
        Some(metrics) => {
            let handle = transport::metrics::install();
            tracing::info!(addr = %metrics.local_addr()?, "metrics listening");
            let stop = CancellationToken::new();
            let served = tokio::spawn(transport::metrics::serve(metrics, handle, stop.clone()));
            // Stops the listener however this function returns.
            Some((served, stop.drop_guard()))
        }
        None => None,
    };
    // Before anything opens files.
    fd_limit::raise_open_files_limit();
    let reporter = tonic_health::server::HealthReporter::new();
    let health_service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
    );
    infra::tls::install_crypto_provider();
    let topology = config.redis_topology();
    if config.app_env() == infra::config::AppEnv::Production {
        for warning in infra::tls::plaintext_store_warnings(topology.as_ref(), &config.database_url)
        {
            tracing::warn!("{warning}");
        }
    }
    // One Redis context for every store: two connections per instance.
    let redis = match &topology {
        Some(topology) => Some(connect_redis(&config, topology, clock.clone()).await?),
        None => None,
    };
    let identity = Arc::new(identity::Identity::from_config(&config, clock, redis.as_ref()).await?);
    let stop = CancellationToken::new();
    let websockets = TaskTracker::new();
    let (notifications, gate) = notifications(&config, &identity, redis.as_ref(), &stop);
    let health =
        health::Health::new(reporter, redis.as_ref(), Some(identity.accounts.clone())).await;

    let app = app::build(
        &config,
        app::Parts {
            health: health.clone(),
            health_service,
            identity: identity.clone(),
            notifications,
            bridge: slop_bridge::Bridge {
                sessions: Arc::new(services::SessionApi::new(identity.clone())),
                shutdown: stop.clone(),
                connections: websockets.clone(),
                ws_ping_interval: config.ws_ping_interval,
                ws_auth_timeout: slop_bridge::ws::AUTH_TIMEOUT,
                gate,
            },
        },
    )?;

    // Know the dependencies before the first request, so readiness is true
    // from the start (at most CHECK_TIMEOUT, when one does not answer).
    health.wait_for_pubsub().await;
    health.check_now().await;
    let checks = tokio::spawn(
        health
            .clone()
            .run_checks(config.health_check_interval, stop.clone()),
    );

    // When the signal came: the mail queue's drain gets what is left of
    // SHUTDOWN_TIMEOUT once the connections are closed.
    let signalled = Arc::new(std::sync::OnceLock::new());
    let shutdown = {
        let signalled = signalled.clone();
        async move {
            shutdown.await;
            let _ = signalled.set(std::time::Instant::now());
        }
    };

    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        version = env!("CARGO_PKG_VERSION"),
        env = ?config.app_env(),
        redis = topology.as_ref().map_or("none", |topology| topology.mode()),
        "listening"
    );
    serve::serve(
        listener,
        app,
        config.trusted_proxies.clone(),
        serve::Settings {
            idle_timeout: config.http_idle_timeout,
            body_timeout: config.http_body_timeout,
            streaming_requests: Arc::new(request_body::StreamingRequests::from_descriptor_sets(
                &app::DESCRIPTOR_SETS,
            )?),
            caps: connection_caps(&config),
        },
        shutdown,
        serve::Drain {
            health,
            stop,
            websockets,
            timeout: config.shutdown_timeout,
        },
    )
    .await;
    checks.abort();
    let spent = signalled
        .get()
        .map_or(std::time::Duration::ZERO, |at: &std::time::Instant| {
            at.elapsed()
        });
    identity
        .outbox
        .drain(
            config
                .shutdown_timeout
                .saturating_sub(spent)
                .min(MAIL_DRAIN),
        )
        .await;
    // Scrapes are answered until the drain is over.
    if let Some((served, stop)) = metrics {
        drop(stop);
        let _ = served.await;
    }
    Ok(())
}

/// The instance's Redis context, over TLS with the REDIS_TLS_* files when
/// its URLs are `rediss://`. Redis may come later (readiness waits for
/// it), but a certificate either side refuses stops start-up.
async fn connect_redis(
    config: &Config,
    topology: &infra::redis_topology::Topology,
    clock: clock::SharedClock,
) -> Result<RedisContext, Error> {
    let files = config.redis_tls_files();
    let certificates = if files.is_empty() {
        None
    } else {
        Some(files.load().map_err(Error::RedisTlsFiles)?)
    };
    let redis = RedisContext::open(
        topology,
        certificates.as_ref(),
        &config.redis_key_prefix,
        clock,
    )?;
    if let Some(cause) = redis.certificate_problem().await {
        return Err(Error::RedisCertificate {
            at: redis.address(),
            cause,
        });
    }
    Ok(redis)
}

/// The longest the mail queue is drained at shutdown (within what is left
/// of SHUTDOWN_TIMEOUT): mail still waiting gets one more attempt.
const MAIL_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// HTTP_MAX_CONNECTIONS (by default from the limit on open files) and
/// HTTP_MAX_CONNECTIONS_PER_IP.
fn connection_caps(config: &Config) -> connections::Caps {
    let limit = fd_limit::raise_open_files_limit();
    let fitting = fd_limit::default_max_connections(limit);
    let total = match config.http_max_connections {
        Some(total) => {
            let total = total as usize;
            if total > fitting {
                tracing::warn!(
                    max_connections = total,
                    open_files_limit = limit,
                    "HTTP_MAX_CONNECTIONS is more than the limit on open files leaves room for: accepts may fail for want of descriptors (then idle connections are closed to get them back)"
                );
            }
            total
        }
        None => fitting,
    };
    let per_address =
        (config.http_max_connections_per_ip > 0).then_some(config.http_max_connections_per_ip);
    tracing::info!(
        max_connections = total,
        max_per_ip = per_address,
        open_files_limit = limit,
        "connection limits"
    );
    connections::Caps { total, per_address }
}

/// The notification service: channel streams in `redis` (the instance's
/// Redis context, when there is one; else in process), this instance's
/// hub, and the task that ends the streams of ended sessions until `stop`;
/// and its connection throttle, which the WebSocket adapter shares.
fn notifications(
    config: &Config,
    identity: &Arc<identity::Identity>,
    redis: Option<&RedisContext>,
    stop: &CancellationToken,
) -> (
    services::NotificationApi,
    Arc<services::notification::StreamGate>,
) {
    let history = notifications::History {
        max_events: config.stream_history_size as usize,
        max_age: config.stream_history_ttl,
        dedup_window: config.stream_dedup_window,
    };
    let registry = Arc::new(notifications::hub::Registry::default());
    let backend = match redis {
        Some(redis) => notifications::StreamBackend::redis(redis, history, registry.clone()),
        None => notifications::StreamBackend::Memory(notifications::memory::MemoryStreams::new(
            identity.clock.clone(),
            history,
            registry.clone(),
        )),
    };
    let hub = notifications::hub::Hub::new(
        backend,
        registry,
        history,
        notifications::hub::QueueLimits {
            max_events: config.stream_queue_max_events as usize,
            max_bytes: config.stream_queue_max_bytes as usize,
        },
        identity.clock.clone(),
    );
    tokio::spawn(hub.clone().watch_sessions(
        identity.sessions.clone(),
        identity.sessions.revocations(),
        stop.clone(),
    ));
    let gate = Arc::new(services::notification::StreamGate::new(
        identity.limits.clone(),
        limits::Rate::new(
            config.stream_connection_limit,
            config.stream_connection_window,
        ),
    ));
    let api = services::NotificationApi::new(
        identity.clone(),
        hub,
        gate.clone(),
        config.stream_heartbeat_interval,
    );
    (api, gate)
}

/// Resolves when the process receives SIGTERM or SIGINT (Ctrl-C).
///
/// The handlers are installed when this is called, not when the future is
/// first polled: a process that has said "listening" must already turn a
/// SIGTERM into a graceful shutdown (the default action kills it at once).
#[cfg(unix)]
pub fn termination_signal() -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| {
        signal(kind)
            .inspect_err(|error| tracing::error!(%error, "cannot listen for {name}"))
            .ok()
    };
    let interrupt = listen(SignalKind::interrupt(), "SIGINT");
    let terminate = listen(SignalKind::terminate(), "SIGTERM");
    async move {
        let received = |signal: Option<tokio::signal::unix::Signal>| async move {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = received(interrupt) => tracing::info!(signal = "SIGINT", "signal received"),
            () = received(terminate) => tracing::info!(signal = "SIGTERM", "signal received"),
        }
    }
}

/// Resolves when the process receives Ctrl-C.
#[cfg(not(unix))]
pub fn termination_signal() -> impl Future<Output = ()> + Send {
    async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!(signal = "Ctrl-C", "signal received"),
            Err(error) => {
                tracing::error!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use super::termination_signal;

    /// SIGTERM that arrives after `termination_signal()` was called but
    /// before anything polled its future (a loaded machine can take that
    /// long between "listening" and the accept loop's first turn) must
    /// still shut down gracefully instead of killing the process.
    #[tokio::test]
    async fn sigterm_before_the_first_poll_is_caught() {
        let signal = termination_signal();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), signal)
            .await
            .expect("the signal future resolves");
    }
}

/// The layers' rules, checked on the source: the core and the services do
/// not know their HTTP adapter, and the core does not know gRPC. Only the wiring (`transport/` and this
/// file) names the bridge, so a service can be called, and the core
/// tested, without any front door.
#[cfg(test)]
mod layers {
    use std::path::Path;

    /// Every `.rs` file under `dir`, with its text.
    fn sources(dir: &Path) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read the source folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                found.extend(sources(&path));
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                let text = std::fs::read_to_string(&path).expect("read a source file");
                found.push((path.display().to_string(), text));
            }
        }
        found
    }

    #[test]
    fn the_core_and_the_services_do_not_name_the_bridge() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        for layer in ["services", "identity", "notifications", "infra"] {
            let files = sources(&root.join(layer));
            assert!(!files.is_empty(), "no sources under src/{layer}");
            offenders.extend(
                files
                    .into_iter()
                    .filter(|(_, text)| text.contains("slop_bridge"))
                    .map(|(path, _)| path),
            );
        }
        assert!(
            offenders.is_empty(),
            "these files name slop_bridge, which only the wiring may: {offenders:?}"
        );
    }

    /// The core and its stores speak in domain types and errors: requests,
    /// metadata and statuses are the services' to translate.
    #[test]
    fn the_core_knows_no_grpc() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let offenders: Vec<String> = ["identity", "notifications", "infra"]
            .into_iter()
            .flat_map(|layer| sources(&root.join(layer)))
            .filter(|(_, text)| text.contains("tonic"))
            .map(|(path, _)| path)
            .collect();
        assert!(
            offenders.is_empty(),
            "these files name tonic, which only services/ and transport/ may: {offenders:?}"
        );
    }
}
