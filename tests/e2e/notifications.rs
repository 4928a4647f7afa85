//! Notification streams end to end: publishing, following over gRPC and
//! grpc-web, resuming, filtering, authorization, slow consumers, ending with
//! the session, and the connection throttle.

use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use prost::Message as _;
use slop_api::{
    auth::{self, auth_service_client::AuthServiceClient},
    notification::{
        self, ChannelSubscription, Event, JobProgress, JobState, Namespace, StreamPosition,
        SubscribeResponse, notification_service_client::NotificationServiceClient,
        subscribe_response::Message,
    },
};
use tonic::{Code, Streaming, transport::Channel};

use crate::harness::{
    PATIENCE, SERVICE_KEY, SignedIn, TestServer, bearer, grpc_frame, reason, sign_up,
};

type Client_ = NotificationServiceClient<Channel>;

async fn client(server: &TestServer) -> Client_ {
    NotificationServiceClient::new(server.channel().await)
}

fn follow(channel: &str) -> ChannelSubscription {
    ChannelSubscription {
        channel: channel.into(),
        ..Default::default()
    }
}

fn subscribe_to(subscriptions: Vec<ChannelSubscription>) -> notification::SubscribeRequest {
    notification::SubscribeRequest { subscriptions }
}

async fn subscribe(
    client: &mut Client_,
    token: &str,
    subscriptions: Vec<ChannelSubscription>,
) -> Result<Streaming<SubscribeResponse>, tonic::Status> {
    client
        .subscribe(bearer(subscribe_to(subscriptions), token))
        .await
        .map(tonic::Response::into_inner)
}

/// The next message of a stream (failing after PATIENCE); heartbeats are
/// skipped.
async fn next(stream: &mut Streaming<SubscribeResponse>) -> Result<Message, tonic::Status> {
    loop {
        let message = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("a stream message in time")?
            .expect("the stream goes on")
            .message
            .expect("a message");
        if !matches!(message, Message::Heartbeat(_)) {
            return Ok(message);
        }
    }
}

