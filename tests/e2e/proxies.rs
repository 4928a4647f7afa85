//! Behind a reverse proxy: with `TRUSTED_PROXIES` the client is the address
//! the proxy forwarded (per-address limits and sessions see it); without,
//! `X-Forwarded-For` changes nothing. The tests' connections come from
//! 127.0.0.1, the proxy here.

use http::StatusCode;
use slop_server::transport::proxy::TrustedProxies;

use crate::harness::{Answer, PASSWORD, TestServer, rest, rest_with, sign_up};

/// `POST path` with a JSON body, as forwarded for `forwarded_for` (no
/// header when None).
async fn post(
    server: &TestServer,
    path: &str,
    forwarded_for: Option<&str>,
    body: serde_json::Value,
) -> Answer {
    let headers: Vec<(&str, &str)> = forwarded_for
        .map(|address| ("x-forwarded-for", address))
        .into_iter()
        .collect();
    rest_with(server, "POST", path, None, &headers, body).await
}

/// Registers and logs in as forwarded for `forwarded_for`; answers the
/// access token.
async fn log_in(server: &TestServer, email: &str, forwarded_for: Option<&str>) -> String {
    let account = serde_json::json!({
        "email": email,
        "password": PASSWORD,
        "displayName": "Ada",
    });
    let registered = post(server, "/api/v1/auth/register", forwarded_for, account).await;
    assert_eq!(registered.status, StatusCode::OK, "{:?}", registered.body);
    let login = serde_json::json!({"email": email, "password": PASSWORD});
    let logged_in = post(server, "/api/v1/auth/login", forwarded_for, login).await;
    assert_eq!(logged_in.status, StatusCode::OK, "{:?}", logged_in.body);
    logged_in.json()["tokens"]["accessToken"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

/// The address the caller's current session recorded.
async fn session_ip(server: &TestServer, token: &str) -> String {
    let sessions = rest(
        server,
        "GET",
        "/api/v1/sessions",
        Some(token),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(sessions.status, StatusCode::OK);
    sessions.json()["sessions"][0]["ipAddress"]
        .as_str()
        .expect("an address")
        .to_owned()
}

fn reset(email: &str) -> serde_json::Value {
    serde_json::json!({ "email": email })
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit_and_sessions_record_it() {
    let server = TestServer::start_with(|config| {
        config.trusted_proxies = TrustedProxies::parse("loopback").unwrap();
        config.rate_limit_max_requests = 2;
        config.rate_limit_window_ms = 60_000;
    })
    .await;
    let path = "/api/v1/auth/password-reset";
    for _ in 0..2 {
        let answer = post(&server, path, Some("203.0.113.1"), reset("x@example.com")).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let limited = post(&server, path, Some("203.0.113.1"), reset("x@example.com")).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    // Another client behind the same proxy is not held up. Its first entry
    // is its own claim; the proxy appended the address it saw.
    let other = post(
        &server,
        path,
        Some("203.0.113.1, 203.0.113.2"),
        reset("x@example.com"),
    )
    .await;
    assert_eq!(other.status, StatusCode::OK, "the proxy saw 203.0.113.2");
    // A request from the proxy itself, forwarding no one, is the proxy's.
    let own = post(&server, path, None, reset("x@example.com")).await;
    assert_eq!(own.status, StatusCode::OK);

    let token = log_in(&server, "ada@example.com", Some("192.0.2.50")).await;
    assert_eq!(session_ip(&server, &token).await, "192.0.2.50");
}

#[tokio::test]
async fn without_trusted_proxies_x_forwarded_for_changes_nothing() {
    let server = TestServer::start_with(|config| {
        config.rate_limit_max_requests = 4;
        config.rate_limit_window_ms = 60_000;
    })
    .await;
    let token = log_in(&server, "ada@example.com", Some("192.0.2.50")).await;
    assert_eq!(
        session_ip(&server, &token).await,
        "127.0.0.1",
        "the session records the peer"
    );
    // Two more requests use up the peer's limit, whatever each claims.
    let path = "/api/v1/auth/password-reset";
    for forwarded_for in ["203.0.113.1", "203.0.113.2"] {
        let answer = post(&server, path, Some(forwarded_for), reset("x@example.com")).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let spoofed = post(&server, path, Some("203.0.113.3"), reset("x@example.com")).await;
    assert_eq!(spoofed.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_websocket_throttle_counts_each_forwarded_client() {
    let server = TestServer::start_with(|config| {
        config.trusted_proxies = TrustedProxies::parse("127.0.0.1").unwrap();
        config.stream_connection_limit = 1;
    })
    .await;
    let ada = sign_up(&server, "ada@example.com").await;
    let grace = sign_up(&server, "grace@example.com").await;
    let connect = |token: String, forwarded_for: &'static str| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = format!("ws://{}/api/v1/ws", server.addr)
            .into_client_request()
            .unwrap();
        let headers = request.headers_mut();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        headers.insert("x-forwarded-for", forwarded_for.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    let _first = connect(ada.access_token.clone(), "203.0.113.1")
        .await
        .expect("ada's first socket");
    // Grace from the same client address: that address has had its one.
    match connect(grace.access_token.clone(), "203.0.113.1").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
        }
        other => panic!("expected 429, got {:?}", other.map(|_| "a socket")),
    }
    // Grace from her own address.
    let _second = connect(grace.access_token.clone(), "203.0.113.2")
        .await
        .expect("another client behind the same proxy connects");
}
