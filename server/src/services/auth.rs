//! `slop.auth.v1.AuthService`: accounts, login, tokens.
//!
//! What a caller can learn is kept to what it needs: registration, login and
//! reset requests answer the same whether or not an email has an account, in
//! about the same time (a password is hashed or checked either way, and
//! reset mail is prepared off the request).

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use slop_api::auth::{self, InactiveReason, TokenPair, User, auth_service_server::AuthService};
use slop_bridge::rest::{COOKIE_LOGIN, COOKIE_LOGIN_ACCESS_TOKEN};
use slop_context::ClientAddr;
use tonic::{Request, Response, Status, metadata::MetadataMap};

use super::{Answer, client_ip, internal, invalid, limits_unavailable, rate_limited};
use crate::{
    identity::accounts::{Account, AccountError, NewAccount},
    identity::caller::{
        self as credentials, Access, OrUnavailable as _, Via, split_refresh_token, unauthenticated,
    },
    identity::limits::Decision,
    identity::mail::MailKind,
    identity::passwords::{self, Verification},
    identity::sessions::{Advance, Session, duration_millis},
    identity::tokens,
    identity::{Identity, LOGIN_FAILURES, REFRESH_REUSE_GRACE, RESET_TOKEN_TTL},
    infra::clock::{to_millis, to_timestamp},
};

/// How many old refresh generations are checked for a replay.
const REPLAY_LOOKBACK: u64 = 1024;

/// `slop.auth.v1.AuthService`.
#[derive(Clone)]
pub struct AuthApi {
    identity: Arc<Identity>,
}

impl AuthApi {
    /// The service over this identity.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }

    fn now(&self) -> SystemTime {
        self.identity.clock.now()
    }

    /// A fresh access token and the refresh token of `generation`.
    fn token_pair(&self, session: &Session, generation: u64) -> TokenPair {
        let (access_token, _) = self
            .identity
            .tokens
            .issue_access(&session.user_id, &session.id);
        let now = to_millis(self.now());
        let refresh_left =
            Duration::from_millis(session.expires_at.saturating_sub(now).max(0) as u64);
        TokenPair {
            access_token,
            token_type: "Bearer".into(),
            access_token_expires_in: Some(duration(self.identity.settings.access_ttl)),
            refresh_token: self.identity.auth.refresh_token(session, generation),
            refresh_token_expires_in: Some(duration(refresh_left)),
        }
    }

    async fn account(&self, user_id: &str) -> Result<Account, Status> {
        match self.identity.accounts.by_id(user_id).await? {
            Some(account) => Ok(account),
            None => {
                // The account is gone: so are its sessions.
                let _ = self.identity.sessions.revoke_user(user_id, None).await;
                Err(unauthenticated(
                    "ACCOUNT_GONE",
                    "the account no longer exists",
                ))
            }
        }
    }

    async fn new_session(
        &self,
        user_id: &str,
        metadata: &MetadataMap,
        client: Option<std::net::IpAddr>,
    ) -> Result<Session, Status> {
        let now = to_millis(self.now());
        let settings = &self.identity.settings;
        let max_expires_at = now.saturating_add(duration_millis(settings.session_max_lifetime));
        let session = Session {
            // 144 random bits, URL-safe.
            id: tokens::random_token(18),
            user_id: user_id.to_owned(),
            user_agent: user_agent(metadata),
            ip: client.map(|ip| ip.to_string()).unwrap_or_default(),
            created_at: now,
            last_seen_at: now,
            expires_at: now
                .saturating_add(duration_millis(settings.session_ttl))
                .min(max_expires_at),
            max_expires_at,
            refresh_seed: tokens::random_token(32),
            refresh_generation: 0,
            refreshed_at: now,
        };
        self.identity
            .sessions
            .create(&session)
            .await
            .or_unavailable()?;
        Ok(session)
    }

