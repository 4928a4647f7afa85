//! Who is calling: the one authenticate-the-caller function every RPC uses,
//! whichever front door the call came through.
//!
//! Credentials, as the services read them from request metadata (HTTP
//! headers) into [`Credentials`]:
//! - `authorization: Bearer <service key>`: a backend service named in
//!   SERVICE_KEYS (compared in constant time against every key); only the
//!   secret is sent, not the `name:` of its SERVICE_KEYS entry;
//! - `authorization: Bearer <access token>`: a user, if the JWT verifies and
//!   its session is live;
//! - the `slop_session` cookie (REST and WebSocket from browsers): a user, if
//!   the cookie's MAC verifies and its session is live. State-changing calls
//!   authenticated this way also need `x-csrf-token` (double submit: the
//!   token is in the readable `slop_csrf` cookie), so another site cannot
//!   make a browser act with its cookie.
//!
//! Every successful user authentication records a use of the session, which
//! slides its idle timeout, so a revoked or expired session fails on the
//! very next call, on every instance sharing the session store.
//!
//! A WebSocket signs in once: the caller its `GetSession("current")`
//! established comes back with its `Subscribe` calls as an
//! [`EstablishedCaller`], and [`Authenticator::established`] takes it
//! instead of the credentials, touching no session (the notification hub
//! ends the socket's streams when its session ends).
//!
//! Secrets derived from APP_SECRET (HMAC-SHA256, domain-separated):
//! cookie MACs, CSRF tokens, and refresh-token secrets (from each session's
//! random seed and refresh generation; see [`Authenticator::refresh_secret`]).

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use slop_context::EstablishedCaller;

use crate::{
    identity::secrets,
    identity::sessions::{Session, SessionError, SessionStore},
    identity::tokens::{TokenError, TokenIssuer},
    infra::clock::to_millis,
    infra::config::{Secret, ServiceKeys},
};

pub use slop_context::{CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE};

/// Whether a call changes state (and so needs CSRF protection when
/// authenticated by cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only.
    Read,
    /// Changes state.
    Write,
}

/// How a user proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A bearer access token.
    Bearer,
    /// The session cookie.
    Cookie,
}

/// A signed-in user making a call.
#[derive(Debug, Clone)]
pub struct UserCaller {
    /// The user.
    pub user_id: String,
    /// Their session, as of this call (already touched).
    pub session: Session,
    /// How they authenticated.
    pub via: Via,
    /// The `exp` of their access token (Unix seconds), when they sent one:
    /// a caller held for later calls ([`Established`]) is good until then.
    pub token_exp: Option<i64>,
}

/// A signed-in user as the server hands them out in an
/// [`EstablishedCaller`] (see [`Authenticator::establish`]). Its fields are
/// private, so this module makes every one: the server accepts no other
/// value as an established caller.
///
/// It holds only what the connection's later calls need (who, which
/// session, and until when it may vouch for them), not the session's
/// record: a socket keeps it for its whole life, so it stays small, and the
/// session's refresh seed stays in the store.
#[derive(Debug)]
pub struct Established {
    user_id: Box<str>,
    session_id: Box<str>,
    /// The session's idle expiry when it was established (Unix ms).
    session_expires_at: i64,
    /// The access token's `exp` (Unix seconds), when one was sent.
    token_exp: Option<i64>,
}

impl Established {
    /// The user.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// Their session's id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Their session's idle expiry (Unix ms) as of when it was established:
    /// streams opened for it end then unless the session is used again.
    pub fn session_expires_at(&self) -> i64 {
        self.session_expires_at
    }
}

/// Whoever is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A signed-in user.
    User(UserCaller),
    /// A backend service, by its name in SERVICE_KEYS.
    Service(String),
}

