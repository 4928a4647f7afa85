//! `slop.notification.v1.NotificationService`: publishing to channels and
//! following them, over gRPC, grpc-web, and (through the bridge) REST,
//! Server-Sent Events and the WebSocket adapter.
//!
//! Who may do what: only backend services publish; a user may follow and
//! read their own channel `user:<id>` and any topic; a service may follow
//! and read any channel. New streams count against the connection throttle
//! ([`StreamGate`]: STREAM_CONNECTION_LIMIT per window, per address and per
//! user; services are exempt).

use std::{
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::Stream;
use prost::Message as _;
use slop_api::{
    errors::ErrorReason,
    notification::{
        self, Event, JobProgress, JobState, Namespace, PublishedEvent, StreamPosition,
        SubscribeResponse, notification_service_server::NotificationService, subscribe_response,
    },
};
use slop_context::{Admitted, ClientAddr, ConnectionGate, EstablishedCaller, SubscribeStream};
use tonic::{Request, Response, Status};

use super::{
    Answer,
    status::{OrInvalid as _, invalid, rate_limited, with_reason},
};
use crate::{
    identity::Identity,
    identity::caller::{Access, Caller},
    identity::limits::{Decision, Rate, RateLimiter},
    infra::clock::{SharedClock, to_timestamp},
    notifications::{
        ChannelName, contiguous_after,
        hub::{Feed, Hub, Item},
    },
};

/// The most channels one Publish may name.
pub const MAX_PUBLISH_CHANNELS: usize = 1000;
/// The most channels one Subscribe may follow.
pub const MAX_SUBSCRIPTIONS: usize = 100;
/// The largest event payload, encoded.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// The deepest nesting of objects and arrays in an event payload, the
/// payload object itself being level 1. Protobuf decoders (prost, and the
/// usual ones of other languages) stop at 100 nested messages, and each JSON
/// level is up to three of them (Struct, map entry, Value): 32 levels is the
/// most that still decodes inside a stream message.
pub const MAX_PAYLOAD_DEPTH: usize = 32;
/// The longest event type, in characters.
const MAX_TYPE_CHARS: usize = 128;
/// The longest job id, in characters.
const MAX_JOB_ID_CHARS: usize = 128;
/// The longest job message, in characters.
const MAX_JOB_MESSAGE_CHARS: usize = 1024;
/// ListChannelEvents' page size when none is asked for, and the most.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// `slop.notification.v1.NotificationService`.
#[derive(Clone)]
pub struct NotificationApi {
    identity: Arc<Identity>,
    hub: Hub,
    gate: Arc<StreamGate>,
    heartbeat: Duration,
}

impl NotificationApi {
    /// The service over these accounts and sessions and this hub; quiet
    /// streams get a heartbeat every `heartbeat`.
    pub fn new(
        identity: Arc<Identity>,
        hub: Hub,
        gate: Arc<StreamGate>,
        heartbeat: Duration,
    ) -> Self {
        Self {
            identity,
            hub,
            gate,
            heartbeat,
        }
    }

    async fn caller(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Caller, Status> {
        Ok(self.identity.auth.caller(metadata, Access::Read).await?)
    }
}

/// The connection throttle of streams and WebSockets: at most `rate` new
/// connections per IP address and per user.
pub struct StreamGate {
    limits: RateLimiter,
    rate: Rate,
}

impl StreamGate {
    /// A throttle counting in `limits`.
    pub fn new(limits: RateLimiter, rate: Rate) -> Self {
        Self { limits, rate }
    }

    async fn hit(&self, key: String, what: &str) -> Result<(), Status> {
        match self.limits.hit(&key, self.rate).await? {
            Decision::Allowed { .. } => Ok(()),
            Decision::Limited { retry_after } => {
                Err(rate_limited(ErrorReason::RateLimited, what, retry_after))
            }
        }
    }
}

#[tonic::async_trait]
impl ConnectionGate for StreamGate {
    async fn admit(&self, peer: Option<IpAddr>, user: Option<&str>) -> Result<(), Status> {
        if let Some(ip) = peer {
            self.hit(
                format!("streams:ip:{ip}"),
                "too many new streams from your address",
            )
            .await?;
        }
        if let Some(user) = user {
            self.hit(
                format!("streams:user:{user}"),
                "too many new streams for your account",
            )
            .await?;
        }
        Ok(())
    }
}

/// Checks that `caller` may follow or read `channel`.
fn may_read(caller: &Caller, channel: &ChannelName) -> Result<(), Status> {
    match (caller, channel) {
        (Caller::Service(_), _) | (Caller::User(_), ChannelName::Topic(_)) => Ok(()),
        (Caller::User(user), ChannelName::User(id)) if *id == user.user_id => Ok(()),
        (Caller::User(_), ChannelName::User(_)) => Err(with_reason(
            ErrorReason::ChannelForbidden,
            "a user may follow only their own channel (user:<your id>) and topics",
        )),
    }
}

fn channel(field: &str, name: &str) -> Result<ChannelName, Status> {
    ChannelName::parse(name).or_invalid(field)
}

/// A namespace filter: each must be a real namespace.
fn namespaces(field: &str, namespaces: &[i32]) -> Result<Vec<i32>, Status> {
    for &n in namespaces {
        match Namespace::try_from(n) {
            Ok(Namespace::Notifications | Namespace::Media) => {}
            _ => {
                return Err(invalid(
                    field,
                    format!(
                        "{n} is not a namespace (NAMESPACE_NOTIFICATIONS or NAMESPACE_MEDIA); leave the list empty for all"
                    ),
                ));
            }
        }
    }
    Ok(namespaces.to_vec())
}

/// The longest idempotency key, in characters.
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

/// Checks a Publish request's idempotency key: None when there is none.
fn idempotency_key(key: &str) -> Result<Option<&str>, Status> {
    if key.is_empty() {
        return Ok(None);
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_CHARS
        || !key.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'_' | b'.' | b':' | b'~' | b'+' | b'/' | b'=')
        })
    {
        return Err(invalid(
            "idempotency_key",
            "must be 1 to 128 characters of letters, digits and `-`, `_`, `.`, `:`, `~`, `+`, `/`, `=` (a UUID, say)",
        ));
    }
    Ok(Some(key))
}

