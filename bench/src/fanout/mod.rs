//! The fan-out benchmark: many authenticated WebSocket subscribers of one
//! topic, and a backend service publishing to it over gRPC at a steady rate;
//! or, to see how the work spreads, of several topics, on several server
//! instances sharing a Redis or a Redis Cluster, whose nodes' CPU time and
//! commands are read too.
//!
//! It measures what the people who run the server ask about: how fast
//! sockets can be opened (upgrade, authentication, subscription), what an
//! idle authenticated socket costs in server memory, how many messages per
//! second reach the subscribers, how long an event takes from the start of
//! its `Publish` call to each subscriber, and whether any is lost.

use std::{
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

use crate::{
    client::SignedIn,
    redis_info::{Reading, RedisNodes, Usage},
    server::ServerProcess,
};

pub mod baseline;
mod deliveries;
mod report;
pub mod spread;
pub mod ws;

pub(crate) use deliveries::{event_channel, event_offset};
pub use report::render;

use deliveries::{Published, Read, Tally};
use ws::{Frame, Socket};

/// The WebSocket route.
const WS_PATH: &str = "/api/v1/ws";
/// The id of every socket's topic subscription.
const SUBSCRIPTION_ID: &str = "t";
/// How long the server is left alone before its idle memory is read.
const SETTLE: Duration = Duration::from_secs(3);
/// How long, where Redis is measured, the sockets sit idle before the
/// first publish: what Redis spends meanwhile (the cluster's gossip,
/// replication pings, the instances' periodic work) is its background,
/// taken out of the publishing window's figures in the "above idle" ones.
const REDIS_IDLE: Duration = Duration::from_secs(10);

/// How the sockets are opened: the command-line flags of every benchmark
/// that opens thousands of them.
#[derive(Debug, Clone, clap::Args)]
pub struct Opening {
    /// Loopback addresses the sockets connect from (127.0.0.1 and up).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub addresses: u8,

    /// Sockets being opened at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub connect_concurrency: u16,
}

/// What the server is started with to take thousands of sockets from a
/// few addresses within seconds.
pub fn server_env() -> Vec<(&'static str, String)> {
    vec![
        // Every socket comes from a few addresses, faster than a person
        // could open them: lift the connection throttle.
        ("STREAM_CONNECTION_LIMIT", "1000000".to_owned()),
        // Thousands of sockets per source address: no per-address cap.
        ("HTTP_MAX_CONNECTIONS_PER_IP", "0".to_owned()),
    ]
}

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
    /// Events published per second to each topic.
    pub rate: u32,
    /// How long events are published.
    pub duration: Duration,
    /// How long to wait after the last publish for deliveries.
    pub drain: Duration,
    /// Bytes of filler in each event's payload.
    pub payload_bytes: usize,
    /// The topics, `topic:<name>`: subscriber i subscribes to topic i mod
    /// their count ([`spread::topic_of`]).
    pub topics: Vec<String>,
}

/// What one row measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The row's name: `memory`, `redis`, `redis ×3`, `cluster ×3`…
    pub backend: String,
    /// Sockets opened, authenticated and subscribed.
    pub subscribers: usize,
    /// How long opening them took.
    pub setup: Duration,
    /// The server's resident memory (every instance's, summed) before the
    /// sockets and after they were idle for a while, in KiB, where /proc
    /// could be read.
    pub resident_kib: Option<(u64, u64)>,
    /// Events published (each topic's count as one each).
    pub published: u64,
    /// Events received (each subscriber counts each event once).
    pub delivered: u64,
    /// Events published but not received by a subscriber, summed.
    pub lost: u64,
    /// From the first publish to the last delivery.
    pub delivery_window: Duration,
    /// Publish→receive latency: p50, p99, max.
    pub latency: (Duration, Duration, Duration),
    /// The server's CPU time (every instance's, summed) while events were
    /// published and delivered.
    pub server_cpu: Option<Duration>,
    /// The part of it in user space: the server's own code, where the rest
    /// is mostly the kernel's sends (and, on loopback, the receiving
    /// side's network stack, which the kernel runs in the sender's
    /// context, so its share moves with timing from run to run).
    pub server_user_cpu: Option<Duration>,
    /// Each instance's share of it, the publisher's first; empty with one
    /// instance.
    pub instance_cpu: Vec<Duration>,
    /// This benchmark's own CPU time (the subscribers and the publisher)
    /// meanwhile: on a shared machine, what the server did not get.
    pub client_cpu: Option<Duration>,
    /// The whole machine's CPU time meanwhile, user space and kernel.
    pub machine_cpu: Option<crate::cpu::Machine>,
    /// What Redis did, where its nodes were measured.
    pub redis: Option<RedisLoad>,
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

    /// The server's CPU time in user space per delivered message.
    pub fn server_user_per_message(&self) -> Option<Duration> {
        let delivered = u32::try_from(self.delivered).ok().filter(|d| *d > 0)?;
        Some(self.server_user_cpu? / delivered)
    }

    /// The whole machine's CPU time per delivered message: in user space
    /// and in the kernel (every process, interrupts included).
    pub fn machine_per_message(&self) -> Option<(Duration, Duration)> {
        let delivered = u32::try_from(self.delivered).ok().filter(|d| *d > 0)?;
        let machine = self.machine_cpu?;
        Some((machine.user / delivered, machine.kernel / delivered))
    }
}

