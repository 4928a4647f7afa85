//! The open connections: each one's state, which its requests share with
//! the task serving it (how many requests are in flight, and since when
//! none is), and their count, in total and per client address, against
//! HTTP_MAX_CONNECTIONS and HTTP_MAX_CONNECTIONS_PER_IP.
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
//!
//! A connection is counted from its accept until its socket closes, which
//! for an upgraded WebSocket is long after hyper is done with it: the count
//! travels with the socket ([`Counted`]). When every place is taken, a
//! newcomer gets the place of a connection with no request in flight, which
//! is told to close (an idle keep-alive connection may be closed at any
//! time; its client reconnects), as nginx does with its reusable
//! connections; only when none is idle is the newcomer refused. So a flood
//! of idle sockets cannot keep anyone else out. Cost per connection: one
//! lock of the table at accept and one at close, and a hash of the client
//! address in each.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http_body::{Body, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    time::Instant,
};

/// One open connection.
#[derive(Debug)]
pub struct Connection {
    opened: Instant,
    in_flight: AtomicU32,
    /// When the last request ended, in milliseconds since `opened`.
    idle_since_ms: AtomicU64,
    /// Whether hyper still serves it (false once closed or upgraded: no
    /// longer a connection that can be told to close).
    served: AtomicBool,
    /// Set once it has been told to close to make room.
    told_to_close: AtomicBool,
    close: Notify,
}

impl Connection {
    /// A connection opened now, idle until its first request.
    pub fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            served: AtomicBool::new(true),
            told_to_close: AtomicBool::new(false),
            close: Notify::new(),
        }
    }

    /// Resolves when the connection is told to close to make room.
    pub async fn told_to_close(&self) {
        self.close.notified().await;
    }

    /// Marks the connection as no longer served by hyper (it closed, or was
    /// upgraded and belongs to its WebSocket now).
    pub fn served_no_more(&self) {
        self.served.store(false, Ordering::Release);
    }

    /// Since when a connection that hyper serves, and that has not been
    /// told to close, has been idle; None if it is not such a connection.
    fn idle_since(&self) -> Option<Instant> {
        let candidate = self.is_idle()
            && self.served.load(Ordering::Acquire)
            && !self.told_to_close.load(Ordering::Acquire);
        candidate.then(|| {
            self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed))
        })
    }

    /// Tells an idle connection that hyper serves to close; false if it is
    /// not one, or was told already.
    fn tell_to_close_if_idle(&self) -> bool {
        if !self.is_idle()
            || !self.served.load(Ordering::Acquire)
            || self.told_to_close.swap(true, Ordering::AcqRel)
        {
            return false;
        }
        self.close.notify_one();
        true
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

/// The most connections scanned for an idle one when room is needed: a
/// bound on the time the table is locked when nearly every connection is
/// busy.
const IDLE_SCAN: usize = 1024;

/// How many connections may be closing to make room at once: each takes
/// its place until its socket is closed, which for an idle connection is at
/// once.
const CLOSING_AT_MOST: usize = 64;

/// Limits on open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// In total (HTTP_MAX_CONNECTIONS).
    pub total: usize,
    /// Per client address (HTTP_MAX_CONNECTIONS_PER_IP); None: no cap.
    pub per_address: Option<u32>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address has as many open as it may.
    PerAddress,
    /// Every place is taken, by connections with requests in flight.
    Total,
}

/// The open connections of a listener.
#[derive(Debug)]
pub struct OpenConnections {
    caps: Caps,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    slots: Vec<Option<Arc<Connection>>>,
    free: Vec<usize>,
    open: usize,
    /// Told to close to make room, and not closed yet.
    closing: usize,
    per_address: HashMap<IpAddr, u32>,
    /// Where the next scan for an idle connection starts.
    cursor: usize,
}

impl Table {
    /// Tells the connection idle the longest among the next [`IDLE_SCAN`]
    /// from the cursor to close (so a client that has just connected, its
    /// request maybe still unread, is the last to go); false when none of
    /// them is idle.
    fn close_one_idle(&mut self) -> bool {
        let len = self.slots.len();
        let scanned = len.min(IDLE_SCAN);
        let mut longest: Option<(Instant, usize)> = None;
        for step in 0..scanned {
            let index = (self.cursor + step) % len;
            if let Some(connection) = &self.slots[index]
                && let Some(since) = connection.idle_since()
                && longest.is_none_or(|(earliest, _)| since < earliest)
            {
                longest = Some((since, index));
            }
        }
        self.cursor = (self.cursor + scanned) % len.max(1);
        let Some((_, index)) = longest else {
            return false;
        };
        let told = self.slots[index]
            .as_ref()
            .is_some_and(|connection| connection.tell_to_close_if_idle());
        if told {
            self.closing += 1;
        }
        told
    }
}

