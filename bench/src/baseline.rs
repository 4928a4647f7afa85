//! The baseline: a minimal axum server that does, per request, the same
//! store work as `slop-server` on the hot path, and nothing else.
//!
//! - `GET /api/v1/auth/me`: the bearer is compared as a string (no JWT is
//!   verified), the session is used (memory: a mutex-protected `HashMap`,
//!   written only when the use moves the idle expiry by a thousandth of the
//!   idle timeout or more; Redis: one `GET` of the session JSON, decoded,
//!   and only when that use is due a write, one EVALSHA of a Lua script
//!   that rewrites it with SET … PX and ZADDs the user's session index, as
//!   the server's touch does), the user's profile is looked up in an
//!   in-process map behind a read-write lock (the server caches profiles),
//!   and a small JSON body is returned.
//! - `slop.auth.v1.AuthService/ValidateToken` (native gRPC, HTTP/2): the
//!   service key and the access token are compared as strings, the session
//!   is used, and the answer is built.
//!
//! It runs in this process ([`InProcess`]), with no middleware: no request
//! ids, logs, CORS or grpc-web.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
};

use axum::{
    Json, Router,
    extract::State,
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderMap, StatusCode, header};
use redis::{Script, aio::ConnectionManager};
use serde::{Deserialize, Serialize};
use slop_api::auth::{self, auth_service_server::AuthServiceServer};
use tokio::net::TcpListener;
use tonic::{Request, Status};

use crate::{
    in_process::InProcess,
    server::Backend,
    setup::{IDLE_TTL, MAX_LIFETIME, millis, now_millis},
    validate_only::{Answer, ValidateOnly, ValidateToken},
};

/// The name of every thread of the baseline, so its CPU time can be told
/// from the load generator's.
pub const THREAD_NAME: &str = "baseline";

/// The session touch due a write: one round trip that reads the session
/// JSON, slides its expiry, writes it back with a matching TTL and records
/// the use in the user's sorted set of sessions (extending the set's TTL
/// when needed). ARGV: key prefix, now (ms), session id, idle timeout (ms).
const TOUCH: &str = r#"
local prefix, now = ARGV[1], tonumber(ARGV[2])
local key = prefix .. 'session:' .. ARGV[3]
local raw = redis.call('GET', key)
if not raw then return false end
local session = cjson.decode(raw)
if session.expires_at <= now then return false end
session.last_seen_at = now
session.expires_at = math.min(now + tonumber(ARGV[4]), session.max_expires_at)
local json = cjson.encode(session)
redis.call('SET', key, json, 'PX', session.expires_at - now)
local index = prefix .. 'user:' .. session.user_id .. ':sessions'
redis.call('ZADD', index, now, session.id)
local keep = session.max_expires_at - now
if redis.call('PTTL', index) < keep then redis.call('PEXPIRE', index, keep) end
return json
"#;

/// Who the baseline knows: the one user, session and service it serves.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user's id.
    pub user_id: String,
    /// The user's email.
    pub email: String,
    /// The user's display name.
    pub display_name: String,
    /// The user's session.
    pub session_id: String,
    /// The access token accepted (compared as a string).
    pub access_token: String,
    /// The service key accepted (compared as a string).
    pub service_key: String,
}

/// A session as stored: the same fields as the server's.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    id: String,
    user_id: String,
    user_agent: String,
    ip: String,
    created_at: i64,
    last_seen_at: i64,
    expires_at: i64,
    max_expires_at: i64,
    refresh_seed: String,
    refresh_generation: u64,
    refreshed_at: i64,
}

/// Where the baseline keeps its one session.
enum Store {
    Memory(Mutex<HashMap<String, Session>>),
    Redis {
        connection: ConnectionManager,
        prefix: String,
        touch: Script,
    },
}

/// What `me` shows of the user, as the server caches it.
#[derive(Debug)]
struct Profile {
    id: String,
    email: String,
    display_name: String,
    created_at: i64,
    updated_at: i64,
}

