//! The WebSocket adapter over fake services: sign-in at the upgrade and by
//! `auth` frame, the connection gate, subscriptions as `Subscribe` calls,
//! error frames and the close code of every way a socket ends.

mod support;

use std::{net::SocketAddr, time::Duration};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use support::{Harness, rate_limited, status_with_reason};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest as _},
};
use tonic::{Code, Status};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(5);

async fn connect(addr: SocketAddr, authorization: Option<&str>) -> Socket {
    try_connect(addr, authorization).await.unwrap()
}

async fn try_connect(
    addr: SocketAddr,
    authorization: Option<&str>,
) -> Result<Socket, tungstenite::Error> {
    let mut request = format!("ws://{addr}/api/v1/ws").into_client_request()?;
    if let Some(value) = authorization {
        request
            .headers_mut()
            .insert("authorization", value.parse().unwrap());
    }
    Ok(tokio_tungstenite::connect_async(request).await?.0)
}

async fn send(socket: &mut Socket, frame: Value) {
    socket.send(Message::text(frame.to_string())).await.unwrap();
}

/// The next text frame, as JSON.
async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a valid frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The close frame that ends the socket (text frames before it skipped).
async fn closed(socket: &mut Socket) -> (u16, String) {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("the close in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// A socket signed in as `ada` at the upgrade, past its welcome and the
/// `subscribed` of its own channel.
async fn signed_in(harness: &Harness) -> Socket {
    let addr = harness.serve().await;
    let mut socket = connect(addr, Some("Bearer token-ada")).await;
    assert_eq!(next(&mut socket).await["type"], "welcome");
    assert_eq!(next(&mut socket).await["type"], "subscribed");
    socket
}

#[tokio::test]
async fn a_socket_signed_in_at_the_upgrade_follows_its_own_channel() {
    let harness = Harness::new();
    let addr = harness.serve().await;
    let mut socket = connect(addr, Some("Bearer token-ada")).await;
    assert_eq!(
        next(&mut socket).await,
        json!({"type": "welcome", "userId": "ada", "sessionId": "session-ada"})
    );
    assert_eq!(
        next(&mut socket).await,
        json!({"type": "subscribed", "subscribed": {
            "channel": "user:ada",
            "position": {"offset": "10", "epoch": "e1"},
        }})
    );
    let own = harness.notifications.stream(0).await;
    assert!(
        own.request.admitted,
        "WebSocket subscriptions carry Admitted"
    );
    assert_eq!(
        own.request.authorization.as_deref(),
        Some("Bearer token-ada")
    );
    assert_eq!(own.request.peer.map(|p| p.ip()), Some(addr.ip()));
    assert_eq!(
        own.request.message,
        json!({"subscriptions": [{"channel": "user:ada"}]})
    );

    own.event("user:ada", 11, "e1").await;
    assert_eq!(
        next(&mut socket).await,
        json!({"type": "event", "event": {
            "channel": "user:ada",
            "namespace": "NAMESPACE_NOTIFICATIONS",
            "offset": "11",
            "epoch": "e1",
            "type": "comment.created",
        }})
    );
    assert_eq!(
        harness.gate_calls(),
        [(Some(addr.ip()), None), (None, Some("ada".to_owned()))],
        "admitted by peer, then by user, once each"
    );
}

#[tokio::test]
async fn a_session_cookie_signs_in_and_only_that_cookie_is_passed_on() {
    let harness = Harness::new();
    let addr = harness.serve().await;
    let mut request = format!("ws://{addr}/api/v1/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "cookie",
        "theme=dark; slop_session=cookie-ada; _ga=123"
            .parse()
            .unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(next(&mut socket).await["userId"], "ada");
    let own = harness.notifications.stream(0).await;
    assert_eq!(
        own.request.cookie.as_deref(),
        Some("slop_session=cookie-ada")
    );
}

#[tokio::test]
async fn an_auth_frame_signs_the_socket_in() {
    let harness = Harness::new();
    let addr = harness.serve().await;
    let mut socket = connect(addr, None).await;
    send(&mut socket, json!({"type": "auth", "token": "token-ada"})).await;
    assert_eq!(next(&mut socket).await["type"], "welcome");
    assert_eq!(next(&mut socket).await["subscribed"]["channel"], "user:ada");
    let own = harness.notifications.stream(0).await;
    assert_eq!(
        own.request.authorization.as_deref(),
        Some("Bearer token-ada")
    );
    assert!(own.request.admitted);
    assert_eq!(
        harness.gate_calls(),
        [(Some(addr.ip()), None), (None, Some("ada".to_owned()))]
    );
    // The socket works: pings are answered.
    send(&mut socket, json!({"type": "ping", "id": "p"})).await;
    assert_eq!(next(&mut socket).await, json!({"type": "pong", "id": "p"}));
}

#[tokio::test]
async fn a_socket_that_does_not_sign_in_in_time_is_closed_4401() {
    let harness = Harness::new();
    let addr = harness.serve().await;
    let mut socket = connect(addr, None).await;
    let started = tokio::time::Instant::now();
    assert_eq!(closed(&mut socket).await.0, 4401);
    assert!(started.elapsed() >= support::AUTH_TIMEOUT);
    assert_eq!(harness.notifications.stream_count(), 0);
}

#[tokio::test]
async fn any_other_frame_before_auth_closes_4401() {
    let harness = Harness::new();
    let addr = harness.serve().await;
    for frame in [
        json!({"type": "ping"}),
        json!({"type": "subscribe", "id": "s", "channel": "topic:news"}),
        json!({"type": "auth"}),
    ] {
        let mut socket = connect(addr, None).await;
        send(&mut socket, frame).await;
        assert_eq!(closed(&mut socket).await.0, 4401);
    }
    assert_eq!(harness.notifications.stream_count(), 0);
}

#[tokio::test]
async fn refused_credentials_close_with_what_went_wrong() {
    let harness = Harness::new();
    let addr = harness.serve().await;

    let mut socket = connect(addr, None).await;
    send(&mut socket, json!({"type": "auth", "token": "forged"})).await;
    let error = next(&mut socket).await;
    assert_eq!(error["code"], "UNAUTHENTICATED");
    assert_eq!(closed(&mut socket).await.0, 4401);

    let mut socket = connect(addr, None).await;
    send(&mut socket, json!({"type": "auth", "token": "token-ended"})).await;
    assert_eq!(next(&mut socket).await["code"], "UNAUTHENTICATED");
    assert_eq!(closed(&mut socket).await.0, 4410);

    // At the upgrade: 401 with the JSON error, no socket.
    let refused = try_connect(addr, Some("Bearer forged")).await.unwrap_err();
    let tungstenite::Error::Http(response) = refused else {
        panic!("{refused:?}");
    };
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn the_gate_refuses_at_the_upgrade_with_429_and_after_an_auth_frame_with_4429() {
    let harness = Harness::new();
    let addr = harness.serve().await;

    *harness.gate.refuse_peers.lock().unwrap() = true;
    let refused = try_connect(addr, None).await.unwrap_err();
    let tungstenite::Error::Http(response) = refused else {
        panic!("{refused:?}");
    };
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "30");
    *harness.gate.refuse_peers.lock().unwrap() = false;

    *harness.gate.refuse_users.lock().unwrap() = true;
    let refused = try_connect(addr, Some("Bearer token-ada"))
        .await
        .unwrap_err();
    let tungstenite::Error::Http(response) = refused else {
        panic!("{refused:?}");
    };
    assert_eq!(response.status(), 429);

    let mut socket = connect(addr, None).await;
    send(&mut socket, json!({"type": "auth", "token": "token-ada"})).await;
    let error = next(&mut socket).await;
    assert_eq!(error["code"], "RESOURCE_EXHAUSTED");
    assert_eq!(
        error["details"][0]["@type"],
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    assert_eq!(
        closed(&mut socket).await,
        (4429, "rate limited; retry in 30 s".to_owned())
    );
    assert_eq!(harness.notifications.stream_count(), 0);
}

#[tokio::test]
async fn subscribe_frames_are_subscribe_calls_and_unsubscribe_ends_them() {
    let harness = Harness::new();
    let mut socket = signed_in(&harness).await;
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "news", "subscriptions": [
            {"channel": "topic:news", "resumeFrom": {"offset": "4", "epoch": "e1"}},
            {"channel": "topic:sport"},
        ]}),
    )
    .await;
    let first = next(&mut socket).await;
    assert_eq!(first["type"], "subscribed");
    assert_eq!(first["id"], "news");
    assert_eq!(
        first["subscribed"],
        json!({"channel": "topic:news", "position": {"offset": "4", "epoch": "e1"}, "wasRecovering": true, "recovered": true})
    );
    assert_eq!(
        next(&mut socket).await["subscribed"]["channel"],
        "topic:sport"
    );

    let news = harness.notifications.stream(1).await;
    assert!(news.request.admitted);
    assert_eq!(
        news.request.message,
        json!({"subscriptions": [
            {"channel": "topic:news", "resumeFrom": {"offset": "4", "epoch": "e1"}},
            {"channel": "topic:sport"},
        ]})
    );
    news.event("topic:news", 5, "e1").await;
    let event = next(&mut socket).await;
    assert_eq!(
        (&event["id"], &event["event"]["offset"]),
        (&json!("news"), &json!("5"))
    );

    send(&mut socket, json!({"type": "unsubscribe", "id": "news"})).await;
    assert_eq!(
        next(&mut socket).await,
        json!({"type": "unsubscribed", "id": "news"})
    );
    assert!(news.is_dropped(), "unsubscribe ends the call");
    assert!(!harness.notifications.stream(0).await.is_dropped());

    send(&mut socket, json!({"type": "unsubscribe", "id": "news"})).await;
    let error = next(&mut socket).await;
    assert_eq!(
        (&error["code"], &error["id"]),
        (&json!("NOT_FOUND"), &json!("news"))
    );
}

#[tokio::test]
async fn subscribing_to_the_own_channel_replaces_the_automatic_subscription() {
    let harness = Harness::new();
    let mut socket = signed_in(&harness).await;
    let automatic = harness.notifications.stream(0).await;
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "mine", "channel": "user:ada",
               "namespaces": ["NAMESPACE_MEDIA"], "resumeFrom": {"offset": "7", "epoch": "e1"}}),
    )
    .await;
    let subscribed = next(&mut socket).await;
    assert_eq!(subscribed["id"], "mine");
    assert!(automatic.is_dropped(), "the automatic subscription ended");
    let mine = harness.notifications.stream(1).await;
    assert_eq!(
        mine.request.message,
        json!({"subscriptions": [{"channel": "user:ada", "namespaces": ["NAMESPACE_MEDIA"],
               "resumeFrom": {"offset": "7", "epoch": "e1"}}]})
    );
    // A refused replacement leaves the automatic subscription alone.
    let harness = Harness::new();
    let mut socket = signed_in(&harness).await;
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "x", "subscriptions": [
            {"channel": "user:ada"}, {"channel": "topic:bad!"}]}),
    )
    .await;
    assert_eq!(next(&mut socket).await["code"], "INVALID_ARGUMENT");
    assert!(!harness.notifications.stream(0).await.is_dropped());
}

