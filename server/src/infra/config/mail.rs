//! The mail settings: which transport (SMTP_URL, MAIL_OUTBOX_DIR or
//! explicitly none), the relay's URL with its credentials, the sender
//! (MAIL_FROM), and what production refuses.
//!
//! SMTP_URL follows lettre's URL conventions, so a URL that works with
//! other lettre-based software works here:
//!
//! | URL | connection | default port |
//! | --- | --- | --- |
//! | `smtp://host` | plain, no TLS | 25 |
//! | `smtp://host?tls=required` | STARTTLS, refused without it | 587 |
//! | `smtp://host?tls=opportunistic` | STARTTLS when offered, else plain | 587 |
//! | `smtps://host` | implicit TLS (RFC 8314) | 465 |
//!
//! `user:password@` before the host (percent-encoded) are the credentials;
//! a path (`smtp://host/mail.example.com`) is the name sent in EHLO. Unlike
//! lettre, any other query parameter is refused, so a typo such as
//! `?tsl=required` cannot silently turn TLS off.

use std::{fmt, net::IpAddr, path::PathBuf};

use clap::ValueEnum;
use lettre::message::Mailbox;

use super::{Config, MAX_TEXT, Secret};

/// How the connection to the relay is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// No TLS (`smtp://`).
    Plain,
    /// STARTTLS, or the connection fails (`?tls=required`).
    StartTlsRequired,
    /// STARTTLS when the relay offers it, plain otherwise
    /// (`?tls=opportunistic`).
    StartTlsOpportunistic,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

impl SmtpSecurity {
    /// Whether the connection is certainly encrypted.
    pub fn always_encrypted(self) -> bool {
        matches!(self, Self::StartTlsRequired | Self::Implicit)
    }

    /// Whether TLS is used at all (and so a CA file can apply).
    pub fn uses_tls(self) -> bool {
        self != Self::Plain
    }
}

/// A relay as SMTP_URL names it.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    /// TLS mode.
    pub security: SmtpSecurity,
    /// Host name or IP address.
    pub host: String,
    /// TCP port (the scheme's default when the URL has none).
    pub port: u16,
    /// The name sent in EHLO, from the URL's path.
    pub hello_name: Option<String>,
    /// User name from the URL.
    pub username: Option<String>,
    /// Password from the URL.
    pub password: Option<Secret>,
}

impl SmtpUrl {
    /// Whether the relay is on this machine (the password and the mail do
    /// not cross a network).
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// Without the credentials: what logs and errors may show.
impl fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, query) = match self.security {
            SmtpSecurity::Plain => ("smtp", ""),
            SmtpSecurity::StartTlsRequired => ("smtp", "?tls=required"),
            SmtpSecurity::StartTlsOpportunistic => ("smtp", "?tls=opportunistic"),
            SmtpSecurity::Implicit => ("smtps", ""),
        };
        write!(f, "{scheme}://{}:{}{query}", self.host, self.port)
    }
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmtpUrl({self})")
    }
}

