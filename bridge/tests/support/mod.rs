//! Fakes of the services behind the bridge, recording what the bridge asks
//! of them, and a bridge served on a port-0 listener.
//!
//! The fakes decide nothing the tests do not script: they exist to prove the
//! bridge translates, not to stand in for the server.

#![allow(dead_code, missing_docs)]

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::extract::ConnectInfo;
use serde_json::Value;
use slop_api::{
    notification::{
        self, Event, StreamPosition, SubscribeResponse, Subscribed,
        notification_service_server::NotificationService, subscribe_response::Message,
    },
    session::{self, session_service_server::SessionService},
};
use slop_bridge::Bridge;
use slop_context::{Admitted, ConnectionGate, EstablishedCaller, SubscribeStream};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Code, Request, Response, Status, metadata::MetadataMap};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The service key the fake accepts for Publish.
pub const SERVICE_KEY: &str = "service-key";

/// One call the bridge made to a fake service.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: &'static str,
    pub authorization: Option<String>,
    pub cookie: Option<String>,
    /// The names of every metadata entry the call carried.
    pub metadata_keys: Vec<String>,
    pub admitted: bool,
    /// The established caller the call carried: the user the fake session
    /// service put in it.
    pub established: Option<String>,
    pub peer: Option<SocketAddr>,
    /// The request message as canonical JSON.
    pub message: Value,
}

fn record<T: serde::Serialize>(method: &'static str, request: &Request<T>) -> Recorded {
    let text = |name: &str| {
        request
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Recorded {
        method,
        authorization: text("authorization"),
        cookie: text("cookie"),
        metadata_keys: request
            .metadata()
            .keys()
            .map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => key.as_str().to_owned(),
                tonic::metadata::KeyRef::Binary(key) => key.as_str().to_owned(),
            })
            .collect(),
        admitted: request.extensions().get::<Admitted>().is_some(),
        established: request
            .extensions()
            .get::<EstablishedCaller>()
            .and_then(|caller| caller.get::<String>().cloned()),
        peer: request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr),
        message: serde_json::to_value(request.get_ref()).unwrap(),
    }
}

/// A status with an ErrorInfo reason, in the API's domain (the adapter reads
/// only reasons of the contract).
pub fn status_with_reason(code: Code, message: &str, reason: &str) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, slop_api::errors::DOMAIN, []),
    )
}

/// RESOURCE_EXHAUSTED, reason RATE_LIMITED, retry in 30 s.
pub fn rate_limited() -> Status {
    let mut details = ErrorDetails::with_retry_info(Some(Duration::from_secs(30)));
    details.set_error_info("RATE_LIMITED", slop_api::errors::DOMAIN, []);
    Status::with_error_details(Code::ResourceExhausted, "too many connections", details)
}

/// The user a credential signs in as, per the fake session service:
/// `Bearer token-<user>` or the cookie `slop_session=cookie-<user>`;
/// `token-ended` is a session that ended.
fn user_of(metadata: &MetadataMap) -> Result<String, Status> {
    let bearer = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = metadata
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("slop_session=cookie-"));
    match (bearer, cookie) {
        (Some("token-ended"), _) => Err(status_with_reason(
            Code::Unauthenticated,
            "the session has ended",
            "SESSION_ENDED",
        )),
        (Some(token), _) => token
            .strip_prefix("token-")
            .map(str::to_owned)
            .ok_or_else(|| status_with_reason(Code::Unauthenticated, "bad token", "TOKEN_INVALID")),
        (None, Some(user)) => Ok(user.to_owned()),
        (None, None) => Err(Status::unauthenticated("no credentials")),
    }
}

/// A fake session service: GetSession("current") only. When told to
/// `establish`, it answers with an [`EstablishedCaller`] holding the user's
/// id, as the server's does with its own caller.
#[derive(Default)]
pub struct FakeSessions {
    pub calls: Mutex<Vec<Recorded>>,
    pub establish: Mutex<bool>,
}

