//! gRPC status → HTTP response, as grpc-gateway maps it, with the AIP-193
//! JSON body: `{"error": {"code", "message", "status", "details"}}`.
//!
//! The HTTP status follows from the gRPC code, except for the few reasons
//! of the contract (`slop.errors.v1.ErrorReason`) that HTTP has a sharper
//! status for ([`reason_http_status`]); docs/errors.md lists them all, and a
//! test holds it to this mapping. The bridge's own errors (routes, bodies)
//! are built here, from reasons of the contract too ([`with_reason`]).
//!
//! The conversion has no side effects: logging happens in the server's
//! request middleware, which sees the status code of every response.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use slop_api::errors::{DOMAIN, ErrorReason};
use tonic::{Code, Status};
use tonic_types::{ErrorDetail, ErrorDetails, StatusExt as _};

/// What callers see instead of the message of an internal error; the real
/// one is in the server's log under the request id.
pub const INTERNAL_MESSAGE: &str =
    "internal error; the server log has the details under this request's x-request-id";

/// A gRPC status answered over HTTP.
#[derive(Debug)]
pub struct ApiError(pub Status);

impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        Self(status)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        status_response(response_status(&self.0), &self.0)
    }
}

/// The HTTP status a front door answers `status` with: its reason's
/// ([`reason_http_status`]) when it has one of the contract, else its
/// code's ([`http_status`]).
pub fn response_status(status: &Status) -> StatusCode {
    match reason(status) {
        Some(reason) => reason_http_status(reason),
        None => http_status(status.code()),
    }
}

/// The HTTP status of an error with `reason`: its code's, but where HTTP
/// has a status that says more (405, 408, 413).
pub fn reason_http_status(reason: ErrorReason) -> StatusCode {
    match reason {
        ErrorReason::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorReason::RequestBodyTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorReason::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        other => http_status(other.code()),
    }
}

/// An error of the bridge's own with `reason` (whose code it takes) and
/// `ErrorInfo` `metadata`.
pub fn with_reason(
    reason: ErrorReason,
    message: impl Into<String>,
    metadata: impl Into<std::collections::HashMap<String, String>>,
) -> Status {
    Status::with_error_details(
        reason.code(),
        message,
        ErrorDetails::with_error_info(reason.as_str_name(), DOMAIN, metadata),
    )
}

/// The HTTP status for a gRPC code (the grpc-gateway table).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The canonical name of a gRPC code, as in `google.rpc.Code`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The AIP-193 response for `status`, sent with the given HTTP status.
pub fn status_response(http: StatusCode, status: &Status) -> Response {
    let mut response = (http, Json(error_body(http, status))).into_response();
    let headers = response.headers_mut();
    if status.code() == Code::Unauthenticated {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"slop\""),
        );
    }
    if let Some(seconds) = retry_after_seconds(status) {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The AIP-193 body for `status`: `{"error": {code, message, status,
/// details}}`, with `code` the HTTP status. Server-Sent Events end with it
/// too, as the data of their final `error` event.
pub fn error_body(http: StatusCode, status: &Status) -> Value {
    json!({
        "error": {
            "code": http.as_u16(),
            "message": public_message(status),
            "status": code_name(status.code()),
            "details": public_details(status),
        }
    })
}

/// Whether the status hides its message and details from the caller.
fn is_internal(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unknown | Code::Internal | Code::DataLoss
    )
}

/// The message a caller may see: the status's own, or for an internal
/// error [`INTERNAL_MESSAGE`].
pub fn public_message(status: &Status) -> &str {
    if is_internal(status) {
        INTERNAL_MESSAGE
    } else {
        status.message()
    }
}

/// The google.rpc details a caller may see, as proto3 JSON (none for an
/// internal error).
pub fn public_details(status: &Status) -> Vec<Value> {
    if is_internal(status) {
        return Vec::new();
    }
    status
        .get_error_details_vec()
        .iter()
        .filter_map(detail_json)
        .collect()
}

/// The wait a `RetryInfo` detail asks for, if the status has one.
pub fn retry_delay(status: &Status) -> Option<std::time::Duration> {
    status.get_error_details_vec().iter().find_map(|d| match d {
        ErrorDetail::RetryInfo(info) => info.retry_delay,
        _ => None,
    })
}

/// [`retry_delay`] in whole seconds, rounded up: telling a client to come
/// back early only earns it another refusal.
pub fn retry_after_seconds(status: &Status) -> Option<u64> {
    retry_delay(status).map(|delay| delay.as_secs() + u64::from(delay.subsec_nanos() > 0))
}

/// The reason of the status's `ErrorInfo` detail, if it has one of the
/// contract's (in the API's domain).
pub fn reason(status: &Status) -> Option<ErrorReason> {
    status
        .get_error_details()
        .error_info()
        .filter(|info| info.domain == DOMAIN)
        .and_then(|info| ErrorReason::from_str_name(&info.reason))
}