/// Why the caller could not be established, or may not do what it asked.
/// The messages are for the caller: they say what to send instead and echo
/// no credential. services/status.rs turns each into its status and
/// `ErrorReason`.
#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    /// No `authorization` header and no session cookie.
    #[error("this call needs credentials: authorization: Bearer <access token or service key>")]
    Missing,
    /// The `authorization` header is not text.
    #[error("the authorization header is not text")]
    NotText,
    /// The `authorization` header is not `Bearer <token>`.
    #[error("expected authorization: Bearer <token>")]
    NotBearer,
    /// The bearer token has a ':', as a whole SERVICE_KEYS entry
    /// (`name:secret`) has and no access token does.
    #[error(
        "a service key is sent as `authorization: Bearer <secret>`, with only the secret part of its SERVICE_KEYS entry (name:secret), not the name"
    )]
    ServiceKeyWithName,
    /// The access token's lifetime has passed.
    #[error("the access token has expired: refresh it")]
    Expired,
    /// The access token does not verify.
    #[error("the access token is not valid: {0}")]
    Invalid(TokenError),
    /// The access token verifies but names another user than its session's.
    #[error("the access token does not match its session")]
    SessionMismatch,
    /// The session cookie's MAC does not verify.
    #[error("the session cookie is not valid")]
    CookieInvalid,
    /// A call that changes state, authenticated by cookie, without the
    /// matching `x-csrf-token`.
    #[error(
        "a request authenticated by cookie that changes state needs the x-csrf-token header (the value of the slop_csrf cookie)"
    )]
    CsrfMissing,
    /// The credentials' session has ended (logged out, revoked, expired).
    #[error("the session has ended (logged out, revoked or expired): log in again")]
    SessionEnded,
    /// A backend service called an operation of signed-in users.
    #[error("service '{0}' called an operation of signed-in users")]
    UserRequired(String),
    /// A user called an operation of backend services.
    #[error("only backend services (SERVICE_KEYS) may call this")]
    ServiceRequired,
    /// The session store did not answer: nothing is known about the caller.
    #[error("session store: {0}")]
    Unavailable(#[from] SessionError),
}

impl From<TokenError> for CallerError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Expired => Self::Expired,
            other => Self::Invalid(other),
        }
    }
}

/// The credentials a call presents, as its front door read them from the
/// request (`services::credentials` reads request metadata): the core
/// never sees headers. No `Debug`: every field is a secret.
#[derive(Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The `authorization` header, if sent; [`NotText`] when it is not
    /// visible ASCII.
    pub authorization: Option<Result<&'a str, NotText>>,
    /// The value of the session cookie, if sent.
    pub session_cookie: Option<&'a str>,
    /// The CSRF header (double submit); empty when absent or not text.
    pub csrf_token: &'a str,
}

/// A header value that is not visible ASCII text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotText;

/// Checks credentials.
pub struct Authenticator {
    tokens: Arc<TokenIssuer>,
    sessions: SessionStore,
    service_keys: ServiceKeys,
    app_secret: Secret,
    session_ttl: Duration,
}

impl Authenticator {
    /// An authenticator over these keys and stores.
    pub fn new(
        tokens: Arc<TokenIssuer>,
        sessions: SessionStore,
        service_keys: ServiceKeys,
        app_secret: Secret,
        session_ttl: Duration,
    ) -> Self {
        Self {
            tokens,
            sessions,
            service_keys,
            app_secret,
            session_ttl,
        }
    }

    /// Identifies the caller: a user or a backend service.
    pub async fn caller(
        &self,
        credentials: &Credentials<'_>,
        access: Access,
    ) -> Result<Caller, CallerError> {
        if let Some(bearer) = bearer(credentials)? {
            if let Some(name) = self.service_named_by(bearer) {
                return Ok(Caller::Service(name));
            }
            if bearer.contains(':') {
                // No access token has a ':'; a SERVICE_KEYS entry copied
                // whole (`name:secret`) has. Say what to send, echoing
                // nothing, whether or not the secret is right.
                return Err(CallerError::ServiceKeyWithName);
            }
            let claims = self.tokens.verify_access(bearer)?;
            let session = self.live_session(&claims.sid).await?;
            if session.user_id != claims.sub {
                return Err(CallerError::SessionMismatch);
            }
            return Ok(Caller::User(UserCaller {
                user_id: claims.sub,
                session,
                via: Via::Bearer,
                token_exp: Some(claims.exp),
            }));
        }
        if let Some(cookie) = credentials.session_cookie {
            let session_id = self
                .session_from_cookie(cookie)
                .ok_or(CallerError::CookieInvalid)?;
            if access == Access::Write {
                let sent = credentials.csrf_token;
                if !secrets::constant_time_eq(sent, &self.csrf_token(&session_id)) {
                    return Err(CallerError::CsrfMissing);
                }
            }
            let session = self.live_session(&session_id).await?;
            return Ok(Caller::User(UserCaller {
                user_id: session.user_id.clone(),
                session,
                via: Via::Cookie,
                token_exp: None,
            }));
        }
        Err(CallerError::Missing)
    }

