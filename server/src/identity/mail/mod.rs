//! Outgoing mail: password reset links and account notices.
//!
//! A mail goes to the SMTP relay of SMTP_URL ([`transport`], lettre over
//! rustls), or, for development, into MAIL_OUTBOX_DIR as an `.eml` file
//! that only the server's user can read (0600; a directory we create is
//! 0700): the very message SMTP would send ([`message`]). With neither,
//! mail is dropped, and the log says so at start and for each mail.
//!
//! Sending never makes a request wait: [`Outbox::send`] builds the message
//! and hands it to a bounded queue ([`queue`]) whose background task
//! delivers, retries with back-off, counts, and at shutdown drains.
//!
//! A reset link is a password for whoever holds it, so the log gets only
//! the kind of each mail and a keyed hash of its recipient: never the
//! address, the subject, the body, a link or a token, at any level.
//!
//! Each recipient gets at most MAIL_PER_RECIPIENT_LIMIT mails per
//! MAIL_PER_RECIPIENT_WINDOW, counted by the shared rate limiter (in Redis,
//! across instances, when REDIS_URL is set) under that keyed hash, never the
//! address: nobody can flood an inbox with reset mails. [`Outbox::reserve`]
//! takes one mail of the allowance and is the only way to get the
//! [`Reservation`] that [`Outbox::send`] needs. Over the limit nothing is
//! sent, and callers answer exactly as they would otherwise (they send off
//! the request anyway), so the limit says nothing about who has an account.

pub mod message;
pub mod queue;
pub mod transport;

use std::{fmt, sync::Arc, time::Duration};

use lettre::message::Mailbox;

use crate::{
    identity::limits::{Decision, Rate, RateLimiter},
    identity::secrets,
    infra::config::Secret,
};

pub use transport::Transport;

/// What a mail is about: all the log says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    /// A password reset link.
    PasswordReset,
    /// A notice that someone tried to register with an address that has an
    /// account.
    RegistrationAttempt,
}

impl MailKind {
    /// Every kind.
    pub const ALL: [Self; 2] = [Self::PasswordReset, Self::RegistrationAttempt];

    /// The name in log lines and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::RegistrationAttempt => "registration_attempt",
        }
    }

    /// Its place in [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One mail of a recipient's allowance, taken by [`Outbox::reserve`].
#[must_use = "a reservation is one mail of the recipient's allowance: send it"]
pub struct Reservation {
    to: String,
    kind: MailKind,
    recipient: String,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("kind", &self.kind)
            .field("recipient", &self.recipient)
            .finish_non_exhaustive()
    }
}

/// How mail is delivered: the transport (None: dropped), the sender, and
/// the first retry's delay.
#[derive(Debug)]
pub struct Delivery {
    /// Where mail goes; None drops it.
    pub transport: Option<Transport>,
    /// The From of every mail.
    pub from: Mailbox,
    /// How long the first retry waits (MAIL_RETRY_DELAY).
    pub retry_delay: Duration,
}

/// Outgoing mail, limited per recipient.
#[derive(Clone)]
pub struct Outbox {
    /// None when there is no transport.
    queue: Option<Arc<queue::MailQueue>>,
    from: Mailbox,
    limits: RateLimiter,
    rate: Rate,
    /// Keys the recipient hash, so a hash in a log or a Redis key cannot be
    /// matched against a list of addresses without it.
    key: Secret,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("transport", &self.queue.is_some())
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// Mail through `delivery` (its queue's worker starts now, so this
    /// runs inside the runtime), at most `rate` per recipient, counted in
    /// `limits` under recipient hashes keyed with `key`.
    pub fn new(delivery: Delivery, limits: RateLimiter, rate: Rate, key: Secret) -> Self {
        let queue = delivery.transport.map(|transport| {
            Arc::new(queue::MailQueue::start(
                transport,
                delivery.retry_delay,
                queue::QUEUE_CAPACITY,
            ))
        });
        Self {
            queue,
            from: delivery.from,
            limits,
            rate,
            key,
        }
    }

    /// Takes one mail of `to`'s allowance (the address is trimmed and
    /// lower-cased). None when the allowance is used up, or when it cannot
    /// be checked (the limiter's store is down: no mail rather than no
    /// limit); either is logged, with the kind and the recipient's hash.
    pub async fn reserve(&self, to: &str, kind: MailKind) -> Option<Reservation> {
        let to = to.trim().to_lowercase();
        let recipient = self.recipient_hash(&to);
        let key = format!("mail-recipient:{recipient}");
        match self.limits.hit(&key, self.rate).await {
            Ok(Decision::Allowed { .. }) => Some(Reservation {
                to,
                kind,
                recipient,
            }),
            Ok(Decision::Limited { .. }) => {
                tracing::info!(
                    kind = kind.as_str(),
                    %recipient,
                    "mail not sent: the recipient has had MAIL_PER_RECIPIENT_LIMIT mails in MAIL_PER_RECIPIENT_WINDOW"
                );
                None
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    kind = kind.as_str(),
                    %recipient,
                    "mail not sent: the per-recipient mail limit could not be checked"
                );
                None
            }
        }
    }

    /// Queues a mail to the reserved recipient and returns at once; the
    /// queue's task delivers it. Failure is logged and counted, never
    /// returned: callers answer the same whatever happens here.
    pub fn send(&self, reservation: Reservation, subject: &str, body: &str) {
        let Reservation {
            to,
            kind,
            recipient,
        } = reservation;
        let fail = |reason: &'static str, why: &str| {
            metrics::counter!("slop_mail_failures_total", "kind" => kind.as_str(), "reason" => reason)
                .increment(1);
            tracing::warn!(kind = kind.as_str(), %recipient, reason, "mail not sent: {why}");
        };
        let Some(queue) = &self.queue else {
            fail(
                "no_transport",
                "no mail transport is configured; set SMTP_URL (or MAIL_OUTBOX_DIR to keep mail as .eml files)",
            );
            return;
        };
        let message = match message::compose(&self.from, &to, subject, body) {
            Ok(message) => message,
            Err(error) => {
                fail("address", &error.to_string());
                return;
            }
        };
        let job = queue::Job {
            message,
            kind,
            recipient: recipient.clone(),
            attempts: 0,
        };
        match queue.push(job) {
            Ok(()) => tracing::debug!(kind = kind.as_str(), %recipient, "mail queued"),
            Err(queue::Refused::Full) => fail(
                "queue_full",
                "the mail queue is full (the relay is down or too slow); it is dropped",
            ),
            Err(queue::Refused::Stopped) => fail("shutdown", "the server is stopping"),
        }
    }

    /// At shutdown: gives the mail still waiting one more attempt within
    /// `budget`, then logs how many were not sent (a count, nothing else).
    /// Answers that count.
    pub async fn drain(&self, budget: Duration) -> usize {
        match &self.queue {
            Some(queue) => queue.drain(budget).await,
            None => 0,
        }
    }

    /// A keyed hash of a (normalized) address: 96 bits, base64url.
    fn recipient_hash(&self, address: &str) -> String {
        let mut hash = secrets::hmac_b64(
            self.key.expose(),
            format!("mail-recipient\0{address}").as_bytes(),
        );
        hash.truncate(16);
        hash
    }
}

#[cfg(test)]
mod tests;
