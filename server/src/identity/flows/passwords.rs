//! Registration (an account and its first password) and the password
//! flows: change, and reset by mail.
//!
//! What a caller can learn is kept to what it needs: registration and
//! reset requests answer the same whether or not an email has an account,
//! in about the same time (a password is hashed either way, and mail is
//! prepared off the request, so neither the mail nor its per-recipient
//! limit shows in the answer).

use std::net::IpAddr;

use crate::{
    identity::Identity,
    identity::RESET_TOKEN_TTL,
    identity::accounts::{AccountError, NewAccount},
    identity::mail::MailKind,
    identity::passwords::{self, Verification},
    identity::secrets,
};

use super::{FlowError, Result, display_name, normalize_email};

/// Someone creating an account.
pub struct Registration {
    /// As typed; trimmed, lower-cased and checked here.
    pub email: String,
    /// As typed; trimmed and checked here.
    pub display_name: String,
    /// The first password.
    pub password: String,
    /// The client's address, for the per-address limit.
    pub client_ip: Option<IpAddr>,
}

/// A signed-in user changing their password.
pub struct PasswordChange<'a> {
    /// The user.
    pub user_id: &'a str,
    /// The session they are using, which stays signed in.
    pub session_id: &'a str,
    /// Their password now, as proof.
    pub current_password: String,
    /// The password they want.
    pub new_password: String,
}

/// Someone completing a password reset with the token from the mail.
pub struct PasswordReset {
    /// The token of the reset link.
    pub reset_token: String,
    /// The password they want.
    pub new_password: String,
    /// The client's address, for the per-address limit.
    pub client_ip: Option<IpAddr>,
}

/// The longest reset token looked up (ours are 43 characters).
const MAX_RESET_TOKEN_LEN: usize = 256;

fn invalid(field: &'static str, why: impl ToString) -> FlowError {
    FlowError::Invalid {
        field,
        why: why.to_string(),
    }
}