/// The proto3 JSON of one google.rpc detail message; DebugInfo and
/// RequestInfo are internal and never shown.
fn detail_json(detail: &ErrorDetail) -> Option<Value> {
    Some(match detail {
        ErrorDetail::ErrorInfo(info) => json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": info.reason,
            "domain": info.domain,
            "metadata": info.metadata,
        }),
        ErrorDetail::BadRequest(bad) => json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": bad.field_violations.iter().map(|v| json!({
                "field": v.field,
                "description": v.description,
            })).collect::<Vec<_>>(),
        }),
        ErrorDetail::RetryInfo(info) => json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": info.retry_delay.map(|d| format!("{}.{:09}s", d.as_secs(), d.subsec_nanos())),
        }),
        ErrorDetail::QuotaFailure(quota) => json!({
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": quota.violations.iter().map(|v| json!({
                "subject": v.subject,
                "description": v.description,
            })).collect::<Vec<_>>(),
        }),
        ErrorDetail::PreconditionFailure(failure) => json!({
            "@type": "type.googleapis.com/google.rpc.PreconditionFailure",
            "violations": failure.violations.iter().map(|v| json!({
                "type": v.r#type,
                "subject": v.subject,
                "description": v.description,
            })).collect::<Vec<_>>(),
        }),
        ErrorDetail::ResourceInfo(info) => json!({
            "@type": "type.googleapis.com/google.rpc.ResourceInfo",
            "resourceType": info.resource_type,
            "resourceName": info.resource_name,
            "description": info.description,
        }),
        ErrorDetail::Help(help) => json!({
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": help.links.iter().map(|l| json!({
                "description": l.description,
                "url": l.url,
            })).collect::<Vec<_>>(),
        }),
        ErrorDetail::LocalizedMessage(message) => json!({
            "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
            "locale": message.locale,
            "message": message.message,
        }),
        // DebugInfo and RequestInfo are internal; detail kinds added to the
        // enum later are not shown until someone maps them here.
        _ => return None,
    })
}

/// The error every front door gives a path it does not serve.
pub fn route_not_found(method: &http::Method, path: &str) -> Response {
    ApiError(with_reason(
        ErrorReason::RouteNotFound,
        format!("no route for {method} {path}; the REST API lives under /api/v1"),
        [],
    ))
    .into_response()
}

/// The error for a known path called with a method it does not take: 405,
/// and UNIMPLEMENTED (the path has no such operation; nothing is wrong with
/// the request's data).
pub fn method_not_allowed(method: &http::Method, path: &str) -> Response {
    ApiError(with_reason(
        ErrorReason::MethodNotAllowed,
        format!("{path} does not take {method}"),
        [],
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn not_found_is_404_with_aip_193_body() {
        let response = ApiError(with_reason(
            ErrorReason::SessionNotFound,
            "session abc not found",
            [],
        ))
        .into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = body_json(response).await;
        assert_eq!(body["error"]["code"], 404);
        assert_eq!(body["error"]["status"], "NOT_FOUND");
        assert_eq!(body["error"]["message"], "session abc not found");
        assert_eq!(body["error"]["details"][0]["reason"], "SESSION_NOT_FOUND");
        assert_eq!(body["error"]["details"][0]["domain"], "slop.studio");
        assert_eq!(
            body["error"]["details"][0]["@type"],
            "type.googleapis.com/google.rpc.ErrorInfo"
        );
    }

    #[test]
    fn reasons_http_has_a_sharper_status_for_keep_it_wherever_they_go() {
        let too_large = with_reason(ErrorReason::RequestTooLarge, "too large", []);
        assert_eq!(too_large.code(), Code::InvalidArgument);
        assert_eq!(response_status(&too_large), StatusCode::PAYLOAD_TOO_LARGE);
        let ended = with_reason(ErrorReason::SessionEnded, "log in again", []);
        assert_eq!(response_status(&ended), StatusCode::UNAUTHORIZED);
        // A reason of another domain is not ours to read.
        let foreign = Status::with_error_details(
            Code::InvalidArgument,
            "too large",
            ErrorDetails::with_error_info("REQUEST_TOO_LARGE", "example.com", []),
        );
        assert_eq!(reason(&foreign), None);
        assert_eq!(response_status(&foreign), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn unauthenticated_asks_for_a_bearer_token() {
        let response = ApiError(Status::unauthenticated("missing credentials")).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"slop\""
        );
    }

    #[tokio::test]
    async fn bad_requests_list_their_fields() {
        let response = ApiError(Status::with_error_details(
            Code::InvalidArgument,
            "invalid request",
            ErrorDetails::with_bad_request_violation("email", "must not be empty"),
        ))
        .into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = body_json(response).await;
        assert_eq!(
            body["error"]["details"][0]["fieldViolations"][0]["field"],
            "email"
        );
    }

    #[tokio::test]
    async fn rate_limits_say_when_to_retry() {
        let response = ApiError(Status::with_error_details(
            Code::ResourceExhausted,
            "too many connections",
            ErrorDetails::with_retry_info(Some(std::time::Duration::from_millis(2500))),
        ))
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    }

    #[tokio::test]
    async fn internal_errors_hide_their_message() {
        let response = ApiError(Status::internal("connection to 10.0.0.7 refused")).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_json(response).await;
        assert_eq!(body["error"]["message"], INTERNAL_MESSAGE);
        assert_eq!(body["error"]["status"], "INTERNAL");
    }

    #[test]
    fn every_code_maps_like_grpc_gateway() {
        assert_eq!(http_status(Code::Cancelled).as_u16(), 499);
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(http_status(Code::Aborted), StatusCode::CONFLICT);
        assert_eq!(
            http_status(Code::DeadlineExceeded),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            http_status(Code::Unimplemented),
            StatusCode::NOT_IMPLEMENTED
        );
    }
}
