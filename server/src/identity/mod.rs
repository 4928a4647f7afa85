//! Identity: accounts, passwords, tokens and sessions, put together from the
//! configuration once at start-up and shared by the Auth and Session
//! services (and, for authentication, by every other service). The sign-in
//! and password flows over them are [`flows`]: methods of [`Identity`].

pub mod accounts;
pub mod caller;
pub mod flows;
pub mod limits;
pub mod mail;
pub mod passwords;
pub mod secrets;
pub mod sessions;
pub mod tokens;

use std::{sync::Arc, time::Duration};

use crate::{
    identity::accounts::{AccountError, AccountStore},
    identity::caller::Authenticator,
    identity::limits::{Rate, RateLimiter},
    identity::mail::{Delivery, Outbox, Transport},
    identity::passwords::PasswordHasher,
    identity::sessions::SessionStore,
    identity::tokens::{TokenIssuer, TokenSettings},
    infra::clock::SharedClock,
    infra::config::{AppEnv, Config, Secret},
    infra::redis_context::RedisContext,
};

/// How far a token's times may be off before it is refused.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(5);

/// How long after a refresh the refresh token it replaced still works, so
/// two concurrent refreshes by one client (two tabs, a retry) both succeed
/// and get the same new refresh token. After it, presenting the old token is
/// a replay and ends the session.
pub const REFRESH_REUSE_GRACE: Duration = Duration::from_secs(10);

/// Failed logins allowed for one account from one IP address before it
/// must wait. Counted per account *and* address, so an attacker elsewhere
/// cannot lock the owner out; the per-address limit (RATE_LIMIT_*) bounds
/// guessing across accounts.
pub const LOGIN_FAILURES: Rate = Rate {
    limit: 5,
    window: Duration::from_secs(15 * 60),
};

/// How long a password reset token works.
pub const RESET_TOKEN_TTL: Duration = Duration::from_secs(30 * 60);

/// Settings the services need at call time.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Idle session timeout.
    pub session_ttl: Duration,
    /// Absolute session lifetime.
    pub session_max_lifetime: Duration,
    /// Whether cookies carry `Secure` (everywhere but development).
    pub secure_cookies: bool,
    /// The `Domain` of the CSRF cookie (CSRF_COOKIE_DOMAIN); none: the API
    /// host's only.
    pub csrf_cookie_domain: Option<String>,
    /// The page that completes a password reset; the token is appended as
    /// `?token=`.
    pub password_reset_url: String,
    /// Requests per IP address to the endpoints that need no sign-in.
    pub anonymous_rate: Rate,
}

/// Everything that knows who someone is.
pub struct Identity {
    /// Accounts (SQL).
    pub accounts: AccountStore,
    /// Sessions (memory or Redis).
    pub sessions: SessionStore,
    /// Access token signing and checking.
    pub tokens: Arc<TokenIssuer>,
    /// Who is calling.
    pub auth: Authenticator,
    /// Password hashing, off the async runtime.
    pub passwords: PasswordHasher,
    /// Outgoing mail, limited per recipient.
    pub outbox: Outbox,
    /// Rate limits (memory or Redis).
    pub limits: RateLimiter,
    /// Now.
    pub clock: SharedClock,
    /// Call-time settings.
    pub settings: IdentitySettings,
}

/// Why identity could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The account database could not be used (each error says which
    /// setting to look at).
    #[error(transparent)]
    Accounts(#[from] AccountError),
    /// A JWT key file could not be read.
    #[error("{0}")]
    Keys(String),
    /// The mail settings could not be used (the message names them).
    #[error("{0}")]
    Mail(String),
}

