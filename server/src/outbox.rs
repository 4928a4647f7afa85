//! Outgoing mail: password reset links and account notices.
//!
//! No mail transport is built in yet. The default outbox writes each message
//! to the log (so a developer can follow a reset link); with MAIL_OUTBOX_DIR
//! set, each message is also written there as an `.eml` file, which tests
//! and local tooling read. A deployment that sends real mail plugs its relay
//! in here.

use std::path::PathBuf;

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The recipient's address.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
}

/// Where mail goes.
#[derive(Debug, Clone)]
pub enum Outbox {
    /// Into the log only.
    Log,
    /// Into the log and, as `.eml` files, into this directory.
    Directory(PathBuf),
}

impl Outbox {
    /// Sends a message. Failure to write is logged, never returned: the
    /// callers (reset requests) must answer the same whatever happens here.
    pub async fn send(&self, mail: Mail) {
        tracing::info!(to = %mail.to, subject = %mail.subject, body = %mail.body, "mail");
        if let Self::Directory(dir) = self {
            let name = format!(
                "{}-{}.eml",
                crate::clock::to_millis(std::time::SystemTime::now()),
                uuid::Uuid::new_v4().simple()
            );
            let text = format!(
                "To: {}\r\nSubject: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
                mail.to, mail.subject, mail.body
            );
            let path = dir.join(name);
            if let Err(error) = tokio::fs::create_dir_all(dir).await {
                tracing::error!(%error, dir = %dir.display(), "cannot create MAIL_OUTBOX_DIR");
                return;
            }
            if let Err(error) = tokio::fs::write(&path, text).await {
                tracing::error!(%error, path = %path.display(), "cannot write mail");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn directory_outbox_writes_one_eml_file_per_message() {
        let dir =
            std::env::temp_dir().join(format!("slop-outbox-{}", uuid::Uuid::new_v4().simple()));
        let outbox = Outbox::Directory(dir.clone());
        outbox
            .send(Mail {
                to: "ada@example.com".into(),
                subject: "Reset your password".into(),
                body: "https://app.example/reset?token=abc".into(),
            })
            .await;
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
        assert!(text.starts_with("To: ada@example.com\r\n"), "{text}");
        assert!(text.contains("token=abc"), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
