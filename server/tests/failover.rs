//! Issue #12's failover run, against the built server as an operator runs
//! it: 500 subscribers on eight channels, a publisher at 50 events/s, and
//! the Redis primary that holds some of those channels killed (SIGKILL)
//! in the middle of it, once on a Redis Cluster (three instances) and once
//! under Sentinel (two instances).
//!
//! What must hold: every acknowledged event reaches every subscriber of
//! its channel, once and in order, unless the subscriber was told
//! `recovered: false` for it; a stream never skips an offset without that
//! message; publishing fails meanwhile only with UNAVAILABLE, and never
//! hangs. What is measured and printed, not asserted (the machine is
//! shared, and the figures go into the notes as they come): how long
//! publishing failed, and how long each subscriber went without hearing
//! from the failed primary's channels.

#[path = "../src/infra/cluster_testing.rs"]
mod cluster_testing;
#[path = "../src/infra/redis_processes.rs"]
mod redis_processes;
#[path = "../src/infra/sentinel_testing.rs"]
mod sentinel_testing;
#[allow(dead_code)] // Each test binary uses its own part of it.
mod support;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, OnceLock},
    time::{Duration, Instant, SystemTime},
};

use slop_api::notification::{
    self, ChannelSubscription, StreamPosition, SubscribeResponse,
    notification_service_client::NotificationServiceClient, subscribe_response::Message,
};
use support::{PATIENCE, Server, SharedStores, auth_client, bearer, notification_client, sign_up};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const SERVICE_KEY: &str = "failover-test-service-key-0123456789abcdefgh";

/// Subscribers, each one Subscribe stream of two channels.
const SUBSCRIBERS: usize = 500;
/// Subscribers sharing one HTTP/2 connection.
const PER_CONNECTION: usize = 25;
/// Users whose tokens the subscribers share.
const USERS: usize = 5;
/// One publish every 20 ms: 50 events/s.
const PUBLISH_EVERY: Duration = Duration::from_millis(20);
/// Steady traffic before the kill.
const STEADY: Duration = Duration::from_secs(3);
/// Traffic after publishing to the failed primary's channels works again.
const AFTER: Duration = Duration::from_secs(3);
/// Publishing must work again within this after the kill.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
/// A call not answered within this hangs.
const HANG: Duration = Duration::from_secs(10);
/// How long subscribers get to hear the last acknowledged events.
const DRAIN: Duration = Duration::from_secs(10);

type Client = NotificationServiceClient<tonic::transport::Channel>;

/// A primary of a 3-primary cluster dies under load; its replica takes
/// over its slots and the instances follow by themselves.
#[tokio::test]
async fn a_cluster_primary_killed_under_load_loses_no_acknowledged_event_in_silence() {
    let mut cluster = tokio::task::spawn_blocking(cluster_testing::RedisCluster::start)
        .await
        .unwrap();
    let stores =
        SharedStores::on_redis(vec![("REDIS_CLUSTER_NODES", cluster.nodes_variable())]).await;
    let mut servers = start_servers(&stores, &["failover-a", "failover-b", "failover-c"]).await;

    // Four channels on the primary that dies, two on each of the others.
    let victim = cluster.primary_for(&stream_key("topic:failover-0"));
    let mut doomed = Vec::new();
    let mut spared: HashMap<u16, Vec<String>> = HashMap::new();
    for i in 0.. {
        let topic = format!("topic:failover-{i}");
        let primary = cluster.primary_for(&stream_key(&topic));
        if primary == victim {
            if doomed.len() < 4 {
                doomed.push(topic);
            }
        } else if spared.get(&primary).is_none_or(|topics| topics.len() < 2) {
            spared.entry(primary).or_default().push(topic);
        }
        if doomed.len() == 4 && spared.values().map(Vec::len).sum::<usize>() == 4 {
            break;
        }
    }
    let failing: HashSet<String> = doomed.iter().cloned().collect();
    let mut channels = doomed;
    channels.extend(spared.into_values().flatten());

    Load {
        label: "cluster",
        addrs: servers.iter().map(|server| server.addr.clone()).collect(),
        tokens: user_tokens(&servers[0].addr).await,
        channels,
        failing,
    }
    .run(|| cluster.kill(victim))
    .await;

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_until_healthy();
        cluster
    })
    .await
    .unwrap();
    assert_ne!(
        cluster.primary_for(&stream_key("topic:failover-0")),
        victim,
        "a replica serves the killed primary's slots"
    );
    for server in &mut servers {
        assert_eq!(server.stop().await.code(), Some(0));
    }
    stores.drop_schema().await;
    drop(cluster);
}