/// Checks a Publish request; returns the distinct channels and the event.
fn publication(request: notification::PublishRequest) -> Result<(Vec<ChannelName>, Event), Status> {
    if request.channels.is_empty() {
        return Err(invalid("channels", "name at least one channel"));
    }
    if request.channels.len() > MAX_PUBLISH_CHANNELS {
        return Err(invalid(
            "channels",
            format!("at most {MAX_PUBLISH_CHANNELS} channels per call"),
        ));
    }
    let mut channels: Vec<ChannelName> = Vec::with_capacity(request.channels.len());
    for (i, name) in request.channels.iter().enumerate() {
        let parsed = channel(&format!("channels[{i}]"), name)?;
        if !channels.contains(&parsed) {
            channels.push(parsed);
        }
    }
    let namespace = match Namespace::try_from(request.namespace) {
        Ok(Namespace::Unspecified) => Namespace::Notifications,
        Ok(namespace) => namespace,
        Err(_) => return Err(invalid("namespace", "not a namespace")),
    };
    let chars = request.r#type.chars().count();
    if chars == 0 || chars > MAX_TYPE_CHARS {
        return Err(invalid("type", "must be 1 to 128 characters"));
    }
    if !request
        .r#type
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
    {
        return Err(invalid(
            "type",
            "may hold only letters, digits, `.`, `_`, `-` and `:`",
        ));
    }
    let mut payload = request.payload;
    if let Some(payload) = &mut payload {
        if payload.encoded_len() > MAX_PAYLOAD_BYTES {
            return Err(invalid("payload", "must be at most 64 KiB once encoded"));
        }
        normalize_payload(payload, MAX_PAYLOAD_DEPTH).or_invalid("payload")?;
    }
    match (namespace, &request.job) {
        (Namespace::Media, None) => {
            return Err(invalid("job", "media events must carry the job's progress"));
        }
        (Namespace::Media, Some(job)) => check_job(job)?,
        (_, Some(_)) => {
            return Err(invalid(
                "job",
                "only media events (NAMESPACE_MEDIA) carry job progress",
            ));
        }
        (_, None) => {}
    }
    Ok((
        channels,
        Event {
            namespace: namespace as i32,
            r#type: request.r#type,
            payload,
            job: request.job,
            ..Event::default()
        },
    ))
}

