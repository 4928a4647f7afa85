//! Stores that speak TLS, for tests: certificates made at test time with
//! the `openssl` command, a `redis-server` with a TLS port, and a
//! PostgreSQL with `ssl=on` that accepts TLS connections only. Each is
//! started on a free loopback port and stopped by its process id, and its
//! directory removed, when dropped.
//!
//! Plain `std`, so that `server/tests/tls.rs` (the binary's tests) includes
//! this very file too (`#[path]`) and the unit tests and the binary's tests
//! make their certificates and servers alike.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// The PostgreSQL 15 binaries (Debian's `postgresql-15`).
const POSTGRES_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A directory of the test's own under the system's temporary one.
fn scratch(kind: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.subsec_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "slop-tls-{kind}-{}-{}-{nanos:x}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// A free loopback port (free when asked; the server takes it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Runs `program` with `args`, failing the test with its output when it
/// fails.
fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A private CA with a server certificate for 127.0.0.1 and localhost, a
/// server certificate of the same CA for another name only, a client
/// certificate (CN `postgres`, the user the tests connect as), and a
/// second, unrelated CA: PEM files in a directory removed on drop. The
/// keys are P-256 (quick to make).
pub struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    /// Makes them with `/usr/bin/openssl` (or `openssl` on PATH).
    pub fn make() -> Self {
        let certificates = Self {
            dir: scratch("certs"),
        };
        certificates.authority("ca", "slop test CA");
        certificates.authority("other-ca", "an unrelated CA");
        certificates.issue(
            "server",
            "localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
        );
        certificates.issue(
            "elsewhere",
            "db.elsewhere.example",
            "subjectAltName=DNS:db.elsewhere.example\nextendedKeyUsage=serverAuth",
        );
        certificates.issue("client", "postgres", "extendedKeyUsage=clientAuth");
        certificates
    }

    fn openssl(&self) -> Command {
        let program = if Path::new("/usr/bin/openssl").exists() {
            "/usr/bin/openssl"
        } else {
            "openssl"
        };
        let mut command = Command::new(program);
        command.current_dir(&self.dir).stdin(Stdio::null());
        command
    }

    fn authority(&self, name: &str, subject: &str) {
        run(self.openssl().args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={subject}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ]));
    }

    /// A certificate `name.pem` (and key `name.key`) for `subject`, signed
    /// by `ca`, with the extensions `extensions` (lines of an extfile).
    fn issue(&self, name: &str, subject: &str, extensions: &str) {
        run(self.openssl().args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={subject}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]));
        std::fs::write(
            self.dir.join(format!("{name}.ext")),
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}\n"
            ),
        )
        .expect("write the extensions");
        run(self.openssl().args([
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &format!("{}", 2 + name.len()),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]));
    }

    /// A file of the set: `ca.pem`, `other-ca.pem`, `server.pem`,
    /// `server.key`, `elsewhere.pem`, `elsewhere.key`, `client.pem`,
    /// `client.key`.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// [`path`](Self::path) as text, for URLs and environment variables.
    pub fn file(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }

    /// The contents of a file of the set.
    pub fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).expect("read a certificate file")
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `redis-server` listening with TLS only (`--port 0`), on a free
/// loopback port, with the certificate `server` of [`Certificates`].
pub struct TlsRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl TlsRedis {
    /// Starts one presenting `certificate` (`server` or `elsewhere`);
    /// with `client_certificates`, clients must present a certificate of
    /// the test CA (`--tls-auth-clients yes`).
    pub fn start(
        certificates: &Certificates,
        certificate: &str,
        client_certificates: bool,
    ) -> Self {
        let port = free_port();
        let dir = scratch("redis");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(certificates.path(&format!("{certificate}.pem")))
            .arg("--tls-key-file")
            .arg(certificates.path(&format!("{certificate}.key")))
            .arg("--tls-ca-cert-file")
            .arg(certificates.path("ca.pem"))
            .args([
                "--tls-auth-clients",
                if client_certificates { "yes" } else { "no" },
            ])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start redis-server ({error}): the TLS tests need Redis 7's redis-server (built with TLS) on PATH; they do not skip")
            });
        let mut redis = Self { child, port, dir };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!("redis-server exited at start ({status}): is it built with TLS?");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not listen on port {port} within 5 s");
    }

    /// `rediss://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL 15 with `ssl=on` in a temporary directory, on a free
/// loopback port, whose pg_hba.conf has `hostssl` lines only: a connection
/// without TLS is refused, which proves the others use it. Database
/// `mtls` also wants a client certificate of the test CA whose CN is the
/// user (`clientcert=verify-full`).
pub struct TlsPostgres {
    dir: PathBuf,
    port: u16,
    user: Option<(u32, u32)>,
}

