//! The floor: the least work that correctly answers the hot path, so the
//! figures say what the design costs and not only what the code costs
//! (issue #13). Per request, and nothing else:
//!
//! - `GET /api/v1/auth/me`: verify the bearer JWT the server issued, with
//!   the server's secret and checks ([`access`]); one session read that
//!   slides the idle expiry — Redis: one `GETEX <prefix>floor:session:<sid>
//!   PX <SESSION_TTL>`; memory: a look-up in an in-process map behind a
//!   mutex, the expiry slid in place; check that the session is live (not
//!   past its absolute lifetime) and is the token subject's; answer the
//!   user as a small JSON body.
//! - `slop.auth.v1.AuthService/ValidateToken`: the service key compared in
//!   constant time, then the same check of the access token and the same
//!   session read, and the answer built as the server builds it.
//!
//! The floor keeps session records of its own, one per signed-in user,
//! written at start: `{user_id, email, display_name, max_expires_at}` as
//! JSON, so one read answers `me` with no account look-up. It runs in this
//! process ([`InProcess`]) with no middleware.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::State,
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderMap, StatusCode, header};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use slop_api::auth::{self, InactiveReason, auth_service_server::AuthServiceServer};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;
use tonic::{Request, Status};

use crate::{
    in_process::InProcess,
    server::Backend,
    setup::{IDLE_TTL, MAX_LIFETIME, millis, now_millis},
    validate_only::{Answer, ValidateOnly, ValidateToken},
};

pub mod access;

use access::{AccessCheck, Claims, Refusal};

/// The name of every thread of the floor's runtime, so its CPU time can be
/// told from the load generator's and the baseline's.
pub const THREAD_NAME: &str = "floor";

/// A signed-in user, as the floor's session record holds them.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The user's id (the token's `sub`).
    pub user_id: String,
    /// The session's id (the token's `sid`).
    pub session_id: String,
    /// The user's email.
    pub email: String,
    /// The user's display name.
    pub display_name: String,
}

/// What the floor is configured with: the server's secrets and the
/// sessions it keeps records of.
#[derive(Clone)]
pub struct Setup {
    /// The server's JWT_SECRET.
    pub jwt_secret: String,
    /// The service key ValidateToken callers present.
    pub service_key: String,
    /// One per signed-in user.
    pub users: Vec<SignedIn>,
}

/// A session as the floor stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SessionRecord {
    user_id: String,
    email: String,
    display_name: String,
    /// The end of the absolute lifetime, Unix ms; the idle expiry is the
    /// key's TTL (Redis) or [`Held::idle_until`] (memory).
    max_expires_at: i64,
}

impl SessionRecord {
    /// The record, if it answers for `claims` at `now` (Unix ms): still
    /// within its lifetime and the token subject's.
    fn admit(self, claims: &Claims, now: i64) -> Option<Self> {
        (self.user_id == claims.sub && now < self.max_expires_at).then_some(self)
    }
}

/// A record in the in-process map, with its idle expiry (Unix ms).
struct Held {
    record: SessionRecord,
    idle_until: i64,
}

/// Where the floor keeps its session records.
enum Sessions {
    Memory(Mutex<HashMap<String, Held>>),
    Redis {
        connection: ConnectionManager,
        /// `<run prefix>floor:session:`.
        prefix: String,
    },
}

impl Sessions {
    /// Reads session `sid` and slides its idle expiry: the one store round
    /// trip of the floor.
    async fn read(&self, sid: &str, now: i64) -> Result<Option<SessionRecord>, String> {
        match self {
            Self::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let Some(held) = map.get_mut(sid) else {
                    return Ok(None);
                };
                if held.idle_until <= now {
                    map.remove(sid);
                    return Ok(None);
                }
                held.idle_until = now + millis(IDLE_TTL);
                Ok(Some(held.record.clone()))
            }
            Self::Redis { connection, prefix } => {
                let raw: Option<String> = redis::cmd("GETEX")
                    .arg(format!("{prefix}{sid}"))
                    .arg("PX")
                    .arg(millis(IDLE_TTL))
                    .query_async(&mut connection.clone())
                    .await
                    .map_err(|error| error.to_string())?;
                raw.map(|raw| serde_json::from_str(&raw))
                    .transpose()
                    .map_err(|error| error.to_string())
            }
        }
    }
}

