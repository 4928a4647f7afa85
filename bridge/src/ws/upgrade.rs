//! The upgrade to a WebSocket, and signing a socket in: who the client is
//! (its address and credentials) and the `GetSession("current")` call that
//! says which user and session they are, once per sign-in.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, State, ws::WebSocketUpgrade},
    response::{IntoResponse, Response},
};
use http::HeaderValue;
use tonic::{Code, Status, metadata::MetadataMap, transport::server::TcpConnectInfo};

use slop_context::{Admitted, ClientAddr, EstablishedCaller, SESSION_COOKIE};

use super::{MAX_CLIENT_FRAME, Sockets, connection::Connection};
use crate::{
    Bridge,
    error::{ApiError, status_response},
};

/// The largest single frame read whole before it is refused. A message over
/// [`MAX_CLIENT_FRAME`] in a frame up to this size is read to its end, so
/// the connection is still in step and the 1009 close reaches the client; a
/// larger frame is refused on its header, and its unread bytes end the
/// connection at once.
const MAX_READ_FRAME: usize = 1024 * 1024;

/// The socket's read buffer, allocated up front and kept for the socket's
/// life: small, because most sockets are idle and each byte here is a
/// byte of every idle socket's RSS (BENCHMARKS.md, the fan-out). A
/// `subscribe` frame fits, and so does an `auth` frame with one of our
/// access tokens at the default issuer and audience (about 410 bytes, 450
/// with an Ed25519 signature); a larger frame grows the buffer to its size
/// while it is read.
const READ_BUFFER: usize = 512;

/// The most a socket may have written but not yet sent. Each frame is
/// written out before the next is taken, so this only bounds one frame (an
/// event is at most 64 KiB of payload, more once escaped as JSON) and the
/// control frames around it.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// `GET /api/v1/ws`: upgrades to a WebSocket (HTTP/1.1 Upgrade, or an
/// RFC 8441 extended CONNECT over HTTP/2).
pub async fn upgrade(
    State(sockets): State<Arc<Sockets>>,
    headers: http::HeaderMap,
    extensions: http::Extensions,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let http = rejection.status();
            let status = Status::new(
                Code::FailedPrecondition,
                format!(
                    "/api/v1/ws is a WebSocket endpoint: {}",
                    rejection.body_text()
                ),
            );
            return status_response(http, &status);
        }
    };
    let bridge = &sockets.bridge;
    if bridge.shutdown.is_cancelled() {
        return ApiError(Status::unavailable(
            "the server is shutting down; connect to another instance",
        ))
        .into_response();
    }
    let peer = Peer::of(&extensions);
    if let Err(status) = bridge.gate.admit(peer.ip(), None).await {
        return ApiError(status).into_response();
    }
    let credentials = Credentials::from_headers(&headers);
    let identity = if credentials.is_empty() {
        None
    } else {
        let identity = match signed_in(bridge, &credentials, &peer).await {
            Ok(identity) => identity,
            Err(status) => return ApiError(status).into_response(),
        };
        if let Err(status) = bridge.gate.admit(None, Some(&identity.user_id)).await {
            return ApiError(status).into_response();
        }
        Some(identity)
    };
    // Boxed: the callback below stays in the socket's task for its whole
    // life, and so would a connection captured by value, beside the one
    // the task serves (each copy a few hundred bytes per idle socket).
    let connection = Box::new(Connection::new(
        sockets.clone(),
        credentials,
        peer,
        identity,
    ));
    // Held for the socket's whole life, so shutdown can wait for it to close.
    let open = bridge.connections.token();
    upgrade
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_READ_FRAME)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_failed_upgrade(|error| tracing::debug!(%error, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| connection.serve(socket, open))
        .into_response()
}

/// An open WebSocket, counted in the server's `slop_open_streams` gauge
/// (door `websocket`) while this lives; the other doors' streams are
/// counted by the server's metrics middleware, which cannot see an
/// upgraded connection end.
pub(super) struct OpenSocket;

impl OpenSocket {
    pub(super) fn new() -> Self {
        metrics::gauge!("slop_open_streams", "door" => "websocket").increment(1.0);
        Self
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        metrics::gauge!("slop_open_streams", "door" => "websocket").decrement(1.0);
    }
}

/// Where the socket's client is: the connection information of the upgrade
/// request (and the address a trusted proxy forwarded), carried over to
/// every call made for the socket.
#[derive(Clone, Default)]
pub(super) struct Peer {
    tcp: Option<TcpConnectInfo>,
    addr: Option<ConnectInfo<SocketAddr>>,
    forwarded: Option<ClientAddr>,
}

impl Peer {
    fn of(extensions: &http::Extensions) -> Self {
        Self {
            tcp: extensions.get::<TcpConnectInfo>().cloned(),
            addr: extensions.get::<ConnectInfo<SocketAddr>>().cloned(),
            forwarded: extensions.get::<ClientAddr>().copied(),
        }
    }

