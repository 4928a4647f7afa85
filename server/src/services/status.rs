//! The one place the server's errors become `tonic::Status`es.
//!
//! A status with an `ErrorInfo` is built from an [`ErrorReason`] of the
//! contract (proto/slop/errors/v1/errors.proto), never from a string, so a
//! reason outside the contract cannot be sent; its code is the reason's
//! ([`ErrorReason::code`]) and its domain is [`DOMAIN`]. The errors of the
//! domain layers (the caller, the stores, a feed's end) convert with `From`,
//! so a service writes `?`; a call site that wants another answer than the
//! usual one for an error says why where it maps it. A store that does not
//! answer is UNAVAILABLE (retry shortly), and what failed is logged, never
//! shown: driver messages can name hosts and keys.
//!
//! Statuses carry no secrets: messages say what to send, never echo what was
//! sent.

use std::{fmt::Display, time::Duration};

use slop_api::errors::{DOMAIN, ErrorReason};
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::{
    identity::{
        accounts::AccountError, caller::CallerError, flows::FlowError, limits::LimitError,
        sessions::SessionError,
    },
    notifications::{StreamError, hub::End},
};

/// The `ErrorInfo` of `reason`, in the API's one domain.
pub fn error_info(reason: ErrorReason) -> ErrorDetails {
    ErrorDetails::with_error_info(reason.as_str_name(), DOMAIN, [])
}

/// An error with `reason`: its code is the reason's, `message` is for
/// people (clients match on the reason).
pub fn with_reason(reason: ErrorReason, message: impl Into<String>) -> Status {
    Status::with_error_details(reason.code(), message, error_info(reason))
}

/// RESOURCE_EXHAUSTED with `reason` and the wait (RetryInfo; REST adds
/// Retry-After, the WebSocket adapter puts it in the close reason).
pub fn rate_limited(reason: ErrorReason, what: &str, retry_after: Duration) -> Status {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut details = error_info(reason);
    details.set_retry_info(Some(retry_after));
    Status::with_error_details(
        reason.code(),
        format!("{what}; retry in {seconds} s"),
        details,
    )
}

/// INVALID_ARGUMENT naming the field and what is wrong with it (a
/// google.rpc.BadRequest field violation, no reason: the field says it).
pub fn invalid(field: &str, why: impl Into<String>) -> Status {
    let why = why.into();
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("{field}: {why}"),
        ErrorDetails::with_bad_request_violation(field, why),
    )
}

/// INTERNAL for a failure the caller cannot act on; the cause goes to the
/// log (with the request id of the span), never to the caller.
pub fn internal(error: impl Display) -> Status {
    tracing::error!(%error, "internal error");
    Status::internal("internal error")
}

/// UNAVAILABLE for a store that did not answer: the cause is logged under
/// `store`, the caller is told to retry.
fn unavailable(store: &str, error: &dyn Display) -> Status {
    tracing::error!(%error, "{store} failed");
    Status::unavailable(format!("the {store} is unavailable; retry shortly"))
}

/// A value that fails to parse is the caller's fault in one named field:
/// `.or_invalid("payload")?` instead of a `map_err` to [`invalid`].
pub trait OrInvalid<T> {
    /// The value, or INVALID_ARGUMENT naming `field` with the error's text.
    fn or_invalid(self, field: &str) -> Result<T, Status>;
}

impl<T, E: Display> OrInvalid<T> for Result<T, E> {
    fn or_invalid(self, field: &str) -> Result<T, Status> {
        self.map_err(|why| invalid(field, why.to_string()))
    }
}

impl From<CallerError> for Status {
    fn from(error: CallerError) -> Self {
        let reason = match &error {
            CallerError::Missing => ErrorReason::CredentialsMissing,
            CallerError::NotText | CallerError::NotBearer => ErrorReason::CredentialsInvalid,
            CallerError::ServiceKeyWithName => ErrorReason::ServiceKeyWithName,
            CallerError::Expired => ErrorReason::TokenExpired,
            CallerError::Invalid(_) | CallerError::SessionMismatch => ErrorReason::TokenInvalid,
            CallerError::CookieInvalid => ErrorReason::CookieInvalid,
            CallerError::CsrfMissing => ErrorReason::CsrfTokenInvalid,
            CallerError::SessionEnded => ErrorReason::SessionEnded,
            CallerError::UserRequired(_) => ErrorReason::UserRequired,
            CallerError::ServiceRequired => ErrorReason::ServiceRequired,
            CallerError::Unavailable(store) => return Self::from(store),
        };
        with_reason(reason, error.to_string())
    }
}

/// The session store failed: nothing can be said about the session, so the
/// call fails closed.
impl From<&SessionError> for Status {
    fn from(error: &SessionError) -> Self {
        unavailable("session store", error)
    }
}

impl From<SessionError> for Status {
    fn from(error: SessionError) -> Self {
        Self::from(&error)
    }
}

/// A rate limiter that does not answer fails the request (closed), like the
/// session store it shares Redis with.
impl From<LimitError> for Status {
    fn from(error: LimitError) -> Self {
        unavailable("rate limiter", &error)
    }
}

impl From<StreamError> for Status {
    fn from(error: StreamError) -> Self {
        unavailable("notification store", &error)
    }
}

/// Account store errors, so every RPC (and, through the bridge, every REST
/// route) answers an outage alike: UNAVAILABLE (503) when the database is
/// down or too slow, to be retried; INTERNAL (500) for the rest. The cause
/// goes to the log, never to the caller: driver messages can name hosts and
/// tables.
impl From<AccountError> for Status {
    fn from(error: AccountError) -> Self {
        match error {
            // Registration answers this one itself, so as not to reveal
            // who has an account; other operations cannot meet it.
            AccountError::EmailTaken => Status::already_exists("an account with this email exists"),
            AccountError::Unavailable(_) | AccountError::Unreachable { .. } => {
                tracing::warn!(%error, "account database unavailable");
                Status::unavailable("the account database is unavailable; retry shortly")
            }
            AccountError::Database(_)
            | AccountError::Migrate(_)
            | AccountError::Url(_)
            | AccountError::Tls { .. } => internal(error),
        }
    }
}