#[tonic::async_trait]
impl SessionService for FakeSessions {
    async fn get_session(
        &self,
        request: Request<session::GetSessionRequest>,
    ) -> Result<Response<session::GetSessionResponse>, Status> {
        self.calls
            .lock()
            .unwrap()
            .push(record("GetSession", &request));
        let user = user_of(request.metadata())?;
        let established = EstablishedCaller::new(user.clone());
        let mut response = Response::new(session::GetSessionResponse {
            session: Some(session::Session {
                id: format!("session-{user}"),
                user_id: user,
                current: true,
                ..Default::default()
            }),
        });
        if *self.establish.lock().unwrap() {
            response.extensions_mut().insert(established);
        }
        Ok(response)
    }
    async fn list_sessions(
        &self,
        _: Request<session::ListSessionsRequest>,
    ) -> Result<Response<session::ListSessionsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn revoke_session(
        &self,
        _: Request<session::RevokeSessionRequest>,
    ) -> Result<Response<session::RevokeSessionResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn revoke_other_sessions(
        &self,
        _: Request<session::RevokeOtherSessionsRequest>,
    ) -> Result<Response<session::RevokeOtherSessionsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn revoke_user_sessions(
        &self,
        _: Request<session::RevokeUserSessionsRequest>,
    ) -> Result<Response<session::RevokeUserSessionsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// The sending end of one Subscribe stream the fake handed out.
pub struct FakeStream {
    pub request: Recorded,
    pub sender: mpsc::Sender<Result<SubscribeResponse, Status>>,
}

impl FakeStream {
    pub async fn event(&self, channel: &str, offset: u64, epoch: &str) {
        self.send(Ok(SubscribeResponse {
            message: Some(Message::Event(event(channel, offset, epoch))),
        }))
        .await;
    }

    pub async fn end(&self, status: Status) {
        self.send(Err(status)).await;
    }

    pub async fn send(&self, item: Result<SubscribeResponse, Status>) {
        self.sender.send(item).await.expect("the stream is open");
    }

    /// Whether the bridge dropped the stream (the call ended).
    pub fn is_dropped(&self) -> bool {
        self.sender.is_closed()
    }
}

pub fn event(channel: &str, offset: u64, epoch: &str) -> Event {
    Event {
        channel: channel.into(),
        namespace: notification::Namespace::Notifications as i32,
        offset,
        epoch: epoch.into(),
        r#type: "comment.created".into(),
        ..Default::default()
    }
}

/// A fake notification service. Subscribe refuses `user:` channels other
/// than the caller's (PERMISSION_DENIED), `topic:bad!` (INVALID_ARGUMENT)
/// and `topic:throttled` ([`rate_limited`]); otherwise it answers with a
/// stream that starts with one `subscribed` per channel (position 10@e1, or
/// the resume position, recovered) and then carries what the test sends.
#[derive(Default)]
pub struct FakeNotifications {
    pub calls: Mutex<Vec<Recorded>>,
    pub streams: Mutex<Vec<Arc<FakeStream>>>,
}

impl FakeNotifications {
    fn record<T: serde::Serialize>(&self, method: &'static str, request: &Request<T>) {
        self.calls.lock().unwrap().push(record(method, request));
    }

