//! The message: the headers a mail client and a spam filter expect (Date,
//! Message-ID, From, To, Subject, MIME-Version, a UTF-8 text/plain
//! Content-Type) and the body, exactly as SMTP sends it and as the `.eml`
//! outbox keeps it.
//!
//! A body that is ASCII with lines of at most 998 bytes (RFC 5322's limit)
//! goes as 7bit, as written: a reset link stays one unbroken line even
//! when it is longer than 76 characters, where lettre would choose
//! quoted-printable and cut it with soft line breaks. Anything else is
//! encoded as lettre chooses.

use lettre::{
    Address, Message,
    message::{
        Body, Mailbox,
        header::{self, ContentTransferEncoding, ContentType},
    },
};

/// The longest line a 7bit body may have, without its CRLF (RFC 5322
/// §2.1.1).
const MAX_LINE: usize = 998;

/// Why a message could not be built. Neither says the address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ComposeError {
    /// The recipient is not an address a mail can be sent to.
    #[error("the recipient is not a mail address")]
    Recipient,
    /// lettre refused the headers.
    #[error("the message could not be built")]
    Message,
}

/// A plain-text message from `from` to `to`.
pub fn compose(
    from: &Mailbox,
    to: &str,
    subject: &str,
    body: &str,
) -> Result<Message, ComposeError> {
    let to: Address = to.parse().map_err(|_| ComposeError::Recipient)?;
    let message_id = format!(
        "<{}@{}>",
        uuid::Uuid::new_v4().simple(),
        from.email.domain()
    );
    Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to))
        .subject(subject)
        .date_now()
        .message_id(Some(message_id))
        .header(header::MIME_VERSION_1_0)
        .header(ContentType::TEXT_PLAIN)
        .body(encoded(body))
        .map_err(|_| ComposeError::Message)
}

/// `text` with CRLF line ends: 7bit as it is when it can be, else as
/// lettre chooses.
fn encoded(text: &str) -> Body {
    let crlf = text.replace("\r\n", "\n").replace('\n', "\r\n");
    let seven_bit = crlf.is_ascii()
        && !crlf.contains('\0')
        && crlf
            .split("\r\n")
            .all(|line| line.len() <= MAX_LINE && !line.contains('\r'));
    if seven_bit {
        Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::SevenBit)
    } else {
        Body::new(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from() -> Mailbox {
        "Slop Studios <no-reply@example.com>".parse().unwrap()
    }

    fn text(message: &Message) -> String {
        String::from_utf8(message.formatted()).unwrap()
    }

    #[test]
    fn a_message_has_every_header_a_mail_client_expects() {
        let message = compose(&from(), "ada@example.com", "Reset your password", "Hello").unwrap();
        let text = text(&message);
        for header in [
            "From: \"Slop Studios\" <no-reply@example.com>\r\n",
            "To: ada@example.com\r\n",
            "Subject: Reset your password\r\n",
            "MIME-Version: 1.0\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
            "Content-Transfer-Encoding: 7bit\r\n",
        ] {
            assert!(text.contains(header), "no {header:?} in {text}");
        }
        assert!(text.contains("\r\nDate: "), "{text}");
        let id = text
            .split("Message-ID: <")
            .nth(1)
            .and_then(|rest| rest.split_once(">\r\n"))
            .map(|(id, _)| id)
            .unwrap_or_else(|| panic!("no Message-ID in {text}"));
        assert!(id.ends_with("@example.com") && id.len() > 40, "{id}");
        assert!(text.ends_with("\r\n\r\nHello"), "{text}");
        let envelope = message.envelope();
        assert_eq!(envelope.from().unwrap().to_string(), "no-reply@example.com");
        assert_eq!(envelope.to()[0].to_string(), "ada@example.com");
    }

    #[test]
    fn a_long_reset_link_stays_one_unbroken_line() {
        let link = format!(
            "https://app.example.com/a/rather/long/path/to/reset-password?token={}",
            "A".repeat(43)
        );
        assert!(link.len() > 76);
        let body = format!("To choose a new password, open\n{link}\nwithin 30 minutes.");
        let text = text(&compose(&from(), "ada@example.com", "s", &body).unwrap());
        assert!(text.contains(&format!("\r\n{link}\r\n")), "{text}");
        assert!(text.contains("Content-Transfer-Encoding: 7bit"), "{text}");
    }

    #[test]
    fn non_ascii_text_is_encoded_and_reads_back() {
        let message = compose(&from(), "ada@example.com", "Grüße", "Grüße, Ada").unwrap();
        let text = text(&message);
        assert!(text.is_ascii(), "{text}");
        assert!(text.contains("Subject: =?utf-8?"), "{text}");
        assert!(
            text.contains("Content-Transfer-Encoding: quoted-printable")
                || text.contains("Content-Transfer-Encoding: base64"),
            "{text}"
        );
    }

    #[test]
    fn a_recipient_that_is_no_address_is_refused_without_saying_it() {
        for to in ["", "ada", "ada@", "a b@example.com"] {
            let error = compose(&from(), to, "s", "b").unwrap_err();
            assert_eq!(error, ComposeError::Recipient, "{to}");
        }
        assert!(!ComposeError::Recipient.to_string().contains('@'));
    }
}