/// The status a notification stream ends with when its feed ends.
impl From<End> for Status {
    fn from(why: End) -> Self {
        match why {
            End::SlowConsumer => with_reason(
                ErrorReason::SlowConsumer,
                "the client read events too slowly; reconnect and resume from the last offset it saw",
            ),
            End::SessionEnded => with_reason(
                ErrorReason::SessionEnded,
                "the session has ended (logged out, revoked or expired): log in again",
            ),
        }
    }
}

/// What the identity core's flows (sign-in, refresh, the password flows)
/// answer, as statuses. The messages say what to do next and never echo
/// what was sent.
impl From<FlowError> for Status {
    fn from(error: FlowError) -> Self {
        match error {
            FlowError::RateLimited { retry_after } => rate_limited(
                ErrorReason::RateLimited,
                "too many requests from your address",
                retry_after,
            ),
            FlowError::LoginThrottled { retry_after } => rate_limited(
                ErrorReason::LoginThrottled,
                "too many failed logins for this account from your address",
                retry_after,
            ),
            FlowError::InvalidCredentials => {
                with_reason(ErrorReason::InvalidCredentials, "wrong email or password")
            }
            FlowError::RefreshTokenInvalid => with_reason(
                ErrorReason::RefreshTokenInvalid,
                "the refresh token is not valid: log in again",
            ),
            FlowError::RefreshTokenReused => with_reason(
                ErrorReason::RefreshTokenReused,
                "this refresh token was already used; the session has been ended for safety: log in again",
            ),
            FlowError::SessionEnded => with_reason(
                ErrorReason::SessionEnded,
                "the session has ended: log in again",
            ),
            FlowError::AccountGone => {
                with_reason(ErrorReason::AccountGone, "the account no longer exists")
            }
            FlowError::WrongPassword => with_reason(
                ErrorReason::WrongPassword,
                "current_password is not the account's password",
            ),
            FlowError::Invalid { field, why } => invalid(field, why),
            FlowError::ResetTokenInvalid => invalid(
                "reset_token",
                "not valid: it is wrong, used, or older than 30 minutes; ask for a new one",
            ),
            FlowError::Accounts(error) => error.into(),
            FlowError::Sessions(error) => error.into(),
            FlowError::Limits(error) => error.into(),
            FlowError::Hashing(error) => internal(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_sets_the_code_and_the_one_domain() {
        let status = with_reason(ErrorReason::SessionEnded, "log in again");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, "SESSION_ENDED");
        assert_eq!(info.domain, "slop.studio");
    }

    #[test]
    fn rate_limits_carry_their_reason_and_wait() {
        let status = rate_limited(
            ErrorReason::LoginThrottled,
            "too many failed logins",
            Duration::from_millis(1500),
        );
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "too many failed logins; retry in 2 s");
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "LOGIN_THROTTLED");
        assert_eq!(
            details.retry_info().unwrap().retry_delay,
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn caller_errors_keep_their_reasons() {
        let cases = [
            (CallerError::Missing, "CREDENTIALS_MISSING"),
            (CallerError::NotBearer, "CREDENTIALS_INVALID"),
            (CallerError::Expired, "TOKEN_EXPIRED"),
            (CallerError::SessionMismatch, "TOKEN_INVALID"),
            (CallerError::CsrfMissing, "CSRF_TOKEN_INVALID"),
            (CallerError::UserRequired("mailer".into()), "USER_REQUIRED"),
            (CallerError::ServiceRequired, "SERVICE_REQUIRED"),
        ];
        for (error, reason) in cases {
            let status = Status::from(error);
            assert_eq!(
                status.get_error_details().error_info().unwrap().reason,
                reason
            );
        }
    }

    #[test]
    fn the_flows_errors_keep_their_reasons_and_codes() {
        let wait = Duration::from_secs(2);
        for (error, code, reason) in [
            (
                FlowError::RateLimited { retry_after: wait },
                tonic::Code::ResourceExhausted,
                Some("RATE_LIMITED"),
            ),
            (
                FlowError::LoginThrottled { retry_after: wait },
                tonic::Code::ResourceExhausted,
                Some("LOGIN_THROTTLED"),
            ),
            (
                FlowError::InvalidCredentials,
                tonic::Code::Unauthenticated,
                Some("INVALID_CREDENTIALS"),
            ),
            (
                FlowError::RefreshTokenInvalid,
                tonic::Code::Unauthenticated,
                Some("REFRESH_TOKEN_INVALID"),
            ),
            (
                FlowError::RefreshTokenReused,
                tonic::Code::Unauthenticated,
                Some("REFRESH_TOKEN_REUSED"),
            ),
            (
                FlowError::SessionEnded,
                tonic::Code::Unauthenticated,
                Some("SESSION_ENDED"),
            ),
            (
                FlowError::AccountGone,
                tonic::Code::Unauthenticated,
                Some("ACCOUNT_GONE"),
            ),
            (
                FlowError::WrongPassword,
                tonic::Code::PermissionDenied,
                Some("WRONG_PASSWORD"),
            ),
            (
                FlowError::ResetTokenInvalid,
                tonic::Code::InvalidArgument,
                None,
            ),
        ] {
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{status:?}");
            let details = status.get_error_details();
            assert_eq!(
                details.error_info().map(|info| info.reason.as_str()),
                reason,
                "{status:?}"
            );
        }
    }
}