/// Reads SMTP_URL; errors never quote the URL, which may hold a password.
pub(super) fn parse_smtp_url(value: &str) -> Result<SmtpUrl, String> {
    if value.len() > MAX_TEXT {
        return Err(format!("longer than {MAX_TEXT} characters"));
    }
    let url = url::Url::parse(value.trim()).map_err(|error| {
        format!("not a URL ({error}): expected smtp://host[:port][?tls=required|opportunistic] or smtps://host[:port]")
    })?;
    let mut tls = None;
    for (key, value) in url.query_pairs() {
        match (&*key, tls) {
            ("tls", None) => tls = Some(value.into_owned()),
            ("tls", Some(_)) => return Err("the tls parameter is given twice".into()),
            (other, _) => {
                return Err(format!(
                    "unknown parameter '{other}': the only one is tls=required or tls=opportunistic"
                ));
            }
        }
    }
    let (security, default_port) = match (url.scheme(), tls.as_deref()) {
        ("smtp", None) => (SmtpSecurity::Plain, 25),
        ("smtp", Some("required")) => (SmtpSecurity::StartTlsRequired, 587),
        ("smtp", Some("opportunistic")) => (SmtpSecurity::StartTlsOpportunistic, 587),
        ("smtp", Some(_)) => {
            return Err("tls must be required (STARTTLS) or opportunistic".into());
        }
        ("smtps", None) => (SmtpSecurity::Implicit, 465),
        ("smtps", Some(_)) => {
            return Err("smtps:// is TLS from the start: it takes no tls parameter".into());
        }
        (scheme, _) => {
            return Err(format!(
                "unknown scheme '{scheme}': expected smtp:// (plain or STARTTLS) or smtps:// (implicit TLS)"
            ));
        }
    };
    let host = match url.host_str() {
        Some(host) if !host.is_empty() => host.to_owned(),
        _ => return Err("no host: expected smtp://host[:port]".into()),
    };
    if url.fragment().is_some() {
        return Err("a fragment (#…) has no meaning here".into());
    }
    let decode = |part: &str, what: &str| {
        percent_encoding_decode(part).ok_or_else(|| format!("the {what} is not UTF-8 once decoded"))
    };
    let username = (!url.username().is_empty())
        .then(|| decode(url.username(), "user name"))
        .transpose()?;
    let password = url
        .password()
        .map(|password| decode(password, "password").map(|p| Secret::from(p.as_str())))
        .transpose()?;
    if password.is_some() && username.is_none() {
        return Err("a password without a user name: expected smtps://user:password@host".into());
    }
    if username.is_some() && password.is_none() {
        return Err("a user name without a password: expected smtps://user:password@host".into());
    }
    let hello_name = Some(url.path().trim_matches('/'))
        .filter(|path| !path.is_empty())
        .map(str::to_owned);
    Ok(SmtpUrl {
        security,
        port: url.port().unwrap_or(default_port),
        host,
        hello_name,
        username,
        password,
    })
}

fn percent_encoding_decode(part: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(part.len());
    let mut rest = part.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%'
            && let [high, low, tail @ ..] = tail
            && let (Some(high), Some(low)) =
                ((*high as char).to_digit(16), (*low as char).to_digit(16))
        {
            bytes.push((high * 16 + low) as u8);
            rest = tail;
            continue;
        }
        bytes.push(byte);
        rest = tail;
    }
    String::from_utf8(bytes).ok()
}

/// Reads MAIL_FROM: `no-reply@example.com` or `Name <no-reply@example.com>`.
pub(super) fn parse_mail_from(value: &str) -> Result<Mailbox, String> {
    if value.len() > 320 {
        return Err("longer than 320 characters".into());
    }
    value.trim().parse::<Mailbox>().map_err(|error| {
        format!("not a mail address ({error}): expected no-reply@example.com or 'Name <no-reply@example.com>'")
    })
}

/// MAIL_TRANSPORT: where mail goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MailTransportKind {
    /// The relay at SMTP_URL.
    Smtp,
    /// `.eml` files in MAIL_OUTBOX_DIR.
    Directory,
    /// Nowhere: no mail is sent, so password reset cannot work.
    None,
}

/// The transport the mail settings choose, checked.
#[derive(Debug, Clone)]
pub enum MailTransportChoice {
    /// SMTP: the relay, credentials, the CA file if any.
    Smtp {
        /// The relay.
        url: SmtpUrl,
        /// User name and password (from the URL or SMTP_USERNAME and
        /// SMTP_PASSWORD).
        credentials: Option<(String, Secret)>,
        /// A PEM file of the only CAs to trust.
        ca_file: Option<PathBuf>,
    },
    /// `.eml` files.
    Directory(PathBuf),
    /// None: mail is dropped (and the log says so at start and each time).
    None {
        /// Whether MAIL_TRANSPORT=none said so (rather than nothing set).
        explicit: bool,
    },
}

/// The sender when MAIL_FROM is unset (development only: a relay needs a
/// real sender).
pub const DEVELOPMENT_MAIL_FROM: &str = "Slop Studios <no-reply@localhost>";

