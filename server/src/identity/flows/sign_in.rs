//! Login, refresh and logout.
//!
//! - A login is throttled twice: by the caller's address (every endpoint
//!   that needs no sign-in) and by failures of one account from one
//!   address ([`LOGIN_FAILURES`]), so guessing one account's password is
//!   slowed down while its owner elsewhere is not. An unknown email costs
//!   the same argon2 work as a wrong password. A password stored with
//!   weaker parameters than today's is rehashed on a successful login.
//! - A refresh rotates the refresh token: each session has a refresh
//!   generation, and only the newest generation's token refreshes. The
//!   token one generation old still works for [`REFRESH_REUSE_GRACE`] after
//!   the rotation and hands out the same new pair (two tabs, a retry);
//!   after that, or for any older generation, presenting it is a replay,
//!   and the session ends.

use std::net::IpAddr;

use crate::{
    identity::Identity,
    identity::accounts::Account,
    identity::caller::split_refresh_token,
    identity::limits::Decision,
    identity::passwords::{self, Verification},
    identity::secrets,
    identity::sessions::{Advance, Session, duration_millis},
    identity::{LOGIN_FAILURES, REFRESH_REUSE_GRACE},
    infra::clock::to_millis,
};

use super::{FlowError, IssuedTokens, Result, address_key, bounded_user_agent};

/// How many old refresh generations are checked for a replay.
const REPLAY_LOOKBACK: u64 = 1024;

/// How many times a refresh that lost a race is looked at again.
const REFRESH_ATTEMPTS: usize = 3;

/// Someone signing in with an email and password.
pub struct LoginAttempt {
    /// As typed; trimmed and lower-cased here.
    pub email: String,
    /// As typed.
    pub password: String,
    /// The client's address (behind trusted proxies), if the transport
    /// knows it: failures are counted per account and address.
    pub client_ip: Option<IpAddr>,
    /// The client's User-Agent, kept with the session (at most 512 bytes).
    pub user_agent: String,
}

/// A successful login.
#[derive(Debug)]
pub struct SignedIn {
    /// Who signed in.
    pub account: Account,
    /// The new session.
    pub session: Session,
    /// Its first tokens (refresh generation 0).
    pub tokens: IssuedTokens,
}

/// A successful refresh.
#[derive(Debug)]
pub struct Refreshed {
    /// The session, as of the refresh.
    pub session: Session,
    /// A fresh access token and the newest refresh token.
    pub tokens: IssuedTokens,
}