impl Identity {
    /// Creates an account. A taken email answers the same (after the same
    /// hashing work), and its owner is told by mail instead.
    pub async fn register(&self, registration: Registration) -> Result<()> {
        self.throttle_address(registration.client_ip).await?;
        let email = normalize_email(&registration.email).map_err(|why| invalid("email", why))?;
        let display_name =
            display_name(&registration.display_name).map_err(|why| invalid("display_name", why))?;
        passwords::check_password(&registration.password, &email)
            .map_err(|why| invalid("password", why))?;
        // Hash first, either way, so an existing email takes as long.
        let password_hash = self.passwords.hash(&registration.password).await?;
        let created = self
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
            Ok(account) => {
                tracing::info!(user_id = %account.id, "account registered");
                Ok(())
            }
            Err(AccountError::EmailTaken) => {
                self.tell_owner_of_registration_attempt(email);
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Mails the owner of `email` that someone tried to register with it,
    /// off the request, so the answer is the same either way, and so is
    /// the answer when the owner's mail limit is hit.
    fn tell_owner_of_registration_attempt(&self, email: String) {
        let outbox = self.outbox.clone();
        let reset_url = self.settings.password_reset_url.clone();
        tokio::spawn(async move {
            let Some(reservation) = outbox.reserve(&email, MailKind::RegistrationAttempt).await
            else {
                return;
            };
            outbox.send(
                reservation,
                "Someone tried to register with your address",
                &format!(
                    "Someone (perhaps you) tried to create a Slop Studios account with this address, which already has one. If it was you, log in, or reset your password at {reset_url}. If not, you can ignore this message."
                ),
            );
        });
    }

    /// Changes a signed-in user's password after checking the current one;
    /// ends every other session of the account and returns how many ended.
    pub async fn change_password(&self, change: PasswordChange<'_>) -> Result<usize> {
        let account = self.account(change.user_id).await?;
        let verification = self
            .passwords
            .verify(&change.current_password, &account.password_hash)
            .await?;
        if verification == Verification::Mismatch {
            return Err(FlowError::WrongPassword);
        }
        passwords::check_password(&change.new_password, &account.email)
            .map_err(|why| invalid("new_password", why))?;
        let ended = self
            .replace_password(&account.id, &change.new_password, Some(change.session_id))
            .await?;
        tracing::info!(user_id = %account.id, ended_sessions = ended, "password changed");
        Ok(ended)
    }

    /// Mails a reset link to the account of `email`, if there is one. The
    /// answer is the same either way.
    pub async fn request_password_reset(
        &self,
        email: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<()> {
        self.throttle_address(client_ip).await?;
        let email = normalize_email(email).map_err(|why| invalid("email", why))?;
        if let Some(account) = self.accounts.by_email(&email).await? {
            self.mail_reset_link(account.id, account.email);
        }
        Ok(())
    }

    /// Stores a reset token and mails its link, off the request, so the
    /// answer takes as long either way, and is the same when the account's
    /// mail limit is hit.
    fn mail_reset_link(&self, account_id: String, email: String) {
        let outbox = self.outbox.clone();
        let accounts = self.accounts.clone();
        let clock = self.clock.clone();
        let reset_url = self.settings.password_reset_url.clone();
        tokio::spawn(async move {
            let Some(reservation) = outbox.reserve(&email, MailKind::PasswordReset).await else {
                return;
            };
            let token = secrets::random_token(32);
            let now = clock.now();
            let stored = accounts
                .create_reset_token(
                    &secrets::sha256_hex(&token),
                    &account_id,
                    now + RESET_TOKEN_TTL,
                    now,
                )
                .await;
            if let Err(error) = stored {
                tracing::error!(%error, "could not store a password reset token");
                return;
            }
            let link = format!("{reset_url}?token={token}");
            // The link on a line of its own, so mail clients show it whole.
            outbox.send(
                reservation,
                "Reset your Slop Studios password",
                &format!(
                    "To choose a new password, open this link within 30 minutes:\n\n{link}\n\nIf you did not ask for this, ignore this message: your password stays as it is."
                ),
            );
        });
    }

    /// Sets a new password with a reset token (used up by it) and ends
    /// every session of the account; returns how many ended.
    pub async fn reset_password(&self, reset: PasswordReset) -> Result<usize> {
        self.throttle_address(reset.client_ip).await?;
        // Rules that need no account first, so a weak password is refused
        // whatever the token.
        passwords::check_password(&reset.new_password, "")
            .map_err(|why| invalid("new_password", why))?;
        if reset.reset_token.is_empty() || reset.reset_token.len() > MAX_RESET_TOKEN_LEN {
            return Err(FlowError::ResetTokenInvalid);
        }
        let token_hash = secrets::sha256_hex(&reset.reset_token);
        // Then the account's own rules (its email), before the token is
        // used up: a refused password leaves the link working.
        let account_id = self
            .accounts
            .reset_token_account(&token_hash, self.now())
            .await?
            .ok_or(FlowError::ResetTokenInvalid)?;
        let account = self
            .accounts
            .by_id(&account_id)
            .await?
            .ok_or(FlowError::ResetTokenInvalid)?;
        passwords::check_password(&reset.new_password, &account.email)
            .map_err(|why| invalid("new_password", why))?;
        let account_id = self
            .accounts
            .consume_reset_token(&token_hash, self.now())
            .await?
            .ok_or(FlowError::ResetTokenInvalid)?;
        let ended = self
            .replace_password(&account_id, &reset.new_password, None)
            .await?;
        tracing::info!(user_id = %account_id, ended_sessions = ended, "password reset");
        Ok(ended)
    }

    /// Stores a new (already checked) password and ends every session of
    /// the account but `keep`; returns how many ended.
    async fn replace_password(
        &self,
        account_id: &str,
        new_password: &str,
        keep: Option<&str>,
    ) -> Result<usize> {
        let hash = self.passwords.hash(new_password).await?;
        self.accounts
            .set_password_hash(account_id, &hash, self.now())
            .await?;
        let ended = self.sessions.revoke_user(account_id, keep).await?;
        Ok(ended.len())
    }
}