impl Config {
    /// The mail transport the settings choose, or why they contradict each
    /// other; production refuses to run with none unless MAIL_TRANSPORT=none
    /// says so. Messages name the variables, never a password.
    pub fn mail_transport(&self) -> Result<MailTransportChoice, String> {
        use MailTransportKind as Kind;
        let production = self.app_env() == super::AppEnv::Production;
        let kind = match (self.mail_transport, &self.smtp_url, &self.mail_outbox_dir) {
            (Some(kind), _, _) => kind,
            (None, Some(_), Some(_)) => {
                return Err("SMTP_URL and MAIL_OUTBOX_DIR are both set: mail goes to one transport; unset one, or set MAIL_TRANSPORT to smtp or directory".into());
            }
            (None, Some(_), None) => Kind::Smtp,
            (None, None, Some(_)) => Kind::Directory,
            (None, None, None) if production => {
                return Err("no mail transport in production: password reset mails could not be sent, so nobody could reset a password. Set SMTP_URL (and MAIL_FROM) to your relay, or MAIL_TRANSPORT=none to run without mail on purpose".into());
            }
            (None, None, None) => Kind::None,
        };
        let smtp_settings = self.smtp_url.is_some()
            || self.smtp_username.is_some()
            || self.smtp_password.is_some()
            || self.smtp_tls_ca_file.is_some();
        match kind {
            Kind::Smtp => self.smtp_choice(),
            Kind::Directory => {
                if smtp_settings {
                    return Err("MAIL_TRANSPORT=directory, but SMTP settings are set: unset SMTP_URL, SMTP_USERNAME, SMTP_PASSWORD and SMTP_TLS_CA_FILE, or use MAIL_TRANSPORT=smtp".into());
                }
                self.mail_outbox_dir
                    .clone()
                    .map(MailTransportChoice::Directory)
                    .ok_or_else(|| "MAIL_TRANSPORT=directory needs MAIL_OUTBOX_DIR".into())
            }
            Kind::None => {
                if smtp_settings || self.mail_outbox_dir.is_some() {
                    return Err("MAIL_TRANSPORT=none, but SMTP_URL or MAIL_OUTBOX_DIR is set: unset them, or choose that transport".into());
                }
                Ok(MailTransportChoice::None {
                    explicit: self.mail_transport.is_some(),
                })
            }
        }
    }