/// What every handler shares.
struct Shared {
    identity: Identity,
    user_bearer: String,
    service_bearer: String,
    store: Store,
    profiles: RwLock<HashMap<String, Arc<Profile>>>,
}

impl Shared {
    /// Uses the session: the one session-store round trip of the hot path
    /// (two, about once per 86 s, when the use is due a write).
    async fn touch(&self) -> Result<Option<Session>, String> {
        let now = now_millis();
        let id = &self.identity.session_id;
        match &self.store {
            Store::Memory(sessions) => {
                let mut sessions = sessions.lock().unwrap_or_else(|p| p.into_inner());
                let Some(session) = sessions.get_mut(id) else {
                    return Ok(None);
                };
                if session.expires_at <= now {
                    sessions.remove(id);
                    return Ok(None);
                }
                if due_a_write(session, now) {
                    session.last_seen_at = now;
                    session.expires_at = slid_expiry(session, now);
                }
                Ok(Some(session.clone()))
            }
            Store::Redis {
                connection,
                prefix,
                touch,
            } => {
                let raw: Option<String> = redis::cmd("GET")
                    .arg(format!("{prefix}session:{id}"))
                    .query_async(&mut connection.clone())
                    .await
                    .map_err(|error| error.to_string())?;
                let Some(raw) = raw else { return Ok(None) };
                let session: Session =
                    serde_json::from_str(&raw).map_err(|error| error.to_string())?;
                if session.expires_at <= now {
                    return Ok(None);
                }
                if !due_a_write(&session, now) {
                    return Ok(Some(session));
                }
                let raw: Option<String> = touch
                    .prepare_invoke()
                    .arg(prefix)
                    .arg(now)
                    .arg(id)
                    .arg(millis(IDLE_TTL))
                    .invoke_async(&mut connection.clone())
                    .await
                    .map_err(|error| error.to_string())?;
                raw.map(|raw| serde_json::from_str(&raw))
                    .transpose()
                    .map_err(|error| error.to_string())
            }
        }
    }

    /// The touched session, if it is the user's.
    async fn live_session(&self) -> Result<Session, Status> {
        match self.touch().await {
            Ok(Some(session)) if session.user_id == self.identity.user_id => Ok(session),
            Ok(_) => Err(Status::unauthenticated("the session has ended")),
            Err(error) => Err(Status::unavailable(error)),
        }
    }
}

/// The idle expiry after a use at `now`, as the server slides it.
fn slid_expiry(session: &Session, now: i64) -> i64 {
    (now + millis(IDLE_TTL)).min(session.max_expires_at)
}

/// Whether a use at `now` is to be written, by the server's rule: it moves
/// the idle expiry by a thousandth of the idle timeout or more.
fn due_a_write(session: &Session, now: i64) -> bool {
    slid_expiry(session, now) - session.expires_at >= millis(IDLE_TTL) / 1000
}

/// Starts the baseline on `runtime`, on 127.0.0.1 with a free port: the
/// identity's profile in its map, its session in `backend` (under
/// `<prefix>baseline:` in Redis).
pub async fn start(
    runtime: &tokio::runtime::Handle,
    backend: Backend,
    identity: Identity,
) -> Result<InProcess, String> {
    InProcess::start(runtime, prepare(backend, identity)).await
}

