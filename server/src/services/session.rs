//! `slop.session.v1.SessionService`: users see and end their own sessions;
//! backend services end all of a user's sessions.

use std::sync::Arc;

use slop_api::{
    errors::ErrorReason,
    session::{self, session_service_server::SessionService},
};
use tonic::{Request, Response, Status};

use super::{
    Answer, next_page_token, page,
    status::{invalid, with_reason},
};
use crate::{
    identity::Identity,
    identity::caller::{Access, Authenticator, Caller},
    identity::sessions::Session,
    infra::clock::{from_millis, to_timestamp},
};

/// The id that names the calling session.
const CURRENT: &str = "current";

/// `slop.session.v1.SessionService`.
#[derive(Clone)]
pub struct SessionApi {
    identity: Arc<Identity>,
}

impl SessionApi {
    /// The service over this identity.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }

    /// The session `id` names, if the caller may see it: a user only their
    /// own (another user's is NOT_FOUND, as if it did not exist), a service
    /// any. A user's `current` is the session authenticating the call has
    /// just read and touched, not read again.
    async fn visible(&self, caller: &Caller, id: &str) -> Result<Session, Status> {
        if id.is_empty() {
            return Err(invalid(
                "session_id",
                "must not be empty (use `current` for the calling session)",
            ));
        }
        let id = match (caller, id) {
            // Just read (and touched) to authenticate the call.
            (Caller::User(user), CURRENT) => return Ok(user.session.clone()),
            (Caller::Service(_), CURRENT) => {
                return Err(invalid(
                    "session_id",
                    "`current` names a user's own session; services name one",
                ));
            }
            (_, id) => id,
        };
        let session = self.identity.sessions.get(id).await?;
        match (session, caller) {
            (Some(session), Caller::Service(_)) => Ok(session),
            (Some(session), Caller::User(user)) if session.user_id == user.user_id => Ok(session),
            _ => Err(with_reason(
                ErrorReason::SessionNotFound,
                format!("no session {id}"),
            )),
        }
    }
}

#[tonic::async_trait]
impl SessionService for SessionApi {
    async fn get_session(
        &self,
        request: Request<session::GetSessionRequest>,
    ) -> Answer<session::GetSessionResponse> {
        let caller = self
            .identity
            .auth
            .caller(&super::credentials(request.metadata()), Access::Read)
            .await?;
        let session = self.visible(&caller, &request.get_ref().session_id).await?;
        let mut response = Response::new(session::GetSessionResponse {
            session: Some(to_proto(&session, &caller)),
        });
        // The WebSocket adapter signs a socket in with this call and hands
        // the caller back with the socket's `Subscribe` calls.
        if let Caller::User(user) = &caller
            && request.get_ref().session_id == CURRENT
        {
            response
                .extensions_mut()
                .insert(Authenticator::establish(user));
        }
        Ok(response)
    }

    async fn list_sessions(
        &self,
        request: Request<session::ListSessionsRequest>,
    ) -> Answer<session::ListSessionsResponse> {
        let caller = self
            .identity
            .auth
            .caller(&super::credentials(request.metadata()), Access::Read)
            .await?;
        let request = request.into_inner();
        let user_id = match &caller {
            Caller::User(user) if request.user_id.is_empty() || request.user_id == user.user_id => {
                user.user_id.clone()
            }
            Caller::User(_) => {
                return Err(with_reason(
                    ErrorReason::ServiceRequired,
                    "only backend services may list another user's sessions",
                ));
            }
            Caller::Service(_) if request.user_id.is_empty() => {
                return Err(invalid(
                    "user_id",
                    "services name the user whose sessions to list",
                ));
            }
            Caller::Service(_) => request.user_id,
        };
        let (offset, size) = page(request.page_size, &request.page_token, 50, 100)?;
        let sessions = self.identity.sessions.list_user(&user_id).await?;
        let total = sessions.len();
        Ok(Response::new(session::ListSessionsResponse {
            sessions: sessions
                .iter()
                .skip(offset)
                .take(size)
                .map(|session| to_proto(session, &caller))
                .collect(),
            next_page_token: next_page_token(offset, size, total),
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<session::RevokeSessionRequest>,
    ) -> Answer<session::RevokeSessionResponse> {
        let caller = self
            .identity
            .auth
            .caller(&super::credentials(request.metadata()), Access::Write)
            .await?;
        let session = self.visible(&caller, &request.get_ref().session_id).await?;
        self.identity.sessions.revoke(&session.id).await?;
        tracing::info!(session_id = %session.id, user_id = %session.user_id, "session revoked");
        Ok(Response::new(session::RevokeSessionResponse {}))
    }

    async fn revoke_other_sessions(
        &self,
        request: Request<session::RevokeOtherSessionsRequest>,
    ) -> Answer<session::RevokeOtherSessionsResponse> {
        let caller = self
            .identity
            .auth
            .user(&super::credentials(request.metadata()), Access::Write)
            .await?;
        let ended = self
            .identity
            .sessions
            .revoke_user(&caller.user_id, Some(&caller.session.id))
            .await?;
        Ok(Response::new(session::RevokeOtherSessionsResponse {
            revoked_session_count: i32::try_from(ended.len()).unwrap_or(i32::MAX),
        }))
    }

    async fn revoke_user_sessions(
        &self,
        request: Request<session::RevokeUserSessionsRequest>,
    ) -> Answer<session::RevokeUserSessionsResponse> {
        let service = self
            .identity
            .auth
            .service(&super::credentials(request.metadata()))
            .await?;
        let user_id = request.into_inner().user_id;
        if user_id.is_empty() {
            return Err(invalid("user_id", "must not be empty"));
        }
        let ended = self.identity.sessions.revoke_user(&user_id, None).await?;
        tracing::info!(%service, %user_id, ended_sessions = ended.len(), "user's sessions revoked");
        Ok(Response::new(session::RevokeUserSessionsResponse {
            revoked_session_count: i32::try_from(ended.len()).unwrap_or(i32::MAX),
        }))
    }
}

fn to_proto(session: &Session, caller: &Caller) -> session::Session {
    session::Session {
        id: session.id.clone(),
        user_id: session.user_id.clone(),
        user_agent: session.user_agent.clone(),
        ip_address: session.ip.clone(),
        create_time: Some(to_timestamp(from_millis(session.created_at))),
        last_seen_time: Some(to_timestamp(from_millis(session.last_seen_at))),
        expire_time: Some(to_timestamp(from_millis(session.expires_at))),
        max_expire_time: Some(to_timestamp(from_millis(session.max_expires_at))),
        current: matches!(caller, Caller::User(user) if user.session.id == session.id),
    }
}
