//! REST under `/api/v1`: each route turns its JSON (the canonical proto3 JSON
//! of the request message) into the proto request, calls the service trait
//! method a gRPC client would reach, with the credentials and correlation
//! headers ([`FORWARDED_HEADERS`]) as request metadata, and answers the
//! response message as JSON, or the status as an AIP-193 error.

use std::{collections::HashSet, future::Future, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{FromRequest, Path, Query, Request, State},
    response::{IntoResponse, Response},
    routing::on,
};
use http::{StatusCode, header};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use slop_api::{
    auth::{self, auth_service_server::AuthService},
    session::{self, session_service_server::SessionService},
};
use tonic::{Code, Status, metadata::MetadataMap};

use crate::{Operation, error::ApiError};

/// Signs browsers in and out with cookies, for the REST login's
/// `?cookie=true` and the logout after it. The server implements it: the
/// cookies carry MACs made with its APP_SECRET. Only these two REST
/// handlers call it, so cookies are a matter of the HTTP side alone: no
/// gRPC call, and no header a client sends, makes the services set one.
pub trait SessionCookies: Send + Sync {
    /// The `Set-Cookie` values that sign a browser in to `session_id`: the
    /// HttpOnly session cookie and the CSRF cookie the page echoes.
    fn sign_in(&self, session_id: &str) -> Vec<String>;
    /// The `Set-Cookie` values that sign a browser out.
    fn sign_out(&self) -> Vec<String>;
}

/// The request headers a REST or SSE call hands the service as metadata,
/// as grpc-gateway forwards only what it maps: the credentials (bearer,
/// session cookie and CSRF token), the client's description, and what
/// correlates the call (request id, W3C trace context). Nothing else a
/// client sends reaches a service, so no header the server sets for itself
/// can be forged by one, and hop-by-hop or proxy headers never look like
/// call metadata.
pub const FORWARDED_HEADERS: [header::HeaderName; 7] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::HeaderName::from_static("x-csrf-token"),
    header::USER_AGENT,
    header::HeaderName::from_static("x-request-id"),
    header::HeaderName::from_static("traceparent"),
    header::HeaderName::from_static("tracestate"),
];

/// The metadata of a call made for an HTTP request: its
/// [`FORWARDED_HEADERS`], every value of each.
pub fn call_metadata(headers: &http::HeaderMap) -> MetadataMap {
    let mut forwarded = http::HeaderMap::with_capacity(FORWARDED_HEADERS.len());
    for name in &FORWARDED_HEADERS {
        for value in headers.get_all(name) {
            forwarded.append(name, value.clone());
        }
    }
    MetadataMap::from_headers(forwarded)
}

/// The largest JSON body accepted.
const MAX_BODY: usize = 64 * 1024;

/// The services the REST routes call.
#[derive(Clone)]
pub struct Services {
    /// `slop.auth.v1.AuthService`.
    pub auth: Arc<dyn AuthService>,
    /// `slop.session.v1.SessionService`.
    pub sessions: Arc<dyn SessionService>,
    /// The cookies of browser sign-in, which the REST login and logout set
    /// and clear around the service's Login and Logout.
    pub cookies: Arc<dyn SessionCookies>,
    /// `slop.notification.v1.NotificationService`: its REST routes
    /// ([`crate::notifications`]), Server-Sent Events ([`crate::sse`]) and
    /// the subscriptions of WebSockets ([`crate::ws`]).
    pub notifications: slop_context::Notifications,
}

