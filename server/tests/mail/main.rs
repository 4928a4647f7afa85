//! Mail that arrives: the built `slop-server` binary sends password reset
//! mail to a real SMTP server (aiosmtpd, started by each test on a free
//! loopback port), plain, with STARTTLS or with implicit TLS under a
//! private CA, with AUTH; a relay that is down delays mail but never a
//! request; and no log line, at any level, holds the token, the link, the
//! body, the address or the SMTP password.

mod smtp;
#[allow(dead_code)] // Each test binary uses its own part of it.
#[path = "../support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use slop_api::auth;
use smtp::{Certificates, Scratch, Security, SmtpServer, free_port};
use support::{ACCOUNT_PASSWORD, PATIENCE, Server, auth_client, command, register, run_to_exit};
const NEW_PASSWORD: &str = "another fine passphrase";
const SMTP_PASSWORD: &str = "smtp-password-never-logged";

/// Starts the binary in `dir` with a sender address and `env`.
async fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
    let mut command = command(dir);
    command.env("MAIL_FROM", "Slop Studios <no-reply@slop.example>");
    Server::start(command, env).await
}

/// SIGTERM; it exits 0, then every line it logged from now on, and its
/// stderr.
async fn stop(mut server: Server) -> (Vec<String>, String) {
    let stopped = server.stop_and_read().await;
    assert_eq!(
        stopped.status.code(),
        Some(0),
        "exit status {}",
        stopped.status
    );
    (stopped.lines, stopped.stderr)
}

/// Registers `email` and asks for a reset link; answers how long the
/// reset request took.
async fn register_and_request_reset(server: &Server, email: &str) -> Duration {
    let mut client = auth_client(&server.addr).await;
    register(&mut client, email).await;
    let started = Instant::now();
    client
        .request_password_reset(auth::RequestPasswordResetRequest {
            email: email.into(),
        })
        .await
        .expect("request a reset");
    started.elapsed()
}

/// The token of the reset link in a mail's (decoded) body.
fn token_in(body: &str) -> String {
    let start = body.find("?token=").expect("a reset link") + "?token=".len();
    let token: String = body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    assert!(token.len() >= 32, "{body}");
    token
}

/// Resets the password with `token`, then logs in with the new one.
async fn reset_and_log_in(server: &Server, email: &str, token: &str) {
    let mut client = auth_client(&server.addr).await;
    client
        .reset_password(auth::ResetPasswordRequest {
            reset_token: token.to_owned(),
            new_password: NEW_PASSWORD.into(),
        })
        .await
        .expect("the token from the mail works");
    client
        .login(auth::LoginRequest {
            email: email.into(),
            password: NEW_PASSWORD.into(),
        })
        .await
        .expect("the new password logs in");
    let old = client
        .login(auth::LoginRequest {
            email: email.into(),
            password: ACCOUNT_PASSWORD.into(),
        })
        .await
        .expect_err("the old password no longer does");
    assert_eq!(old.code(), tonic::Code::Unauthenticated);
}

/// None of `secrets` in any line of the log or of stderr.
fn assert_not_logged(lines: &[String], stderr: &str, secrets: &[&str]) {
    for secret in secrets {
        for line in lines.iter().map(String::as_str).chain([stderr]) {
            assert!(!line.contains(secret), "{secret:?} is logged: {line}");
        }
    }
}