    fn ip(&self) -> Option<std::net::IpAddr> {
        ClientAddr::ip(self.forwarded.as_ref(), self.tcp.as_ref())
            .or(self.addr.map(|ConnectInfo(addr)| addr.ip().to_canonical()))
    }

    /// The extensions of a call made for the socket.
    pub(super) fn extensions(&self, admitted: bool) -> http::Extensions {
        let mut extensions = http::Extensions::new();
        if let Some(tcp) = &self.tcp {
            extensions.insert(tcp.clone());
        }
        if let Some(addr) = self.addr {
            extensions.insert(addr);
        }
        if let Some(forwarded) = self.forwarded {
            extensions.insert(forwarded);
        }
        if admitted {
            extensions.insert(Admitted);
        }
        extensions
    }
}

/// The socket's credentials: the `authorization` header (of the upgrade or
/// an `auth` frame) and the session cookie; nothing else of the upgrade
/// request is kept.
#[derive(Clone, Default)]
pub(super) struct Credentials {
    authorization: Option<HeaderValue>,
    session_cookie: Option<HeaderValue>,
}

impl Credentials {
    fn from_headers(headers: &http::HeaderMap) -> Self {
        let cookies = headers.get_all(http::header::COOKIE);
        let session_cookie = slop_context::cookie(
            cookies.iter().filter_map(|value| value.to_str().ok()),
            SESSION_COOKIE,
        )
        .and_then(|value| HeaderValue::from_str(&format!("{SESSION_COOKIE}={value}")).ok());
        // A copy, not a clone: a clone shares the bytes of the connection's
        // read buffer, which the socket would then hold for its whole life.
        let authorization = headers.get(http::header::AUTHORIZATION).and_then(|value| {
            let mut copy = HeaderValue::from_bytes(value.as_bytes()).ok()?;
            copy.set_sensitive(true);
            Some(copy)
        });
        Self {
            authorization,
            session_cookie,
        }
    }

    /// An access token sent in an `auth` frame; None if it cannot be a
    /// header value.
    pub(super) fn bearer(token: &str) -> Option<Self> {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
        value.set_sensitive(true);
        Some(Self {
            authorization: Some(value),
            session_cookie: None,
        })
    }

    fn is_empty(&self) -> bool {
        self.authorization.is_none() && self.session_cookie.is_none()
    }

    pub(super) fn metadata(&self) -> MetadataMap {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = &self.authorization {
            headers.insert(http::header::AUTHORIZATION, value.clone());
        }
        if let Some(value) = &self.session_cookie {
            headers.insert(http::header::COOKIE, value.clone());
        }
        MetadataMap::from_headers(headers)
    }
}

/// Who signed the socket in.
#[derive(Debug, Clone)]
pub(super) struct SignedIn {
    pub(super) user_id: String,
    /// Shared with the subscriptions opened in this session's name.
    pub(super) session_id: Arc<str>,
    /// The caller as the session service established it, when it hands one
    /// out (the server in the same process does): later `Subscribe` calls
    /// carry it instead of being authenticated again.
    pub(super) caller: Option<EstablishedCaller>,
}

impl SignedIn {
    pub(super) fn own_channel(&self) -> String {
        format!("user:{}", self.user_id)
    }
}

/// Authenticates credentials the way every other call is: the session
/// service answers for "the session of these credentials". (A cookie is not
/// sent cross-site by browsers, being SameSite=Lax, so another site cannot
/// open a socket in a user's name.)
pub(super) async fn signed_in(
    bridge: &Bridge,
    credentials: &Credentials,
    peer: &Peer,
) -> Result<SignedIn, Status> {
    let request = tonic::Request::from_parts(
        credentials.metadata(),
        peer.extensions(false),
        slop_api::session::GetSessionRequest {
            session_id: "current".into(),
        },
    );
    let (_, response, extensions) = bridge.sessions.get_session(request).await?.into_parts();
    let session = response
        .session
        .ok_or_else(|| Status::internal("the session service answered without a session"))?;
    Ok(SignedIn {
        user_id: session.user_id,
        session_id: session.id.into(),
        caller: extensions.get::<EstablishedCaller>().cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_copied_out_of_the_upgrade_request() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        headers.insert(
            http::header::COOKIE,
            HeaderValue::from_static("theme=dark; slop_session=s3cret"),
        );
        let credentials = Credentials::from_headers(&headers);
        let authorization = credentials.authorization.as_ref().unwrap();
        assert_eq!(authorization, "Bearer abc");
        assert!(authorization.is_sensitive());
        // Not the request's bytes (in a server, its connection's buffer).
        assert_ne!(
            authorization.as_bytes().as_ptr(),
            headers[http::header::AUTHORIZATION].as_bytes().as_ptr()
        );
        assert_eq!(
            credentials.session_cookie.as_ref().unwrap(),
            &format!("{SESSION_COOKIE}=s3cret")
        );
    }
}
