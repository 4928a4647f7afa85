//! Where a message goes: an SMTP relay (lettre, rustls with ring) or a
//! directory of `.eml` files. One delivery attempt each; the queue decides
//! about retries from the failure's class.
//!
//! What a failure may say is chosen here, because a relay's reply text can
//! quote the recipient ("550 <ada@example.com>: no such user"): a failure
//! carries its class, the SMTP reply code, and for network and TLS
//! failures the underlying error (a refused connection, an unknown
//! certificate issuer), never a reply's text. lettre's own `tracing`
//! feature, which logs every line sent (the body and AUTH included), stays
//! off (see the workspace Cargo.toml).

use std::{fmt, path::PathBuf, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, CertificateStore, Tls, TlsParameters},
        extension::ClientId,
    },
};

use crate::infra::config::{MailTransportChoice, SmtpSecurity, SmtpUrl};

/// How long the relay may take to answer each step of a delivery
/// (connecting, each command).
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where mail is delivered.
pub enum Transport {
    /// An SMTP relay.
    Smtp {
        /// The transport lettre built.
        relay: Box<AsyncSmtpTransport<Tokio1Executor>>,
        /// Its URL without credentials, for logs.
        url: SmtpUrl,
    },
    /// `.eml` files in this directory.
    Directory(PathBuf),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Smtp { url, .. } => write!(f, "Smtp({url})"),
            Self::Directory(dir) => f.debug_tuple("Directory").field(dir).finish(),
        }
    }
}

/// Why one delivery attempt failed: what logs and metrics may say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The class: `connection`, `timeout`, `tls`, `deferred` (4xx),
    /// `rejected` (5xx), `protocol`, `client`, `io`.
    pub reason: &'static str,
    /// The SMTP reply code, when the relay answered.
    pub code: Option<u16>,
    /// The network, TLS or file error beneath, when there is one.
    pub detail: Option<String>,
    /// Whether another attempt may succeed.
    pub retry: bool,
}

impl Transport {
    /// The transport the configuration chose; None for none. Reads
    /// SMTP_TLS_CA_FILE. Errors name the variable, never a password.
    pub fn from_choice(choice: MailTransportChoice) -> Result<Option<Self>, String> {
        match choice {
            MailTransportChoice::None { .. } => Ok(None),
            MailTransportChoice::Directory(dir) => Ok(Some(Self::Directory(dir))),
            MailTransportChoice::Smtp {
                url,
                credentials,
                ca_file,
            } => {
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&url.host)
                        .port(url.port)
                        .timeout(Some(SMTP_TIMEOUT));
                if let Some(name) = &url.hello_name {
                    builder = builder.hello_name(ClientId::Domain(name.clone()));
                }
                if url.security.uses_tls() {
                    let mut tls = TlsParameters::builder(url.host.clone());
                    if let Some(path) = &ca_file {
                        tls = tls
                            .certificate_store(CertificateStore::None)
                            .add_root_certificate(read_ca_file(path)?);
                    }
                    let tls = tls
                        .build_rustls()
                        .map_err(|error| format!("SMTP_URL {url}: TLS settings: {error}"))?;
                    builder = builder.tls(match url.security {
                        SmtpSecurity::StartTlsRequired => Tls::Required(tls),
                        SmtpSecurity::StartTlsOpportunistic => Tls::Opportunistic(tls),
                        // Plain never gets here (`uses_tls` is false).
                        SmtpSecurity::Implicit | SmtpSecurity::Plain => Tls::Wrapper(tls),
                    });
                }
                if let Some((user, password)) = credentials {
                    let password = String::from_utf8_lossy(password.expose()).into_owned();
                    builder = builder.credentials(Credentials::new(user, password));
                }
                Ok(Some(Self::Smtp {
                    relay: Box::new(builder.build()),
                    url,
                }))
            }
        }
    }

    /// What the start-up log says of it.
    pub fn describe(&self) -> String {
        match self {
            Self::Smtp { url, .. } => url.to_string(),
            Self::Directory(dir) => format!("directory {}", dir.display()),
        }
    }

    /// One attempt to deliver `message`.
    pub async fn deliver(&self, message: &Message) -> Result<(), Failure> {
        match self {
            Self::Smtp { relay, .. } => relay
                .send(message.clone())
                .await
                .map(drop)
                .map_err(|error| classify(&error)),
            Self::Directory(dir) => {
                let dir = dir.clone();
                let text = message.formatted();
                match tokio::task::spawn_blocking(move || write_eml(&dir, &text)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(Failure {
                        reason: "io",
                        code: None,
                        detail: Some(error.to_string()),
                        retry: true,
                    }),
                    Err(error) => Err(Failure {
                        reason: "io",
                        code: None,
                        detail: Some(error.to_string()),
                        retry: true,
                    }),
                }
            }
        }
    }
}

/// The CA certificates of SMTP_TLS_CA_FILE.
fn read_ca_file(path: &std::path::Path) -> Result<Certificate, String> {
    let pem = std::fs::read(path)
        .map_err(|error| format!("SMTP_TLS_CA_FILE {}: {error}", path.display()))?;
    let count = pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .filter(|window| window == b"-----BEGIN CERTIFICATE-----")
        .count();
    if count == 0 {
        return Err(format!(
            "SMTP_TLS_CA_FILE {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        ));
    }
    Certificate::from_pem(&pem)
        .map_err(|error| format!("SMTP_TLS_CA_FILE {}: {error}", path.display()))
}

/// The class of a lettre error, and whether to try again: a permanent
/// (5xx) refusal or a client-side impossibility will not change.
fn classify(error: &lettre::transport::smtp::Error) -> Failure {
    let code = error
        .status()
        .and_then(|code| code.to_string().parse::<u16>().ok());
    let beneath = || std::error::Error::source(error).map(ToString::to_string);
    let (reason, detail, retry) = if error.is_permanent() {
        ("rejected", None, false)
    } else if error.is_transient() {
        ("deferred", None, true)
    } else if error.is_timeout() {
        ("timeout", None, true)
    } else if error.is_tls() || tls_handshake_failed(error) {
        ("tls", beneath(), true)
    } else if error.is_response() {
        ("protocol", None, true)
    } else if error.is_client() {
        ("client", None, false)
    } else {
        ("connection", beneath(), true)
    };
    Failure {
        reason,
        code,
        detail,
        retry,
    }
}

/// Whether a connection failed in the TLS handshake (an unknown issuer,
/// a name mismatch): lettre reports it as a connection error, over the
/// `InvalidData` I/O error that tokio-rustls makes of a rustls error.
fn tls_handshake_failed(error: &lettre::transport::smtp::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(error) = source {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// Writes `text` as a new `.eml` file in `dir` (created 0700 if missing),
/// readable by its owner only.
fn write_eml(dir: &std::path::Path, text: &[u8]) -> std::io::Result<()> {
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
    file.write_all(text)
}