/// A reset over plain SMTP, with every log level on: the mail arrives with
/// the headers a mail client expects, its token resets the password, and
/// neither the token, the link, the body nor the address is in any log
/// line (lettre's and rustls's included).
#[tokio::test]
async fn a_reset_link_mailed_over_smtp_resets_the_password_and_is_in_no_log_line() {
    let scratch = Scratch::new("plain");
    let port = free_port();
    let relay = SmtpServer::start(
        port,
        &scratch.0.join("received"),
        Security::Plain,
        None,
        None,
    )
    .await;
    let server = start(
        &scratch.0,
        &[
            ("LOG_LEVEL", "trace"),
            ("SMTP_URL", &format!("smtp://127.0.0.1:{port}")),
        ],
    )
    .await;
    let email = "log-reader@example.com";
    register_and_request_reset(&server, email).await;
    let mail = relay.first(PATIENCE).await;

    assert_eq!(mail.mail_from, "no-reply@slop.example");
    assert_eq!(mail.rcpt_tos, [email]);
    assert!(!mail.tls && mail.login.is_none());
    assert_eq!(mail.headers["To"], email);
    assert_eq!(mail.headers["From"], "Slop Studios <no-reply@slop.example>");
    assert_eq!(mail.headers["Subject"], "Reset your Slop Studios password");
    assert_eq!(mail.headers["MIME-Version"], "1.0");
    assert!(mail.headers.contains_key("Date"), "{:?}", mail.headers);
    assert!(
        mail.headers["Message-ID"].ends_with("@slop.example>"),
        "{:?}",
        mail.headers
    );
    assert_eq!(
        (mail.content_type.as_str(), mail.charset.as_deref()),
        ("text/plain", Some("utf-8"))
    );
    let token = token_in(&mail.body);
    let link = format!("http://localhost:3000/reset-password?token={token}");
    assert!(
        mail.raw.contains(&format!("\r\n{link}\r\n")),
        "the link is one line: {}",
        mail.raw
    );
    reset_and_log_in(&server, email, &token).await;

    let (lines, stderr) = stop(server).await;
    assert!(lines.len() > 50, "trace logs are on: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|line| line.contains(r#""message":"mail sent""#)
                && line.contains(r#""kind":"password_reset""#)),
        "the mail is logged by kind: {lines:#?}"
    );
    assert_not_logged(
        &lines,
        &stderr,
        &[
            &token,
            "?token=",
            "To choose a new password",
            email,
            "log-reader",
        ],
    );
}

/// STARTTLS (required) and implicit TLS against a relay whose certificate
/// a private CA signed (SMTP_TLS_CA_FILE), each requiring AUTH: the mail
/// arrives encrypted, by the user the credentials name (from
/// SMTP_USERNAME/SMTP_PASSWORD, then from the URL), and the password is in
/// no log line. Without the CA the certificate is refused, and the log
/// says `tls`.
#[tokio::test]
async fn starttls_and_smtps_with_a_private_ca_send_the_credentials_and_verify_the_relay() {
    let scratch = Scratch::new("tls");
    let certificates = Certificates::make(&scratch.0, "relay");
    let ca = certificates.ca_cert.to_str().unwrap().to_owned();
    let auth = format!("mailer:{SMTP_PASSWORD}");

    // STARTTLS, credentials from SMTP_USERNAME and SMTP_PASSWORD.
    let port = free_port();
    let relay = SmtpServer::start(
        port,
        &scratch.0.join("starttls"),
        Security::StartTls,
        Some(&certificates),
        Some(&auth),
    )
    .await;
    let url = format!("smtp://127.0.0.1:{port}?tls=required");
    let server = start(
        &scratch.0,
        &[
            ("LOG_LEVEL", "trace"),
            ("SMTP_URL", &url),
            ("SMTP_USERNAME", "mailer"),
            ("SMTP_PASSWORD", SMTP_PASSWORD),
            ("SMTP_TLS_CA_FILE", &ca),
            ("DATABASE_URL", "sqlite:starttls.db"),
        ],
    )
    .await;
    register_and_request_reset(&server, "ada@example.com").await;
    let mail = relay.first(PATIENCE).await;
    assert!(mail.tls, "STARTTLS was used");
    assert_eq!(mail.login.as_deref(), Some("mailer"));
    let token = token_in(&mail.body);
    reset_and_log_in(&server, "ada@example.com", &token).await;
    let (lines, stderr) = stop(server).await;
    assert_not_logged(&lines, &stderr, &[SMTP_PASSWORD, &token, "ada@example.com"]);

    // Implicit TLS, credentials in the URL (percent-encoded).
    let port = free_port();
    let relay = SmtpServer::start(
        port,
        &scratch.0.join("smtps"),
        Security::Smtps,
        Some(&certificates),
        Some(&auth),
    )
    .await;
    let url = format!(
        "smtps://mailer:{}@127.0.0.1:{port}",
        SMTP_PASSWORD.replace('-', "%2D")
    );
    let server = start(
        &scratch.0,
        &[
            ("SMTP_URL", &url),
            ("SMTP_TLS_CA_FILE", &ca),
            ("DATABASE_URL", "sqlite:smtps.db"),
        ],
    )
    .await;
    register_and_request_reset(&server, "grace@example.com").await;
    let mail = relay.first(PATIENCE).await;
    assert!(mail.tls);
    assert_eq!(mail.login.as_deref(), Some("mailer"));
    reset_and_log_in(&server, "grace@example.com", &token_in(&mail.body)).await;
    let (lines, stderr) = stop(server).await;
    assert_not_logged(&lines, &stderr, &[SMTP_PASSWORD]);

    // Without SMTP_TLS_CA_FILE the Mozilla roots do not know the private
    // CA: the relay is refused, and nothing is sent.
    let url = format!("smtps://mailer:x@127.0.0.1:{port}");
    let mut server = start(
        &scratch.0,
        &[
            ("SMTP_URL", &url),
            ("MAIL_RETRY_DELAY", "1h"),
            ("DATABASE_URL", "sqlite:untrusted.db"),
        ],
    )
    .await;
    register_and_request_reset(&server, "mallory@example.com").await;
    let failed = server
        .wait_for("mail delivery failed; it will be retried", PATIENCE)
        .await;
    assert_eq!(failed["reason"], "tls", "{failed}");
    assert!(
        failed["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("certificate"),
        "{failed}"
    );
    assert_eq!(
        relay.received().len(),
        1,
        "only the mail of the trusted run"
    );
    let (lines, _) = stop(server).await;
    assert!(
        lines.iter().any(
            |line| line.contains("the server stopped before it could be delivered")
                && line.contains(r#""not_sent":1"#)
        ),
        "the mail left is counted at shutdown: {lines:#?}"
    );
}

/// The relay hangs, then is down, when the reset is asked for: the request
/// answers at once all the same (a delivery on the request's path would
/// wait SMTP_TIMEOUT for the greeting), the failure is logged by class,
/// and once the relay is up the mail arrives on a retry.
#[tokio::test]
async fn a_relay_that_hangs_or_is_down_delays_the_mail_but_never_the_request() {
    let scratch = Scratch::new("retry");
    // A "relay" that takes connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let (hang_up, mut hung_up) = tokio::sync::oneshot::channel::<()>();
    let hanging = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                accepted = silent.accept() => held.push(accepted.unwrap().0),
                _ = &mut hung_up => return,
            }
        }
    });
    let mut server = start(
        &scratch.0,
        &[
            ("SMTP_URL", &format!("smtp://127.0.0.1:{port}")),
            ("MAIL_RETRY_DELAY", "1s"),
        ],
    )
    .await;
    let took = register_and_request_reset(&server, "ada@example.com").await;
    assert!(took < Duration::from_secs(2), "the request waited {took:?}");

    // It hangs up (and stops listening): the attempt fails, to be retried.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = hang_up.send(());
    hanging.await.unwrap();
    let failed = server
        .wait_for("mail delivery failed; it will be retried", PATIENCE)
        .await;
    assert!(
        ["protocol", "connection"].contains(&failed["reason"].as_str().unwrap_or_default()),
        "{failed}"
    );
    assert_eq!(failed["attempt"], 1, "{failed}");
    assert_eq!(failed["kind"], "password_reset", "{failed}");

    let relay = SmtpServer::start(
        port,
        &scratch.0.join("received"),
        Security::Plain,
        None,
        None,
    )
    .await;
    let mail = relay.first(PATIENCE).await;
    let sent = server.wait_for("mail sent", PATIENCE).await;
    assert!(sent["attempt"].as_u64().unwrap() >= 2, "{sent}");
    reset_and_log_in(&server, "ada@example.com", &token_in(&mail.body)).await;
    let (lines, stderr) = stop(server).await;
    assert_not_logged(&lines, &stderr, &["ada@example.com", "?token="]);
}