/// The REST operations of accounts and sessions, routed where their
/// `google.api.http` bindings say ([`crate::bound`]).
pub(crate) const OPERATIONS: &[Operation<Arc<Services>>] = &[
    ("/slop.auth.v1.AuthService/Register", |m| on(m, register)),
    ("/slop.auth.v1.AuthService/Login", |m| on(m, login)),
    ("/slop.auth.v1.AuthService/RefreshToken", |m| on(m, refresh)),
    ("/slop.auth.v1.AuthService/Logout", |m| on(m, logout)),
    ("/slop.auth.v1.AuthService/GetCurrentUser", |m| on(m, me)),
    ("/slop.auth.v1.AuthService/UpdateCurrentUser", |m| {
        on(m, update_me)
    }),
    ("/slop.auth.v1.AuthService/ChangePassword", |m| {
        on(m, change_password)
    }),
    ("/slop.auth.v1.AuthService/RequestPasswordReset", |m| {
        on(m, request_password_reset)
    }),
    ("/slop.auth.v1.AuthService/ResetPassword", |m| {
        on(m, reset_password)
    }),
    ("/slop.auth.v1.AuthService/ValidateToken", |m| {
        on(m, validate)
    }),
    ("/slop.session.v1.SessionService/GetSession", |m| {
        on(m, get_session)
    }),
    ("/slop.session.v1.SessionService/ListSessions", |m| {
        on(m, list_sessions)
    }),
    ("/slop.session.v1.SessionService/RevokeSession", |m| {
        on(m, revoke_session)
    }),
    ("/slop.session.v1.SessionService/RevokeOtherSessions", |m| {
        on(m, revoke_other_sessions)
    }),
    ("/slop.session.v1.SessionService/RevokeUserSessions", |m| {
        on(m, revoke_user_sessions)
    }),
];

/// The REST routes of accounts and sessions.
pub fn router(services: Services) -> Router {
    crate::bound(OPERATIONS)
        // One reference count per request, not one per service.
        .with_state(Arc::new(services))
}

/// An incoming REST call: its headers become gRPC metadata, its extensions
/// (the peer address) carry over, and its body is the request message.
pub struct Call {
    metadata: MetadataMap,
    extensions: http::Extensions,
    body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Call {
    type Rejection = Response;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let body = read_body(&parts.headers, body).await?;
        if !body.iter().all(u8::is_ascii_whitespace) && !is_json(&parts.headers) {
            return Err(unsupported_media_type());
        }
        Ok(Self {
            metadata: call_metadata(&parts.headers),
            extensions: parts.extensions,
            body,
        })
    }
}

/// Reads a REST body of at most [`MAX_BODY`] bytes: one announced larger is
/// refused from its `content-length` before any of it is read, and a
/// chunked one as soon as it passes the limit, so no more than that is
/// ever buffered (axum's own limit, 2 MB, never applies).
async fn read_body(headers: &http::HeaderMap, body: axum::body::Body) -> Result<Bytes, Response> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if announced.is_some_and(|length| length > MAX_BODY as u64) {
        return Err(too_large());
    }
    match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_BODY)).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => Err(unreadable_body(error.as_ref())),
    }
}

/// 413 with the AIP-193 body: INVALID_ARGUMENT, as for any request the
/// caller must change before sending it again.
fn too_large() -> Response {
    ApiError(crate::error::with_reason(
        slop_api::errors::ErrorReason::RequestTooLarge,
        format!("the request body is larger than {MAX_BODY} bytes"),
        [("limit_bytes".to_owned(), MAX_BODY.to_string())],
    ))
    .into_response()
}

/// Why a body could not be read: the status the server's transport put in
/// the error (DEADLINE_EXCEEDED when it did not arrive in time: 408), else
/// the client broke it off or sent malformed framing.
fn unreadable_body(error: &(dyn std::error::Error + 'static)) -> Response {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(status) = error.downcast_ref::<Status>() {
            if status.code() == Code::DeadlineExceeded {
                return crate::error::status_response(StatusCode::REQUEST_TIMEOUT, status);
            }
            return ApiError(status.clone()).into_response();
        }
        source = error.source();
    }
    ApiError(Status::invalid_argument(format!(
        "the request body could not be read: {error}"
    )))
    .into_response()
}

/// Whether the request says its body is JSON (`application/json`, with or
/// without parameters, or an `application/*+json` type). Only such bodies
/// are read: a cross-site HTML form can send `text/plain`,
/// `application/x-www-form-urlencoded` or `multipart/form-data` without a
/// CORS preflight, and a JSON parser that read those would let it log a
/// browser into an account of the attacker's (login CSRF).
fn is_json(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

/// 415 for a body that is not JSON.
fn unsupported_media_type() -> Response {
    let status = Status::new(
        Code::InvalidArgument,
        "the request body must be JSON: send it with `content-type: application/json`",
    );
    crate::error::status_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, &status)
}

