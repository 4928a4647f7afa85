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
        accounts::AccountError, caller::CallerError, limits::LimitError, sessions::SessionError,
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
            AccountError::Database(_) | AccountError::Migrate(_) | AccountError::Url(_) => {
                internal(error)
            }
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

/// Status builders that take a reason by its name, for services/auth.rs,
/// which another change rewrites: kept for services/auth.rs until the
/// merge, then gone. A name outside the contract fails a debug build (every
/// test) and is logged in a release build.
pub mod by_name {
    use std::time::Duration;

    use slop_api::errors::ErrorReason;
    use tonic::{Code, Status};

    use crate::identity::sessions::SessionError;

    /// `code` with the reason named `name`, which must have that code. A
    /// name outside the contract is not sent: the status goes without
    /// ErrorInfo.
    fn named(name: &str, code: Code, message: String) -> Status {
        match ErrorReason::from_str_name(name) {
            Some(reason) => {
                debug_assert_eq!(reason.code(), code, "the code of reason {name}");
                super::with_reason(reason, message)
            }
            None => {
                debug_assert!(false, "{name} is not in slop.errors.v1.ErrorReason");
                tracing::error!(reason = name, "a reason outside the contract");
                Status::new(code, message)
            }
        }
    }

    /// UNAUTHENTICATED with the reason named `reason`.
    pub fn unauthenticated(reason: &str, message: &str) -> Status {
        named(reason, Code::Unauthenticated, message.to_owned())
    }

    /// PERMISSION_DENIED with the reason named `reason`.
    pub fn permission_denied(reason: &str, message: impl Into<String>) -> Status {
        named(reason, Code::PermissionDenied, message.into())
    }

    /// RESOURCE_EXHAUSTED with the reason named `reason` and the wait.
    pub fn rate_limited(reason: &str, what: &str, retry_after: Duration) -> Status {
        match ErrorReason::from_str_name(reason) {
            Some(known) => super::rate_limited(known, what, retry_after),
            None => named(reason, Code::ResourceExhausted, what.to_owned()),
        }
    }

    /// UNAVAILABLE for a session store that did not answer (`Status::from`).
    pub fn store_unavailable(error: &SessionError) -> Status {
        Status::from(error)
    }

    /// UNAVAILABLE for a rate limiter that did not answer (`Status::from`).
    pub fn limits_unavailable(error: crate::identity::limits::LimitError) -> Status {
        Status::from(error)
    }

    /// Turns a session store failure into UNAVAILABLE; `?` does the same.
    pub trait OrUnavailable<T> {
        /// The value, or UNAVAILABLE.
        fn or_unavailable(self) -> Result<T, Status>;
    }

    impl<T> OrUnavailable<T> for Result<T, SessionError> {
        fn or_unavailable(self) -> Result<T, Status> {
            self.map_err(Status::from)
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
    fn reasons_by_name_are_those_of_the_contract() {
        let status = by_name::unauthenticated("REFRESH_TOKEN_REUSED", "log in again");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "REFRESH_TOKEN_REUSED"
        );
    }

    #[test]
    #[should_panic(expected = "not in slop.errors.v1.ErrorReason")]
    #[cfg(debug_assertions)]
    fn a_reason_outside_the_contract_fails_a_debug_build() {
        let _ = by_name::unauthenticated("NOT_A_REASON", "no");
    }
}