impl Identity {
    /// Connects the stores and loads the keys the configuration names.
    /// Sessions and rate limits live in `redis` (the instance's one Redis
    /// context, when REDIS_URL is set), else in process.
    pub async fn from_config(
        config: &Config,
        clock: SharedClock,
        redis: Option<&RedisContext>,
    ) -> Result<Self, IdentityError> {
        let mut accounts =
            AccountStore::connect(&config.database_url, config.database_timeout).await?;
        accounts.cache_profiles(redis, clock.clone());
        let (sessions, limits) = match redis {
            Some(redis) => (SessionStore::redis(redis), RateLimiter::redis(redis)),
            None => (
                SessionStore::memory(clock.clone()),
                RateLimiter::memory(clock.clone()),
            ),
        };
        let development = config.app_env() == AppEnv::Development;

        let signing = match (&config.jwt_private_key_file, &config.jwt_secret) {
            (Some(path), _) => {
                tokens::ed25519_signing_key_from_pem(&read_key(path, "JWT_PRIVATE_KEY_FILE")?)
                    .map_err(|why| {
                        IdentityError::Keys(format!(
                            "JWT_PRIVATE_KEY_FILE {}: {why}",
                            path.display()
                        ))
                    })?
            }
            (None, Some(secret)) => tokens::hs256_key(secret.expose())
                .map_err(|why| IdentityError::Keys(format!("JWT_SECRET: {why}")))?,
            (None, None) => {
                tracing::warn!(
                    "JWT_SECRET is not set: signing tokens with a random secret, so they do not survive a restart (development only)"
                );
                tokens::hs256_key(Secret::random(48).expose()).map_err(IdentityError::Keys)?
            }
        };
        let mut retired = Vec::new();
        for path in &config.jwt_retired_key_files {
            let key =
                tokens::ed25519_verifying_key_from_pem(&read_key(path, "JWT_RETIRED_KEY_FILES")?)
                    .map_err(|why| {
                    IdentityError::Keys(format!("JWT_RETIRED_KEY_FILES {}: {why}", path.display()))
                })?;
            retired.push(key);
        }
        let tokens = Arc::new(TokenIssuer::new(
            signing,
            retired,
            TokenSettings {
                issuer: config.jwt_issuer.clone(),
                audience: config.jwt_audience.clone(),
                access_ttl: config.jwt_expires_in,
                leeway: CLOCK_LEEWAY,
            },
            clock.clone(),
        ));

        let app_secret = match &config.app_secret {
            Some(secret) => secret.clone(),
            None => {
                tracing::warn!(
                    "APP_SECRET is not set: using a random one, so refresh tokens and cookies do not survive a restart (development only)"
                );
                Secret::random(48)
            }
        };
        let outbox = Outbox::new(
            mail_delivery(config)?,
            limits.clone(),
            Rate {
                limit: config.mail_per_recipient_limit,
                window: config.mail_per_recipient_window,
            },
            app_secret.clone(),
        );
        let auth = Authenticator::new(
            tokens.clone(),
            sessions.clone(),
            config.service_keys.clone(),
            app_secret,
            config.session_ttl,
        );
        let concurrency = config
            .password_hash_concurrency
            .map(usize::from)
            .unwrap_or_else(|| {
                // Leave a core to the requests in flight: with every core
                // hashing, a burst of logins multiplies everyone's latency
                // (BENCHMARKS.md).
                std::thread::available_parallelism()
                    .map_or(1, |cpus| cpus.get().saturating_sub(1).max(1))
            });
        Ok(Self {
            accounts,
            sessions,
            tokens,
            auth,
            passwords: PasswordHasher::new(concurrency),
            outbox,
            limits,
            clock,
            settings: IdentitySettings {
                access_ttl: config.jwt_expires_in,
                session_ttl: config.session_ttl,
                session_max_lifetime: config.session_max_lifetime,
                secure_cookies: !development,
                csrf_cookie_domain: config.csrf_cookie_domain.clone(),
                password_reset_url: config.password_reset_url().to_owned(),
                anonymous_rate: Rate {
                    limit: config.rate_limit_max_requests,
                    window: Duration::from_millis(config.rate_limit_window_ms),
                },
            },
        })
    }
}

/// The mail transport the configuration chose, said at start-up: loudly
/// when there is none.
fn mail_delivery(config: &Config) -> Result<Delivery, IdentityError> {
    use crate::infra::config::MailTransportChoice;
    let choice = config.mail_transport().map_err(IdentityError::Mail)?;
    match &choice {
        MailTransportChoice::None { explicit: true } => tracing::error!(
            "MAIL_TRANSPORT=none: no mail is sent, so password reset cannot work (nobody gets a reset link) and nobody is told of registrations with their address"
        ),
        MailTransportChoice::None { explicit: false } => tracing::warn!(
            "no mail transport: mail is not sent, so password reset cannot work; set SMTP_URL, or MAIL_OUTBOX_DIR to keep mail as .eml files (development only)"
        ),
        MailTransportChoice::Smtp { url, .. }
            if !url.security.always_encrypted() && !url.is_loopback() =>
        {
            tracing::warn!(
                smtp = %url,
                "SMTP_URL is not always encrypted: reset links may cross the network in clear; use smtps:// or ?tls=required unless the network to the relay is trusted"
            )
        }
        _ => {}
    }
    let transport = Transport::from_choice(choice).map_err(IdentityError::Mail)?;
    if let Some(transport) = &transport {
        tracing::info!(transport = %transport.describe(), "mail transport");
    }
    Ok(Delivery {
        transport,
        from: config.mail_from(),
        retry_delay: config.mail_retry_delay,
    })
}

fn read_key(path: &std::path::Path, variable: &str) -> Result<String, IdentityError> {
    std::fs::read_to_string(path)
        .map_err(|error| IdentityError::Keys(format!("{variable} {}: {error}", path.display())))
}
