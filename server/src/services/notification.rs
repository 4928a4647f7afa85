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
    status::{OrInvalid as _, invalid, with_reason},
};
use crate::{
    identity::Identity,
    identity::caller::{Access, Caller},
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

mod gate;
mod requests;

pub use gate::StreamGate;
use requests::*;

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
        Ok(self
            .identity
            .auth
            .caller(&super::credentials(metadata), Access::Read)
            .await?)
    }
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
        let (metadata, extensions, message) = request.into_parts();
        // The caller a socket established when it signed in, while it is
        // good; else the call's credentials.
        let established = extensions.get::<EstablishedCaller>().and_then(|held| {
            self.identity
                .auth
                .established(held, self.identity.clock.now())
        });
        let authenticated;
        let (reader, session) = match established {
            Some(user) => (
                Reader::User(user.user_id()),
                Some((user.session_id(), user.session_expires_at())),
            ),
            None => {
                authenticated = self.caller(&metadata).await?;
                let session = match &authenticated {
                    Caller::User(user) => Some((user.session.id.as_str(), user.session.expires_at)),
                    Caller::Service(_) => None,
                };
                (Reader::from(&authenticated), session)
            }
        };
        let wanted = subscriptions(reader, message)?;
        if let Reader::User(user_id) = reader
            && extensions.get::<Admitted>().is_none()
        {
            let peer = ClientAddr::ip(extensions.get(), extensions.get());
            self.gate.admit(peer, Some(user_id)).await?;
        }
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
        may_read((&caller).into(), &name)?;
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
        may_read((&caller).into(), &name)?;

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
