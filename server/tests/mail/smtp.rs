//! A real SMTP server for the tests: `smtp_server.py` (aiosmtpd) in the
//! test venv, on a free loopback port, writing each message it receives as
//! a JSON file; and a private CA with a certificate for 127.0.0.1, made
//! with the openssl CLI at test time.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

use crate::support::PATIENCE;

/// A directory of the test's own, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "slop-mail-test-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nothing listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How the SMTP server takes connections.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Plain,
    StartTls,
    Smtps,
}

/// A running aiosmtpd, killed on drop.
pub struct SmtpServer {
    out: PathBuf,
    _child: Child,
}

/// One message as the SMTP server received it.
#[derive(Debug, serde::Deserialize)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub tls: bool,
    pub login: Option<String>,
    pub headers: std::collections::HashMap<String, String>,
    pub content_type: String,
    pub charset: Option<String>,
    pub body: String,
    pub raw: String,
}

fn venv_python() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/test.sh`, which installs Python with aiosmtpd into .tools/venv",
        path.display()
    );
    path
}

impl SmtpServer {
    /// Starts it on `port`, writing into `out`; `tls` is the certificate
    /// and key; `auth` a required `user:password`.
    pub async fn start(
        port: u16,
        out: &Path,
        security: Security,
        tls: Option<&Certificates>,
        auth: Option<&str>,
    ) -> Self {
        std::fs::create_dir_all(out).unwrap();
        let mut command = Command::new(venv_python());
        command
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/mail/smtp_server.py"
            ))
            .arg("--port")
            .arg(port.to_string())
            .arg("--out")
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        match security {
            Security::Plain => {}
            Security::StartTls => {
                command.arg("--starttls");
            }
            Security::Smtps => {
                command.arg("--smtps");
            }
        }
        if let Some(tls) = tls {
            command
                .arg("--cert")
                .arg(&tls.server_cert)
                .arg("--key")
                .arg(&tls.server_key);
        }
        if let Some(auth) = auth {
            command.arg("--auth").arg(auth);
        }
        let mut child = command.spawn().expect("start the SMTP server (python)");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("the SMTP server starts in time")
            .unwrap();
        assert_eq!(
            ready.as_deref(),
            Some("ready"),
            "the SMTP server did not start (see its stderr above)"
        );
        Self {
            out: out.to_owned(),
            _child: child,
        }
    }

    /// The messages received so far.
    pub fn received(&self) -> Vec<Received> {
        let Ok(entries) = std::fs::read_dir(&self.out) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let name = path.file_name()?.to_str()?;
                (name.ends_with(".json") && !name.starts_with('.')).then_some(path)
            })
            .map(|path| serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap())
            .collect()
    }

    /// The first message, once it has arrived (within `limit`).
    pub async fn first(&self, limit: Duration) -> Received {
        tokio::time::timeout(limit, async {
            loop {
                if let Some(received) = self.received().into_iter().next() {
                    return received;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("a mail arrives at the SMTP server")
    }
}

/// A private CA and a certificate it signed for 127.0.0.1 and localhost.
pub struct Certificates {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl CLI runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Certificates {
    /// Makes them in `dir`.
    pub fn make(dir: &Path, name: &str) -> Self {
        let file = |suffix: &str| format!("{name}-{suffix}");
        let (ca_key, ca_cert) = (file("ca.key"), file("ca.pem"));
        let (key, csr, cert, ext) = (
            file("server.key"),
            file("server.csr"),
            file("server.pem"),
            file("server.ext"),
        );
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &ca_key,
                "-out",
                &ca_cert,
                "-days",
                "2",
                "-subj",
                &format!("/CN=slop test CA {name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        std::fs::write(
            dir.join(&ext),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_cert,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        Self {
            ca_cert: dir.join(ca_cert),
            server_cert: dir.join(cert),
            server_key: dir.join(key),
        }
    }
}
