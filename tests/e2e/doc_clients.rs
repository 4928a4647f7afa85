//! The JavaScript clients the docs show, run exactly as written there (in
//! Node, with its WebSocket) against the real server: docs/websocket.md's
//! reconnecting client and the migration guide's. Their sockets are dropped
//! and resumed; every event must be handled once, in order, or the client
//! must have been told to reload.

use std::{collections::BTreeMap, path::PathBuf, process::Stdio, time::Duration};

use slop_api::notification::{
    JobProgress, JobState, Namespace, PublishRequest,
    notification_service_client::NotificationServiceClient,
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    process::{Child, ChildStdin, Command},
    sync::mpsc,
};
use tonic::transport::Channel;

use crate::harness::{PATIENCE, SERVICE_KEY, SignedIn, TestServer, bearer, sign_up};

/// A doc's client, running in Node.
struct DocClient {
    _child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<serde_json::Value>,
    /// Every line so far.
    seen: Vec<serde_json::Value>,
}

impl DocClient {
    async fn start(
        server: &TestServer,
        doc: &str,
        heading: &str,
        user: &SignedIn,
        drop_on_welcome: bool,
    ) -> Self {
        let env: &[(&str, &str)] = if drop_on_welcome {
            &[("SLOP_DROP_ON_WELCOME", "1")]
        } else {
            &[]
        };
        Self::start_with(server, doc, heading, user, env).await
    }

    /// [`DocClient::start`] with these variables of doc-client.mjs set.
    async fn start_with(
        server: &TestServer,
        doc: &str,
        heading: &str,
        user: &SignedIn,
        env: &[(&str, &str)],
    ) -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut command = Command::new("node");
        command
            .arg("--experimental-websocket")
            .arg("--no-warnings")
            .arg(root.join("tests/e2e/js/doc-client.mjs"))
            .arg(root.join(doc))
            .arg(heading)
            .env("SLOP_WS_URL", format!("ws://{}/api/v1/ws", server.addr))
            .env("SLOP_TOKEN", &user.access_token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .envs(env.iter().copied());
        let mut child = command.spawn().unwrap_or_else(|error| {
            panic!("cannot run node ({error}): the doc client tests need Node.js 20 or later")
        });
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
                if sender.send(value).is_err() {
                    break;
                }
            }
        });
        Self {
            _child: child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until `done` holds of what was seen.
    async fn until(&mut self, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !done(&self.seen) {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("waited for {what}; the client did {:#?}", self.seen))
                .unwrap_or_else(|| panic!("the client ended; it did {:#?}", self.seen));
            self.seen.push(line);
        }
    }

    /// Closes the client's socket, as a network failure would.
    async fn drop_socket(&mut self) {
        self.stdin.write_all(b"drop\n").await.unwrap();
        self.stdin.flush().await.unwrap();
        let closes = count(&self.seen, "closed");
        self.until("the socket to close", |seen| count(seen, "closed") > closes)
            .await;
    }
}

fn count(seen: &[serde_json::Value], key: &str) -> usize {
    seen.iter().filter(|line| line.get(key).is_some()).count()
}

/// How many `subscribed` frames with this id (None: the automatic
/// subscription's) the client got.
fn subscribed(seen: &[serde_json::Value], id: Option<&str>) -> usize {
    seen.iter()
        .filter(|line| line["frame"] == "subscribed" && line["id"].as_str() == id)
        .count()
}

/// The `n` of each event the client handled, per channel, in order.
fn handled(seen: &[serde_json::Value]) -> BTreeMap<String, Vec<i64>> {
    let mut per_channel: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for line in seen {
        if let Some(event) = line.get("handled") {
            per_channel
                .entry(event["channel"].as_str().unwrap().to_owned())
                .or_default()
                .push(event["payload"]["n"].as_i64().expect("n"));
        }
    }
    per_channel
}

async fn publish(client: &mut NotificationServiceClient<Channel>, channel: &str, n: i64) {
    let mut payload = pbjson_types::Struct::default();
    payload
        .fields
        .insert("n".into(), pbjson_types::Value::from(n as f64));
    client
        .publish(bearer(
            PublishRequest {
                channels: vec![channel.into()],
                r#type: "doc.test".into(),
                payload: Some(payload),
                ..Default::default()
            },
            SERVICE_KEY,
        ))
        .await
        .expect("publish");
}