impl Call {
    /// The body as the request message; an empty body is the empty message.
    pub(crate) fn message<T: DeserializeOwned + Default>(&self) -> Result<T, Status> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        serde_json::from_slice(&self.body).map_err(|error| {
            Status::new(
                Code::InvalidArgument,
                format!("the request body is not the JSON this operation takes: {error}"),
            )
        })
    }

    /// The service request: the call's metadata and extensions with `message`.
    pub(crate) fn request<T>(self, message: T) -> tonic::Request<T> {
        tonic::Request::from_parts(self.metadata, self.extensions, message)
    }

    /// Calls a service method with the body as its message.
    pub(crate) async fn body_call<T, R, F, Fut>(self, method: F) -> Response
    where
        T: DeserializeOwned + Default,
        R: Serialize,
        F: FnOnce(tonic::Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        match self.message::<T>() {
            Ok(message) => answer(method(self.request(message)).await),
            Err(status) => ApiError(status).into_response(),
        }
    }
}

/// The headers a REST answer ends up with: its content type and cache
/// control, the server's security headers, the request id and CORS's
/// `Vary`, with room to spare. The map is made this size at once, not
/// grown twice on the way out.
const ANSWER_HEADERS: usize = 20;

/// `message` as the JSON body of a response with `status`.
pub(crate) fn json_response<R: Serialize + ?Sized>(status: StatusCode, message: &R) -> Response {
    match slop_api::json::to_vec(message) {
        Ok(body) => {
            let mut response = Response::new(axum::body::Body::from(body));
            *response.status_mut() = status;
            let headers = response.headers_mut();
            *headers = http::HeaderMap::with_capacity(ANSWER_HEADERS);
            headers.insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => ApiError(Status::internal(format!(
            "the answer did not encode as JSON: {error}"
        )))
        .into_response(),
    }
}

/// The JSON answer of a service call.
pub(crate) fn answer<R: Serialize>(result: Result<tonic::Response<R>, Status>) -> Response {
    match result {
        Ok(response) => {
            let mut response = json_response(StatusCode::OK, response.get_ref());
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            response
        }
        Err(status) => ApiError(status).into_response(),
    }
}

async fn register(State(s): State<Arc<Services>>, call: Call) -> Response {
    call.body_call(|r| async move { s.auth.register(r).await })
        .await
}

/// `?cookie=true` on login: session cookies, and a body without the refresh
/// token (script on the page must not read what HttpOnly hides), and without
/// the access token unless `access_token=true` asks for it.
#[derive(Debug, Default, Deserialize)]
struct LoginQuery {
    #[serde(default)]
    cookie: bool,
    #[serde(default, alias = "accessToken")]
    access_token: bool,
}

async fn login(
    State(s): State<Arc<Services>>,
    Query(query): Query<LoginQuery>,
    call: Call,
) -> Response {
    let message = match call.message::<auth::LoginRequest>() {
        Ok(message) => message,
        Err(status) => return ApiError(status).into_response(),
    };
    let result = s.auth.login(call.request(message)).await;
    if !query.cookie {
        return answer(result);
    }
    let mut login = match result {
        Ok(response) => response.into_inner(),
        Err(status) => return ApiError(status).into_response(),
    };
    let cookies = s.cookies.sign_in(&login.session_id);
    // The cookies are the session: the refresh token never reaches the
    // page, whose script could read it from the body.
    login.tokens = login
        .tokens
        .filter(|_| query.access_token)
        .map(|tokens| auth::TokenPair {
            refresh_token: String::new(),
            refresh_token_expires_in: None,
            ..tokens
        });
    with_cookies(answer(Ok(tonic::Response::new(login))), cookies)
}

async fn refresh(State(s): State<Arc<Services>>, call: Call) -> Response {
    call.body_call(|r| async move { s.auth.refresh_token(r).await })
        .await
}

/// Logout; a browser signed in by cookie is signed out of it too. Which
/// session ends is the service's to say, as for every credential: the
/// refresh token in the body, else the bearer token, else the session
/// cookie. The cookies are cleared when the cookie is the credential, or
/// comes with a refresh token (the page logs out its own session).
async fn logout(State(s): State<Arc<Services>>, call: Call) -> Response {
    let message = match call.message::<auth::LogoutRequest>() {
        Ok(message) => message,
        Err(status) => return ApiError(status).into_response(),
    };
    let cookies = call.metadata.get_all(header::COOKIE.as_str());
    // A logout sent with the session cookie signs the browser out.
    let by_cookie = slop_context::cookie(
        cookies.iter().filter_map(|value| value.to_str().ok()),
        slop_context::SESSION_COOKIE,
    )
    .is_some()
        && (!message.refresh_token.is_empty()
            || !call.metadata.contains_key(header::AUTHORIZATION.as_str()));
    let response = answer(s.auth.logout(call.request(message)).await);
    if by_cookie && response.status().is_success() {
        with_cookies(response, s.cookies.sign_out())
    } else {
        response
    }
}

/// `response` with `Set-Cookie` headers; 500 if a cookie is not a header
/// value (it is made of base64url and fixed attributes, so it always is).
fn with_cookies(mut response: Response, cookies: Vec<String>) -> Response {
    for cookie in cookies {
        match http::HeaderValue::try_from(cookie) {
            Ok(value) => {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            Err(_) => {
                return ApiError(Status::internal("a cookie is not a header value"))
                    .into_response();
            }
        }
    }
    response
}

async fn me(State(s): State<Arc<Services>>, call: Call) -> Response {
    answer(
        s.auth
            .get_current_user(call.request(auth::GetCurrentUserRequest {}))
            .await,
    )
}

/// `PATCH /api/v1/auth/me`, in either of two forms:
/// - the request message, `UpdateCurrentUserRequest`
///   (`{"user": {…}, "updateMask": "displayName"}`), as every REST body is;
/// - the User alone (JSON merge-patch style): the fields present are the
///   ones changed, unless `update_mask` (or `updateMask`) in the query names
///   them.
///
/// A User has no `user` field, so a body with one is the request message.
async fn update_me(
    State(s): State<Arc<Services>>,
    query: Query<MaskQuery>,
    call: Call,
) -> Response {
    if present_fields(&call.body)
        .iter()
        .any(|field| field == "user")
    {
        let request = match update_request(&call.body) {
            Ok(request) => request,
            Err(status) => return ApiError(status).into_response(),
        };
        return answer(s.auth.update_current_user(call.request(request)).await);
    }
    let user: auth::User = match call.message() {
        Ok(user) => user,
        Err(status) => return ApiError(status).into_response(),
    };
    let paths = match &query.update_mask {
        Some(mask) => mask
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(snake_case)
            .collect(),
        None => present_fields(&call.body),
    };
    let request = auth::UpdateCurrentUserRequest {
        user: Some(user),
        update_mask: Some(pbjson_types::FieldMask { paths }),
    };
    answer(s.auth.update_current_user(call.request(request)).await)
}

/// An `UpdateCurrentUserRequest` in canonical JSON. Its `updateMask` is a
/// FieldMask, whose canonical JSON is one string of comma-separated
/// lowerCamel paths (`"displayName"`), which pbjson's FieldMask does not
/// read: it is turned into paths here.
fn update_request(body: &[u8]) -> Result<auth::UpdateCurrentUserRequest, Status> {
    let invalid = |why: String| {
        Status::new(
            Code::InvalidArgument,
            format!("the request body is not the JSON this operation takes: {why}"),
        )
    };
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| invalid(error.to_string()))?;
    let mask = value
        .as_object_mut()
        .and_then(|fields| fields.remove("updateMask").or(fields.remove("update_mask")));
    let paths = match mask {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::String(mask)) => mask
            .split(',')
            .map(str::trim)
            .filter(|path| !path.is_empty())
            .map(snake_case)
            .collect(),
        Some(_) => {
            return Err(invalid(
                "`updateMask` is a string of comma-separated field names, e.g. \"displayName\""
                    .into(),
            ));
        }
    };
    let mut request: auth::UpdateCurrentUserRequest =
        serde_json::from_value(value).map_err(|error| invalid(error.to_string()))?;
    request.update_mask = Some(pbjson_types::FieldMask { paths });
    Ok(request)
}