#[tokio::test]
async fn refused_subscriptions_get_error_frames_and_the_socket_stays_open() {
    let harness = Harness::new();
    let mut socket = signed_in(&harness).await;

    send(
        &mut socket,
        json!({"type": "subscribe", "id": "spy", "channel": "user:bob"}),
    )
    .await;
    let error = next(&mut socket).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["id"], "spy");
    assert_eq!(error["code"], "PERMISSION_DENIED");
    assert_eq!(error["message"], "not your channel");
    assert_eq!(error["details"][0]["reason"], "CHANNEL_FORBIDDEN");

    send(
        &mut socket,
        json!({"type": "subscribe", "id": "bad", "channel": "topic:bad!"}),
    )
    .await;
    let error = next(&mut socket).await;
    assert_eq!(
        (&error["code"], &error["id"]),
        (&json!("INVALID_ARGUMENT"), &json!("bad"))
    );
    assert_eq!(
        error["details"][0]["fieldViolations"][0]["field"],
        "subscriptions[0].channel"
    );

    // A frame the bridge cannot read: INVALID_ARGUMENT, with its id.
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "typo", "chanel": "topic:news"}),
    )
    .await;
    let error = next(&mut socket).await;
    assert_eq!(
        (&error["code"], &error["id"]),
        (&json!("INVALID_ARGUMENT"), &json!("typo"))
    );

    // Ids are unique among open subscriptions.
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "a", "channel": "topic:a"}),
    )
    .await;
    assert_eq!(next(&mut socket).await["type"], "subscribed");
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "a", "channel": "topic:b"}),
    )
    .await;
    assert_eq!(next(&mut socket).await["code"], "ALREADY_EXISTS");

    send(&mut socket, json!({"type": "ping", "id": "still"})).await;
    assert_eq!(
        next(&mut socket).await,
        json!({"type": "pong", "id": "still"})
    );
}

