//! The gRPC services of the contract: the one implementation of every
//! operation, which the REST bridge and the WebSocket adapter call too.
//!
//! This release serves the contract's shape only: every Auth, Session and
//! Notification RPC answers UNIMPLEMENTED with a message naming it, while
//! the server around them (one port, health, reflection, shutdown) is real.
//! Accounts and sessions, then notification streams, fill these in.

use std::pin::Pin;

use futures_util::Stream;
use slop_api::{
    auth::{self, auth_service_server::AuthService},
    notification::{self, notification_service_server::NotificationService},
    session::{self, session_service_server::SessionService},
};
use tonic::{Request, Response, Status};

/// `slop.auth.v1.AuthService`.
#[derive(Debug, Default, Clone)]
pub struct AuthApi;

/// `slop.session.v1.SessionService`.
#[derive(Debug, Default, Clone)]
pub struct SessionApi;

/// `slop.notification.v1.NotificationService`.
#[derive(Debug, Default, Clone)]
pub struct NotificationApi;

type Answer<T> = Result<Response<T>, Status>;

fn not_served(method: &str) -> Status {
    Status::unimplemented(format!("{method} is not served by this server version yet"))
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(&self, _: Request<auth::RegisterRequest>) -> Answer<auth::RegisterResponse> {
        Err(not_served("slop.auth.v1.AuthService/Register"))
    }
    async fn login(&self, _: Request<auth::LoginRequest>) -> Answer<auth::LoginResponse> {
        Err(not_served("slop.auth.v1.AuthService/Login"))
    }
    async fn refresh_token(
        &self,
        _: Request<auth::RefreshTokenRequest>,
    ) -> Answer<auth::RefreshTokenResponse> {
        Err(not_served("slop.auth.v1.AuthService/RefreshToken"))
    }
    async fn logout(&self, _: Request<auth::LogoutRequest>) -> Answer<auth::LogoutResponse> {
        Err(not_served("slop.auth.v1.AuthService/Logout"))
    }
    async fn get_current_user(
        &self,
        _: Request<auth::GetCurrentUserRequest>,
    ) -> Answer<auth::GetCurrentUserResponse> {
        Err(not_served("slop.auth.v1.AuthService/GetCurrentUser"))
    }
    async fn update_current_user(
        &self,
        _: Request<auth::UpdateCurrentUserRequest>,
    ) -> Answer<auth::UpdateCurrentUserResponse> {
        Err(not_served("slop.auth.v1.AuthService/UpdateCurrentUser"))
    }
    async fn change_password(
        &self,
        _: Request<auth::ChangePasswordRequest>,
    ) -> Answer<auth::ChangePasswordResponse> {
        Err(not_served("slop.auth.v1.AuthService/ChangePassword"))
    }
    async fn request_password_reset(
        &self,
        _: Request<auth::RequestPasswordResetRequest>,
    ) -> Answer<auth::RequestPasswordResetResponse> {
        Err(not_served("slop.auth.v1.AuthService/RequestPasswordReset"))
    }
    async fn reset_password(
        &self,
        _: Request<auth::ResetPasswordRequest>,
    ) -> Answer<auth::ResetPasswordResponse> {
        Err(not_served("slop.auth.v1.AuthService/ResetPassword"))
    }
    async fn validate_token(
        &self,
        _: Request<auth::ValidateTokenRequest>,
    ) -> Answer<auth::ValidateTokenResponse> {
        Err(not_served("slop.auth.v1.AuthService/ValidateToken"))
    }
}

#[tonic::async_trait]
impl SessionService for SessionApi {
    async fn get_session(
        &self,
        _: Request<session::GetSessionRequest>,
    ) -> Answer<session::GetSessionResponse> {
        Err(not_served("slop.session.v1.SessionService/GetSession"))
    }
    async fn list_sessions(
        &self,
        _: Request<session::ListSessionsRequest>,
    ) -> Answer<session::ListSessionsResponse> {
        Err(not_served("slop.session.v1.SessionService/ListSessions"))
    }
    async fn revoke_session(
        &self,
        _: Request<session::RevokeSessionRequest>,
    ) -> Answer<session::RevokeSessionResponse> {
        Err(not_served("slop.session.v1.SessionService/RevokeSession"))
    }
    async fn revoke_other_sessions(
        &self,
        _: Request<session::RevokeOtherSessionsRequest>,
    ) -> Answer<session::RevokeOtherSessionsResponse> {
        Err(not_served(
            "slop.session.v1.SessionService/RevokeOtherSessions",
        ))
    }
    async fn revoke_user_sessions(
        &self,
        _: Request<session::RevokeUserSessionsRequest>,
    ) -> Answer<session::RevokeUserSessionsResponse> {
        Err(not_served(
            "slop.session.v1.SessionService/RevokeUserSessions",
        ))
    }
}

/// The stream type of `Subscribe`.
pub type SubscribeStream =
    Pin<Box<dyn Stream<Item = Result<notification::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    type SubscribeStream = SubscribeStream;

    async fn publish(
        &self,
        _: Request<notification::PublishRequest>,
    ) -> Answer<notification::PublishResponse> {
        Err(not_served(
            "slop.notification.v1.NotificationService/Publish",
        ))
    }
    async fn subscribe(
        &self,
        _: Request<notification::SubscribeRequest>,
    ) -> Answer<Self::SubscribeStream> {
        Err(not_served(
            "slop.notification.v1.NotificationService/Subscribe",
        ))
    }
    async fn get_channel(
        &self,
        _: Request<notification::GetChannelRequest>,
    ) -> Answer<notification::GetChannelResponse> {
        Err(not_served(
            "slop.notification.v1.NotificationService/GetChannel",
        ))
    }
    async fn list_channel_events(
        &self,
        _: Request<notification::ListChannelEventsRequest>,
    ) -> Answer<notification::ListChannelEventsResponse> {
        Err(not_served(
            "slop.notification.v1.NotificationService/ListChannelEvents",
        ))
    }
}
