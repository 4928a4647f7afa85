//! The gRPC services of the contract: the one implementation of every
//! operation, which the REST bridge and the WebSocket adapter call too.
//!
//! - [`auth`] serves `slop.auth.v1.AuthService` (accounts, login, tokens);
//! - [`session`] serves `slop.session.v1.SessionService`;
//! - [`notification`] serves `slop.notification.v1.NotificationService`.

use std::time::Duration;

use slop_context::ClientAddr;

use crate::identity::accounts::AccountError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

pub mod auth;
pub mod notification;
pub mod session;

pub use auth::AuthApi;
pub use notification::NotificationApi;
pub use session::SessionApi;

/// What an RPC returns.
pub type Answer<T> = Result<tonic::Response<T>, Status>;

/// INVALID_ARGUMENT naming the field and what is wrong with it.
pub fn invalid(field: &str, why: impl Into<String>) -> Status {
    let why = why.into();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {why}"),
        ErrorDetails::with_bad_request_violation(field, why),
    )
}

/// INTERNAL for a failure the caller cannot act on; the cause goes to the
/// log (with the request id of the span), never to the caller.
pub fn internal(error: impl std::fmt::Display) -> Status {
    tracing::error!(%error, "internal error");
    Status::internal("internal error")
}

/// The one place account store errors become statuses, so every RPC (and,
/// through the bridge, every REST route) answers an outage alike:
/// UNAVAILABLE (503) when the database is down or too slow, to be retried;
/// INTERNAL (500) for the rest. The cause goes to the log, never to the
/// caller: driver messages can name hosts and tables.
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

/// NOT_FOUND with a stable reason.
pub fn not_found(reason: &str, message: impl Into<String>) -> Status {
    Status::with_error_details(
        Code::NotFound,
        message,
        ErrorDetails::with_error_info(reason, crate::identity::caller::DOMAIN, []),
    )
}

/// The client's IP address: as a trusted proxy forwarded it, else the TCP
/// peer's ("unknown" when the transport has none).
pub fn client_ip(extensions: &tonic::Extensions) -> String {
    ClientAddr::ip(extensions.get(), extensions.get())
        .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

/// RESOURCE_EXHAUSTED with the wait (RetryInfo; REST adds Retry-After).
pub fn rate_limited(reason: &str, what: &str, retry_after: Duration) -> Status {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut details = ErrorDetails::with_retry_info(Some(retry_after));
    details.set_error_info(reason, crate::identity::caller::DOMAIN, []);
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("{what}; retry in {seconds} s"),
        details,
    )
}

/// A rate limiter that does not answer fails the request (closed), like the
/// session store it shares Redis with.
pub fn limits_unavailable(error: crate::identity::limits::LimitError) -> Status {
    tracing::error!(%error, "rate limiter failed");
    Status::unavailable("the rate limiter is unavailable; retry shortly")
}

/// Reads an AIP-158 page request: (offset, size).
pub fn page(
    page_size: i32,
    page_token: &str,
    default: usize,
    max: usize,
) -> Result<(usize, usize), Status> {
    let size = match page_size {
        n if n < 0 => return Err(invalid("page_size", "must not be negative")),
        0 => default,
        n => (n as usize).min(max),
    };
    let offset = if page_token.is_empty() {
        0
    } else {
        page_token
            .strip_prefix("o")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| invalid("page_token", "not a page token this server issued"))?
    };
    Ok((offset, size))
}

/// The page token of the page starting at `offset`, or empty at the end.
pub fn next_page_token(offset: usize, size: usize, total: usize) -> String {
    if offset + size < total {
        format!("o{}", offset + size)
    } else {
        String::new()
    }
}
