//! The fan-out benchmark: many authenticated WebSocket subscribers of one
//! topic, and a backend service publishing to it over gRPC at a steady rate.
//!
//! It measures what the people who run the server ask about: how fast
//! sockets can be opened (upgrade, authentication, subscription), what an
//! idle authenticated socket costs in server memory, how many messages per
//! second reach the subscribers, how long an event takes from the start of
//! its `Publish` call to each subscriber, and whether any is lost.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use slop_api::notification::{
    PublishRequest, notification_service_client::NotificationServiceClient,
};
use tokio::{sync::watch, task::JoinSet};
use tonic::transport::Endpoint;

use crate::{client::SignedIn, server::ServerProcess};

pub mod baseline;
mod report;
pub mod ws;

pub use report::render;

use ws::{Frame, Socket};

/// The WebSocket route.
const WS_PATH: &str = "/api/v1/ws";
/// The id of every socket's topic subscription.
const SUBSCRIPTION_ID: &str = "t";
/// How long the server is left alone before its idle memory is read.
const SETTLE: Duration = Duration::from_secs(3);

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// WebSocket subscribers.
    pub subscribers: usize,
    /// Sockets connect from 127.0.0.1 up to this many loopback addresses,
    /// round robin, so the client's ephemeral ports do not run out.
    pub addresses: u8,
    /// Sockets being opened at once.
    pub connect_concurrency: usize,
    /// Events published per second.
    pub rate: u32,
    /// How long events are published.
    pub duration: Duration,
    /// How long to wait after the last publish for deliveries.
    pub drain: Duration,
    /// Bytes of filler in each event's payload.
    pub payload_bytes: usize,
    /// The topic, `topic:<name>`.
    pub topic: String,
}

/// What one backend measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `memory` or `redis`.
    pub backend: &'static str,
    /// Sockets opened, authenticated and subscribed.
    pub subscribers: usize,
    /// How long opening them took.
    pub setup: Duration,
    /// The server's resident memory before the sockets and after they were
    /// idle for a while, in KiB, where /proc could be read.
    pub resident_kib: Option<(u64, u64)>,
    /// Events published.
    pub published: u64,
    /// Events received (each subscriber counts each event once).
    pub delivered: u64,
    /// Events published but not received by a subscriber, summed.
    pub lost: u64,
    /// From the first publish to the last delivery.
    pub delivery_window: Duration,
    /// Publish→receive latency: p50, p99, max.
    pub latency: (Duration, Duration, Duration),
    /// The server's CPU time while events were published and delivered.
    pub server_cpu: Option<Duration>,
    /// This benchmark's own CPU time (the subscribers and the publisher)
    /// meanwhile: on a shared machine, what the server did not get.
    pub client_cpu: Option<Duration>,
    /// The whole machine's CPU time meanwhile, user space and kernel.
    pub machine_cpu: Option<crate::cpu::Machine>,
    /// What went wrong, if anything (sockets closed early, out-of-order
    /// events, failed publishes), at most a few, and how many in all.
    pub errors: (Vec<String>, usize),
}

impl Outcome {
    /// Sockets opened per second.
    pub fn setup_rate(&self) -> f64 {
        self.subscribers as f64 / self.setup.as_secs_f64()
    }

    /// Resident memory per idle socket, in KiB.
    pub fn kib_per_socket(&self) -> Option<f64> {
        let (before, after) = self.resident_kib?;
        Some(after.saturating_sub(before) as f64 / self.subscribers.max(1) as f64)
    }

    /// Messages delivered per second.
    pub fn delivery_rate(&self) -> f64 {
        self.delivered as f64 / self.delivery_window.as_secs_f64().max(f64::EPSILON)
    }

    /// CPU time per delivered message: the server's and the client's.
    pub fn cpu_per_message(&self) -> (Option<Duration>, Option<Duration>) {
        let per = |cpu: Option<Duration>| {
            let delivered = u32::try_from(self.delivered).ok().filter(|d| *d > 0)?;
            Some(cpu? / delivered)
        };
        (per(self.server_cpu), per(self.client_cpu))
    }

    /// The whole machine's CPU time per delivered message: in user space
    /// and in the kernel (every process, interrupts included).
    pub fn machine_per_message(&self) -> Option<(Duration, Duration)> {
        let delivered = u32::try_from(self.delivered).ok().filter(|d| *d > 0)?;
        let machine = self.machine_cpu?;
        Some((machine.user / delivered, machine.kernel / delivered))
    }
}

