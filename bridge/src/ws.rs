//! The WebSocket adapter at `/api/v1/ws`, for browsers.
//!
//! It speaks JSON text frames, each an object with a `type` (docs/websocket.md
//! is the protocol). Keep-alive runs both ways: the server sends WebSocket
//! pings every WS_PING_INTERVAL and drops a peer that has not answered the
//! previous one; browsers, which cannot send protocol pings, send a
//! `{"type":"ping"}` frame and get `{"type":"pong"}` back. When the server
//! shuts down, every socket is closed with 1001 (going away).

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{
        State,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code},
    },
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

use crate::{Bridge, error::status_response};

/// The largest frame a client may send; a larger one closes the socket with
/// 1009 (message too big).
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// How long a closing socket waits for the client's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A frame from the client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientFrame {
    /// Application-level ping; answered by a pong with the same id.
    Ping {
        #[serde(default)]
        id: Option<String>,
    },
}

/// A frame to the client.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame {
    /// Sent first on a socket opened with user credentials.
    Welcome(SignedIn),
    /// Answer to a ping frame.
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// A frame the server could not act on; the socket stays open.
    Error { code: &'static str, message: String },
}

/// `GET /api/v1/ws`: upgrades to a WebSocket (HTTP/1.1 Upgrade, or an
/// RFC 8441 extended CONNECT over HTTP/2).
pub async fn upgrade(
    State(bridge): State<Arc<Bridge>>,
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
    if bridge.shutdown.is_cancelled() {
        return status_response(
            http::StatusCode::SERVICE_UNAVAILABLE,
            &Status::unavailable("the server is shutting down; connect to another instance"),
        );
    }
    let identity = match signed_in(&bridge, headers, extensions).await {
        Ok(identity) => identity,
        Err(status) => return crate::error::ApiError(status).into_response(),
    };
    // Held for the socket's whole life, so shutdown can wait for it to close.
    let open = bridge.connections.token();
    upgrade
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_failed_upgrade(|error| tracing::debug!(%error, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| async move {
            serve(socket, &bridge, identity).await;
            drop(open);
        })
        .into_response()
}

/// Who opened the socket, when the upgrade carried user credentials.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct SignedIn {
    user_id: String,
    session_id: String,
}

/// Authenticates the upgrade request the way every other call is: the
/// session service answers for "the session of these credentials", from the
/// `authorization` header or the session cookie. No credentials: None.
/// (A cookie is not sent cross-site by browsers, being SameSite=Lax, so
/// another site cannot open a socket in a user's name.)
async fn signed_in(
    bridge: &Bridge,
    headers: http::HeaderMap,
    extensions: http::Extensions,
) -> Result<Option<SignedIn>, Status> {
    let has_cookie = headers
        .get_all(http::header::COOKIE)
        .iter()
        .any(|value| value.to_str().is_ok_and(|v| v.contains("slop_session=")));
    if !headers.contains_key(http::header::AUTHORIZATION) && !has_cookie {
        return Ok(None);
    }
    let request = tonic::Request::from_parts(
        tonic::metadata::MetadataMap::from_headers(headers),
        extensions,
        slop_api::session::GetSessionRequest {
            session_id: "current".into(),
        },
    );
    let session = bridge
        .sessions
        .get_session(request)
        .await?
        .into_inner()
        .session
        .ok_or_else(|| Status::internal("the session service answered without a session"))?;
    Ok(Some(SignedIn {
        user_id: session.user_id,
        session_id: session.id,
    }))
}

/// Why the server ends a socket.
enum Ending {
    /// The client closed it or went away.
    ClientGone,
    /// The server closes it with this code and reason.
    Close(u16, &'static str),
}

async fn serve(mut socket: WebSocket, bridge: &Bridge, identity: Option<SignedIn>) {
    tracing::debug!(
        user_id = identity.as_ref().map(|i| i.user_id.as_str()),
        "WebSocket opened"
    );
    if let Some(identity) = identity {
        let welcome = ServerFrame::Welcome(identity);
        if let Ok(json) = serde_json::to_string(&welcome)
            && socket.send(Message::Text(json.into())).await.is_err()
        {
            return;
        }
    }
    let mut ping = tokio::time::interval(bridge.ws_ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut awaiting_pong = false;

    let ending = loop {
        tokio::select! {
            () = bridge.shutdown.cancelled() => {
                break Ending::Close(close_code::AWAY, "server shutting down");
            }
            _ = ping.tick() => {
                if awaiting_pong {
                    tracing::debug!("WebSocket peer did not answer a ping");
                    break Ending::ClientGone;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break Ending::ClientGone;
                }
                awaiting_pong = true;
            }
            message = socket.recv() => match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break Ending::ClientGone,
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                // Protocol pings are answered by the WebSocket layer itself.
                Some(Ok(Message::Ping(_))) => {}
                Some(Ok(Message::Binary(_))) => {
                    break Ending::Close(close_code::UNSUPPORTED, "send JSON text frames");
                }
                Some(Ok(Message::Text(text))) => {
                    let reply = answer(&text);
                    let Ok(json) = serde_json::to_string(&reply) else {
                        break Ending::Close(close_code::ERROR, "internal error");
                    };
                    if socket.send(Message::Text(json.into())).await.is_err() {
                        break Ending::ClientGone;
                    }
                }
            }
        }
    };

    if let Ending::Close(code, reason) = ending {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            // Give the client a moment to answer the close, as the protocol
            // asks, without letting it hold shutdown up.
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                while let Some(Ok(message)) = socket.recv().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
    tracing::debug!("WebSocket closed");
}

fn answer(text: &str) -> ServerFrame {
    match serde_json::from_str::<ClientFrame>(text) {
        Ok(ClientFrame::Ping { id }) => ServerFrame::Pong { id },
        Err(error) => ServerFrame::Error {
            code: "INVALID_ARGUMENT",
            message: format!(
                "not a frame this server understands ({error}); see docs/websocket.md"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_are_answered_with_their_id() {
        let reply = serde_json::to_value(answer(r#"{"type":"ping","id":"7"}"#)).unwrap();
        assert_eq!(reply, serde_json::json!({"type": "pong", "id": "7"}));
        let reply = serde_json::to_value(answer(r#"{"type":"ping"}"#)).unwrap();
        assert_eq!(reply, serde_json::json!({"type": "pong"}));
    }

    #[test]
    fn unknown_frames_get_an_error_frame() {
        for text in [r#"{"type":"dance"}"#, "not json", "[]", r#"{"id":"1"}"#] {
            let reply = serde_json::to_value(answer(text)).unwrap();
            assert_eq!(reply["type"], "error", "{text}");
            assert_eq!(reply["code"], "INVALID_ARGUMENT", "{text}");
        }
    }
}
