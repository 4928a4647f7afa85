//! A real browser: headless Chromium (Debian's `chromium`, which
//! `scripts/test.sh` installs) loads a page from another origin and uses the
//! server the way a web app does, through CORS: grpc-web unary and server
//! streaming calls, a REST cookie login, the session cookie on the WebSocket
//! upgrade, and a logout protected by the CSRF token, which ends the
//! browser's streams. The page reports each step to the test's page server.

use std::{path::PathBuf, process::Stdio, time::Duration};

use axum::{Router, extract::State, response::Html, routing::get};
use slop_server::infra::config::CorsOrigin;
use tokio::{net::TcpListener, sync::mpsc};

use crate::{
    harness::{PASSWORD, PATIENCE, TestServer, sign_up},
    websocket::publish,
};

/// How long the browser may take to start and load the page.
const BROWSER_PATIENCE: Duration = Duration::from_secs(60);

/// A step the page reports: its name and what it saw.
#[derive(Debug)]
struct Step {
    step: String,
    detail: String,
}

/// The page, for the API at `api` (`http://host:port`) and the account
/// `email`. Its script reports each step to `/report` on its own origin.
fn page(api: &str, email: &str) -> String {
    let script = r#"
const report = (step, detail) =>
  fetch("/report", { method: "POST", body: JSON.stringify({ step, detail: String(detail) }) });
const grpcWeb = { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" };
const emptyMessage = new Uint8Array([0, 0, 0, 0, 0]);
const ascii = (bytes) => Array.from(bytes, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");

// Reads grpc-web frames from a streaming body: a flag byte, a 4-byte length.
async function frames(body, onFrame) {
  const reader = body.getReader();
  let buffer = new Uint8Array(0);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const joined = new Uint8Array(buffer.length + value.length);
    joined.set(buffer);
    joined.set(value, buffer.length);
    buffer = joined;
    while (buffer.length >= 5) {
      const length = new DataView(buffer.buffer, buffer.byteOffset + 1, 4).getUint32(0);
      if (buffer.length < 5 + length) break;
      onFrame(buffer[0], buffer.slice(5, 5 + length));
      buffer = buffer.slice(5 + length);
    }
  }
}

async function main() {
  // grpc-web, unary: the health check (a preflighted cross-origin POST).
  const health = await fetch(API + "/grpc.health.v1.Health/Check",
    { method: "POST", headers: grpcWeb, body: emptyMessage });
  await report("grpc-web health", Array.from(new Uint8Array(await health.arrayBuffer()).slice(0, 7)));

  // REST: log in with cookies, then read the profile by cookie alone.
  // In cookie mode the body carries no token unless asked: this page asks
  // for an access token, for the bearer of its grpc-web stream below.
  const login = await fetch(API + "/api/v1/auth/login?cookie=true&access_token=true", {
    method: "POST", credentials: "include",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: EMAIL, password: PASSWORD }),
  });
  const tokens = (await login.json()).tokens;
  const me = await fetch(API + "/api/v1/auth/me", { credentials: "include" });
  await report("me", me.status + " " + (await me.text()));

  // WebSocket: signed in by the session cookie the upgrade carries.
  const ws = new WebSocket(API.replace("http", "ws") + "/api/v1/ws");
  ws.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    if (frame.type === "subscribed") report("ws subscribed", frame.subscribed.channel);
    if (frame.type === "event") report("ws event", frame.event.type);
  };
  ws.onclose = (close) => report("ws closed", close.code);

  // grpc-web, server streaming: Subscribe to the own channel by bearer token.
  const stream = await fetch(API + "/slop.notification.v1.NotificationService/Subscribe", {
    method: "POST", body: emptyMessage,
    headers: { ...grpcWeb, authorization: "Bearer " + tokens.accessToken },
  });
  let subscribed = false;
  frames(stream.body, (flags, payload) => {
    if (flags & 0x80) {
      report("grpc-web trailers", ascii(payload));
    } else if (!subscribed) {
      subscribed = true;
      report("grpc-web subscribed", ascii(payload));
    } else if (ascii(payload).includes("browser.hello")) {
      report("grpc-web event", "browser.hello");
    }
  }).catch((error) => report("error", "grpc-web stream: " + error));
}

// Asked by the test once both streams have the event: log out by cookie,
// with the CSRF token from the readable cookie.
async function logOut() {
  const csrf = document.cookie.split("; ").find((c) => c.startsWith("slop_csrf=")).split("=")[1];
  const without = await fetch(API + "/api/v1/auth/logout",
    { method: "POST", credentials: "include", headers: { "content-type": "application/json" }, body: "{}" });
  const logout = await fetch(API + "/api/v1/auth/logout", {
    method: "POST", credentials: "include",
    headers: { "content-type": "application/json", "x-csrf-token": csrf }, body: "{}",
  });
  await report("logout", without.status + " " + logout.status);
}

(async () => {
  try {
    await main();
    await fetch("/next");
    await logOut();
  } catch (error) {
    await report("error", error.stack || error);
  }
})();
"#;
    format!(
        "<!doctype html><title>slop browser test</title><script>\nconst API = {api:?};\nconst EMAIL = {email:?};\nconst PASSWORD = {PASSWORD:?};\n{script}</script>"
    )
}