/// The primary the Sentinels watch dies under load; they promote its
/// replica and the instances follow by themselves.
#[tokio::test]
async fn a_sentinel_primary_killed_under_load_loses_no_acknowledged_event_in_silence() {
    let mut sentinels = tokio::task::spawn_blocking(sentinel_testing::RedisSentinels::start)
        .await
        .unwrap();
    let stores = SharedStores::on_redis(vec![
        ("REDIS_SENTINELS", sentinels.sentinels_variable()),
        ("REDIS_SENTINEL_MASTER", sentinel_testing::MASTER.into()),
    ])
    .await;
    let mut servers = start_servers(&stores, &["failover-a", "failover-b"]).await;

    // One primary holds every channel.
    let channels: Vec<String> = (0..8).map(|i| format!("topic:failover-{i}")).collect();
    Load {
        label: "sentinel",
        addrs: servers.iter().map(|server| server.addr.clone()).collect(),
        tokens: user_tokens(&servers[0].addr).await,
        failing: channels.iter().cloned().collect(),
        channels,
    }
    .run(|| {
        sentinels.kill_primary();
    })
    .await;

    let sentinels = tokio::task::spawn_blocking(move || {
        sentinels.wait_for_failover();
        sentinels
    })
    .await
    .unwrap();
    for server in &mut servers {
        assert_eq!(server.stop().await.code(), Some(0));
    }
    stores.drop_schema().await;
    drop(sentinels);
}

/// The key of `channel`'s stream, whose hash tag places the channel.
fn stream_key(channel: &str) -> String {
    format!("stream:{{{channel}}}")
}

/// The instances `names` on `stores`, each letting 500 streams come from
/// one address.
async fn start_servers(stores: &SharedStores, names: &[&str]) -> Vec<Server> {
    let mut env = stores.env();
    let keys = format!("tests:{SERVICE_KEY}");
    env.push(("SERVICE_KEYS", &keys));
    env.push(("STREAM_CONNECTION_LIMIT", "1000000"));
    let mut servers = Vec::new();
    for name in names {
        servers.push(Server::start_in(name, &env).await);
    }
    servers
}

/// The access tokens of [`USERS`] new users, signed up through `addr`.
async fn user_tokens(addr: &str) -> Vec<String> {
    let mut auth = auth_client(addr).await;
    let mut tokens = Vec::new();
    for n in 0..USERS {
        let login = sign_up(&mut auth, &format!("subscriber-{n}@example.com")).await;
        tokens.push(login.tokens.unwrap().access_token);
    }
    tokens
}

/// The run both tests share: the instances, the subscribers' tokens, the
/// channels, and which of them live on the primary that is killed.
struct Load {
    label: &'static str,
    addrs: Vec<String>,
    tokens: Vec<String>,
    /// Subscriber `i` follows channels `i % n` and `(i + n / 2) % n`.
    channels: Vec<String>,
    failing: HashSet<String>,
}

/// When the primary was killed: on the test's clock, and on the clock the
/// instances stamp events with.
type KilledAt = Arc<OnceLock<(Instant, SystemTime)>>;

/// Per channel, the last acknowledged position, once publishing stopped.
type Targets = watch::Receiver<Option<Arc<HashMap<String, StreamPosition>>>>;