    /// The `n`th stream handed out (0-based), once it exists.
    pub async fn stream(&self, n: usize) -> Arc<FakeStream> {
        for _ in 0..500 {
            if let Some(stream) = self.streams.lock().unwrap().get(n) {
                return stream.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the bridge made no Subscribe call #{n}");
    }

    pub fn stream_count(&self) -> usize {
        self.streams.lock().unwrap().len()
    }
}

// The bridge's default: the `Subscribe` stream as it is.
impl slop_context::SharedSubscribe for FakeNotifications {}

#[tonic::async_trait]
impl NotificationService for FakeNotifications {
    type SubscribeStream = SubscribeStream;

    async fn publish(
        &self,
        request: Request<notification::PublishRequest>,
    ) -> Result<Response<notification::PublishResponse>, Status> {
        self.record("Publish", &request);
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if bearer != Some(&format!("Bearer {SERVICE_KEY}")) {
            return Err(status_with_reason(
                Code::PermissionDenied,
                "only backend services may publish",
                "SERVICE_REQUIRED",
            ));
        }
        let events = request
            .get_ref()
            .channels
            .iter()
            .map(|channel| notification::PublishedEvent {
                channel: channel.clone(),
                position: Some(StreamPosition {
                    offset: 11,
                    epoch: "e1".into(),
                }),
                duplicate: false,
            })
            .collect();
        Ok(Response::new(notification::PublishResponse { events }))
    }

    async fn subscribe(
        &self,
        request: Request<notification::SubscribeRequest>,
    ) -> Result<Response<SubscribeStream>, Status> {
        self.record("Subscribe", &request);
        let user = user_of(request.metadata())?;
        let mut subscriptions = request.get_ref().subscriptions.clone();
        if subscriptions.is_empty() {
            subscriptions.push(notification::ChannelSubscription {
                channel: format!("user:{user}"),
                ..Default::default()
            });
        }
        for subscription in &subscriptions {
            match subscription.channel.as_str() {
                "topic:bad!" => {
                    return Err(Status::with_error_details(
                        Code::InvalidArgument,
                        "bad channel",
                        ErrorDetails::with_bad_request_violation(
                            "subscriptions[0].channel",
                            "not a channel name",
                        ),
                    ));
                }
                "topic:throttled" => return Err(rate_limited()),
                channel if channel.starts_with("user:") && channel != format!("user:{user}") => {
                    return Err(status_with_reason(
                        Code::PermissionDenied,
                        "not your channel",
                        "CHANNEL_FORBIDDEN",
                    ));
                }
                _ => {}
            }
        }
        let (sender, mut receiver) = mpsc::channel(64);
        for subscription in &subscriptions {
            let resuming = subscription.resume_from.clone();
            let subscribed = Subscribed {
                channel: subscription.channel.clone(),
                position: Some(resuming.clone().unwrap_or(StreamPosition {
                    offset: 10,
                    epoch: "e1".into(),
                })),
                was_recovering: resuming.is_some(),
                recovered: resuming.is_some(),
            };
            sender
                .try_send(Ok(SubscribeResponse {
                    message: Some(Message::Subscribed(subscribed)),
                }))
                .unwrap();
        }
        self.streams.lock().unwrap().push(Arc::new(FakeStream {
            request: record("Subscribe", &request),
            sender,
        }));
        let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_channel(
        &self,
        request: Request<notification::GetChannelRequest>,
    ) -> Result<Response<notification::GetChannelResponse>, Status> {
        self.record("GetChannel", &request);
        let name = request.into_inner().channel;
        if name == "topic:missing" {
            return Err(Status::not_found("no such channel"));
        }
        Ok(Response::new(notification::GetChannelResponse {
            channel: Some(notification::Channel {
                name,
                position: Some(StreamPosition {
                    offset: 10,
                    epoch: "e1".into(),
                }),
                earliest_offset: 1,
                history_size: 10,
            }),
        }))
    }

    async fn list_channel_events(
        &self,
        request: Request<notification::ListChannelEventsRequest>,
    ) -> Result<Response<notification::ListChannelEventsResponse>, Status> {
        self.record("ListChannelEvents", &request);
        let channel = request.into_inner().channel;
        Ok(Response::new(notification::ListChannelEventsResponse {
            events: vec![event(&channel, 11, "e1")],
            next_page_token: String::new(),
            recovered: true,
        }))
    }
}

/// A fake connection gate: records every call, and refuses peers or users
/// when told to (with [`rate_limited`]).
#[derive(Default)]
pub struct FakeGate {
    pub calls: Mutex<Vec<(Option<IpAddr>, Option<String>)>>,
    pub refuse_peers: Mutex<bool>,
    pub refuse_users: Mutex<bool>,
}

#[tonic::async_trait]
impl ConnectionGate for FakeGate {
    async fn admit(&self, peer: Option<IpAddr>, user: Option<&str>) -> Result<(), Status> {
        self.calls
            .lock()
            .unwrap()
            .push((peer, user.map(str::to_owned)));
        let refuse = if user.is_some() {
            *self.refuse_users.lock().unwrap()
        } else {
            *self.refuse_peers.lock().unwrap()
        };
        if refuse { Err(rate_limited()) } else { Ok(()) }
    }
}

/// The bridge over the fakes.
pub struct Harness {
    pub notifications: Arc<FakeNotifications>,
    pub sessions: Arc<FakeSessions>,
    pub gate: Arc<FakeGate>,
    pub shutdown: CancellationToken,
    pub router: axum::Router,
}

/// How long a socket has for its auth frame in these tests.
pub const AUTH_TIMEOUT: Duration = Duration::from_millis(300);

impl Harness {
    pub fn new() -> Self {
        let notifications = Arc::new(FakeNotifications::default());
        let sessions = Arc::new(FakeSessions::default());
        let gate = Arc::new(FakeGate::default());
        let shutdown = CancellationToken::new();
        let bridge = Bridge {
            sessions: sessions.clone(),
            shutdown: shutdown.clone(),
            connections: TaskTracker::new(),
            ws_ping_interval: Duration::from_secs(25),
            ws_auth_timeout: AUTH_TIMEOUT,
            gate: gate.clone(),
        };
        let services = slop_bridge::rest::Services {
            auth: Arc::new(NoAuth),
            sessions: sessions.clone(),
            notifications: notifications.clone(),
            cookies: Arc::new(NoAuth),
        };
        Self {
            notifications,
            sessions,
            gate,
            shutdown,
            router: slop_bridge::router(bridge, services),
        }
    }

    /// Serves the router on 127.0.0.1:0; returns its address.
    pub async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = self
            .router
            .clone()
            .into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// The gate's calls so far.
    pub fn gate_calls(&self) -> Vec<(Option<IpAddr>, Option<String>)> {
        self.gate.calls.lock().unwrap().clone()
    }

    /// The notification service's calls so far.
    pub fn calls(&self) -> Vec<Recorded> {
        self.notifications.calls.lock().unwrap().clone()
    }
}

/// The peer of in-process requests.
pub fn peer() -> ConnectInfo<SocketAddr> {
    ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000)))
}

/// AuthService (and with it cookie sign-in) is not under test here.
struct NoAuth;

impl slop_bridge::rest::SessionCookies for NoAuth {
    fn sign_in(&self, _: &str) -> Vec<String> {
        Vec::new()
    }