async fn next_event(stream: &mut Streaming<SubscribeResponse>) -> Event {
    match next(stream).await {
        Ok(Message::Event(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn next_subscribed(stream: &mut Streaming<SubscribeResponse>) -> notification::Subscribed {
    match next(stream).await {
        Ok(Message::Subscribed(subscribed)) => subscribed,
        other => panic!("expected subscribed, got {other:?}"),
    }
}

fn note(channels: &[&str], kind: &str) -> notification::PublishRequest {
    let mut payload = pbjson_types::Struct::default();
    payload
        .fields
        .insert("text".into(), pbjson_types::Value::from(format!("{kind}!")));
    notification::PublishRequest {
        channels: channels.iter().map(|c| (*c).to_owned()).collect(),
        r#type: kind.into(),
        payload: Some(payload),
        ..Default::default()
    }
}

fn media(channel: &str, percent: f64) -> notification::PublishRequest {
    notification::PublishRequest {
        channels: vec![channel.into()],
        namespace: Namespace::Media as i32,
        r#type: "job.progress".into(),
        job: Some(JobProgress {
            job_id: "job-1".into(),
            state: JobState::Running as i32,
            percent,
            message: "encoding".into(),
        }),
        ..Default::default()
    }
}

async fn publish(
    client: &mut Client_,
    request: notification::PublishRequest,
) -> notification::PublishResponse {
    client
        .publish(bearer(request, SERVICE_KEY))
        .await
        .expect("publish")
        .into_inner()
}

/// An event for `topic:firehose` with `bytes` of payload.
fn firehose_chunk(bytes: usize) -> notification::PublishRequest {
    let mut chunk = note(&["topic:firehose"], "chunk");
    chunk
        .payload
        .as_mut()
        .unwrap()
        .fields
        .insert("blob".into(), pbjson_types::Value::from("x".repeat(bytes)));
    chunk
}

/// The code of the close frame `socket` gets within `limit`.
async fn close_code(socket: &mut crate::websocket::Socket, limit: Duration) -> Option<u16> {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message as Frame;
    tokio::time::timeout(limit, async {
        loop {
            match socket.next().await {
                Some(Ok(Frame::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                other => panic!("socket ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no close frame within {limit:?}"))
}

fn own(user: &SignedIn) -> String {
    format!("user:{}", user.user_id)
}

#[tokio::test]
async fn a_user_receives_what_a_service_publishes_to_them_over_grpc() {
    let server = TestServer::start().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let mut client = client(&server).await;
    // No subscriptions named: the caller's own channel.
    let mut stream = subscribe(&mut client, &ada.access_token, vec![])
        .await
        .unwrap();
    let subscribed = next_subscribed(&mut stream).await;
    assert_eq!(subscribed.channel, own(&ada));
    let position = subscribed.position.unwrap();
    // Nobody has published to it yet: no epoch, until the first event.
    assert_eq!((position.offset, position.epoch.as_str()), (0, ""));

    let published = publish(&mut client, note(&[&own(&ada)], "comment.created")).await;
    assert_eq!(published.events.len(), 1);
    let at = published.events[0].position.clone().unwrap();
    assert_eq!(at.offset, 1);
    assert!(!at.epoch.is_empty());

    let event = next_event(&mut stream).await;
    assert_eq!(event.channel, own(&ada));
    assert_eq!(event.r#type, "comment.created");
    assert_eq!(event.namespace, Namespace::Notifications as i32);
    assert_eq!((event.offset, event.epoch.as_str()), (1, at.epoch.as_str()));
    assert!(event.time.is_some());
    assert_eq!(
        event.payload.unwrap().fields["text"],
        pbjson_types::Value::from("comment.created!".to_string())
    );
}

#[tokio::test]
async fn namespaces_filter_a_users_channel() {
    let server = TestServer::start().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let mut client = client(&server).await;
    let mut media_only = subscribe(
        &mut client,
        &ada.access_token,
        vec![ChannelSubscription {
            channel: own(&ada),
            namespaces: vec![Namespace::Media as i32],
            resume_from: None,
        }],
    )
    .await
    .unwrap();
    next_subscribed(&mut media_only).await;
    publish(&mut client, note(&[&own(&ada)], "comment.created")).await;
    publish(&mut client, media(&own(&ada), 40.0)).await;
    let event = next_event(&mut media_only).await;
    assert_eq!(event.namespace, Namespace::Media as i32);
    assert_eq!(event.offset, 2, "the notification was filtered out");
    let job = event.job.unwrap();
    assert_eq!((job.job_id.as_str(), job.percent), ("job-1", 40.0));
}

#[tokio::test]
async fn a_topic_reaches_every_subscriber_and_a_list_of_users_each_of_them() {
    let server = TestServer::start().await;
    let mut users = Vec::new();
    for name in ["ada", "bob", "cy"] {
        users.push(sign_up(&server, &format!("{name}@example.com")).await);
    }
    let mut client = client(&server).await;
    let mut streams = Vec::new();
    for user in &users {
        let mut stream = subscribe(
            &mut client,
            &user.access_token,
            vec![follow("topic:news"), follow(&own(user))],
        )
        .await
        .unwrap();
        next_subscribed(&mut stream).await;
        next_subscribed(&mut stream).await;
        streams.push(stream);
    }
    publish(&mut client, note(&["topic:news"], "news.posted")).await;
    let names: Vec<String> = users.iter().map(own).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let published = publish(&mut client, note(&refs, "digest.ready")).await;
    assert_eq!(published.events.len(), 3);
    for (user, stream) in users.iter().zip(&mut streams) {
        let event = next_event(stream).await;
        assert_eq!((event.channel.as_str(), event.offset), ("topic:news", 1));
        let event = next_event(stream).await;
        assert_eq!(event.channel, own(user));
        assert_eq!(event.r#type, "digest.ready");
    }
}

#[tokio::test]
async fn users_follow_only_their_own_channel_and_never_publish() {
    let server = TestServer::start().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let bob = sign_up(&server, "bob@example.com").await;
    let mut client = client(&server).await;

    let denied = subscribe(&mut client, &ada.access_token, vec![follow(&own(&bob))])
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(reason(&denied), "CHANNEL_FORBIDDEN");

    let denied = client
        .get_channel(bearer(
            notification::GetChannelRequest { channel: own(&bob) },
            &ada.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let denied = client
        .publish(bearer(note(&[&own(&ada)], "x"), &ada.access_token))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(reason(&denied), "SERVICE_REQUIRED");

    let anonymous = client
        .subscribe(subscribe_to(vec![follow("topic:news")]))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    let bad = subscribe(&mut client, &ada.access_token, vec![follow("room:1")])
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("subscriptions[0].channel"),
        "{bad:?}"
    );

    // A service may follow anyone's channel.
    let mut stream = client
        .subscribe(bearer(subscribe_to(vec![follow(&own(&ada))]), SERVICE_KEY))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_subscribed(&mut stream).await.channel, own(&ada));
}

#[tokio::test]
async fn reconnecting_with_the_last_offset_delivers_exactly_what_was_missed() {
    let server = TestServer::start_with(|config| config.stream_history_size = 5).await;
    let ada = sign_up(&server, "ada@example.com").await;
    let mut client = client(&server).await;
    let mut stream = subscribe(&mut client, &ada.access_token, vec![follow("topic:news")])
        .await
        .unwrap();
    next_subscribed(&mut stream).await;
    for i in 1..=2 {
        publish(&mut client, note(&["topic:news"], &format!("e{i}"))).await;
    }
    next_event(&mut stream).await;
    let last = next_event(&mut stream).await;
    drop(stream);
    for i in 3..=5 {
        publish(&mut client, note(&["topic:news"], &format!("e{i}"))).await;
    }

    let resume = |position: StreamPosition| {
        vec![ChannelSubscription {
            channel: "topic:news".into(),
            namespaces: vec![],
            resume_from: Some(position),
        }]
    };
    let mut stream = subscribe(
        &mut client,
        &ada.access_token,
        resume(StreamPosition {
            offset: last.offset,
            epoch: last.epoch.clone(),
        }),
    )
    .await
    .unwrap();
    let subscribed = next_subscribed(&mut stream).await;
    assert!(subscribed.was_recovering && subscribed.recovered);
    for expected in ["e3", "e4", "e5"] {
        assert_eq!(next_event(&mut stream).await.r#type, expected);
    }
    publish(&mut client, note(&["topic:news"], "e6")).await;
    let live = next_event(&mut stream).await;
    assert_eq!((live.r#type.as_str(), live.offset), ("e6", 6));
    drop(stream);

    // A stale epoch, or a gap older than the history (5 events), cannot be
    // recovered: said plainly, then live.
    for i in 7..=12 {
        publish(&mut client, note(&["topic:news"], &format!("e{i}"))).await;
    }
    for (latest, position) in [
        StreamPosition {
            offset: 2,
            epoch: "an-old-epoch".into(),
        },
        StreamPosition {
            offset: 2,
            epoch: last.epoch.clone(),
        },
    ]
    .into_iter()
    .enumerate()
    .map(|(i, position)| (12 + i as u64, position))
    {
        let mut stream = subscribe(&mut client, &ada.access_token, resume(position))
            .await
            .unwrap();
        let subscribed = next_subscribed(&mut stream).await;
        assert!(subscribed.was_recovering);
        assert!(!subscribed.recovered);
        assert_eq!(subscribed.position.unwrap().offset, latest);
        let published = publish(&mut client, note(&["topic:news"], "later")).await;
        let event = next_event(&mut stream).await;
        assert_eq!(
            event.offset,
            published.events[0].position.as_ref().unwrap().offset
        );
    }
}

#[tokio::test]
async fn channel_state_and_history_pages() {
    let server = TestServer::start().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let mut client = client(&server).await;
    for i in 0..5 {
        if i % 2 == 0 {
            publish(&mut client, note(&[&own(&ada)], &format!("n{i}"))).await;
        } else {
            publish(&mut client, media(&own(&ada), f64::from(i))).await;
        }
    }
    let channel = client
        .get_channel(bearer(
            notification::GetChannelRequest { channel: own(&ada) },
            &ada.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .channel
        .unwrap();
    let position = channel.position.unwrap();
    assert_eq!(channel.name, own(&ada));
    assert_eq!(position.offset, 5);
    assert_eq!((channel.earliest_offset, channel.history_size), (1, 5));

    let list = |after: Option<StreamPosition>, namespaces: Vec<i32>, page_token: String| {
        bearer(
            notification::ListChannelEventsRequest {
                channel: own(&ada),
                after,
                namespaces,
                page_size: 2,
                page_token,
            },
            &ada.access_token,
        )
    };
    let first = client
        .list_channel_events(list(None, vec![], String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.events.iter().map(|e| e.offset).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(first.recovered);
    let second = client
        .list_channel_events(list(None, vec![], first.next_page_token.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        second.events.iter().map(|e| e.offset).collect::<Vec<_>>(),
        [3, 4]
    );
    let last = client
        .list_channel_events(list(None, vec![], second.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.events.len(), 1);
    assert!(last.next_page_token.is_empty());

    let media_after_one = client
        .list_channel_events(list(
            Some(StreamPosition {
                offset: 1,
                epoch: position.epoch.clone(),
            }),
            vec![Namespace::Media as i32],
            String::new(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        media_after_one
            .events
            .iter()
            .map(|e| e.offset)
            .collect::<Vec<_>>(),
        [2, 4]
    );
    assert!(media_after_one.recovered);

    let stale = client
        .list_channel_events(list(
            Some(StreamPosition {
                offset: 3,
                epoch: "gone".into(),
            }),
            vec![],
            String::new(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!stale.recovered);
    assert_eq!(stale.events[0].offset, 1, "from the oldest retained event");

    let garbage = client
        .list_channel_events(list(None, vec![], "nonsense".into()))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn logging_out_ends_the_sessions_open_streams_within_a_second() {
    let server = TestServer::start().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let mut client = client(&server).await;
    let mut stream = subscribe(&mut client, &ada.access_token, vec![])
        .await
        .unwrap();
    next_subscribed(&mut stream).await;
    AuthServiceClient::new(server.channel().await)
        .logout(bearer(auth::LogoutRequest::default(), &ada.access_token))
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(1), stream.message())
        .await
        .expect("the stream ends within a second")
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated);
    assert_eq!(reason(&ended), "SESSION_ENDED");
}

#[tokio::test]
async fn an_expired_session_ends_its_streams() {
    let server = TestServer::start().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let mut client = client(&server).await;
    let mut stream = subscribe(&mut client, &ada.access_token, vec![])
        .await
        .unwrap();
    next_subscribed(&mut stream).await;
    server.clock.advance(Duration::from_secs(86_400 + 1));
    let ended = tokio::time::timeout(Duration::from_secs(2), stream.message())
        .await
        .expect("the stream ends")
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_while_a_fast_one_gets_every_event() {
    let server = TestServer::start_with(|config| {
        config.stream_queue_max_events = 8;
        config.stream_history_size = 1000;
    })
    .await;
    let ada = sign_up(&server, "ada@example.com").await;
    let mut client = client(&server).await;
    // Each on its own connection, so HTTP/2 flow control of one does not
    // hold the other.
    let mut slow = subscribe(
        &mut NotificationServiceClient::new(server.channel().await),
        &ada.access_token,
        vec![follow("topic:firehose")],
    )
    .await
    .unwrap();
    let mut fast = subscribe(
        &mut NotificationServiceClient::new(server.channel().await),
        &ada.access_token,
        vec![follow("topic:firehose")],
    )
    .await
    .unwrap();
    next_subscribed(&mut slow).await;
    next_subscribed(&mut fast).await;

    let big = firehose_chunk(32 * 1024);
    const EVENTS: u64 = 200;
    for i in 1..=EVENTS {
        publish(&mut client, big.clone()).await;
        assert_eq!(
            next_event(&mut fast).await.offset,
            i,
            "the fast one keeps up"
        );
    }
    // The slow one gets what was already on its way, then the reason.
    let mut received = 0;
    let ended = loop {
        match tokio::time::timeout(PATIENCE, slow.message())
            .await
            .unwrap()
        {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("the slow stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert!(received < EVENTS, "it was cut off ({received} received)");
    assert_eq!(ended.code(), Code::ResourceExhausted);
    assert_eq!(reason(&ended), "SLOW_CONSUMER");

    // Operators see it: the disconnect, and the stream's end by its status.
    let metrics = server.metrics_addr.expect("a metrics listener");
    crate::harness::eventually("the slow consumer in the metrics", || async {
        let scraped = crate::metrics::scrape(metrics).await;
        scraped.value("slop_slow_consumer_disconnects_total", &[]) == 1.0
            && scraped.value(
                "slop_requests_total",
                &[
                    (
                        "route",
                        "/slop.notification.v1.NotificationService/Subscribe",
                    ),
                    ("code", "RESOURCE_EXHAUSTED"),
                ],
            ) == 1.0
    })
    .await;
}

#[tokio::test]
async fn the_eleventh_stream_in_a_minute_is_refused_with_the_wait() {
    let server = TestServer::start().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let mut client = client(&server).await;
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(
            subscribe(&mut client, &ada.access_token, vec![])
                .await
                .unwrap(),
        );
    }
    let refused = subscribe(&mut client, &ada.access_token, vec![])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(reason(&refused), "RATE_LIMITED");
    use tonic_types::StatusExt as _;
    let wait = refused
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo with the wait");
    assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60));

    // Services are not throttled.
    for _ in 0..12 {
        client
            .subscribe(bearer(
                subscribe_to(vec![follow("topic:news")]),
                SERVICE_KEY,
            ))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn quiet_streams_get_heartbeats() {
    let server = TestServer::start_with(|config| {
        config.stream_heartbeat_interval = Duration::from_secs(1);
    })
    .await;
    let ada = sign_up(&server, "ada@example.com").await;
    let mut stream = subscribe(&mut client(&server).await, &ada.access_token, vec![])
        .await
        .unwrap();
    next_subscribed(&mut stream).await;
    let message = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .message
        .unwrap();
    assert!(matches!(message, Message::Heartbeat(_)), "{message:?}");
}

/// A grpc-web server stream read frame by frame, as a browser does.
struct GrpcWebStream {
    body: hyper::body::Incoming,
    buffer: BytesMut,
    /// The grpc-status of a trailers-only answer (an error before any
    /// message), if it was one.
    head_status: Option<String>,
}

impl GrpcWebStream {
    async fn open(server: &TestServer, token: &str, request: &impl prost::Message) -> Self {
        let request =
            Request::post(server.url("/slop.notification.v1.NotificationService/Subscribe"))
                .header("content-type", "application/grpc-web+proto")
                .header("x-grpc-web", "1")
                .header("origin", "http://app.example")
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(grpc_frame(0, &request.encode_to_vec())))
                .unwrap();
        let response = Client::builder(TokioExecutor::new())
            .build_http()
            .request(request)
            .await
            .expect("grpc-web response");
        assert_eq!(response.status(), 200);
        let head_status = response
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned());
        Self {
            body: response.into_body(),
            buffer: BytesMut::new(),
            head_status,
        }
    }

    /// The next frame: (is trailers, payload).
    async fn frame(&mut self) -> (bool, Bytes) {
        loop {
            if self.buffer.len() >= 5 {
                let len = u32::from_be_bytes(self.buffer[1..5].try_into().unwrap()) as usize;
                if self.buffer.len() >= 5 + len {
                    let flags = self.buffer.get_u8();
                    self.buffer.advance(4);
                    return (flags & 0x80 != 0, self.buffer.split_to(len).freeze());
                }
            }
            let frame = tokio::time::timeout(PATIENCE, self.body.frame())
                .await
                .expect("grpc-web data in time")
                .expect("the body goes on")
                .expect("body frame");
            if let Ok(data) = frame.into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }

    async fn message(&mut self) -> Message {
        let (trailers, payload) = self.frame().await;
        assert!(
            !trailers,
            "stream ended: {}",
            String::from_utf8_lossy(&payload)
        );
        SubscribeResponse::decode(payload).unwrap().message.unwrap()
    }
}

#[tokio::test]
async fn a_browser_follows_its_channel_over_grpc_web() {
    let server = TestServer::start().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let mut web = GrpcWebStream::open(
        &server,
        &ada.access_token,
        &subscribe_to(vec![follow(&own(&ada))]),
    )
    .await;
    assert!(matches!(web.message().await, Message::Subscribed(_)));
    let mut client = client(&server).await;
    publish(&mut client, media(&own(&ada), 75.0)).await;
    let Message::Event(event) = web.message().await else {
        panic!("expected an event");
    };
    assert_eq!(event.job.unwrap().percent, 75.0);

    // Refusals arrive as grpc-web trailers.
    let bob = sign_up(&server, "bob@example.com").await;
    let mut denied = GrpcWebStream::open(
        &server,
        &bob.access_token,
        &subscribe_to(vec![follow(&own(&ada))]),
    )
    .await;
    let status = match denied.head_status.take() {
        Some(status) => status,
        None => {
            let (trailers, payload) = denied.frame().await;
            assert!(trailers);
            String::from_utf8_lossy(&payload)
                .split("\r\n")
                .find_map(|line| line.strip_prefix("grpc-status:"))
                .expect("grpc-status trailer")
                .trim()
                .to_owned()
        }
    };
    assert_eq!(status, "7", "PERMISSION_DENIED");
}

/// A Server-Sent Events stream read message by message.
struct SseStream {
    body: hyper::body::Incoming,
    buffer: String,
}

/// One SSE message: its `event:`, `id:` and `data:` (as JSON).
#[derive(Debug)]
struct SseMessage {
    event: String,
    id: Option<String>,
    data: serde_json::Value,
}

impl SseStream {
    /// Opens the stream; the HTTP answer when it is not a stream.
    async fn open(
        server: &TestServer,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, crate::harness::Answer> {
        let mut request = Request::get(server.url(&format!("/api/v1/notifications/stream{query}")));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = Client::builder(TokioExecutor::new())
            .build_http()
            .request(request.body(Full::<Bytes>::default()).unwrap())
            .await
            .expect("SSE response");
        if response.status() != 200 {
            let (parts, body) = response.into_parts();
            return Err(crate::harness::Answer {
                status: parts.status,
                headers: parts.headers,
                body: body.collect().await.unwrap().to_bytes(),
            });
        }
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "an event stream"
        );
        Ok(Self {
            body: response.into_body(),
            buffer: String::new(),
        })
    }

    /// The next message that is not a heartbeat.
    async fn message(&mut self) -> SseMessage {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut message = SseMessage {
                    event: "message".into(),
                    id: None,
                    data: serde_json::Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        message.event = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("id:") {
                        message.id = Some(value.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if data.is_empty() || message.event == "heartbeat" {
                    continue;
                }
                message.data = serde_json::from_str(&data).expect("JSON data");
                return message;
            }
            let frame = tokio::time::timeout(PATIENCE, self.body.frame())
                .await
                .expect("SSE data in time")
                .expect("the stream goes on")
                .expect("body frame");
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }
}

#[tokio::test]
async fn server_sent_events_deliver_and_resume_from_last_event_id() {
    let server = TestServer::start().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let auth = format!("Bearer {}", ada.access_token);
    let query = format!("?channel={}&channel=topic:news", own(&ada));
    let mut sse = SseStream::open(&server, &query, &[("authorization", &auth)])
        .await
        .expect("a stream");
    assert_eq!(sse.message().await.event, "subscribed");
    assert_eq!(sse.message().await.event, "subscribed");

    let mut client = client(&server).await;
    publish(&mut client, media(&own(&ada), 10.0)).await;
    let event = sse.message().await;
    assert_eq!(event.event, "event");
    assert_eq!(event.data["channel"], own(&ada));
    assert_eq!(event.data["namespace"], "NAMESPACE_MEDIA");
    assert_eq!(event.data["job"]["percent"], 10.0);
    let last_id = event.id.expect("events carry the resume id");
    drop(sse);

    // Missed while away, on both channels.
    publish(&mut client, note(&["topic:news"], "news.posted")).await;
    publish(&mut client, media(&own(&ada), 20.0)).await;
    let mut sse = SseStream::open(
        &server,
        &query,
        &[("authorization", &auth), ("last-event-id", &last_id)],
    )
    .await
    .expect("a resumed stream");
    // Per channel: `subscribed` (recovered), then what it missed.
    let mut missed: Vec<String> = Vec::new();
    for _ in 0..4 {
        let message = sse.message().await;
        match message.event.as_str() {
            "subscribed" => assert_eq!(message.data["recovered"], true, "{message:?}"),
            "event" => missed.push(format!(
                "{}#{}",
                message.data["channel"], message.data["offset"]
            )),
            other => panic!("unexpected {other}: {message:?}"),
        }
    }
    missed.sort();
    let mut expected = vec![
        format!("\"{}\"#\"2\"", own(&ada)),
        "\"topic:news\"#\"1\"".to_owned(),
    ];
    expected.sort();
    assert_eq!(missed, expected);

    // Another user's channel is refused before the stream starts.
    let bob = sign_up(&server, "bob@example.com").await;
    let refused = SseStream::open(
        &server,
        &query,
        &[("authorization", &format!("Bearer {}", bob.access_token))],
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(refused.status, 403);
    let malformed = SseStream::open(
        &server,
        &query,
        &[("authorization", &auth), ("last-event-id", "garbage")],
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(malformed.status, 400);
}

#[tokio::test]
async fn logging_out_closes_the_users_sockets_and_event_streams_within_a_second() {
    let server = TestServer::start().await;
    let (mut socket, ada) = crate::websocket::connect_signed_in(&server, "ada@example.com").await;
    let mut sse = SseStream::open(
        &server,
        "",
        &[("authorization", &format!("Bearer {}", ada.access_token))],
    )
    .await
    .expect("a stream");
    assert_eq!(sse.message().await.event, "subscribed");

    AuthServiceClient::new(server.channel().await)
        .logout(bearer(auth::LogoutRequest::default(), &ada.access_token))
        .await
        .unwrap();

    let closed = close_code(&mut socket, Duration::from_secs(1)).await;
    assert_eq!(closed, Some(4410), "session ended within a second");

    let last = tokio::time::timeout(Duration::from_secs(1), sse.message())
        .await
        .expect("the event stream ends within a second");
    assert_eq!(last.event, "error");
    assert_eq!(last.data["error"]["code"], 401);
}

#[tokio::test]
async fn a_slow_websocket_is_closed_4408_while_a_fast_one_gets_every_event() {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message as Frame;
    let server = TestServer::start_with(|config| {
        config.stream_queue_max_events = 8;
        config.stream_history_size = 1000;
    })
    .await;
    let (mut fast, ada) = crate::websocket::connect_signed_in(&server, "ada@example.com").await;
    let mut slow = crate::websocket::connect_with(
        &server,
        ("authorization", &format!("Bearer {}", ada.access_token)),
    )
    .await
    .unwrap();
    for socket in [&mut fast, &mut slow] {
        socket
            .send(Frame::Text(
                r#"{"type":"subscribe","id":"f","channel":"topic:firehose"}"#.into(),
            ))
            .await
            .unwrap();
    }
    let next_event_offset = async |socket: &mut crate::websocket::Socket| loop {
        let frame = crate::websocket::next_json(socket).await;
        if frame["type"] == "event" {
            return frame["event"]["offset"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap();
        }
    };

    let mut client = client(&server).await;
    let big = firehose_chunk(60 * 1024);
    const EVENTS: u64 = 400;
    for i in 1..=EVENTS {
        publish(&mut client, big.clone()).await;
        assert_eq!(
            next_event_offset(&mut fast).await,
            i,
            "the fast one keeps up"
        );
    }
    assert_eq!(
        close_code(&mut slow, PATIENCE).await,
        Some(4408),
        "slow consumer"
    );
}

#[tokio::test]
async fn the_eleventh_websocket_in_a_minute_is_refused_with_429() {
    let server = TestServer::start().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let auth = format!("Bearer {}", ada.access_token);
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(
            crate::websocket::connect_with(&server, ("authorization", &auth))
                .await
                .expect("within the limit"),
        );
    }
    match crate::websocket::connect_with(&server, ("authorization", &auth)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("expected 429, got {:?}", other.map(|_| "a socket")),
    }
}

/// From a stream's first message on, nothing is missed: over gRPC and
/// Server-Sent Events, `tries` times each, an event published the moment
/// the first message arrives must follow. Answers how many were lost.
async fn events_lost_right_after_the_first_message(server: &TestServer, tries: usize) -> usize {
    let ada = sign_up(server, "first-message@example.com").await;
    let auth = format!("Bearer {}", ada.access_token);
    let mut client = client(server).await;
    let mut lost = 0;
    for _ in 0..tries {
        let mut stream = subscribe(&mut client, &ada.access_token, vec![])
            .await
            .expect("a stream");
        next_subscribed(&mut stream).await;
        // The second one arrives either way, so a lost first one counts
        // instead of waiting.
        let first = publish(&mut client, note(&[&own(&ada)], "at.first")).await;
        let second = publish(&mut client, note(&[&own(&ada)], "then")).await;
        let offsets = [first, second].map(|p| p.events[0].position.as_ref().unwrap().offset);
        if next_event(&mut stream).await.offset != offsets[0] {
            lost += 1;
        }

        let query = format!("?channel={}", own(&ada));
        let mut sse = SseStream::open(server, &query, &[("authorization", &auth)])
            .await
            .expect("an event stream");
        assert_eq!(sse.message().await.event, "subscribed");
        let first = publish(&mut client, note(&[&own(&ada)], "at.first")).await;
        publish(&mut client, note(&[&own(&ada)], "then")).await;
        let offset = first.events[0].position.as_ref().unwrap().offset;
        let message = sse.message().await;
        // Canonical JSON: 64-bit integers are strings.
        if message.data["offset"].as_str() != Some(offset.to_string().as_str()) {
            lost += 1;
        }
    }
    lost
}

#[tokio::test]
async fn grpc_and_sse_streams_miss_nothing_from_their_first_message_on() {
    let server = TestServer::start_with(|config| config.stream_connection_limit = 10_000).await;
    assert_eq!(
        events_lost_right_after_the_first_message(&server, 100).await,
        0
    );
    let redis = crate::harness::require_redis().await;
    let server = TestServer::start_with(|config| {
        config.stream_connection_limit = 10_000;
        config.redis_url = Some(redis);
    })
    .await;
    assert_eq!(
        events_lost_right_after_the_first_message(&server, 100).await,
        0
    );
}

/// Whole numbers in payloads print as integers (`1`, not `1.0`) on every
/// JSON door, as the canonical proto3 JSON printers (and JavaScript) do:
/// typed decoders refuse `1.0` for an integer field.
#[tokio::test]
async fn whole_numbers_print_as_integers_on_every_json_door() {
    use crate::harness::rest;
    let server = TestServer::start().await;
    let ada = sign_up(&server, "numbers@example.com").await;
    let auth = format!("Bearer {}", ada.access_token);
    let channel = own(&ada);
    let query = format!("?channel={channel}");
    let mut sse = SseStream::open(&server, &query, &[("authorization", &auth)])
        .await
        .expect("a stream");
    assert_eq!(sse.message().await.event, "subscribed");

    let published = rest(
        &server,
        "POST",
        "/api/v1/notifications",
        Some(SERVICE_KEY),
        serde_json::json!({
            "channels": [channel],
            "type": "numbers",
            "namespace": "NAMESPACE_MEDIA",
            "payload": {"n": 1, "negative": -7, "half": 0.5, "big": 1e15},
            "job": {"jobId": "j", "state": "JOB_STATE_RUNNING", "percent": 40},
        }),
    )
    .await;
    assert_eq!(published.status, 200, "{:?}", published.body);

    let check = |door: &str, event: &serde_json::Value| {
        let payload = &event["payload"];
        for (field, value) in [("n", 1), ("negative", -7), ("big", 1_000_000_000_000_000)] {
            assert_eq!(
                payload[field].as_i64(),
                Some(value),
                "{door}: {field} in {event}"
            );
        }
        assert_eq!(payload["half"].as_f64(), Some(0.5), "{door}: {event}");
        assert_eq!(
            event["job"]["percent"].as_i64(),
            Some(40),
            "{door}: {event}"
        );
    };
    let listed = rest(
        &server,
        "GET",
        &format!("/api/v1/notifications/channels/{channel}/events"),
        Some(&ada.access_token),
        serde_json::Value::Null,
    )
    .await;
    check("REST", &listed.json()["events"][0]);
    let message = sse.message().await;
    check("SSE", &message.data);

    // A socket that follows the channel, resuming from before the event.
    let mut socket = crate::websocket::connect_with(&server, ("authorization", &auth))
        .await
        .expect("upgrade");
    let subscribe = serde_json::json!({"type": "subscribe", "id": "n", "subscriptions": [
        {"channel": channel, "resumeFrom": {"offset": "0"}}]});
    use futures_util::SinkExt as _;
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            subscribe.to_string().into(),
        ))
        .await
        .unwrap();
    loop {
        let frame = crate::websocket::next_json(&mut socket).await;
        if frame["type"] == "event" && frame["id"] == "n" {
            check("WebSocket", &frame["event"]);
            break;
        }
    }
}
