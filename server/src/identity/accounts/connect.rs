//! Connecting the account store: SQLite files created private, PostgreSQL
//! tried until DATABASE_TIMEOUT, and the embedded migrations applied.

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    ConnectOptions as _,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
};

use super::{AccountError, AccountStore, Pool, Profiles, means_unavailable, timed_out};
use crate::infra::observe::{Store, StoreCalls};

pub(super) static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
pub(super) static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// SQLite allows one writer at a time, so more connections only add readers.
const SQLITE_MAX_CONNECTIONS: u32 = 4;
/// Enough for a busy instance while leaving PostgreSQL's default of 100
/// connections room for several instances.
const POSTGRES_MAX_CONNECTIONS: u32 = 10;
/// The longest pause between connection attempts at start-up.
const MAX_CONNECT_PAUSE: Duration = Duration::from_millis(500);

impl AccountStore {
    /// Connects to `database_url` and brings the schema up to date, so a
    /// fresh deployment needs no separate migration step.
    ///
    /// - `sqlite:path/to/file.db`, `sqlite://path/to/file.db` (relative) or
    ///   `sqlite:///abs/path.db`: the file is created if missing (its
    ///   directory must exist), with WAL, foreign keys and a busy timeout.
    /// - `postgres://…` or `postgresql://…`, with TLS as libpq spells it:
    ///   `sslmode` (`disable`, `prefer` (the default), `require`,
    ///   `verify-ca`, `verify-full`), `sslrootcert` (a CA, PEM, trusted
    ///   besides the platform's roots), `sslcert` and `sslkey` (a client
    ///   certificate), each file readable at start-up. To put the tables
    ///   in a schema other than `public` (tests use one schema each), set the
    ///   connection's `search_path` in the URL, either as
    ///   `postgres://user@host/db?options=-c%20search_path%3Dmy_schema` (libpq
    ///   style, percent-encoded) or as
    ///   `postgres://user@host/db?options[search_path]=my_schema`. The schema
    ///   must exist; the migrations table goes into it too.
    ///
    /// `timeout` (DATABASE_TIMEOUT) bounds every later operation; and here,
    /// how long an unreachable PostgreSQL is tried before
    /// [`AccountError::Unreachable`].
    pub async fn connect(database_url: &str, timeout: Duration) -> Result<Self, AccountError> {
        let scheme = database_url
            .split_once(':')
            .map(|(scheme, _)| scheme)
            .filter(|scheme| {
                !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            })
            .ok_or_else(|| {
                AccountError::Url(
                    "no scheme; expected sqlite:, postgres:// or postgresql://".to_owned(),
                )
            })?;
        match scheme {
            "sqlite" => Self::connect_sqlite(database_url, timeout).await,
            "postgres" | "postgresql" => Self::connect_postgres(database_url, timeout).await,
            other => Err(AccountError::Url(format!(
                "unsupported scheme {other:?}; expected sqlite:, postgres:// or postgresql://"
            ))),
        }
    }