    fn sign_out(&self) -> Vec<String> {
        Vec::new()
    }
}

macro_rules! unimplemented_auth {
    ($($method:ident($request:ident) -> $response:ident;)*) => {
        #[tonic::async_trait]
        impl slop_api::auth::auth_service_server::AuthService for NoAuth {
            $(async fn $method(
                &self,
                _: Request<slop_api::auth::$request>,
            ) -> Result<Response<slop_api::auth::$response>, Status> {
                Err(Status::unimplemented("fake"))
            })*
        }
    };
}

unimplemented_auth! {
    register(RegisterRequest) -> RegisterResponse;
    login(LoginRequest) -> LoginResponse;
    refresh_token(RefreshTokenRequest) -> RefreshTokenResponse;
    logout(LogoutRequest) -> LogoutResponse;
    get_current_user(GetCurrentUserRequest) -> GetCurrentUserResponse;
    update_current_user(UpdateCurrentUserRequest) -> UpdateCurrentUserResponse;
    change_password(ChangePasswordRequest) -> ChangePasswordResponse;
    request_password_reset(RequestPasswordResetRequest) -> RequestPasswordResetResponse;
    reset_password(ResetPasswordRequest) -> ResetPasswordResponse;
    validate_token(ValidateTokenRequest) -> ValidateTokenResponse;
}

/// Whether a status carries an ErrorInfo with this reason.
pub fn has_reason(status: &Status, reason: &str) -> bool {
    status
        .get_error_details()
        .error_info()
        .is_some_and(|info| info.reason == reason)
}
