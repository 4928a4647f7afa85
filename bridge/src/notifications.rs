//! REST routes of `slop.notification.v1.NotificationService`, where their
//! `google.api.http` bindings put them:
//!
//! | route | RPC |
//! | --- | --- |
//! | `POST /api/v1/notifications` (body: `PublishRequest`) | Publish |
//! | `GET /api/v1/notifications/channels/{channel}` | GetChannel |
//! | `GET /api/v1/notifications/channels/{channel}/events` | ListChannelEvents |
//!
//! The history route takes its request in the query: `after_offset` and
//! `after_epoch` (the position to read after; either one alone is passed on
//! as given, for the service to judge), `namespace` (repeatable, or
//! comma-separated; `notifications`, `media` or the enum names), `page_size`
//! and `page_token`. camelCase spellings are accepted too. The stream itself
//! is in [`crate::sse`].

use axum::{
    Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    response::{IntoResponse, Response},
    routing::on,
};
use slop_api::notification::{self, Namespace};
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt as _};

use slop_context::Notifications;

use crate::{
    Operation,
    error::ApiError,
    rest::{Call, answer},
};

/// The REST operations of notifications (not the stream: [`crate::sse`]),
/// routed where their bindings say ([`crate::bound`]).
pub(crate) const OPERATIONS: &[Operation<Notifications>] = &[
    (
        "/slop.notification.v1.NotificationService/Publish",
        |method| on(method, publish),
    ),
    (
        "/slop.notification.v1.NotificationService/GetChannel",
        |method| on(method, get_channel),
    ),
    (
        "/slop.notification.v1.NotificationService/ListChannelEvents",
        |method| on(method, list_channel_events),
    ),
];

/// The REST routes of notifications (not the stream: [`crate::sse`]).
pub fn router(notifications: Notifications) -> Router {
    crate::bound(OPERATIONS).with_state(notifications)
}

async fn publish(State(notifications): State<Notifications>, call: Call) -> Response {
    call.body_call(|r| async move { notifications.publish(r).await })
        .await
}

async fn get_channel(
    State(notifications): State<Notifications>,
    Path(channel): Path<String>,
    call: Call,
) -> Response {
    let request = notification::GetChannelRequest { channel };
    answer(notifications.get_channel(call.request(request)).await)
}

async fn list_channel_events(
    State(notifications): State<Notifications>,
    Path(channel): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    call: Call,
) -> Response {
    let request = match history_request(channel, query) {
        Ok(request) => request,
        Err(status) => return ApiError(status).into_response(),
    };
    answer(
        notifications
            .list_channel_events(call.request(request))
            .await,
    )
}

/// The ListChannelEvents request a history query asks for.
fn history_request(
    channel: String,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<notification::ListChannelEventsRequest, Status> {
    let mut params = QueryParams::new(query)?;
    let after_offset = params.one(&["after_offset", "afterOffset"])?;
    let after_epoch = params.one(&["after_epoch", "afterEpoch"])?;
    let namespaces = parse_namespaces(params.all(&["namespace", "namespaces"]))?;
    let page_size = params.one(&["page_size", "pageSize"])?;
    let page_token = params.one(&["page_token", "pageToken"])?;
    params.finish("after_offset, after_epoch, namespace, page_size, page_token")?;

    let after = match (after_offset, after_epoch) {
        (None, None) => None,
        (offset, epoch) => Some(notification::StreamPosition {
            offset: match offset {
                Some(offset) => offset.parse().map_err(|_| {
                    bad_parameter("after_offset", "must be a whole number of 0 or more")
                })?,
                None => 0,
            },
            epoch: epoch.unwrap_or_default(),
        }),
    };
    let page_size = match page_size {
        Some(size) => size
            .parse()
            .map_err(|_| bad_parameter("page_size", "must be a whole number"))?,
        None => 0,
    };
    Ok(notification::ListChannelEventsRequest {
        channel,
        after,
        namespaces,
        page_size,
        page_token: page_token.unwrap_or_default(),
    })
}

/// INVALID_ARGUMENT naming a query parameter.
pub(crate) fn bad_parameter(name: &str, why: &str) -> Status {
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("query parameter {name}: {why}"),
        ErrorDetails::with_bad_request_violation(name, why),
    )
}

