//! TLS to the stores (Redis and PostgreSQL): the one crypto provider, the
//! certificates REDIS_TLS_* name, and how a refused certificate is told
//! apart from an outage.
//!
//! Both clients (redis-rs and sqlx) speak TLS through rustls, with the
//! `ring` provider (no aws-lc-rs, no OpenSSL), trusting the platform's
//! root certificates unless told of a private CA. A certificate that is
//! refused is a configuration error, not an outage: start-up stops and says
//! which variable to look at, instead of retrying or waiting for readiness.

use std::path::{Path, PathBuf};

use super::redis_topology::Topology;

/// Makes rustls's `ring` provider the process default, once; later calls
/// (and tests, each of which starts a server) change nothing. Both store
/// clients build their TLS configurations on the process default when
/// they do not name a provider themselves.
pub fn install_crypto_provider() {
    // An Err means a provider is installed already: ring, by an earlier
    // call, since nothing in the tree brings another.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The certificates of TLS to Redis (`rediss://`): a private CA and a
/// client certificate for mutual TLS, each read from its file at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTlsFiles {
    /// REDIS_TLS_CA_FILE: the CA (PEM) that signed Redis's certificate,
    /// trusted instead of the platform's roots.
    pub ca: Option<PathBuf>,
    /// REDIS_TLS_CERT_FILE: this server's client certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// REDIS_TLS_KEY_FILE: the client certificate's private key (PEM).
    pub key: Option<PathBuf>,
}

impl RedisTlsFiles {
    /// Whether any file is named, so the platform's roots alone do not do.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// Reads the files into what redis-rs takes; the error names the
    /// variable and the file, never the file's contents.
    pub fn load(&self) -> Result<redis::TlsCertificates, String> {
        let client_tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read_pem("REDIS_TLS_CERT_FILE", cert, "CERTIFICATE")?,
                client_key: read_pem("REDIS_TLS_KEY_FILE", key, "PRIVATE KEY")?,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err("REDIS_TLS_CERT_FILE is set without REDIS_TLS_KEY_FILE: a client certificate needs its key".into());
            }
            (None, Some(_)) => {
                return Err("REDIS_TLS_KEY_FILE is set without REDIS_TLS_CERT_FILE: a client key needs its certificate".into());
            }
        };
        let root_cert = self
            .ca
            .as_deref()
            .map(|ca| read_pem("REDIS_TLS_CA_FILE", ca, "CERTIFICATE"))
            .transpose()?;
        Ok(redis::TlsCertificates {
            client_tls,
            root_cert,
        })
    }
}

/// The PEM file `path` that `variable` names, checked to hold a block
/// whose label ends with `label` (`CERTIFICATE`, or `PRIVATE KEY`, which
/// covers PKCS#8, SEC1 and PKCS#1 keys).
fn read_pem(variable: &str, path: &Path, label: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path)
        .map_err(|error| format!("{variable} {}: cannot read it: {error}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let holds_label = text.lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|found| found.ends_with(label))
    });
    if holds_label {
        Ok(bytes)
    } else {
        Err(format!(
            "{variable} {}: not a PEM file with a {label} in it",
            path.display()
        ))
    }
}

/// When `error`, or an error it wraps, says that TLS failed over a
/// certificate (the server's was refused, or the server refused ours, or
/// wanted one and got none): why, in rustls's words. `None` for everything
/// else, an outage included.
pub fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    find_tls_error(error)
        .filter(|tls| is_about_certificates(tls))
        .map(ToString::to_string)
}

/// The rustls error in `error`'s chain. Two wrappers hide it from
/// `source()`: `io::Error` (its `source` is the wrapped error's source, not
/// the wrapped error) and redis-rs's `Arc<dyn Error>` (likewise), so both
/// are opened by hand.
fn find_tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        && let Some(tls) = find_tls_error(inner)
    {
        return Some(tls);
    }
    if let Some(shared) = error.downcast_ref::<Shared>()
        && let Some(tls) = find_tls_error(&**shared)
    {
        return Some(tls);
    }
    error.source().and_then(find_tls_error)
}

fn is_about_certificates(error: &rustls::Error) -> bool {
    use rustls::AlertDescription as Alert;
    match error {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::InvalidCertRevocationList(_) => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnknownCA
                | Alert::CertificateRequired
        ),
        _ => false,
    }
}

