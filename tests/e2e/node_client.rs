//! A Node backend with the TypeScript client (`clients/typescript`) as its
//! users get it: `clients/typescript/test/node/backend.ts` imports
//! `@slop-studios/client/node` by name, which resolves through the
//! package's `exports` to the built `dist/` (tsc checks it against the
//! built declarations). `scripts/test.sh` builds the package and compiles
//! the program to `clients/typescript/build/test/node/backend.js`. Over
//! native gRPC (HTTP/2) it registers, is refused a login, logs in with a
//! `BearerSession`, follows its channel with a `NotificationFeed` while a
//! service publishes with its key, renews an expired access token (the
//! test moves the server's clock), and logs out, which ends the feed. It
//! prints one JSON line per step; the test follows them in order.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

use crate::harness::{PASSWORD, SERVICE_KEY, TestServer};

/// How long one step of the program may take: Node starts, and a login
/// hashes a password on a shared machine.
const STEP_PATIENCE: Duration = Duration::from_secs(30);

/// The access token lifetime of the test's server.
const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// The Node program, compiled by `npm run check` in clients/typescript.
fn program() -> &'static str {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/typescript/build/test/node/backend.js"
    );
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: the Node client test runs it; `bash scripts/test.sh` makes it, \
         or `cd clients/typescript && npm ci && npm run build && npx tsc -p tsconfig.json`"
    );
    path
}

/// The Node backend, running; killed when dropped.
struct Backend {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// What it printed on stderr so far, for a failure message.
    stderr: Arc<Mutex<String>>,
}

impl Backend {
    fn start(server: &TestServer, email: &str) -> Self {
        let mut child = Command::new("node")
            .arg(program())
            .env("SLOP_API", server.url(""))
            .env("SLOP_EMAIL", email)
            .env("SLOP_PASSWORD", PASSWORD)
            .env("SLOP_SERVICE_KEY", SERVICE_KEY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start node ({error}): the Node client test needs Node.js 20 or later on PATH")
            });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let collected = stderr.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(read @ 1..) = pipe.read(&mut chunk).await {
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..read]));
            }
        });
        Self {
            stdin: child.stdin.take().expect("stdin"),
            stdout: BufReader::new(child.stdout.take().expect("stdout")).lines(),
            child,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The program's next line, which must be step `name`.
    async fn step(&mut self, name: &str) -> Value {
        let line = match tokio::time::timeout(STEP_PATIENCE, self.stdout.next_line()).await {
            Err(_) => panic!(
                "the Node backend printed no {name:?} within {STEP_PATIENCE:?}\nstderr:\n{}",
                self.stderr()
            ),
            Ok(Err(error)) => panic!("cannot read the Node backend's output: {error}"),
            Ok(Ok(None)) => {
                let status = self.child.wait().await.expect("node exit status");
                panic!(
                    "the Node backend ended ({status}) before {name:?}\nstderr:\n{}",
                    self.stderr()
                )
            }
            Ok(Ok(Some(line))) => line,
        };
        let report: Value = serde_json::from_str(&line).unwrap_or_else(|error| {
            panic!("the Node backend printed {line:?}, not a JSON step ({error})")
        });
        if report["step"] == "error" {
            panic!(
                "the Node backend failed before {name:?}: {report}\nstderr:\n{}",
                self.stderr()
            );
        }
        assert_eq!(
            report["step"], name,
            "the Node backend printed {report} where the test expected step {name:?}"
        );
        report
    }

    /// Tells the program to go on (a line on its stdin).
    async fn tell(&mut self, word: &str) {
        self.stdin
            .write_all(format!("{word}\n").as_bytes())
            .await
            .expect("write to the Node backend");
        self.stdin.flush().await.expect("flush");
    }

    /// Waits for it to exit, which it must do successfully.
    async fn finished(mut self) {
        let status = tokio::time::timeout(STEP_PATIENCE, self.child.wait())
            .await
            .expect("the Node backend exits after its last step")
            .expect("node exit status");
        assert!(
            status.success(),
            "the Node backend exited with {status}\nstderr:\n{}",
            self.stderr()
        );
    }
}