    /// The value that stands for `user` in the later calls of a long-lived
    /// connection (a WebSocket): see [`EstablishedCaller`].
    pub fn establish(user: &UserCaller) -> EstablishedCaller {
        EstablishedCaller::new(Established {
            user_id: user.user_id.as_str().into(),
            session_id: user.session.id.as_str().into(),
            session_expires_at: user.session.expires_at,
            token_exp: user.token_exp,
        })
    }

    /// The caller `established` holds, for a call that only reads, when it
    /// is still good at `now`: None when it is not a value this server made
    /// (then authenticate the call's credentials as usual), or when it
    /// cannot vouch for the caller any more: its access token has expired
    /// (by the rule and leeway tokens are verified with) or its session's
    /// idle expiry, as held, has passed. Then the call's credentials answer
    /// as they always do: an expired token fails before any session is
    /// read, and a session another call kept alive is read afresh.
    ///
    /// It reads no session: a session that ends while held is the
    /// notification hub's to notice (it ends the session's streams, and
    /// with them the socket that holds the caller).
    pub fn established<'a>(
        &self,
        established: &'a EstablishedCaller,
        now: SystemTime,
    ) -> Option<&'a Established> {
        let user = established.get::<Established>()?;
        let token_expired = user
            .token_exp
            .is_some_and(|exp| self.tokens.expired(exp, now));
        let session_expired = user.session_expires_at <= to_millis(now);
        (!token_expired && !session_expired).then_some(user)
    }

    /// The caller, who must be a signed-in user.
    pub async fn user(
        &self,
        credentials: &Credentials<'_>,
        access: Access,
    ) -> Result<UserCaller, CallerError> {
        match self.caller(credentials, access).await? {
            Caller::User(user) => Ok(user),
            Caller::Service(name) => Err(CallerError::UserRequired(name)),
        }
    }

    /// The caller, who must be a backend service; returns its name.
    pub async fn service(&self, credentials: &Credentials<'_>) -> Result<String, CallerError> {
        match self.caller(credentials, Access::Read).await? {
            Caller::Service(name) => Ok(name),
            Caller::User(_) => Err(CallerError::ServiceRequired),
        }
    }

    async fn live_session(&self, session_id: &str) -> Result<Session, CallerError> {
        self.sessions
            .touch(session_id, self.session_ttl)
            .await?
            .ok_or(CallerError::SessionEnded)
    }

    /// The backend service whose key is the bearer token of `credentials`,
    /// if any. Unlike [`Authenticator::caller`] it checks no user token and
    /// touches no session, so public endpoints can show services more
    /// (`/health`) at no cost to anyone else.
    pub fn service_key_holder(&self, credentials: &Credentials<'_>) -> Option<String> {
        self.service_named_by(bearer(credentials).ok()??)
    }

    fn service_named_by(&self, bearer: &str) -> Option<String> {
        // Compare against every key, so timing says nothing about which.
        let mut found = None;
        for (name, secret) in &self.service_keys.0 {
            let matches: bool =
                subtle::ConstantTimeEq::ct_eq(bearer.as_bytes(), secret.expose()).into();
            if matches {
                found = Some(name.clone());
            }
        }
        found
    }

    fn mac(&self, purpose: &str, value: &str) -> String {
        secrets::derive(self.app_secret.expose(), purpose, value)
    }

    /// The value of the session cookie for a session: its id and a MAC, so
    /// the id alone (which users see in session lists) is not a credential.
    pub fn session_cookie_value(&self, session_id: &str) -> String {
        format!("{session_id}.{}", self.mac("cookie", session_id))
    }

    fn session_from_cookie(&self, value: &str) -> Option<String> {
        let (session_id, mac) = value.rsplit_once('.')?;
        secrets::constant_time_eq(mac, &self.mac("cookie", session_id))
            .then(|| session_id.to_owned())
    }

    /// The CSRF token of a session.
    pub fn csrf_token(&self, session_id: &str) -> String {
        self.mac("csrf", session_id)
    }

    /// The secret part of a session's refresh token of `generation`.
    pub fn refresh_secret(&self, session: &Session, generation: u64) -> String {
        self.mac(
            "refresh",
            &format!("{}\0{}\0{generation}", session.id, session.refresh_seed),
        )
    }

    /// The refresh token of a session's `generation`: `<session id>.<secret>`.
    pub fn refresh_token(&self, session: &Session, generation: u64) -> String {
        format!(
            "{}.{}",
            session.id,
            self.refresh_secret(session, generation)
        )
    }

    /// The store sessions live in.
    pub fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    /// The idle session timeout.
    pub fn session_ttl(&self) -> Duration {
        self.session_ttl
    }
}

