//! Clients nobody here wrote: `buf curl` (gRPC and grpc-web, through
//! reflection), Python's grpcio-health-checking, and the Python client
//! generated from proto/ by grpcio-tools. scripts/test.sh installs them into
//! .tools/ (and generates the client there); a missing tool fails the test
//! with that hint.

use std::{path::PathBuf, process::Command};

use crate::harness::{SERVICE_KEY, TestServer};

fn tool(relative: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".tools")
        .join(relative);
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/test.sh`, which installs the outside clients into .tools/",
        path.display()
    );
    path
}

/// Runs a command off the async runtime; answers what it printed and how
/// it exited.
async fn output(mut command: Command) -> std::process::Output {
    let shown = format!("{command:?}");
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("cannot run {shown}: {err}"))
}

/// Runs a command off the async runtime and returns its stdout, failing
/// with its output when it exits non-zero.
async fn run(command: Command) -> String {
    let shown = format!("{command:?}");
    let output = output(command).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{shown} failed ({}):\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// One of the Python examples in clients/python, run by the test venv's
/// Python with the client generated into .tools/.
fn python(script: &str) -> Command {
    let mut command = Command::new(tool("venv/bin/python"));
    command
        .arg(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("clients/python")
                .join(script),
        )
        .env("SLOP_PYTHON_CLIENT", tool("python-client"));
    command
}

fn buf_curl(args: &[&str]) -> Command {
    let mut command = Command::new(tool("node_modules/.bin/buf"));
    command.arg("curl").args(args);
    command
}

#[tokio::test]
async fn buf_curl_lists_the_services_through_reflection() {
    let server = TestServer::start().await;
    let listing = run(buf_curl(&[
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--list-methods",
        &server.url(""),
    ]))
    .await;
    for method in [
        "grpc.health.v1.Health/Check",
        "slop.auth.v1.AuthService/Login",
        "slop.session.v1.SessionService/ListSessions",
        "slop.notification.v1.NotificationService/Subscribe",
    ] {
        assert!(listing.contains(method), "{method} not listed:\n{listing}");
    }
}

#[tokio::test]
async fn buf_curl_checks_health_over_grpc_and_grpc_web() {
    let server = TestServer::start().await;
    let url = server.url("/grpc.health.v1.Health/Check");
    let grpc = run(buf_curl(&[
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "-d",
        r#"{"service":"liveness"}"#,
        &url,
    ]))
    .await;
    assert!(grpc.contains("SERVING"), "{grpc}");
    let grpc_web = run(buf_curl(&["--protocol", "grpcweb", "-d", "{}", &url])).await;
    assert!(grpc_web.contains("SERVING"), "{grpc_web}");
}

#[tokio::test]
async fn python_grpcio_health_checking_gets_serving() {
    let server = TestServer::start().await;
    let mut command = python("health_check.py");
    command
        .args(["--target", &server.addr.to_string()])
        .args(["--service", "", "--service", "liveness"])
        .args(["--service", "slop.auth.v1.AuthService"])
        .args(["--service", "slop.session.v1.SessionService"])
        .args(["--service", "slop.notification.v1.NotificationService"]);
    let output = run(command).await;
    assert_eq!(output.matches("SERVING").count(), 5, "{output}");
    assert!(!output.contains("NOT_SERVING"), "{output}");
}

#[tokio::test]
async fn buf_curl_follows_a_notification_stream_over_grpc_web() {
    use slop_api::notification::{
        PublishRequest, notification_service_client::NotificationServiceClient,
    };
    use tokio::io::AsyncReadExt as _;

    let server = TestServer::start().await;
    let ada = crate::harness::sign_up(&server, "ada@example.com").await;
    let mut curl = tokio::process::Command::from(buf_curl(&[
        "--protocol",
        "grpcweb",
        "-H",
        &format!("authorization: Bearer {}", ada.access_token),
        "-d",
        "{}",
        &server.url("/slop.notification.v1.NotificationService/Subscribe"),
    ]));
    let mut child = curl
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run buf curl");
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut read_until = async |needle: &str| {
        let deadline = tokio::time::Instant::now() + crate::harness::PATIENCE;
        let mut chunk = [0u8; 4096];
        while !seen.contains(needle) {
            let read = tokio::time::timeout_at(deadline, stdout.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("buf curl printed no {needle:?}; so far: {seen}"))
                .unwrap();
            assert!(read > 0, "buf curl ended before {needle:?}: {seen}");
            seen.push_str(&String::from_utf8_lossy(&chunk[..read]));
        }
    };
    read_until("\"subscribed\"").await;
    NotificationServiceClient::new(server.channel().await)
        .publish(crate::harness::bearer(
            PublishRequest {
                channels: vec![format!("user:{}", ada.user_id)],
                r#type: "comment.created".into(),
                ..Default::default()
            },
            crate::harness::SERVICE_KEY,
        ))
        .await
        .unwrap();
    read_until("comment.created").await;
    child.kill().await.unwrap();
}

#[tokio::test]
async fn the_generated_python_client_signs_in_follows_its_channel_and_gets_a_published_event() {
    let server = TestServer::start().await;
    let mut command = python("notifications.py");
    command
        .args(["--target", &server.addr.to_string()])
        .args(["--service-key", SERVICE_KEY]);
    let output = run(command).await;
    assert!(output.contains("subscribed to user:"), "{output}");
    assert!(
        output.contains(r#"event example.hello on user:"#)
            && output.contains(r#"{"text": "hello from Python"}"#),
        "{output}"
    );
}

#[tokio::test]
async fn the_generated_python_client_reports_a_refused_call_with_its_code() {
    let server = TestServer::start().await;
    let mut command = python("notifications.py");
    command.args([
        "--target",
        &server.addr.to_string(),
        "--service-key",
        "not-a-service-key",
    ]);
    let output = output(command).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: UNAUTHENTICATED: "), "{stderr}");
    // The generated client reads ErrorInfo from proto/google/rpc.
    assert!(stderr.contains(" (reason "), "{stderr}");
}
