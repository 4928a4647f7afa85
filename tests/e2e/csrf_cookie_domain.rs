//! CSRF_COOKIE_DOMAIN: a page on another host of the API's domain (an app
//! at app.example.com, the API at api.example.com) can read the `slop_csrf`
//! cookie only when it carries that `Domain`; logout clears it with the same
//! `Domain`, as a browser needs to drop it. The session cookie stays the API
//! host's only.

use slop_server::infra::config::CorsOrigin;

use crate::harness::{Answer, PASSWORD, TestServer, rest_with, sign_up};

const APP: &str = "https://app.example.com";

async fn server(csrf_cookie_domain: Option<&str>) -> TestServer {
    let domain = csrf_cookie_domain.map(str::to_owned);
    TestServer::start_with(|config| {
        config.cors_origin = CorsOrigin::List(vec![APP.into()]);
        config.csrf_cookie_domain = domain;
    })
    .await
}

/// The `Set-Cookie` of the cookie named `name`.
fn set_cookie(answer: &Answer, name: &str) -> String {
    answer
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie set"))
}

fn pair(cookie: &str) -> &str {
    cookie.split(';').next().unwrap()
}

/// The attributes of a `Set-Cookie` value named `attribute`, e.g. every
/// `Domain=…`.
fn attributes(cookie: &str, attribute: &str) -> Vec<String> {
    cookie
        .split(';')
        .skip(1)
        .map(str::trim)
        .filter(|a| a.split('=').next().unwrap().eq_ignore_ascii_case(attribute))
        .map(str::to_owned)
        .collect()
}

/// Signs in with a cookie from the app's page, then logs out from it with
/// the CSRF token as the page read it: the `slop_session` and `slop_csrf`
/// cookies of the login, then of the logout.
async fn log_in_and_out(server: &TestServer, email: &str) -> ([String; 2], [String; 2]) {
    sign_up(server, email).await;
    let login = rest_with(
        server,
        "POST",
        "/api/v1/auth/login?cookie=true",
        None,
        &[("origin", APP)],
        serde_json::json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(login.status, http::StatusCode::OK);
    let session = set_cookie(&login, "slop_session");
    let csrf = set_cookie(&login, "slop_csrf");
    let token = pair(&csrf).trim_start_matches("slop_csrf=");
    let cookie_header = format!("{}; {}", pair(&session), pair(&csrf));
    let logout = rest_with(
        server,
        "POST",
        "/api/v1/auth/logout",
        None,
        &[
            ("origin", APP),
            ("cookie", &cookie_header),
            ("x-csrf-token", token),
        ],
        serde_json::json!({}),
    )
    .await;
    assert_eq!(
        logout.status,
        http::StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&logout.body)
    );
    let cleared = [
        set_cookie(&logout, "slop_session"),
        set_cookie(&logout, "slop_csrf"),
    ];
    for cookie in &cleared {
        assert!(cookie.contains("Max-Age=0"), "{cookie}");
    }
    ([session, csrf], cleared)
}

#[tokio::test]
async fn with_a_csrf_cookie_domain_the_csrf_cookie_is_set_and_cleared_for_that_domain() {
    let server = server(Some("example.com")).await;
    let ([session, csrf], [session_out, csrf_out]) =
        log_in_and_out(&server, "domain@example.com").await;
    assert_eq!(
        attributes(&csrf, "domain"),
        ["Domain=example.com"],
        "{csrf}"
    );
    assert_eq!(
        attributes(&csrf_out, "domain"),
        ["Domain=example.com"],
        "{csrf_out}"
    );
    assert_eq!(attributes(&csrf, "path"), attributes(&csrf_out, "path"));
    for cookie in [&session, &session_out] {
        assert!(attributes(cookie, "domain").is_empty(), "{cookie}");
    }
    assert!(!attributes(&session, "httponly").is_empty(), "{session}");
}

#[tokio::test]
async fn without_a_csrf_cookie_domain_every_cookie_is_the_hosts_own() {
    let server = server(None).await;
    let (login, logout) = log_in_and_out(&server, "host-only@example.com").await;
    for cookie in login.iter().chain(&logout) {
        assert!(attributes(cookie, "domain").is_empty(), "{cookie}");
    }
}