/// The query of a PATCH.
#[derive(Debug, Default, Deserialize)]
struct MaskQuery {
    #[serde(alias = "updateMask")]
    update_mask: Option<String>,
}

/// The top-level fields of a JSON object body, as proto field paths.
fn present_fields(body: &[u8]) -> Vec<String> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
        return Vec::new();
    };
    let paths: HashSet<String> = fields.keys().map(|key| snake_case(key)).collect();
    let mut paths: Vec<String> = paths.into_iter().collect();
    paths.sort();
    paths
}

/// `displayName` → `display_name` (proto JSON names back to field names).
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

async fn change_password(State(s): State<Arc<Services>>, call: Call) -> Response {
    call.body_call(|r| async move { s.auth.change_password(r).await })
        .await
}

async fn request_password_reset(State(s): State<Arc<Services>>, call: Call) -> Response {
    call.body_call(|r| async move { s.auth.request_password_reset(r).await })
        .await
}

async fn reset_password(State(s): State<Arc<Services>>, call: Call) -> Response {
    call.body_call(|r| async move { s.auth.reset_password(r).await })
        .await
}

async fn validate(State(s): State<Arc<Services>>, call: Call) -> Response {
    call.body_call(|r| async move { s.auth.validate_token(r).await })
        .await
}

/// The query of `GET /api/v1/sessions`.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(default, alias = "pageSize")]
    page_size: Option<String>,
    #[serde(default, alias = "pageToken")]
    page_token: Option<String>,
    #[serde(default, alias = "userId")]
    user_id: Option<String>,
}