/// What production should be told about stores reached without verified
/// TLS across the network: `redis://` in REDIS_URL or REDIS_CLUSTER_NODES
/// to a host other than this one, `redis://` in REDIS_SENTINELS (whatever
/// the Sentinels' hosts: the primary they name is another, and its
/// connections share their scheme), or a PostgreSQL DATABASE_URL whose
/// sslmode (`prefer` by default) does not verify the server, to a host
/// other than this one. Warnings, not refusals: a store
/// on a private network the operator trusts is a choice to make, but not
/// one to make unknowingly. One line each, naming the variable; never the
/// URL.
pub fn plaintext_store_warnings(redis: Option<&Topology>, database_url: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    let sentinel = matches!(redis, Some(Topology::Sentinel { .. }));
    let plain_remote = |url: &String| {
        redis::parse_redis_url(url).is_some_and(|url| {
            matches!(url.scheme(), "redis" | "valkey") && (sentinel || !is_loopback(url.host_str()))
        })
    };
    if let Some(topology) = redis
        && topology.urls().iter().any(plain_remote)
    {
        let variable = topology.variable();
        warnings.push(format!(
            "{variable} is redis:// (no TLS) to another host: sessions and the tokens that find them cross the network in clear; use rediss:// (REDIS_TLS_CA_FILE for a private CA)"
        ));
    }
    if database_url.starts_with("postgres")
        && let Ok(options) =
            <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(database_url)
        && options.get_socket().is_none()
        && !is_loopback(Some(options.get_host()))
    {
        use sqlx::postgres::PgSslMode;
        let mode = match options.get_ssl_mode() {
            PgSslMode::Disable => Some("disable"),
            PgSslMode::Allow => Some("allow"),
            PgSslMode::Prefer => Some("prefer (the default)"),
            PgSslMode::Require => Some("require"),
            PgSslMode::VerifyCa | PgSslMode::VerifyFull => None,
        };
        if let Some(mode) = mode {
            warnings.push(format!(
                "DATABASE_URL has sslmode={mode}, which does not verify the PostgreSQL server (and below require may not encrypt at all): password hashes cross the network unprotected; use sslmode=verify-full (sslrootcert= for a private CA)"
            ));
        }
    }
    warnings
}

