//! The WebSocket adapter at /api/v1/ws.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};

use crate::harness::{PATIENCE, SERVICE_KEY, SignedIn, TestServer, bearer, get, log_in, sign_up};

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(server: &TestServer) -> Socket {
    let url = format!("ws://{}/api/v1/ws", server.addr);
    let (socket, response) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
        .await
        .expect("WebSocket handshake in time")
        .expect("WebSocket handshake");
    assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    socket
}

/// The next text or close frame, answering nothing else.
pub async fn next_frame(socket: &mut Socket) -> Message {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("frame");
        if matches!(
            message,
            Message::Text(_) | Message::Close(_) | Message::Binary(_)
        ) {
            return message;
        }
    }
}

/// A socket signed in at the upgrade as a new user, past its `welcome` and
/// the `subscribed` of its own channel.
pub async fn connect_signed_in(server: &TestServer, email: &str) -> (Socket, SignedIn) {
    let user = sign_up(server, email).await;
    let mut socket = connect_with(
        server,
        ("authorization", &format!("Bearer {}", user.access_token)),
    )
    .await
    .expect("upgrade");
    assert_eq!(next_json(&mut socket).await["type"], "welcome");
    let subscribed = next_json(&mut socket).await;
    assert_eq!(
        subscribed["subscribed"]["channel"],
        format!("user:{}", user.user_id)
    );
    (socket, user)
}

async fn send_json(socket: &mut Socket, frame: serde_json::Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// Publishes an event of type `kind` to `channel` with the service key;
/// answers its offset.
pub async fn publish(server: &TestServer, channel: &str, kind: &str) -> u64 {
    use slop_api::notification::{
        PublishRequest, notification_service_client::NotificationServiceClient,
    };
    let published = NotificationServiceClient::new(server.channel().await)
        .publish(bearer(
            PublishRequest {
                channels: vec![channel.into()],
                r#type: kind.into(),
                ..Default::default()
            },
            SERVICE_KEY,
        ))
        .await
        .expect("publish")
        .into_inner();
    published.events[0].position.as_ref().unwrap().offset
}

pub async fn next_json(socket: &mut Socket) -> serde_json::Value {
    match next_frame(socket).await {
        Message::Text(text) => serde_json::from_str(&text).expect("JSON frame"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_websocket_connects_and_answers_pings() {
    let server = TestServer::start().await;
    let (mut socket, _) = connect_signed_in(&server, "ping@example.com").await;
    socket
        .send(Message::Text(r#"{"type":"ping","id":"42"}"#.into()))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut socket).await,
        serde_json::json!({"type": "pong", "id": "42"})
    );
}

#[tokio::test]
async fn frames_it_does_not_understand_get_an_error_frame_and_the_socket_stays_open() {
    let server = TestServer::start().await;
    let (mut socket, _) = connect_signed_in(&server, "typo@example.com").await;
    socket
        .send(Message::Text("{not json".into()))
        .await
        .unwrap();
    let error = next_json(&mut socket).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "INVALID_ARGUMENT");
    socket
        .send(Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "pong");
}

#[tokio::test]
async fn binary_frames_close_the_socket_with_1003() {
    let server = TestServer::start().await;
    let mut socket = connect(&server).await;
    socket
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    match next_frame(&mut socket).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Unsupported),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn the_server_pings_idle_sockets() {
    let server = TestServer::start_with(|config| {
        config.ws_ping_interval = Duration::from_secs(1);
    })
    .await;
    let (mut socket, _) = connect_signed_in(&server, "idle@example.com").await;
    let ping = tokio::time::timeout(PATIENCE, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Ping(_))) => return,
                Some(Ok(_)) => continue,
                other => panic!("socket ended before a ping: {other:?}"),
            }
        }
    })
    .await;
    assert!(ping.is_ok(), "no ping within {PATIENCE:?}");
    // tungstenite queues the pong when it reads a ping; flushing sends it, as
    // a browser does at once. Answered, the socket outlives the next ping.
    socket.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    socket
        .send(Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "pong");
}

#[tokio::test]
async fn a_plain_get_of_the_websocket_path_explains_itself() {
    let server = TestServer::start().await;
    let answer = get(&server.url("/api/v1/ws")).await;
    assert!(answer.status.is_client_error(), "{}", answer.status);
    let body = answer.json();
    assert_eq!(body["error"]["status"], "FAILED_PRECONDITION");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WebSocket")
    );
}