/// Checks that `payload` reads back the same through every door, making it
/// so where it can: objects and arrays nested at most `levels` deep (itself
/// the first), numbers finite (NaN and the infinities have no JSON), and a
/// value of no kind (what pbjson makes of a JSON `null`) or an unknown
/// NullValue number stored as the null value it means (protobuf readers
/// refuse a Value with no kind). Walks at
/// most `levels` deep, so a hostile payload costs no deep recursion here.
fn normalize_payload(payload: &mut pbjson_types::Struct, levels: usize) -> Result<(), String> {
    use pbjson_types::{Value, value::Kind};
    fn check(value: &mut Value, levels: usize) -> Result<(), String> {
        match &mut value.kind {
            Some(Kind::StructValue(object)) => normalize_payload(object, levels),
            Some(Kind::ListValue(_)) if levels == 0 => Err(too_deep()),
            Some(Kind::ListValue(list)) => list
                .values
                .iter_mut()
                .try_for_each(|item| check(item, levels - 1)),
            Some(Kind::NumberValue(number)) if !number.is_finite() => {
                Err("numbers must be finite (JSON has no NaN or infinity)".into())
            }
            // No kind, or a NullValue enum number that is not NULL_VALUE
            // (proto3 enums are open): both mean null, and read back so.
            None | Some(Kind::NullValue(_)) => {
                value.kind = Some(Kind::NullValue(0));
                Ok(())
            }
            Some(_) => Ok(()),
        }
    }
    fn too_deep() -> String {
        format!("may nest objects and arrays at most {MAX_PAYLOAD_DEPTH} levels deep")
    }
    if levels == 0 {
        return Err(too_deep());
    }
    payload
        .fields
        .values_mut()
        .try_for_each(|item| check(item, levels - 1))
}

fn check_job(job: &JobProgress) -> Result<(), Status> {
    let id_chars = job.job_id.chars().count();
    if id_chars == 0 || id_chars > MAX_JOB_ID_CHARS {
        return Err(invalid("job.job_id", "must be 1 to 128 characters"));
    }
    match JobState::try_from(job.state) {
        Ok(JobState::Unspecified) | Err(_) => {
            return Err(invalid("job.state", "must be a job state"));
        }
        Ok(_) => {}
    }
    if !(0.0..=100.0).contains(&job.percent) {
        return Err(invalid("job.percent", "must be from 0 to 100"));
    }
    if job.message.chars().count() > MAX_JOB_MESSAGE_CHARS {
        return Err(invalid("job.message", "must be at most 1,024 characters"));
    }
    Ok(())
}

/// One checked subscription: channel, namespace filter, resume position.
type Wanted = (ChannelName, Vec<i32>, Option<StreamPosition>);

/// Checks a Subscribe request against what the caller may follow.
fn subscriptions(
    caller: &Caller,
    request: notification::SubscribeRequest,
) -> Result<Vec<Wanted>, Status> {
    if request.subscriptions.is_empty() {
        return match caller {
            Caller::User(user) => Ok(vec![(ChannelName::user(&user.user_id), Vec::new(), None)]),
            Caller::Service(_) => Err(invalid(
                "subscriptions",
                "a service must name the channels to follow",
            )),
        };
    }
    if request.subscriptions.len() > MAX_SUBSCRIPTIONS {
        return Err(invalid(
            "subscriptions",
            format!("at most {MAX_SUBSCRIPTIONS} channels per stream"),
        ));
    }
    let mut wanted: Vec<Wanted> = Vec::with_capacity(request.subscriptions.len());
    for (i, subscription) in request.subscriptions.into_iter().enumerate() {
        let name = channel(
            &format!("subscriptions[{i}].channel"),
            &subscription.channel,
        )?;
        if wanted.iter().any(|(seen, _, _)| *seen == name) {
            return Err(invalid(
                &format!("subscriptions[{i}].channel"),
                "follows a channel already in the list",
            ));
        }
        let filter = namespaces(
            &format!("subscriptions[{i}].namespaces"),
            &subscription.namespaces,
        )?;
        if let Some(resume) = &subscription.resume_from
            && resume.epoch.is_empty()
            && resume.offset != 0
        {
            return Err(invalid(
                &format!("subscriptions[{i}].resume_from.epoch"),
                "give the epoch of the position to resume from (only offset 0, before a channel's first event, has none)",
            ));
        }
        may_read(caller, &name)?;
        wanted.push((name, filter, subscription.resume_from));
    }
    Ok(wanted)
}