/// What every handler shares.
struct Shared {
    tokens: AccessCheck,
    service_bearer: String,
    sessions: Sessions,
}

/// Why a caller is not let in.
enum Denied {
    Token(Refusal),
    SessionEnded,
    Store(String),
}

impl Shared {
    /// The token verified and its session read, slid and admitted.
    async fn authenticate(&self, token: &str) -> Result<(Claims, SessionRecord), Denied> {
        let now = now_millis();
        let claims = self
            .tokens
            .verify(token, now.div_euclid(1000))
            .map_err(Denied::Token)?;
        let record = self
            .sessions
            .read(&claims.sid, now)
            .await
            .map_err(Denied::Store)?;
        match record.and_then(|record| record.admit(&claims, now)) {
            Some(record) => Ok((claims, record)),
            None => Err(Denied::SessionEnded),
        }
    }
}

/// Starts the floor on `runtime`, on 127.0.0.1 with a free port, its
/// session records in `backend` (under `<prefix>floor:` in Redis).
pub async fn start(
    runtime: &tokio::runtime::Handle,
    backend: Backend,
    setup: Setup,
) -> Result<InProcess, String> {
    InProcess::start(runtime, prepare(backend, setup)).await
}

/// Writes the session records and binds.
async fn prepare(backend: Backend, setup: Setup) -> Result<(TcpListener, Router), String> {
    let now = now_millis();
    let records = setup.users.iter().map(|user| {
        let record = SessionRecord {
            user_id: user.user_id.clone(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            max_expires_at: now + millis(MAX_LIFETIME),
        };
        (user.session_id.clone(), record)
    });
    let sessions = match backend {
        Backend::Memory => Sessions::Memory(Mutex::new(
            records
                .map(|(sid, record)| {
                    let idle_until = now + millis(IDLE_TTL);
                    (sid, Held { record, idle_until })
                })
                .collect(),
        )),
        Backend::Cluster { .. } => {
            return Err("the auth hot path's floor runs on memory or one Redis".into());
        }
        Backend::Redis { url, prefix } => {
            let prefix = format!("{prefix}floor:session:");
            let client = redis::Client::open(url.as_str()).map_err(|error| error.to_string())?;
            let mut connection = ConnectionManager::new(client)
                .await
                .map_err(|error| format!("floor Redis: {error}"))?;
            let mut pipe = redis::pipe();
            for (sid, record) in records {
                let json = serde_json::to_string(&record).map_err(|error| error.to_string())?;
                pipe.cmd("SET")
                    .arg(format!("{prefix}{sid}"))
                    .arg(json)
                    .arg("PX")
                    .arg(millis(IDLE_TTL))
                    .ignore();
            }
            let _: () = pipe
                .query_async(&mut connection)
                .await
                .map_err(|error| format!("floor Redis: {error}"))?;
            Sessions::Redis { connection, prefix }
        }
    };
    let shared = Arc::new(Shared {
        tokens: AccessCheck::hs256(setup.jwt_secret.as_bytes()),
        service_bearer: format!("Bearer {}", setup.service_key),
        sessions,
    });
    let router = Router::new()
        .route("/api/v1/auth/me", get(me))
        .with_state(shared.clone())
        .route_service(
            "/slop.auth.v1.AuthService/{*method}",
            AuthServiceServer::new(ValidateOnly(FloorAuth(shared))),
        );
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|error| format!("floor bind: {error}"))?;
    Ok((listener, router))
}

