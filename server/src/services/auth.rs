//! `slop.auth.v1.AuthService`: accounts, login, tokens.
//!
//! A thin adapter over the identity core's flows
//! ([`crate::identity::flows`]): it reads the request (the message, the
//! caller's address, the User-Agent, the credentials), calls the core, and
//! turns the answer into the response message and [`FlowError`] into a
//! status. Sessions know nothing of cookies here: the REST bridge sets and
//! clears them around Login and Logout.

use std::time::Duration;

use slop_api::auth::{self, InactiveReason, TokenPair, User, auth_service_server::AuthService};
use tonic::{Request, Response, metadata::MetadataMap};

use super::{
    Answer, client_ip,
    status::{OrInvalid as _, invalid},
};
use crate::{
    identity::Identity,
    identity::accounts::Profile,
    identity::caller::Access,
    identity::flows::{
        self, FlowError, IssuedTokens, LoginAttempt, PasswordChange, PasswordReset, Registration,
        SignOut,
    },
    identity::tokens,
    infra::clock::to_timestamp,
};

/// `slop.auth.v1.AuthService`.
#[derive(Clone)]
pub struct AuthApi {
    identity: std::sync::Arc<Identity>,
}

impl AuthApi {
    /// The service over this identity.
    pub fn new(identity: std::sync::Arc<Identity>) -> Self {
        Self { identity }
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<auth::RegisterRequest>,
    ) -> Answer<auth::RegisterResponse> {
        let client_ip = client_ip(request.extensions());
        let request = request.into_inner();
        self.identity
            .register(Registration {
                email: request.email,
                display_name: request.display_name,
                password: request.password,
                client_ip,
            })
            .await?;
        Ok(Response::new(auth::RegisterResponse {}))
    }

    async fn login(&self, request: Request<auth::LoginRequest>) -> Answer<auth::LoginResponse> {
        let (metadata, extensions, request) = request.into_parts();
        let signed_in = self
            .identity
            .login(LoginAttempt {
                email: request.email,
                password: request.password,
                client_ip: client_ip(&extensions),
                user_agent: user_agent(&metadata).to_owned(),
            })
            .await?;
        Ok(Response::new(auth::LoginResponse {
            tokens: Some(token_pair(signed_in.tokens)),
            session_id: signed_in.session.id,
            user: Some(user(&Profile::from(&signed_in.account))),
        }))
    }

    async fn refresh_token(
        &self,
        request: Request<auth::RefreshTokenRequest>,
    ) -> Answer<auth::RefreshTokenResponse> {
        let client_ip = client_ip(request.extensions());
        let token = request.into_inner().refresh_token;
        let refreshed = self.identity.refresh(&token, client_ip).await?;
        Ok(Response::new(auth::RefreshTokenResponse {
            tokens: Some(token_pair(refreshed.tokens)),
            session_id: refreshed.session.id,
        }))
    }

    async fn logout(&self, request: Request<auth::LogoutRequest>) -> Answer<auth::LogoutResponse> {
        let (metadata, _, request) = request.into_parts();
        if request.refresh_token.is_empty() {
            let caller = self
                .identity
                .auth
                .user(&super::credentials(&metadata), Access::Write)
                .await?;
            self.identity
                .log_out(SignOut::Session(&caller.session.id))
                .await?;
        } else {
            self.identity
                .log_out(SignOut::RefreshToken(&request.refresh_token))
                .await?;
        }
        Ok(Response::new(auth::LogoutResponse {}))
    }

    async fn get_current_user(
        &self,
        request: Request<auth::GetCurrentUserRequest>,
    ) -> Answer<auth::GetCurrentUserResponse> {
        let caller = self
            .identity
            .auth
            .user(&super::credentials(request.metadata()), Access::Read)
            .await?;
        let profile = self.identity.profile(&caller.user_id).await?;
        Ok(Response::new(auth::GetCurrentUserResponse {
            user: Some(user(&profile)),
        }))
    }

