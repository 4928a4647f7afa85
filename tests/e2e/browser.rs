//! A real browser: headless Chromium (Debian's `chromium`, which
//! `scripts/test.sh` installs) loads a page from another origin and uses the
//! server the way a web app does, with the TypeScript client
//! (`clients/typescript`, bundled by esbuild into
//! `clients/typescript/build/browser-test.js`, which `scripts/test.sh`
//! makes): a REST cookie login, grpc-web calls by the session cookie through
//! CORS, the user's channel followed over grpc-web and over the WebSocket
//! (the session cookie on the upgrade), a server restart that both streams
//! resume across without losing or repeating an event, and a logout
//! protected by the CSRF token, which ends both streams. The page reports
//! each step to the test's page server.

use std::{net::SocketAddr, path::PathBuf, process::Stdio, time::Duration};

use axum::{Router, extract::State, response::Html, routing::get};
use slop_server::{Config, infra::config::CorsOrigin};
use tokio::{net::TcpListener, sync::mpsc, sync::oneshot, task::JoinHandle};

use crate::{
    harness::{PASSWORD, PATIENCE, TestServer, require_redis, sign_up, test_config},
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

/// The page's script: clients/typescript/test/browser/page.ts with the
/// package, as `npm run bundle:browser-test` bundles it.
fn bundle() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/typescript/build/browser-test.js"
    );
    std::fs::read_to_string(path).unwrap_or_else(|error| {
        panic!(
            "cannot read {path} ({error}): the browser test runs the TypeScript client's bundle; \
             `bash scripts/test.sh` makes it, or `cd clients/typescript && npm ci && npm run generate && npm run bundle:browser-test`"
        )
    })
}

/// The page, for the API at `api` (`http://host:port`) and the account
/// `email`. Its script reports each step to `/report` on its own origin.
fn page(api: &str, email: &str) -> String {
    let settings = serde_json::json!({"api": api, "email": email, "password": PASSWORD});
    format!(
        "<!doctype html><title>slop browser test</title>\n<script>const SLOP_TEST = {settings};</script>\n<script>\n{}</script>",
        bundle()
    )
}

/// The API server of the test, on a port that stays its own across a
/// restart, so the page's streams come back to it.
struct Api {
    config: Config,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), slop_server::Error>>>,
}

impl Api {
    /// Starts it on a free port.
    async fn start(config: Config) -> Self {
        let mut api = Self {
            config,
            addr: ([127, 0, 0, 1], 0).into(),
            stop: None,
            task: None,
        };
        api.serve().await;
        api
    }

    /// Serves on `self.addr` (a free port the first time).
    async fn serve(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|error| panic!("bind {}: {error}", self.addr));
        self.addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(slop_server::run(
            self.config.clone(),
            listener,
            async move {
                let _ = stopped.await;
            },
        )));
    }

    /// Shuts it down gracefully (its sockets get 1001, its streams
    /// UNAVAILABLE) and waits until it has.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("the server stops within PATIENCE")
            .expect("server task")
            .expect("server result");
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
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

