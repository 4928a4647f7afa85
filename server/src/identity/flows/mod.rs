//! The sign-in and account flows as methods of [`Identity`]: login, refresh,
//! logout ([`sign_in`]), registration and the password flows
//! ([`passwords`]). They take and return domain types and fail with
//! [`FlowError`]; they know no transport (no request, metadata, status or
//! cookie), so the gRPC adapter only translates, and the rules (throttling,
//! rotation, replay, the timing that hides who has an account) are tested
//! here with the manual clock and the memory backends.

pub mod passwords;
pub mod sign_in;

#[cfg(test)]
mod tests;

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{
    identity::Identity,
    identity::accounts::{Account, AccountError, Profile},
    identity::limits::{Decision, LimitError},
    identity::passwords::PasswordHashError,
    identity::sessions::{Session, SessionError},
    infra::clock::to_millis,
};

pub use passwords::{PasswordChange, PasswordReset, Registration};
pub use sign_in::{LoginAttempt, Refreshed, SignOut, SignedIn};

/// Why a flow did not complete. The variants before the store failures are
/// answers for the caller; the store failures are outages (their cause is
/// for the log, never for the caller). No variant carries a password or a
/// token.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// Too many requests from the caller's address to the endpoints that
    /// need no sign-in (RATE_LIMIT_MAX_REQUESTS per RATE_LIMIT_WINDOW_MS).
    #[error("too many requests from the caller's address")]
    RateLimited {
        /// The wait until one more request fits.
        retry_after: Duration,
    },
    /// Too many failed logins for this account from this address
    /// ([`crate::identity::LOGIN_FAILURES`]).
    #[error("too many failed logins for this account from the caller's address")]
    LoginThrottled {
        /// The wait until the next attempt is counted.
        retry_after: Duration,
    },
    /// No account has this email and password (which of the two is wrong
    /// is not said).
    #[error("wrong email or password")]
    InvalidCredentials,
    /// The refresh token is malformed, of no live session, or of a
    /// generation too old to be checked.
    #[error("the refresh token is not valid")]
    RefreshTokenInvalid,
    /// A refresh token already rotated away was presented again, outside
    /// the grace of a concurrent refresh: its session has been ended.
    #[error("a used refresh token was presented again; its session was ended")]
    RefreshTokenReused,
    /// The session ended while the flow ran (or just before).
    #[error("the session has ended")]
    SessionEnded,
    /// The signed-in user's account no longer exists (its sessions have
    /// been ended).
    #[error("the account no longer exists")]
    AccountGone,
    /// The current password given to change it is not the account's.
    #[error("the current password is wrong")]
    WrongPassword,
    /// A field of the request is refused; `why` completes "`field` …".
    #[error("{field}: {why}")]
    Invalid {
        /// The request field, as the contract names it.
        field: &'static str,
        /// What is wrong with it (never its value).
        why: String,
    },
    /// The password reset token is wrong, used or expired.
    #[error("the password reset token is not valid")]
    ResetTokenInvalid,
    /// The account database failed.
    #[error(transparent)]
    Accounts(#[from] AccountError),
    /// The session store failed.
    #[error("session store: {0}")]
    Sessions(#[from] SessionError),
    /// The rate limiter failed: the flow fails closed.
    #[error("rate limiter: {0}")]
    Limits(#[from] LimitError),
    /// Password hashing failed.
    #[error(transparent)]
    Hashing(#[from] PasswordHashError),
}

/// The result of a flow.
pub type Result<T, E = FlowError> = std::result::Result<T, E>;

/// The tokens of a session: a fresh access token and the refresh token of
/// one generation.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedTokens {
    /// The JWT access token.
    pub access_token: String,
    /// How long the access token is valid.
    pub access_expires_in: Duration,
    /// `<session id>.<secret>`; rotated by every refresh.
    pub refresh_token: String,
    /// How long the refresh token can be used at most: until the session's
    /// idle expiry.
    pub refresh_expires_in: Duration,
}

/// Not the tokens: they are credentials.
impl std::fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("access_expires_in", &self.access_expires_in)
            .field("refresh_expires_in", &self.refresh_expires_in)
            .finish_non_exhaustive()
    }
}

