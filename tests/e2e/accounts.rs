//! Accounts, tokens and sessions, end to end over gRPC, grpc-web and REST.

use std::time::Duration;

use base64::Engine as _;
use http::{Request, StatusCode};
use http_body_util::Full;
use prost::Message as _;
use slop_api::{
    auth::{self, auth_service_client::AuthServiceClient},
    session::{self, session_service_client::SessionServiceClient},
};
use slop_server::{
    identity::secrets,
    identity::tokens::{self, TokenIssuer, TokenSettings},
    infra::clock::ManualClock,
};
use tonic::{Code, transport::Channel};

use crate::harness::{
    JWT_SECRET, PASSWORD, SERVICE_KEY, TestServer, bearer, grpc_web_call_with, http, reason, rest,
};

struct Grpc {
    auth: AuthServiceClient<Channel>,
    sessions: SessionServiceClient<Channel>,
}

async fn grpc(server: &TestServer) -> Grpc {
    let channel = server.channel().await;
    Grpc {
        auth: AuthServiceClient::new(channel.clone()),
        sessions: SessionServiceClient::new(channel),
    }
}

async fn register(client: &mut Grpc, email: &str) {
    client
        .auth
        .register(auth::RegisterRequest {
            email: email.into(),
            password: PASSWORD.into(),
            display_name: "Ada".into(),
        })
        .await
        .expect("register");
}