async fn list_sessions(
    State(s): State<Arc<Services>>,
    query: Query<ListQuery>,
    call: Call,
) -> Response {
    let page_size = match query.page_size.as_deref().map(str::parse::<i32>) {
        None => 0,
        Some(Ok(size)) => size,
        Some(Err(_)) => {
            return ApiError(Status::invalid_argument(
                "page_size: must be a whole number",
            ))
            .into_response();
        }
    };
    let request = session::ListSessionsRequest {
        page_size,
        page_token: query.page_token.clone().unwrap_or_default(),
        user_id: query.user_id.clone().unwrap_or_default(),
    };
    answer(s.sessions.list_sessions(call.request(request)).await)
}

async fn revoke_other_sessions(State(s): State<Arc<Services>>, call: Call) -> Response {
    answer(
        s.sessions
            .revoke_other_sessions(call.request(session::RevokeOtherSessionsRequest {}))
            .await,
    )
}

async fn get_session(
    State(s): State<Arc<Services>>,
    Path(session_id): Path<String>,
    call: Call,
) -> Response {
    answer(
        s.sessions
            .get_session(call.request(session::GetSessionRequest { session_id }))
            .await,
    )
}

async fn revoke_session(
    State(s): State<Arc<Services>>,
    Path(session_id): Path<String>,
    call: Call,
) -> Response {
    answer(
        s.sessions
            .revoke_session(call.request(session::RevokeSessionRequest { session_id }))
            .await,
    )
}

async fn revoke_user_sessions(
    State(s): State<Arc<Services>>,
    Path(user_id): Path<String>,
    call: Call,
) -> Response {
    answer(
        s.sessions
            .revoke_user_sessions(call.request(session::RevokeUserSessionsRequest { user_id }))
            .await,
    )
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_become_field_paths() {
        assert_eq!(snake_case("displayName"), "display_name");
        assert_eq!(snake_case("display_name"), "display_name");
        assert_eq!(
            present_fields(br#"{"displayName":"Ada","email":"x"}"#),
            ["display_name", "email"]
        );
        assert!(present_fields(b"[1]").is_empty());
    }
}