    /// Finds the live session a refresh token belongs to and which
    /// generation of it the token is: Ok((session, generation)).
    async fn refresh_generation(&self, token: &str) -> Result<(Session, u64), Status> {
        let invalid_token = || {
            unauthenticated(
                "REFRESH_TOKEN_INVALID",
                "the refresh token is not valid: log in again",
            )
        };
        let (session_id, secret) = split_refresh_token(token).ok_or_else(invalid_token)?;
        let session = self
            .identity
            .sessions
            .get(session_id)
            .await
            .or_unavailable()?
            .ok_or_else(invalid_token)?;
        let auth = &self.identity.auth;
        let newest = session.refresh_generation;
        let oldest = newest.saturating_sub(REPLAY_LOOKBACK);
        let generation = (oldest..=newest)
            .rev()
            .find(|generation| {
                tokens::constant_time_eq(secret, &auth.refresh_secret(&session, *generation))
            })
            .ok_or_else(invalid_token)?;
        Ok((session, generation))
    }

    /// Counts a request of an endpoint that needs no sign-in against the
    /// caller's IP address (RATE_LIMIT_MAX_REQUESTS per RATE_LIMIT_WINDOW_MS).
    async fn throttle_address(&self, extensions: &tonic::Extensions) -> Result<(), Status> {
        let key = format!("anonymous:{}", client_ip(extensions));
        let rate = self.identity.settings.anonymous_rate;
        let decision = self
            .identity
            .limits
            .hit(&key, rate)
            .await
            .map_err(limits_unavailable)?;
        match decision {
            Decision::Allowed { .. } => Ok(()),
            Decision::Limited { retry_after } => Err(rate_limited(
                "RATE_LIMITED",
                "too many requests from your address",
                retry_after,
            )),
        }
    }

    /// Stores a new (already checked) password and ends every session of
    /// the account but `keep`; returns how many ended.
    async fn replace_password(
        &self,
        account_id: &str,
        new_password: &str,
        keep: Option<&str>,
    ) -> Result<i32, Status> {
        let hash = self
            .identity
            .passwords
            .hash(new_password)
            .await
            .map_err(internal)?;
        self.identity
            .accounts
            .set_password_hash(account_id, &hash, self.now())
            .await?;
        let ended = self
            .identity
            .sessions
            .revoke_user(account_id, keep)
            .await
            .or_unavailable()?;
        Ok(count(ended.len()))
    }

    async fn revoke_for_replay(&self, session: &Session) -> Status {
        tracing::warn!(
            user_id = %session.user_id,
            session_id = %session.id,
            "a used refresh token was presented again: ending its session"
        );
        if let Err(error) = self.identity.sessions.revoke(&session.id).await {
            return credentials::store_unavailable(&error);
        }
        unauthenticated(
            "REFRESH_TOKEN_REUSED",
            "this refresh token was already used; the session has been ended for safety: log in again",
        )
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<auth::RegisterRequest>,
    ) -> Answer<auth::RegisterResponse> {
        self.throttle_address(request.extensions()).await?;
        let request = request.into_inner();
        let email = normalize_email(&request.email).map_err(|why| invalid("email", why))?;
        let display_name = display_name(&request.display_name)?;
        passwords::check_password(&request.password, &email)
            .map_err(|why| invalid("password", why.to_string()))?;
        // Hash first, either way, so an existing email takes as long.
        let password_hash = self
            .identity
            .passwords
            .hash(&request.password)
            .await
            .map_err(internal)?;
        let created = self
            .identity
            .accounts
            .create(
                NewAccount {
                    email: &email,
                    display_name: &display_name,
                    password_hash: &password_hash,
                },
                self.now(),
            )
            .await;
        match created {
            Ok(account) => tracing::info!(user_id = %account.id, "account registered"),
            Err(AccountError::EmailTaken) => {
                let outbox = self.identity.outbox.clone();
                let reset_url = self.identity.settings.password_reset_url.clone();
                // Off the request, so the answer is the same either way,
                // and so is the answer when the owner's mail limit is hit.
                tokio::spawn(async move {
                    let kind = MailKind::RegistrationAttempt;
                    let Some(reservation) = outbox.reserve(&email, kind).await else {
                        return;
                    };
                    outbox
                        .send(
                            reservation,
                            "Someone tried to register with your address",
                            &format!(
                                "Someone (perhaps you) tried to create a Slop Studios account with this address, which already has one. If it was you, log in, or reset your password at {reset_url}. If not, you can ignore this message."
                            ),
                        )
                        .await;
                });
            }
            Err(error) => return Err(error.into()),
        }
        Ok(Response::new(auth::RegisterResponse {}))
    }