impl Load {
    /// Subscribes everyone, publishes steadily, calls `kill`, publishes on
    /// until [`AFTER`] past the first acknowledged publish to a failing
    /// channel, lets the subscribers catch up, then prints the figures and
    /// checks every subscriber's record against the acknowledged events.
    async fn run(self, kill: impl FnOnce()) {
        let started = Instant::now();
        let label = self.label;
        let killed_at = KilledAt::default();
        let give_up = CancellationToken::new();
        let (targets_tx, targets) = watch::channel(None);

        let mut connections = Vec::new();
        for n in 0..SUBSCRIBERS.div_ceil(PER_CONNECTION) {
            connections.push(notification_client(&self.addrs[n % self.addrs.len()]).await);
        }
        let (ready_tx, mut ready) = mpsc::channel(SUBSCRIBERS);
        let n = self.channels.len();
        let followers: Vec<_> = (0..SUBSCRIBERS)
            .map(|i| {
                let follows = [i % n, (i + n / 2) % n].map(|c| {
                    let channel = self.channels[c].clone();
                    let failing = self.failing.contains(&channel);
                    (channel, failing)
                });
                let follower = Follower {
                    client: connections[i / PER_CONNECTION].clone(),
                    token: self.tokens[i % self.tokens.len()].clone(),
                    channels: follows,
                    killed_at: killed_at.clone(),
                    targets: targets.clone(),
                    give_up: give_up.clone(),
                    at: HashMap::new(),
                    heard: Heard::default(),
                };
                tokio::spawn(follower.run(ready_tx.clone()))
            })
            .collect();
        drop(ready_tx);
        tokio::time::timeout(PATIENCE, async {
            for _ in 0..SUBSCRIBERS {
                ready.recv().await.expect("every subscriber subscribes");
            }
        })
        .await
        .expect("the subscribers subscribe in time");
        eprintln!(
            "failover[{label}]: {SUBSCRIBERS} subscribers of 2 channels each, on {n} channels ({} on the killed primary), over {} instances, subscribed in {:.1?}",
            self.failing.len(),
            self.addrs.len(),
            started.elapsed()
        );

        let stop_publishing = CancellationToken::new();
        let (answers_tx, mut answers) = mpsc::unbounded_channel();
        let publisher = tokio::spawn(publish(
            notification_client(&self.addrs[0]).await,
            self.channels.clone(),
            stop_publishing.clone(),
            answers_tx,
        ));
        let mut published = Vec::new();
        collect_until(&mut answers, Instant::now() + STEADY, &mut published).await;
        kill();
        let killed = Instant::now();
        killed_at
            .set((killed, SystemTime::now()))
            .expect("killed once");
        let back = loop {
            let answer = tokio::time::timeout_at((killed + RECOVERY_LIMIT).into(), answers.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("[{label}] publishing did not work again within {RECOVERY_LIMIT:?} of the kill")
                })
                .expect("the publisher goes on");
            let back = (answer.sent >= killed
                && self.failing.contains(&answer.channel)
                && matches!(answer.outcome, Outcome::Acked(_)))
            .then(|| answer.sent + answer.took - killed);
            published.push(answer);
            if let Some(back) = back {
                break back;
            }
        };
        collect_until(&mut answers, Instant::now() + AFTER, &mut published).await;
        stop_publishing.cancel();
        while let Some(answer) = answers.recv().await {
            published.push(answer);
        }
        publisher.await.unwrap();

        // Per channel, the acknowledged positions in the order they were
        // answered (so a channel's epochs in the order they began), and the
        // last one for the subscribers to wait for.
        let mut acked: HashMap<String, Vec<StreamPosition>> = HashMap::new();
        for answer in &published {
            if let Outcome::Acked(position) = &answer.outcome {
                acked
                    .entry(answer.channel.clone())
                    .or_default()
                    .push(position.clone());
            }
        }
        let last: HashMap<String, StreamPosition> = acked
            .iter()
            .map(|(channel, positions)| {
                let epoch = &positions.last().expect("one at least").epoch;
                let offset = positions
                    .iter()
                    .filter(|position| &position.epoch == epoch)
                    .map(|position| position.offset)
                    .max()
                    .unwrap_or_default();
                let last = StreamPosition {
                    offset,
                    epoch: epoch.clone(),
                };
                (channel.clone(), last)
            })
            .collect();
        let draining = Instant::now();
        targets_tx.send_replace(Some(Arc::new(last)));
        let deadline = tokio::spawn({
            let give_up = give_up.clone();
            async move {
                tokio::time::sleep(DRAIN).await;
                give_up.cancel();
            }
        });
        let heard: Vec<Heard> = futures_util::future::join_all(followers)
            .await
            .into_iter()
            .map(|heard| heard.expect("a subscriber ends without panicking"))
            .collect();
        deadline.abort();
        let drained = draining.elapsed();

