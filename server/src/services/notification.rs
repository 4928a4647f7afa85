//! `slop.notification.v1.NotificationService`.
//!
//! Not served yet: every RPC answers UNIMPLEMENTED with a message naming it
//! (notification streams are issue #4).

use std::pin::Pin;

use futures_util::Stream;
use slop_api::notification::{self, notification_service_server::NotificationService};
use tonic::{Request, Status};

use super::Answer;

/// `slop.notification.v1.NotificationService`.
#[derive(Debug, Default, Clone)]
pub struct NotificationApi;

fn not_served(method: &str) -> Status {
    Status::unimplemented(format!("{method} is not served by this server version yet"))
}

/// The stream type of `Subscribe`.
pub type SubscribeStream =
    Pin<Box<dyn Stream<Item = Result<notification::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    type SubscribeStream = SubscribeStream;

    async fn publish(
        &self,
        _: Request<notification::PublishRequest>,
    ) -> Answer<notification::PublishResponse> {
        Err(not_served(
            "slop.notification.v1.NotificationService/Publish",
        ))
    }
    async fn subscribe(
        &self,
        _: Request<notification::SubscribeRequest>,
    ) -> Answer<Self::SubscribeStream> {
        Err(not_served(
            "slop.notification.v1.NotificationService/Subscribe",
        ))
    }
    async fn get_channel(
        &self,
        _: Request<notification::GetChannelRequest>,
    ) -> Answer<notification::GetChannelResponse> {
        Err(not_served(
            "slop.notification.v1.NotificationService/GetChannel",
        ))
    }
    async fn list_channel_events(
        &self,
        _: Request<notification::ListChannelEventsRequest>,
    ) -> Answer<notification::ListChannelEventsResponse> {
        Err(not_served(
            "slop.notification.v1.NotificationService/ListChannelEvents",
        ))
    }
}