/// Namespaces from query values: `notifications`, `media`, or the enum
/// names (`NAMESPACE_MEDIA`), repeated or comma-separated.
pub(crate) fn parse_namespaces(values: Vec<String>) -> Result<Vec<i32>, Status> {
    let mut namespaces = Vec::new();
    for name in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
        if name.is_empty() {
            continue;
        }
        let namespace = match name.to_ascii_lowercase().as_str() {
            "notifications" => Namespace::Notifications,
            "media" => Namespace::Media,
            _ => Namespace::from_str_name(name)
                .filter(|n| *n != Namespace::Unspecified)
                .ok_or_else(|| bad_parameter("namespace", "must be `notifications` or `media`"))?,
        };
        namespaces.push(namespace as i32);
    }
    Ok(namespaces)
}

/// A route's query parameters, taken by name; whatever no one takes is an
/// error, so a misspelt parameter is not silently ignored.
pub(crate) struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    /// The parameters of a query, or INVALID_ARGUMENT when it does not parse.
    pub(crate) fn new(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    ) -> Result<Self, Status> {
        match query {
            Ok(Query(pairs)) => Ok(Self(pairs)),
            Err(rejection) => Err(Status::invalid_argument(rejection.body_text())),
        }
    }

    /// Every value of a parameter spelt any of `names`.
    pub(crate) fn all(&mut self, names: &[&str]) -> Vec<String> {
        let mut values = Vec::new();
        self.0.retain(|(name, value)| {
            let wanted = names.contains(&name.as_str());
            if wanted {
                values.push(value.clone());
            }
            !wanted
        });
        values
    }

    /// The value of a parameter given at most once.
    pub(crate) fn one(&mut self, names: &[&str]) -> Result<Option<String>, Status> {
        let mut values = self.all(names);
        if values.len() > 1 {
            return Err(bad_parameter(names[0], "must be given at most once"));
        }
        Ok(values.pop())
    }

    /// INVALID_ARGUMENT naming the first parameter nobody took.
    pub(crate) fn finish(self, accepted: &str) -> Result<(), Status> {
        match self.0.first() {
            None => Ok(()),
            Some((name, _)) => Err(bad_parameter(
                name,
                &format!("not a parameter of this route, which takes {accepted}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Result<Query<Vec<(String, String)>>, QueryRejection> {
        Ok(Query(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ))
    }

    #[test]
    fn history_queries_become_the_request() {
        let request = history_request(
            "topic:news".into(),
            query(&[
                ("afterOffset", "42"),
                ("after_epoch", "e1"),
                ("namespace", "media,notifications"),
                ("namespace", "NAMESPACE_MEDIA"),
                ("page_size", "10"),
                ("pageToken", "t"),
            ]),
        )
        .unwrap();
        assert_eq!(request.channel, "topic:news");
        assert_eq!(
            request.after,
            Some(notification::StreamPosition {
                offset: 42,
                epoch: "e1".into()
            })
        );
        assert_eq!(
            request.namespaces,
            [
                Namespace::Media as i32,
                Namespace::Notifications as i32,
                Namespace::Media as i32
            ]
        );
        assert_eq!(request.page_size, 10);
        assert_eq!(request.page_token, "t");

        let request = history_request("topic:news".into(), query(&[])).unwrap();
        assert_eq!(request.after, None);
        assert_eq!(request.page_size, 0);
    }

    #[test]
    fn bad_history_queries_are_invalid_arguments() {
        for pairs in [
            &[("after_offset", "-1")][..],
            &[("page_size", "ten")],
            &[("namespace", "chat")],
            &[("page_size", "1"), ("pageSize", "2")],
            &[("cursor", "x")],
        ] {
            let status = history_request("topic:news".into(), query(pairs)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{pairs:?}");
        }
    }
}
