//! The state of one open connection that its requests share with the task
//! serving it: how many requests are in flight, and since when none is.
//!
//! A connection is idle while no request is in flight: an HTTP/1
//! connection before its first request head is complete and between
//! requests, an HTTP/2 connection with no open stream. A request is in
//! flight from its head until its response body is done, so a gRPC stream,
//! a Server-Sent Events stream or a WebSocket over HTTP/2 is never idle,
//! however quiet. (A WebSocket over HTTP/1 leaves hyper at the upgrade: its
//! connection is no longer served as HTTP and has no idle time.)
//!
//! Cost per request: two atomic additions on a counter of its connection,
//! one clone of the connection's `Arc`, and one reading of the monotonic
//! clock when the response body is done. No lock, no allocation.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

/// One open connection.
#[derive(Debug)]
pub struct Connection {
    opened: Instant,
    in_flight: AtomicU32,
    /// When the last request ended, in milliseconds since `opened`.
    idle_since_ms: AtomicU64,
}

impl Connection {
    /// A connection opened now, idle until its first request.
    pub fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    /// When a connection with no request in flight has been idle for
    /// `timeout`; None while a request is in flight.
    pub fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        Some(self.opened + since + timeout)
    }

    /// Whether no request is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }
}

impl Default for Connection {
    fn default() -> Self {
        Self::new()
    }
}

/// A request in flight on a connection, from its head until its response
/// body is done (or dropped).
#[derive(Debug)]
pub struct InFlight(Arc<Connection>);

impl InFlight {
    /// Counts a request that has just arrived on `connection`.
    pub fn begin(connection: &Arc<Connection>) -> Self {
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(connection.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The idle time starts before the count drops, so a check between
        // the two sees the request still in flight, never a stale time.
        let now = self.0.opened.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(now, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it is done.
    pub struct Tracked<B> {
        #[pin]
        body: B,
        request: InFlight,
    }
}

impl<B> Tracked<B> {
    /// `body`, ending `request` when dropped.
    pub fn new(body: B, request: InFlight) -> Self {
        Self { body, request }
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_idle_from_its_last_request_on() {
        let minute = Duration::from_secs(60);
        let connection = Arc::new(Connection::new());
        assert_eq!(
            connection.idle_deadline(minute),
            Some(connection.opened + minute)
        );
        let first = InFlight::begin(&connection);
        let second = InFlight::begin(&connection);
        assert_eq!(connection.idle_deadline(minute), None);
        std::thread::sleep(Duration::from_millis(20));
        drop(first);
        assert!(!connection.is_idle());
        drop(second);
        assert!(connection.is_idle());
        let deadline = connection.idle_deadline(minute).unwrap();
        assert!(deadline >= connection.opened + minute + Duration::from_millis(20));
        assert!(deadline <= Instant::now() + minute);
    }
}
