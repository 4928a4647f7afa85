//! Clients nobody here wrote: `buf curl` (gRPC and grpc-web, through
//! reflection), Python's grpcio-health-checking, and the Python client
//! generated from proto/ by grpcio-tools. scripts/test.sh installs them into
//! .tools/ (and builds the Python client's wheel there, then installs it into
//! the venv); a missing tool fails the test with that hint.

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

/// A module of the Python client's wheel, as installed in the test venv,
/// run by `python -I -m`: isolated, so neither the working directory nor
/// PYTHONPATH is on the path, only the venv's site-packages.
fn python_module(module: &str) -> Command {
    let mut command = Command::new(tool("venv/bin/python"));
    command.args(["-I", "-m", module]);
    command
}

/// A command the wheel installs into the venv's bin/ (`[project.scripts]`).
fn python_script(script: &str) -> Command {
    let mut command = Command::new(tool(&format!("venv/bin/{script}")));
    command.env_remove("PYTHONPATH");
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
    let mut command = python_script("slop-health-check");
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
    let mut command = python_module("slop_client.notifications");
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
    let mut command = python_module("slop_client.notifications");
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
    // The example reads the ErrorInfo detail (google.rpc, the messages of
    // proto/google/rpc, from googleapis-common-protos).
    assert!(stderr.contains(" (reason "), "{stderr}");
}

/// What the wheel holds, asked of the venv's Python: its version, where
/// site-packages is and where the metadata was found, and for each module
/// named in argv, its file and whether the wheel's RECORD lists that file.
const INSTALLED_WHEEL: &str = r#"
import importlib, importlib.metadata, os, sys, sysconfig
dist = importlib.metadata.distribution("slop-client")
print("version", dist.version)
print("site-packages", os.path.realpath(sysconfig.get_paths()["purelib"]))
print("metadata-in", os.path.realpath(dist.locate_file("")))
recorded = {os.path.realpath(dist.locate_file(f)) for f in dist.files}
for name in sys.argv[1:]:
    path = os.path.realpath(importlib.import_module(name).__file__)
    print("module", name, path, "recorded" if path in recorded else "unrecorded")
"#;

#[tokio::test]
async fn the_python_client_wheel_has_the_workspace_version_and_the_generated_code() {
    let version = env!("CARGO_PKG_VERSION");
    let mut wheels: Vec<String> = std::fs::read_dir(tool("wheels"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    wheels.sort();
    assert_eq!(
        wheels,
        [format!("slop_client-{version}-py3-none-any.whl")],
        "scripts/test.sh built another version than the workspace's: set `version` in clients/python/pyproject.toml to Cargo.toml's"
    );

    // A message module and a stub module per .proto of the contract.
    let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto/slop");
    let mut modules = vec![
        "slop_client.health_check".to_owned(),
        "slop_client.notifications".to_owned(),
    ];
    for package in std::fs::read_dir(&proto).unwrap() {
        let package = package.unwrap().path();
        let name = package.file_name().unwrap().to_str().unwrap();
        for file in std::fs::read_dir(package.join("v1")).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|ext| ext == "proto") {
                let stem = file.file_stem().unwrap().to_str().unwrap();
                modules.push(format!("slop.{name}.v1.{stem}_pb2"));
                modules.push(format!("slop.{name}.v1.{stem}_pb2_grpc"));
            }
        }
    }
    assert!(
        modules.len() >= 2 + 2 * 4,
        "the contract's .proto files: {modules:?}"
    );

    let mut command = Command::new(tool("venv/bin/python"));
    command.args(["-I", "-c", INSTALLED_WHEEL]).args(&modules);
    let report = run(command).await;
    let field = |key: &str| {
        report
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {key} in:\n{report}"))
    };
    assert_eq!(
        field("version"),
        version,
        "the installed slop-client is not the workspace version: set `version` in clients/python/pyproject.toml to Cargo.toml's"
    );
    let site_packages = field("site-packages");
    assert_eq!(
        field("metadata-in"),
        site_packages,
        "slop-client's metadata is not the installed wheel's"
    );
    let found: Vec<&str> = report
        .lines()
        .filter_map(|line| line.strip_prefix("module "))
        .collect();
    assert_eq!(found.len(), modules.len(), "{report}");
    for (line, module) in found.iter().zip(&modules) {
        let (name, rest) = line.split_once(' ').unwrap();
        let (path, record) = rest.rsplit_once(' ').unwrap();
        assert_eq!(name, module, "{report}");
        assert!(
            path.starts_with(&format!("{site_packages}/")),
            "{module} is imported from {path}, not from the venv's site-packages {site_packages}"
        );
        assert_eq!(
            record, "recorded",
            "{module} ({path}) is not a file of the slop-client wheel"
        );
    }
}