impl OpenConnections {
    /// No connections yet, under `caps`.
    pub fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Self {
            caps,
            table: Mutex::new(Table::default()),
        })
    }

    /// The caps in force.
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// How many are open (closing ones included).
    pub fn len(&self) -> usize {
        self.lock().open
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table is consistent after every operation: a panic elsewhere
        // while it was locked leaves nothing half done.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a connection just accepted from `peer`, making room at the
    /// total cap by telling an idle connection to close; the refusal when
    /// the address is at its cap, or nothing is idle.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, Refusal> {
        let address = peer.to_canonical();
        let mut table = self.lock();
        let from_address = table.per_address.get(&address).copied().unwrap_or(0);
        if self.caps.per_address.is_some_and(|cap| from_address >= cap) {
            return Err(Refusal::PerAddress);
        }
        if table.open - table.closing >= self.caps.total
            && (table.closing >= CLOSING_AT_MOST || !table.close_one_idle())
        {
            return Err(Refusal::Total);
        }
        let connection = Arc::new(Connection::new());
        let slot = match table.free.pop() {
            Some(slot) => {
                table.slots[slot] = Some(connection.clone());
                slot
            }
            None => {
                table.slots.push(Some(connection.clone()));
                table.slots.len() - 1
            }
        };
        table.open += 1;
        table.per_address.insert(address, from_address + 1);
        Ok(Admitted {
            open: self.clone(),
            slot,
            address,
            connection,
        })
    }

    /// Tells up to `at_most` idle connections to close (the process is out
    /// of file descriptors); how many were told.
    pub fn close_idle(&self, at_most: usize) -> usize {
        let mut table = self.lock();
        let mut told = 0;
        while told < at_most && table.close_one_idle() {
            told += 1;
        }
        told
    }

    fn release(&self, slot: usize, address: IpAddr) {
        let mut table = self.lock();
        if let Some(connection) = table.slots[slot].take()
            && connection.told_to_close.load(Ordering::Acquire)
        {
            table.closing -= 1;
        }
        table.free.push(slot);
        table.open -= 1;
        if let Some(count) = table.per_address.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                table.per_address.remove(&address);
            }
        }
    }
}

/// A connection's place among the open ones, given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    open: Arc<OpenConnections>,
    slot: usize,
    address: IpAddr,
    connection: Arc<Connection>,
}

impl Admitted {
    /// The connection's state.
    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.open.release(self.slot, self.address);
    }
}

pin_project_lite::pin_project! {
    /// A socket that holds its connection's place until it is closed, by
    /// hyper or by the WebSocket it was upgraded to.
    pub struct Counted<T> {
        #[pin]
        io: T,
        place: Admitted,
    }
}

impl<T> Counted<T> {
    /// `io`, holding `place`.
    pub fn new(io: T, place: Admitted) -> Self {
        Self { io, place }
    }
}

impl<T: AsyncRead> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
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

    fn caps(total: usize, per_address: Option<u32>) -> Arc<OpenConnections> {
        OpenConnections::new(Caps { total, per_address })
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn an_address_over_its_cap_is_refused_until_one_of_its_closes() {
        let open = caps(100, Some(2));
        let first = open.admit(A).unwrap();
        let _second = open.admit(A).unwrap();
        assert_eq!(open.admit(A).unwrap_err(), Refusal::PerAddress);
        let _other = open.admit(B).unwrap();
        // An IPv4-mapped IPv6 peer is the same address.
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(open.admit(mapped).unwrap_err(), Refusal::PerAddress);
        drop(first);
        assert!(open.admit(A).is_ok());
        assert!(caps(100, None).admit(A).is_ok());
    }

    #[tokio::test]
    async fn at_the_total_cap_an_idle_connection_is_told_to_close_and_busy_ones_are_not() {
        let open = caps(2, None);
        let busy = open.admit(A).unwrap();
        let _request = InFlight::begin(busy.connection());
        let idle = open.admit(A).unwrap();
        let newcomer = open.admit(B).expect("room made");
        let newcomers_request = InFlight::begin(newcomer.connection());
        tokio::time::timeout(Duration::from_secs(5), idle.connection().told_to_close())
            .await
            .expect("the idle one is told to close");
        // Until it has closed it holds its place, and the others are busy.
        assert_eq!(open.len(), 3);
        assert_eq!(open.admit(B).unwrap_err(), Refusal::Total);
        drop(idle);
        assert_eq!(open.len(), 2);
        // An upgraded connection (a WebSocket) is never told to close.
        drop(newcomers_request);
        newcomer.connection().served_no_more();
        assert_eq!(open.admit(B).unwrap_err(), Refusal::Total);
        drop(busy);
        assert!(open.admit(B).is_ok());
    }
}