#[tokio::test]
async fn a_socket_that_never_answers_pings_is_dropped() {
    let server = TestServer::start_with(|config| {
        config.ws_ping_interval = Duration::from_secs(1);
    })
    .await;
    let mut socket = connect(&server).await;
    // Not reading means never answering: after one unanswered ping the
    // server gives up on the next tick.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Ping(_))) => continue,
                Some(Ok(Message::Text(text))) => panic!("unexpected frame {text}"),
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the server kept a dead socket open");
}

/// Registers and logs in a user over REST; returns (access token, cookie
/// header of a cookie login).
async fn signed_in_user(server: &TestServer) -> (String, String) {
    use http_body_util::Full;
    let post = |path: &str, body: serde_json::Value| {
        crate::harness::http(
            http::Request::post(server.url(path))
                .header("content-type", "application/json")
                .body(Full::from(body.to_string()))
                .unwrap(),
        )
    };
    let credentials =
        serde_json::json!({"email": "ws@example.com", "password": "correct horse battery staple"});
    let mut register = credentials.clone();
    register["displayName"] = "WS".into();
    assert_eq!(post("/api/v1/auth/register", register).await.status, 200);
    let login = post(
        "/api/v1/auth/login?cookie=true&access_token=true",
        credentials,
    )
    .await;
    let token = login.json()["tokens"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let cookie = login
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ");
    (token, cookie)
}

pub async fn connect_with(
    server: &TestServer,
    header: (&str, &str),
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = format!("ws://{}/api/v1/ws", server.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        http::HeaderName::from_bytes(header.0.as_bytes()).unwrap(),
        header.1.parse().unwrap(),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

#[tokio::test]
async fn the_upgrade_accepts_a_bearer_token_or_the_session_cookie() {
    let server = TestServer::start().await;
    let (token, cookie) = signed_in_user(&server).await;
    for header in [
        ("authorization", format!("Bearer {token}")),
        ("cookie", cookie),
    ] {
        let mut socket = connect_with(&server, (header.0, &header.1))
            .await
            .expect("upgrade");
        let welcome = next_json(&mut socket).await;
        assert_eq!(welcome["type"], "welcome", "{header:?}");
        assert!(welcome["userId"].as_str().is_some_and(|id| !id.is_empty()));
        assert!(
            welcome["sessionId"]
                .as_str()
                .is_some_and(|id| !id.is_empty())
        );
    }
}

#[tokio::test]
async fn the_upgrade_refuses_bad_credentials_with_401() {
    let server = TestServer::start().await;
    for header in [
        ("authorization", "Bearer not-a-token"),
        ("cookie", "slop_session=forged.mac"),
    ] {
        match connect_with(&server, header).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(
                    response.status(),
                    http::StatusCode::UNAUTHORIZED,
                    "{header:?}"
                );
            }
            other => panic!(
                "{header:?}: expected a 401, got {:?}",
                other.map(|_| "a socket")
            ),
        }
    }
}

#[tokio::test]
async fn an_auth_frame_signs_a_socket_in_and_its_own_events_arrive() {
    let server = TestServer::start().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let mut socket = connect(&server).await;
    send_json(
        &mut socket,
        serde_json::json!({"type": "auth", "token": ada.access_token}),
    )
    .await;
    let welcome = next_json(&mut socket).await;
    assert_eq!(welcome["userId"], ada.user_id.as_str());
    let own = format!("user:{}", ada.user_id);
    assert_eq!(next_json(&mut socket).await["subscribed"]["channel"], own);

    let offset = publish(&server, &own, "comment.created").await;
    let event = next_json(&mut socket).await;
    assert_eq!(event["type"], "event");
    assert_eq!(event["event"]["channel"], own);
    assert_eq!(event["event"]["offset"], offset.to_string());
    assert_eq!(event["event"]["namespace"], "NAMESPACE_NOTIFICATIONS");
}

#[tokio::test]
async fn a_socket_that_does_not_sign_in_first_is_closed_4401() {
    let server = TestServer::start().await;
    let mut socket = connect(&server).await;
    send_json(&mut socket, serde_json::json!({"type": "ping"})).await;
    match next_frame(&mut socket).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4401),
        other => panic!("expected close 4401, got {other:?}"),
    }
}