    async fn update_current_user(
        &self,
        request: Request<auth::UpdateCurrentUserRequest>,
    ) -> Answer<auth::UpdateCurrentUserResponse> {
        let caller = self
            .identity
            .auth
            .user(&super::credentials(request.metadata()), Access::Write)
            .await?;
        let request = request.into_inner();
        let paths = request
            .update_mask
            .map(|mask| mask.paths)
            .unwrap_or_default();
        if let Some(path) = paths.iter().find(|path| path.as_str() != "display_name") {
            return Err(invalid(
                "update_mask",
                format!("'{path}' cannot be updated; allowed: display_name"),
            ));
        }
        let new = request.user.unwrap_or_default();
        let profile = if paths.is_empty() && new.display_name.is_empty() {
            // Nothing to change.
            self.identity.profile(&caller.user_id).await?
        } else {
            let name = flows::display_name(&new.display_name).or_invalid("user.display_name")?;
            let account = self
                .identity
                .accounts
                .set_display_name(&caller.user_id, &name, self.identity.now())
                .await?
                .ok_or(FlowError::AccountGone)?;
            std::sync::Arc::new(Profile::from(&account))
        };
        Ok(Response::new(auth::UpdateCurrentUserResponse {
            user: Some(user(&profile)),
        }))
    }

    async fn change_password(
        &self,
        request: Request<auth::ChangePasswordRequest>,
    ) -> Answer<auth::ChangePasswordResponse> {
        let caller = self
            .identity
            .auth
            .user(&super::credentials(request.metadata()), Access::Write)
            .await?;
        let request = request.into_inner();
        let ended = self
            .identity
            .change_password(PasswordChange {
                user_id: &caller.user_id,
                session_id: &caller.session.id,
                current_password: request.current_password,
                new_password: request.new_password,
            })
            .await?;
        Ok(Response::new(auth::ChangePasswordResponse {
            revoked_session_count: count(ended),
        }))
    }

    async fn request_password_reset(
        &self,
        request: Request<auth::RequestPasswordResetRequest>,
    ) -> Answer<auth::RequestPasswordResetResponse> {
        let client_ip = client_ip(request.extensions());
        self.identity
            .request_password_reset(&request.into_inner().email, client_ip)
            .await?;
        Ok(Response::new(auth::RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<auth::ResetPasswordRequest>,
    ) -> Answer<auth::ResetPasswordResponse> {
        let client_ip = client_ip(request.extensions());
        let request = request.into_inner();
        let ended = self
            .identity
            .reset_password(PasswordReset {
                reset_token: request.reset_token,
                new_password: request.new_password,
                client_ip,
            })
            .await?;
        Ok(Response::new(auth::ResetPasswordResponse {
            revoked_session_count: count(ended),
        }))
    }

    async fn validate_token(
        &self,
        request: Request<auth::ValidateTokenRequest>,
    ) -> Answer<auth::ValidateTokenResponse> {
        self.identity
            .auth
            .service(&super::credentials(request.metadata()))
            .await?;
        let token = request.into_inner().access_token;
        let inactive = |reason: InactiveReason| {
            Ok(Response::new(auth::ValidateTokenResponse {
                inactive_reason: reason.into(),
                ..Default::default()
            }))
        };
        let claims = match self.identity.tokens.verify_access(&token) {
            Ok(claims) => claims,
            Err(tokens::TokenError::Expired) => return inactive(InactiveReason::Expired),
            Err(_) => return inactive(InactiveReason::Invalid),
        };
        let session = self
            .identity
            .sessions
            .touch(&claims.sid, self.identity.settings.session_ttl)
            .await?;
        match session {
            Some(session) if session.user_id == claims.sub => {
                Ok(Response::new(auth::ValidateTokenResponse {
                    active: true,
                    user_id: claims.sub,
                    session_id: claims.sid,
                    expire_time: Some(pbjson_types::Timestamp {
                        seconds: claims.exp,
                        nanos: 0,
                    }),
                    inactive_reason: InactiveReason::Unspecified.into(),
                }))
            }
            _ => inactive(InactiveReason::SessionEnded),
        }
    }
}

/// The proto User of an account.
pub fn user(profile: &Profile) -> User {
    User {
        id: profile.id.clone(),
        email: profile.email.clone(),
        display_name: profile.display_name.clone(),
        create_time: Some(to_timestamp(profile.created_at)),
        update_time: Some(to_timestamp(profile.updated_at)),
    }
}

fn duration(duration: Duration) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: duration.subsec_nanos() as i32,
    }
}

/// The proto TokenPair of issued tokens.
fn token_pair(tokens: IssuedTokens) -> TokenPair {
    TokenPair {
        access_token: tokens.access_token,
        token_type: "Bearer".into(),
        access_token_expires_in: Some(duration(tokens.access_expires_in)),
        refresh_token: tokens.refresh_token,
        refresh_token_expires_in: Some(duration(tokens.refresh_expires_in)),
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The User-Agent header, if it is text (the core bounds its length).
fn user_agent(metadata: &MetadataMap) -> &str {
    metadata
        .get("user-agent")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}
