use super::*;

#[test]
fn emails_are_trimmed_lower_cased_and_checked() {
    assert_eq!(
        normalize_email("  Ada@Example.COM "),
        Ok("ada@example.com".into())
    );
    for bad in [
        "",
        "ada",
        "ada@",
        "@example.com",
        "ada@example",
        "a b@example.com",
        "ada@@example.com",
    ] {
        assert!(normalize_email(bad).is_err(), "{bad}");
    }
    assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).is_err());
}

#[test]
fn display_names_are_trimmed_and_bounded() {
    assert_eq!(display_name("  Ada  ").unwrap(), "Ada");
    assert!(display_name("").is_err());
    assert!(display_name(&"é".repeat(100)).is_ok());
    assert!(display_name(&"é".repeat(101)).is_err());
    assert!(display_name("a\u{0}b").is_err());
}

#[test]
fn user_agents_are_bounded() {
    assert_eq!(bounded_user_agent(&"a".repeat(600)), "a".repeat(512));
    // Cut at a character boundary, never inside one.
    assert_eq!(bounded_user_agent(&"é".repeat(300)), "é".repeat(256));
    assert_eq!(
        bounded_user_agent(&format!("a{}", "é".repeat(300))).len(),
        511
    );
}

// The flows, over the memory session store and rate limiter, SQLite in a
// temporary file, and the manual clock.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::Arc,
};

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, Version};

use crate::{
    identity::passwords::{M_COST, P_COST, T_COST},
    identity::{LOGIN_FAILURES, REFRESH_REUSE_GRACE},
    infra::clock::ManualClock,
    infra::config::Config,
};

const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "correct horse battery staple";
const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const ELSEWHERE: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));

/// An identity core over memory backends and a throwaway SQLite file,
/// with the clock the test moves.
struct Core {
    identity: Arc<Identity>,
    clock: Arc<ManualClock>,
    database: PathBuf,
}

impl Core {
    async fn new() -> Self {
        let clock = ManualClock::starting_now();
        let database =
            std::env::temp_dir().join(format!("slop-flows-{}.db", uuid::Uuid::new_v4().simple()));
        let mut config = Config::embedded_defaults();
        config.database_url = format!("sqlite:{}", database.display());
        config.redis_url = None;
        let identity = Identity::from_config(&config, clock.clone(), None)
            .await
            .expect("an identity over memory backends");
        Self {
            identity: Arc::new(identity),
            clock,
            database,
        }
    }

    /// A core with Ada's account.
    async fn with_account() -> Self {
        let core = Self::new().await;
        core.identity
            .register(Registration {
                email: EMAIL.into(),
                display_name: "Ada".into(),
                password: PASSWORD.into(),
                client_ip: Some(HOME),
            })
            .await
            .expect("register");
        core
    }

    async fn login_from(&self, email: &str, password: &str, ip: IpAddr) -> Result<SignedIn> {
        self.identity
            .login(LoginAttempt {
                email: email.into(),
                password: password.into(),
                client_ip: Some(ip),
                user_agent: "tests".into(),
            })
            .await
    }

    async fn login(&self) -> SignedIn {
        self.login_from(EMAIL, PASSWORD, HOME).await.expect("login")
    }

    async fn refresh(&self, token: &str) -> Result<Refreshed> {
        self.identity.refresh(token, Some(HOME)).await
    }

    async fn session_is_live(&self, session_id: &str) -> bool {
        self.identity
            .sessions
            .get(session_id)
            .await
            .unwrap()
            .is_some()
    }