#[tokio::test]
async fn topics_are_subscribed_by_frame_and_other_users_channels_refused() {
    let server = TestServer::start().await;
    let (mut socket, _) = connect_signed_in(&server, "ada@example.com").await;
    let bob = sign_up(&server, "bob@example.com").await;

    send_json(
        &mut socket,
        serde_json::json!({"type": "subscribe", "id": "spy", "channel": format!("user:{}", bob.user_id)}),
    )
    .await;
    let refused = next_json(&mut socket).await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["id"], "spy");
    assert_eq!(refused["code"], "PERMISSION_DENIED");

    send_json(
        &mut socket,
        serde_json::json!({"type": "subscribe", "id": "news", "channel": "topic:news"}),
    )
    .await;
    let subscribed = next_json(&mut socket).await;
    assert_eq!(subscribed["id"], "news");
    let first = publish(&server, "topic:news", "post.published").await;
    let event = next_json(&mut socket).await;
    assert_eq!(event["id"], "news");
    assert_eq!(event["event"]["offset"], first.to_string());

    // Resuming from before that event on a new subscription replays it.
    send_json(
        &mut socket,
        serde_json::json!({"type": "unsubscribe", "id": "news"}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "unsubscribed");
    let epoch = event["event"]["epoch"].clone();
    send_json(
        &mut socket,
        serde_json::json!({"type": "subscribe", "id": "again", "channel": "topic:news",
                           "resumeFrom": {"offset": (first - 1).to_string(), "epoch": epoch}}),
    )
    .await;
    let resumed = next_json(&mut socket).await;
    assert_eq!(resumed["subscribed"]["recovered"], true);
    let replayed = next_json(&mut socket).await;
    assert_eq!(replayed["id"], "again");
    assert_eq!(replayed["event"]["offset"], first.to_string());
}

/// Events published to a user the moment their socket says `welcome` must
/// arrive: `welcome` means the own channel is live. Signs in `tries` times
/// at the upgrade and `tries` times with an `auth` frame; each time a
/// service publishes at once on `welcome`, then again after `subscribed`,
/// and the first event must come before the second. Answers how many were
/// lost.
async fn events_lost_right_after_welcome(server: &TestServer, tries: usize) -> usize {
    let user = sign_up(server, "welcome-race@example.com").await;
    let own = format!("user:{}", user.user_id);
    let mut lost = 0;
    for i in 0..2 * tries {
        let mut socket = if i % 2 == 0 {
            connect_with(
                server,
                ("authorization", &format!("Bearer {}", user.access_token)),
            )
            .await
            .expect("upgrade")
        } else {
            let mut socket = connect(server).await;
            send_json(
                &mut socket,
                serde_json::json!({"type": "auth", "token": user.access_token}),
            )
            .await;
            socket
        };
        assert_eq!(next_json(&mut socket).await["type"], "welcome");
        let first = publish(server, &own, "at.welcome").await;
        let subscribed = next_json(&mut socket).await;
        assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
        let second = publish(server, &own, "after.subscribed").await;
        let mut arrived = Vec::new();
        loop {
            let frame = next_json(&mut socket).await;
            assert_eq!(frame["type"], "event", "{frame}");
            let offset: u64 = frame["event"]["offset"].as_str().unwrap().parse().unwrap();
            arrived.push(offset);
            if offset == second {
                break;
            }
        }
        if !arrived.contains(&first) {
            lost += 1;
        }
        let _ = socket.close(None).await;
    }
    lost
}

#[tokio::test]
async fn an_event_published_on_welcome_arrives_in_memory() {
    let server = TestServer::start_with(|config| config.stream_connection_limit = 10_000).await;
    assert_eq!(events_lost_right_after_welcome(&server, 100).await, 0);
}

#[tokio::test]
async fn an_event_published_on_welcome_arrives_with_redis() {
    let redis = crate::harness::require_redis().await;
    let server = TestServer::start_with(|config| {
        config.stream_connection_limit = 10_000;
        config.redis_url = Some(redis);
    })
    .await;
    assert_eq!(events_lost_right_after_welcome(&server, 100).await, 0);
}