/// Production with no mail transport does not start, and says why; with
/// MAIL_TRANSPORT=none it starts, and says loudly what that costs.
#[tokio::test]
async fn production_without_mail_refuses_to_start_unless_told_so() {
    let scratch = Scratch::new("production");
    let production = [
        ("APP_ENV", "production"),
        (
            "JWT_SECRET",
            "rbnJ//z/YXw6VFvWEp4oCC0xPX1dFFyu1jYnacwxRIiw4RefN0WHlLUal5Hgy24b",
        ),
        (
            "APP_SECRET",
            "4a68814fc804a3cba8811a2023503868ff994c3fb6557daa66ba48fc3375ecee",
        ),
        (
            "PASSWORD_RESET_URL",
            "https://app.example.com/reset-password",
        ),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
    ];
    let output = run_to_exit(command(&scratch.0).envs(production)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no mail transport in production")
            && stderr.contains("SMTP_URL")
            && stderr.contains("MAIL_TRANSPORT=none"),
        "{stderr}"
    );

    let mut env = production.to_vec();
    env.push(("MAIL_TRANSPORT", "none"));
    // The warning comes before "listening".
    let server = Server::start(command(&scratch.0), &env).await;
    let warning = server
        .before
        .iter()
        .map(ToString::to_string)
        .find(|line| line.contains("MAIL_TRANSPORT=none"))
        .unwrap_or_else(|| panic!("no warning before listening: {:#?}", server.before));
    assert!(
        warning.contains("\"ERROR\"") && warning.contains("password reset cannot work"),
        "{warning}"
    );
}