    fn smtp_choice(&self) -> Result<MailTransportChoice, String> {
        let Some(url) = self.smtp_url.clone() else {
            return Err("MAIL_TRANSPORT=smtp needs SMTP_URL".into());
        };
        if self.mail_outbox_dir.is_some() {
            return Err("MAIL_TRANSPORT=smtp, but MAIL_OUTBOX_DIR is set too: unset it".into());
        }
        if self.mail_from.is_none() {
            return Err("MAIL_FROM must be set with SMTP_URL: the sender address your relay accepts, e.g. 'Slop Studios <no-reply@example.com>'".into());
        }
        let in_url = url.username.clone().zip(url.password.clone());
        let credentials = match (in_url, &self.smtp_username, &self.smtp_password) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err("SMTP credentials are both in SMTP_URL and in SMTP_USERNAME/SMTP_PASSWORD: give them once".into());
            }
            (Some(credentials), None, None) => Some(credentials),
            (None, Some(user), Some(password)) => Some((user.clone(), password.clone())),
            (None, Some(_), None) => {
                return Err("SMTP_USERNAME is set without SMTP_PASSWORD".into());
            }
            (None, None, Some(_)) => {
                return Err("SMTP_PASSWORD is set without SMTP_USERNAME".into());
            }
            (None, None, None) => None,
        };
        if credentials.is_some() && !url.security.always_encrypted() && !url.is_loopback() {
            return Err(format!(
                "SMTP_URL {url} is not always encrypted, so the SMTP password would cross the network in clear: use smtps:// or ?tls=required"
            ));
        }
        if self.smtp_tls_ca_file.is_some() && !url.security.uses_tls() {
            return Err(format!(
                "SMTP_TLS_CA_FILE is set, but SMTP_URL {url} uses no TLS: use smtps:// or ?tls=required"
            ));
        }
        Ok(MailTransportChoice::Smtp {
            url,
            credentials,
            ca_file: self.smtp_tls_ca_file.clone(),
        })
    }

    /// The sender of every mail.
    pub fn mail_from(&self) -> Mailbox {
        self.mail_from.clone().unwrap_or_else(|| {
            DEVELOPMENT_MAIL_FROM
                .parse()
                .expect("the development sender is an address")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::production_without_mail as production;
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut command = <Config as clap::CommandFactory>::command();
        command = command.mut_args(|arg| arg.env(None::<&str>));
        let mut all = vec!["slop-server"];
        all.extend_from_slice(args);
        let matches = command
            .try_get_matches_from(all)
            .unwrap_or_else(|error| panic!("{error}"));
        <Config as clap::FromArgMatches>::from_arg_matches(&matches).unwrap()
    }

    fn parse_err(args: &[&str]) -> String {
        let mut command = <Config as clap::CommandFactory>::command();
        command = command.mut_args(|arg| arg.env(None::<&str>));
        let mut all = vec!["slop-server"];
        all.extend_from_slice(args);
        command.try_get_matches_from(all).unwrap_err().to_string()
    }

    #[test]
    fn smtp_urls_follow_lettres_conventions() {
        let url = parse_smtp_url("smtp://relay.example.com").unwrap();
        assert_eq!(
            (url.security, url.port, url.host.as_str()),
            (SmtpSecurity::Plain, 25, "relay.example.com")
        );
        let url = parse_smtp_url("smtp://relay.example.com?tls=required").unwrap();
        assert_eq!(
            (url.security, url.port),
            (SmtpSecurity::StartTlsRequired, 587)
        );
        let url = parse_smtp_url("smtp://relay.example.com:2525?tls=opportunistic").unwrap();
        assert_eq!(
            (url.security, url.port),
            (SmtpSecurity::StartTlsOpportunistic, 2525)
        );
        let url = parse_smtp_url("smtps://relay.example.com").unwrap();
        assert_eq!((url.security, url.port), (SmtpSecurity::Implicit, 465));
        let url =
            parse_smtp_url("smtps://apikey:p%40ss%2Fw0rd@relay.example.com:4650/mx.example.com")
                .unwrap();
        assert_eq!(url.port, 4650);
        assert_eq!(url.username.as_deref(), Some("apikey"));
        assert_eq!(url.password.unwrap().expose(), b"p@ss/w0rd");
        assert_eq!(url.hello_name.as_deref(), Some("mx.example.com"));
        let url = parse_smtp_url("smtp://[::1]:2525").unwrap();
        assert!(url.is_loopback());
        assert!(parse_smtp_url("smtp://localhost").unwrap().is_loopback());
        assert!(!parse_smtp_url("smtp://relay").unwrap().is_loopback());
    }

    #[test]
    fn malformed_smtp_urls_say_why_and_never_echo_the_password() {
        for (url, why) in [
            ("relay.example.com", "not a URL"),
            ("http://relay.example.com", "unknown scheme 'http'"),
            (
                "smtp://relay.example.com?tls=require",
                "required (STARTTLS) or opportunistic",
            ),
            (
                "smtp://relay.example.com?tsl=required",
                "unknown parameter 'tsl'",
            ),
            (
                "smtps://relay.example.com?tls=required",
                "takes no tls parameter",
            ),
            ("smtp://relay?tls=required&tls=required", "twice"),
            ("smtps://user@relay.example.com", "without a password"),
            (
                "smtps://:hunter2-secret@relay.example.com",
                "without a user name",
            ),
            ("smtp:///nohost", "no host"),
        ] {
            let error = parse_smtp_url(url).unwrap_err();
            assert!(error.contains(why), "{url}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
        let error = parse_err(&["--smtp-url", "smtps://user:hunter2-secret@relay?x=1"]);
        assert!(error.contains("SMTP_URL"), "{error}");
        let shown = super::super::without_values(
            &<Config as clap::CommandFactory>::command()
                .mut_args(|arg| arg.env(None::<&str>))
                .try_get_matches_from([
                    "slop-server",
                    "--smtp-url",
                    "smtps://u:hunter2-secret@r?x=1",
                ])
                .unwrap_err(),
        );
        assert!(
            shown.contains("--smtp-url") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn the_url_shown_has_no_credentials() {
        let url = parse_smtp_url("smtps://user:hunter2-secret@relay.example.com").unwrap();
        assert_eq!(url.to_string(), "smtps://relay.example.com:465");
        assert!(!format!("{url:?}").contains("hunter2"));
    }

    #[test]
    fn mail_from_is_an_address_with_an_optional_name() {
        let from = parse_mail_from("Slop Studios <no-reply@example.com>").unwrap();
        assert_eq!(from.email.to_string(), "no-reply@example.com");
        assert_eq!(from.name.as_deref(), Some("Slop Studios"));
        assert!(parse_mail_from("no-reply@example.com").is_ok());
        for bad in ["", "no-reply", "Slop <no-reply>", "a@b@c", "<>"] {
            let error = parse_mail_from(bad).unwrap_err();
            assert!(error.contains("not a mail address"), "{bad}: {error}");
        }
        let error = parse_err(&["--mail-from", "nobody"]);
        assert!(error.contains("MAIL_FROM"), "{error}");
        assert_eq!(
            Config::embedded_defaults().mail_from().email.to_string(),
            "no-reply@localhost"
        );
    }

    #[test]
    fn production_refuses_to_start_without_a_mail_transport() {
        let error = production(&[]).validate().unwrap_err();
        assert!(
            error.contains("no mail transport")
                && error.contains("reset")
                && error.contains("SMTP_URL")
                && error.contains("MAIL_TRANSPORT=none"),
            "{error}"
        );
        // Said on purpose: it starts (and warns at start).
        let config = production(&["--mail-transport", "none"]);
        assert_eq!(config.validate(), Ok(()));
        assert!(matches!(
            config.mail_transport(),
            Ok(MailTransportChoice::None { explicit: true })
        ));
        let config = production(&[
            "--smtp-url",
            "smtps://relay.example.com",
            "--mail-from",
            "no-reply@example.com",
        ]);
        assert_eq!(config.validate(), Ok(()));
        assert!(
            production(&["--mail-outbox-dir", "/var/mail/slop"])
                .validate()
                .is_ok()
        );
        // Development runs without, as before.
        assert!(matches!(
            Config::embedded_defaults().mail_transport(),
            Ok(MailTransportChoice::None { explicit: false })
        ));
    }

    #[test]
    fn contradictory_mail_settings_are_refused_naming_them() {
        for (args, expected) in [
            (
                &[
                    "--smtp-url",
                    "smtp://localhost",
                    "--mail-outbox-dir",
                    "/tmp/m",
                ][..],
                "both set",
            ),
            (
                &["--smtp-url", "smtp://localhost"][..],
                "MAIL_FROM must be set",
            ),
            (
                &["--mail-transport", "none", "--smtp-url", "smtp://localhost"][..],
                "MAIL_TRANSPORT=none",
            ),
            (&["--mail-transport", "smtp"][..], "needs SMTP_URL"),
            (
                &["--mail-transport", "directory"][..],
                "needs MAIL_OUTBOX_DIR",
            ),
            (
                &["--mail-outbox-dir", "/tmp/m", "--smtp-username", "u"][..],
                "SMTP settings are set",
            ),
        ] {
            let error = parse(args).validate().unwrap_err();
            assert!(error.contains(expected), "{args:?}: {error}");
        }
    }

    #[test]
    fn smtp_credentials_come_once_and_never_in_clear_over_a_network() {
        let from = ["--mail-from", "no-reply@example.com"];
        let with = |args: &[&str]| {
            let mut all = from.to_vec();
            all.extend_from_slice(args);
            parse(&all).mail_transport()
        };
        let Ok(MailTransportChoice::Smtp { credentials, .. }) = with(&[
            "--smtp-url",
            "smtps://relay.example.com",
            "--smtp-username",
            "apikey",
            "--smtp-password",
            "hunter2-secret",
        ]) else {
            panic!("SMTP with credentials from the variables");
        };
        let (user, password) = credentials.unwrap();
        assert_eq!(
            (user.as_str(), password.expose()),
            ("apikey", &b"hunter2-secret"[..])
        );
        for (args, expected) in [
            (
                &[
                    "--smtp-url",
                    "smtps://u:hunter2-secret@relay",
                    "--smtp-password",
                    "x",
                ][..],
                "give them once",
            ),
            (
                &["--smtp-url", "smtps://relay", "--smtp-username", "u"][..],
                "without SMTP_PASSWORD",
            ),
            (
                &[
                    "--smtp-url",
                    "smtps://relay",
                    "--smtp-password",
                    "hunter2-secret",
                ][..],
                "without SMTP_USERNAME",
            ),
            (
                &["--smtp-url", "smtp://u:hunter2-secret@relay.example.com"][..],
                "in clear",
            ),
            (
                &[
                    "--smtp-url",
                    "smtp://u:hunter2-secret@relay?tls=opportunistic",
                ][..],
                "in clear",
            ),
            (
                &[
                    "--smtp-url",
                    "smtp://relay",
                    "--smtp-tls-ca-file",
                    "/ca.pem",
                ][..],
                "uses no TLS",
            ),
        ] {
            let error = with(args).unwrap_err();
            assert!(error.contains(expected), "{args:?}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
        // A relay on this machine may take a password over plain SMTP.
        assert!(with(&["--smtp-url", "smtp://u:p@127.0.0.1:2525"]).is_ok());
        assert!(with(&["--smtp-url", "smtp://u:p@relay?tls=required"]).is_ok());
    }
}