impl TlsPostgres {
    /// Copies a cluster made once by initdb (kept in the temporary
    /// directory, so initdb runs once per machine rather than per test),
    /// configures TLS with `certificate` (`server` or `elsewhere`) and
    /// starts it.
    pub fn start(certificates: &Certificates, certificate: &str) -> Self {
        let user = postgres_user_if_root();
        let dir = scratch("postgres");
        let data = dir.join("data");
        run(Command::new("cp")
            .arg("-a")
            .arg(template_cluster(user))
            .arg(&data));
        for (from, to) in [
            (format!("{certificate}.pem"), "server.crt"),
            (format!("{certificate}.key"), "server.key"),
            ("ca.pem".to_owned(), "root.crt"),
        ] {
            let target = data.join(to);
            std::fs::copy(certificates.path(&from), &target).expect("copy a certificate");
            set_mode(&target, 0o600);
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl mtls all 127.0.0.1/32 trust clientcert=verify-full\n\
             hostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("write pg_hba.conf");
        chown_all(&dir, user);
        let port = free_port();
        let postgres = Self { dir, port, user };
        let options = format!(
            "-F -p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=on \
             -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c ssl_ca_file=root.crt",
            postgres.dir.display()
        );
        let log = postgres.dir.join("postgres.log");
        postgres.pg(Command::new(Path::new(POSTGRES_BIN).join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &options, "-w", "-t", "60", "start"]));
        postgres
    }

    /// `postgres://postgres:hunter2-never-shown@127.0.0.1:PORT/DATABASE?QUERY`
    /// (trust auth ignores the password, which is there to be looked for
    /// in messages).
    pub fn url(&self, database: &str, query: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{database}?{query}",
            PASSWORD, self.port
        )
    }

    fn pg(&self, command: &mut Command) {
        use std::os::unix::process::CommandExt as _;
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        command.stdin(Stdio::null());
        run(command);
    }
}

/// The password in [`TlsPostgres::url`], which no message may show.
pub const PASSWORD: &str = "hunter2-never-shown";

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let pid_file = self.dir.join("data").join("postmaster.pid");
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.lines().next().map(|line| line.trim().to_owned()))
        {
            // SIGQUIT: PostgreSQL's immediate shutdown.
            let _ = Command::new("kill").args(["-QUIT", &pid]).status();
            for _ in 0..100 {
                if !pid_file.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if pid_file.exists() {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The data directory of a fresh cluster (user `postgres`, trust, and an
/// empty database `mtls`), made by initdb the first time and then kept:
/// made in a directory of its own and renamed into place, so concurrent
/// tests never see half of one.
fn template_cluster(user: Option<(u32, u32)>) -> PathBuf {
    let initdb = Path::new(POSTGRES_BIN).join("initdb");
    assert!(
        initdb.exists(),
        "{} is missing: the TLS tests run a PostgreSQL of their own; install postgresql-15. They do not skip.",
        initdb.display()
    );
    let template = std::env::temp_dir().join("slop-tls-postgres-template-15-v2");
    if template.join("PG_VERSION").exists() {
        return template;
    }
    let dir = scratch("initdb");
    let data = dir.join("data");
    chown_all(&dir, user);
    let mut command = Command::new(initdb);
    command.arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "--auth=trust",
        "--no-sync",
        "--no-instructions",
        "-E",
        "UTF8",
        "--locale=C",
    ]);
    {
        use std::os::unix::process::CommandExt as _;
        if let Some((uid, gid)) = user {
            command.uid(uid).gid(gid);
        }
    }
    run(&mut command);
    // The database of the client-certificate tests, made here in
    // single-user mode (no server to start) so that no test waits for
    // createdb.
    let mut single = Command::new(Path::new(POSTGRES_BIN).join("postgres"));
    single
        .args(["--single", "-F", "-D"])
        .arg(&data)
        .arg("postgres")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    {
        use std::os::unix::process::CommandExt as _;
        if let Some((uid, gid)) = user {
            single.uid(uid).gid(gid);
        }
    }
    let mut child = single.spawn().expect("start postgres --single");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("its stdin");
        stdin
            .write_all(b"CREATE DATABASE mtls;\n")
            .expect("write to postgres --single");
    }
    let output = child.wait_with_output().expect("postgres --single");
    assert!(
        output.status.success(),
        "postgres --single failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Another test may have won the race: theirs is as good.
    let _ = std::fs::rename(&data, &template);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        template.join("PG_VERSION").exists(),
        "initdb made no cluster at {}",
        template.display()
    );
    template
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `dir` and everything under it owned by `user`, when there is one.
fn chown_all(dir: &Path, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(dir));
    }
}

/// PostgreSQL will not run as root: as root, run it as the `postgres` user.
fn postgres_user_if_root() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt as _;
    let uid = std::fs::metadata("/proc/self").expect("/proc/self").uid();
    if uid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let entry = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres") && fields.len() > 3)
        .expect(
            "running as root, and there is no `postgres` user to run PostgreSQL as \
             (PostgreSQL refuses root): install postgresql-15, which creates it",
        );
    Some((
        entry[2].parse().expect("postgres uid"),
        entry[3].parse().expect("postgres gid"),
    ))
}