/// `GET /api/v1/auth/me`.
async fn me(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let Some(token) = token else {
        return error(StatusCode::UNAUTHORIZED, "no bearer token");
    };
    match shared.authenticate(token).await {
        Ok((claims, record)) => Json(serde_json::json!({
            "user": {
                "id": claims.sub,
                "email": record.email,
                "displayName": record.display_name,
            }
        }))
        .into_response(),
        Err(Denied::Token(_)) => error(StatusCode::UNAUTHORIZED, "bad credentials"),
        Err(Denied::SessionEnded) => error(StatusCode::UNAUTHORIZED, "the session has ended"),
        Err(Denied::Store(failure)) => error(StatusCode::SERVICE_UNAVAILABLE, &failure),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": { "message": message } })),
    )
        .into_response()
}

/// The floor's ValidateToken (the other RPCs: [`ValidateOnly`]).
struct FloorAuth(Arc<Shared>);

impl ValidateToken for FloorAuth {
    async fn validate(
        &self,
        request: Request<auth::ValidateTokenRequest>,
    ) -> Answer<auth::ValidateTokenResponse> {
        let shared = &self.0;
        let authorized = request
            .metadata()
            .get("authorization")
            .is_some_and(|value| {
                bool::from(value.as_bytes().ct_eq(shared.service_bearer.as_bytes()))
            });
        if !authorized {
            return Err(Status::unauthenticated("not a service key"));
        }
        let inactive = |reason: InactiveReason| {
            Ok(tonic::Response::new(auth::ValidateTokenResponse {
                inactive_reason: reason.into(),
                ..Default::default()
            }))
        };
        match shared.authenticate(&request.get_ref().access_token).await {
            Ok((claims, _)) => Ok(tonic::Response::new(auth::ValidateTokenResponse {
                active: true,
                user_id: claims.sub,
                session_id: claims.sid,
                expire_time: Some(pbjson_types::Timestamp {
                    seconds: claims.exp,
                    nanos: 0,
                }),
                inactive_reason: InactiveReason::Unspecified.into(),
            })),
            Err(Denied::Token(Refusal::Expired)) => inactive(InactiveReason::Expired),
            Err(Denied::Token(_)) => inactive(InactiveReason::Invalid),
            Err(Denied::SessionEnded) => inactive(InactiveReason::SessionEnded),
            Err(Denied::Store(failure)) => Err(Status::unavailable(failure)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: &str, max_expires_at: i64) -> SessionRecord {
        SessionRecord {
            user_id: user.into(),
            email: "a@example.com".into(),
            display_name: "A".into(),
            max_expires_at,
        }
    }

    fn claims(sub: &str) -> Claims {
        Claims {
            sub: sub.into(),
            sid: "s".into(),
            exp: 0,
        }
    }

    #[test]
    fn a_session_answers_for_its_user_within_its_lifetime() {
        let live = record("u", 2_000);
        assert_eq!(live.clone().admit(&claims("u"), 1_999), Some(live.clone()));
        assert_eq!(live.clone().admit(&claims("v"), 1_000), None, "not theirs");
        assert_eq!(live.admit(&claims("u"), 2_000), None, "past its lifetime");
    }

    #[tokio::test]
    async fn an_in_memory_read_slides_the_idle_expiry_and_ends_idle_sessions() {
        let sessions = Sessions::Memory(Mutex::new(HashMap::from([
            (
                "live".to_owned(),
                Held {
                    record: record("u", i64::MAX),
                    idle_until: 1_000,
                },
            ),
            (
                "idle".to_owned(),
                Held {
                    record: record("u", i64::MAX),
                    idle_until: 500,
                },
            ),
        ])));
        assert!(sessions.read("live", 999).await.unwrap().is_some());
        // Slid to 999 + IDLE_TTL: still there well after the first expiry.
        assert!(sessions.read("live", 50_000).await.unwrap().is_some());
        assert_eq!(sessions.read("idle", 500).await.unwrap(), None);
        assert_eq!(sessions.read("nobody", 0).await.unwrap(), None);
        let Sessions::Memory(map) = &sessions else {
            unreachable!()
        };
        let map = map.lock().unwrap();
        assert!(!map.contains_key("idle"), "an idle session is dropped");
        assert_eq!(map["live"].idle_until, 50_000 + millis(IDLE_TTL));
    }
}