/// What the Redis nodes did in each part of a row ([`crate::redis_info`]).
#[derive(Debug, Clone, Default)]
pub struct RedisLoad {
    /// While the sockets were opened, authenticated and subscribed.
    pub setup: Usage,
    /// While they sat idle before the first publish, and for how long.
    pub idle: (Usage, Duration),
    /// From the first publish to the end of delivery (the window of the
    /// CPU columns), and for how long.
    pub publishing: (Usage, Duration),
    /// On a cluster: how many topics each primary serves, by its name.
    pub topics_per_primary: Vec<(String, usize)>,
}

/// What the subscribers connect to.
pub enum Target<'a> {
    /// `slop-server`, one or more instances on one store: the sockets go
    /// to them round robin ([`spread::instance_of`]), the publisher to the
    /// first; `users` share the sockets round robin; `service_key`
    /// publishes over gRPC.
    Server {
        /// The instances.
        processes: &'a [ServerProcess],
        /// Signed-in users.
        users: &'a [SignedIn],
        /// A key of SERVICE_KEYS.
        service_key: &'a str,
        /// The Redis nodes to read CPU and commands of, if any.
        redis: Option<&'a RedisNodes>,
    },
    /// The minimal fan-out server.
    Baseline(&'a baseline::BaselineProcess),
}

