//! The gRPC services of the contract: the one implementation of every
//! operation, which the REST bridge and the WebSocket adapter call too.
//!
//! - [`auth`] serves `slop.auth.v1.AuthService` (accounts, login, tokens);
//! - [`session`] serves `slop.session.v1.SessionService`;
//! - [`notification`] serves `slop.notification.v1.NotificationService`;
//! - [`status`] turns their errors into statuses, in the contract's
//!   vocabulary (`slop.errors.v1.ErrorReason`).

use slop_context::{CSRF_HEADER, ClientAddr, SESSION_COOKIE};

use crate::identity::caller::{Credentials, NotText};
use tonic::Status;

pub mod auth;
pub mod notification;
pub mod session;
pub mod status;

pub use auth::AuthApi;
pub use notification::NotificationApi;
pub use session::SessionApi;
pub use status::{internal, invalid};

/// What an RPC returns.
pub type Answer<T> = Result<tonic::Response<T>, Status>;

/// The credentials in a call's metadata: the `authorization` header, the
/// session cookie and the CSRF header, for the identity core's caller
/// authentication.
pub fn credentials(metadata: &tonic::metadata::MetadataMap) -> Credentials<'_> {
    let cookies = metadata.get_all("cookie");
    Credentials {
        authorization: metadata
            .get("authorization")
            .map(|value| value.to_str().map_err(|_| NotText)),
        session_cookie: slop_context::cookie(
            cookies.iter().filter_map(|value| value.to_str().ok()),
            SESSION_COOKIE,
        ),
        csrf_token: metadata
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default(),
    }
}

/// The client's IP address: as a trusted proxy forwarded it, else the TCP
/// peer's (None when the transport has none).
pub fn client_ip(extensions: &tonic::Extensions) -> Option<std::net::IpAddr> {
    ClientAddr::ip(extensions.get(), extensions.get())
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