/// What the subscribers connect to.
pub enum Target<'a> {
    /// `slop-server`: `users` share the sockets round robin; `service_key`
    /// publishes over gRPC.
    Server {
        /// The process.
        process: &'a ServerProcess,
        /// Signed-in users.
        users: &'a [SignedIn],
        /// A key of SERVICE_KEYS.
        service_key: &'a str,
    },
    /// The minimal fan-out server.
    Baseline(&'a baseline::BaselineProcess),
}

impl Target<'_> {
    fn addr(&self) -> SocketAddr {
        match self {
            Self::Server { process, .. } => process.addr,
            Self::Baseline(baseline) => baseline.addr,
        }
    }

    fn resident_kib(&self) -> Result<Option<u64>, String> {
        match self {
            Self::Server { process, .. } => Ok(Some(
                process
                    .memory()
                    .ok_or("cannot read the server's memory")?
                    .resident_kib,
            )),
            Self::Baseline(baseline) => Ok(baseline.memory().map(|memory| memory.resident_kib)),
        }
    }

    /// The access tokens the sockets use, round robin.
    fn tokens(&self) -> Vec<String> {
        match self {
            Self::Server { users, .. } => users.iter().map(|u| u.access_token.clone()).collect(),
            Self::Baseline(_) => vec!["baseline".into()],
        }
    }

    /// CPU time used so far by the server and by the client.
    fn cpu(&self) -> (Option<Duration>, Option<Duration>) {
        let client = crate::cpu::Meter::Process(std::process::id()).read();
        let server = match self {
            Self::Server { process, .. } => process.meter(),
            Self::Baseline(baseline) => baseline.meter(),
        };
        (server.read(), client)
    }
}

/// Runs the plan against `target`; `name` labels its row.
pub async fn run(plan: &Plan, name: &'static str, target: Target<'_>) -> Result<Outcome, String> {
    let tokens = target.tokens();
    if tokens.is_empty() {
        return Err("no users to open sockets for".into());
    }
    let before = target.resident_kib()?;
    let started = Instant::now();
    let sockets = open_sockets(plan, target.addr(), &tokens).await?;
    let setup = started.elapsed();
    eprintln!(
        "{name}: {} sockets subscribed to {} in {:.1}s",
        sockets.len(),
        plan.topic,
        setup.as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
    let after = target.resident_kib()?;

    // Every socket reads in its own task, recording when each event came.
    let base = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = watch::channel(false);
    let expected_per_socket = (u64::from(plan.rate) * plan.duration.as_secs().max(1)) as usize;
    let mut readers = JoinSet::new();
    for socket in sockets {
        readers.spawn(read_events(
            socket,
            stopped.clone(),
            received.clone(),
            base,
            expected_per_socket,
        ));
    }

    let (cpu_before, client_cpu_before) = target.cpu();
    let machine_before = crate::cpu::Machine::read();
    let (published, publish_errors) = publish(plan, &target, base).await?;
    let expected = published.len() as u64 * plan.subscribers as u64;
    let drain_until = Instant::now() + plan.drain;
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (cpu_after, client_cpu_after) = target.cpu();
    let machine_after = crate::cpu::Machine::read();
    let _ = stop.send(true);

    let mut latencies = Vec::with_capacity(usize::try_from(expected).unwrap_or_default());
    let mut errors = publish_errors;
    let mut delivered = 0u64;
    let mut last_delivery = Duration::ZERO;
    while let Some(joined) = readers.join_next().await {
        let read = match joined {
            Ok(read) => read,
            Err(error) => {
                errors.push(format!("a reader task failed: {error}"));
                continue;
            }
        };
        errors.extend(read.error);
        let mut previous = 0;
        for (offset, at) in read.events {
            if offset <= previous {
                errors.push(format!("offset {offset} came after {previous}"));
            }
            previous = offset;
            let Some(sent) = published.get(&offset) else {
                // Published before this run's window (none are) or unknown.
                errors.push(format!("an event with unknown offset {offset}"));
                continue;
            };
            delivered += 1;
            last_delivery = last_delivery.max(at);
            latencies.push(at.saturating_sub(*sent));
        }
    }
    latencies.sort_unstable();
    let percentile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    let first_publish = published.values().min().copied().unwrap_or_default();
    let error_count = errors.len();
    errors.truncate(5);
    Ok(Outcome {
        backend: name,
        subscribers: plan.subscribers,
        setup,
        resident_kib: before.zip(after),
        published: published.len() as u64,
        delivered,
        lost: expected.saturating_sub(delivered),
        delivery_window: last_delivery.saturating_sub(first_publish),
        latency: (
            percentile(0.5),
            percentile(0.99),
            latencies.last().copied().unwrap_or_default(),
        ),
        server_cpu: cpu_before.zip(cpu_after).map(|(b, a)| a.saturating_sub(b)),
        client_cpu: client_cpu_before
            .zip(client_cpu_after)
            .map(|(b, a)| a.saturating_sub(b)),
        machine_cpu: machine_before
            .zip(machine_after)
            .map(|(before, after)| after.since(&before)),
        errors: (errors, error_count),
    })
}

/// Opens, authenticates and subscribes every socket, `connect_concurrency`
/// at a time.
async fn open_sockets(
    plan: &Plan,
    server: SocketAddr,
    tokens: &[String],
) -> Result<Vec<Socket>, String> {
    let subscribe = serde_json::json!({
        "type": "subscribe",
        "id": SUBSCRIPTION_ID,
        "channel": plan.topic,
    })
    .to_string();
    let subscribe: Arc<str> = subscribe.into();
    let mut opening = JoinSet::new();
    let mut sockets = Vec::with_capacity(plan.subscribers);
    for i in 0..plan.subscribers {
        if opening.len() >= plan.connect_concurrency
            && let Some(opened) = opening.join_next().await
        {
            sockets.push(opened.map_err(|error| error.to_string())??);
        }
        let local = local_address(i, plan.addresses);
        let token = tokens[i % tokens.len()].clone();
        let subscribe = subscribe.clone();
        opening.spawn(async move {
            let mut socket = Socket::connect(local, server, WS_PATH, &token).await?;
            socket.send_text(&subscribe).await?;
            subscribed(&mut socket).await?;
            Ok::<_, String>(socket)
        });
    }
    while let Some(opened) = opening.join_next().await {
        sockets.push(opened.map_err(|error| error.to_string())??);
    }
    Ok(sockets)
}

/// The i-th socket's source address: 127.0.0.1, 127.0.0.2, … round robin.
fn local_address(i: usize, addresses: u8) -> IpAddr {
    let last = 1 + (i % usize::from(addresses.max(1)));
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, u8::try_from(last).unwrap_or(1)))
}