/// Which session a logout ends.
#[derive(Debug, Clone, Copy)]
pub enum SignOut<'a> {
    /// The session of an authenticated caller.
    Session(&'a str),
    /// The session of this refresh token, which must be of its newest
    /// generation or the one before (an older one is a replay).
    RefreshToken(&'a str),
}

impl Identity {
    /// Checks an email and password and starts a session.
    pub async fn login(&self, attempt: LoginAttempt) -> Result<SignedIn> {
        self.throttle_address(attempt.client_ip).await?;
        let email = attempt.email.trim().to_lowercase();
        if email.len() > 254 || attempt.password.chars().count() > passwords::MAX_PASSWORD_CHARS {
            // No account can match: answering at once reveals nothing.
            return Err(FlowError::InvalidCredentials);
        }
        let failures = format!("login-failures:{email}:{}", address_key(attempt.client_ip));
        if let Decision::Limited { retry_after } =
            self.limits.peek(&failures, LOGIN_FAILURES).await?
        {
            return Err(FlowError::LoginThrottled { retry_after });
        }
        let failed = || async {
            if let Err(error) = self.limits.hit(&failures, LOGIN_FAILURES).await {
                tracing::warn!(%error, "could not count a failed login");
            }
            FlowError::InvalidCredentials
        };
        let Some(account) = self.accounts.by_email(&email).await? else {
            self.passwords.verify_dummy(&attempt.password).await;
            return Err(failed().await);
        };
        match self
            .passwords
            .verify(&attempt.password, &account.password_hash)
            .await?
        {
            Verification::Mismatch => return Err(failed().await),
            Verification::Verified { needs_rehash: true } => {
                self.upgrade_password_hash(&account, &attempt.password)
                    .await;
            }
            Verification::Verified {
                needs_rehash: false,
            } => {}
        }
        if let Err(error) = self.limits.reset(&failures).await {
            tracing::warn!(%error, "could not forget failed logins");
        }
        let session = self
            .new_session(&account.id, attempt.client_ip, &attempt.user_agent)
            .await?;
        tracing::info!(user_id = %account.id, session_id = %session.id, "logged in");
        let tokens = self.issue_tokens(&session, 0);
        Ok(SignedIn {
            account,
            session,
            tokens,
        })
    }

    /// Stores a hash with today's parameters of a password that verified
    /// against a weaker one. A failure is logged: the login goes on.
    async fn upgrade_password_hash(&self, account: &Account, password: &str) {
        let upgraded = match self.passwords.hash(password).await {
            Ok(hash) => self
                .accounts
                .set_password_hash(&account.id, &hash, self.now())
                .await
                .map_err(FlowError::from),
            Err(error) => Err(error.into()),
        };
        if let Err(error) = upgraded {
            tracing::warn!(%error, "could not upgrade a password hash");
        }
    }

    async fn new_session(
        &self,
        user_id: &str,
        client_ip: Option<IpAddr>,
        user_agent: &str,
    ) -> Result<Session> {
        let now = to_millis(self.now());
        let settings = &self.settings;
        let max_expires_at = now.saturating_add(duration_millis(settings.session_max_lifetime));
        let session = Session {
            // The user's shard tag and 144 random bits, URL-safe.
            id: Session::new_id(user_id),
            user_id: user_id.to_owned(),
            user_agent: bounded_user_agent(user_agent),
            ip: client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            created_at: now,
            last_seen_at: now,
            expires_at: now
                .saturating_add(duration_millis(settings.session_ttl))
                .min(max_expires_at),
            max_expires_at,
            refresh_seed: secrets::random_token(32),
            refresh_generation: 0,
            refreshed_at: now,
        };
        self.sessions.create(&session).await?;
        Ok(session)
    }

    /// Rotates a refresh token: the newest generation's token advances the
    /// session one generation; the one before, within
    /// [`REFRESH_REUSE_GRACE`] of that rotation, gets the same new tokens;
    /// anything older is a replay that ends the session.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<Refreshed> {
        self.throttle_address(client_ip).await?;
        let ttl = self.settings.session_ttl;
        // A lost race against a concurrent refresh is looked at again: the
        // second look finds the token one generation old, within the grace.
        for _ in 0..REFRESH_ATTEMPTS {
            let (session, generation) = self.refresh_generation(refresh_token).await?;
            let newest = session.refresh_generation;
            if generation == newest {
                match self
                    .sessions
                    .advance_refresh(&session.id, newest, ttl)
                    .await?
                {
                    Advance::Advanced(session) => {
                        let tokens = self.issue_tokens(&session, session.refresh_generation);
                        return Ok(Refreshed { session, tokens });
                    }
                    Advance::Stale(_) => continue,
                    Advance::Gone => break,
                }
            }
            let since_rotation = to_millis(self.now()) - session.refreshed_at;
            if generation + 1 == newest && since_rotation <= duration_millis(REFRESH_REUSE_GRACE) {
                // A concurrent refresh by the same client: hand out the same
                // new refresh token the winner got.
                let session = self
                    .sessions
                    .touch(&session.id, ttl)
                    .await?
                    .ok_or(FlowError::SessionEnded)?;
                let tokens = self.issue_tokens(&session, newest);
                return Ok(Refreshed { session, tokens });
            }
            return Err(self.revoke_for_replay(&session).await);
        }
        Err(FlowError::SessionEnded)
    }

    /// Ends a session; returns its id.
    pub async fn log_out(&self, which: SignOut<'_>) -> Result<String> {
        let session_id = match which {
            SignOut::Session(session_id) => session_id.to_owned(),
            SignOut::RefreshToken(token) => {
                let (session, generation) = self.refresh_generation(token).await?;
                if generation + 1 < session.refresh_generation {
                    return Err(self.revoke_for_replay(&session).await);
                }
                session.id
            }
        };
        self.sessions.revoke(&session_id).await?;
        tracing::info!(%session_id, "logged out");
        Ok(session_id)
    }

    /// Finds the live session a refresh token belongs to and which
    /// generation of it the token is: Ok((session, generation)).
    async fn refresh_generation(&self, token: &str) -> Result<(Session, u64)> {
        let (session_id, secret) =
            split_refresh_token(token).ok_or(FlowError::RefreshTokenInvalid)?;
        let session = self
            .sessions
            .get(session_id)
            .await?
            .ok_or(FlowError::RefreshTokenInvalid)?;
        let newest = session.refresh_generation;
        let oldest = newest.saturating_sub(REPLAY_LOOKBACK);
        let generation = (oldest..=newest)
            .rev()
            .find(|generation| {
                secrets::constant_time_eq(secret, &self.auth.refresh_secret(&session, *generation))
            })
            .ok_or(FlowError::RefreshTokenInvalid)?;
        Ok((session, generation))
    }

    /// Ends the session of a replayed refresh token: whoever holds the
    /// replayed token and whoever holds the newest one cannot be told apart.
    async fn revoke_for_replay(&self, session: &Session) -> FlowError {
        tracing::warn!(
            user_id = %session.user_id,
            session_id = %session.id,
            "a used refresh token was presented again: ending its session"
        );
        match self.sessions.revoke(&session.id).await {
            Ok(_) => FlowError::RefreshTokenReused,
            Err(error) => error.into(),
        }
    }
}