async fn server() -> TestServer {
    TestServer::start_with(|config| config.stream_connection_limit = 1_000).await
}

#[tokio::test]
async fn the_websocket_docs_client_resumes_every_channel_after_a_drop() {
    let server = server().await;
    let user = sign_up(&server, "doc-client@example.com").await;
    let own = format!("user:{}", user.user_id);
    let mut client = DocClient::start(
        &server,
        "docs/websocket.md",
        "## Reconnecting",
        &user,
        false,
    )
    .await;
    client
        .until("both subscriptions", |seen| {
            subscribed(seen, None) == 1 && subscribed(seen, Some("topic:news")) == 1
        })
        .await;
    let mut publisher = NotificationServiceClient::new(server.channel().await);
    let mut next = BTreeMap::from([(own.clone(), 1), ("topic:news".to_owned(), 1)]);
    let publish_round = async |publisher: &mut NotificationServiceClient<Channel>,
                               next: &mut BTreeMap<String, i64>| {
        for (channel, n) in next.iter_mut() {
            for _ in 0..3 {
                publish(publisher, channel, *n).await;
                *n += 1;
            }
        }
    };
    publish_round(&mut publisher, &mut next).await;
    client
        .until("6 events", |seen| {
            handled(seen).values().flatten().count() == 6
        })
        .await;

    for round in 0..2 {
        client.drop_socket().await;
        // Published while the client is away (it reconnects after 300 ms).
        publish_round(&mut publisher, &mut next).await;
        let expected = 6 * (round + 2);
        client
            .until("the missed events", |seen| {
                handled(seen).values().flatten().count() >= expected
            })
            .await;
    }
    // And live again.
    publish_round(&mut publisher, &mut next).await;
    client
        .until("the live events", |seen| {
            handled(seen).values().flatten().count() >= 24
        })
        .await;
    let handled = handled(&client.seen);
    for (channel, last) in &next {
        assert_eq!(
            handled[channel],
            (1..*last).collect::<Vec<_>>(),
            "{channel}: each event once, in order"
        );
    }
    assert_eq!(count(&client.seen, "reload"), 0, "nothing was lost");
}

/// While Redis is down the server says `welcome`, then closes with 1013 at
/// once (the own channel could not be followed): a client that starts its
/// back-off over at `welcome` would reconnect almost at once, again and
/// again. The docs' client backs off further at each such close.
#[tokio::test]
async fn the_websocket_docs_client_backs_off_further_while_the_server_is_unavailable() {
    backs_off_further_while_the_server_is_unavailable("docs/websocket.md", "## Reconnecting").await;
}

/// The migration guide's client, the same way.
#[tokio::test]
async fn the_migration_guides_client_backs_off_further_while_the_server_is_unavailable() {
    backs_off_further_while_the_server_is_unavailable(
        "docs/migrating-from-socket-io.md",
        "## After",
    )
    .await;
}

async fn backs_off_further_while_the_server_is_unavailable(doc: &str, heading: &str) {
    let server = server().await;
    let user = sign_up(&server, "doc-outage@example.com").await;
    let mut client = DocClient::start_with(
        &server,
        doc,
        heading,
        &user,
        &[("SLOP_UNAVAILABLE_AFTER_WELCOME", "1")],
    )
    .await;
    client
        .until("four reconnects", |seen| count(seen, "wait") >= 4)
        .await;
    let closes: Vec<_> = client.seen.iter().filter_map(|l| l.get("closed")).collect();
    assert!(closes.iter().all(|code| *code == 1013), "{closes:?}");
    let waits: Vec<f64> = client
        .seen
        .iter()
        .filter_map(|line| line.get("wait"))
        .map(|ms| ms.as_f64().expect("milliseconds"))
        .take(4)
        .collect();
    // Math.random() is 0.5: half of 1 s, 2 s, 4 s, 8 s.
    assert_eq!(waits, [500.0, 1000.0, 2000.0, 4000.0], "the back-off grows");
}

