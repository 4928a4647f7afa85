//! What the front doors and the services share about a call, so neither
//! depends on the other: the server's services implement these traits and
//! read these request extensions; the bridge (REST, WebSocket, SSE) and the
//! server's transport set them and call through them.
//!
//! - [`ClientAddr`]: the client's address behind trusted proxies.
//! - [`ConnectionGate`] and [`Admitted`]: the throttle on long-lived
//!   connections, and the mark of a call already counted by it.
//! - [`SharedSubscribe`], [`Delivery`]: `Subscribe` with events shared
//!   between subscribers, for the WebSocket.
//! - [`EstablishedCaller`]: the caller a WebSocket signed in as, so its
//!   later `Subscribe` calls are not authenticated again.

use std::{any::Any, fmt, net::IpAddr, pin::Pin, sync::Arc};

use futures_util::Stream;
use slop_api::notification::{
    Event, SubscribeRequest, SubscribeResponse, notification_service_server::NotificationService,
};
use tonic::transport::server::TcpConnectInfo;

/// The stream a `Subscribe` call answers with. The server's
/// `NotificationService` implementation uses this type as its
/// `SubscribeStream`, so the bridge can hold it as a [`Notifications`].
pub type SubscribeStream =
    Pin<Box<dyn Stream<Item = Result<SubscribeResponse, tonic::Status>> + Send + 'static>>;

/// What a subscription hands the bridge: a message of the `Subscribe`
/// stream, or an event shared with every other subscriber of this instance
/// (the same allocation, so the bridge can encode it once for all of them).
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A message as the `Subscribe` stream has it (boxed: events, the
    /// common case, are a pointer).
    Message(Box<SubscribeResponse>),
    /// An event.
    Event(Arc<Event>),
}

/// The stream [`SharedSubscribe::subscribe_shared`] answers with.
pub type DeliveryStream =
    Pin<Box<dyn Stream<Item = Result<Delivery, tonic::Status>> + Send + 'static>>;

/// `slop.notification.v1.NotificationService` as the bridge calls it, with
/// one more way to call `Subscribe`.
#[tonic::async_trait]
pub trait SharedSubscribe: NotificationService<SubscribeStream = SubscribeStream> {
    /// `Subscribe`, for doors with a keep-alive of their own (the
    /// WebSocket): the same checks and the same messages, except that
    /// events are shared rather than copied per subscriber and no
    /// heartbeats are sent. By default, the `Subscribe` stream as it is.
    async fn subscribe_shared(
        &self,
        request: tonic::Request<SubscribeRequest>,
    ) -> Result<DeliveryStream, tonic::Status> {
        use futures_util::StreamExt as _;
        let stream = self.subscribe(request).await?.into_inner();
        Ok(Box::pin(stream.map(|item| {
            item.map(|message| Delivery::Message(Box::new(message)))
        })))
    }
}

/// The notification service, as the bridge holds it.
pub type Notifications = Arc<dyn SharedSubscribe>;

/// A request extension: the client's address as a trusted reverse proxy
/// forwarded it (the server's `TRUSTED_PROXIES`). Absent, the client is
/// the TCP peer of [`TcpConnectInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// The client's IP address from a request's extensions (http's or
    /// tonic's, both give these two): the forwarded one, else the TCP
    /// peer's; None when the transport has no address.
    pub fn ip(forwarded: Option<&ClientAddr>, tcp: Option<&TcpConnectInfo>) -> Option<IpAddr> {
        forwarded.map(|ClientAddr(ip)| *ip).or_else(|| {
            tcp.and_then(TcpConnectInfo::remote_addr)
                .map(|addr| addr.ip().to_canonical())
        })
    }
}

/// The connection throttle for long-lived connections (notification streams
/// and WebSockets), which the server implements over its rate limiter.
#[tonic::async_trait]
pub trait ConnectionGate: Send + Sync {
    /// Counts one new connection from `peer` and, when known, by `user`;
    /// RESOURCE_EXHAUSTED (with the wait in `RetryInfo`) when either is over
    /// its limit.
    async fn admit(
        &self,
        peer: Option<std::net::IpAddr>,
        user: Option<&str>,
    ) -> Result<(), tonic::Status>;
}

/// A request extension the WebSocket adapter puts on the `Subscribe` calls
/// it makes for a socket it already admitted through the [`ConnectionGate`],
/// so they are not counted as new connections again. Extensions never come
/// from the wire, so clients cannot set it.
#[derive(Debug, Clone, Copy)]
pub struct Admitted;

/// The caller the server authenticated for a `GetSession("current")` call,
/// as an opaque value the server made: a response extension of that call,
/// and a request extension of the `Subscribe` calls the WebSocket adapter
/// then makes for the same socket. The server takes the caller from it
/// instead of reading the credentials in the metadata again, so a socket
/// costs one session read at sign-in however many subscriptions it opens.
///
/// It cannot be forged. Extensions never come from the wire: no header,
/// cookie or message field of any front door becomes one, so only code in
/// the server's process can put it on a request. And the bridge cannot make
/// one that means anything either: the server accepts only a value of its
/// own private type, which only it constructs; anything else is ignored.
///
/// The server still checks what a held caller cannot vouch for: an access
/// token's expiry, against its clock. A session that ends is not checked
/// per call: the notification hub ends the streams of sessions that end,
/// and with them the socket.
#[derive(Clone)]
pub struct EstablishedCaller(Arc<dyn Any + Send + Sync>);

impl EstablishedCaller {
    /// Wraps the server's value of the caller.
    pub fn new(caller: impl Any + Send + Sync) -> Self {
        Self(Arc::new(caller))
    }

    /// The caller, if it is a `T` (the server's type).
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl fmt::Debug for EstablishedCaller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Opaque to all but the server.
        f.write_str("EstablishedCaller(..)")
    }
}

/// The cookie that carries a browser's session (HttpOnly): its session id
/// and a MAC, made by the server's identity core.
pub const SESSION_COOKIE: &str = "slop_session";
/// The CSRF cookie (readable by the page, which echoes it in
/// [`CSRF_HEADER`]).
pub const CSRF_COOKIE: &str = "slop_csrf";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The value of the cookie `name` in a request's `cookie` header values
/// (each a `;`-separated list of `name=value` pairs, RFC 6265 §4.2), with
/// the optional double quotes around it taken off; the first one wins.
/// The one cookie reader of the server: authentication, the Origin check
/// and the WebSocket upgrade read cookies alike.
pub fn cookie<'a>(headers: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    headers
        .into_iter()
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::cookie;

    #[test]
    fn a_cookie_is_found_in_any_header_and_unquoted() {
        let headers = ["a=1; slop_session=\"s.mac\"", "slop_session=later"];
        assert_eq!(cookie(headers, "slop_session"), Some("s.mac"));
        assert_eq!(cookie(["x=1;slop_csrf=c ;"], "slop_csrf"), Some("c"));
        assert_eq!(cookie(["slop_session_old=1"], "slop_session"), None);
        assert_eq!(cookie(["novalue; slop_session"], "slop_session"), None);
        assert_eq!(cookie([], "slop_session"), None);
    }
}