/// Splits a refresh token into its session id and secret.
pub fn split_refresh_token(token: &str) -> Option<(&str, &str)> {
    let (session_id, secret) = token.split_once('.')?;
    (!session_id.is_empty() && !secret.is_empty() && token.len() <= 512)
        .then_some((session_id, secret))
}

/// The bearer token, if the call carries an `authorization` header.
fn bearer<'a>(credentials: &Credentials<'a>) -> Result<Option<&'a str>, CallerError> {
    let value = match credentials.authorization {
        None => return Ok(None),
        Some(Err(NotText)) => return Err(CallerError::NotText),
        Some(Ok(value)) => value,
    };
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(CallerError::NotBearer);
    }
    Ok(Some(token.trim()))
}

/// `Set-Cookie` values that sign a browser in to a session. The session
/// cookie is the API host's only; the CSRF cookie carries `Domain=` when
/// `csrf_domain` (CSRF_COOKIE_DOMAIN) is set, so that pages on the other
/// hosts under it can read the token and echo it in `x-csrf-token`.
pub fn login_cookies(
    authenticator: &Authenticator,
    session_id: &str,
    secure: bool,
    max_age: Duration,
    csrf_domain: Option<&str>,
) -> [String; 2] {
    let secure = if secure { "; Secure" } else { "" };
    let domain = domain_attribute(csrf_domain);
    let max_age = max_age.as_secs();
    let session_cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        authenticator.session_cookie_value(session_id)
    );
    let csrf_cookie = format!(
        "{CSRF_COOKIE}={}; Path=/; SameSite=Lax; Max-Age={max_age}{domain}{secure}",
        authenticator.csrf_token(session_id)
    );
    [session_cookie, csrf_cookie]
}

/// `Set-Cookie` values that sign a browser out. A browser drops a cookie
/// only for one of the same name, Domain and Path, so the CSRF cookie is
/// cleared with the `csrf_domain` it was set with.
pub fn logout_cookies(secure: bool, csrf_domain: Option<&str>) -> [String; 2] {
    let secure = if secure { "; Secure" } else { "" };
    let domain = domain_attribute(csrf_domain);
    [
        format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; SameSite=Lax{secure}"),
        format!("{CSRF_COOKIE}=; Path=/; Max-Age=0; SameSite=Lax{domain}{secure}"),
    ]
}

