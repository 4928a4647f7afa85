//! The built `slop-server` binary, run as a process the way an operator or
//! Kubernetes runs it: configuration from the environment, logs on stdout,
//! SIGTERM to stop.

#[path = "../src/infra/redis_processes.rs"]
mod redis_processes;
#[path = "../src/infra/sentinel_testing.rs"]
mod sentinel_testing;
#[allow(dead_code)] // Each test binary uses its own part of it.
mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use support::{
    BINARY, PATIENCE, Server, SharedStores, auth_client, bearer, command, listen_on_a_free_port,
    log_in, next_message, notification_client, prepare, run_to_exit, scratch_dir, sign_up,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    process::Command,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::test]
async fn sigterm_with_an_open_stream_exits_0_within_the_shutdown_timeout() {
    let mut server = Server::start_in("sigterm", &[("SHUTDOWN_TIMEOUT", "5s")]).await;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connect");
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    let signalled = Instant::now();
    // Within SHUTDOWN_TIMEOUT.
    let status = server.stop_within(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(signalled.elapsed() < Duration::from_secs(5));

    // The stream saw readiness turn off, then a clean UNAVAILABLE end.
    let update = watch.next().await.unwrap().unwrap();
    assert_eq!(update.status(), ServingStatus::NotServing);
    let end = watch.next().await.unwrap().unwrap_err();
    assert_eq!(end.code(), tonic::Code::Unavailable);

    // Everything it logged: the log ends when its stdout does (the lines
    // may still be on their way when the exit is seen).
    let messages: Vec<String> = server
        .rest_of_log()
        .await
        .iter()
        .map(|line| line["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    for expected in ["signal received", "shutting down", "shutdown complete"] {
        assert!(
            messages.iter().any(|m| m == expected),
            "no {expected:?} in {messages:?}"
        );
    }
}

#[tokio::test]
async fn every_log_line_of_a_request_carries_its_request_id() {
    let mut server = Server::start_in("request-id", &[]).await;
    let mut stream = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nx-request-id: find-me-in-the-log\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.contains("x-request-id: find-me-in-the-log"),
        "{answer}"
    );

    let line = server.wait_for("response", PATIENCE).await;
    assert_eq!(line["span"]["request_id"], "find-me-in-the-log", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["span"]["path"], "/health", "{line}");
    server.stop().await;
}

/// A reset link is a password for whoever reads it: with every log level
/// on (LOG_LEVEL=trace), neither the token, nor the link, nor the mail's
/// body, nor the recipient's address is in any log line, when the mail is
/// sent or when the token is used. The mail itself is in MAIL_OUTBOX_DIR.
#[tokio::test]
async fn a_reset_token_is_in_no_log_line_at_any_level() {
    use slop_api::auth;
    let mail_dir = scratch_dir("reset-log-mail");
    let _ = std::fs::remove_dir_all(&mail_dir);
    let mut server = Server::start_in(
        "reset-log",
        &[
            ("LOG_LEVEL", "trace"),
            ("MAIL_OUTBOX_DIR", mail_dir.to_str().unwrap()),
        ],
    )
    .await;
    let mut client = auth_client(&server.addr).await;
    let email = "log-reader@example.com";
    client
        .register(auth::RegisterRequest {
            email: email.into(),
            password: "correct horse battery staple".into(),
            display_name: "Ada".into(),
        })
        .await
        .unwrap();
    client
        .request_password_reset(auth::RequestPasswordResetRequest {
            email: email.into(),
        })
        .await
        .unwrap();
    let mail = tokio::time::timeout(PATIENCE, async {
        loop {
            let written = std::fs::read_dir(&mail_dir)
                .into_iter()
                .flatten()
                .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
                .find(|mail| mail.contains("?token="));
            if let Some(mail) = written {
                return mail;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the reset mail in MAIL_OUTBOX_DIR");
    let token: String = mail[mail.find("?token=").unwrap() + "?token=".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    assert!(token.len() >= 32, "{mail}");
    client
        .reset_password(auth::ResetPasswordRequest {
            reset_token: token.clone(),
            new_password: "another fine passphrase".into(),
        })
        .await
        .expect("the token from the mail works");

    let stopped = server.stop_and_read().await;
    let (lines, stderr) = (stopped.lines, stopped.stderr);
    assert!(lines.len() > 20, "trace logs are on: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|line| line.contains(r#""kind":"password_reset""#)),
        "the mail is logged by kind: {lines:#?}"
    );
    for secret in [token.as_str(), "?token=", "To choose a new password", email] {
        for line in lines.iter().chain(std::iter::once(&stderr)) {
            assert!(!line.contains(secret), "{secret:?} is logged: {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&mail_dir);
}

/// PostgreSQL down at start-up: the process says where it could not
/// connect and exits 1 within DATABASE_TIMEOUT, instead of holding its
/// port silently for 30 s; the password in DATABASE_URL is never printed.
#[tokio::test]
async fn an_unreachable_database_stops_start_up_within_the_timeout_naming_it() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let password = "hunter2-do-not-print";
    let url = format!("postgres://slop:{password}@127.0.0.1:{closed_port}/accounts");
    let started = Instant::now();
    let output = run_to_exit(
        listen_on_a_free_port(&mut command(&scratch_dir("unreachable-database")))
            .env("DATABASE_URL", &url)
            .env("DATABASE_TIMEOUT", "2s"),
    )
    .await;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    // The bound, plus slack for a loaded machine.
    assert!(took < Duration::from_secs(7), "took {took:?}");
    assert!(
        !stdout.contains(password) && !stderr.contains(password),
        "the password is printed: {stdout}{stderr}"
    );
    let errors: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|line: &serde_json::Value| line["level"] == "ERROR")
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stdout}");
    let error = errors[0]["error"].as_str().unwrap_or_default();
    assert_eq!(
        error,
        format!(
            "cannot reach the account database at postgres://slop@127.0.0.1:{closed_port}/accounts: \
             connection refused; start PostgreSQL or fix DATABASE_URL"
        ),
        "{}",
        errors[0]
    );
}

#[tokio::test]
async fn malformed_configuration_stops_start_up_naming_the_variable() {
    for (variable, value) in [
        ("SHUTDOWN_TIMEOUT", "ten seconds"),
        ("PORT", "70000"),
        ("REDIS_URL", "http://not-redis"),
        ("CORS_ORIGIN", "example.com"),
        ("APP_ENV", "staging"),
        ("NODE_ENV", "staging"),
        ("LOG_FORMAT", "xml"),
    ] {
        let output = run_to_exit(command(&scratch_dir("config")).env(variable, value)).await;
        assert_eq!(output.status.code(), Some(2), "{variable}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "{variable}={value}: {stderr}");
    }
    let oversized = "9".repeat(5000);
    let output =
        run_to_exit(command(&scratch_dir("config")).env("SHUTDOWN_TIMEOUT", &oversized)).await;
    assert_eq!(output.status.code(), Some(2));
}

/// A start-up refused for a secret names the variable and the reason, and
/// prints the value nowhere: not for a malformed value, not for a weak or
/// reused one in production.
#[tokio::test]
async fn start_up_errors_never_print_a_secret() {
    const JWT: &str = "rbnJ//z/YXw6VFvWEp4oCC0xPX1dFFyu1jYnacwxRIiw4RefN0WHlLUal5Hgy24b";
    const APP: &str = "4a68814fc804a3cba8811a2023503868ff994c3fb6557daa66ba48fc3375ecee";
    let production = [
        ("APP_ENV", "production"),
        (
            "PASSWORD_RESET_URL",
            "https://app.example.com/reset-password",
        ),
    ];
    let phrase = "thisismysupersecretkeyforjwtsigning";
    let reused = format!("media:{JWT}");
    /// The environment, the variable the error must name, and the secret
    /// it must not print.
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("JWT_SECRET", "short-but-secret-value")],
            "JWT_SECRET",
            "short-but-secret-value",
        ),
        (
            vec![("APP_SECRET", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz")],
            "APP_SECRET",
            "zzzzzzzzzzzz",
        ),
        (
            vec![("SERVICE_KEYS", "Zm9vYmFy+c2VjcmV0/dmFsdWU=:media")],
            "SERVICE_KEYS",
            "Zm9vYmFy+c2VjcmV0",
        ),
        (
            vec![("DATABASE_URL", "mysql://slop:hunter2-do-not-print@db/x")],
            "DATABASE_URL",
            "hunter2-do-not-print",
        ),
        (
            [
                &production[..],
                &[("JWT_SECRET", phrase), ("APP_SECRET", APP)],
            ]
            .concat(),
            "JWT_SECRET",
            phrase,
        ),
        (
            [&production[..], &[("JWT_SECRET", JWT), ("APP_SECRET", JWT)]].concat(),
            "APP_SECRET",
            JWT,
        ),
        (
            [
                &production[..],
                &[
                    ("JWT_SECRET", JWT),
                    ("APP_SECRET", APP),
                    ("SERVICE_KEYS", &reused),
                ],
            ]
            .concat(),
            "SERVICE_KEYS",
            JWT,
        ),
    ];
    for (env, variable, secret) in cases {
        let mut refused = command(&scratch_dir("secret-errors"));
        refused.env("LOG_FORMAT", "json").envs(env.iter().copied());
        let output = run_to_exit(&mut refused).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{env:?}: {stdout}{stderr}");
        assert!(stderr.contains(variable), "{env:?}: {stderr}");
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{variable}'s value is printed: {stdout}{stderr}"
        );
    }
}

#[tokio::test]
async fn help_lists_every_setting_with_its_variable() {
    let output = run_to_exit(command(&scratch_dir("help")).arg("--help")).await;
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../.env.example"))
        .expect(".env.example at the repository root");
    let mut documented = 0;
    for line in example.lines() {
        let Some((name, _)) = line.trim_start_matches("# ").split_once('=') else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            continue;
        }
        documented += 1;
        assert!(
            help.contains(&format!("[env: {name}")),
            "{name} in .env.example but not in --help"
        );
    }
    for variable in help.split("[env: ").skip(1) {
        let name = variable.split(['=', ']']).next().unwrap();
        assert!(
            example.contains(&format!("{name}=")),
            "{name} in --help but not in .env.example"
        );
    }
    assert!(
        documented >= 10,
        "only {documented} variables in .env.example"
    );
}

#[tokio::test]
async fn two_servers_share_sessions_and_account_changes_and_sessions_survive_a_restart() {
    use slop_api::auth;
    let stores = SharedStores::new().await;
    let mut a = Server::start_in("shared-a", &stores.env()).await;
    let mut b = Server::start_in("shared-b", &stores.env()).await;
    let mut client_a = auth_client(&a.addr).await;
    let mut client_b = auth_client(&b.addr).await;

    let login = sign_up(&mut client_a, "ada@example.com").await;
    let token = login.tokens.unwrap().access_token;

    // Created through A, it works through B.
    let me = client_b
        .get_current_user(bearer(auth::GetCurrentUserRequest {}, &token))
        .await
        .expect("B knows the session A created");
    assert_eq!(me.into_inner().user.unwrap().email, "ada@example.com");

    // B has Ada's profile cached now; her change of name through A reaches
    // B's next reads (within the time a pub/sub message takes).
    client_a
        .update_current_user(bearer(
            auth::UpdateCurrentUserRequest {
                user: Some(auth::User {
                    display_name: "Countess".into(),
                    ..Default::default()
                }),
                update_mask: Some(pbjson_types::FieldMask {
                    paths: vec!["display_name".into()],
                }),
            },
            &token,
        ))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let me = client_b
            .get_current_user(bearer(auth::GetCurrentUserRequest {}, &token))
            .await
            .unwrap();
        if me.into_inner().user.unwrap().display_name == "Countess" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B still shows the old name 2 s after the change through A"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A restarts: the session (in Redis) and the account (in PostgreSQL)
    // outlive it.
    assert_eq!(a.stop().await.code(), Some(0));
    let mut a2 = Server::start_in("shared-a2", &stores.env()).await;
    let mut client_a2 = auth_client(&a2.addr).await;
    client_a2
        .get_current_user(bearer(auth::GetCurrentUserRequest {}, &token))
        .await
        .expect("the session survives the restart");

    // Revoked through B (logout), it is refused by A on the next call.
    client_b
        .logout(bearer(auth::LogoutRequest::default(), &token))
        .await
        .unwrap();
    let refused = client_a2
        .get_current_user(bearer(auth::GetCurrentUserRequest {}, &token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    b.sigterm();
    a2.sigterm();
    b.child.wait().await.unwrap();
    a2.child.wait().await.unwrap();
    stores.drop_schema().await;
}

#[tokio::test]
async fn two_servers_share_notification_streams_and_a_client_that_loses_one_loses_nothing() {
    use slop_api::{
        auth,
        notification::{self, ChannelSubscription, StreamPosition, subscribe_response::Message},
    };
    const SERVICE_KEY: &str = "binary-test-service-key-0123456789abcdefgh";
    let stores = SharedStores::new().await;
    let mut env = stores.env();
    let keys = format!("tests:{SERVICE_KEY}");
    env.push(("SERVICE_KEYS", &keys));
    let mut a = Server::start_in("streams-a", &env).await;
    let mut b = Server::start_in("streams-b", &env).await;
    let (addr_a, addr_b) = (a.addr.clone(), b.addr.clone());

    let mut auth_a = auth_client(&addr_a).await;
    let first = sign_up(&mut auth_a, "ada@example.com").await;
    let second = log_in(&mut auth_a, "ada@example.com").await;
    let token = first.tokens.unwrap().access_token;
    let other_token = second.tokens.unwrap().access_token;
    let channel = format!("user:{}", first.user.unwrap().id);

    let mut on_a = notification_client(&addr_a).await;
    let mut on_b = notification_client(&addr_b).await;
    let subscribe = |resume_from: Option<StreamPosition>| notification::SubscribeRequest {
        subscriptions: vec![ChannelSubscription {
            channel: channel.clone(),
            namespaces: vec![],
            resume_from,
        }],
    };
    // One session follows its channel through B, another through A.
    let mut through_b = on_b
        .subscribe(bearer(subscribe(None), &token))
        .await
        .unwrap()
        .into_inner();
    let mut through_a = on_a
        .subscribe(bearer(subscribe(None), &other_token))
        .await
        .unwrap()
        .into_inner();
    for stream in [&mut through_b, &mut through_a] {
        assert!(matches!(
            next_message(stream).await,
            Ok(Message::Subscribed(_))
        ));
    }

    // Published through A, delivered through both.
    let publish = |kind: &str| {
        bearer(
            notification::PublishRequest {
                channels: vec![channel.clone()],
                r#type: kind.into(),
                ..Default::default()
            },
            SERVICE_KEY,
        )
    };
    let mut last = None;
    for kind in ["e1", "e2"] {
        on_a.publish(publish(kind)).await.unwrap();
        for stream in [&mut through_b, &mut through_a] {
            let Ok(Message::Event(event)) = next_message(stream).await else {
                panic!("expected {kind}");
            };
            assert_eq!(event.r#type, kind);
            last = Some(StreamPosition {
                offset: event.offset,
                epoch: event.epoch,
            });
        }
    }

    // Logging the second session out through B ends its stream on A.
    auth_client(&addr_b)
        .await
        .logout(bearer(auth::LogoutRequest::default(), &other_token))
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(1), through_a.message())
        .await
        .expect("A ends the stream within a second")
        .unwrap_err();
    assert_eq!(ended.code(), tonic::Code::Unauthenticated);

    // B dies mid-stream; meanwhile more is published through A. The client
    // reconnects to A with its last position and loses nothing.
    b.child.kill().await.unwrap();
    let broken = tokio::time::timeout(PATIENCE, through_b.message()).await;
    assert!(
        !matches!(broken, Ok(Ok(Some(_)))),
        "the stream through B is gone"
    );
    for kind in ["e3", "e4"] {
        on_a.publish(publish(kind)).await.unwrap();
    }
    let mut resumed = on_a
        .subscribe(bearer(subscribe(last), &token))
        .await
        .unwrap()
        .into_inner();
    let Ok(Message::Subscribed(subscribed)) = next_message(&mut resumed).await else {
        panic!("expected subscribed");
    };
    assert!(subscribed.recovered);
    for kind in ["e3", "e4"] {
        let Ok(Message::Event(event)) = next_message(&mut resumed).await else {
            panic!("expected {kind}");
        };
        assert_eq!(event.r#type, kind);
    }

    a.sigterm();
    a.child.wait().await.unwrap();
    stores.drop_schema().await;
}

/// The binary under a limit on open files, soft and hard, as `ulimit -n`
/// sets it in the shell that starts it.
fn under_open_files_limit(name: &str, soft: u32, hard: u32) -> Command {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(format!(
            "ulimit -S -n {soft} && ulimit -H -n {hard} && exec \"$0\""
        ))
        .arg(BINARY);
    prepare(&mut command, &scratch_dir(name));
    command
}

/// `GET /health/live` on a new connection from `source` (a loopback
/// address): whether it answered 200 within a few seconds.
async fn live_from(addr: &str, source: &str) -> bool {
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(format!("{source}:0").parse().ok()?).ok()?;
        let mut stream = socket.connect(addr.parse().ok()?).await.ok()?;
        stream
            .write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), attempt).await,
        Ok(Some(true))
    )
}

/// Waits until /health/live answers from `source`; panics after PATIENCE.
async fn live_eventually(addr: &str, source: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !live_from(addr, source).await {
        assert!(
            Instant::now() < deadline,
            "/health/live from {source} did not answer within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `count` connections from 127.0.0.1 that send nothing.
async fn idle_sockets(addr: &str, count: usize) -> Vec<tokio::net::TcpStream> {
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        sockets.push(
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("connect (the kernel completes it, accepted or not)"),
        );
    }
    sockets
}

/// More idle sockets than the process may open files: the soft limit is
/// raised to the hard one at start, connections are capped below it, and
/// idle ones make room for newcomers, so /health/live still answers (it
/// timed out before, with the accept loop failing on EMFILE) and the server
/// is fine once they close.
#[tokio::test]
async fn idle_sockets_past_the_open_files_limit_leave_health_live_answering() {
    let mut server = Server::start(under_open_files_limit("idle-flood", 128, 256), &[]).await;
    let addr = server.addr.clone();
    let raised = server
        .before
        .iter()
        .find(|line| line["message"] == "open files limit raised")
        .unwrap_or_else(|| panic!("no line says the limit was raised: {:?}", server.before));
    assert_eq!(raised["from"], 128, "{raised}");
    assert_eq!(raised["to"], 256, "{raised}");

    let flood = idle_sockets(&addr, 300).await;
    live_eventually(&addr, "127.0.0.2").await;
    live_eventually(&addr, "127.0.0.1").await;
    drop(flood);
    assert!(
        live_from(&addr, "127.0.0.2").await,
        "answers once they close"
    );

    assert_eq!(server.stop().await.code(), Some(0));
}

/// Connections allowed past the limit on open files (HTTP_MAX_CONNECTIONS
/// set too high): accept fails with EMFILE, and the accept loop closes idle
/// connections to get descriptors back, backs off instead of spinning, and
/// logs that rarely; /health/live still answers.
#[tokio::test]
async fn out_of_file_descriptors_the_accept_loop_makes_room_and_health_live_answers() {
    let mut server = Server::start(
        under_open_files_limit("emfile", 256, 256),
        &[
            ("HTTP_MAX_CONNECTIONS", "100000"),
            ("HTTP_MAX_CONNECTIONS_PER_IP", "0"),
        ],
    )
    .await;
    let addr = server.addr.clone();
    let flood = idle_sockets(&addr, 400).await;
    live_eventually(&addr, "127.0.0.2").await;
    drop(flood);
    assert!(
        live_from(&addr, "127.0.0.2").await,
        "answers once they close"
    );

    server.stop().await;
    let mut exhausted = 0;
    while let Ok(line) = server.logs.try_recv() {
        if line["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("out of file descriptors"))
        {
            exhausted += 1;
        }
        assert_ne!(line["message"], "accept failed", "{line}");
    }
    assert!(
        (1..=5).contains(&exhausted),
        "{exhausted} lines about running out of descriptors"
    );
}

/// `GET path` over a fresh connection: the status line and the body.
async fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// The TCP ports process `pid` listens on, read from /proc: its socket
/// inodes, matched against the kernel's tables of listening sockets.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap();
        for row in text.lines().skip(1) {
            let fields: Vec<&str> = row.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT; state 0A is LISTEN.
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                let port = fields[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports.sort_unstable();
    ports
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// METRICS_ADDR opens a listener of its own (logged, so port 0 can be
/// found), which answers `/metrics` in the Prometheus text format; the
/// public port does not serve it; `off` opens no second listener at all.
#[tokio::test]
async fn metrics_have_a_listener_of_their_own_and_off_opens_none() {
    let mut server = Server::start_in("metrics-on", &[]).await;
    let addr = server.addr.clone();
    let metrics_addr = server
        .before
        .iter()
        .find(|line| line["message"] == "metrics listening")
        .and_then(|line| line["addr"].as_str())
        .unwrap_or_else(|| panic!("no 'metrics listening' line: {:?}", server.before))
        .to_owned();
    let mut expected = vec![port_of(&addr), port_of(&metrics_addr)];
    expected.sort_unstable();
    assert_eq!(listening_ports(server.child.id().unwrap()), expected);

    let (status, body) = http_get(&metrics_addr, "/metrics").await;
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        body.contains(&format!(
            "slop_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{body}"
    );
    assert!(body.contains("# TYPE slop_uptime_seconds gauge"), "{body}");
    let (status, _) = http_get(&addr, "/metrics").await;
    assert!(
        status.contains(" 404 "),
        "the public port serves /metrics: {status}"
    );
    assert_eq!(server.stop().await.code(), Some(0));

    let mut server = Server::start_in("metrics-off", &[("METRICS_ADDR", "off")]).await;
    assert!(
        !server
            .before
            .iter()
            .any(|line| line["message"] == "metrics listening"),
        "{:?}",
        server.before
    );
    assert_eq!(
        listening_ports(server.child.id().unwrap()),
        vec![port_of(&server.addr)]
    );
    assert_eq!(server.stop().await.code(), Some(0));
}

/// A METRICS_ADDR that cannot be listened on stops start-up, naming it.
#[tokio::test]
async fn a_metrics_address_in_use_stops_start_up_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run_to_exit(
        listen_on_a_free_port(&mut command(&scratch_dir("metrics-taken")))
            .env("METRICS_ADDR", &addr),
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("METRICS_ADDR: cannot listen on {addr}")),
        "{stdout}"
    );
}

/// REDIS_SENTINELS and REDIS_SENTINEL_MASTER as an operator sets them
/// (`host:port`): sessions live on the primary the Sentinels name; when it
/// is killed, calls answer UNAVAILABLE until a replica is promoted, then the
/// session (replicated before the kill) works again and the server is ready.
#[tokio::test]
async fn a_server_on_sentinel_follows_its_primary_across_a_failover() {
    use slop_api::auth;
    let mut sentinels = tokio::task::spawn_blocking(sentinel_testing::RedisSentinels::start)
        .await
        .unwrap();
    let mut server = Server::start_in(
        "sentinel",
        &[
            ("REDIS_SENTINELS", &sentinels.sentinels_variable()),
            ("REDIS_SENTINEL_MASTER", sentinel_testing::MASTER),
            ("REDIS_KEY_PREFIX", "slop-binary-sentinel:"),
        ],
    )
    .await;
    let mut client = auth_client(&server.addr).await;
    let token = sign_up(&mut client, "ada@example.com")
        .await
        .tokens
        .unwrap()
        .access_token;
    let me = || bearer(auth::GetCurrentUserRequest {}, &token);
    client.get_current_user(me()).await.expect("the session");

    let killed_at = Instant::now();
    sentinels.kill_primary();
    let mut unavailable = 0;
    let back = loop {
        match client.get_current_user(me()).await {
            Ok(_) => break killed_at.elapsed(),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                unavailable += 1;
            }
        }
        assert!(killed_at.elapsed() < PATIENCE, "no answer but UNAVAILABLE");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("the session worked again {back:?} after the kill ({unavailable} calls UNAVAILABLE)");
    assert!(unavailable > 0);
    let sentinels = tokio::task::spawn_blocking(move || {
        sentinels.wait_for_failover();
        sentinels
    })
    .await
    .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while http_get(&server.addr, "/health/ready").await.0 != "HTTP/1.1 200 OK" {
        assert!(Instant::now() < deadline, "not ready after the failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.stop().await.code(), Some(0));
    drop(sentinels);
}