/// The page token of ListChannelEvents: the last offset and the epoch.
fn page_token(offset: u64, epoch: &str) -> String {
    format!("{offset}.{epoch}")
}

fn parse_page_token(token: &str) -> Result<StreamPosition, Status> {
    token
        .split_once('.')
        .and_then(|(offset, epoch)| {
            Some(StreamPosition {
                offset: offset.parse().ok()?,
                epoch: epoch.to_owned(),
            })
        })
        .filter(|position| !position.epoch.is_empty())
        .ok_or_else(|| invalid("page_token", "not a page token this server issued"))
}

/// The response stream of one feed: its items, a heartbeat when quiet for
/// `heartbeat`, and the status it ended with.
fn feed_stream(feed: Feed, heartbeat: Duration, clock: SharedClock) -> SubscribeStream {
    Box::pin(futures_util::stream::unfold(Some(feed), move |feed| {
        let clock = clock.clone();
        async move {
            let feed = feed?;
            let message = match tokio::time::timeout(heartbeat, feed.next()).await {
                Ok(Ok(Item::Subscribed(subscribed))) => {
                    subscribe_response::Message::Subscribed(subscribed)
                }
                Ok(Ok(Item::Event(event))) => {
                    subscribe_response::Message::Event(Arc::unwrap_or_clone(event))
                }
                Ok(Err(why)) => return Some((Err(why.into()), None)),
                Err(_) => subscribe_response::Message::Heartbeat(notification::Heartbeat {
                    time: Some(to_timestamp(clock.now())),
                }),
            };
            Some((
                Ok(SubscribeResponse {
                    message: Some(message),
                }),
                Some(feed),
            ))
        }
    }))
}

impl NotificationApi {
    /// The checks and the feed behind `Subscribe`, whichever way it is
    /// called: the caller (the one a WebSocket established when it signed
    /// in, while it is good, else by the call's credentials), the
    /// connection throttle (unless the bridge already admitted the
    /// connection), and every subscription started.
    async fn open_feed(
        &self,
        request: Request<notification::SubscribeRequest>,
    ) -> Result<Feed, Status> {
        let established = request
            .extensions()
            .get::<EstablishedCaller>()
            .and_then(|held| {
                self.identity
                    .auth
                    .established(held, self.identity.clock.now())
            });
        let caller = match established {
            Some(caller) => caller,
            None => self.caller(request.metadata()).await?,
        };
        let admitted = request.extensions().get::<Admitted>().is_some();
        let peer = ClientAddr::ip(request.extensions().get(), request.extensions().get());
        let wanted = subscriptions(&caller, request.into_inner())?;
        let session = match &caller {
            Caller::User(user) => {
                if !admitted {
                    self.gate.admit(peer, Some(&user.user_id)).await?;
                }
                Some((user.session.id.as_str(), user.session.expires_at))
            }
            Caller::Service(_) => None,
        };
        let mut feed = self.hub.open(session);
        for (channel, filter, resume_from) in wanted {
            feed.subscribe(channel, &filter, resume_from.as_ref())
                .await?;
        }
        Ok(feed)
    }
}

#[tonic::async_trait]
impl slop_context::SharedSubscribe for NotificationApi {
    async fn subscribe_shared(
        &self,
        request: Request<notification::SubscribeRequest>,
    ) -> Result<slop_context::DeliveryStream, Status> {
        let feed = self.open_feed(request).await?;
        Ok(shared_stream(feed))
    }
}

/// The bridge's stream of one feed: its items, events as they are shared
/// by every subscriber (no copy, no heartbeat), and the status it ended
/// with.
fn shared_stream(feed: Feed) -> slop_context::DeliveryStream {
    Box::pin(SharedStream(Some(feed)))
}

/// See [`shared_stream`]: a stream by hand rather than an `unfold`, since
/// every socket polls it for every event (and once more to wait).
struct SharedStream(Option<Feed>);