    async fn connect_sqlite(database_url: &str, timeout: Duration) -> Result<Self, AccountError> {
        let options = SqliteConnectOptions::from_str(database_url)?
            .create_if_missing(true)
            .foreign_keys(true)
            // Readers no longer block the writer, nor the writer readers.
            .journal_mode(SqliteJournalMode::Wal)
            // Concurrent writers queue for the write lock instead of
            // failing at once with SQLITE_BUSY.
            .busy_timeout(timeout);
        // SQLite's own error for this is "unable to open database file",
        // which sends operators looking at permissions.
        if let Some(directory) = options.get_filename().parent()
            && !directory.as_os_str().is_empty()
            && !directory.is_dir()
        {
            return Err(AccountError::Url(format!(
                "the directory {} of the SQLite file does not exist",
                directory.display()
            )));
        }
        if !is_in_memory(database_url) {
            create_private(options.get_filename()).map_err(|error| {
                AccountError::Url(format!(
                    "cannot create the SQLite file {}: {error}",
                    options.get_filename().display()
                ))
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(SQLITE_MAX_CONNECTIONS)
            .acquire_timeout(timeout)
            .connect_with(options)
            .await?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        Ok(Self {
            pool: Pool::Sqlite(pool),
            timeout,
            calls: Arc::new(StoreCalls::new(Store::Sqlite)),
            profiles: Profiles::uncached(),
        })
    }

    /// Fails within `timeout` when PostgreSQL cannot be reached, saying
    /// where and why, rather than starting a server that cannot serve.
    async fn connect_postgres(database_url: &str, timeout: Duration) -> Result<Self, AccountError> {
        crate::infra::tls::install_crypto_provider();
        // sqlx's reasons ("unknown value \"sometimes\" for `ssl_mode`")
        // never repeat the URL.
        let options = PgConnectOptions::from_str(database_url)
            .map_err(|error| AccountError::Url(error.to_string()))?;
        check_tls_files(database_url)?;
        let first = first_connection(&options, timeout).await.map_err(|error| {
            if let Some(cause) = tls_failure(&error) {
                AccountError::Tls {
                    at: without_password(&options),
                    cause,
                }
            } else if means_unavailable(&error) {
                AccountError::Unreachable {
                    at: without_password(&options),
                    cause: cause(&error),
                }
            } else {
                AccountError::from(error)
            }
        })?;
        let _ = sqlx::Connection::close(first).await;
        // Migrations may take long on a large table, so they run on a
        // connection of their own, without the statement timeout.
        let migrating = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(timeout)
            .connect_lazy_with(options.clone());
        let migrated = POSTGRES_MIGRATIONS.run(&migrating).await;
        migrating.close().await;
        migrated?;
        // The server gives up on a statement when we do, so a query we
        // abandoned does not go on holding locks.
        let options = options.options([("statement_timeout", format!("{}", timeout.as_millis()))]);
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_MAX_CONNECTIONS)
            .acquire_timeout(timeout)
            .connect_lazy_with(options);
        Ok(Self {
            pool: Pool::Postgres(pool),
            timeout,
            calls: Arc::new(StoreCalls::new(Store::Postgres)),
            profiles: Profiles::uncached(),
        })
    }
}

/// Whether an SQLite URL names an in-memory database (no file).
fn is_in_memory(database_url: &str) -> bool {
    database_url.contains(":memory:") || database_url.contains("mode=memory")
}

/// Creates the SQLite file empty (a valid empty database), readable and
/// writable by its owner only, unless it exists. SQLite would create it
/// 0644 less the umask, so anyone on the host could read the password
/// hashes; it gives the -wal and -shm files it makes later the database
/// file's mode, so they are private too. An existing file keeps the mode
/// its owner gave it.
fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

/// Connects to PostgreSQL, trying again while it refuses or is starting up
/// (as the pool does), for at most `timeout`; the error is the last
/// attempt's, so it can say why.
async fn first_connection(
    options: &PgConnectOptions,
    timeout: Duration,
) -> Result<PgConnection, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let error = match tokio::time::timeout(left, options.connect()).await {
            Ok(Ok(connection)) => return Ok(connection),
            Ok(Err(error)) if tls_failure(&error).is_some() => return Err(error),
            Ok(Err(error)) if means_unavailable(&error) => error,
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(timed_out(timeout)),
        };
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(error);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_CONNECT_PAUSE);
    }
}

/// Why TLS failed, when it failed in a way a retry will not mend: a
/// certificate refused either way, or TLS required of a server without it
/// (sqlx's `Error::Tls`; a handshake that fails on a certificate comes as
/// an I/O error with the rustls error inside).
fn tls_failure(error: &sqlx::Error) -> Option<String> {
    if let Some(problem) = crate::infra::tls::certificate_problem(error) {
        return Some(format!("the certificate was refused ({problem})"));
    }
    match error {
        sqlx::Error::Tls(why) => Some(why.to_string()),
        _ => None,
    }
}

/// The certificate files DATABASE_URL names (`sslrootcert`, `sslcert`,
/// `sslkey` and sqlx's other spellings of them), checked readable now:
/// sqlx reads them at each connection, and a missing one would read as
/// an unreachable database. Paths are not secret; the URL is never
/// repeated.
fn check_tls_files(database_url: &str) -> Result<(), AccountError> {
    let Ok(url) = url::Url::parse(database_url) else {
        return Ok(());
    };
    for (key, value) in url.query_pairs() {
        let named = matches!(
            &*key,
            "sslrootcert"
                | "ssl-root-cert"
                | "ssl-ca"
                | "sslcert"
                | "ssl-cert"
                | "sslkey"
                | "ssl-key"
        );
        if named && let Err(error) = std::fs::File::open(&*value) {
            return Err(AccountError::Url(format!(
                "{key} {value}: cannot read it: {error}"
            )));
        }
    }
    Ok(())
}

/// `postgres://user@host:port/database`: where the store connects, for
/// operators, without the password.
pub(super) fn without_password(options: &PgConnectOptions) -> String {
    let host = options.get_host();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    format!(
        "postgres://{}@{host}:{}/{}",
        options.get_username(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    )
}

/// Why a connection failed, in a few words: "connection refused" rather
/// than "error communicating with database: Connection refused (os error
/// 111)".
pub(super) fn cause(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Io(error) if error.raw_os_error().is_some() => error.kind().to_string(),
        sqlx::Error::Io(error) => error.to_string(),
        sqlx::Error::Tls(error) => format!("TLS: {error}"),
        sqlx::Error::Database(error) => error.message().to_owned(),
        other => other.to_string(),
    }
}