#[tokio::test]
async fn a_frame_over_64_kib_closes_the_socket_with_1009() {
    let server = TestServer::start().await;
    let (mut socket, _) = connect_signed_in(&server, "big-frame@example.com").await;
    let big = format!(
        r#"{{"type":"ping","id":"{}"}}"#,
        "x".repeat(slop_bridge::ws::MAX_CLIENT_FRAME)
    );
    // The server may close before the whole frame is written.
    let _ = socket.send(Message::Text(big.into())).await;
    match next_frame(&mut socket).await {
        Message::Close(Some(close)) => {
            assert_eq!(close.code, CloseCode::Size, "{close:?}");
            assert!(close.reason.contains("64 KiB"), "{close:?}");
        }
        other => panic!("expected close 1009, got {other:?}"),
    }
}

/// A task that ends when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every command Redis runs, as `MONITOR` prints them, read on a connection
/// of its own; tests count the lines that name what they care about (a
/// session id), so other tests sharing the Redis do not count.
struct RedisMonitor {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    hostport: String,
    _reader: AbortOnDrop,
}

impl RedisMonitor {
    async fn start(url: &str) -> Self {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let hostport = url
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap_or("127.0.0.1:6379")
            .to_owned();
        let mut connection = tokio::net::TcpStream::connect(&hostport).await.unwrap();
        connection.write_all(b"MONITOR\r\n").await.unwrap();
        let mut reader = tokio::io::BufReader::new(connection);
        let mut ok = String::new();
        reader.read_line(&mut ok).await.unwrap();
        assert_eq!(ok.trim_end(), "+OK", "MONITOR started");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = lines.clone();
        let task = tokio::spawn(async move {
            let mut line = String::new();
            while reader.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                seen.lock().unwrap().push(std::mem::take(&mut line));
            }
        });
        Self {
            lines,
            hostport,
            _reader: AbortOnDrop(task),
        }
    }

    /// How many commands clients sent so far name `needle`: waits until Redis has
    /// printed a marker command sent after them, so none is still on its way.
    async fn count(&self, needle: &str) -> usize {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let marker = format!(
            "monitor-marker-{needle}-{}",
            self.lines.lock().unwrap().len()
        );
        let mut connection = tokio::net::TcpStream::connect(&self.hostport)
            .await
            .unwrap();
        connection
            .write_all(format!("ECHO {marker}\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::io::BufReader::new(connection)
            .read_line(&mut answer)
            .await
            .unwrap();
        crate::harness::eventually("the marker reaches MONITOR", || async {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .any(|line| line.contains(&marker))
        })
        .await;
        self.lines
            .lock()
            .unwrap()
            .iter()
            // Commands clients sent, not those their scripts ran.
            .filter(|line| {
                line.contains(needle) && !line.contains(" lua]") && !line.contains(&marker)
            })
            .inspect(|line| eprintln!("{line}"))
            .count()
    }
}

/// The session store commands (Redis commands naming the session) that
/// signing a socket in at the upgrade and then `frames` subscribe frames
/// cost.
async fn session_commands_for_subscribe_frames(frames: usize) -> usize {
    let redis = crate::harness::require_redis().await;
    let server = TestServer::start_with(|config| config.redis_url = Some(redis.clone())).await;
    let ada = sign_up(&server, "frames@example.com").await;
    let monitor = RedisMonitor::start(&redis).await;
    let mut socket = connect_with(
        &server,
        ("authorization", &format!("Bearer {}", ada.access_token)),
    )
    .await
    .expect("upgrade");
    let welcome = next_json(&mut socket).await;
    let session_id = welcome["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(next_json(&mut socket).await["type"], "subscribed");
    for i in 0..frames {
        send_json(
            &mut socket,
            serde_json::json!({"type": "subscribe", "id": format!("s{i}"), "channel": format!("topic:t{i}")}),
        )
        .await;
        let subscribed = next_json(&mut socket).await;
        assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    }
    monitor.count(&session_id).await
}

#[tokio::test]
async fn a_socket_reads_its_session_once_however_many_subscribe_frames_it_sends() {
    // Signing in is one touch of the session; the own channel and every
    // subscribe frame reuse the caller it established.
    assert_eq!(session_commands_for_subscribe_frames(0).await, 1);
    assert_eq!(session_commands_for_subscribe_frames(5).await, 1);
}

#[tokio::test]
async fn get_session_current_returns_the_session_its_caller_already_touched() {
    use slop_api::session::{GetSessionRequest, session_service_client::SessionServiceClient};
    let redis = crate::harness::require_redis().await;
    let server = TestServer::start_with(|config| config.redis_url = Some(redis.clone())).await;
    let ada = sign_up(&server, "current@example.com").await;
    let mut sessions = SessionServiceClient::new(server.channel().await);
    let current = || {
        bearer(
            GetSessionRequest {
                session_id: "current".into(),
            },
            &ada.access_token,
        )
    };
    let session_id = sessions
        .get_session(current())
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
        .id;
    let monitor = RedisMonitor::start(&redis).await;
    let session = sessions
        .get_session(current())
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(session.id, session_id);
    assert!(session.current);
    assert_eq!(monitor.count(&session_id).await, 1, "one touch, no read");
}

#[tokio::test]
async fn a_subscribe_frame_after_the_access_token_expired_is_refused_and_a_new_token_is_taken() {
    let server = TestServer::start().await;
    let (mut socket, ada) = connect_signed_in(&server, "expiry@example.com").await;
    // Past the access token's lifetime, within the session's.
    server.clock.advance(Duration::from_secs(60 * 60));
    send_json(
        &mut socket,
        serde_json::json!({"type": "subscribe", "id": "late", "channel": "topic:news"}),
    )
    .await;
    let error = next_json(&mut socket).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["id"], "late");
    assert_eq!(error["code"], "UNAUTHENTICATED");
    assert_eq!(error["details"][0]["reason"], "TOKEN_EXPIRED");

    // The socket stays open, and a fresh token of the same user is taken.
    let fresh = log_in(&server, "expiry@example.com").await;
    assert_eq!(fresh.user_id, ada.user_id);
    send_json(
        &mut socket,
        serde_json::json!({"type": "auth", "token": fresh.access_token}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "welcome");
    send_json(
        &mut socket,
        serde_json::json!({"type": "subscribe", "id": "again", "channel": "topic:news"}),
    )
    .await;
    let subscribed = next_json(&mut socket).await;
    assert_eq!(
        (&subscribed["type"], &subscribed["id"]),
        (
            &serde_json::json!("subscribed"),
            &serde_json::json!("again")
        )
    );
}

#[tokio::test]
async fn no_header_stands_in_for_the_caller_a_socket_established() {
    use slop_api::notification::{
        ChannelSubscription, SubscribeRequest,
        notification_service_client::NotificationServiceClient,
    };
    let server = TestServer::start().await;
    let (_socket, _ada) = connect_signed_in(&server, "forger@example.com").await;
    let mut client = NotificationServiceClient::new(server.channel().await);
    let mut request = tonic::Request::new(SubscribeRequest {
        subscriptions: vec![ChannelSubscription {
            channel: "topic:news".into(),
            ..Default::default()
        }],
    });
    for name in [
        "established-caller",
        "x-established-caller",
        "slop-context-establishedcaller",
        "extensions",
    ] {
        request
            .metadata_mut()
            .insert(name, "user ada; session current".parse().unwrap());
    }
    let refused = client.subscribe(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(crate::harness::reason(&refused), "CREDENTIALS_MISSING");
}

#[tokio::test]
async fn a_socket_following_nothing_whose_session_ended_is_closed_4410_at_its_next_subscribe_frame()
{
    use slop_api::auth::{self, auth_service_client::AuthServiceClient};
    let server = TestServer::start().await;
    let (mut socket, ada) = connect_signed_in(&server, "nothing@example.com").await;
    let own = format!("user:{}", ada.user_id);
    // Its own subscription replaces the automatic one; then it goes too.
    send_json(
        &mut socket,
        serde_json::json!({"type": "subscribe", "id": "mine", "channel": own}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["id"], "mine");
    send_json(
        &mut socket,
        serde_json::json!({"type": "unsubscribe", "id": "mine"}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "unsubscribed");

    AuthServiceClient::new(server.channel().await)
        .logout(bearer(auth::LogoutRequest::default(), &ada.access_token))
        .await
        .unwrap();
    send_json(
        &mut socket,
        serde_json::json!({"type": "subscribe", "id": "late", "channel": "topic:news"}),
    )
    .await;
    let error = next_json(&mut socket).await;
    assert_eq!(error["details"][0]["reason"], "SESSION_ENDED", "{error}");
    match next_frame(&mut socket).await {
        Message::Close(Some(close)) => assert_eq!(u16::from(close.code), 4410),
        other => panic!("expected close 4410, got {other:?}"),
    }
}
