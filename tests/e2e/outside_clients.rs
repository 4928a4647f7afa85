//! Clients nobody here wrote: `buf curl` (gRPC and grpc-web, through
//! reflection) and Python's grpcio-health-checking. scripts/test.sh installs
//! them into .tools/; a missing tool fails the test with that hint.

use std::{path::PathBuf, process::Command};

use crate::harness::TestServer;

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

/// Runs a command off the async runtime and returns its stdout, failing
/// with its output when it exits non-zero.
async fn run(mut command: Command) -> String {
    let shown = format!("{command:?}");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("cannot run {shown}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{shown} failed ({}):\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
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
    let mut command = Command::new(tool("venv/bin/python"));
    command
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/python/health_check.py"))
        .args(["--target", &server.addr.to_string()])
        .args(["--service", "", "--service", "liveness"])
        .args(["--service", "slop.auth.v1.AuthService"])
        .args(["--service", "slop.session.v1.SessionService"])
        .args(["--service", "slop.notification.v1.NotificationService"]);
    let output = run(command).await;
    assert_eq!(output.matches("SERVING").count(), 5, "{output}");
    assert!(!output.contains("NOT_SERVING"), "{output}");
}
