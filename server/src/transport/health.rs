//! Health: is the process alive, is it ready for traffic, and how are its
//! dependencies.
//!
//! Dependencies: the account database (always; SQLite by default), Redis
//! (when configured: `redis`, a PING on the instance's commands
//! connection, of every primary on a cluster, which must also report
//! `cluster_state:ok`; its detail in `/health` names the mode and each
//! node's role, state and slots, [`RedisReport`]) and the instance's Redis
//! pub/sub connection (`redis_pubsub`:
//! subscribed to session revocations and watched channels, and the streams
//! caught up after a reconnect). A background task checks each at
//! HEALTH_CHECK_INTERVAL and publishes the result twice: to the standard
//! `grpc.health.v1.Health` service (for Kubernetes gRPC probes and service
//! meshes) and to the HTTP endpoints `/health`, `/health/ready` and
//! `/health/live`. Probes read the last result, so a probe storm never
//! becomes a Redis storm. Who sees the detail of `/health` is HEALTH_DETAILS
//! ([`Details`]); the probes and gRPC health are public.
//!
//! Readiness (`""` and each service name over gRPC, `/health/ready` over
//! HTTP) is NOT_SERVING while a configured dependency does not answer, until
//! its first check passes, and from the moment shutdown begins. Liveness
//! (`liveness`, `/health/live`) stays SERVING while the process answers.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    identity::accounts::AccountStore,
    infra::{
        redis_context::RedisContext,
        redis_health::{self, RedisReport},
    },
};

/// The health service name Kubernetes liveness probes ask for.
pub const LIVENESS: &str = "liveness";

/// The gRPC services whose serving status follows readiness.
pub const SERVICES: &[&str] = &[
    "slop.auth.v1.AuthService",
    "slop.session.v1.SessionService",
    "slop.notification.v1.NotificationService",
];

/// How long one dependency check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A dependency the server needs, with the means to check it.
enum Dependency {
    Redis(RedisContext),
    Database(AccountStore),
    /// The instance's Redis pub/sub connection: subscribed and caught up,
    /// or not (it reconnects on its own, after Redis answers again; until
    /// then no subscription can start and no revocation arrives).
    PubSub(watch::Receiver<bool>),
}

impl Dependency {
    fn name(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::Database(_) => "database",
            Self::PubSub(_) => "redis_pubsub",
        }
    }

    async fn check(&self) -> Result<(), String> {
        match self {
            Self::Redis(redis) => redis.ping().await.map_err(|error| error.to_string()),
            Self::Database(accounts) => accounts.ping().await.map_err(|error| error.to_string()),
            Self::PubSub(up) if *up.borrow() => Ok(()),
            Self::PubSub(_) => Err("the Redis pub/sub connection is reconnecting".into()),
        }
    }

    /// What `/health` shows of the dependency beyond up or down.
    async fn report(&self) -> Option<RedisReport> {
        match self {
            Self::Redis(redis) => Some(redis_health::report(redis).await),
            Self::Database(_) | Self::PubSub(_) => None,
        }
    }
}

/// The last check of one dependency.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DependencyState {
    /// Not set up in the configuration, so not needed.
    NotConfigured,
    /// Not checked yet.
    Unknown,
    /// Answered the last check.
    Up {
        /// How long the check took.
        latency_ms: f64,
        /// Redis's mode and nodes.
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        redis: Option<RedisReport>,
    },
    /// Did not answer the last check in time, or answered with an error.
    Down {
        /// How long the check took before failing.
        latency_ms: f64,
        /// Redis's mode and nodes, as far as they could be read.
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        redis: Option<RedisReport>,
    },
}

impl DependencyState {
    fn is_ok(&self) -> bool {
        matches!(self, Self::NotConfigured | Self::Up { .. })
    }
}

/// The server's health, shared by the checker task, the gRPC health service
/// and the HTTP endpoints.
pub struct Health {
    started: Instant,
    reporter: HealthReporter,
    dependencies: Vec<Dependency>,
    states: RwLock<BTreeMap<&'static str, DependencyState>>,
    shutting_down: AtomicBool,
    /// Whether readiness was last published as serving.
    published_ready: tokio::sync::Mutex<Option<bool>>,
}