/// Whether `host` is this machine (or absent).
fn is_loopback(host: Option<&str>) -> bool {
    let Some(host) = host else {
        return true;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What the tests of TLS share (tests only).
#[cfg(test)]
#[path = "tls_testing.rs"]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::{
        clock::ManualClock,
        redis_context::{RedisContext, testing::TlsRedisGuard},
    };

    /// Mutual TLS to a real Redis: with the test CA and the client
    /// certificate a PING answers; an unrelated CA, or no client
    /// certificate, is a certificate problem; nobody listening is not (it
    /// is an outage, which readiness waits out).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_certificates_refused_either_way_are_told_from_an_outage() {
        let guard = TlsRedisGuard::start();
        let clock = ManualClock::starting_now();
        let good = guard.context(clock.clone());
        assert_eq!(good.certificate_problem().await, None);
        good.ping().await.expect("PING over mutual TLS");

        let mut wrong_ca = guard.client_certificates();
        wrong_ca.root_cert = Some(guard.certificates.read("other-ca.pem"));
        let context = RedisContext::connect_with_tls(
            &guard.redis.url(),
            Some(&wrong_ca),
            "p:",
            clock.clone(),
        )
        .unwrap();
        let problem = context
            .certificate_problem()
            .await
            .expect("an unrelated CA");
        assert!(problem.contains("certificate"), "{problem}");

        let mut no_client = guard.client_certificates();
        no_client.client_tls = None;
        let context = RedisContext::connect_with_tls(
            &guard.redis.url(),
            Some(&no_client),
            "p:",
            clock.clone(),
        )
        .unwrap();
        let problem = context
            .certificate_problem()
            .await
            .expect("Redis wants a client certificate");
        assert!(problem.to_lowercase().contains("certificate"), "{problem}");

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let nobody = RedisContext::connect_with_tls(
            &format!("rediss://127.0.0.1:{port}"),
            Some(&guard.client_certificates()),
            "p:",
            clock,
        )
        .unwrap();
        assert_eq!(nobody.certificate_problem().await, None);
    }

    #[test]
    fn production_hears_of_stores_reached_without_verified_tls() {
        let standalone = |url: &str| Topology::Standalone(url.to_owned());
        let local = plaintext_store_warnings(
            Some(&standalone("redis://127.0.0.1:6379")),
            "postgres://slop:pw@localhost/db",
        );
        assert!(local.is_empty(), "{local:?}");
        let verified = plaintext_store_warnings(
            Some(&standalone("rediss://redis.example:6380")),
            "postgres://slop:pw@db.example/db?sslmode=verify-full",
        );
        assert!(verified.is_empty(), "{verified:?}");
        assert!(plaintext_store_warnings(None, "sqlite:slop.db").is_empty());

        let plain = plaintext_store_warnings(
            Some(&standalone("redis://:hunter2@redis.example:6379")),
            "postgres://slop:hunter2@db.example/db",
        );
        assert_eq!(plain.len(), 2, "{plain:?}");
        assert!(plain[0].starts_with("REDIS_URL") && plain[0].contains("rediss://"));
        assert!(plain[1].starts_with("DATABASE_URL") && plain[1].contains("prefer"));
        assert!(plain.iter().all(|line| !line.contains("hunter2")));
        let require = plaintext_store_warnings(None, "postgres://slop@10.0.0.5/db?sslmode=require");
        assert!(require[0].contains("sslmode=require"), "{require:?}");
        let cluster = Topology::Cluster(vec![
            "redis://127.0.0.1:7000".into(),
            "redis://:hunter2@10.0.0.7:7000".into(),
        ]);
        let plain = plaintext_store_warnings(Some(&cluster), "sqlite:slop.db");
        assert!(plain[0].starts_with("REDIS_CLUSTER_NODES"), "{plain:?}");
        assert!(!plain[0].contains("hunter2"));
        let sentinel = |url: &str| Topology::Sentinel {
            sentinels: vec![url.into()],
            master: "mymaster".into(),
            password: None,
        };
        let plain = plaintext_store_warnings(
            Some(&sentinel("redis://:hunter2@10.0.0.8:26379")),
            "sqlite:slop.db",
        );
        assert!(plain[0].starts_with("REDIS_SENTINELS"), "{plain:?}");
        assert!(!plain[0].contains("hunter2"));
        // Sentinels beside the server still name a primary elsewhere.
        let local =
            plaintext_store_warnings(Some(&sentinel("redis://localhost:26380")), "sqlite:slop.db");
        assert!(local[0].starts_with("REDIS_SENTINELS"), "{local:?}");
        let verified =
            plaintext_store_warnings(Some(&sentinel("rediss://10.0.0.8:26380")), "sqlite:slop.db");
        assert!(verified.is_empty(), "{verified:?}");
    }

    #[test]
    fn a_refused_certificate_is_found_inside_an_io_error() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let found = certificate_problem(&io).expect("a certificate problem");
        assert!(found.contains("certificate"), "{found}");
    }

    #[test]
    fn an_outage_is_not_a_certificate_problem() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(certificate_problem(&io), None);
        let other = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::HandshakeNotComplete,
        );
        assert_eq!(certificate_problem(&other), None);
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_files_must_hold_pem() {
        let half = RedisTlsFiles {
            cert: Some("/nonexistent/client.pem".into()),
            ..RedisTlsFiles::default()
        };
        let why = half.load().unwrap_err();
        assert!(why.contains("REDIS_TLS_KEY_FILE"), "{why}");

        let dir = std::env::temp_dir().join(format!("slop-tls-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let files = RedisTlsFiles {
            ca: Some(not_pem),
            ..RedisTlsFiles::default()
        };
        let why = files.load().unwrap_err();
        assert!(
            why.starts_with("REDIS_TLS_CA_FILE") && why.contains("not a PEM file"),
            "{why}"
        );
        let missing = RedisTlsFiles {
            ca: Some(dir.join("missing.pem")),
            ..RedisTlsFiles::default()
        };
        let why = missing.load().unwrap_err();
        assert!(why.contains("cannot read"), "{why}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