async fn login(client: &mut Grpc, email: &str) -> auth::LoginResponse {
    client
        .auth
        .login(auth::LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login")
        .into_inner()
}

fn access(login: &auth::LoginResponse) -> String {
    login.tokens.as_ref().unwrap().access_token.clone()
}

async fn me(client: &mut Grpc, token: &str) -> Result<auth::User, tonic::Status> {
    client
        .auth
        .get_current_user(bearer(auth::GetCurrentUserRequest {}, token))
        .await
        .map(|r| r.into_inner().user.unwrap())
}

#[tokio::test]
async fn register_login_me_refresh_logout_over_grpc() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    register(&mut client, "  Ada@Example.com ").await;
    let login = login(&mut client, "ada@example.com").await;
    let user = login.user.clone().unwrap();
    assert_eq!(user.email, "ada@example.com");
    assert_eq!(user.display_name, "Ada");
    let tokens = login.tokens.clone().unwrap();
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.access_token_expires_in.unwrap().seconds, 15 * 60);
    assert!(tokens.refresh_token_expires_in.unwrap().seconds > 0);

    assert_eq!(
        me(&mut client, &tokens.access_token).await.unwrap().id,
        user.id
    );

    // Refresh rotates: a new pair, the old refresh token is used up.
    let refreshed = client
        .auth
        .refresh_token(auth::RefreshTokenRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refreshed.session_id, login.session_id);
    let new_tokens = refreshed.tokens.unwrap();
    assert_ne!(new_tokens.refresh_token, tokens.refresh_token);
    assert_eq!(
        me(&mut client, &new_tokens.access_token).await.unwrap().id,
        user.id
    );

    // Replaying the used refresh token (after the grace window) ends the
    // session: every token of it stops working.
    server
        .clock
        .advance(slop_server::identity::REFRESH_REUSE_GRACE + Duration::from_secs(1));
    let replay = client
        .auth
        .refresh_token(auth::RefreshTokenRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(replay.code(), Code::Unauthenticated);
    assert_eq!(reason(&replay), "REFRESH_TOKEN_REUSED");
    let after = me(&mut client, &new_tokens.access_token).await.unwrap_err();
    assert_eq!(after.code(), Code::Unauthenticated);
    assert_eq!(reason(&after), "SESSION_ENDED");

    // A new login, then logout: the access token fails on the next call.
    let login = self::login(&mut client, "ada@example.com").await;
    let token = access(&login);
    client
        .auth
        .logout(bearer(auth::LogoutRequest::default(), &token))
        .await
        .unwrap();
    let after = me(&mut client, &token).await.unwrap_err();
    assert_eq!(after.code(), Code::Unauthenticated);
    let refresh_after = client
        .auth
        .refresh_token(auth::RefreshTokenRequest {
            refresh_token: login.tokens.unwrap().refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(refresh_after.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn two_concurrent_refreshes_of_one_client_both_succeed() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    register(&mut client, "ada@example.com").await;
    let login = login(&mut client, "ada@example.com").await;
    let refresh_token = login.tokens.unwrap().refresh_token;
    let attempts = (0..2).map(|_| {
        let mut auth = client.auth.clone();
        let refresh_token = refresh_token.clone();
        tokio::spawn(async move {
            auth.refresh_token(auth::RefreshTokenRequest { refresh_token })
                .await
        })
    });
    let mut new_tokens = Vec::new();
    for attempt in attempts {
        let response = attempt.await.unwrap().expect("both refreshes succeed");
        new_tokens.push(response.into_inner().tokens.unwrap().refresh_token);
    }
    assert_eq!(
        new_tokens[0], new_tokens[1],
        "both get the same next refresh token"
    );
    // And that one works.
    client
        .auth
        .refresh_token(auth::RefreshTokenRequest {
            refresh_token: new_tokens[0].clone(),
        })
        .await
        .expect("the shared next token refreshes");
}

#[tokio::test]
async fn register_login_me_refresh_logout_over_rest() {
    let server = TestServer::start().await;
    let answer = rest(
        &server,
        "POST",
        "/api/v1/auth/register",
        None,
        serde_json::json!({"email": "grace@example.com", "password": PASSWORD, "displayName": "Grace"}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json());

    let login = rest(
        &server,
        "POST",
        "/api/v1/auth/login",
        None,
        serde_json::json!({"email": "grace@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK);
    let login = login.json();
    let token = login["tokens"]["accessToken"].as_str().unwrap().to_owned();
    let refresh = login["tokens"]["refreshToken"].as_str().unwrap().to_owned();
    assert_eq!(login["tokens"]["accessTokenExpiresIn"], "900s");
    assert_eq!(login["user"]["displayName"], "Grace");

    let me = rest(
        &server,
        "GET",
        "/api/v1/auth/me",
        Some(&token),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["user"]["email"], "grace@example.com");

    let patched = rest(
        &server,
        "PATCH",
        "/api/v1/auth/me",
        Some(&token),
        serde_json::json!({"displayName": "Grace H."}),
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.json());
    assert_eq!(patched.json()["user"]["displayName"], "Grace H.");
    // The request message itself, as every other REST body is.
    let as_message = rest(
        &server,
        "PATCH",
        "/api/v1/auth/me",
        Some(&token),
        serde_json::json!({"user": {"displayName": "Grace Hopper"}, "updateMask": "displayName"}),
    )
    .await;
    assert_eq!(as_message.status, StatusCode::OK, "{:?}", as_message.json());
    assert_eq!(as_message.json()["user"]["displayName"], "Grace Hopper");
    let refused = rest(
        &server,
        "PATCH",
        "/api/v1/auth/me",
        Some(&token),
        serde_json::json!({"email": "x@example.com"}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);

    let refreshed = rest(
        &server,
        "POST",
        "/api/v1/auth/refresh",
        None,
        serde_json::json!({"refreshToken": refresh}),
    )
    .await;
    assert_eq!(refreshed.status, StatusCode::OK);
    let token = refreshed.json()["tokens"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();

    let logout = rest(
        &server,
        "POST",
        "/api/v1/auth/logout",
        Some(&token),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(logout.status, StatusCode::OK);
    let after = rest(
        &server,
        "GET",
        "/api/v1/auth/me",
        Some(&token),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert!(after.headers.contains_key("www-authenticate"));
    assert_eq!(
        after.json()["error"]["details"][0]["reason"],
        "SESSION_ENDED"
    );
}

#[tokio::test]
async fn login_and_me_over_grpc_web() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    register(&mut client, "web@example.com").await;
    let answer = grpc_web_call_with(
        &server,
        "/slop.auth.v1.AuthService/Login",
        &auth::LoginRequest {
            email: "web@example.com".into(),
            password: PASSWORD.into(),
        },
        &[],
    )
    .await;
    assert_eq!(answer.grpc_status(), Some(0));
    let login = auth::LoginResponse::decode(answer.messages[0].clone()).unwrap();
    let token = access(&login);
    let answer = grpc_web_call_with(
        &server,
        "/slop.auth.v1.AuthService/GetCurrentUser",
        &auth::GetCurrentUserRequest {},
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(answer.grpc_status(), Some(0));
    let me = auth::GetCurrentUserResponse::decode(answer.messages[0].clone()).unwrap();
    assert_eq!(me.user.unwrap().email, "web@example.com");
    let answer = grpc_web_call_with(
        &server,
        "/slop.auth.v1.AuthService/GetCurrentUser",
        &auth::GetCurrentUserRequest {},
        &[],
    )
    .await;
    assert_eq!(answer.grpc_status(), Some(Code::Unauthenticated as i32));
}

#[tokio::test]
async fn a_user_lists_their_sessions_and_revokes_one() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    register(&mut client, "ada@example.com").await;
    let first = login(&mut client, "ada@example.com").await;
    let second = login(&mut client, "ada@example.com").await;

    let list = client
        .sessions
        .list_sessions(bearer(
            session::ListSessionsRequest::default(),
            &access(&first),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total_size, 2);
    let current: Vec<_> = list
        .sessions
        .iter()
        .filter(|s| s.current)
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(current, std::slice::from_ref(&first.session_id));
    assert!(list.sessions.iter().all(|s| s.ip_address == "127.0.0.1"));

    // Pages of one.
    let page = client
        .sessions
        .list_sessions(bearer(
            session::ListSessionsRequest {
                page_size: 1,
                ..Default::default()
            },
            &access(&first),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.sessions.len(), 1);
    assert!(!page.next_page_token.is_empty());

    client
        .sessions
        .revoke_session(bearer(
            session::RevokeSessionRequest {
                session_id: second.session_id.clone(),
            },
            &access(&first),
        ))
        .await
        .unwrap();
    assert_eq!(
        me(&mut client, &access(&second)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert!(me(&mut client, &access(&first)).await.is_ok());

    let current = client
        .sessions
        .get_session(bearer(
            session::GetSessionRequest {
                session_id: "current".into(),
            },
            &access(&first),
        ))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(current.id, first.session_id);
    assert!(current.current);
}

#[tokio::test]
async fn users_can_neither_see_nor_revoke_each_others_sessions() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    register(&mut client, "a@example.com").await;
    register(&mut client, "b@example.com").await;
    let a = login(&mut client, "a@example.com").await;
    let b = login(&mut client, "b@example.com").await;

    let seen = client
        .sessions
        .get_session(bearer(
            session::GetSessionRequest {
                session_id: b.session_id.clone(),
            },
            &access(&a),
        ))
        .await
        .unwrap_err();
    assert_eq!(seen.code(), Code::NotFound);
    let revoked = client
        .sessions
        .revoke_session(bearer(
            session::RevokeSessionRequest {
                session_id: b.session_id.clone(),
            },
            &access(&a),
        ))
        .await
        .unwrap_err();
    assert_eq!(revoked.code(), Code::NotFound);
    let listed = client
        .sessions
        .list_sessions(bearer(
            session::ListSessionsRequest {
                user_id: b.user.clone().unwrap().id,
                ..Default::default()
            },
            &access(&a),
        ))
        .await
        .unwrap_err();
    assert_eq!(listed.code(), Code::PermissionDenied);
    assert!(
        me(&mut client, &access(&b)).await.is_ok(),
        "B is still signed in"
    );
    let rest = rest(
        &server,
        "DELETE",
        &format!("/api/v1/sessions/{}", b.session_id),
        Some(&access(&a)),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(rest.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn changing_the_password_ends_the_other_sessions() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    register(&mut client, "ada@example.com").await;
    let here = login(&mut client, "ada@example.com").await;
    let elsewhere = login(&mut client, "ada@example.com").await;

    let wrong = client
        .auth
        .change_password(bearer(
            auth::ChangePasswordRequest {
                current_password: "not my password".into(),
                new_password: "a brand new passphrase".into(),
            },
            &access(&here),
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);

    let changed = client
        .auth
        .change_password(bearer(
            auth::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "a brand new passphrase".into(),
            },
            &access(&here),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.revoked_session_count, 1);
    assert!(me(&mut client, &access(&here)).await.is_ok());
    assert_eq!(
        me(&mut client, &access(&elsewhere))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let old = client
        .auth
        .login(auth::LoginRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated);
    client
        .auth
        .login(auth::LoginRequest {
            email: "ada@example.com".into(),
            password: "a brand new passphrase".into(),
        })
        .await
        .expect("the new password works");
}

fn reset_token(mail: &str) -> String {
    let start = mail.find("?token=").expect("a reset link") + "?token=".len();
    mail[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

async fn wait_for_mail(server: &TestServer, count: usize) -> Vec<String> {
    crate::harness::eventually("mail in the outbox", || async {
        server.mail().len() >= count
    })
    .await;
    server.mail()
}

#[tokio::test]
async fn password_reset_end_to_end() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    register(&mut client, "ada@example.com").await;
    let signed_in = login(&mut client, "ada@example.com").await;

    // The same answer for an unknown address, and no mail for it.
    client
        .auth
        .request_password_reset(auth::RequestPasswordResetRequest {
            email: "nobody@example.com".into(),
        })
        .await
        .unwrap();
    client
        .auth
        .request_password_reset(auth::RequestPasswordResetRequest {
            email: "Ada@example.com".into(),
        })
        .await
        .unwrap();
    let mail = wait_for_mail(&server, 1).await;
    assert_eq!(mail.len(), 1);
    assert!(
        mail[0].contains("\r\nTo: ada@example.com\r\n"),
        "{}",
        mail[0]
    );
    let token = reset_token(&mail[0]);

    let weak = client
        .auth
        .reset_password(auth::ResetPasswordRequest {
            reset_token: token.clone(),
            new_password: "short".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        weak.code(),
        Code::InvalidArgument,
        "the weak password does not use the token up"
    );
    let reset = client
        .auth
        .reset_password(auth::ResetPasswordRequest {
            reset_token: token.clone(),
            new_password: "another fine passphrase".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reset.revoked_session_count, 1);
    assert_eq!(
        me(&mut client, &access(&signed_in))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let again = client
        .auth
        .reset_password(auth::ResetPasswordRequest {
            reset_token: token,
            new_password: "yet another passphrase".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::InvalidArgument, "single use");
    client
        .auth
        .login(auth::LoginRequest {
            email: "ada@example.com".into(),
            password: "another fine passphrase".into(),
        })
        .await
        .expect("the new password works");
}

#[tokio::test]
async fn registering_a_taken_email_answers_the_same_and_tells_the_owner() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    let first = client
        .auth
        .register(auth::RegisterRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
            display_name: "Ada".into(),
        })
        .await
        .unwrap();
    let second = client
        .auth
        .register(auth::RegisterRequest {
            email: "ADA@example.com".into(),
            password: "some other passphrase".into(),
            display_name: "Eve".into(),
        })
        .await
        .unwrap();
    assert_eq!(first.into_inner(), second.into_inner());
    let mail = wait_for_mail(&server, 1).await;
    assert!(mail[0].contains("tried to create"), "{}", mail[0]);
    // The original password still works; the intruder's does not.
    login(&mut client, "ada@example.com").await;
}

#[tokio::test]
async fn failed_logins_look_the_same_whether_or_not_the_account_exists() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    register(&mut client, "ada@example.com").await;
    let wrong_password = client
        .auth
        .login(auth::LoginRequest {
            email: "ada@example.com".into(),
            password: "wrong password!".into(),
        })
        .await
        .unwrap_err();
    let no_account = client
        .auth
        .login(auth::LoginRequest {
            email: "nobody@example.com".into(),
            password: "wrong password!".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong_password.code(), Code::Unauthenticated);
    assert_eq!(wrong_password.code(), no_account.code());
    assert_eq!(wrong_password.message(), no_account.message());
    assert_eq!(wrong_password.details(), no_account.details());
}

#[tokio::test]
async fn registration_checks_its_fields() {
    let server = TestServer::start().await;
    for (body, field) in [
        (
            serde_json::json!({"email": "not-an-email", "password": PASSWORD, "displayName": "A"}),
            "email",
        ),
        (
            serde_json::json!({"email": "a@example.com", "password": "short", "displayName": "A"}),
            "password",
        ),
        (
            serde_json::json!({"email": "a@example.com", "password": "password1", "displayName": "A"}),
            "password",
        ),
        (
            serde_json::json!({"email": "a@example.com", "password": "x".repeat(129), "displayName": "A"}),
            "password",
        ),
        (
            serde_json::json!({"email": "a@example.com", "password": PASSWORD, "displayName": ""}),
            "display_name",
        ),
    ] {
        let answer = rest(&server, "POST", "/api/v1/auth/register", None, body.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        let json = answer.json();
        assert_eq!(
            json["error"]["details"][0]["fieldViolations"][0]["field"], field,
            "{body}: {json}"
        );
    }
    let garbage = http(
        Request::post(server.url("/api/v1/auth/register"))
            .header("content-type", "application/json")
            .body(Full::from("{not json"))
            .unwrap(),
    )
    .await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
}

/// NIST 800-63B context-specific words: blank passwords, one character
/// repeated, and the account's own address are refused wherever a password
/// is chosen, with INVALID_ARGUMENT naming the field and saying why.
#[tokio::test]
async fn weak_passwords_are_refused_at_register_change_and_reset() {
    let server = TestServer::start().await;
    let email = "ada.lovelace@example.com";
    for (password, why) in [
        ("        ", "whitespace"),
        (" \t  \u{3000}   ", "whitespace"),
        ("zzzzzzzzzzzz", "one character repeated"),
        (
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
            "one character repeated",
        ),
        ("ada.lovelace@example.com", "email address"),
        ("ADA.LOVELACE@EXAMPLE.COM", "email address"),
        ("Ada.Lovelace", "email address"),
        ("my name is ada.lovelace!", "email address"),
    ] {
        let body = serde_json::json!({"email": email, "password": password, "displayName": "Ada"});
        let answer = rest(&server, "POST", "/api/v1/auth/register", None, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{password:?}");
        let json = answer.json();
        let violation = &json["error"]["details"][0]["fieldViolations"][0];
        assert_eq!(violation["field"], "password", "{password:?}: {json}");
        let description = violation["description"].as_str().unwrap();
        assert!(description.contains(why), "{password:?}: {json}");
        assert!(
            !json.to_string().to_lowercase().contains("lovelace@"),
            "the answer does not echo the address: {json}"
        );
    }

    // Change: the same rules, on new_password.
    let mut client = grpc(&server).await;
    register(&mut client, email).await;
    let signed_in = login(&mut client, email).await;
    for password in ["          ", "1111111111", email, "ada.lovelace-2024"] {
        let refused = client
            .auth
            .change_password(bearer(
                auth::ChangePasswordRequest {
                    current_password: PASSWORD.into(),
                    new_password: password.into(),
                },
                &access(&signed_in),
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{password:?}");
        assert!(
            refused.message().starts_with("new_password: "),
            "{password:?}: {}",
            refused.message()
        );
    }

    // Reset: refused before the token is used up, which then still works.
    client
        .auth
        .request_password_reset(auth::RequestPasswordResetRequest {
            email: email.into(),
        })
        .await
        .unwrap();
    let token = reset_token(&wait_for_mail(&server, 1).await[0]);
    for password in [
        "\t\t\t\t\t\t\t\t",
        "aaaaaaaaaaaaaaaa",
        "Ada.Lovelace@Example.com!",
    ] {
        let refused = client
            .auth
            .reset_password(auth::ResetPasswordRequest {
                reset_token: token.clone(),
                new_password: password.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{password:?}");
        assert!(
            refused.message().starts_with("new_password: "),
            "{password:?}: {}",
            refused.message()
        );
    }
    client
        .auth
        .reset_password(auth::ResetPasswordRequest {
            reset_token: token,
            new_password: "another fine passphrase".into(),
        })
        .await
        .expect("the token was not used up by the refused passwords");
}

fn jwt_part(value: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A token issuer with the test server's secret, whose clock and claims the
/// test controls.
fn minter(issuer: &str, audience: &str, clock: std::sync::Arc<ManualClock>) -> TokenIssuer {
    TokenIssuer::new(
        tokens::hs256_key(JWT_SECRET.as_bytes()).unwrap(),
        Vec::new(),
        TokenSettings {
            issuer: issuer.into(),
            audience: audience.into(),
            access_ttl: Duration::from_secs(900),
            leeway: Duration::from_secs(5),
        },
        clock,
    )
}

#[tokio::test]
async fn forged_expired_and_misdirected_tokens_are_refused_everywhere() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    register(&mut client, "ada@example.com").await;
    let login = login(&mut client, "ada@example.com").await;
    let user_id = login.user.clone().unwrap().id;
    let good = access(&login);
    assert!(me(&mut client, &good).await.is_ok(), "the real token works");

    let past = ManualClock::new(std::time::SystemTime::now() - Duration::from_secs(3600));
    let (expired, _) =
        minter("slop-studios", "slop-api", past).issue_access(&user_id, &login.session_id);
    let now = ManualClock::starting_now();
    let (wrong_aud, _) = minter("slop-studios", "another-api", now.clone())
        .issue_access(&user_id, &login.session_id);
    let (wrong_iss, _) =
        minter("someone-else", "slop-api", now.clone()).issue_access(&user_id, &login.session_id);
    let parts: Vec<&str> = good.split('.').collect();
    let payload: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    let mut elevated = payload.clone();
    elevated["sub"] = serde_json::json!("someone-else");
    let tampered = format!("{}.{}.{}", parts[0], jwt_part(&elevated), parts[2]);
    let alg_none = format!(
        "{}.{}.",
        jwt_part(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        parts[1]
    );
    let refresh_as_access = login.tokens.clone().unwrap().refresh_token;

    for (name, token) in [
        ("expired", expired),
        ("wrong audience", wrong_aud),
        ("wrong issuer", wrong_iss),
        ("tampered", tampered),
        ("alg none", alg_none),
        ("refresh token as access token", refresh_as_access),
        ("garbage", "not.a.token".to_owned()),
    ] {
        let status = me(&mut client, &token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
        let answer = rest(
            &server,
            "GET",
            "/api/v1/auth/me",
            Some(&token),
            serde_json::Value::Null,
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{name} over REST");
        let web = grpc_web_call_with(
            &server,
            "/slop.auth.v1.AuthService/GetCurrentUser",
            &auth::GetCurrentUserRequest {},
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(
            web.grpc_status(),
            Some(Code::Unauthenticated as i32),
            "{name} over grpc-web"
        );
    }
    // An access token is not a refresh token either.
    let swapped = client
        .auth
        .refresh_token(auth::RefreshTokenRequest {
            refresh_token: good,
        })
        .await
        .unwrap_err();
    assert_eq!(swapped.code(), Code::Unauthenticated);
}

/// A fresh Ed25519 private key in PKCS#8 PEM, as `openssl genpkey
/// -algorithm ed25519` writes it.
fn ed25519_pem() -> String {
    use ed25519_dalek::pkcs8::{EncodePrivateKey as _, spki::der::pem::LineEnding};
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
}

#[tokio::test]
async fn eddsa_keys_are_published_and_hs256_tokens_made_with_them_are_refused() {
    let key_dir = std::env::temp_dir().join(format!("slop-e2e-key-{}", std::process::id()));
    std::fs::create_dir_all(&key_dir).unwrap();
    let key_file = key_dir.join(format!("ed25519-{:?}.pem", std::thread::current().id()));
    std::fs::write(&key_file, ed25519_pem()).unwrap();
    let server = TestServer::start_with(|config| {
        config.jwt_private_key_file = Some(key_file.clone());
    })
    .await;
    let mut client = grpc(&server).await;
    register(&mut client, "ada@example.com").await;
    let login = login(&mut client, "ada@example.com").await;
    let token = access(&login);
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert!(me(&mut client, &token).await.is_ok());

    let jwks = crate::harness::get(&server.url("/.well-known/jwks.json"))
        .await
        .json();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["kid"], header["kid"]);
    assert!(key.get("d").is_none(), "no private part");

    // The classic swap: HS256 with the public key as the HMAC secret.
    let public = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key["x"].as_str().unwrap())
        .unwrap();
    let forged_header =
        jwt_part(&serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": header["kid"]}));
    let body = token.split('.').nth(1).unwrap();
    let signing_input = format!("{forged_header}.{body}");
    let mac = secrets::hmac_b64(&public, signing_input.as_bytes());
    let forged = format!("{signing_input}.{mac}");
    assert_eq!(
        me(&mut client, &forged).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // And an HS256 token made with the configured-away JWT_SECRET too.
    let (hs, _) = minter("slop-studios", "slop-api", ManualClock::starting_now())
        .issue_access(&login.user.unwrap().id, &login.session_id);
    assert_eq!(
        me(&mut client, &hs).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let _ = std::fs::remove_file(key_file);
}

#[tokio::test]
async fn service_only_operations_refuse_users_and_serve_services() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    register(&mut client, "ada@example.com").await;
    let login = login(&mut client, "ada@example.com").await;
    let token = access(&login);
    let user_id = login.user.clone().unwrap().id;

    let as_user = client
        .auth
        .validate_token(bearer(
            auth::ValidateTokenRequest {
                access_token: token.clone(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(as_user.code(), Code::PermissionDenied);
    let anonymous = client
        .auth
        .validate_token(auth::ValidateTokenRequest {
            access_token: token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let revoke_as_user = client
        .sessions
        .revoke_user_sessions(bearer(
            session::RevokeUserSessionsRequest {
                user_id: user_id.clone(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(revoke_as_user.code(), Code::PermissionDenied);
    let rest_as_user = rest(
        &server,
        "POST",
        "/api/v1/auth/validate",
        Some(&token),
        serde_json::json!({"accessToken": token}),
    )
    .await;
    assert_eq!(rest_as_user.status, StatusCode::FORBIDDEN);

    let valid = client
        .auth
        .validate_token(bearer(
            auth::ValidateTokenRequest {
                access_token: token.clone(),
            },
            SERVICE_KEY,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(valid.active);
    assert_eq!(valid.user_id, user_id);
    assert_eq!(valid.session_id, login.session_id);
    let rest_valid = rest(
        &server,
        "POST",
        "/api/v1/auth/validate",
        Some(SERVICE_KEY),
        serde_json::json!({"accessToken": token}),
    )
    .await;
    assert_eq!(rest_valid.status, StatusCode::OK);
    assert_eq!(rest_valid.json()["active"], true);

    let revoked = rest(
        &server,
        "DELETE",
        &format!("/api/v1/users/{user_id}/sessions"),
        Some(SERVICE_KEY),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(revoked.json()["revokedSessionCount"], 1);
    let after = client
        .auth
        .validate_token(bearer(
            auth::ValidateTokenRequest {
                access_token: token.clone(),
            },
            SERVICE_KEY,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!after.active);
    assert_eq!(after.inactive_reason(), auth::InactiveReason::SessionEnded);
    let garbage = client
        .auth
        .validate_token(bearer(
            auth::ValidateTokenRequest {
                access_token: "nope".into(),
            },
            SERVICE_KEY,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(garbage.inactive_reason(), auth::InactiveReason::Invalid);
}

#[tokio::test]
async fn browsers_sign_in_with_a_cookie_guarded_against_csrf() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    register(&mut client, "ada@example.com").await;
    let login = rest(
        &server,
        "POST",
        "/api/v1/auth/login?cookie=true",
        None,
        serde_json::json!({"email": "ada@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK);
    // The cookies carry the session: the body, which script on the page
    // can read, carries no token (HttpOnly would hide nothing otherwise).
    let body = login.json();
    assert_eq!(body["user"]["email"], "ada@example.com", "{body}");
    assert!(body["sessionId"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(body.get("tokens").is_none(), "{body}");
    for text in [
        &body.to_string(),
        &String::from_utf8_lossy(&login.body).into_owned(),
    ] {
        assert!(
            !text.contains("refreshToken") && !text.contains("accessToken"),
            "{text}"
        );
    }
    let cookies: Vec<String> = login
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session_cookie = cookies
        .iter()
        .find(|c| c.starts_with("slop_session="))
        .expect("session cookie");
    assert!(session_cookie.contains("HttpOnly"));
    assert!(session_cookie.contains("SameSite=Lax"));
    assert!(
        !session_cookie.contains("Secure"),
        "development serves plain HTTP"
    );
    let csrf_cookie = cookies
        .iter()
        .find(|c| c.starts_with("slop_csrf="))
        .expect("CSRF cookie");
    let pair = |c: &str| c.split(';').next().unwrap().to_owned();
    let cookie_header = format!("{}; {}", pair(session_cookie), pair(csrf_cookie));
    let csrf = pair(csrf_cookie)
        .trim_start_matches("slop_csrf=")
        .to_owned();

    let with_cookie = |method: &str, path: &str, csrf: Option<&str>, body: serde_json::Value| {
        let mut request = Request::builder()
            .method(method)
            .uri(server.url(path))
            .header("cookie", &cookie_header)
            .header("content-type", "application/json");
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        http(request.body(Full::from(body.to_string())).unwrap())
    };
    let me = with_cookie("GET", "/api/v1/auth/me", None, serde_json::json!({})).await;
    assert_eq!(me.status, StatusCode::OK);
    let forged = with_cookie(
        "PATCH",
        "/api/v1/auth/me",
        None,
        serde_json::json!({"displayName": "Mallory"}),
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(
        forged.json()["error"]["details"][0]["reason"],
        "CSRF_TOKEN_INVALID"
    );
    let wrong = with_cookie(
        "PATCH",
        "/api/v1/auth/me",
        Some("wrong"),
        serde_json::json!({"displayName": "Mallory"}),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let patched = with_cookie(
        "PATCH",
        "/api/v1/auth/me",
        Some(&csrf),
        serde_json::json!({"displayName": "Ada L."}),
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK);

    let logout = with_cookie(
        "POST",
        "/api/v1/auth/logout",
        Some(&csrf),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(logout.status, StatusCode::OK);
    assert!(
        logout
            .headers
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().unwrap().starts_with("slop_session=;")),
        "logout clears the cookie"
    );
    let after = with_cookie("GET", "/api/v1/auth/me", None, serde_json::json!({})).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    let tampered = http(
        Request::get(server.url("/api/v1/auth/me"))
            .header("cookie", "slop_session=someid.bogusmac")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(tampered.status, StatusCode::UNAUTHORIZED);
}

/// A page that also needs a bearer token (say, for grpc-web) asks for an
/// access token with `access_token=true`; the refresh token stays out of
/// the body either way, and the cookies are set as without it.
#[tokio::test]
async fn a_cookie_login_hands_out_an_access_token_only_when_asked() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    register(&mut client, "ada@example.com").await;
    for query in [
        "cookie=true&access_token=true",
        "accessToken=true&cookie=true",
    ] {
        let login = rest(
            &server,
            "POST",
            &format!("/api/v1/auth/login?{query}"),
            None,
            serde_json::json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
        assert_eq!(login.status, StatusCode::OK, "{query}");
        let cookies: Vec<&str> = login
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(
            cookies.iter().any(|c| c.starts_with("slop_session=")),
            "{query}: {cookies:?}"
        );
        let body = login.json();
        let tokens = &body["tokens"];
        assert!(body["user"].is_object(), "{query}: {body}");
        assert!(tokens.get("refreshToken").is_none(), "{query}: {body}");
        assert!(
            tokens.get("refreshTokenExpiresIn").is_none(),
            "{query}: {body}"
        );
        assert_eq!(tokens["accessTokenExpiresIn"], "900s", "{query}: {body}");
        let access = tokens["accessToken"].as_str().expect("an access token");
        assert!(me(&mut client, access).await.is_ok(), "{query}");
    }
    // Without cookie mode the body is the whole token pair, as before.
    let plain = rest(
        &server,
        "POST",
        "/api/v1/auth/login?access_token=true",
        None,
        serde_json::json!({"email": "ada@example.com", "password": PASSWORD}),
    )
    .await
    .json();
    assert!(plain["tokens"]["refreshToken"].is_string(), "{plain}");
}

/// Cookie login is the REST route's `?cookie=true` and nothing else: a
/// client that sends the header names the bridge once used to ask the
/// service for cookies (over native gRPC, grpc-web or REST) gets the
/// ordinary answer, tokens in the body and no `set-cookie`, and the
/// logout of such a client clears nothing either.
#[tokio::test]
async fn headers_from_the_wire_cannot_ask_login_for_cookies() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    register(&mut client, "ada@example.com").await;
    let cookie_headers = [
        ("x-slop-cookie-login", "1"),
        ("x-slop-cookie-login-access-token", "1"),
    ];

    let mut request = tonic::Request::new(auth::LoginRequest {
        email: "ada@example.com".into(),
        password: PASSWORD.into(),
    });
    for (name, value) in cookie_headers {
        request.metadata_mut().insert(name, value.parse().unwrap());
    }
    let grpc_login = client.auth.login(request).await.expect("gRPC login");
    assert!(
        grpc_login.metadata().get("set-cookie").is_none(),
        "gRPC: {:?}",
        grpc_login.metadata()
    );
    assert!(
        !grpc_login
            .into_inner()
            .tokens
            .expect("tokens in the body")
            .refresh_token
            .is_empty()
    );

    let web_login = grpc_web_call_with(
        &server,
        "/slop.auth.v1.AuthService/Login",
        &auth::LoginRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
        },
        &cookie_headers,
    )
    .await;
    assert_eq!(web_login.grpc_status(), Some(0));
    assert!(
        web_login.headers.get("set-cookie").is_none(),
        "grpc-web: {:?}",
        web_login.headers
    );
    let web_login = auth::LoginResponse::decode(web_login.messages[0].clone()).unwrap();
    assert!(!web_login.tokens.unwrap().refresh_token.is_empty());

    let rest_login = crate::harness::rest_with(
        &server,
        "POST",
        "/api/v1/auth/login",
        None,
        &cookie_headers,
        serde_json::json!({"email": "ada@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(rest_login.status, StatusCode::OK);
    assert!(
        rest_login.headers.get("set-cookie").is_none(),
        "REST: {:?}",
        rest_login.headers
    );
    assert!(rest_login.json()["tokens"]["refreshToken"].is_string());

    // Logging out with a refresh token and a session cookie header over
    // gRPC clears no cookie: gRPC knows none.
    let mut request = tonic::Request::new(auth::LogoutRequest {
        refresh_token: web_login_refresh(&mut client).await,
    });
    request
        .metadata_mut()
        .insert("cookie", "slop_session=whatever".parse().unwrap());
    let logout = client.auth.logout(request).await.expect("gRPC logout");
    assert!(logout.metadata().get("set-cookie").is_none());
}

/// The refresh token of a fresh gRPC login of ada@example.com.
async fn web_login_refresh(client: &mut Grpc) -> String {
    login(client, "ada@example.com")
        .await
        .tokens
        .unwrap()
        .refresh_token
}

/// A service key written the way SERVICE_KEYS lists it (`name:secret`) is
/// refused with a message that says what to send, and echoes nothing.
#[tokio::test]
async fn a_service_key_sent_with_its_name_says_to_send_only_the_secret() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    let written = format!("test-service:{SERVICE_KEY}");
    let refused = client
        .auth
        .validate_token(bearer(
            auth::ValidateTokenRequest {
                access_token: "x".into(),
            },
            &written,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(reason(&refused), "SERVICE_KEY_WITH_NAME");
    let message = refused.message();
    assert!(
        message.contains("Bearer <secret>") && message.contains("SERVICE_KEYS"),
        "{message}"
    );
    assert!(
        !message.contains(SERVICE_KEY) && !message.contains("test-service"),
        "{message}"
    );

    let over_rest = rest(
        &server,
        "POST",
        "/api/v1/auth/validate",
        Some(&written),
        serde_json::json!({"accessToken": "x"}),
    )
    .await;
    assert_eq!(over_rest.status, StatusCode::UNAUTHORIZED);
    let text = String::from_utf8_lossy(&over_rest.body).into_owned();
    assert!(text.contains("Bearer <secret>"), "{text}");
    assert!(!text.contains(SERVICE_KEY), "{text}");
    // A wrong secret with a name gets the same answer: it says nothing of
    // which services exist.
    let guessed = rest(
        &server,
        "POST",
        "/api/v1/auth/validate",
        Some("billing:not-a-key-at-all"),
        serde_json::json!({"accessToken": "x"}),
    )
    .await;
    assert_eq!(guessed.status, over_rest.status);
    assert_eq!(guessed.body, over_rest.body);
}

#[tokio::test]
async fn session_ids_are_random_and_every_login_gets_a_new_one() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    register(&mut client, "ada@example.com").await;
    let mut ids = std::collections::HashSet::new();
    for _ in 0..5 {
        let login = login(&mut client, "ada@example.com").await;
        let (id, user) = (login.session_id, login.user.unwrap());
        // The user's shard tag (the Redis Cluster slot of their sessions),
        // then the random part.
        let tag = slop_server::identity::sessions::shard_tag(&user.id);
        let random = id
            .strip_prefix(&format!("{tag}~"))
            .unwrap_or_else(|| panic!("{id} starts with the user's tag {tag}"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(random)
            .expect("the random part is base64url");
        assert!(
            bytes.len() * 8 >= 128,
            "{id} carries {} bits",
            bytes.len() * 8
        );
        assert!(ids.insert(id), "a login reused a session id");
    }
}

#[tokio::test]
async fn an_idle_session_ends_and_its_refresh_token_with_it() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    register(&mut client, "ada@example.com").await;
    let login = login(&mut client, "ada@example.com").await;
    let tokens = login.tokens.unwrap();

    // Used within the idle timeout, the session slides on.
    server.clock.advance(Duration::from_secs(60));
    assert!(me(&mut client, &tokens.access_token).await.is_ok());

    // Unused for SESSION_TTL (a day), it is gone: the access token has
    // expired and the refresh token no longer finds its session.
    server.clock.advance(Duration::from_secs(86_400));
    let expired = me(&mut client, &tokens.access_token).await.unwrap_err();
    assert_eq!(reason(&expired), "TOKEN_EXPIRED");
    let refresh = client
        .auth
        .refresh_token(auth::RefreshTokenRequest {
            refresh_token: tokens.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(refresh.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn repeated_failed_logins_slow_down_that_account_from_that_address_only() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    register(&mut client, "ada@example.com").await;
    register(&mut client, "grace@example.com").await;
    let attempt = |email: &'static str, password: &'static str| {
        let mut auth = client.auth.clone();
        async move {
            auth.login(auth::LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await
        }
    };
    for _ in 0..5 {
        let status = attempt("ada@example.com", "wrong password!")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    // The sixth attempt waits, even with the right password...
    let throttled = attempt("ada@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(throttled.code(), Code::ResourceExhausted);
    assert_eq!(reason(&throttled), "LOGIN_THROTTLED");
    {
        use tonic_types::StatusExt as _;
        let wait = throttled
            .get_error_details()
            .retry_info()
            .unwrap()
            .retry_delay
            .unwrap();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(180),
            "{wait:?}"
        );
    }
    // ...over REST too, with Retry-After...
    let rest = rest(
        &server,
        "POST",
        "/api/v1/auth/login",
        None,
        serde_json::json!({"email": "ada@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(rest.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(rest.headers.contains_key("retry-after"));
    // ...while another account from the same address is not affected...
    attempt("grace@example.com", PASSWORD)
        .await
        .expect("another account logs in");
    // ...and once the wait is over, the owner logs in, which clears the count.
    server.clock.advance(Duration::from_secs(15 * 60));
    attempt("ada@example.com", PASSWORD)
        .await
        .expect("the owner logs in after the wait");
    for _ in 0..4 {
        attempt("ada@example.com", "wrong password!")
            .await
            .unwrap_err();
    }
    attempt("ada@example.com", PASSWORD)
        .await
        .expect("the count was reset by the success");
}

#[tokio::test]
async fn one_address_is_limited_on_the_endpoints_that_need_no_sign_in() {
    let server = TestServer::start_with(|config| {
        config.rate_limit_max_requests = 3;
        config.rate_limit_window_ms = 60_000;
    })
    .await;
    for _ in 0..3 {
        let answer = rest(
            &server,
            "POST",
            "/api/v1/auth/password-reset",
            None,
            serde_json::json!({"email": "x@example.com"}),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let limited = rest(
        &server,
        "POST",
        "/api/v1/auth/password-reset",
        None,
        serde_json::json!({"email": "x@example.com"}),
    )
    .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        limited.json()["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["reason"].is_string())
            .unwrap()["reason"],
        "RATE_LIMITED"
    );
    assert_eq!(limited.headers["retry-after"], "20");
    let login = rest(
        &server,
        "POST",
        "/api/v1/auth/login",
        None,
        serde_json::json!({"email": "x@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(
        login.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the limit is per address, across endpoints"
    );
    server.clock.advance(Duration::from_secs(20));
    let again = rest(
        &server,
        "POST",
        "/api/v1/auth/password-reset",
        None,
        serde_json::json!({"email": "x@example.com"}),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
}

#[tokio::test]
async fn failed_logins_for_unknown_accounts_are_throttled_the_same_way() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    for _ in 0..5 {
        let status = client
            .auth
            .login(auth::LoginRequest {
                email: "nobody@example.com".into(),
                password: "guess".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let throttled = client
        .auth
        .login(auth::LoginRequest {
            email: "nobody@example.com".into(),
            password: "guess".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        reason(&throttled),
        "LOGIN_THROTTLED",
        "as for a real account, so throttling reveals nothing"
    );
}