impl Stream for SharedStream {
    type Item = Result<slop_context::Delivery, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        use slop_context::Delivery;
        let Some(feed) = &self.0 else {
            return Poll::Ready(None);
        };
        let delivery = match std::task::ready!(feed.poll_next(cx)) {
            Ok(Item::Event(event)) => Delivery::Event(event),
            Ok(Item::Subscribed(subscribed)) => Delivery::Message(Box::new(SubscribeResponse {
                message: Some(subscribe_response::Message::Subscribed(subscribed)),
            })),
            Err(why) => {
                // The end is said once; the feed (and its subscriptions) go.
                self.0 = None;
                return Poll::Ready(Some(Err(why.into())));
            }
        };
        Poll::Ready(Some(Ok(delivery)))
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    type SubscribeStream = SubscribeStream;

    async fn publish(
        &self,
        request: Request<notification::PublishRequest>,
    ) -> Answer<notification::PublishResponse> {
        match self.caller(request.metadata()).await? {
            Caller::Service(_) => {}
            Caller::User(_) => {
                return Err(with_reason(
                    ErrorReason::ServiceRequired,
                    "only backend services (SERVICE_KEYS) may publish",
                ));
            }
        }
        let mut request = request.into_inner();
        let key = std::mem::take(&mut request.idempotency_key);
        let key = idempotency_key(&key)?;
        let (channels, event) = publication(request)?;
        let stored = self
            .hub
            .backend()
            .publish_once(&channels, &event, key)
            .await?;
        Ok(Response::new(notification::PublishResponse {
            events: stored
                .iter()
                .map(|stored| PublishedEvent {
                    channel: stored.event.channel.clone(),
                    position: Some(StreamPosition {
                        offset: stored.event.offset,
                        epoch: stored.event.epoch.clone(),
                    }),
                    duplicate: stored.duplicate,
                })
                .collect(),
        }))
    }

    async fn subscribe(
        &self,
        request: Request<notification::SubscribeRequest>,
    ) -> Answer<Self::SubscribeStream> {
        let feed = self.open_feed(request).await?;
        Ok(Response::new(feed_stream(
            feed,
            self.heartbeat,
            self.identity.clock.clone(),
        )))
    }

    async fn get_channel(
        &self,
        request: Request<notification::GetChannelRequest>,
    ) -> Answer<notification::GetChannelResponse> {
        let caller = self.caller(request.metadata()).await?;
        let name = channel("channel", &request.get_ref().channel)?;
        may_read(&caller, &name)?;
        let state = self.hub.backend().channel(&name).await?;
        Ok(Response::new(notification::GetChannelResponse {
            channel: Some(notification::Channel {
                name: name.to_string(),
                position: Some(StreamPosition {
                    offset: state.offset,
                    epoch: state.epoch,
                }),
                earliest_offset: state.earliest,
                history_size: i32::try_from(state.size).unwrap_or(i32::MAX),
            }),
        }))
    }