#[tokio::test]
async fn a_subscription_that_ends_closes_the_socket_with_a_code_that_says_why() {
    let cases = [
        (
            status_with_reason(
                Code::Unauthenticated,
                "the session has ended",
                "SESSION_ENDED",
            ),
            4410,
        ),
        (
            status_with_reason(Code::ResourceExhausted, "too slow", "SLOW_CONSUMER"),
            4408,
        ),
        (rate_limited(), 4429),
        (Status::unavailable("redis is down"), 1013),
        (Status::internal("bug"), 1011),
        (Status::permission_denied("no longer allowed"), 4403),
    ];
    for (status, code) in cases {
        let harness = Harness::new();
        let mut socket = signed_in(&harness).await;
        let expected = status.code();
        harness.notifications.stream(0).await.end(status).await;
        let error = next(&mut socket).await;
        assert_eq!(error["type"], "error");
        assert_eq!(error["code"], slop_bridge::error::code_name(expected));
        assert_eq!(closed(&mut socket).await.0, code, "{expected:?}");
    }
}

#[tokio::test]
async fn a_session_that_ended_on_a_subscribe_call_closes_4410() {
    let harness = Harness::new();
    let addr = harness.serve().await;
    let mut socket = connect(addr, Some("Bearer token-ada")).await;
    assert_eq!(next(&mut socket).await["type"], "welcome");
    assert_eq!(next(&mut socket).await["type"], "subscribed");
    // The socket replaces its token with one whose session has ended.
    send(&mut socket, json!({"type": "auth", "token": "token-ended"})).await;
    assert_eq!(next(&mut socket).await["code"], "UNAUTHENTICATED");
    assert_eq!(closed(&mut socket).await.0, 4410);
}