/// `; Domain=<domain>`, or nothing for a cookie of the API's host only.
fn domain_attribute(domain: Option<&str>) -> String {
    domain.map_or_else(String::new, |domain| format!("; Domain={domain}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        identity::{
            sessions::conformance,
            tokens::{SigningKey, TokenSettings},
        },
        infra::clock::{Clock as _, ManualClock},
    };

    const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
    const LEEWAY: Duration = Duration::from_secs(5);
    const SESSION_TTL: Duration = Duration::from_secs(3600);

    /// An authenticator on a manual clock, and a bearer caller of a live
    /// session.
    async fn bearer_caller() -> (Authenticator, Arc<ManualClock>, UserCaller) {
        let clock = ManualClock::starting_now();
        let tokens = Arc::new(TokenIssuer::new(
            SigningKey::generate_ed25519(),
            Vec::new(),
            TokenSettings {
                issuer: "slop".into(),
                audience: "slop".into(),
                access_ttl: TOKEN_TTL,
                leeway: LEEWAY,
            },
            clock.clone(),
        ));
        let sessions = SessionStore::memory(clock.clone());
        sessions
            .create(&conformance::session(&clock, "s1", "ada"))
            .await
            .unwrap();
        let (token, _) = tokens.issue_access("ada", &conformance::id("s1", "ada"));
        let auth = Authenticator::new(
            tokens,
            sessions,
            ServiceKeys::default(),
            Secret::from("caller-test-app-secret-0123456789abcdef"),
            SESSION_TTL,
        );
        let authorization = format!("Bearer {token}");
        let credentials = Credentials {
            authorization: Some(Ok(&authorization)),
            ..Credentials::default()
        };
        let user = auth.user(&credentials, Access::Read).await.unwrap();
        (auth, clock, user)
    }

    /// The cookies of a cookie login and of a logout, with this
    /// CSRF_COOKIE_DOMAIN.
    async fn cookies(csrf_domain: Option<&str>) -> ([String; 2], [String; 2]) {
        let (auth, _, _) = bearer_caller().await;
        let login = login_cookies(&auth, "s1", true, SESSION_TTL, csrf_domain);
        (login, logout_cookies(true, csrf_domain))
    }

    #[tokio::test]
    async fn the_csrf_cookie_is_the_hosts_own_unless_a_domain_is_set() {
        let ([session, csrf], [session_out, csrf_out]) = cookies(None).await;
        for cookie in [&session, &csrf, &session_out, &csrf_out] {
            assert!(!cookie.contains("Domain"), "{cookie}");
        }
        assert!(csrf.starts_with("slop_csrf=") && !csrf.contains("HttpOnly"));

        let ([session, csrf], [session_out, csrf_out]) = cookies(Some("example.com")).await;
        // Readable by the pages of every host under example.com.
        assert!(csrf.starts_with("slop_csrf="), "{csrf}");
        assert!(csrf.contains("; Domain=example.com"), "{csrf}");
        // Cleared with the same Domain and Path, or the browser keeps it.
        assert_eq!(
            csrf_out,
            "slop_csrf=; Path=/; Max-Age=0; SameSite=Lax; Domain=example.com; Secure"
        );
        // The session cookie stays the API host's only.
        for cookie in [&session, &session_out] {
            assert!(cookie.starts_with("slop_session="), "{cookie}");
            assert!(!cookie.contains("Domain"), "{cookie}");
        }
        assert!(session.contains("HttpOnly"));
    }

    #[tokio::test]
    async fn a_csrf_cookie_domain_changes_neither_the_token_nor_the_session_cookie() {
        let (without, _) = cookies(None).await;
        let (with, _) = cookies(Some("example.com")).await;
        assert_eq!(with[0], without[0]);
        let value = |cookie: &str| cookie.split(';').next().unwrap().to_owned();
        assert_eq!(value(&with[1]), value(&without[1]));
    }

    fn held_ids(held: Option<&Established>) -> Option<(String, String)> {
        held.map(|held| (held.user_id().to_owned(), held.session_id().to_owned()))
    }

    #[tokio::test]
    async fn an_established_caller_is_good_until_its_access_token_expires() {
        let (auth, clock, user) = bearer_caller().await;
        let held = Authenticator::establish(&user);
        assert_eq!(
            held_ids(auth.established(&held, clock.now())),
            Some(("ada".to_owned(), conformance::id("s1", "ada")))
        );
        // Refused from the second verify_access refuses the token.
        clock.advance(TOKEN_TTL + LEEWAY - Duration::from_secs(1));
        assert!(auth.established(&held, clock.now()).is_some());
        clock.advance(Duration::from_secs(1));
        assert!(auth.established(&held, clock.now()).is_none());
    }

    #[tokio::test]
    async fn an_established_caller_whose_session_expired_as_held_is_not_taken() {
        let (auth, clock, mut user) = bearer_caller().await;
        user.token_exp = None;
        let held = Authenticator::establish(&user);
        clock.advance(SESSION_TTL - Duration::from_millis(1));
        assert!(auth.established(&held, clock.now()).is_some());
        clock.advance(Duration::from_millis(1));
        assert!(auth.established(&held, clock.now()).is_none());
    }

    #[tokio::test]
    async fn only_a_value_the_server_made_passes_for_an_established_caller() {
        let (auth, clock, user) = bearer_caller().await;
        // What a front door could make: the user's fields, but not the
        // server's type.
        for forged in [
            EstablishedCaller::new(user.clone()),
            EstablishedCaller::new(Caller::User(user.clone())),
            EstablishedCaller::new("ada".to_owned()),
        ] {
            assert!(auth.established(&forged, clock.now()).is_none());
        }
    }
}