        // Publishing.
        let mut failures: BTreeMap<String, usize> = BTreeMap::new();
        let (mut hung, mut slowest_failure, mut slowest_ack) = (0, Duration::ZERO, Duration::ZERO);
        for answer in &published {
            match &answer.outcome {
                Outcome::Acked(_) => slowest_ack = slowest_ack.max(answer.took),
                Outcome::Failed(status) => {
                    *failures.entry(format!("{:?}", status.code())).or_default() += 1;
                    slowest_failure = slowest_failure.max(answer.took);
                }
                Outcome::Hung => hung += 1,
            }
        }
        let acknowledged: usize = acked.values().map(Vec::len).sum();
        let failed: usize = failures.values().sum();
        eprintln!(
            "failover[{label}]: {} publishes: {acknowledged} acknowledged, {failed} failed {failures:?}, {hung} hung; slowest failure {slowest_failure:.2?}, slowest acknowledgement {slowest_ack:.2?}",
            published.len()
        );
        eprintln!(
            "failover[{label}]: publishing to the killed primary's channels worked again {back:.2?} after the kill"
        );

        // Resuming.
        let mut resumed: Vec<Duration> = heard.iter().filter_map(|h| h.resumed_after).collect();
        resumed.sort_unstable();
        let silent = SUBSCRIBERS - resumed.len();
        if let Some(&max) = resumed.last() {
            eprintln!(
                "failover[{label}]: resume time (kill to the first event published after it on a channel of the killed primary) over {} subscribers: p50 {:.2?}, p99 {:.2?}, max {max:.2?}; {silent} never heard one",
                resumed.len(),
                percentile(&resumed, 50),
                percentile(&resumed, 99),
            );
        }

        // Every subscriber's record against the acknowledged events.
        let mut tally = Tally::default();
        let (mut ends, mut refused, mut hung_subscribes) = (BTreeMap::new(), BTreeMap::new(), 0);
        let mut told_subscribers = 0;
        for (i, heard) in heard.iter().enumerate() {
            let before = tally.told_lost;
            for (channel, log) in &heard.log {
                let acked = acked.get(channel).map_or(&[][..], Vec::as_slice);
                check(
                    &format!("subscriber {i}, {channel}"),
                    log,
                    acked,
                    &mut tally,
                );
            }
            told_subscribers += usize::from(tally.told_lost > before);
            for code in &heard.ends {
                *ends.entry(format!("{code:?}")).or_insert(0) += 1;
            }
            for code in &heard.refused {
                *refused.entry(format!("{code:?}")).or_insert(0) += 1;
            }
            hung_subscribes += heard.hung;
        }
        eprintln!(
            "failover[{label}]: delivered {} events; recovered:false {} times to {told_subscribers} subscribers, excusing {} acknowledged events not delivered; streams ended {ends:?}, resubscribes refused {refused:?}, {hung_subscribes} hung; {} events delivered that no publish acknowledged",
            tally.delivered, tally.told_lost, tally.excused, tally.unacknowledged
        );
        eprintln!(
            "failover[{label}]: lost without recovered:false {}, duplicated {}, out of order {}, offsets skipped without recovered:false {}",
            tally.lost.len(),
            tally.duplicated,
            tally.out_of_order,
            tally.gaps.len()
        );
        eprintln!(
            "failover[{label}]: drained in {drained:.2?}; {:.1?} from the first subscribe",
            started.elapsed()
        );

        assert_eq!(hung, 0, "every publish is answered within {HANG:?}");
        assert!(failed > 0, "the kill made some publishes fail");
        assert_eq!(
            failures.keys().collect::<Vec<_>>(),
            ["Unavailable"],
            "a publish fails only with UNAVAILABLE"
        );
        assert_eq!(
            hung_subscribes, 0,
            "every Subscribe is answered within {HANG:?}"
        );
        assert_eq!(
            silent, 0,
            "every subscriber hears its failing channel again"
        );
        let examples = |what: &[String]| what.iter().take(5).cloned().collect::<Vec<_>>();
        assert!(
            tally.lost.is_empty(),
            "acknowledged, never delivered, never told recovered:false: {:?}",
            examples(&tally.lost)
        );
        assert!(
            tally.gaps.is_empty(),
            "offsets skipped without recovered:false: {:?}",
            examples(&tally.gaps)
        );
        assert_eq!((tally.duplicated, tally.out_of_order), (0, 0));
    }
}

/// Receives publish answers into `into` until `deadline`.
async fn collect_until(
    answers: &mut mpsc::UnboundedReceiver<Publish>,
    deadline: Instant,
    into: &mut Vec<Publish>,
) {
    while let Ok(Some(answer)) = tokio::time::timeout_at(deadline.into(), answers.recv()).await {
        into.push(answer);
    }
}

/// One publish and how it ended.
struct Publish {
    channel: String,
    sent: Instant,
    took: Duration,
    outcome: Outcome,
}