    async fn login(&self, request: Request<auth::LoginRequest>) -> Answer<auth::LoginResponse> {
        let (metadata, extensions, request) = request.into_parts();
        self.throttle_address(&extensions).await?;
        let wrong = || unauthenticated("INVALID_CREDENTIALS", "wrong email or password");
        let email = request.email.trim().to_lowercase();
        if email.len() > 254 || request.password.chars().count() > passwords::MAX_PASSWORD_CHARS {
            // No account can match: answering at once reveals nothing.
            return Err(wrong());
        }
        // Failures are counted per account and address: guessing one
        // account's password is slowed down, its owner elsewhere is not.
        let failures = format!("login-failures:{email}:{}", client_ip(&extensions));
        let limits = &self.identity.limits;
        if let Decision::Limited { retry_after } = limits
            .peek(&failures, LOGIN_FAILURES)
            .await
            .map_err(limits_unavailable)?
        {
            return Err(rate_limited(
                "LOGIN_THROTTLED",
                "too many failed logins for this account from your address",
                retry_after,
            ));
        }
        let failed = || async {
            if let Err(error) = limits.hit(&failures, LOGIN_FAILURES).await {
                tracing::warn!(%error, "could not count a failed login");
            }
            wrong()
        };
        let account = self.identity.accounts.by_email(&email).await?;
        let Some(account) = account else {
            self.identity
                .passwords
                .verify_dummy(&request.password)
                .await;
            return Err(failed().await);
        };
        let verification = self
            .identity
            .passwords
            .verify(&request.password, &account.password_hash)
            .await
            .map_err(internal)?;
        match verification {
            Verification::Mismatch => return Err(failed().await),
            Verification::Verified { needs_rehash: true } => {
                // Stored with weaker parameters than today's: upgrade now.
                match self.identity.passwords.hash(&request.password).await {
                    Ok(hash) => {
                        if let Err(error) = self
                            .identity
                            .accounts
                            .set_password_hash(&account.id, &hash, self.now())
                            .await
                        {
                            tracing::warn!(%error, "could not upgrade a password hash");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "could not upgrade a password hash"),
                }
            }
            Verification::Verified {
                needs_rehash: false,
            } => {}
        }
        if let Err(error) = limits.reset(&failures).await {
            tracing::warn!(%error, "could not forget failed logins");
        }
        let session = self
            .new_session(
                &account.id,
                &metadata,
                ClientAddr::ip(extensions.get(), extensions.get()),
            )
            .await?;
        tracing::info!(user_id = %account.id, session_id = %session.id, "logged in");
        let cookie_login = metadata.get(COOKIE_LOGIN).is_some();
        let tokens = if !cookie_login {
            Some(self.token_pair(&session, 0))
        } else if metadata.get(COOKIE_LOGIN_ACCESS_TOKEN).is_some() {
            // The cookies are the session: the refresh token never reaches
            // the page, whose script could read it from the body.
            Some(TokenPair {
                refresh_token: String::new(),
                refresh_token_expires_in: None,
                ..self.token_pair(&session, 0)
            })
        } else {
            None
        };
        let mut response = Response::new(auth::LoginResponse {
            tokens,
            session_id: session.id.clone(),
            user: Some(user(&account)),
        });
        if cookie_login {
            let settings = &self.identity.settings;
            for cookie in credentials::login_cookies(
                &self.identity.auth,
                &session,
                settings.secure_cookies,
                settings.session_max_lifetime,
            ) {
                response
                    .metadata_mut()
                    .append("set-cookie", cookie.parse().map_err(internal)?);
            }
        }
        Ok(response)
    }

    async fn refresh_token(
        &self,
        request: Request<auth::RefreshTokenRequest>,
    ) -> Answer<auth::RefreshTokenResponse> {
        self.throttle_address(request.extensions()).await?;
        let token = request.into_inner().refresh_token;
        let ttl = self.identity.settings.session_ttl;
        // A lost race against a concurrent refresh is looked at again: the
        // second look finds the token one generation old, within the grace.
        for _ in 0..3 {
            let (session, generation) = self.refresh_generation(&token).await?;
            let newest = session.refresh_generation;
            if generation == newest {
                match self
                    .identity
                    .sessions
                    .advance_refresh(&session.id, newest, ttl)
                    .await
                    .or_unavailable()?
                {
                    Advance::Advanced(session) => {
                        return Ok(Response::new(auth::RefreshTokenResponse {
                            tokens: Some(self.token_pair(&session, session.refresh_generation)),
                            session_id: session.id,
                        }));
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
                    .identity
                    .sessions
                    .touch(&session.id, ttl)
                    .await
                    .or_unavailable()?
                    .ok_or_else(|| {
                        unauthenticated("SESSION_ENDED", "the session has ended: log in again")
                    })?;
                return Ok(Response::new(auth::RefreshTokenResponse {
                    tokens: Some(self.token_pair(&session, newest)),
                    session_id: session.id,
                }));
            }
            return Err(self.revoke_for_replay(&session).await);
        }
        Err(unauthenticated(
            "SESSION_ENDED",
            "the session has ended: log in again",
        ))
    }

    async fn logout(&self, request: Request<auth::LogoutRequest>) -> Answer<auth::LogoutResponse> {
        let (metadata, _, request) = request.into_parts();
        let (session_id, via_cookie) = if request.refresh_token.is_empty() {
            let caller = self.identity.auth.user(&metadata, Access::Write).await?;
            (caller.session.id, caller.via == Via::Cookie)
        } else {
            let (session, generation) = self.refresh_generation(&request.refresh_token).await?;
            if generation + 1 < session.refresh_generation {
                return Err(self.revoke_for_replay(&session).await);
            }
            (
                session.id,
                credentials::cookie(&metadata, credentials::SESSION_COOKIE).is_some(),
            )
        };
        self.identity
            .sessions
            .revoke(&session_id)
            .await
            .or_unavailable()?;
        tracing::info!(%session_id, "logged out");
        let mut response = Response::new(auth::LogoutResponse {});
        if via_cookie {
            for cookie in credentials::logout_cookies(self.identity.settings.secure_cookies) {
                response
                    .metadata_mut()
                    .append("set-cookie", cookie.parse().map_err(internal)?);
            }
        }
        Ok(response)
    }

    async fn get_current_user(
        &self,
        request: Request<auth::GetCurrentUserRequest>,
    ) -> Answer<auth::GetCurrentUserResponse> {
        let caller = self
            .identity
            .auth
            .user(request.metadata(), Access::Read)
            .await?;
        let account = self.account(&caller.user_id).await?;
        Ok(Response::new(auth::GetCurrentUserResponse {
            user: Some(user(&account)),
        }))
    }

    async fn update_current_user(
        &self,
        request: Request<auth::UpdateCurrentUserRequest>,
    ) -> Answer<auth::UpdateCurrentUserResponse> {
        let caller = self
            .identity
            .auth
            .user(request.metadata(), Access::Write)
            .await?;
        let request = request.into_inner();
        let paths = request
            .update_mask
            .map(|mask| mask.paths)
            .unwrap_or_default();
        if let Some(path) = paths.iter().find(|path| path.as_str() != "display_name") {
            return Err(invalid(
                "update_mask",
                format!("'{path}' cannot be updated; allowed: display_name"),
            ));
        }
        let new = request.user.unwrap_or_default();
        let account = if paths.is_empty() && new.display_name.is_empty() {
            // Nothing to change.
            self.account(&caller.user_id).await?
        } else {
            let name = display_name(&new.display_name).map_err(|_| {
                invalid(
                    "user.display_name",
                    "must be 1 to 100 characters, without control characters",
                )
            })?;
            self.identity
                .accounts
                .set_display_name(&caller.user_id, &name, self.now())
                .await?
                .ok_or_else(|| unauthenticated("ACCOUNT_GONE", "the account no longer exists"))?
        };
        Ok(Response::new(auth::UpdateCurrentUserResponse {
            user: Some(user(&account)),
        }))
    }

    async fn change_password(
        &self,
        request: Request<auth::ChangePasswordRequest>,
    ) -> Answer<auth::ChangePasswordResponse> {
        let caller = self
            .identity
            .auth
            .user(request.metadata(), Access::Write)
            .await?;
        let request = request.into_inner();
        let account = self.account(&caller.user_id).await?;
        let verification = self
            .identity
            .passwords
            .verify(&request.current_password, &account.password_hash)
            .await
            .map_err(internal)?;
        if matches!(verification, Verification::Mismatch) {
            return Err(credentials::permission_denied(
                "WRONG_PASSWORD",
                "current_password is not the account's password",
            ));
        }
        passwords::check_password(&request.new_password, &account.email)
            .map_err(|why| invalid("new_password", why.to_string()))?;
        let ended = self
            .replace_password(&account.id, &request.new_password, Some(&caller.session.id))
            .await?;
        tracing::info!(user_id = %account.id, ended_sessions = ended, "password changed");
        Ok(Response::new(auth::ChangePasswordResponse {
            revoked_session_count: ended,
        }))
    }

    async fn request_password_reset(
        &self,
        request: Request<auth::RequestPasswordResetRequest>,
    ) -> Answer<auth::RequestPasswordResetResponse> {
        self.throttle_address(request.extensions()).await?;
        let email =
            normalize_email(&request.into_inner().email).map_err(|why| invalid("email", why))?;
        let account = self.identity.accounts.by_email(&email).await?;
        if let Some(account) = account {
            // Off the request, so the answer takes as long either way, and
            // is the same when the account's mail limit is hit.
            let identity = self.identity.clone();
            tokio::spawn(async move {
                let outbox = &identity.outbox;
                let kind = MailKind::PasswordReset;
                let Some(reservation) = outbox.reserve(&account.email, kind).await else {
                    return;
                };
                let token = tokens::random_token(32);
                let now = identity.clock.now();
                let stored = identity
                    .accounts
                    .create_reset_token(
                        &tokens::sha256_hex(&token),
                        &account.id,
                        now + RESET_TOKEN_TTL,
                        now,
                    )
                    .await;
                if let Err(error) = stored {
                    tracing::error!(%error, "could not store a password reset token");
                    return;
                }
                let link = format!("{}?token={token}", identity.settings.password_reset_url);
                outbox
                    .send(
                        reservation,
                        "Reset your Slop Studios password",
                        &format!(
                            "To choose a new password, open {link} within 30 minutes. If you did not ask for this, ignore this message: your password stays as it is."
                        ),
                    )
                    .await;
            });
        }
        Ok(Response::new(auth::RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<auth::ResetPasswordRequest>,
    ) -> Answer<auth::ResetPasswordResponse> {
        self.throttle_address(request.extensions()).await?;
        let request = request.into_inner();
        let invalid_token = || {
            invalid(
                "reset_token",
                "not valid: it is wrong, used, or older than 30 minutes; ask for a new one",
            )
        };
        // Rules that need no account first, so a weak password is refused
        // whatever the token.
        passwords::check_password(&request.new_password, "")
            .map_err(|why| invalid("new_password", why.to_string()))?;
        if request.reset_token.is_empty() || request.reset_token.len() > 256 {
            return Err(invalid_token());
        }
        let token_hash = tokens::sha256_hex(&request.reset_token);
        // Then the account's own rules (its email), before the token is
        // used up: a refused password leaves the link working.
        let account_id = self
            .identity
            .accounts
            .reset_token_account(&token_hash, self.now())
            .await?
            .ok_or_else(invalid_token)?;
        let account = self
            .identity
            .accounts
            .by_id(&account_id)
            .await?
            .ok_or_else(invalid_token)?;
        passwords::check_password(&request.new_password, &account.email)
            .map_err(|why| invalid("new_password", why.to_string()))?;
        let account_id = self
            .identity
            .accounts
            .consume_reset_token(&token_hash, self.now())
            .await?
            .ok_or_else(invalid_token)?;
        let ended = self
            .replace_password(&account_id, &request.new_password, None)
            .await?;
        tracing::info!(user_id = %account_id, ended_sessions = ended, "password reset");
        Ok(Response::new(auth::ResetPasswordResponse {
            revoked_session_count: ended,
        }))
    }

    async fn validate_token(
        &self,
        request: Request<auth::ValidateTokenRequest>,
    ) -> Answer<auth::ValidateTokenResponse> {
        self.identity.auth.service(request.metadata()).await?;
        let token = request.into_inner().access_token;
        let inactive = |reason: InactiveReason| {
            Ok(Response::new(auth::ValidateTokenResponse {
                inactive_reason: reason.into(),
                ..Default::default()
            }))
        };
        let claims = match self.identity.tokens.verify_access(&token) {
            Ok(claims) => claims,
            Err(tokens::TokenError::Expired) => return inactive(InactiveReason::Expired),
            Err(_) => return inactive(InactiveReason::Invalid),
        };
        let session = self
            .identity
            .sessions
            .touch(&claims.sid, self.identity.settings.session_ttl)
            .await
            .or_unavailable()?;
        match session {
            Some(session) if session.user_id == claims.sub => {
                Ok(Response::new(auth::ValidateTokenResponse {
                    active: true,
                    user_id: claims.sub,
                    session_id: claims.sid,
                    expire_time: Some(pbjson_types::Timestamp {
                        seconds: claims.exp,
                        nanos: 0,
                    }),
                    inactive_reason: InactiveReason::Unspecified.into(),
                }))
            }
            _ => inactive(InactiveReason::SessionEnded),
        }
    }
}

/// The proto User of an account.
pub fn user(account: &Account) -> User {
    User {
        id: account.id.clone(),
        email: account.email.clone(),
        display_name: account.display_name.clone(),
        create_time: Some(to_timestamp(account.created_at)),
        update_time: Some(to_timestamp(account.updated_at)),
    }
}

fn duration(duration: Duration) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: duration.subsec_nanos() as i32,
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The User-Agent, at most 512 bytes.
fn user_agent(metadata: &MetadataMap) -> String {
    let agent = metadata
        .get("user-agent")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let mut end = agent.len().min(512);
    while !agent.is_char_boundary(end) {
        end -= 1;
    }
    agent[..end].to_owned()
}

/// Trims and lower-cases an email, and checks its shape.
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
/// characters.
fn display_name(name: &str) -> Result<String, Status> {
    let name = name.trim();
    let length = name.chars().count();
    if length == 0 || length > 100 || name.chars().any(char::is_control) {
        return Err(invalid(
            "display_name",
            "must be 1 to 100 characters, without control characters",
        ));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
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
        let mut metadata = MetadataMap::new();
        metadata.insert("user-agent", "a".repeat(600).parse().unwrap());
        assert_eq!(user_agent(&metadata), "a".repeat(512));
    }
}
