//! The close codes of the protocol: 4000 plus the HTTP status that means
//! the same, and the standard codes the adapter uses; and which one ends a
//! socket for a given status.

use slop_api::errors::ErrorReason;
use tonic::{Code, Status};

use crate::error::{reason, retry_after_seconds};

/// Not signed in: no valid `auth` frame in time, a frame other than
/// `auth` first, or credentials that were refused.
pub const UNAUTHENTICATED: u16 = 4401;
/// The credentials may not do what the socket needed.
pub const PERMISSION_DENIED: u16 = 4403;
/// The socket read too slowly and a subscription's queue overflowed;
/// reconnect and resume from the last offsets seen.
pub const SLOW_CONSUMER: u16 = 4408;
/// The session ended (logout, revocation, expiry): sign in again.
pub const SESSION_ENDED: u16 = 4410;
/// Too many new connections: wait the time in the close reason (and the
/// error frame's `RetryInfo`) before reconnecting.
pub const RATE_LIMITED: u16 = 4429;
/// The server is shutting down (or the stream went away): reconnect
/// with back-off and jitter, and resume.
pub const GOING_AWAY: u16 = 1001;
/// The client sent a binary frame.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// The client sent a frame over [`super::MAX_CLIENT_FRAME`].
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The server failed; reconnect with back-off.
pub const INTERNAL_ERROR: u16 = 1011;
/// A dependency of the server is unavailable; reconnect with back-off.
pub const TRY_AGAIN_LATER: u16 = 1013;

/// The close code of an error that ends a socket, by its reason (of the
/// contract, `slop.errors.v1.ErrorReason`) where one has its own code, else
/// by its gRPC code. docs/errors.md lists the code of every reason; a test
/// holds it to this function.
pub fn close_code(code: Code, reason: Option<ErrorReason>, shutting_down: bool) -> u16 {
    match (reason, code) {
        (Some(ErrorReason::SessionEnded), _) => SESSION_ENDED,
        (Some(ErrorReason::SlowConsumer), _) => SLOW_CONSUMER,
        (_, Code::Unauthenticated) => UNAUTHENTICATED,
        (_, Code::PermissionDenied) => PERMISSION_DENIED,
        (_, Code::ResourceExhausted) => RATE_LIMITED,
        (_, Code::Unavailable) if shutting_down => GOING_AWAY,
        (_, Code::Unavailable) => TRY_AGAIN_LATER,
        _ => INTERNAL_ERROR,
    }
}

/// Why the server ends a socket.
pub(super) enum Ending {
    /// The client went away or stopped reading.
    ClientGone,
    /// The client sent a close frame, which the WebSocket layer answers.
    ClientClosed,
    /// The server closes it with this code and reason.
    Close(u16, String),
}

impl Ending {
    pub(super) fn close(code: u16, reason: &str) -> Self {
        Self::Close(code, reason.to_owned())
    }

    /// The close code and reason for a status that ends a socket.
    pub(super) fn for_status(status: &Status, shutting_down: bool) -> Self {
        let code = close_code(status.code(), reason(status), shutting_down);
        let why = match code {
            SESSION_ENDED => "session ended",
            SLOW_CONSUMER => "slow consumer",
            UNAUTHENTICATED => "unauthenticated",
            PERMISSION_DENIED => "permission denied",
            RATE_LIMITED => {
                return Self::Close(
                    code,
                    match retry_after_seconds(status) {
                        Some(seconds) => format!("rate limited; retry in {seconds} s"),
                        None => "rate limited".to_owned(),
                    },
                );
            }
            GOING_AWAY => "server shutting down",
            TRY_AGAIN_LATER => "unavailable; try again later",
            _ => "internal error",
        };
        Self::close(code, why)
    }
}
