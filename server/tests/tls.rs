//! The built binary over TLS to its stores, as an operator runs it: a
//! `redis-server` that speaks mutual TLS only and a PostgreSQL that accepts
//! TLS connections only, both started here with certificates made here.
//! With the right CA the server serves sessions and streams; with an
//! unrelated CA it does not start, and says which variable to fix, that a
//! certificate was refused, and never a password.

#[allow(dead_code)] // Each test binary uses its own part of it.
mod support;

use std::time::{Duration, Instant};

use slop_api::{
    auth::{self, auth_service_client::AuthServiceClient},
    notification::{
        self, ChannelSubscription, notification_service_client::NotificationServiceClient,
        subscribe_response::Message,
    },
};
use support::{
    Server, bearer, command, listen_on_a_free_port, next_message, run_to_exit, scratch_dir, sign_up,
};
use tokio::process::Command;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[path = "../src/infra/tls_testing.rs"]
mod tls_testing;

use tls_testing::{Certificates, PASSWORD, TlsPostgres, TlsRedis};

const SERVICE_KEY: &str = "tls-test-service-key-0123456789abcdefghij";

/// The binary in the scratch directory `name`, with JSON logs on a free
/// port, a store that does not answer given up after 3 s, and `env`.
fn server_command(name: &str, env: &[(&str, String)]) -> Command {
    let mut command = command(&scratch_dir(name));
    listen_on_a_free_port(&mut command)
        .env("DATABASE_TIMEOUT", "3s")
        .envs(env.iter().map(|(key, value)| (key, value)));
    command
}

/// Runs the binary until it exits (it must, within PATIENCE) and returns
/// its exit code and everything it printed.
async fn start_up_failure(name: &str, env: &[(&str, String)]) -> (Option<i32>, String) {
    let output = run_to_exit(&mut server_command(name, env)).await;
    let _ = std::fs::remove_dir_all(scratch_dir(name));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), printed)
}

/// The `error` of the one ERROR line the server logged.
fn the_error(printed: &str) -> String {
    let errors: Vec<serde_json::Value> = printed
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line: &serde_json::Value| line["level"] == "ERROR")
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {printed}");
    errors[0]["error"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_certificate_of_an_unrelated_ca_stops_start_up_naming_the_variable() {
    let certificates = Certificates::make();
    let redis = TlsRedis::start(&certificates, "server", false);
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{}", redis.port());
    let started = Instant::now();
    let (code, printed) = start_up_failure(
        "redis-wrong-ca",
        &[
            ("REDIS_URL", url),
            ("REDIS_TLS_CA_FILE", certificates.file("other-ca.pem")),
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{printed}");
    assert!(started.elapsed() < Duration::from_secs(10), "{printed}");
    assert!(
        !printed.contains(PASSWORD),
        "the password is printed: {printed}"
    );
    let error = the_error(&printed);
    for part in [
        "REDIS_URL",
        "certificate",
        "REDIS_TLS_CA_FILE",
        &format!("127.0.0.1:{}", redis.port()),
    ] {
        assert!(error.contains(part), "{part} in {error}");
    }

    // Redis that wants a client certificate, and gets none, is refused
    // alike (the right CA this time).
    let mutual = TlsRedis::start(&certificates, "server", true);
    let (code, printed) = start_up_failure(
        "redis-no-client-certificate",
        &[
            ("REDIS_URL", mutual.url()),
            ("REDIS_TLS_CA_FILE", certificates.file("ca.pem")),
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{printed}");
    let error = the_error(&printed);
    assert!(error.contains("REDIS_TLS_CERT_FILE"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_certificate_of_an_unrelated_ca_stops_start_up_naming_the_host() {
    let certificates = Certificates::make();
    let postgres = TlsPostgres::start(&certificates, "server");
    let url = postgres.url(
        "postgres",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            certificates.file("other-ca.pem")
        ),
    );
    let started = Instant::now();
    let (code, printed) = start_up_failure("postgres-wrong-ca", &[("DATABASE_URL", url)]).await;
    assert_eq!(code, Some(1), "{printed}");
    // Not retried until DATABASE_TIMEOUT (3s): a certificate does not
    // change by waiting.
    assert!(started.elapsed() < Duration::from_secs(3), "{printed}");
    assert!(
        !printed.contains(PASSWORD),
        "the password is printed: {printed}"
    );
    let error = the_error(&printed);
    for part in ["DATABASE_URL", "certificate", "127.0.0.1", "sslrootcert"] {
        assert!(error.contains(part), "{part} in {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_to_both_stores_the_server_serves_sessions_and_streams() {
    let certificates = Certificates::make();
    let redis = TlsRedis::start(&certificates, "server", true);
    let postgres = TlsPostgres::start(&certificates, "server");
    let mut server = Server::start(
        server_command(
            "both-over-tls",
            &[
                ("REDIS_URL", redis.url()),
                ("REDIS_TLS_CA_FILE", certificates.file("ca.pem")),
                ("REDIS_TLS_CERT_FILE", certificates.file("client.pem")),
                ("REDIS_TLS_KEY_FILE", certificates.file("client.key")),
                (
                    "DATABASE_URL",
                    postgres.url(
                        "postgres",
                        &format!(
                            "sslmode=verify-full&sslrootcert={}",
                            certificates.file("ca.pem")
                        ),
                    ),
                ),
                ("SERVICE_KEYS", format!("tests:{SERVICE_KEY}")),
            ],
        ),
        &[],
    )
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connect");

    // Ready: both stores answer over TLS.
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);

    // An account (PostgreSQL) and a session (Redis).
    let mut accounts = AuthServiceClient::new(channel.clone());
    let login = sign_up(&mut accounts, "ada@example.com").await;
    let token = login.tokens.unwrap().access_token;
    let me = accounts
        .get_current_user(bearer(auth::GetCurrentUserRequest {}, &token))
        .await
        .expect("the session is in Redis")
        .into_inner();
    assert_eq!(me.user.unwrap().email, "ada@example.com");

    // A stream (Redis streams and pub/sub, both connections over TLS).
    let user_channel = format!("user:{}", login.user.unwrap().id);
    let mut notifications = NotificationServiceClient::new(channel);
    let mut stream = notifications
        .subscribe(bearer(
            notification::SubscribeRequest {
                subscriptions: vec![ChannelSubscription {
                    channel: user_channel.clone(),
                    namespaces: vec![],
                    resume_from: None,
                }],
            },
            &token,
        ))
        .await
        .expect("subscribe")
        .into_inner();
    assert!(matches!(
        next_message(&mut stream).await.expect("no error"),
        Message::Subscribed(_)
    ));
    notifications
        .publish(bearer(
            notification::PublishRequest {
                channels: vec![user_channel],
                r#type: "over-tls".into(),
                ..Default::default()
            },
            SERVICE_KEY,
        ))
        .await
        .expect("publish");
    let Message::Event(event) = next_message(&mut stream).await.expect("no error") else {
        panic!("expected the event");
    };
    assert_eq!(event.r#type, "over-tls");

    let _ = server.child.start_kill();
    let _ = server.child.wait().await;
    let _ = std::fs::remove_dir_all(scratch_dir("both-over-tls"));
}