impl Health {
    /// Sets up the health of a server with these dependencies. Readiness is
    /// NOT_SERVING until the first check passes (or at once SERVING when
    /// there is nothing to check).
    pub async fn new(
        reporter: HealthReporter,
        redis: Option<&RedisContext>,
        database: Option<AccountStore>,
    ) -> Arc<Self> {
        let mut dependencies = Vec::new();
        let mut states = BTreeMap::new();
        match database {
            Some(accounts) => {
                dependencies.push(Dependency::Database(accounts));
                states.insert("database", DependencyState::Unknown);
            }
            None => {
                states.insert("database", DependencyState::NotConfigured);
            }
        }
        match redis {
            Some(redis) => {
                dependencies.push(Dependency::Redis(redis.clone()));
                states.insert("redis", DependencyState::Unknown);
                dependencies.push(Dependency::PubSub(redis.listening()));
                states.insert("redis_pubsub", DependencyState::Unknown);
            }
            None => {
                states.insert("redis", DependencyState::NotConfigured);
            }
        }
        let health = Arc::new(Self {
            started: Instant::now(),
            reporter,
            dependencies,
            states: RwLock::new(states),
            shutting_down: AtomicBool::new(false),
            published_ready: tokio::sync::Mutex::new(None),
        });
        health
            .reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        health.publish().await;
        health
    }

    /// Whether the server should get new traffic now.
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::SeqCst)
            && self
                .states
                .read()
                .expect("health state lock")
                .values()
                .all(DependencyState::is_ok)
    }

    /// Marks the server as shutting down: readiness turns NOT_SERVING at
    /// once, everywhere, and stays so.
    pub async fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.publish().await;
    }

    /// Waits (at most `CHECK_TIMEOUT`) for the Redis pub/sub connection,
    /// if any, to be subscribed, so a server that starts with Redis up is
    /// ready from its first check.
    pub async fn wait_for_pubsub(&self) {
        for dependency in &self.dependencies {
            if let Dependency::PubSub(up) = dependency {
                let mut up = up.clone();
                let _ = tokio::time::timeout(CHECK_TIMEOUT, up.wait_for(|up| *up)).await;
            }
        }
    }

    /// Checks every dependency now and publishes the result.
    pub async fn check_now(&self) {
        let checks = self.dependencies.iter().map(|dependency| async move {
            let started = Instant::now();
            let timed = async {
                let result = tokio::time::timeout(CHECK_TIMEOUT, dependency.check()).await;
                (result, started.elapsed().as_micros() as f64 / 1000.0)
            };
            let report = async {
                tokio::time::timeout(CHECK_TIMEOUT, dependency.report())
                    .await
                    .ok()
                    .flatten()
            };
            let ((result, latency_ms), redis) = tokio::join!(timed, report);
            let state = match result {
                Ok(Ok(())) => DependencyState::Up { latency_ms, redis },
                Ok(Err(error)) => {
                    tracing::warn!(dependency = dependency.name(), %error, "dependency check failed");
                    DependencyState::Down { latency_ms, redis }
                }
                Err(_) => {
                    tracing::warn!(
                        dependency = dependency.name(),
                        timeout_ms = CHECK_TIMEOUT.as_millis() as u64,
                        "dependency check timed out"
                    );
                    DependencyState::Down { latency_ms, redis }
                }
            };
            (dependency.name(), state)
        });
        let results = futures_util::future::join_all(checks).await;
        {
            let mut states = self.states.write().expect("health state lock");
            for (name, state) in results {
                states.insert(name, state);
            }
        }
        self.publish().await;
    }

    /// Checks the dependencies every `interval` (after the first check,
    /// which start-up makes with [`Health::check_now`]), and at once when the
    /// pub/sub connection goes down or comes back, until `stop` is
    /// cancelled.
    pub async fn run_checks(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        if self.dependencies.is_empty() {
            return;
        }
        let mut listener = self.dependencies.iter().find_map(|d| match d {
            Dependency::PubSub(up) => Some(up.clone()),
            _ => None,
        });
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
                changed = changed(&mut listener) => {
                    if changed.is_err() {
                        listener = None;
                        continue;
                    }
                }
            }
            self.check_now().await;
        }
    }

    /// Pushes the current readiness to the gRPC health service, when it
    /// changed.
    async fn publish(&self) {
        let mut published = self.published_ready.lock().await;
        let ready = self.is_ready();
        if *published == Some(ready) {
            return;
        }
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        for service in SERVICES {
            self.reporter.set_service_status(*service, status).await;
        }
        if published.is_some() {
            tracing::info!(ready, "readiness changed");
        }
        *published = Some(ready);
    }

    fn report(&self) -> HealthReport {
        let shutting_down = self.shutting_down.load(Ordering::SeqCst);
        let dependencies = self.states.read().expect("health state lock").clone();
        let ready = self.is_ready();
        let reason = if shutting_down {
            Some("shutting down".to_owned())
        } else {
            dependencies
                .iter()
                .find(|(_, state)| !state.is_ok())
                .map(|(name, state)| match state {
                    DependencyState::Unknown => format!("{name} not checked yet"),
                    _ => format!("{name} is down"),
                })
        };
        HealthReport {
            status: if ready { "serving" } else { "not_serving" },
            reason,
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
            dependencies,
        }
    }
}

