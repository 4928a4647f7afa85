//! Outgoing mail: password reset links and account notices.
//!
//! No mail transport is built in yet. With MAIL_OUTBOX_DIR set, each message
//! is written there as an `.eml` file that only the server's user can read
//! (0600; a directory we create is 0700): that is how developers follow a
//! reset link, and how tests read mail. Without it, mail is dropped, and the
//! log says so. A deployment that sends real mail plugs its relay in here.
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

use std::{fmt, path::PathBuf};

use crate::{
    identity::limits::{Decision, Rate, RateLimiter},
    identity::secrets,
    infra::config::Secret,
};

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
    /// The name in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::RegistrationAttempt => "registration_attempt",
        }
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

/// Where mail goes.
#[derive(Debug, Clone)]
enum Delivery {
    /// No transport: dropped.
    Nowhere,
    /// `.eml` files in this directory.
    Directory(PathBuf),
}

/// Outgoing mail, limited per recipient.
#[derive(Debug, Clone)]
pub struct Outbox {
    delivery: Delivery,
    limits: RateLimiter,
    rate: Rate,
    /// Keys the recipient hash, so a hash in a log or a Redis key cannot be
    /// matched against a list of addresses without it.
    key: Secret,
}

impl Outbox {
    /// Mail into `dir` (or nowhere), at most `rate` per recipient, counted
    /// in `limits` under recipient hashes keyed with `key`.
    pub fn new(dir: Option<PathBuf>, limits: RateLimiter, rate: Rate, key: Secret) -> Self {
        Self {
            delivery: dir.map_or(Delivery::Nowhere, Delivery::Directory),
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

    /// Sends a mail to the reserved recipient. Failure is logged, never
    /// returned: callers answer the same whatever happens here.
    pub async fn send(&self, reservation: Reservation, subject: &str, body: &str) {
        let Reservation {
            to,
            kind,
            recipient,
        } = reservation;
        let kind = kind.as_str();
        match &self.delivery {
            Delivery::Nowhere => tracing::warn!(
                kind,
                %recipient,
                "mail not sent: no mail transport is configured; set MAIL_OUTBOX_DIR to keep mail as .eml files"
            ),
            Delivery::Directory(dir) => {
                let text = format!(
                    "To: {to}\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
                );
                let dir = dir.clone();
                let written = tokio::task::spawn_blocking(move || write_eml(&dir, &text)).await;
                match written {
                    Ok(Ok(())) => {
                        tracing::info!(kind, %recipient, "mail written to MAIL_OUTBOX_DIR")
                    }
                    Ok(Err(error)) => tracing::error!(
                        %error,
                        kind,
                        %recipient,
                        "cannot write mail into MAIL_OUTBOX_DIR"
                    ),
                    Err(error) => tracing::error!(%error, kind, "mail writer failed"),
                }
            }
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

/// Writes `text` as a new `.eml` file in `dir` (created 0700 if missing),
/// readable by its owner only.
fn write_eml(dir: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        builder.mode(0o700);
        options.mode(0o600);
    }
    builder.create(dir)?;
    let path = dir.join(format!(
        "{}-{}.eml",
        crate::infra::clock::to_millis(std::time::SystemTime::now()),
        uuid::Uuid::new_v4().simple()
    ));
    let mut file = options.open(&path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::infra::clock::ManualClock;

    const THREE_AN_HOUR: Rate = Rate::new(3, Duration::from_secs(3600));

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("slop-outbox-{}", uuid::Uuid::new_v4().simple()))
    }

    fn outbox(dir: Option<PathBuf>, limits: RateLimiter) -> Outbox {
        Outbox::new(dir, limits, THREE_AN_HOUR, Secret::from("outbox-test-key"))
    }

    fn mail_in(dir: &std::path::Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| entries.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn directory_outbox_writes_one_private_eml_file_per_message() {
        let dir = temp_dir().join("mail");
        let outbox = outbox(
            Some(dir.clone()),
            RateLimiter::memory(ManualClock::starting_now()),
        );
        let reservation = outbox
            .reserve(" Ada@Example.com", MailKind::PasswordReset)
            .await
            .expect("within the allowance");
        outbox
            .send(
                reservation,
                "Reset your password",
                "https://app.example/reset?token=abc",
            )
            .await;
        let files = mail_in(&dir);
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert!(text.starts_with("To: ada@example.com\r\n"), "{text}");
        assert!(text.contains("token=abc"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |path: &std::path::Path| {
                std::fs::metadata(path).unwrap().permissions().mode() & 0o777
            };
            assert_eq!(mode(&files[0]), 0o600, "a reset link is a secret");
            assert_eq!(mode(&dir), 0o700);
        }
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn each_recipient_gets_its_allowance_and_it_refills() {
        let clock = ManualClock::starting_now();
        let dir = temp_dir();
        let outbox = outbox(Some(dir.clone()), RateLimiter::memory(clock.clone()));
        for kind in [
            MailKind::PasswordReset,
            MailKind::RegistrationAttempt,
            MailKind::PasswordReset,
        ] {
            let reservation = outbox.reserve("ada@example.com", kind).await;
            outbox
                .send(reservation.expect("within the allowance"), "s", "b")
                .await;
        }
        // The address however written; any kind of mail.
        for (to, kind) in [
            ("ada@example.com", MailKind::PasswordReset),
            ("ADA@example.com ", MailKind::RegistrationAttempt),
        ] {
            assert!(outbox.reserve(to, kind).await.is_none(), "{to}");
        }
        assert!(
            outbox
                .reserve("grace@example.com", MailKind::PasswordReset)
                .await
                .is_some(),
            "another recipient has an allowance of its own"
        );
        clock.advance(Duration::from_secs(20 * 60));
        assert!(
            outbox
                .reserve("ada@example.com", MailKind::PasswordReset)
                .await
                .is_some()
        );
        assert_eq!(mail_in(&dir).len(), 3);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn no_directory_drops_mail_but_still_counts_it() {
        let outbox = outbox(None, RateLimiter::memory(ManualClock::starting_now()));
        for _ in 0..3 {
            let reservation = outbox
                .reserve("ada@example.com", MailKind::PasswordReset)
                .await;
            outbox.send(reservation.unwrap(), "s", "b").await;
        }
        assert!(
            outbox
                .reserve("ada@example.com", MailKind::PasswordReset)
                .await
                .is_none()
        );
    }

    #[test]
    fn recipient_hashes_are_keyed_and_say_nothing_of_the_address() {
        let limits = RateLimiter::memory(ManualClock::starting_now());
        let ours = outbox(None, limits.clone());
        let other = Outbox::new(None, limits, THREE_AN_HOUR, Secret::from("another-key"));
        let hash = ours.recipient_hash("ada@example.com");
        assert_eq!(hash.len(), 16);
        assert_eq!(hash, ours.recipient_hash("ada@example.com"));
        assert_ne!(hash, ours.recipient_hash("grace@example.com"));
        assert_ne!(hash, other.recipient_hash("ada@example.com"));
        assert!(!hash.contains("ada"));
        let reservation = Reservation {
            to: "ada@example.com".into(),
            kind: MailKind::PasswordReset,
            recipient: hash,
        };
        assert!(!format!("{reservation:?}").contains("ada@"));
    }

    /// With Redis, instances share each recipient's allowance, and the keys
    /// hold a keyed hash, not the address.
    #[tokio::test]
    async fn in_redis_the_allowance_is_shared_and_keys_hold_no_address() {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("slop-test:{}:", uuid::Uuid::new_v4().simple());
        let clock = ManualClock::starting_now();
        // Two instances: a Redis context each.
        let connect = || {
            let context =
                crate::infra::redis_context::RedisContext::connect(&url, &prefix, clock.clone())
                    .unwrap_or_else(|error| panic!("REDIS_URL {url}: {error}"));
            RateLimiter::redis(&context)
        };
        let (first, second) = (outbox(None, connect()), outbox(None, connect()));
        let outcome = tokio::spawn({
            let (first, second) = (first.clone(), second.clone());
            async move {
                for instance in [&first, &second, &first] {
                    let reservation = instance
                        .reserve("ada@example.com", MailKind::PasswordReset)
                        .await;
                    assert!(reservation.is_some());
                }
                assert!(
                    second
                        .reserve("ada@example.com", MailKind::PasswordReset)
                        .await
                        .is_none(),
                    "the allowance is shared by instances"
                );
            }
        })
        .await;

        let client = redis::Client::open(url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut connection)
            .await
            .unwrap();
        if !keys.is_empty() {
            let () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
        if let Err(error) = outcome {
            std::panic::resume_unwind(error.into_panic());
        }
        assert_eq!(keys.len(), 1, "{keys:?}");
        let hash = first.recipient_hash("ada@example.com");
        assert_eq!(keys[0], format!("{prefix}limit:mail-recipient:{hash}"));
        assert!(!keys[0].contains("ada") && !keys[0].contains("example"));
    }
}