/// Display names: 1 to 100 characters once trimmed.
const MAX_DISPLAY_NAME_CHARS: usize = 100;
/// What the store keeps of a User-Agent, in bytes.
const MAX_USER_AGENT_BYTES: usize = 512;

impl Identity {
    /// Now, by the identity's clock.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The account of a signed-in user. When it is gone, so are its
    /// sessions, and the answer is [`FlowError::AccountGone`].
    pub async fn account(&self, user_id: &str) -> Result<Account> {
        let found = self.accounts.by_id(user_id).await?;
        self.still_there(user_id, found).await
    }

    /// The profile of a signed-in user, for their own calls: cached
    /// ([`crate::identity::accounts::profiles`]), never with the password
    /// hash. When the account is gone, so are its sessions, and the answer
    /// is [`FlowError::AccountGone`].
    pub async fn profile(&self, user_id: &str) -> Result<Arc<Profile>> {
        let found = self.accounts.profile(user_id).await?;
        self.still_there(user_id, found).await
    }

    /// What was `found` of signed-in user `user_id`'s account; when
    /// nothing, the account is gone: its sessions are ended and the answer
    /// is [`FlowError::AccountGone`].
    async fn still_there<T>(&self, user_id: &str, found: Option<T>) -> Result<T> {
        match found {
            Some(found) => Ok(found),
            None => {
                let _ = self.sessions.revoke_user(user_id, None).await;
                Err(FlowError::AccountGone)
            }
        }
    }

    /// Counts a request of an endpoint that needs no sign-in against the
    /// caller's address (RATE_LIMIT_MAX_REQUESTS per RATE_LIMIT_WINDOW_MS);
    /// callers without one share the count of "unknown".
    pub async fn throttle_address(&self, client_ip: Option<IpAddr>) -> Result<()> {
        let key = format!("anonymous:{}", address_key(client_ip));
        match self.limits.hit(&key, self.settings.anonymous_rate).await? {
            Decision::Allowed { .. } => Ok(()),
            Decision::Limited { retry_after } => Err(FlowError::RateLimited { retry_after }),
        }
    }

    /// A fresh access token and the refresh token of `generation`.
    fn issue_tokens(&self, session: &Session, generation: u64) -> IssuedTokens {
        let (access_token, _) = self.tokens.issue_access(&session.user_id, &session.id);
        let now = to_millis(self.now());
        let refresh_left = session.expires_at.saturating_sub(now).max(0);
        IssuedTokens {
            access_token,
            access_expires_in: self.settings.access_ttl,
            refresh_token: self.auth.refresh_token(session, generation),
            refresh_expires_in: Duration::from_millis(refresh_left as u64),
        }
    }
}

/// The caller's address as rate-limit keys name it.
fn address_key(client_ip: Option<IpAddr>) -> String {
    client_ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

/// Trims and lower-cases an email, and checks its shape; the error
/// completes "email …".
pub fn normalize_email(email: &str) -> Result<String, &'static str> {
    let email = email.trim().to_lowercase();
    if email.is_empty() {
        return Err("must not be empty");
    }
    if email.len() > 254 {
        return Err("must be at most 254 characters");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err("must be an email address such as ada@example.com");
    };
    let well_formed = !local.is_empty()
        && local.len() <= 64
        && !domain.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if well_formed {
        Ok(email)
    } else {
        Err("must be an email address such as ada@example.com")
    }
}

/// Trims a display name and checks it: 1 to 100 characters, no control
/// characters. The error completes "display_name …".
pub fn display_name(name: &str) -> Result<String, &'static str> {
    let name = name.trim();
    let length = name.chars().count();
    if length == 0 || length > MAX_DISPLAY_NAME_CHARS || name.chars().any(char::is_control) {
        return Err("must be 1 to 100 characters, without control characters");
    }
    Ok(name.to_owned())
}

/// A User-Agent as sessions keep it: at most 512 bytes, cut at a character
/// boundary.
fn bounded_user_agent(agent: &str) -> String {
    let mut end = agent.len().min(MAX_USER_AGENT_BYTES);
    while !agent.is_char_boundary(end) {
        end -= 1;
    }
    agent[..end].to_owned()
}