/// Reads frames until the topic subscription is confirmed.
async fn subscribed(socket: &mut Socket) -> Result<(), String> {
    let confirmed = format!(r#""id":"{SUBSCRIPTION_ID}""#);
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match socket.next().await? {
                Frame::Text => {
                    let text = String::from_utf8_lossy(socket.text());
                    if text.starts_with(r#"{"type":"error""#) {
                        return Err(format!("subscribing failed: {text}"));
                    }
                    if text.starts_with(r#"{"type":"subscribed""#) && text.contains(&confirmed) {
                        return Ok(());
                    }
                }
                Frame::Ping(payload) => socket.pong(&payload).await?,
                Frame::Pong => {}
                Frame::Close(code, reason) => {
                    return Err(format!("closed while subscribing: {code} {reason}"));
                }
            }
        }
    })
    .await
    .map_err(|_| "no subscription confirmed within 30s".to_owned())?
}

/// What one socket received: (offset, when since the run's base) per
/// event, and why it stopped early, if it did.
struct Read {
    events: Vec<(u64, Duration)>,
    error: Option<String>,
}

async fn read_events(
    mut socket: Socket,
    mut stop: watch::Receiver<bool>,
    received: Arc<AtomicU64>,
    base: Instant,
    expected: usize,
) -> Read {
    let mut events = Vec::with_capacity(expected);
    let error = loop {
        let frame = tokio::select! {
            biased;
            _ = stop.changed() => break None,
            frame = socket.next() => frame,
        };
        match frame {
            Ok(Frame::Text) => {
                let at = base.elapsed();
                if let Some(offset) = event_offset(socket.text()) {
                    events.push((offset, at));
                    received.fetch_add(1, Ordering::Relaxed);
                } else if socket.text().starts_with(br#"{"type":"error""#) {
                    break Some(String::from_utf8_lossy(socket.text()).into_owned());
                }
            }
            Ok(Frame::Ping(payload)) => {
                if let Err(error) = socket.pong(&payload).await {
                    break Some(error);
                }
            }
            Ok(Frame::Pong) => {}
            Ok(Frame::Close(code, reason)) => break Some(format!("closed: {code} {reason}")),
            Err(error) => break Some(error),
        }
    };
    Read { events, error }
}