    async fn list_channel_events(
        &self,
        request: Request<notification::ListChannelEventsRequest>,
    ) -> Answer<notification::ListChannelEventsResponse> {
        let caller = self.caller(request.metadata()).await?;
        let request = request.into_inner();
        let name = channel("channel", &request.channel)?;
        let filter = namespaces("namespaces", &request.namespaces)?;
        let page_size = match request.page_size {
            n if n < 0 => return Err(invalid("page_size", "must not be negative")),
            0 => DEFAULT_PAGE,
            n => (n as usize).min(MAX_PAGE),
        };
        let after = if request.page_token.is_empty() {
            request.after
        } else {
            Some(parse_page_token(&request.page_token)?)
        };
        may_read(&caller, &name)?;

        let backend = self.hub.backend();
        let state = backend.channel(&name).await?;
        let (start, mut recovered) = match &after {
            None => (0, true),
            Some(p) if state.continues_from(p) => (p.offset, true),
            Some(_) => (0, false),
        };
        let retained = backend
            .read(&name, start, self.hub.history().max_events)
            .await?;
        if after.is_some()
            && start < state.offset
            && (retained.is_empty() || !contiguous_after(&retained, start))
        {
            recovered = false;
        }
        let mut matching = retained
            .into_iter()
            .filter(|event| filter.is_empty() || filter.contains(&event.namespace));
        let events: Vec<Event> = matching
            .by_ref()
            .take(page_size)
            .map(Arc::unwrap_or_clone)
            .collect();
        let next_page_token = match (events.last(), matching.next()) {
            (Some(last), Some(_)) => page_token(last.offset, &last.epoch),
            _ => String::new(),
        };
        Ok(Response::new(notification::ListChannelEventsResponse {
            events,
            next_page_token,
            recovered,
        }))
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt as _;

    fn request(channels: &[&str]) -> notification::PublishRequest {
        notification::PublishRequest {
            channels: channels.iter().map(|c| (*c).to_owned()).collect(),
            r#type: "comment.created".into(),
            ..Default::default()
        }
    }

    fn field_of(status: &Status) -> String {
        status
            .get_details_bad_request()
            .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
            .unwrap_or_default()
    }

    #[test]
    fn publications_are_checked_field_by_field() {
        let job = JobProgress {
            job_id: "j1".into(),
            state: JobState::Running as i32,
            percent: 50.0,
            message: String::new(),
        };
        let media = |job: Option<JobProgress>| notification::PublishRequest {
            namespace: Namespace::Media as i32,
            job,
            ..request(&["user:u1"])
        };
        let mut big = pbjson_types::Struct::default();
        big.fields.insert(
            "x".into(),
            pbjson_types::Value::from("a".repeat(MAX_PAYLOAD_BYTES)),
        );
        let cases = [
            (request(&[]), "channels"),
            (request(&["room:1"]), "channels[0]"),
            (request(&["topic:ok", "topic:NO"]), "channels[1]"),
            (
                notification::PublishRequest {
                    r#type: String::new(),
                    ..request(&["topic:a"])
                },
                "type",
            ),
            (
                notification::PublishRequest {
                    r#type: "has space".into(),
                    ..request(&["topic:a"])
                },
                "type",
            ),
            (
                notification::PublishRequest {
                    namespace: 9,
                    ..request(&["topic:a"])
                },
                "namespace",
            ),
            (
                notification::PublishRequest {
                    payload: Some(big),
                    ..request(&["topic:a"])
                },
                "payload",
            ),
            (media(None), "job"),
            (
                notification::PublishRequest {
                    job: Some(job.clone()),
                    ..request(&["user:u1"])
                },
                "job",
            ),
            (
                media(Some(JobProgress {
                    job_id: String::new(),
                    ..job.clone()
                })),
                "job.job_id",
            ),
            (
                media(Some(JobProgress {
                    state: 0,
                    ..job.clone()
                })),
                "job.state",
            ),
            (
                media(Some(JobProgress {
                    percent: 100.5,
                    ..job.clone()
                })),
                "job.percent",
            ),
            (
                media(Some(JobProgress {
                    percent: f64::NAN,
                    ..job.clone()
                })),
                "job.percent",
            ),
        ];
        for (request, field) in cases {
            let status = publication(request.clone()).expect_err(field);
            assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
            assert_eq!(field_of(&status), field, "{request:?}");
        }
        let (channels, event) = publication(media(Some(job))).unwrap();
        assert_eq!(channels, [ChannelName::user("u1")]);
        assert_eq!(event.namespace, Namespace::Media as i32);
    }

    /// A payload nested `depth` levels of objects (the payload itself is
    /// level 1).
    fn nested(depth: usize) -> pbjson_types::Struct {
        let mut payload = pbjson_types::Struct::default();
        payload
            .fields
            .insert("leaf".into(), pbjson_types::Value::from("x".to_string()));
        for _ in 1..depth {
            let mut outer = pbjson_types::Struct::default();
            outer.fields.insert(
                "inner".into(),
                pbjson_types::Value {
                    kind: Some(pbjson_types::value::Kind::StructValue(payload)),
                },
            );
            payload = outer;
        }
        payload
    }

    #[test]
    fn payloads_nested_deeper_than_every_reader_decodes_are_refused() {
        let with = |payload| notification::PublishRequest {
            payload: Some(payload),
            ..request(&["topic:a"])
        };
        for depth in [MAX_PAYLOAD_DEPTH + 1, 35, 200] {
            let status = publication(with(nested(depth))).expect_err("too deep");
            assert_eq!(status.code(), Code::InvalidArgument, "depth {depth}");
            assert_eq!(field_of(&status), "payload");
            assert!(status.message().contains("32"), "{}", status.message());
        }
        let mut list = pbjson_types::Struct::default();
        let mut value = pbjson_types::Value::from("x".to_string());
        for _ in 0..MAX_PAYLOAD_DEPTH {
            value = pbjson_types::Value {
                kind: Some(pbjson_types::value::Kind::ListValue(
                    pbjson_types::ListValue {
                        values: vec![value],
                    },
                )),
            };
        }
        list.fields.insert("deep".into(), value);
        assert_eq!(
            field_of(&publication(with(list)).unwrap_err()),
            "payload",
            "arrays count as levels too"
        );

        // The deepest payload allowed decodes wherever an event is read:
        // stored alone (Redis history), and inside a stream message.
        let (_, event) = publication(with(nested(MAX_PAYLOAD_DEPTH))).expect("deep enough");
        let event = Event {
            channel: "topic:a".into(),
            offset: 1,
            epoch: "e".into(),
            ..event
        };
        assert_eq!(
            Event::decode(event.encode_to_vec().as_slice()).unwrap(),
            event
        );
        let message = SubscribeResponse {
            message: Some(subscribe_response::Message::Event(event)),
        };
        assert_eq!(
            SubscribeResponse::decode(message.encode_to_vec().as_slice()).unwrap(),
            message
        );
    }

    #[test]
    fn payload_numbers_must_be_finite_and_nulls_are_null_values() {
        use pbjson_types::{Value, value::Kind};
        let with = |fields: Vec<(&str, Value)>| notification::PublishRequest {
            payload: Some(pbjson_types::Struct {
                fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            }),
            ..request(&["topic:a"])
        };
        // NaN and the infinities have no JSON: the event could not be sent
        // to any JSON door.
        for number in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let nested = Value {
                kind: Some(Kind::ListValue(pbjson_types::ListValue {
                    values: vec![Value::from(number)],
                })),
            };
            let status = publication(with(vec![("x", nested)])).unwrap_err();
            assert_eq!(field_of(&status), "payload", "{number}");
            assert!(status.message().contains("finite"), "{}", status.message());
        }
        // A value of no kind (what JSON null parses to) is stored as the
        // null it means: protobuf readers refuse a Value with no kind.
        let (_, event) = publication(with(vec![("gone", Value { kind: None })])).unwrap();
        assert_eq!(
            event.payload.unwrap().fields["gone"].kind,
            Some(Kind::NullValue(0))
        );
    }

