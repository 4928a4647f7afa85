//! Faults as tests: Redis killed and restarted empty, Redis paused, an
//! instance killed under its sockets. Each test starts its own Redis on a
//! free port (so nothing shared is touched) and asserts counts, not timings:
//! per subscriber, every acknowledged event is delivered once, or falls in a
//! gap the stream announced with `recovered: false`; no offset is skipped
//! without it; nothing is delivered twice.

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use slop_api::notification::{
    ChannelSubscription, Event, PublishRequest, StreamPosition, SubscribeRequest, Subscribed,
    notification_service_client::NotificationServiceClient, subscribe_response::Message,
};
use tonic::transport::Channel;

use crate::harness::{PATIENCE, SERVICE_KEY, TestServer, bearer, get};

/// A `redis-server` of the test's own on a free loopback port, killed (and
/// its directory removed) when dropped.
pub struct RedisProcess {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisProcess {
    /// Starts one on a free port.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("slop-e2e-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis directory");
        let mut redis = Self {
            child: None,
            port,
            dir,
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port, empty (nothing is saved).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start redis-server ({error}): the fault tests need Redis 7's redis-server on PATH")
            });
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "redis-server did not listen on port {} within 5 s",
            self.port
        );
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal}");
    }

    /// SIGSTOP: the process stops answering, its connections stay open.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A stopped process must run again to die of anything but KILL;
            // KILL works on it anyway.
            self.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisProcess {
    /// `CLIENT LIST`: one line per connection, the asking one included.
    /// Spoken in RESP by hand, as this crate has no Redis client.
    pub fn client_list(&self) -> Vec<String> {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.write_all(b"CLIENT LIST\r\n").expect("send");
        let mut reader = BufReader::new(stream);
        let mut header = String::new();
        reader.read_line(&mut header).expect("the reply's header");
        let length: usize = header
            .trim_end()
            .strip_prefix('$')
            .and_then(|length| length.parse().ok())
            .unwrap_or_else(|| panic!("a bulk string, got {header:?}"));
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("the reply");
        String::from_utf8(body)
            .expect("text")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// One instance holds two connections to Redis whatever it does, named
/// after its key prefix: one for commands (sessions, rate limits, streams,
/// health) and one for pub/sub (session revocations and live events). It
/// held up to six before they shared one context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_holds_two_redis_connections_whatever_it_does() {
    use slop_api::auth::{self, auth_service_client::AuthServiceClient};
    let redis = RedisProcess::start();
    let url = redis.url();
    let server = TestServer::start_with(|config| {
        config.redis_url = Some(url);
        config.redis_key_prefix = "count:".into();
    })
    .await;
    readiness_becomes(&server, true, PATIENCE).await;
    // Every store at work: sessions and rate limits (sign-up, login, a
    // refused login, logout), streams (a subscription and publishes),
    // health.
    let signed_in = crate::harness::sign_up(&server, "count@example.com").await;
    let mut auth = AuthServiceClient::new(server.channel().await);
    let refused = auth
        .login(auth::LoginRequest {
            email: "count@example.com".into(),
            password: "not the password".into(),
        })
        .await;
    assert!(refused.is_err());
    let channels = channels("count");
    let follower = follow(&server, &channels).await;
    let (acked, _) = publish_many(&server, &channels, 0, 8, false, 1).await;
    let (delivered, _) = finish_and_check(&server, &channels, vec![follower], &acked).await;
    assert_eq!(delivered, acked.len() + CHANNELS);
    auth.logout(bearer(
        auth::LogoutRequest::default(),
        &signed_in.access_token,
    ))
    .await
    .expect("logout");
    assert_eq!(get(&server.url("/health/ready")).await.status, 200);

    let list = redis.client_list();
    let mut names: Vec<&str> = list
        .iter()
        .filter(|line| !line.contains("cmd=client|list"))
        .map(|line| {
            line.split(' ')
                .find_map(|field| field.strip_prefix("name="))
                .unwrap_or_default()
        })
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["count:commands", "count:pubsub"], "{list:#?}");
}

/// One acknowledged publish: its channel, position and logical number.
#[derive(Debug, Clone)]
struct Acked {
    channel: String,
    epoch: String,
    offset: u64,
}