impl OpenPage {
    /// Waits for `count` reports of `step` (`<type>@<offset>` events) and
    /// answers them in offset order.
    async fn events(&mut self, step: &str, count: usize) -> Vec<String> {
        let mut events = Vec::new();
        for _ in 0..count {
            events.push(self.step(step, PATIENCE).await);
        }
        let offset = |event: &String| {
            event
                .rsplit_once('@')
                .and_then(|(_, offset)| offset.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{step}: {event:?} is not <type>@<offset>"))
        };
        events.sort_by_key(offset);
        events
    }
}

#[tokio::test]
async fn a_browser_app_on_another_origin_follows_its_channel_across_a_restart_with_the_typescript_client()
 {
    let redis = require_redis().await;
    let pages = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", pages.local_addr().unwrap());
    // One deployment: the accounts database and the Redis prefix (sessions,
    // channels and their history) outlive the restarted instance; a second
    // instance publishes while it is down.
    let scratch = std::env::temp_dir().join(format!(
        "slop-e2e-browser-{}-{}",
        std::process::id(),
        origin.rsplit(':').next().unwrap_or_default()
    ));
    std::fs::create_dir_all(&scratch).expect("scratch directory");
    let database_url = format!("sqlite:{}", scratch.join("accounts.db").display());
    let prefix = format!("slop-e2e-browser:{}:", scratch.display());
    let publisher = TestServer::start_with(|config| {
        config.redis_url = Some(redis.clone());
        config.redis_key_prefix = prefix.clone();
        config.database_url = database_url.clone();
    })
    .await;
    // Signed up before the instance under test starts, so the two never
    // migrate the shared database at the same time.
    let email = "browser@example.com";
    let user = sign_up(&publisher, email).await;
    let mut config = test_config(&scratch);
    config.redis_url = Some(redis.clone());
    config.redis_key_prefix = prefix.clone();
    config.database_url = database_url.clone();
    config.cors_origin = CorsOrigin::List(vec![origin.clone()]);
    let mut server = Api::start(config).await;
    let api = format!("http://{}", server.addr);
    let (reports, next) = page_server(pages, page(&api, email)).await;
    let mut page = OpenPage {
        reports,
        early: Vec::new(),
        browser: Browser::open(&format!("{origin}/"), &server.addr.port().to_string()),
    };

    // The REST cookie login, then grpc-web by the cookie alone (CORS, with
    // credentials, from the page's origin).
    assert_eq!(page.step("login", BROWSER_PATIENCE).await, user.user_id);
    assert_eq!(page.step("me", PATIENCE).await, email);
    let own = format!("user:{}", user.user_id);
    assert_eq!(
        page.step("ws subscribed", PATIENCE).await,
        format!("{own} live")
    );
    assert_eq!(
        page.step("grpc-web subscribed", PATIENCE).await,
        format!("{own} live")
    );

    let first = publish(&publisher, &own, "browser.before").await;
    let first = |kind: &str, n: u64| format!("{kind}@{}", first + n);
    assert_eq!(
        page.events("ws event", 1).await,
        [first("browser.before", 0)]
    );
    assert_eq!(
        page.events("grpc-web event", 1).await,
        [first("browser.before", 0)]
    );

    // A restart: both streams are cut (the socket with 1001), an event is
    // published while the server is down, another once it is back.
    server.stop().await;
    assert_eq!(page.step("ws disconnected", PATIENCE).await, "1001");
    assert_eq!(page.step("grpc-web disconnected", PATIENCE).await, "retry");
    publish(&publisher, &own, "browser.missed").await;
    server.serve().await;
    publish(&publisher, &own, "browser.after").await;

    // Each stream resumes from its last event: the missed one, then the
    // live one, each once, and nothing lost (a `lost` report fails the test).
    assert_eq!(
        page.step("ws subscribed", PATIENCE).await,
        format!("{own} recovered")
    );
    assert_eq!(
        page.step("grpc-web subscribed", PATIENCE).await,
        format!("{own} recovered")
    );
    let resumed = [first("browser.missed", 1), first("browser.after", 2)];
    assert_eq!(page.events("ws event", 2).await, resumed);
    assert_eq!(page.events("grpc-web event", 2).await, resumed);

    next.add_permits(1);
    // Without the CSRF header the cookie cannot log out; with it, it can.
    assert_eq!(page.step("logout", PATIENCE).await, "403 200");
    // The logout ends the session's open streams: the WebSocket with 4410,
    // the grpc-web stream UNAUTHENTICATED (SESSION_ENDED); neither retries.
    assert_eq!(page.step("ws ended", PATIENCE).await, "4410");
    assert_eq!(page.step("grpc-web ended", PATIENCE).await, "SESSION_ENDED");
    let repeated: Vec<&Step> = page
        .early
        .iter()
        .filter(|report| report.step.ends_with(" event"))
        .collect();
    assert!(repeated.is_empty(), "events delivered twice: {repeated:?}");
    drop(page);
    drop(server);
    let _ = std::fs::remove_dir_all(&scratch);
}