/// Resolves when `listener` changes; never when there is none.
async fn changed(
    listener: &mut Option<watch::Receiver<bool>>,
) -> Result<(), watch::error::RecvError> {
    match listener {
        Some(listener) => listener.changed().await,
        None => std::future::pending().await,
    }
}

/// The body of `GET /health`.
#[derive(Debug, Serialize)]
struct HealthReport {
    /// `serving` or `not_serving`, as readiness.
    status: &'static str,
    /// Why the server is not serving.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The server's version.
    version: &'static str,
    /// Seconds since the server started.
    uptime_seconds: u64,
    /// Every dependency by name, configured or not.
    dependencies: BTreeMap<&'static str, DependencyState>,
}

/// Who sees the detail of `GET /health` (version, uptime, dependencies and
/// their latencies); others get only the status.
#[derive(Clone)]
pub enum Details {
    /// Anyone.
    Public,
    /// Callers for whom this says yes, given the request headers (backend
    /// services, by their key).
    To(Arc<dyn Fn(&http::HeaderMap) -> bool + Send + Sync>),
    /// No one.
    Off,
}

/// The HTTP health endpoints.
pub fn router(health: Arc<Health>, details: Details) -> Router {
    Router::new()
        .route("/health", get(health_report))
        .with_state((health.clone(), details))
        .route("/health/ready", get(readiness))
        .route("/health/live", get(liveness))
        .with_state(health)
}

async fn health_report(
    State((health, details)): State<(Arc<Health>, Details)>,
    headers: http::HeaderMap,
) -> Response {
    let report = health.report();
    let status = if report.status == "serving" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let detailed = match &details {
        Details::Public => true,
        Details::To(allowed) => allowed(&headers),
        Details::Off => false,
    };
    if detailed {
        (status, no_store(), Json(report)).into_response()
    } else {
        (
            status,
            no_store(),
            Json(serde_json::json!({"status": report.status})),
        )
            .into_response()
    }
}

async fn readiness(State(health): State<Arc<Health>>) -> Response {
    if health.is_ready() {
        (
            StatusCode::OK,
            no_store(),
            Json(serde_json::json!({"status": "ready"})),
        )
            .into_response()
    } else {
        let report = health.report();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            no_store(),
            Json(serde_json::json!({"status": "not_ready", "reason": report.reason})),
        )
            .into_response()
    }
}

async fn liveness() -> Response {
    (
        StatusCode::OK,
        no_store(),
        Json(serde_json::json!({"status": "live"})),
    )
        .into_response()
}

fn no_store() -> [(http::HeaderName, &'static str); 1] {
    [(http::header::CACHE_CONTROL, "no-store")]
}