#[tokio::test]
async fn a_node_backend_signs_in_follows_its_channel_renews_its_token_and_logs_out_over_grpc_with_the_typescript_client()
 {
    let server = TestServer::start_with(|config| config.jwt_expires_in = ACCESS_TOKEN_TTL).await;
    let email = "node@example.com";
    let mut node = Backend::start(&server, email);

    node.step("register").await;
    // A wrong password: a SlopError with the contract's reason, no tokens.
    let refused = node.step("refused login").await;
    assert_eq!(refused["code"], "UNAUTHENTICATED", "{refused}");
    assert_eq!(refused["reason"], "INVALID_CREDENTIALS", "{refused}");
    assert_eq!(refused["signedIn"], false, "{refused}");

    let login = node.step("login").await;
    let user_id = login["userId"].as_str().unwrap_or_default().to_owned();
    let session_id = login["sessionId"].clone();
    assert!(!user_id.is_empty(), "{login}");
    assert!(
        session_id.as_str().is_some_and(|id| !id.is_empty()),
        "{login}"
    );
    assert_eq!(login["canRefresh"], true, "{login}");
    assert_eq!(node.step("current user").await["email"], email);
    let sessions = node.step("sessions").await;
    assert_eq!(sessions["ids"], json!([session_id]), "{sessions}");
    assert_eq!(sessions["current"], json!([session_id]), "{sessions}");

    // The user's own channel over Subscribe, and a service's publish to it.
    let own = format!("user:{user_id}");
    let subscribed = node.step("subscribed").await;
    assert_eq!(subscribed["channel"], own, "{subscribed}");
    assert_eq!(subscribed["outcome"], "live", "{subscribed}");
    let published = node.step("published").await;
    assert_eq!(published["channel"], own, "{published}");
    let first: u64 = published["offset"]
        .as_str()
        .and_then(|offset| offset.parse().ok())
        .unwrap_or_else(|| panic!("no offset: {published}"));
    let event = node.step("event").await;
    assert_eq!(
        event,
        json!({"step": "event", "channel": own, "type": "node.hello",
               "offset": first.to_string(), "payload": {"from": "node"}})
    );

    // Past the access token's lifetime (well within the session's): the
    // next call is refused with TOKEN_EXPIRED, and the BearerSession
    // renews the token once and sends the call again.
    node.step("expire the access token").await;
    server
        .clock
        .advance(ACCESS_TOKEN_TTL + Duration::from_secs(60));
    node.tell("expired").await;
    let renewed = node.step("after expiry").await;
    assert_eq!(renewed["email"], email, "{renewed}");
    assert_eq!(renewed["renewals"], 1, "one renewal: {renewed}");
    assert_eq!(renewed["newToken"], true, "{renewed}");
    // The feed opened with the old token still follows the channel.
    let published = node.step("published").await;
    assert_eq!(published["offset"], (first + 1).to_string(), "{published}");
    let event = node.step("event").await;
    assert_eq!(event["type"], "node.renewed", "{event}");
    assert_eq!(event["offset"], (first + 1).to_string(), "{event}");

    // Logging out ends the feed: UNAUTHENTICATED with SESSION_ENDED, which
    // the feed reports as signInRequired, without reconnecting.
    assert_eq!(node.step("logged out").await["signedIn"], false);
    let ended = node.step("feed ended").await;
    assert_eq!(ended["code"], "UNAUTHENTICATED", "{ended}");
    assert_eq!(ended["reason"], "SESSION_ENDED", "{ended}");
    assert_eq!(ended["stopped"], true, "the feed stops for good: {ended}");
    node.step("done").await;
    node.finished().await;
}