/// The offset of an event frame (`{"type":"event",…,"offset":"42",…}`);
/// None for other frames.
pub(crate) fn event_offset(frame: &[u8]) -> Option<u64> {
    const OFFSET: &[u8] = br#""offset":""#;
    if !frame.starts_with(br#"{"type":"event""#) {
        return None;
    }
    let at = frame.windows(OFFSET.len()).position(|w| w == OFFSET)? + OFFSET.len();
    let digits = &frame[at..];
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// Publishes `rate` events per second for `duration`, one at a time (a
/// `Publish` call to the server, or straight into the baseline); answers
/// when each offset's publish started (since `base`), and those that failed.
async fn publish(
    plan: &Plan,
    target: &Target<'_>,
    base: Instant,
) -> Result<(HashMap<u64, Duration>, Vec<String>), String> {
    enum Publisher<'a> {
        Grpc(
            NotificationServiceClient<tonic::transport::Channel>,
            tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
        ),
        Baseline(&'a baseline::BaselineProcess),
    }
    let mut publisher = match target {
        Target::Server {
            process,
            service_key,
            ..
        } => {
            let server = process.addr;
            let channel = Endpoint::from_shared(format!("http://{server}"))
                .map_err(|error| error.to_string())?
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|error| format!("gRPC connect to {server}: {error}"))?;
            let authorization: tonic::metadata::MetadataValue<_> = format!("Bearer {service_key}")
                .parse()
                .map_err(|_| "the service key is not a header value")?;
            Publisher::Grpc(NotificationServiceClient::new(channel), authorization)
        }
        Target::Baseline(baseline) => Publisher::Baseline(baseline),
    };
    let count = u64::from(plan.rate) * plan.duration.as_secs().max(1);
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / plan.rate.max(1));
    let filler = "x".repeat(plan.payload_bytes);
    let mut published = HashMap::with_capacity(usize::try_from(count).unwrap_or_default());
    let mut errors = Vec::new();
    for n in 0..count {
        ticks.tick().await;
        let sent = base.elapsed();
        match &mut publisher {
            Publisher::Grpc(client, authorization) => {
                let mut request = tonic::Request::new(PublishRequest {
                    channels: vec![plan.topic.clone()],
                    r#type: "bench.tick".into(),
                    payload: Some(payload(n, &filler)),
                    ..Default::default()
                });
                request
                    .metadata_mut()
                    .insert("authorization", authorization.clone());
                match client.publish(request).await {
                    Ok(answer) => {
                        for event in answer.into_inner().events {
                            if let Some(position) = event.position {
                                published.insert(position.offset, sent);
                            }
                        }
                    }
                    Err(status) => errors.push(format!("Publish: {status}")),
                }
            }
            Publisher::Baseline(baseline) => {
                match baseline.publish(&plan.topic, n, plan.payload_bytes).await {
                    Ok(offset) => {
                        published.insert(offset, sent);
                    }
                    Err(error) => errors.push(format!("baseline publish: {error}")),
                }
            }
        }
    }
    Ok((published, errors))
}

/// An event's payload: its number and some filler.
fn payload(n: u64, filler: &str) -> pbjson_types::Struct {
    use pbjson_types::value::Kind;
    let value = |kind| pbjson_types::Value { kind: Some(kind) };
    pbjson_types::Struct {
        fields: [
            ("n".to_owned(), value(Kind::NumberValue(n as f64))),
            (
                "text".to_owned(),
                value(Kind::StringValue(filler.to_owned())),
            ),
        ]
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_read_from_event_frames_only() {
        let event = br#"{"type":"event","id":"t","event":{"channel":"topic:b","namespace":"NAMESPACE_NOTIFICATIONS","offset":"4217","epoch":"e"}}"#;
        assert_eq!(event_offset(event), Some(4217));
        assert_eq!(
            event_offset(br#"{"type":"subscribed","id":"t","subscribed":{"offset":"3"}}"#),
            None
        );
        assert_eq!(event_offset(br#"{"type":"event","event":{}}"#), None);
    }

    #[test]
    fn sockets_spread_over_loopback_addresses() {
        let spread: Vec<IpAddr> = (0..5).map(|i| local_address(i, 3)).collect();
        let expected: Vec<IpAddr> = [
            "127.0.0.1",
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.1",
            "127.0.0.2",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        assert_eq!(spread, expected);
        assert_eq!(local_address(7, 1), "127.0.0.1".parse::<IpAddr>().unwrap());
    }
}