#[tokio::test]
async fn a_new_token_for_the_same_user_is_taken_and_another_user_is_refused() {
    let harness = Harness::new();
    let mut socket = signed_in(&harness).await;
    send(&mut socket, json!({"type": "auth", "token": "token-bob"})).await;
    assert_eq!(next(&mut socket).await["code"], "PERMISSION_DENIED");
    send(&mut socket, json!({"type": "auth", "token": "token-ada"})).await;
    assert_eq!(next(&mut socket).await["type"], "welcome");
    // Re-signing in neither re-admits nor re-subscribes.
    assert_eq!(harness.gate_calls().len(), 2);
    assert_eq!(harness.notifications.stream_count(), 1);
}

#[tokio::test]
async fn shutdown_closes_sockets_1001() {
    let harness = Harness::new();
    let mut socket = signed_in(&harness).await;
    harness.shutdown.cancel();
    assert_eq!(closed(&mut socket).await.0, 1001);
}

#[tokio::test]
async fn binary_frames_close_1003() {
    let harness = Harness::new();
    let mut socket = signed_in(&harness).await;
    socket.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(closed(&mut socket).await.0, 1003);
}

#[tokio::test]
async fn a_client_close_is_answered() {
    let harness = Harness::new();
    let mut socket = signed_in(&harness).await;
    socket.close(None).await.unwrap();
    let answer = tokio::time::timeout(WAIT, socket.next())
        .await
        .expect("an answer in time");
    assert!(
        matches!(answer, Some(Ok(Message::Close(_)))),
        "a clean closing handshake, not a dropped connection: {answer:?}"
    );
    let own = harness.notifications.stream(0).await;
    for _ in 0..100 {
        if own.is_dropped() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the socket's subscriptions outlived it");
}

#[tokio::test]
async fn the_caller_signing_in_established_goes_with_subscribe_calls_while_its_session_is_followed()
{
    let harness = Harness::new();
    *harness.sessions.establish.lock().unwrap() = true;
    let mut socket = signed_in(&harness).await;
    let own = harness.notifications.stream(0).await;
    assert_eq!(own.request.established.as_deref(), Some("ada"));
    // The credentials go too, for the server to fall back on.
    assert_eq!(
        own.request.authorization.as_deref(),
        Some("Bearer token-ada")
    );

    send(
        &mut socket,
        json!({"type": "subscribe", "id": "mine", "channel": "user:ada"}),
    )
    .await;
    assert_eq!(next(&mut socket).await["id"], "mine");
    let mine = harness.notifications.stream(1).await;
    assert_eq!(mine.request.established.as_deref(), Some("ada"));
    assert!(own.is_dropped(), "it replaced the automatic subscription");

    // With no subscription open, nothing would see the session end: the
    // next call is authenticated by its credentials alone.
    send(&mut socket, json!({"type": "unsubscribe", "id": "mine"})).await;
    assert_eq!(next(&mut socket).await["type"], "unsubscribed");
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "news", "channel": "topic:news"}),
    )
    .await;
    assert_eq!(next(&mut socket).await["id"], "news");
    let news = harness.notifications.stream(2).await;
    assert_eq!(news.request.established, None);
    assert_eq!(
        news.request.authorization.as_deref(),
        Some("Bearer token-ada")
    );

    // A new auth frame replaces the established caller with its own.
    *harness.sessions.establish.lock().unwrap() = false;
    send(&mut socket, json!({"type": "auth", "token": "token-ada"})).await;
    assert_eq!(next(&mut socket).await["type"], "welcome");
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "sport", "channel": "topic:sport"}),
    )
    .await;
    assert_eq!(next(&mut socket).await["id"], "sport");
    let sport = harness.notifications.stream(3).await;
    assert_eq!(sport.request.established, None);
}