/// What the page server shares with its handlers.
#[derive(Clone)]
struct PageState {
    html: String,
    steps: mpsc::UnboundedSender<Step>,
    /// Released by the test when the page may go on to log out.
    next: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Serves the page and collects its reports, on a port of its own (another
/// origin than the API's).
async fn page_server(
    listener: TcpListener,
    html: String,
) -> (
    mpsc::UnboundedReceiver<Step>,
    std::sync::Arc<tokio::sync::Semaphore>,
) {
    let (steps, reports) = mpsc::unbounded_channel();
    let next = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let state = PageState {
        html,
        steps,
        next: next.clone(),
    };
    let app = Router::new()
        .route(
            "/",
            get(|State(s): State<PageState>| async move { Html(s.html) }),
        )
        .route(
            "/report",
            axum::routing::post(|State(s): State<PageState>, body: String| async move {
                let report: serde_json::Value = serde_json::from_str(&body).expect("a step");
                let text = |key: &str| report[key].as_str().unwrap_or_default().to_owned();
                let _ = s.steps.send(Step {
                    step: text("step"),
                    detail: text("detail"),
                });
            }),
        )
        .route(
            "/next",
            get(|State(s): State<PageState>| async move {
                s.next.acquire().await.expect("open").forget();
            }),
        )
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (reports, next)
}

/// Chromium, headless, in a process group of its own (its helper processes
/// go with it) and a directory of its own (profile and log); killed and
/// removed when dropped.
struct Browser {
    child: std::process::Child,
    dir: PathBuf,
}

impl Browser {
    fn open(url: &str, name: &str) -> Self {
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let dir =
            std::env::temp_dir().join(format!("slop-e2e-chromium-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("browser directory");
        let stderr = std::fs::File::create(dir.join("browser.log")).expect("browser log");
        let child = {
            use std::os::unix::process::CommandExt as _;
            std::process::Command::new(&binary)
                .args([
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-sync",
                ])
                .arg(format!("--user-data-dir={}", dir.join("profile").display()))
                .arg(url)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .process_group(0)
                .spawn()
                .unwrap_or_else(|error| {
                    panic!(
                        "cannot start {binary} ({error}): the browser tests need Debian's chromium; \
                         `bash scripts/test.sh` installs it (or `apt-get install chromium`), \
                         or set CHROMIUM to a Chromium binary"
                    )
                })
        };
        Self { child, dir }
    }

    /// The end of what the browser printed, for a failure message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("browser.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The page open in the browser, as the test follows it.
struct OpenPage {
    reports: mpsc::UnboundedReceiver<Step>,
    /// Reports that came before the test asked for them (each is a request
    /// of its own, so they can arrive in any order).
    early: Vec<Step>,
    browser: Browser,
}

impl OpenPage {
    /// Waits for the page's report of `step`, failing on an `error` report.
    async fn step(&mut self, step: &str, patience: Duration) -> String {
        if let Some(at) = self.early.iter().position(|report| report.step == step) {
            return self.early.remove(at).detail;
        }
        let (reports, early) = (&mut self.reports, &mut self.early);
        let found = tokio::time::timeout(patience, async {
            loop {
                let Some(report) = reports.recv().await else {
                    return Err("the page server stopped".to_owned());
                };
                if report.step == "error" {
                    return Err(format!("the page failed: {}", report.detail));
                }
                if report.step == step {
                    return Ok(report.detail);
                }
                early.push(report);
            }
        })
        .await;
        match found {
            Ok(Ok(detail)) => detail,
            Ok(Err(error)) => panic!("{error}\nbrowser log:\n{}", self.browser.log_tail()),
            Err(_) => panic!(
                "no {step:?} from the page within {patience:?} (it reported {:?})\nbrowser log:\n{}",
                self.early,
                self.browser.log_tail()
            ),
        }
    }
}

#[tokio::test]
async fn a_browser_on_another_origin_uses_grpc_web_rest_cookies_and_the_websocket() {
    let pages = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", pages.local_addr().unwrap());
    let server = TestServer::start_with(|config| {
        config.cors_origin = CorsOrigin::List(vec![origin.clone()]);
    })
    .await;
    let email = "browser@example.com";
    let user = sign_up(&server, email).await;
    let api = format!("http://{}", server.addr);
    let (reports, next) = page_server(pages, page(&api, email)).await;
    let mut page = OpenPage {
        reports,
        early: Vec::new(),
        browser: Browser::open(&format!("{origin}/"), &server.addr.port().to_string()),
    };

    // Frame 0 (a message) of 2 bytes: field 1 = SERVING.
    assert_eq!(
        page.step("grpc-web health", BROWSER_PATIENCE).await,
        "0,0,0,0,2,8,1"
    );
    let me = page.step("me", PATIENCE).await;
    assert!(me.starts_with("200 ") && me.contains(email), "{me}");
    let own = format!("user:{}", user.user_id);
    assert_eq!(page.step("ws subscribed", PATIENCE).await, own);
    let subscribed = page.step("grpc-web subscribed", PATIENCE).await;
    assert!(subscribed.contains(&own), "{subscribed}");

    publish(&server, &own, "browser.hello").await;
    assert_eq!(page.step("ws event", PATIENCE).await, "browser.hello");
    assert_eq!(page.step("grpc-web event", PATIENCE).await, "browser.hello");

    next.add_permits(1);
    // Without the CSRF header the cookie cannot log out; with it, it can.
    assert_eq!(page.step("logout", PATIENCE).await, "403 200");
    // The logout ends the session's open streams: the WebSocket says why,
    // the grpc-web stream ends UNAUTHENTICATED.
    assert_eq!(page.step("ws closed", PATIENCE).await, "4410");
    let trailers = page.step("grpc-web trailers", PATIENCE).await;
    assert!(trailers.contains("grpc-status:16"), "{trailers}");
}