/// The `n` of every event the client showed, in order: handled (the
/// WebSocket doc's client) or shown as a toast (the migration guide's).
fn shown(seen: &[serde_json::Value]) -> Vec<i64> {
    seen.iter()
        .filter_map(|line| {
            line.get("handled")
                .map(|event| &event["payload"]["n"])
                .or_else(|| line.get("toast").map(|toast| &toast["n"]))
        })
        .map(|n| n.as_i64().expect("n"))
        .collect()
}

/// A client whose first socket drops the moment it says `welcome` (before
/// the own channel's position arrives): the events published until it is
/// back are handled, or the client is told to reload; never lost in
/// silence.
async fn dropped_right_after_welcome(doc: &str, heading: &str) {
    let server = server().await;
    let user = sign_up(&server, "doc-welcome@example.com").await;
    let own = format!("user:{}", user.user_id);
    let mut client = DocClient::start(&server, doc, heading, &user, true).await;
    client
        .until("the first socket to close", |seen| {
            count(seen, "closed") == 1
        })
        .await;
    // Published after the first welcome, before the second.
    let mut publisher = NotificationServiceClient::new(server.channel().await);
    for n in 1..=3 {
        publish(&mut publisher, &own, n).await;
    }
    client
        .until("the second welcome", |seen| {
            seen.iter().filter(|l| l["frame"] == "welcome").count() == 2
        })
        .await;
    client
        .until("its own channel followed again", |seen| {
            subscribed(seen, None) + subscribed(seen, Some("own")) >= 1
        })
        .await;
    publish(&mut publisher, &own, 4).await;
    client
        .until("the event after the reconnect", |seen| {
            shown(seen).contains(&4)
        })
        .await;
    let reloaded = count(&client.seen, "reload") > 0;
    let got = shown(&client.seen);
    assert!(
        reloaded || got == [1, 2, 3, 4],
        "{doc}: events 1-3 were neither handled ({got:?}) nor announced by a reload"
    );
}

#[tokio::test]
async fn the_websocket_docs_client_dropped_right_after_welcome_reloads_or_loses_nothing() {
    dropped_right_after_welcome("docs/websocket.md", "## Reconnecting").await;
}

#[tokio::test]
async fn the_migration_guides_client_dropped_right_after_welcome_reloads_or_loses_nothing() {
    dropped_right_after_welcome("docs/migrating-from-socket-io.md", "## After").await;
}

#[tokio::test]
async fn the_migration_guides_client_gets_back_what_was_published_while_away() {
    let server = server().await;
    let user = sign_up(&server, "doc-migration@example.com").await;
    let own = format!("user:{}", user.user_id);
    let mut client = DocClient::start(
        &server,
        "docs/migrating-from-socket-io.md",
        "## After",
        &user,
        false,
    )
    .await;
    client
        .until("its own channel", |seen| subscribed(seen, None) == 1)
        .await;
    let mut publisher = NotificationServiceClient::new(server.channel().await);
    let toasts = shown;
    for n in 1..=2 {
        publish(&mut publisher, &own, n).await;
    }
    client
        .until("two notifications", |seen| toasts(seen).len() == 2)
        .await;
    client.drop_socket().await;
    for n in 3..=5 {
        publish(&mut publisher, &own, n).await;
    }
    publisher
        .publish(bearer(
            PublishRequest {
                channels: vec![own.clone()],
                namespace: Namespace::Media as i32,
                r#type: "job.progress".into(),
                job: Some(JobProgress {
                    job_id: "render-1".into(),
                    state: JobState::Running as i32,
                    percent: 40.0,
                    message: String::new(),
                }),
                ..Default::default()
            },
            SERVICE_KEY,
        ))
        .await
        .expect("publish progress");
    client
        .until("what was published while away", |seen| {
            toasts(seen).len() == 5 && count(seen, "progress") == 1
        })
        .await;
    assert_eq!(toasts(&client.seen), [1, 2, 3, 4, 5]);
    let progress = client.seen.iter().find_map(|l| l.get("progress")).unwrap();
    assert_eq!(progress["jobId"], "render-1");
    assert_eq!(progress["percent"], 40);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count(&client.seen, "reload"), 0);
}
