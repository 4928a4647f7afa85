//! `slop.auth.v1.AuthService` for the in-process comparison servers (the
//! [`crate::baseline`] and the [`crate::floor`]), which serve ValidateToken
//! and nothing else: the generated trait has no default methods, so the
//! other RPCs answer UNIMPLEMENTED here, once — the benchmark never calls
//! them.

use std::future::Future;

use slop_api::auth::{self, auth_service_server::AuthService};
use tonic::{Request, Status};

/// A gRPC answer.
pub type Answer<T> = Result<tonic::Response<T>, Status>;

/// What a comparison server does for ValidateToken.
pub trait ValidateToken: Send + Sync + 'static {
    /// Answers one ValidateToken call.
    fn validate(
        &self,
        request: Request<auth::ValidateTokenRequest>,
    ) -> impl Future<Output = Answer<auth::ValidateTokenResponse>> + Send;
}

/// An AuthService that serves ValidateToken with `V` and refuses the rest.
pub struct ValidateOnly<V>(pub V);

fn not_served<T>() -> Answer<T> {
    Err(Status::unimplemented(
        "this comparison server implements ValidateToken only",
    ))
}

#[tonic::async_trait]
impl<V: ValidateToken> AuthService for ValidateOnly<V> {
    async fn register(&self, _: Request<auth::RegisterRequest>) -> Answer<auth::RegisterResponse> {
        not_served()
    }

    async fn login(&self, _: Request<auth::LoginRequest>) -> Answer<auth::LoginResponse> {
        not_served()
    }

    async fn refresh_token(
        &self,
        _: Request<auth::RefreshTokenRequest>,
    ) -> Answer<auth::RefreshTokenResponse> {
        not_served()
    }

    async fn logout(&self, _: Request<auth::LogoutRequest>) -> Answer<auth::LogoutResponse> {
        not_served()
    }

    async fn get_current_user(
        &self,
        _: Request<auth::GetCurrentUserRequest>,
    ) -> Answer<auth::GetCurrentUserResponse> {
        not_served()
    }

    async fn update_current_user(
        &self,
        _: Request<auth::UpdateCurrentUserRequest>,
    ) -> Answer<auth::UpdateCurrentUserResponse> {
        not_served()
    }

    async fn change_password(
        &self,
        _: Request<auth::ChangePasswordRequest>,
    ) -> Answer<auth::ChangePasswordResponse> {
        not_served()
    }

    async fn request_password_reset(
        &self,
        _: Request<auth::RequestPasswordResetRequest>,
    ) -> Answer<auth::RequestPasswordResetResponse> {
        not_served()
    }

    async fn reset_password(
        &self,
        _: Request<auth::ResetPasswordRequest>,
    ) -> Answer<auth::ResetPasswordResponse> {
        not_served()
    }

    async fn validate_token(
        &self,
        request: Request<auth::ValidateTokenRequest>,
    ) -> Answer<auth::ValidateTokenResponse> {
        self.0.validate(request).await
    }
}
