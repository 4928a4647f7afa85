//! Mail the server sends: how much one address can be made to receive
//! (MAIL_PER_RECIPIENT_LIMIT), and that the limit tells a caller nothing
//! about who has an account.

use std::time::Duration;

use http::StatusCode;

use crate::harness::{Answer, PASSWORD, TestServer, rest};

/// The mail in the outbox once the mail tasks that requests started have
/// had time to run: at least `count`, then a pause for any more.
async fn settled_mail(server: &TestServer, count: usize) -> Vec<String> {
    crate::harness::eventually("mail in the outbox", || async {
        server.mail().len() >= count
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.mail()
}

async fn request_reset(server: &TestServer, email: &str) -> Answer {
    rest(
        server,
        "POST",
        "/api/v1/auth/password-reset",
        None,
        serde_json::json!({ "email": email }),
    )
    .await
}

async fn register(server: &TestServer, email: &str) -> Answer {
    rest(
        server,
        "POST",
        "/api/v1/auth/register",
        None,
        serde_json::json!({"email": email, "password": PASSWORD, "displayName": "Ada"}),
    )
    .await
}

/// The same status and body.
fn same(a: &Answer, b: &Answer) -> bool {
    a.status == b.status && a.body == b.body
}

#[tokio::test]
async fn ten_reset_requests_send_one_address_at_most_three_mails_and_answer_alike() {
    let server = TestServer::start().await;
    assert_eq!(
        register(&server, "ada@example.com").await.status,
        StatusCode::OK
    );
    for _ in 0..10 {
        let known = request_reset(&server, "ada@example.com").await;
        let unknown = request_reset(&server, "nobody@example.com").await;
        assert_eq!(known.status, StatusCode::OK);
        assert!(
            same(&known, &unknown),
            "an account shows: {known:?} / {unknown:?}"
        );
    }
    let mail = settled_mail(&server, 3).await;
    assert_eq!(mail.len(), 3, "the default limit is 3 an hour");
    assert!(
        mail.iter()
            .all(|m| m.contains("\r\nTo: ada@example.com\r\n"))
    );

    // The allowance refills over the window (GCRA: one every 20 minutes).
    server.clock.advance(Duration::from_secs(20 * 60));
    for _ in 0..3 {
        assert_eq!(
            request_reset(&server, "Ada@Example.com ").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(settled_mail(&server, 4).await.len(), 4);
}

#[tokio::test]
async fn registering_a_taken_address_over_and_over_mails_its_owner_at_most_the_limit() {
    let server = TestServer::start_with(|config| config.mail_per_recipient_limit = 2).await;
    assert_eq!(
        register(&server, "ada@example.com").await.status,
        StatusCode::OK
    );
    for n in 0..10 {
        let taken = register(&server, "ada@example.com").await;
        let fresh = register(&server, &format!("new-{n}@example.com")).await;
        assert_eq!(taken.status, StatusCode::OK);
        assert!(same(&taken, &fresh), "a taken address shows: {taken:?}");
    }
    let mail = settled_mail(&server, 2).await;
    assert_eq!(mail.len(), 2, "MAIL_PER_RECIPIENT_LIMIT=2");
    assert!(mail.iter().all(|m| m.contains("tried to create")));

    // Resets share the address's allowance: it is the inbox that is limited.
    assert_eq!(
        request_reset(&server, "ada@example.com").await.status,
        StatusCode::OK
    );
    assert_eq!(settled_mail(&server, 2).await.len(), 2);
    // Another address has its own.
    assert_eq!(
        register(&server, "grace@example.com").await.status,
        StatusCode::OK
    );
    assert_eq!(
        request_reset(&server, "grace@example.com").await.status,
        StatusCode::OK
    );
    assert_eq!(settled_mail(&server, 3).await.len(), 3);
}
