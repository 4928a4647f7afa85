//! The WebSocket adapter at `/api/v1/ws`, for browsers.
//!
//! It speaks JSON text frames, each an object with a `type` (docs/websocket.md
//! is the protocol). A socket signs in at the upgrade (bearer header or
//! session cookie) or with an `auth` frame within [`AUTH_TIMEOUT`]; it is
//! admitted through the [`ConnectionGate`](slop_context::ConnectionGate) by peer
//! address at the upgrade and by user once the user is known. A signed-in
//! socket follows the user's own channel without asking, and each
//! `subscribe` frame is one `Subscribe` call, made with the socket's
//! credentials and the [`slop_context::Admitted`] extension, whose messages
//! become frames.
//!
//! Signing in is the one `GetSession("current")` call that authenticates
//! the socket's credentials; the caller it establishes
//! ([`slop_context::EstablishedCaller`]) goes with the socket's `Subscribe`
//! calls, so they touch no session, while one of the socket's subscriptions
//! is open in that session's name: the server ends those when the session
//! ends, and with them the socket. With none open, a `Subscribe` call is
//! authenticated by its credentials again.
//!
//! One task serves a socket (`connection`): it reads frames, forwards
//! subscription messages only as fast as the socket takes them (`subscriptions`),
//! and sends pings. Keep-alive runs both ways: the server sends WebSocket
//! pings every WS_PING_INTERVAL and drops a peer that has not answered the
//! previous one; browsers, which cannot send protocol pings, send a
//! `{"type":"ping"}` frame and get `{"type":"pong"}` back. Why a socket is
//! closed is in its close code ([`close`]).
//!
//! The files: `upgrade` (the upgrade, the client's address and credentials,
//! signing in), [`close`] (close codes), `connection` (the socket's loop and
//! its frames), `frames` (their JSON), `subscriptions`, `encoded` (events as
//! JSON, once per thread for every socket) and `wakes` (what woke the loop).

use std::time::Duration;

use slop_context::Notifications;

use crate::Bridge;

pub mod close;
mod connection;
mod encoded;
mod frames;
mod subscriptions;
mod upgrade;
mod wakes;

pub use close::close_code;
pub use upgrade::upgrade;

use encoded::EncodedEvents;

/// The largest message a client may send; a larger one closes the socket
/// with 1009 (message too big).
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// How long a socket opened without credentials has to send its `auth`
/// frame (the default of [`Bridge::ws_auth_timeout`]).
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The most `Subscribe` calls one socket may have open, the automatic one
/// included; each may follow many channels.
pub const MAX_SUBSCRIPTIONS: usize = 32;

/// The state of the WebSocket route: the bridge, the notification service
/// that subscriptions call, and the JSON of recent events.
pub struct Sockets {
    bridge: Bridge,
    notifications: Notifications,
    encoded: EncodedEvents,
}

impl Sockets {
    /// The state for `bridge`, calling `notifications` for subscriptions.
    pub fn new(bridge: Bridge, notifications: Notifications) -> Self {
        Self {
            bridge,
            notifications,
            encoded: EncodedEvents::default(),
        }
    }
}