impl Target<'_> {
    /// Where the `i`th of the plan's sockets connects.
    fn addr(&self, i: usize, plan: &Plan) -> Result<SocketAddr, String> {
        match self {
            Self::Server { processes, .. } => {
                let instance = spread::instance_of(i, plan.topics.len(), processes.len());
                Ok(processes.get(instance).ok_or("no server instance")?.addr)
            }
            Self::Baseline(baseline) => Ok(baseline.addr),
        }
    }

    fn resident_kib(&self) -> Result<Option<u64>, String> {
        match self {
            Self::Server { processes, .. } => {
                let mut total = 0;
                for process in *processes {
                    total += process
                        .memory()
                        .ok_or("cannot read the server's memory")?
                        .resident_kib;
                }
                Ok(Some(total))
            }
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

    /// CPU time used so far by each server instance (None where one could
    /// not be read) and by the client.
    fn cpu(&self) -> (Option<Vec<crate::cpu::Used>>, Option<Duration>) {
        let client = crate::cpu::Meter::Process(std::process::id()).read();
        let server = match self {
            Self::Server { processes, .. } => processes
                .iter()
                .map(|process| process.meter().read_split())
                .collect(),
            Self::Baseline(baseline) => baseline.meter().read_split().map(|cpu| vec![cpu]),
        };
        (server, client)
    }

    fn measures_redis(&self) -> bool {
        matches!(self, Self::Server { redis: Some(_), .. })
    }

    /// Every measured Redis node's counters now; None when none are
    /// measured.
    async fn redis(&self) -> Result<Option<Reading>, String> {
        match self {
            Self::Server {
                redis: Some(nodes), ..
            } => Ok(Some(nodes.read().await?)),
            _ => Ok(None),
        }
    }
}

/// Runs the plan against `target`; `name` labels its row.
pub async fn run(plan: &Plan, name: String, target: Target<'_>) -> Result<Outcome, String> {
    let tokens = target.tokens();
    if tokens.is_empty() {
        return Err("no users to open sockets for".into());
    }
    if plan.topics.is_empty() {
        return Err("no topics to subscribe to".into());
    }
    let redis_before_setup = target.redis().await?;
    let before = target.resident_kib()?;
    let started = Instant::now();
    let sockets = open_sockets(plan, &target, &tokens).await?;
    let setup = started.elapsed();
    let topics = match plan.topics.as_slice() {
        [topic] => topic.clone(),
        topics => format!("{} topics", topics.len()),
    };
    eprintln!(
        "{name}: {} sockets subscribed to {topics} in {:.1}s",
        sockets.len(),
        setup.as_secs_f64()
    );
    let redis_after_setup = target.redis().await?;
    let idle_since = Instant::now();
    tokio::time::sleep(if target.measures_redis() {
        REDIS_IDLE
    } else {
        SETTLE
    })
    .await;
    let after = target.resident_kib()?;

    // Every socket reads in its own task, recording when each event came.
    let base = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = watch::channel(false);
    let expected_per_socket = (u64::from(plan.rate) * plan.duration.as_secs().max(1)) as usize;
    let mut readers = JoinSet::new();
    for (i, socket) in sockets {
        let topic = spread::topic_of(i, plan.topics.len());
        readers.spawn(read_events(
            socket,
            (topic, plan.topics[topic].clone()),
            stopped.clone(),
            received.clone(),
            base,
            expected_per_socket,
        ));
    }

    let redis_before_publishing = target.redis().await?;
    let idle = idle_since.elapsed();
    let publishing_since = Instant::now();
    let (cpu_before, client_cpu_before) = target.cpu();
    let machine_before = crate::cpu::Machine::read();
    let (published, publish_errors) = publish(plan, &target, base).await?;
    let expected = published.expected(plan.subscribers);
    let drain_until = Instant::now() + plan.drain;
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (cpu_after, client_cpu_after) = target.cpu();
    let machine_after = crate::cpu::Machine::read();
    let redis_after_publishing = target.redis().await?;
    let publishing = publishing_since.elapsed();
    let _ = stop.send(true);

    let mut tally = Tally {
        latencies: Vec::with_capacity(usize::try_from(expected).unwrap_or_default()),
        errors: publish_errors,
        ..Tally::default()
    };
    while let Some(joined) = readers.join_next().await {
        match joined {
            Ok(read) => tally.add(read, &published),
            Err(error) => tally.errors.push(format!("a reader task failed: {error}")),
        }
    }
    let latency = tally.percentiles();
    let instance_cpu: Vec<Duration> = match (&cpu_before, &cpu_after) {
        (Some(before), Some(after)) if before.len() > 1 => before
            .iter()
            .zip(after)
            .map(|(b, a)| a.since(b).total())
            .collect(),
        _ => Vec::new(),
    };
    let server_cpu = cpu_before.zip(cpu_after).map(|(b, a)| {
        a.into_iter()
            .sum::<crate::cpu::Used>()
            .since(&b.into_iter().sum())
    });
    let redis = match (
        redis_before_setup,
        redis_after_setup,
        redis_before_publishing,
        redis_after_publishing,
    ) {
        (Some(before_setup), Some(after_setup), Some(before), Some(after)) => Some(RedisLoad {
            setup: after_setup.since(&before_setup),
            idle: (before.since(&after_setup), idle),
            publishing: (after.since(&before), publishing),
            topics_per_primary: Vec::new(),
        }),
        _ => None,
    };
    let error_count = tally.errors.len();
    tally.errors.truncate(5);
    Ok(Outcome {
        backend: name,
        subscribers: plan.subscribers,
        setup,
        resident_kib: before.zip(after),
        published: published.len(),
        delivered: tally.delivered,
        lost: expected.saturating_sub(tally.delivered),
        delivery_window: tally.last_delivery.saturating_sub(published.first()),
        latency,
        server_cpu: server_cpu.map(|used| used.total()),
        server_user_cpu: server_cpu.map(|used| used.user),
        instance_cpu,
        client_cpu: client_cpu_before
            .zip(client_cpu_after)
            .map(|(b, a)| a.saturating_sub(b)),
        machine_cpu: machine_before
            .zip(machine_after)
            .map(|(before, after)| after.since(&before)),
        redis,
        errors: (tally.errors, error_count),
    })
}

/// Opens, authenticates and subscribes every socket, `connect_concurrency`
/// at a time; each with its index in the plan. Socket i is the user of
/// `tokens[i % tokens.len()]`'s, subscribed to its topic
/// ([`spread::topic_of`]) besides the user's own channel, which the server
/// adds; it reads the plan's subscribers, addresses, connect concurrency
/// and topics.
pub(crate) async fn open_sockets(
    plan: &Plan,
    target: &Target<'_>,
    tokens: &[String],
) -> Result<Vec<(usize, Socket)>, String> {
    let subscribes: Vec<Arc<str>> = plan
        .topics
        .iter()
        .map(|topic| {
            serde_json::json!({
                "type": "subscribe",
                "id": SUBSCRIPTION_ID,
                "channel": topic,
            })
            .to_string()
            .into()
        })
        .collect();
    let mut opening = JoinSet::new();
    let mut sockets = Vec::with_capacity(plan.subscribers);
    for i in 0..plan.subscribers {
        if opening.len() >= plan.connect_concurrency
            && let Some(opened) = opening.join_next().await
        {
            sockets.push(opened.map_err(|error| error.to_string())??);
        }
        let local = local_address(i, plan.addresses);
        let server = target.addr(i, plan)?;
        let token = tokens[i % tokens.len()].clone();
        let subscribe = subscribes[spread::topic_of(i, subscribes.len())].clone();
        opening.spawn(async move {
            let mut socket = Socket::connect(local, server, WS_PATH, &token).await?;
            socket.send_text(&subscribe).await?;
            subscribed(&mut socket).await?;
            Ok::<_, String>((i, socket))
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

/// Reads one socket's events of its `topic` (index, name) until `stop`.
async fn read_events(
    mut socket: Socket,
    (topic, name): (usize, String),
    mut stop: watch::Receiver<bool>,
    received: Arc<AtomicU64>,
    base: Instant,
    expected: usize,
) -> Read {
    let mut read = Read {
        topic,
        events: Vec::with_capacity(expected),
        errors: Vec::new(),
    };
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.changed() => break,
            frame = socket.next() => frame,
        };
        match frame {
            Ok(Frame::Text) => {
                let at = base.elapsed();
                let text = socket.text();
                if let Some(offset) = event_offset(text) {
                    received.fetch_add(1, Ordering::Relaxed);
                    match event_channel(text) {
                        Some(channel) if channel == name.as_bytes() => {
                            read.events.push((offset, at));
                        }
                        channel => read.errors.push(format!(
                            "an event of {} reached a subscriber of {name}",
                            String::from_utf8_lossy(channel.unwrap_or(b"no channel"))
                        )),
                    }
                } else if text.starts_with(br#"{"type":"error""#) {
                    read.errors.push(String::from_utf8_lossy(text).into_owned());
                    break;
                }
            }
            Ok(Frame::Ping(payload)) => {
                if let Err(error) = socket.pong(&payload).await {
                    read.errors.push(error);
                    break;
                }
            }
            Ok(Frame::Pong) => {}
            Ok(Frame::Close(code, reason)) => {
                read.errors.push(format!("closed: {code} {reason}"));
                break;
            }
            Err(error) => {
                read.errors.push(error);
                break;
            }
        }
    }
    read
}

/// Publishes `rate` events per second to each topic for `duration`: at
/// each tick one `Publish` call per topic (with several topics, the
/// calls of a tick run at once over the one connection), or one event
/// straight into the baseline; answers when each event's publish started
/// (since `base`), and the publishes that failed.
///
/// A call per topic rather than one call naming every topic: the server
/// stores a multi-channel publish in one script on one Redis, but in one
/// script per hash slot on a cluster, so per-event figures of the two
/// would compare unlike work; a call per topic is one script per event on
/// both, the unit a capacity model counts.
async fn publish(
    plan: &Plan,
    target: &Target<'_>,
    base: Instant,
) -> Result<(Published, Vec<String>), String> {
    type Client = NotificationServiceClient<tonic::transport::Channel>;
    enum Publisher<'a> {
        Grpc(
            Client,
            tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
        ),
        Baseline(&'a baseline::BaselineProcess),
    }
    let mut publisher = match target {
        Target::Server {
            processes,
            service_key,
            ..
        } => {
            let server = processes.first().ok_or("no server instance")?.addr;
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
        Target::Baseline(baseline) => {
            if plan.topics.len() != 1 {
                return Err("the baseline serves one topic".into());
            }
            Publisher::Baseline(baseline)
        }
    };
    let count = u64::from(plan.rate) * plan.duration.as_secs().max(1);
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / plan.rate.max(1));
    let filler = "x".repeat(plan.payload_bytes);
    let capacity = usize::try_from(count).unwrap_or_default() * plan.topics.len();
    let mut published = Published::new(plan.topics.len(), capacity);
    let mut errors = Vec::new();
    for n in 0..count {
        ticks.tick().await;
        match &mut publisher {
            Publisher::Grpc(client, authorization) => {
                let mut calls = JoinSet::new();
                for (topic, name) in plan.topics.iter().enumerate() {
                    let mut request = tonic::Request::new(PublishRequest {
                        channels: vec![name.clone()],
                        r#type: "bench.tick".into(),
                        payload: Some(payload(n, &filler)),
                        ..Default::default()
                    });
                    request
                        .metadata_mut()
                        .insert("authorization", authorization.clone());
                    let mut client = client.clone();
                    calls.spawn(async move {
                        let sent = base.elapsed();
                        (topic, sent, client.publish(request).await)
                    });
                }
                while let Some(call) = calls.join_next().await {
                    match call {
                        Ok((topic, sent, Ok(answer))) => {
                            for event in answer.into_inner().events {
                                if let Some(position) = event.position {
                                    published.insert(topic, position.offset, sent);
                                }
                            }
                        }
                        Ok((_, _, Err(status))) => errors.push(format!("Publish: {status}")),
                        Err(error) => errors.push(format!("a Publish task failed: {error}")),
                    }
                }
            }
            Publisher::Baseline(baseline) => {
                let sent = base.elapsed();
                match baseline
                    .publish(&plan.topics[0], n, plan.payload_bytes)
                    .await
                {
                    Ok(offset) => published.insert(0, offset, sent),
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