    #[test]
    fn idempotency_keys_are_checked() {
        assert_eq!(idempotency_key("").unwrap(), None);
        for good in ["6f1c2d3e-1111-4a5b-9c8d-0123456789ab", "job:42/try=1", "a"] {
            assert_eq!(idempotency_key(good).unwrap(), Some(good));
        }
        let long = "k".repeat(MAX_IDEMPOTENCY_KEY_CHARS + 1);
        for bad in ["has space", "ünïcode", "new\nline", long.as_str()] {
            let status = idempotency_key(bad).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
            assert_eq!(field_of(&status), "idempotency_key");
        }
    }

    #[test]
    fn publishing_dedups_channels_and_defaults_the_namespace() {
        let (channels, event) = publication(request(&["topic:a", "user:u1", "topic:a"])).unwrap();
        assert_eq!(
            channels,
            [ChannelName::Topic("a".into()), ChannelName::user("u1")]
        );
        assert_eq!(event.namespace, Namespace::Notifications as i32);
        let too_many: Vec<String> = (0..=MAX_PUBLISH_CHANNELS)
            .map(|i| format!("user:u{i}"))
            .collect();
        let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
        assert_eq!(
            field_of(&publication(request(&refs)).unwrap_err()),
            "channels"
        );
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let token = page_token(42, "Ab-_9");
        let position = parse_page_token(&token).unwrap();
        assert_eq!((position.offset, position.epoch.as_str()), (42, "Ab-_9"));
        for bad in ["", "42", "x.ab", "42.", ".ab"] {
            assert_eq!(
                parse_page_token(bad).unwrap_err().code(),
                Code::InvalidArgument,
                "{bad:?}"
            );
        }
    }
}