/// Publishes message number `n` to `channel` (with the idempotency key
/// `msg-<n>` when `idempotent`) until it is acknowledged or `attempts` run
/// out; answers the acknowledgement.
async fn publish(
    client: &mut NotificationServiceClient<Channel>,
    channel: &str,
    n: u64,
    kind: &str,
    idempotent: bool,
    attempts: usize,
) -> Option<(Acked, bool)> {
    let mut payload = pbjson_types::Struct::default();
    payload
        .fields
        .insert("n".into(), pbjson_types::Value::from(n as f64));
    let request = PublishRequest {
        channels: vec![channel.into()],
        r#type: kind.into(),
        payload: Some(payload),
        idempotency_key: if idempotent {
            format!("msg-{n}")
        } else {
            String::new()
        },
        ..Default::default()
    };
    for _ in 0..attempts {
        match tokio::time::timeout(
            PATIENCE,
            client.publish(bearer(request.clone(), SERVICE_KEY)),
        )
        .await
        {
            Ok(Ok(response)) => {
                let event = response.into_inner().events.remove(0);
                let position = event.position.expect("a position");
                return Some((
                    Acked {
                        channel: channel.into(),
                        epoch: position.epoch,
                        offset: position.offset,
                    },
                    event.duplicate,
                ));
            }
            Ok(Err(status)) => {
                assert_eq!(
                    status.code(),
                    tonic::Code::Unavailable,
                    "a publish during an outage fails UNAVAILABLE: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => panic!("a publish hung for {PATIENCE:?}"),
        }
    }
    None
}

/// What one subscriber received, per channel, in order.
type Received = BTreeMap<String, Vec<Message>>;

/// A service's stream of `channels`, collected until every channel brought
/// an event of type `final`.
async fn follow(server: &TestServer, channels: &[String]) -> tokio::task::JoinHandle<Received> {
    let mut client = NotificationServiceClient::new(server.channel().await);
    let request = SubscribeRequest {
        subscriptions: channels
            .iter()
            .map(|channel| ChannelSubscription {
                channel: channel.clone(),
                ..Default::default()
            })
            .collect(),
    };
    let mut stream = client
        .subscribe(bearer(request, SERVICE_KEY))
        .await
        .expect("subscribe")
        .into_inner();
    let channels = channels.to_vec();
    tokio::spawn(async move {
        let mut received = Received::new();
        let mut finished = HashSet::new();
        while finished.len() < channels.len() {
            let message = stream
                .message()
                .await
                .expect("the stream stays up")
                .expect("the stream goes on")
                .message
                .expect("a message");
            let channel = match &message {
                Message::Subscribed(s) => s.channel.clone(),
                Message::Event(e) => {
                    if e.r#type == "final" {
                        finished.insert(e.channel.clone());
                    }
                    e.channel.clone()
                }
                Message::Heartbeat(_) => continue,
            };
            received.entry(channel).or_default().push(message);
        }
        received
    })
}

/// Checks one subscriber's messages of one channel against what was
/// acknowledged: answers (delivered, announced as lost).
fn check(channel: &str, messages: &[Message], acked: &[Acked]) -> (usize, usize) {
    let Some(Message::Subscribed(first)) = messages.first() else {
        panic!("{channel}: the stream starts with subscribed");
    };
    let start = first.position.clone().unwrap_or_default();
    let mut last = start.clone();
    let mut announced = false;
    let mut delivered: HashSet<(String, u64)> = HashSet::new();
    // Ranges announced as lost: (epoch, after, up to and including).
    let mut gaps: Vec<(String, u64, u64)> = Vec::new();
    for message in &messages[1..] {
        match message {
            Message::Subscribed(Subscribed {
                position: Some(position),
                recovered: false,
                ..
            }) => {
                if position.epoch == last.epoch {
                    gaps.push((last.epoch.clone(), last.offset, position.offset));
                } else {
                    gaps.push((last.epoch.clone(), last.offset, u64::MAX));
                    gaps.push((position.epoch.clone(), 0, position.offset));
                }
                last = position.clone();
                announced = true;
            }
            // A resume that recovered everything: the events follow on.
            Message::Subscribed(Subscribed {
                recovered: true, ..
            }) => {}
            Message::Event(Event { epoch, offset, .. }) => {
                // A channel nobody had published to (no epoch, offset 0)
                // continues into its first epoch.
                let first_epoch = last.epoch.is_empty() && last.offset == 0 && *offset == 1;
                let follows = first_epoch || (*epoch == last.epoch && *offset == last.offset + 1);
                assert!(
                    follows || announced,
                    "{channel}: offset {offset}@{epoch} after {}@{} with no recovered: false",
                    last.offset,
                    last.epoch
                );
                assert!(
                    delivered.insert((epoch.clone(), *offset)),
                    "{channel}: {offset}@{epoch} delivered twice"
                );
                last = StreamPosition {
                    offset: *offset,
                    epoch: epoch.clone(),
                };
                announced = false;
            }
            other => panic!("{channel}: unexpected {other:?}"),
        }
    }
    let mut lost = 0;
    for event in acked.iter().filter(|a| a.channel == channel) {
        let before_start = event.epoch == start.epoch && event.offset <= start.offset;
        if before_start || delivered.contains(&(event.epoch.clone(), event.offset)) {
            continue;
        }
        assert!(
            gaps.iter().any(|(epoch, after, upto)| *epoch == event.epoch
                && event.offset > *after
                && event.offset <= *upto),
            "{channel}: acknowledged {}@{} neither delivered nor announced lost",
            event.offset,
            event.epoch
        );
        lost += 1;
    }
    (delivered.len(), lost)
}

/// Polls readiness until it is `ready`.
async fn readiness_becomes(server: &TestServer, ready: bool, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let status = get(&server.url("/health/ready")).await.status;
        if (status == 200) == ready {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness did not become {ready} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Once readiness says 200 again, a subscription starts at once.
async fn ready_means_subscriptions_work(server: &TestServer, channels: &[String]) {
    readiness_becomes(server, true, Duration::from_secs(30)).await;
    let mut client = NotificationServiceClient::new(server.channel().await);
    let request = SubscribeRequest {
        subscriptions: vec![ChannelSubscription {
            channel: channels[0].clone(),
            ..Default::default()
        }],
    };
    let mut stream = client
        .subscribe(bearer(request, SERVICE_KEY))
        .await
        .expect("a subscription starts as soon as the server is ready")
        .into_inner();
    let first = stream.message().await.expect("a first message").unwrap();
    assert!(matches!(first.message, Some(Message::Subscribed(_))));
}

const CHANNELS: usize = 4;
const SUBSCRIBERS: usize = 5;

fn channels(name: &str) -> Vec<String> {
    (0..CHANNELS).map(|i| format!("topic:{name}-{i}")).collect()
}

/// Publishes `count` messages round-robin over `channels`, numbered from
/// `from`, each retried (with its idempotency key when `idempotent`) up to
/// `attempts` times; answers what was acknowledged and how many answers
/// were duplicates.
async fn publish_many(
    server: &TestServer,
    channels: &[String],
    from: u64,
    count: u64,
    idempotent: bool,
    attempts: usize,
) -> (Vec<Acked>, usize) {
    let mut client = NotificationServiceClient::new(server.channel().await);
    let mut acked = Vec::new();
    let mut duplicates = 0;
    for n in from..from + count {
        let channel = &channels[n as usize % channels.len()];
        if let Some((ack, duplicate)) =
            publish(&mut client, channel, n, "x", idempotent, attempts).await
        {
            acked.push(ack);
            duplicates += usize::from(duplicate);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (acked, duplicates)
}

/// Sends each channel its `final` event and checks every subscriber.
async fn finish_and_check(
    server: &TestServer,
    channels: &[String],
    subscribers: Vec<tokio::task::JoinHandle<Received>>,
    acked: &[Acked],
) -> (usize, usize) {
    let mut client = NotificationServiceClient::new(server.channel().await);
    for channel in channels {
        publish(&mut client, channel, u64::MAX, "final", false, 1)
            .await
            .expect("the final publish succeeds");
    }
    let (mut delivered, mut lost) = (0, 0);
    for subscriber in subscribers {
        let received = tokio::time::timeout(Duration::from_secs(30), subscriber)
            .await
            .expect("every subscriber gets its final events")
            .expect("the subscriber task");
        for channel in channels {
            let (d, l) = check(channel, &received[channel], acked);
            delivered += d;
            lost += l;
        }
    }
    (delivered, lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_publish_and_restarted_empty_loses_nothing_in_silence() {
    let mut redis = RedisProcess::start();
    let url = redis.url();
    let server = TestServer::start_with(|config| {
        config.redis_url = Some(url);
        config.health_check_interval = Duration::from_millis(200);
    })
    .await;
    let channels = channels("kill");
    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        subscribers.push(follow(&server, &channels).await);
    }
    let (mut acked, _) = publish_many(&server, &channels, 0, 40, false, 1).await;
    assert_eq!(acked.len(), 40, "every publish before the fault succeeds");

    redis.kill();
    let down_since = tokio::time::Instant::now();
    let (during, _) = publish_many(&server, &channels, 40, 10, false, 1).await;
    assert!(
        during.is_empty(),
        "nothing is acknowledged while Redis is down"
    );
    readiness_becomes(&server, false, Duration::from_secs(10)).await;
    // Down for 10 s: longer than the listener's health check and back-off.
    tokio::time::sleep_until(down_since + Duration::from_secs(10)).await;

    redis.restart();
    ready_means_subscriptions_work(&server, &channels).await;
    let (after, _) = publish_many(&server, &channels, 50, 40, false, 20).await;
    assert_eq!(after.len(), 40, "publishing works again");
    acked.extend(after);

    let (delivered, lost) = finish_and_check(&server, &channels, subscribers, &acked).await;
    // Every acknowledged event reached every subscriber: what Redis lost
    // was never acknowledged, and the new epoch was announced.
    assert_eq!(lost, 0);
    assert_eq!(delivered, SUBSCRIBERS * (acked.len() + CHANNELS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_loses_nothing_in_silence_and_retries_publish_once() {
    let redis = RedisProcess::start();
    let url = redis.url();
    let server = TestServer::start_with(|config| {
        config.redis_url = Some(url);
        config.health_check_interval = Duration::from_millis(200);
    })
    .await;
    let channels = channels("pause");
    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        subscribers.push(follow(&server, &channels).await);
    }
    let (mut acked, _) = publish_many(&server, &channels, 0, 30, true, 1).await;
    assert_eq!(acked.len(), 30);

    // Publishing goes on, retrying with the same key, while Redis is paused
    // for 15 s: publishes time out (UNAVAILABLE) but are applied once Redis
    // runs again; the retries must not apply them twice.
    let publisher = {
        let channel = server.channel().await;
        let channels = channels.clone();
        tokio::spawn(async move {
            let mut client = NotificationServiceClient::new(channel);
            let mut acked = Vec::new();
            let mut duplicates = 0;
            for n in 30..60 {
                let channel = &channels[n as usize % channels.len()];
                let (ack, duplicate) = publish(&mut client, channel, n, "x", true, 100)
                    .await
                    .expect("acknowledged once Redis runs again");
                acked.push(ack);
                duplicates += usize::from(duplicate);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (acked, duplicates)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.pause();
    readiness_becomes(&server, false, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    redis.resume();
    ready_means_subscriptions_work(&server, &channels).await;
    let (during, duplicates) = publisher.await.expect("the publisher");
    acked.extend(during);
    assert_eq!(acked.len(), 60);

    let (delivered, lost) = finish_and_check(&server, &channels, subscribers, &acked).await;
    let numbers: HashSet<(String, u64)> = acked
        .iter()
        .map(|a| (a.channel.clone(), a.offset))
        .collect();
    assert_eq!(
        numbers.len(),
        60,
        "each message stored once ({duplicates} retries deduplicated)"
    );
    assert_eq!(
        delivered + lost,
        SUBSCRIBERS * (60 + CHANNELS),
        "every message reached every subscriber once, or was announced lost"
    );
}

/// A server on a runtime of its own, so the test can kill it as a crash
/// would: every task and socket of it dropped at once, no close frames.
struct Doomed {
    runtime: Option<tokio::runtime::Runtime>,
    addr: std::net::SocketAddr,
}

impl Doomed {
    fn start(config: slop_server::Config) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            slop_server::run(config, listener, std::future::pending()).await
        });
        Self {
            runtime: Some(runtime),
            addr,
        }
    }

    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Doomed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One socket's life: follows `channel` on `first`, and when that instance
/// dies, resumes on `second` from the last event it saw; answers what it
/// received once the `final` event came.
async fn socket_following(
    first: std::net::SocketAddr,
    second: std::net::SocketAddr,
    token: String,
    channel: String,
    started: tokio::sync::mpsc::Sender<()>,
) -> (Vec<Message>, usize) {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};
    let mut received: Vec<Message> = Vec::new();
    let mut resume: Option<StreamPosition> = None;
    for (attempt, addr) in [first, second].into_iter().enumerate() {
        let mut request = format!("ws://{addr}/api/v1/ws")
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("upgrade");
        let mut subscription = serde_json::json!({"channel": channel});
        if let Some(position) = &resume {
            subscription["resumeFrom"] =
                serde_json::json!({"offset": position.offset.to_string(), "epoch": position.epoch});
        }
        let frame =
            serde_json::json!({"type": "subscribe", "id": "t", "subscriptions": [subscription]});
        socket
            .send(tungstenite::Message::Text(frame.to_string().into()))
            .await
            .expect("send subscribe");
        loop {
            let text = match socket.next().await {
                Some(Ok(tungstenite::Message::Text(text))) => text,
                Some(Ok(_)) => continue,
                // The instance died under the socket.
                None | Some(Err(_)) => break,
            };
            let frame: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            if frame["id"] != "t" {
                continue;
            }
            match frame["type"].as_str() {
                Some("subscribed") => {
                    let subscribed: Subscribed =
                        serde_json::from_value(frame["subscribed"].clone()).expect("Subscribed");
                    if attempt == 0 {
                        let _ = started.send(()).await;
                        resume = subscribed.position.clone();
                    }
                    received.push(Message::Subscribed(subscribed));
                }
                Some("event") => {
                    let event: Event =
                        serde_json::from_value(frame["event"].clone()).expect("Event");
                    resume = Some(StreamPosition {
                        offset: event.offset,
                        epoch: event.epoch.clone(),
                    });
                    let done = event.r#type == "final";
                    received.push(Message::Event(event));
                    if done {
                        return (received, attempt);
                    }
                }
                other => panic!("unexpected frame {other:?}: {frame}"),
            }
        }
    }
    panic!("{channel}: the socket ended before its final event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_under_500_sockets_loses_and_repeats_nothing_on_resume() {
    const SOCKETS: usize = 500;
    const TOPICS: usize = 10;
    let redis = crate::harness::require_redis().await;
    // One deployment of two instances: one Redis prefix.
    let prefix = format!(
        "slop-e2e-doomed-{}-{:?}:",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let survivor = TestServer::start_with(|config| {
        config.redis_url = Some(redis.clone());
        config.redis_key_prefix = prefix.clone();
        config.stream_connection_limit = 100_000;
        // Every socket comes from 127.0.0.1.
        config.http_max_connections_per_ip = 0;
    })
    .await;
    let user = crate::harness::sign_up(&survivor, "doomed@example.com").await;
    let mut doomed = {
        let scratch = std::env::temp_dir().join(format!("slop-e2e-doomed-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).expect("scratch");
        let mut config = crate::harness::test_config(&scratch);
        config.redis_url = Some(redis.clone());
        config.stream_connection_limit = 100_000;
        config.http_max_connections_per_ip = 0;
        config.redis_key_prefix = prefix.clone();
        Doomed::start(config)
    };
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("topic:doomed-{i}")).collect();
    let (started, mut ready) = tokio::sync::mpsc::channel(SOCKETS);
    let sockets: Vec<_> = (0..SOCKETS)
        .map(|i| {
            tokio::spawn(socket_following(
                doomed.addr,
                survivor.addr,
                user.access_token.clone(),
                topics[i % TOPICS].clone(),
                started.clone(),
            ))
        })
        .collect();
    for _ in 0..SOCKETS {
        tokio::time::timeout(Duration::from_secs(60), ready.recv())
            .await
            .expect("every socket subscribes on the first instance");
    }

    let (mut acked, _) = publish_many(&survivor, &topics, 0, 100, true, 1).await;
    doomed.kill();
    let (after, _) = publish_many(&survivor, &topics, 100, 100, true, 1).await;
    acked.extend(after);
    assert_eq!(acked.len(), 200);
    let mut client = NotificationServiceClient::new(survivor.channel().await);
    for topic in &topics {
        publish(&mut client, topic, u64::MAX, "final", false, 1)
            .await
            .expect("the final publish");
    }
    let (mut delivered, mut resumed) = (0, 0);
    for (i, socket) in sockets.into_iter().enumerate() {
        let (received, reconnects) = tokio::time::timeout(Duration::from_secs(60), socket)
            .await
            .expect("every socket gets its final event")
            .expect("the socket task");
        resumed += reconnects;
        let (d, lost) = check(&topics[i % TOPICS], &received, &acked);
        assert_eq!(
            lost, 0,
            "history holds the whole outage: nothing may be lost"
        );
        delivered += d;
    }
    assert_eq!(
        resumed, SOCKETS,
        "every socket resumed on the other instance"
    );
    assert_eq!(
        delivered,
        SOCKETS * (acked.len() / TOPICS + 1),
        "each acknowledged event once per socket of its topic"
    );
}