enum Outcome {
    Acked(StreamPosition),
    Failed(tonic::Status),
    /// No answer within [`HANG`].
    Hung,
}

/// Publishes one event every [`PUBLISH_EVERY`] to each of `channels` in
/// turn, not waiting for earlier answers (a failover slows the answers,
/// not the rate offered), until `stop`; then waits for the answers.
async fn publish(
    client: Client,
    channels: Vec<String>,
    stop: CancellationToken,
    answers: mpsc::UnboundedSender<Publish>,
) {
    let mut ticks = tokio::time::interval(PUBLISH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut in_flight = tokio::task::JoinSet::new();
    for channel in channels.iter().cycle() {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let (mut client, channel, answers) = (client.clone(), channel.clone(), answers.clone());
        in_flight.spawn(async move {
            let request = notification::PublishRequest {
                channels: vec![channel.clone()],
                r#type: "tick".into(),
                ..Default::default()
            };
            let sent = Instant::now();
            let outcome = match tokio::time::timeout(
                HANG,
                client.publish(bearer(request, SERVICE_KEY)),
            )
            .await
            {
                Ok(Ok(response)) => Outcome::Acked(
                    response
                        .into_inner()
                        .events
                        .into_iter()
                        .next()
                        .and_then(|event| event.position)
                        .expect("the event's position"),
                ),
                Ok(Err(status)) => Outcome::Failed(status),
                Err(_) => Outcome::Hung,
            };
            let took = sent.elapsed();
            let _ = answers.send(Publish {
                channel,
                sent,
                took,
                outcome,
            });
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

/// One subscriber: one Subscribe stream of two channels, opened again from
/// the last position it saw whenever it ends, until it has heard the last
/// acknowledged event of both (`targets`) or is told to give up.
struct Follower {
    client: Client,
    token: String,
    /// Its channels, and whether each lives on the primary that is killed.
    channels: [(String, bool); 2],
    killed_at: KilledAt,
    targets: Targets,
    give_up: CancellationToken,
    /// Per channel, where to resume: the last event seen, or the position
    /// the last `Subscribed` said live events continue after.
    at: HashMap<String, StreamPosition>,
    heard: Heard,
}

/// What a subscriber heard.
#[derive(Default)]
struct Heard {
    /// Per channel, its `Subscribed` messages and events, in order.
    log: HashMap<String, Vec<Seen>>,
    /// From the kill until the first event published after it on a channel
    /// of the killed primary.
    resumed_after: Option<Duration>,
    /// How its streams ended (`Ok`: without an error).
    ends: Vec<tonic::Code>,
    /// Subscribes refused when it opened a stream again.
    refused: Vec<tonic::Code>,
    /// Subscribes not answered within [`HANG`].
    hung: usize,
}

enum Seen {
    Subscribed {
        position: StreamPosition,
        was_recovering: bool,
        recovered: bool,
    },
    Event(StreamPosition),
}

impl Follower {
    async fn run(mut self, ready: mpsc::Sender<()>) -> Heard {
        let mut stream = self.open().await.expect("subscribe");
        let mut subscribed = 0;
        while subscribed < self.channels.len() {
            let message = support::next_message(&mut stream)
                .await
                .expect("subscribed");
            subscribed += usize::from(matches!(message, Message::Subscribed(_)));
            self.hear(message);
        }
        ready.send(()).await.expect("the test waits");
        while !self.caught_up() {
            let next = tokio::select! {
                () = self.give_up.cancelled() => break,
                Ok(()) = self.targets.changed() => continue,
                next = stream.message() => next,
            };
            match next {
                Ok(Some(SubscribeResponse {
                    message: Some(message),
                })) => self.hear(message),
                Ok(Some(_)) => {}
                end => {
                    self.heard
                        .ends
                        .push(end.err().map_or(tonic::Code::Ok, |status| status.code()));
                    match self.reopen().await {
                        Some(again) => stream = again,
                        None => break,
                    }
                }
            }
        }
        self.heard
    }

    /// A Subscribe stream of its channels, from where it stands in each.
    async fn open(&self) -> Result<tonic::Streaming<SubscribeResponse>, tonic::Status> {
        let request = notification::SubscribeRequest {
            subscriptions: self
                .channels
                .iter()
                .map(|(channel, _)| ChannelSubscription {
                    channel: channel.clone(),
                    namespaces: vec![],
                    resume_from: self.at.get(channel).cloned(),
                })
                .collect(),
        };
        let mut client = self.client.clone();
        Ok(client
            .subscribe(bearer(request, &self.token))
            .await?
            .into_inner())
    }

    /// [`Self::open`] until it works; `None` once told to give up.
    async fn reopen(&mut self) -> Option<tonic::Streaming<SubscribeResponse>> {
        while !self.give_up.is_cancelled() {
            match tokio::time::timeout(HANG, self.open()).await {
                Ok(Ok(stream)) => return Some(stream),
                Ok(Err(status)) => self.heard.refused.push(status.code()),
                Err(_) => self.heard.hung += 1,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    fn hear(&mut self, message: Message) {
        let (channel, seen) = match message {
            Message::Subscribed(subscribed) => {
                let position = subscribed.position.unwrap_or_default();
                // A recovery's missed events follow: where it resumed
                // from still stands.
                if !(subscribed.was_recovering && subscribed.recovered) {
                    self.at.insert(subscribed.channel.clone(), position.clone());
                }
                let seen = Seen::Subscribed {
                    position,
                    was_recovering: subscribed.was_recovering,
                    recovered: subscribed.recovered,
                };
                (subscribed.channel, seen)
            }
            Message::Event(event) => {
                let failing = self
                    .channels
                    .iter()
                    .any(|(channel, failing)| *failing && *channel == event.channel);
                if failing
                    && self.heard.resumed_after.is_none()
                    && let Some((killed, wall)) = self.killed_at.get()
                    && published_at(&event) >= *wall
                {
                    self.heard.resumed_after = Some(killed.elapsed());
                }
                let position = StreamPosition {
                    offset: event.offset,
                    epoch: event.epoch,
                };
                self.at.insert(event.channel.clone(), position.clone());
                (event.channel, Seen::Event(position))
            }
            Message::Heartbeat(_) => return,
        };
        self.heard.log.entry(channel).or_default().push(seen);
    }

    /// Whether it has seen, in every channel, the last acknowledged event
    /// (or been told it stands past it), once publishing stopped.
    fn caught_up(&self) -> bool {
        let targets = self.targets.borrow();
        let Some(targets) = targets.as_ref() else {
            return false;
        };
        self.channels.iter().all(|(channel, _)| {
            targets.get(channel).is_none_or(|last| {
                self.at
                    .get(channel)
                    .is_some_and(|at| at.epoch == last.epoch && at.offset >= last.offset)
            })
        })
    }
}

/// When the instance stamped `event`.
fn published_at(event: &notification::Event) -> SystemTime {
    let time = event.time.unwrap_or_default();
    SystemTime::UNIX_EPOCH
        + Duration::new(
            u64::try_from(time.seconds).unwrap_or_default(),
            u32::try_from(time.nanos).unwrap_or_default(),
        )
}

/// The `percent`th percentile of `sorted` (nearest rank).
fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// The subscribers' records against the acknowledged events, summed.
#[derive(Default)]
struct Tally {
    delivered: usize,
    /// `Subscribed` messages with `recovered: false` (after a resume or
    /// mid-stream).
    told_lost: usize,
    /// Acknowledged events not delivered, after a `recovered: false` that
    /// covers them.
    excused: usize,
    /// Delivered events no publish acknowledged (a publish that failed,
    /// for the client, but was stored).
    unacknowledged: usize,
    /// Acknowledged events neither delivered nor covered by a
    /// `recovered: false`.
    lost: Vec<String>,
    duplicated: usize,
    out_of_order: usize,
    /// Events that did not follow the one before, with no
    /// `recovered: false` between.
    gaps: Vec<String>,
}

/// Checks one subscriber's record of one channel (`who`) against the
/// channel's acknowledged positions (`acked`, in the order answered):
/// each event follows the one before it (the next offset in its epoch)
/// unless a `recovered: false` came between and said where the stream goes
/// on; no event twice; every acknowledged event delivered unless a
/// `recovered: false` covers it: one in a later epoch, or in its own epoch
/// at or past its offset.
fn check(who: &str, log: &[Seen], acked: &[StreamPosition], tally: &mut Tally) {
    let rank = |epoch: &str| {
        acked
            .iter()
            .position(|position| position.epoch == epoch)
            .unwrap_or(usize::MAX)
    };
    let mut at: Option<&StreamPosition> = None;
    let mut delivered = HashSet::new();
    let mut told = Vec::new();
    for seen in log {
        match seen {
            Seen::Subscribed {
                position,
                was_recovering,
                recovered,
            } => {
                if !(*was_recovering && *recovered) {
                    at = Some(position);
                }
                if *was_recovering && !*recovered {
                    told.push(position);
                    tally.told_lost += 1;
                }
            }
            Seen::Event(event) => {
                if !delivered.insert((event.epoch.as_str(), event.offset)) {
                    tally.duplicated += 1;
                    continue;
                }
                tally.delivered += 1;
                let follows = |at: &StreamPosition| {
                    (at.epoch == event.epoch && event.offset == at.offset + 1)
                        || (at.epoch.is_empty() && at.offset == 0 && event.offset == 1)
                };
                match at {
                    Some(at) if follows(at) => {}
                    Some(at) if at.epoch == event.epoch && event.offset < at.offset => {
                        tally.out_of_order += 1;
                    }
                    _ => tally.gaps.push(format!(
                        "{who}: {at:?}, then {}/{}",
                        event.epoch, event.offset
                    )),
                }
                at = Some(event);
            }
        }
    }
    let mut acknowledged = HashSet::new();
    for event in acked {
        acknowledged.insert((event.epoch.as_str(), event.offset));
        if delivered.contains(&(event.epoch.as_str(), event.offset)) {
            continue;
        }
        let covered = told.iter().any(|lost| {
            if lost.epoch == event.epoch {
                event.offset <= lost.offset
            } else {
                rank(&event.epoch) < rank(&lost.epoch)
            }
        });
        if covered {
            tally.excused += 1;
        } else {
            tally.lost.push(format!(
                "{who}: {}/{} acknowledged",
                event.epoch, event.offset
            ));
        }
    }
    tally.unacknowledged += delivered.difference(&acknowledged).count();
}

/// The check itself, on records made up: the failover tests pass only if
/// it can fail.
#[test]
fn the_check_finds_offsets_skipped_in_silence_duplicates_and_lost_events() {
    let at = |epoch: &str, offset| StreamPosition {
        offset,
        epoch: epoch.into(),
    };
    let event = |epoch: &str, offset| Seen::Event(at(epoch, offset));
    let subscribed = |epoch: &str, offset, was_recovering, recovered| Seen::Subscribed {
        position: at(epoch, offset),
        was_recovering,
        recovered,
    };
    let acked = [at("a", 1), at("a", 2), at("a", 3), at("b", 1), at("b", 2)];
    let tally = |log: &[Seen]| {
        let mut tally = Tally::default();
        check("s", log, &acked, &mut tally);
        tally
    };

    // a/3 died with the primary, and the new epoch b was announced.
    let told = tally(&[
        subscribed("", 0, false, false),
        event("a", 1),
        event("a", 2),
        subscribed("b", 0, true, false),
        event("b", 1),
        event("b", 2),
    ]);
    assert_eq!((told.lost.len(), told.gaps.len(), told.excused), (0, 0, 1));
    assert_eq!((told.delivered, told.told_lost), (4, 1));

    // The same without the announcement: a gap, and a/3 lost.
    let silent = tally(&[
        subscribed("", 0, false, false),
        event("a", 1),
        event("a", 2),
        event("b", 1),
        event("b", 2),
    ]);
    assert_eq!((silent.lost.len(), silent.gaps.len()), (1, 1));

    // An announcement covers what came before it, not what follows it.
    let late = tally(&[
        subscribed("", 0, false, false),
        event("a", 1),
        subscribed("a", 2, true, false),
        event("a", 3),
        event("b", 2),
    ]);
    assert_eq!((late.excused, late.lost.len(), late.gaps.len()), (1, 1, 1));

    // A resumed stream that recovers gives the missed events, once, in
    // order.
    let resumed = tally(&[
        subscribed("", 0, false, false),
        event("a", 1),
        subscribed("a", 3, true, true),
        event("a", 2),
        event("a", 2),
        event("a", 3),
        event("a", 1),
    ]);
    assert_eq!((resumed.duplicated, resumed.out_of_order), (2, 0));
    assert_eq!(resumed.lost.len(), 2, "b/1 and b/2");

    let shuffled = tally(&[
        subscribed("", 0, false, false),
        event("a", 2),
        event("a", 1),
    ]);
    assert_eq!((shuffled.out_of_order, shuffled.gaps.len()), (1, 1));
}
