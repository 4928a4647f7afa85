//! What a page on another site can make a signed-in browser do: nothing.
//! REST bodies must be JSON (an HTML form cannot send that cross-site
//! without a CORS preflight), and requests that ride on the session cookie
//! (or ask for one) from an origin outside CORS_ORIGIN are refused, on
//! REST and at the WebSocket upgrade.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use slop_server::infra::config::CorsOrigin;

use crate::harness::{Answer, PASSWORD, TestServer, http, rest_with, sign_up};

const APP: &str = "https://app.example";
const EVIL: &str = "https://evil.example";

async fn server() -> TestServer {
    TestServer::start_with(|config| config.cors_origin = CorsOrigin::List(vec![APP.into()])).await
}

fn credentials(email: &str) -> String {
    serde_json::json!({"email": email, "password": PASSWORD}).to_string()
}

/// A cookie-mode login with this content type and these headers.
async fn cookie_login(
    server: &TestServer,
    content_type: Option<&str>,
    headers: &[(&str, &str)],
    email: &str,
) -> Answer {
    let mut request = Request::post(server.url("/api/v1/auth/login?cookie=true"));
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    http(
        request
            .body(Full::new(Bytes::from(credentials(email))))
            .unwrap(),
    )
    .await
}

fn sets_cookies(answer: &Answer) -> bool {
    answer.headers.get("set-cookie").is_some()
}

/// The `slop_session=…` pair a cookie login set.
fn session_cookie(answer: &Answer) -> String {
    answer
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("slop_session="))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned()
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415_so_a_cross_site_form_cannot_log_anyone_in() {
    let server = server().await;
    sign_up(&server, "form@example.com").await;
    // What an HTML form can send cross-site without a preflight.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let answer = cookie_login(&server, content_type, &[], "form@example.com").await;
        assert_eq!(
            answer.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert!(!sets_cookies(&answer), "{content_type:?}");
        let error = &answer.json()["error"];
        assert_eq!(error["status"], "INVALID_ARGUMENT");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "{error}"
        );
    }
    for content_type in ["application/json", "application/json; charset=utf-8"] {
        let answer = cookie_login(&server, Some(content_type), &[], "form@example.com").await;
        assert_eq!(answer.status, StatusCode::OK, "{content_type}");
    }
}

#[tokio::test]
async fn cookie_mode_from_an_origin_outside_cors_origin_is_refused() {
    let server = server().await;
    sign_up(&server, "origin@example.com").await;
    let json = Some("application/json");

    let evil = cookie_login(&server, json, &[("origin", EVIL)], "origin@example.com").await;
    assert_eq!(evil.status, StatusCode::FORBIDDEN);
    assert!(!sets_cookies(&evil));
    assert_eq!(
        evil.json()["error"]["details"][0]["reason"],
        "ORIGIN_NOT_ALLOWED"
    );
    let sandboxed = cookie_login(&server, json, &[("origin", "null")], "origin@example.com").await;
    assert_eq!(sandboxed.status, StatusCode::FORBIDDEN);

    let app = cookie_login(&server, json, &[("origin", APP)], "origin@example.com").await;
    assert_eq!(app.status, StatusCode::OK);
    let cookie = session_cookie(&app);
    // The API's own origin, as a page served by it (or through the same
    // proxy) sends it.
    let own = format!("http://{}", server.addr);
    let same_site = cookie_login(&server, json, &[("origin", &own)], "origin@example.com").await;
    assert_eq!(same_site.status, StatusCode::OK);
    // Programs send no Origin at all.
    let program = cookie_login(&server, json, &[], "origin@example.com").await;
    assert_eq!(program.status, StatusCode::OK);

    let me = |origin: &'static str| {
        let server = &server;
        let cookie = cookie.clone();
        async move {
            rest_with(
                server,
                "GET",
                "/api/v1/auth/me",
                None,
                &[("cookie", &cookie), ("origin", origin)],
                serde_json::Value::Null,
            )
            .await
        }
    };
    assert_eq!(me(APP).await.status, StatusCode::OK);
    let refused = me(EVIL).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);

    // A bearer token is not ambient: another origin may use it.
    let user = sign_up(&server, "bearer@example.com").await;
    let bearer = rest_with(
        &server,
        "GET",
        "/api/v1/auth/me",
        Some(&user.access_token),
        &[("origin", EVIL)],
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(bearer.status, StatusCode::OK);
}

#[tokio::test]
async fn a_websocket_upgrade_on_the_session_cookie_from_another_origin_is_403() {
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};
    let server = server().await;
    sign_up(&server, "socket@example.com").await;
    let login = cookie_login(&server, Some("application/json"), &[], "socket@example.com").await;
    let cookie = session_cookie(&login);
    let upgrade = |origin: &str, credential: (&'static str, String)| {
        let mut request = format!("ws://{}/api/v1/ws", server.addr)
            .into_client_request()
            .unwrap();
        let headers = request.headers_mut();
        headers.insert("origin", origin.parse().unwrap());
        headers.insert(credential.0, credential.1.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    match upgrade(EVIL, ("cookie", cookie.clone())).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
        }
        other => panic!("expected 403, got {:?}", other.map(|(_, r)| r.status())),
    }
    let (mut socket, _) = upgrade(APP, ("cookie", cookie)).await.expect("allowed");
    let _ = socket.close(None).await;
    let user = sign_up(&server, "socket-bearer@example.com").await;
    let (mut socket, _) = upgrade(
        EVIL,
        ("authorization", format!("Bearer {}", user.access_token)),
    )
    .await
    .expect("a bearer token may come from anywhere");
    let _ = socket.close(None).await;
}