/// Opens the store, puts the session and the profile in, and binds.
async fn prepare(backend: Backend, identity: Identity) -> Result<(TcpListener, Router), String> {
    let now = now_millis();
    let profile = Profile {
        id: identity.user_id.clone(),
        email: identity.email.clone(),
        display_name: identity.display_name.clone(),
        created_at: now,
        updated_at: now,
    };
    let session = Session {
        id: identity.session_id.clone(),
        user_id: identity.user_id.clone(),
        user_agent: "slop-bench".into(),
        ip: "127.0.0.1".into(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + millis(IDLE_TTL),
        max_expires_at: now + millis(MAX_LIFETIME),
        // As long as the server's seed (32 random bytes, base64url).
        refresh_seed: "b".repeat(43),
        refresh_generation: 0,
        refreshed_at: now,
    };
    let store = match backend {
        Backend::Memory => {
            Store::Memory(Mutex::new(HashMap::from([(session.id.clone(), session)])))
        }
        // auth-hot-path has no cluster mode; the fan-out bench's cluster
        // row has no use for this baseline.
        Backend::Cluster { .. } => {
            return Err("the auth hot path's baseline runs on memory or one Redis".into());
        }
        Backend::Redis { url, prefix } => {
            let prefix = format!("{prefix}baseline:");
            let client = redis::Client::open(url.as_str()).map_err(|error| error.to_string())?;
            let mut connection = ConnectionManager::new(client)
                .await
                .map_err(|error| format!("baseline Redis: {error}"))?;
            let json = serde_json::to_string(&session).map_err(|error| error.to_string())?;
            let _: () = redis::pipe()
                .cmd("SET")
                .arg(format!("{prefix}session:{}", session.id))
                .arg(json)
                .arg("PX")
                .arg(millis(IDLE_TTL))
                .ignore()
                .cmd("ZADD")
                .arg(format!("{prefix}user:{}:sessions", session.user_id))
                .arg(now)
                .arg(&session.id)
                .ignore()
                .query_async(&mut connection)
                .await
                .map_err(|error| format!("baseline Redis: {error}"))?;
            Store::Redis {
                connection,
                prefix,
                touch: Script::new(TOUCH),
            }
        }
    };
    let shared = Arc::new(Shared {
        user_bearer: format!("Bearer {}", identity.access_token),
        service_bearer: format!("Bearer {}", identity.service_key),
        identity,
        store,
        profiles: RwLock::new(HashMap::from([(profile.id.clone(), Arc::new(profile))])),
    });
    let router = Router::new()
        .route("/api/v1/auth/me", get(me))
        .with_state(shared.clone())
        .route_service(
            "/slop.auth.v1.AuthService/{*method}",
            AuthServiceServer::new(ValidateOnly(BaselineAuth(shared))),
        );
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|error| format!("baseline bind: {error}"))?;
    Ok((listener, router))
}

/// `GET /api/v1/auth/me`.
async fn me(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|value| value.as_bytes() == shared.user_bearer.as_bytes());
    if !authorized {
        return error(StatusCode::UNAUTHORIZED, "bad credentials");
    }
    if let Err(status) = shared.live_session().await {
        return error(StatusCode::UNAUTHORIZED, status.message());
    }
    let profile = shared
        .profiles
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&shared.identity.user_id)
        .cloned();
    let Some(profile) = profile else {
        return error(StatusCode::UNAUTHORIZED, "the account no longer exists");
    };
    Json(serde_json::json!({
        "user": {
            "id": profile.id,
            "email": profile.email,
            "displayName": profile.display_name,
            "createTime": profile.created_at,
            "updateTime": profile.updated_at,
        }
    }))
    .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": { "message": message } })),
    )
        .into_response()
}

/// The baseline's ValidateToken (the other RPCs: [`ValidateOnly`]).
struct BaselineAuth(Arc<Shared>);

impl ValidateToken for BaselineAuth {
    async fn validate(
        &self,
        request: Request<auth::ValidateTokenRequest>,
    ) -> Answer<auth::ValidateTokenResponse> {
        let shared = &self.0;
        let authorized = request
            .metadata()
            .get("authorization")
            .is_some_and(|value| value.as_bytes() == shared.service_bearer.as_bytes());
        if !authorized {
            return Err(Status::unauthenticated("not the service key"));
        }
        if request.get_ref().access_token != shared.identity.access_token {
            return Ok(tonic::Response::new(auth::ValidateTokenResponse {
                inactive_reason: auth::InactiveReason::Invalid.into(),
                ..Default::default()
            }));
        }
        let session = shared.live_session().await?;
        Ok(tonic::Response::new(auth::ValidateTokenResponse {
            active: true,
            user_id: session.user_id,
            session_id: session.id,
            expire_time: Some(pbjson_types::Timestamp {
                seconds: session.expires_at / 1000,
                nanos: 0,
            }),
            inactive_reason: auth::InactiveReason::Unspecified.into(),
        }))
    }
}