    async fn stored_hash(&self) -> String {
        let account = self.identity.accounts.by_email(EMAIL).await.unwrap();
        account.expect("the account").password_hash
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.database.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

// Login.

#[tokio::test]
async fn a_login_starts_a_session_with_its_first_tokens() {
    let core = Core::with_account().await;
    let signed_in = core
        .login_from("  ADA@example.com ", PASSWORD, HOME)
        .await
        .expect("the email is normalised");
    assert_eq!(signed_in.account.email, EMAIL);
    assert_eq!(signed_in.session.user_id, signed_in.account.id);
    assert_eq!(signed_in.session.ip, HOME.to_string());
    assert_eq!(signed_in.session.user_agent, "tests");
    assert!(core.session_is_live(&signed_in.session.id).await);
    assert_eq!(
        signed_in.tokens.refresh_expires_in,
        core.identity.settings.session_ttl
    );
    let claims = core
        .identity
        .tokens
        .verify_access(&signed_in.tokens.access_token)
        .expect("a valid access token");
    assert_eq!(claims.sid, signed_in.session.id);
}

#[tokio::test]
async fn wrong_passwords_and_unknown_emails_are_the_same_refusal() {
    let core = Core::with_account().await;
    for (email, password) in [
        (EMAIL, "not the password at all"),
        ("nobody@example.com", PASSWORD),
        (EMAIL, &"x".repeat(129)),
    ] {
        let refused = core.login_from(email, password, HOME).await.unwrap_err();
        assert!(
            matches!(refused, FlowError::InvalidCredentials),
            "{email}: {refused:?}"
        );
    }
}

#[tokio::test]
async fn failed_logins_throttle_that_account_from_that_address_for_a_while() {
    let core = Core::with_account().await;
    for _ in 0..LOGIN_FAILURES.limit {
        let refused = core.login_from(EMAIL, "wrong password!", HOME).await;
        assert!(matches!(refused, Err(FlowError::InvalidCredentials)));
    }
    // Now even the right password waits, for one emission interval of
    // LOGIN_FAILURES...
    let Err(FlowError::LoginThrottled { retry_after }) =
        core.login_from(EMAIL, PASSWORD, HOME).await
    else {
        panic!("the sixth attempt is throttled");
    };
    let interval = LOGIN_FAILURES.window / LOGIN_FAILURES.limit;
    assert!(
        retry_after > Duration::ZERO && retry_after <= interval,
        "{retry_after:?}"
    );
    // ...from this address only...
    core.login_from(EMAIL, PASSWORD, ELSEWHERE)
        .await
        .expect("the owner elsewhere logs in");
    // ...until the wait is over: a millisecond early is still too early.
    core.clock.advance(retry_after - Duration::from_millis(1));
    assert!(matches!(
        core.login_from(EMAIL, PASSWORD, HOME).await,
        Err(FlowError::LoginThrottled { .. })
    ));
    core.clock.advance(Duration::from_millis(1));
    core.login().await;
    // A success forgets the failures: four more fit before the next wait.
    for _ in 0..LOGIN_FAILURES.limit - 1 {
        let refused = core.login_from(EMAIL, "wrong password!", HOME).await;
        assert!(matches!(refused, Err(FlowError::InvalidCredentials)));
    }
    core.login().await;
}

#[tokio::test]
async fn unknown_accounts_are_throttled_like_known_ones() {
    let core = Core::new().await;
    for _ in 0..LOGIN_FAILURES.limit {
        let refused = core.login_from(EMAIL, PASSWORD, HOME).await;
        assert!(matches!(refused, Err(FlowError::InvalidCredentials)));
    }
    assert!(matches!(
        core.login_from(EMAIL, PASSWORD, HOME).await,
        Err(FlowError::LoginThrottled { .. })
    ));
}

#[tokio::test]
async fn a_login_rehashes_a_password_stored_with_weaker_parameters() {
    let core = Core::with_account().await;
    let weak = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(8192, 1, 1, Some(32)).unwrap(),
    )
    .hash_password(PASSWORD.as_bytes())
    .unwrap()
    .to_string();
    let account = core.login().await.account;
    core.identity
        .accounts
        .set_password_hash(&account.id, &weak, core.identity.now())
        .await
        .unwrap();

    // A wrong password changes nothing...
    let refused = core.login_from(EMAIL, "wrong password!", HOME).await;
    assert!(matches!(refused, Err(FlowError::InvalidCredentials)));
    assert_eq!(core.stored_hash().await, weak);
    // ...the right one is upgraded to today's parameters, and still works.
    core.login().await;
    let upgraded = core.stored_hash().await;
    assert!(
        upgraded.starts_with(&format!("$argon2id$v=19$m={M_COST},t={T_COST},p={P_COST}$")),
        "{upgraded}"
    );
    core.login().await;
    assert_eq!(core.stored_hash().await, upgraded, "upgraded once");
}

#[tokio::test]
async fn the_address_limit_covers_every_endpoint_that_needs_no_sign_in() {
    let core = Core::with_account().await;
    // Registration spent one request of HOME's allowance.
    let allowance = core.identity.settings.anonymous_rate.limit - 1;
    for _ in 0..allowance {
        core.identity
            .request_password_reset("someone@example.com", Some(HOME))
            .await
            .expect("within the limit");
    }
    for refused in [
        core.login_from(EMAIL, PASSWORD, HOME).await.map(drop),
        core.refresh("whatever.token").await.map(drop),
        core.identity
            .request_password_reset(EMAIL, Some(HOME))
            .await,
    ] {
        assert!(
            matches!(refused, Err(FlowError::RateLimited { .. })),
            "{refused:?}"
        );
    }
    core.login_from(EMAIL, PASSWORD, ELSEWHERE)
        .await
        .expect("another address is not limited");
}

// Refresh.

#[tokio::test]
async fn a_refresh_rotates_the_refresh_token() {
    let core = Core::with_account().await;
    let first = core.login().await;
    let refreshed = core.refresh(&first.tokens.refresh_token).await.unwrap();
    assert_eq!(refreshed.session.id, first.session.id);
    assert_eq!(refreshed.session.refresh_generation, 1);
    assert_ne!(refreshed.tokens.refresh_token, first.tokens.refresh_token);
    let again = core.refresh(&refreshed.tokens.refresh_token).await.unwrap();
    assert_eq!(again.session.refresh_generation, 2);
}

#[tokio::test]
async fn the_replaced_token_within_the_grace_gets_the_same_new_tokens() {
    let core = Core::with_account().await;
    let old = core.login().await.tokens.refresh_token;
    let winner = core.refresh(&old).await.unwrap();
    core.clock.advance(REFRESH_REUSE_GRACE);
    // At the very end of the grace, the retry still gets what the winner
    // got, and rotates nothing.
    let retry = core.refresh(&old).await.expect("within the grace");
    assert_eq!(retry.tokens.refresh_token, winner.tokens.refresh_token);
    assert_eq!(retry.session.refresh_generation, 1);
    core.refresh(&winner.tokens.refresh_token)
        .await
        .expect("the shared new token refreshes");
}

#[tokio::test]
async fn the_replaced_token_after_the_grace_is_a_replay_that_ends_the_session() {
    let core = Core::with_account().await;
    let signed_in = core.login().await;
    let old = signed_in.tokens.refresh_token;
    let new = core.refresh(&old).await.unwrap().tokens.refresh_token;
    core.clock
        .advance(REFRESH_REUSE_GRACE + Duration::from_millis(1));
    assert!(matches!(
        core.refresh(&old).await,
        Err(FlowError::RefreshTokenReused)
    ));
    assert!(!core.session_is_live(&signed_in.session.id).await);
    // The thief or the owner, whoever holds the newest token, is out too.
    assert!(matches!(
        core.refresh(&new).await,
        Err(FlowError::RefreshTokenInvalid)
    ));
}

#[tokio::test]
async fn a_token_two_generations_old_is_a_replay_even_within_the_grace() {
    let core = Core::with_account().await;
    let signed_in = core.login().await;
    let oldest = signed_in.tokens.refresh_token;
    let middle = core.refresh(&oldest).await.unwrap().tokens.refresh_token;
    core.refresh(&middle).await.unwrap();
    assert!(matches!(
        core.refresh(&oldest).await,
        Err(FlowError::RefreshTokenReused)
    ));
    assert!(!core.session_is_live(&signed_in.session.id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_with_one_token_all_get_the_same_new_tokens() {
    let core = Core::with_account().await;
    for _ in 0..20 {
        let token = core.login().await.tokens.refresh_token;
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let identity = core.identity.clone();
                let token = token.clone();
                tokio::spawn(async move { identity.refresh(&token, Some(HOME)).await })
            })
            .collect();
        let mut new_tokens = Vec::new();
        for racer in racers {
            let refreshed = racer.await.unwrap().expect("both refreshes succeed");
            assert_eq!(refreshed.session.refresh_generation, 1);
            new_tokens.push(refreshed.tokens.refresh_token);
        }
        assert_eq!(new_tokens[0], new_tokens[1]);
    }
}

#[tokio::test]
async fn refresh_tokens_that_are_not_ours_are_invalid() {
    let core = Core::with_account().await;
    let signed_in = core.login().await;
    let session_id = &signed_in.session.id;
    for token in [
        String::new(),
        "no-dot".to_owned(),
        format!("{session_id}."),
        format!("{session_id}.forged"),
        "unknown-session.secret".to_owned(),
        format!("{session_id}.{}", "a".repeat(600)),
    ] {
        assert!(
            matches!(
                core.refresh(&token).await,
                Err(FlowError::RefreshTokenInvalid)
            ),
            "{token}"
        );
    }
    assert!(core.session_is_live(session_id).await, "nothing was ended");
}

#[tokio::test]
async fn an_idle_session_can_no_longer_be_refreshed() {
    let core = Core::with_account().await;
    let token = core.login().await.tokens.refresh_token;
    core.clock.advance(core.identity.settings.session_ttl);
    assert!(matches!(
        core.refresh(&token).await,
        Err(FlowError::RefreshTokenInvalid)
    ));
}

// Logout.

#[tokio::test]
async fn logout_ends_the_session_of_the_caller_or_of_a_refresh_token() {
    let core = Core::with_account().await;
    let by_caller = core.login().await.session.id;
    let ended = core
        .identity
        .log_out(SignOut::Session(&by_caller))
        .await
        .unwrap();
    assert_eq!(ended, by_caller);
    assert!(!core.session_is_live(&by_caller).await);

    // The token one generation old still logs out (a tab that missed the
    // other's refresh), whenever it comes.
    let signed_in = core.login().await;
    let previous = signed_in.tokens.refresh_token;
    core.refresh(&previous).await.unwrap();
    core.clock.advance(REFRESH_REUSE_GRACE * 10);
    core.identity
        .log_out(SignOut::RefreshToken(&previous))
        .await
        .expect("logs out");
    assert!(!core.session_is_live(&signed_in.session.id).await);
}

#[tokio::test]
async fn logout_with_an_older_token_is_a_replay() {
    let core = Core::with_account().await;
    let signed_in = core.login().await;
    let oldest = signed_in.tokens.refresh_token;
    let middle = core.refresh(&oldest).await.unwrap().tokens.refresh_token;
    core.refresh(&middle).await.unwrap();
    assert!(matches!(
        core.identity.log_out(SignOut::RefreshToken(&oldest)).await,
        Err(FlowError::RefreshTokenReused)
    ));
    assert!(!core.session_is_live(&signed_in.session.id).await);
}

// Registration and passwords.

#[tokio::test]
async fn registering_a_taken_email_answers_the_same() {
    let core = Core::with_account().await;
    core.identity
        .register(Registration {
            email: " Ada@Example.com".into(),
            display_name: "Mallory".into(),
            password: "another long password".into(),
            client_ip: Some(ELSEWHERE),
        })
        .await
        .expect("the same answer as a new email");
    assert_eq!(core.login().await.account.display_name, "Ada");
}

#[tokio::test]
async fn registration_refuses_bad_fields_by_name() {
    let core = Core::new().await;
    for (email, name, password, field) in [
        ("ada", "Ada", PASSWORD, "email"),
        (EMAIL, " ", PASSWORD, "display_name"),
        (EMAIL, "Ada", "short", "password"),
        (EMAIL, "Ada", "ada@example.com!", "password"),
    ] {
        let refused = core
            .identity
            .register(Registration {
                email: email.into(),
                display_name: name.into(),
                password: password.into(),
                client_ip: Some(HOME),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, FlowError::Invalid { field: f, .. } if *f == field),
            "{refused:?}"
        );
    }
}

#[tokio::test]
async fn changing_the_password_keeps_this_session_and_ends_the_others() {
    let core = Core::with_account().await;
    let current = core.login().await;
    let other = core.login().await;
    let change = |current_password: &str| PasswordChange {
        user_id: &current.account.id,
        session_id: &current.session.id,
        current_password: current_password.into(),
        new_password: "a brand new passphrase".into(),
    };
    assert!(matches!(
        core.identity
            .change_password(change("wrong password!"))
            .await,
        Err(FlowError::WrongPassword)
    ));
    assert!(core.session_is_live(&other.session.id).await);
    let ended = core
        .identity
        .change_password(change(PASSWORD))
        .await
        .unwrap();
    assert_eq!(ended, 1);
    assert!(core.session_is_live(&current.session.id).await);
    assert!(!core.session_is_live(&other.session.id).await);
    assert!(matches!(
        core.login_from(EMAIL, PASSWORD, HOME).await,
        Err(FlowError::InvalidCredentials)
    ));
    core.login_from(EMAIL, "a brand new passphrase", HOME)
        .await
        .expect("the new password works");
}

#[tokio::test]
async fn a_reset_token_that_is_not_ours_changes_nothing() {
    let core = Core::with_account().await;
    for token in ["", "not-a-token", &"x".repeat(300)] {
        let refused = core
            .identity
            .reset_password(PasswordReset {
                reset_token: token.into(),
                new_password: "a brand new passphrase".into(),
                client_ip: Some(HOME),
            })
            .await;
        assert!(
            matches!(refused, Err(FlowError::ResetTokenInvalid)),
            "{token}"
        );
    }
    // A weak password is refused first, whatever the token.
    let weak = core
        .identity
        .reset_password(PasswordReset {
            reset_token: "not-a-token".into(),
            new_password: "short".into(),
            client_ip: Some(HOME),
        })
        .await;
    assert!(matches!(
        weak,
        Err(FlowError::Invalid {
            field: "new_password",
            ..
        })
    ));
    core.login().await;
}

#[tokio::test]
async fn the_account_of_a_user_who_is_gone_is_refused() {
    let core = Core::with_account().await;
    let signed_in = core.login().await;
    assert!(matches!(
        core.identity.account("no-such-account").await,
        Err(FlowError::AccountGone)
    ));
    assert_eq!(
        core.identity.account(&signed_in.account.id).await.unwrap(),
        signed_in.account
    );
}
