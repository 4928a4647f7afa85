//! The account store: accounts and password-reset tokens in SQL.
//!
//! SQLite is the embedded default, so a single binary runs with no database
//! server; PostgreSQL is for deployments that run several instances. The
//! backends are a closed enum rather than a trait object or sqlx's `Any`
//! driver: each method is one `match` over two concrete pools, so the
//! compiler checks every query's types against both drivers, and adding a
//! backend is a compile error at every place that must handle it.
//!
//! Both backends run the same statement text: ids are UUID v4 strings
//! (`TEXT`), times are unix milliseconds (`BIGINT`), and placeholders are
//! `$1`-style, which sqlx binds by number on SQLite too. Only the migrations
//! are per backend (`migrations/sqlite`, `migrations/postgres`), embedded in
//! the binary and applied at [`AccountStore::connect`].
//!
//! Every operation is bounded by DATABASE_TIMEOUT, waiting for a connection
//! included, so a database that is down or hangs costs a request that long
//! at most. Errors that mean "the database is not there right now" become
//! [`AccountError::Unavailable`] (UNAVAILABLE / 503, worth a retry); the
//! others stay [`AccountError::Database`] (INTERNAL / 500, a bug to fix).

use std::{future::Future, str::FromStr, time::Duration, time::SystemTime};

use sqlx::{
    ConnectOptions as _,
    error::DatabaseError as _,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgConnection, PgDatabaseError, PgPool, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteError, SqliteJournalMode, SqlitePool, SqlitePoolOptions},
};
use uuid::Uuid;

use crate::infra::clock::{from_millis, to_millis};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// SQLite allows one writer at a time, so more connections only add readers.
const SQLITE_MAX_CONNECTIONS: u32 = 4;
/// Enough for a busy instance while leaving PostgreSQL's default of 100
/// connections room for several instances.
const POSTGRES_MAX_CONNECTIONS: u32 = 10;
/// The longest pause between connection attempts at start-up.
const MAX_CONNECT_PAUSE: Duration = Duration::from_millis(500);

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// A UUID v4 string: random, so ids reveal neither order nor count.
    pub id: String,
    /// Normalised by the caller (trimmed, lower-cased); unique.
    pub email: String,
    /// As the user chose it; not unique.
    pub display_name: String,
    /// A PHC string, so parameters can be raised and old hashes upgraded.
    pub password_hash: String,
    /// Whole milliseconds, as stored.
    pub created_at: SystemTime,
    /// Whole milliseconds, as stored; moves on every change.
    pub updated_at: SystemTime,
}

/// What registration stores.
#[derive(Clone, Copy)]
pub struct NewAccount<'a> {
    /// Already normalised: the unique index compares bytes.
    pub email: &'a str,
    /// As the user chose it.
    pub display_name: &'a str,
    /// The PHC string; the password itself never reaches the store.
    pub password_hash: &'a str,
}

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The email is registered already; the caller decides how much of that
    /// to reveal.
    #[error("an account with this email exists")]
    EmailTaken,
    /// The database could not be reached, went away, is starting or
    /// shutting down, or did not answer within DATABASE_TIMEOUT: the
    /// operation may work if retried shortly.
    #[error("the account database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// At start-up, the database DATABASE_URL names could not be reached
    /// within DATABASE_TIMEOUT. `at` is the URL without its password.
    #[error(
        "cannot reach the account database at {at}: {cause}; start PostgreSQL or fix DATABASE_URL"
    )]
    Unreachable {
        /// `postgres://user@host:port/database`, never the password.
        at: String,
        /// Why, in a few words: "connection refused", "no answer within 3s".
        cause: String,
    },
    /// The database answered with an error that a retry will not fix.
    #[error("account database: {0}")]
    Database(#[source] sqlx::Error),
    /// The schema could not be brought up to date at connect.
    #[error("account database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// DATABASE_URL cannot be used: no supported scheme, or a SQLite file
    /// in a directory that does not exist. The message never repeats the
    /// URL, which may hold a password.
    #[error("DATABASE_URL: {0}")]
    Url(String),
}

impl From<sqlx::Error> for AccountError {
    fn from(error: sqlx::Error) -> Self {
        if means_unavailable(&error) {
            Self::Unavailable(error)
        } else {
            Self::Database(error)
        }
    }
}

/// Whether `error` says the database is not there right now (rather than
/// that the statement or the data is wrong).
fn means_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(error) => {
            if let Some(error) = error.try_downcast_ref::<PgDatabaseError>() {
                let code = error.code();
                // 08: connection exceptions. 57P01-57P03: shutting down,
                // crashed, starting up; 57P05: idle session timeout; 57014:
                // cancelled (our statement_timeout). 53300: too many
                // connections. 25006: read-only, a standby during failover.
                code.starts_with("08")
                    || matches!(
                        code,
                        "57P01" | "57P02" | "57P03" | "57P05" | "57014" | "53300" | "25006"
                    )
            } else if let Some(error) = error.try_downcast_ref::<SqliteError>() {
                // SQLITE_BUSY and SQLITE_LOCKED (any extended code): the
                // write lock was not had within the busy timeout.
                let code = error.code().and_then(|code| code.parse::<i32>().ok());
                code.is_some_and(|code| matches!(code & 0xff, 5 | 6))
            } else {
                false
            }
        }
        _ => false,
    }
}

/// What an operation that did not finish within `timeout` failed with.
fn timed_out(timeout: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "no answer within {}",
            crate::infra::config::humanize(timeout)
        ),
    ))
}

/// The account store, over whichever backend DATABASE_URL names. Cloning is
/// cheap and shares the pool.
#[derive(Debug, Clone)]
pub struct AccountStore {
    pool: Pool,
    /// DATABASE_TIMEOUT: the most one operation may take.
    timeout: Duration,
}

/// The backends.
#[derive(Debug, Clone)]
enum Pool {
    /// The embedded default: one file, no server.
    Sqlite(SqlitePool),
    /// For deployments with several instances.
    Postgres(PgPool),
}

/// Evaluates `$body` with `$pool` bound to the store's pool. The body is
/// written once and compiled once per backend, which is how the same
/// statement text runs on both.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// A row of `accounts`, before the times become `SystemTime`s.
#[derive(sqlx::FromRow)]
struct AccountRow {
    id: String,
    email: String,
    display_name: String,
    password_hash: String,
    created_at: i64,
    updated_at: i64,
}

impl From<AccountRow> for Account {
    fn from(row: AccountRow) -> Self {
        Self {
            id: row.id,
            email: row.email,
            display_name: row.display_name,
            password_hash: row.password_hash,
            created_at: from_millis(row.created_at),
            updated_at: from_millis(row.updated_at),
        }
    }
}

impl AccountStore {
    /// Connects to `database_url` and brings the schema up to date, so a
    /// fresh deployment needs no separate migration step.
    ///
    /// - `sqlite:path/to/file.db`, `sqlite://path/to/file.db` (relative) or
    ///   `sqlite:///abs/path.db`: the file is created if missing (its
    ///   directory must exist), with WAL, foreign keys and a busy timeout.
    /// - `postgres://…` or `postgresql://…`. To put the tables in a schema
    ///   other than `public` (tests use one schema each), set the
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
        })
    }

    /// Fails within `timeout` when PostgreSQL cannot be reached, saying
    /// where and why, rather than starting a server that cannot serve.
    async fn connect_postgres(database_url: &str, timeout: Duration) -> Result<Self, AccountError> {
        let options = PgConnectOptions::from_str(database_url)?;
        let first = first_connection(&options, timeout).await.map_err(|error| {
            if means_unavailable(&error) {
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
        })
    }

    /// Runs one operation within DATABASE_TIMEOUT: a database that does not
    /// answer in time is unavailable, like one that refuses.
    async fn bounded<T>(
        &self,
        operation: impl Future<Output = Result<T, AccountError>>,
    ) -> Result<T, AccountError> {
        tokio::time::timeout(self.timeout, operation)
            .await
            .unwrap_or_else(|_| Err(AccountError::Unavailable(timed_out(self.timeout))))
    }

    /// Cheap round trip for readiness (`SELECT 1`): proves a connection can
    /// be had and the server answers, without touching the tables.
    pub async fn ping(&self) -> Result<(), AccountError> {
        self.bounded(async {
            on_pool!(self, |pool| {
                sqlx::query("SELECT 1").execute(pool).await.map(drop)
            })
            .map_err(AccountError::from)
        })
        .await
    }

    /// "sqlite" or "postgres", for health reports.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Closes the pool, waiting for connections in use to be returned, so a
    /// shutdown leaves SQLite's WAL checkpointed and PostgreSQL's backends
    /// ended.
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await);
    }

    /// Creates an account with a fresh UUID id; the email must already be
    /// normalised (the caller trims and lower-cases).
    ///
    /// A duplicate email is [`AccountError::EmailTaken`], told by the unique
    /// index's violation rather than a look-up first, so two concurrent
    /// registrations cannot both pass. (The only other unique column is the
    /// id, 122 random bits, whose collision is not a case to handle.) The
    /// returned times are `now` cut to whole milliseconds, as stored, so the
    /// account equals what a later read returns.
    pub async fn create(
        &self,
        new: NewAccount<'_>,
        now: SystemTime,
    ) -> Result<Account, AccountError> {
        let millis = to_millis(now);
        let account = Account {
            id: Uuid::new_v4().to_string(),
            email: new.email.to_owned(),
            display_name: new.display_name.to_owned(),
            password_hash: new.password_hash.to_owned(),
            created_at: from_millis(millis),
            updated_at: from_millis(millis),
        };
        self.bounded(async {
            on_pool!(self, |pool| {
                sqlx::query(
                    "INSERT INTO accounts \
                     (id, email, display_name, password_hash, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5)",
                )
                .bind(account.id.as_str())
                .bind(account.email.as_str())
                .bind(account.display_name.as_str())
                .bind(account.password_hash.as_str())
                .bind(millis)
                .execute(pool)
                .await
                .map(drop)
            })
            .map_err(|error| match error {
                sqlx::Error::Database(error) if error.is_unique_violation() => {
                    AccountError::EmailTaken
                }
                error => error.into(),
            })
        })
        .await?;
        Ok(account)
    }

    /// The account registered with `email` (already normalised), for login
    /// and password-reset requests.
    pub async fn by_email(&self, email: &str) -> Result<Option<Account>, AccountError> {
        let row = self
            .bounded(async {
                on_pool!(self, |pool| {
                    sqlx::query_as::<_, AccountRow>(
                        "SELECT id, email, display_name, password_hash, created_at, updated_at \
                         FROM accounts WHERE email = $1",
                    )
                    .bind(email)
                    .fetch_optional(pool)
                    .await
                })
                .map_err(AccountError::from)
            })
            .await?;
        Ok(row.map(Account::from))
    }

    /// The account `id` names, for authenticated requests.
    pub async fn by_id(&self, id: &str) -> Result<Option<Account>, AccountError> {
        let row = self
            .bounded(async {
                on_pool!(self, |pool| {
                    sqlx::query_as::<_, AccountRow>(
                        "SELECT id, email, display_name, password_hash, created_at, updated_at \
                         FROM accounts WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                })
                .map_err(AccountError::from)
            })
            .await?;
        Ok(row.map(Account::from))
    }

    /// Returns the updated account, None if no such id; one statement, so
    /// the caller gets the row as written, not as a second read finds it.
    pub async fn set_display_name(
        &self,
        id: &str,
        display_name: &str,
        now: SystemTime,
    ) -> Result<Option<Account>, AccountError> {
        let row = self
            .bounded(async {
                on_pool!(self, |pool| {
                    sqlx::query_as::<_, AccountRow>(
                        "UPDATE accounts SET display_name = $1, updated_at = $2 WHERE id = $3 \
                         RETURNING id, email, display_name, password_hash, created_at, updated_at",
                    )
                    .bind(display_name)
                    .bind(to_millis(now))
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                })
                .map_err(AccountError::from)
            })
            .await?;
        Ok(row.map(Account::from))
    }

    /// Returns whether the account existed.
    ///
    /// In the same transaction every unused reset token of the account is
    /// invalidated: a reset link mailed before the change must not undo it
    /// (for example one requested by someone who has since lost access to
    /// the mailbox, or one the user asked for before remembering).
    pub async fn set_password_hash(
        &self,
        id: &str,
        password_hash: &str,
        now: SystemTime,
    ) -> Result<bool, AccountError> {
        let millis = to_millis(now);
        self.bounded(async {
            on_pool!(self, |pool| {
                let mut tx = pool.begin().await?;
                let existed = sqlx::query(
                    "UPDATE accounts SET password_hash = $1, updated_at = $2 WHERE id = $3",
                )
                .bind(password_hash)
                .bind(millis)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if existed {
                    sqlx::query(
                        "UPDATE password_reset_tokens SET used_at = $1 \
                         WHERE account_id = $2 AND used_at IS NULL",
                    )
                    .bind(millis)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok::<_, AccountError>(existed)
            })
        })
        .await
    }

    /// Stores a password-reset token by its hash (the caller hashes; the
    /// plaintext never reaches the database, so a leaked backup cannot
    /// reset passwords). Fails with a database error if the account does
    /// not exist (foreign key).
    pub async fn create_reset_token(
        &self,
        token_hash: &str,
        account_id: &str,
        expires_at: SystemTime,
        now: SystemTime,
    ) -> Result<(), AccountError> {
        self.bounded(async {
            on_pool!(self, |pool| {
                sqlx::query(
                    "INSERT INTO password_reset_tokens \
                     (token_hash, account_id, expires_at, used_at, created_at) \
                     VALUES ($1, $2, $3, NULL, $4)",
                )
                .bind(token_hash)
                .bind(account_id)
                .bind(to_millis(expires_at))
                .bind(to_millis(now))
                .execute(pool)
                .await
                .map(drop)
            })
            .map_err(AccountError::from)
        })
        .await?;
        Ok(())
    }

    /// The account id of a reset token that exists, is unused and has not
    /// expired at `now`, without using it up: the caller checks the new
    /// password against the account before [`Self::consume_reset_token`].
    pub async fn reset_token_account(
        &self,
        token_hash: &str,
        now: SystemTime,
    ) -> Result<Option<String>, AccountError> {
        self.bounded(async {
            on_pool!(self, |pool| {
                sqlx::query_scalar::<_, String>(
                    "SELECT account_id FROM password_reset_tokens \
                     WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
                )
                .bind(token_hash)
                .bind(to_millis(now))
                .fetch_optional(pool)
                .await
            })
            .map_err(AccountError::from)
        })
        .await
    }

    /// Marks the token used and returns its account id, if it exists, is
    /// unused and has not expired at `now` (expiry is exclusive: at
    /// `expires_at` it is refused). Single use: a second call, or a
    /// concurrent one, returns None, because the check and the mark are one
    /// `UPDATE ... WHERE used_at IS NULL ... RETURNING`, which the database
    /// serialises on the row.
    ///
    /// In the same transaction every other unused token of the account is
    /// invalidated, so older reset links die with the one that was used.
    pub async fn consume_reset_token(
        &self,
        token_hash: &str,
        now: SystemTime,
    ) -> Result<Option<String>, AccountError> {
        let millis = to_millis(now);
        self.bounded(async {
            on_pool!(self, |pool| {
                let mut tx = pool.begin().await?;
                let account_id: Option<String> = sqlx::query_scalar(
                    "UPDATE password_reset_tokens SET used_at = $1 \
                     WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 \
                     RETURNING account_id",
                )
                .bind(millis)
                .bind(token_hash)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(account_id) = &account_id {
                    sqlx::query(
                        "UPDATE password_reset_tokens SET used_at = $1 \
                         WHERE account_id = $2 AND used_at IS NULL",
                    )
                    .bind(millis)
                    .bind(account_id.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok::<_, AccountError>(account_id)
            })
        })
        .await
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

/// `postgres://user@host:port/database`: where the store connects, for
/// operators, without the password.
fn without_password(options: &PgConnectOptions) -> String {
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
fn cause(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Io(error) if error.raw_os_error().is_some() => error.kind().to_string(),
        sqlx::Error::Io(error) => error.to_string(),
        sqlx::Error::Tls(error) => format!("TLS: {error}"),
        sqlx::Error::Database(error) => error.message().to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    //! One conformance suite, run against both backends. Every test gets a
    //! database of its own (a temp file, or a PostgreSQL schema), so tests
    //! run in parallel and never see each other's rows.

    use std::{future::Future, path::PathBuf, time::Duration};

    use sqlx::{Connection, PgConnection};

    use super::*;
    use crate::infra::clock::{Clock, ManualClock};

    const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
    /// DATABASE_TIMEOUT of the stores under test.
    const TIMEOUT: Duration = Duration::from_secs(3);

    /// What a conformance test gets: the store, and the URL it came from for
    /// tests that connect again.
    struct TestDatabase {
        url: String,
        store: AccountStore,
    }

    /// Runs `test` with the store on a new SQLite file, then removes it.
    async fn on_sqlite<F, Fut>(test: F)
    where
        F: FnOnce(TestDatabase) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let path = temp_sqlite_path();
        let url = format!("sqlite:{}", path.display());
        let store = AccountStore::connect(&url, TIMEOUT)
            .await
            .expect("connect to SQLite");
        // The test runs in a task of its own so that a failing assertion
        // still lets the database be cleaned up.
        let outcome = tokio::spawn(test(TestDatabase {
            url,
            store: store.clone(),
        }))
        .await;
        store.close().await;
        remove_sqlite_files(&path);
        if let Err(error) = outcome {
            std::panic::resume_unwind(error.into_panic());
        }
    }

    fn temp_sqlite_path() -> PathBuf {
        std::env::temp_dir().join(format!("slop-accounts-{}.db", Uuid::new_v4().simple()))
    }

    fn remove_sqlite_files(path: &std::path::Path) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }

    fn test_database_url() -> String {
        std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned())
    }

    /// A connection outside any test schema, to create and drop them. Fails
    /// the test, never skips it, when PostgreSQL is down.
    async fn postgres_admin() -> PgConnection {
        let url = test_database_url();
        PgConnection::connect(&url).await.unwrap_or_else(|error| {
            let at = if std::env::var_os("TEST_DATABASE_URL").is_some() {
                "TEST_DATABASE_URL".to_owned()
            } else {
                DEFAULT_TEST_DATABASE_URL.to_owned()
            };
            panic!(
                "PostgreSQL is not reachable at {at}: {error}. Start PostgreSQL \
                 (`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`) \
                 or set TEST_DATABASE_URL; these tests do not skip."
            )
        })
    }

    /// `base` with the connection's search_path set to `schema`, in the
    /// libpq `options` form that [`AccountStore::connect`] documents.
    fn with_search_path(base: &str, schema: &str) -> String {
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}options=-c%20search_path%3D{schema}")
    }

    /// Runs `test` with the store in a new PostgreSQL schema, then drops it.
    async fn on_postgres<F, Fut>(test: F)
    where
        F: FnOnce(TestDatabase) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut admin = postgres_admin().await;
        let schema = format!("t_{}", Uuid::new_v4().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .expect("create the test schema");
        let url = with_search_path(&test_database_url(), &schema);
        let store = AccountStore::connect(&url, TIMEOUT).await;
        let outcome = match store {
            Ok(store) => {
                let outcome = tokio::spawn(test(TestDatabase {
                    url,
                    store: store.clone(),
                }))
                .await;
                store.close().await;
                outcome.map_err(|error| error.into_panic())
            }
            Err(error) => Err(Box::new(format!("connect to the test schema: {error}"))
                as Box<dyn std::any::Any + Send>),
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut admin)
            .await
            .expect("drop the test schema");
        let _ = admin.close().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    // Each conformance test once per backend:
    // `accounts::tests::sqlite_backend::NAME` and
    // `accounts::tests::postgres_backend::NAME`.
    crate::infra::conformance::backend_conformance! {
        backends: [sqlite_backend => on_sqlite, postgres_backend => on_postgres],
        cases: [
            create_and_read_back,
            a_duplicate_email_is_taken,
            concurrent_creates_of_one_email_have_one_winner,
            updates_move_updated_at_and_miss_unknown_ids,
            a_reset_token_is_single_use,
            concurrent_consumes_of_one_token_have_one_winner,
            an_expired_reset_token_is_refused,
            consuming_a_token_invalidates_the_accounts_other_tokens,
            a_password_change_invalidates_reset_tokens,
            a_reset_token_needs_an_existing_account,
            migrations_are_idempotent,
        ],
    }

    fn new_account(email: &str) -> NewAccount<'_> {
        NewAccount {
            email,
            display_name: "Ada",
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        }
    }

    async fn create_and_read_back(db: TestDatabase) {
        let store = db.store;
        store.ping().await.expect("ping");
        let clock = ManualClock::starting_now();
        let created = store
            .create(new_account("ada@example.com"), clock.now())
            .await
            .expect("create");
        let id = Uuid::parse_str(&created.id).expect("the id is a UUID");
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(created.email, "ada@example.com");
        assert_eq!(created.display_name, "Ada");
        assert_eq!(created.created_at, clock.now());
        assert_eq!(created.updated_at, clock.now());

        let by_email = store.by_email("ada@example.com").await.expect("by_email");
        assert_eq!(by_email.as_ref(), Some(&created));
        let by_id = store.by_id(&created.id).await.expect("by_id");
        assert_eq!(by_id.as_ref(), Some(&created));

        assert_eq!(
            store.by_email("bob@example.com").await.expect("by_email"),
            None
        );
        assert_eq!(
            store
                .by_id(&Uuid::new_v4().to_string())
                .await
                .expect("by_id"),
            None
        );
    }

    async fn a_duplicate_email_is_taken(db: TestDatabase) {
        let store = db.store;
        let now = SystemTime::now();
        let first = store
            .create(new_account("ada@example.com"), now)
            .await
            .expect("create");
        let second = NewAccount {
            display_name: "Impostor",
            ..new_account("ada@example.com")
        };
        let error = store
            .create(second, now)
            .await
            .expect_err("a second account");
        assert!(matches!(error, AccountError::EmailTaken), "{error:?}");
        let stored = store.by_email("ada@example.com").await.expect("by_email");
        assert_eq!(stored, Some(first));
    }

    async fn concurrent_creates_of_one_email_have_one_winner(db: TestDatabase) {
        let now = SystemTime::now();
        let attempts: Vec<_> = (0..8)
            .map(|_| {
                let store = db.store.clone();
                tokio::spawn(
                    async move { store.create(new_account("race@example.com"), now).await },
                )
            })
            .collect();
        let mut winners = Vec::new();
        for attempt in attempts {
            match attempt.await.expect("task") {
                Ok(account) => winners.push(account),
                Err(AccountError::EmailTaken) => {}
                Err(error) => panic!("unexpected error: {error:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one create wins");
        let stored = db
            .store
            .by_email("race@example.com")
            .await
            .expect("by_email");
        assert_eq!(stored.as_ref(), winners.first());
    }

    async fn updates_move_updated_at_and_miss_unknown_ids(db: TestDatabase) {
        let store = db.store;
        let clock = ManualClock::starting_now();
        let created = store
            .create(new_account("ada@example.com"), clock.now())
            .await
            .expect("create");

        clock.advance(Duration::from_secs(1));
        let renamed = store
            .set_display_name(&created.id, "Countess", clock.now())
            .await
            .expect("set_display_name")
            .expect("the account exists");
        assert_eq!(renamed.display_name, "Countess");
        assert_eq!(renamed.created_at, created.created_at);
        assert_eq!(renamed.updated_at, clock.now());
        assert_eq!(renamed.password_hash, created.password_hash);
        assert_eq!(
            store.by_id(&created.id).await.expect("by_id"),
            Some(renamed.clone())
        );

        clock.advance(Duration::from_secs(1));
        let existed = store
            .set_password_hash(&created.id, "$argon2id$new", clock.now())
            .await
            .expect("set_password_hash");
        assert!(existed);
        let stored = store
            .by_id(&created.id)
            .await
            .expect("by_id")
            .expect("exists");
        assert_eq!(stored.password_hash, "$argon2id$new");
        assert_eq!(stored.display_name, "Countess");
        assert_eq!(stored.created_at, created.created_at);
        assert_eq!(stored.updated_at, clock.now());

        let unknown = Uuid::new_v4().to_string();
        let renamed = store
            .set_display_name(&unknown, "Nobody", clock.now())
            .await;
        assert_eq!(renamed.expect("set_display_name"), None);
        let existed = store
            .set_password_hash(&unknown, "$argon2id$x", clock.now())
            .await;
        assert!(!existed.expect("set_password_hash"));
    }

    async fn a_reset_token_is_single_use(db: TestDatabase) {
        let store = db.store;
        let clock = ManualClock::starting_now();
        let account = store
            .create(new_account("ada@example.com"), clock.now())
            .await
            .expect("create");
        let expires_at = clock.now() + Duration::from_secs(30 * 60);
        store
            .create_reset_token("hash-1", &account.id, expires_at, clock.now())
            .await
            .expect("create_reset_token");

        clock.advance(Duration::from_secs(60));
        for _ in 0..2 {
            let looked_up = store.reset_token_account("hash-1", clock.now()).await;
            assert_eq!(
                looked_up.expect("reset_token_account"),
                Some(account.id.clone()),
                "looking a token up does not use it"
            );
        }
        let consumed = store.consume_reset_token("hash-1", clock.now()).await;
        assert_eq!(consumed.expect("consume"), Some(account.id.clone()));
        let again = store.consume_reset_token("hash-1", clock.now()).await;
        assert_eq!(again.expect("consume"), None, "a token works once");
        let used = store.reset_token_account("hash-1", clock.now()).await;
        assert_eq!(used.expect("reset_token_account"), None);
        let unknown = store.consume_reset_token("no-such-hash", clock.now()).await;
        assert_eq!(unknown.expect("consume"), None);
    }

    async fn concurrent_consumes_of_one_token_have_one_winner(db: TestDatabase) {
        let now = SystemTime::now();
        let account = db
            .store
            .create(new_account("ada@example.com"), now)
            .await
            .expect("create");
        let expires_at = now + Duration::from_secs(600);
        db.store
            .create_reset_token("hash-1", &account.id, expires_at, now)
            .await
            .expect("create_reset_token");
        let attempts: Vec<_> = (0..8)
            .map(|_| {
                let store = db.store.clone();
                tokio::spawn(async move { store.consume_reset_token("hash-1", now).await })
            })
            .collect();
        let mut winners = 0;
        for attempt in attempts {
            if let Some(id) = attempt.await.expect("task").expect("consume") {
                assert_eq!(id, account.id);
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "exactly one consume wins");
    }

    async fn an_expired_reset_token_is_refused(db: TestDatabase) {
        let store = db.store;
        let clock = ManualClock::starting_now();
        let account = store
            .create(new_account("ada@example.com"), clock.now())
            .await
            .expect("create");
        let expires_at = clock.now() + Duration::from_secs(30 * 60);
        for hash in ["at-expiry", "just-before"] {
            store
                .create_reset_token(hash, &account.id, expires_at, clock.now())
                .await
                .expect("create_reset_token");
        }

        let looked_up = store.reset_token_account("at-expiry", expires_at).await;
        assert_eq!(looked_up.expect("reset_token_account"), None);
        let at_expiry = store.consume_reset_token("at-expiry", expires_at).await;
        assert_eq!(at_expiry.expect("consume"), None, "expiry is exclusive");
        let after = store
            .consume_reset_token("at-expiry", expires_at + Duration::from_secs(3600))
            .await;
        assert_eq!(after.expect("consume"), None);

        let just_before = expires_at - Duration::from_millis(1);
        let consumed = store.consume_reset_token("just-before", just_before).await;
        assert_eq!(consumed.expect("consume"), Some(account.id));
    }

    async fn consuming_a_token_invalidates_the_accounts_other_tokens(db: TestDatabase) {
        let store = db.store;
        let now = SystemTime::now();
        let expires_at = now + Duration::from_secs(600);
        let ada = store
            .create(new_account("ada@example.com"), now)
            .await
            .expect("create");
        let bob = store
            .create(new_account("bob@example.com"), now)
            .await
            .expect("create");
        for (hash, account) in [
            ("ada-1", &ada),
            ("ada-2", &ada),
            ("ada-3", &ada),
            ("bob-1", &bob),
        ] {
            store
                .create_reset_token(hash, &account.id, expires_at, now)
                .await
                .expect("create_reset_token");
        }

        let consumed = store
            .consume_reset_token("ada-2", now)
            .await
            .expect("consume");
        assert_eq!(consumed, Some(ada.id));
        for other in ["ada-1", "ada-3"] {
            let consumed = store
                .consume_reset_token(other, now)
                .await
                .expect("consume");
            assert_eq!(consumed, None, "{other} was invalidated");
        }
        let consumed = store
            .consume_reset_token("bob-1", now)
            .await
            .expect("consume");
        assert_eq!(consumed, Some(bob.id), "other accounts keep their tokens");
    }

    async fn a_password_change_invalidates_reset_tokens(db: TestDatabase) {
        let store = db.store;
        let now = SystemTime::now();
        let account = store
            .create(new_account("ada@example.com"), now)
            .await
            .expect("create");
        let expires_at = now + Duration::from_secs(600);
        store
            .create_reset_token("hash-1", &account.id, expires_at, now)
            .await
            .expect("create_reset_token");
        assert!(
            store
                .set_password_hash(&account.id, "$argon2id$new", now)
                .await
                .expect("set")
        );
        let consumed = store
            .consume_reset_token("hash-1", now)
            .await
            .expect("consume");
        assert_eq!(consumed, None);
    }

    async fn a_reset_token_needs_an_existing_account(db: TestDatabase) {
        let now = SystemTime::now();
        let unknown = Uuid::new_v4().to_string();
        let created = db
            .store
            .create_reset_token("hash-1", &unknown, now + Duration::from_secs(600), now)
            .await;
        assert!(
            matches!(created, Err(AccountError::Database(_))),
            "the foreign key is enforced: {created:?}"
        );
    }

    async fn migrations_are_idempotent(db: TestDatabase) {
        let account = db
            .store
            .create(new_account("ada@example.com"), SystemTime::now())
            .await
            .expect("create");
        let again = AccountStore::connect(&db.url, TIMEOUT)
            .await
            .expect("connect again");
        assert_eq!(again.backend(), db.store.backend());
        let stored = again.by_email("ada@example.com").await.expect("by_email");
        assert_eq!(stored, Some(account));

        let (applied, embedded) = on_pool!(&again, |pool| {
            let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
                .fetch_one(pool)
                .await
                .expect("count migrations");
            (applied, pool_migrations(&again).iter().count())
        });
        assert_eq!(
            usize::try_from(applied).expect("count"),
            embedded,
            "each migration once"
        );
        again.close().await;
    }

    fn pool_migrations(store: &AccountStore) -> &'static Migrator {
        match store.pool {
            Pool::Sqlite(_) => &SQLITE_MIGRATIONS,
            Pool::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    #[tokio::test]
    async fn sqlite_connect_creates_the_file_on_first_run() {
        let path = temp_sqlite_path();
        assert!(!path.exists());
        let store = AccountStore::connect(&format!("sqlite://{}", path.display()), TIMEOUT)
            .await
            .expect("connect");
        assert!(path.exists(), "connect creates {}", path.display());
        assert_eq!(store.backend(), "sqlite");
        store.ping().await.expect("ping");
        if let Pool::Sqlite(pool) = &store.pool {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(pool)
                .await
                .expect("journal_mode");
            assert_eq!(mode, "wal");
            let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(pool)
                .await
                .expect("foreign_keys");
            assert_eq!(foreign_keys, 1);
        }
        store.close().await;
        remove_sqlite_files(&path);
    }

    /// Password hashes and reset-token hashes are for the server's user
    /// only: the database file and the -wal and -shm files SQLite makes
    /// beside it are created 0600, whatever the umask lets through.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_sqlite_file_and_its_journal_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let path = temp_sqlite_path();
        let store = AccountStore::connect(&format!("sqlite:{}", path.display()), TIMEOUT)
            .await
            .expect("connect");
        store
            .create(new_account("ada@example.com"), SystemTime::now())
            .await
            .expect("a write, so the journal exists");
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let mode = std::fs::metadata(&file)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{suffix}: {mode:o}");
        }
        store.close().await;
        remove_sqlite_files(&path);

        // A file that exists is left as its owner made it.
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let store = AccountStore::connect(&format!("sqlite:{}", path.display()), TIMEOUT)
            .await
            .expect("connect to an empty file");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        store.close().await;
        remove_sqlite_files(&path);
    }

    #[tokio::test]
    async fn sqlite_in_a_missing_directory_names_the_directory() {
        let directory =
            std::env::temp_dir().join(format!("slop-missing-{}", Uuid::new_v4().simple()));
        let url = format!("sqlite:{}", directory.join("accounts.db").display());
        let error = AccountStore::connect(&url, TIMEOUT)
            .await
            .expect_err("no directory");
        let message = error.to_string();
        assert!(matches!(error, AccountError::Url(_)), "{error:?}");
        assert!(
            message.contains(&directory.display().to_string()),
            "{message}"
        );
        assert!(!directory.exists());
    }

    #[test]
    fn errors_that_mean_the_database_is_away_are_unavailable() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for error in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(refused),
            timed_out(Duration::from_secs(3)),
        ] {
            let error = AccountError::from(error);
            assert!(matches!(error, AccountError::Unavailable(_)), "{error:?}");
        }
        for error in [
            sqlx::Error::RowNotFound,
            sqlx::Error::Protocol("unexpected message".into()),
        ] {
            let error = AccountError::from(error);
            assert!(matches!(error, AccountError::Database(_)), "{error:?}");
        }
        assert_eq!(
            cause(&timed_out(Duration::from_millis(1500))),
            "no answer within 1500ms"
        );
    }

    #[test]
    fn where_the_store_connects_is_told_without_the_password() {
        let options =
            PgConnectOptions::from_str("postgres://slop:hunter2@db.example:6543/accounts").unwrap();
        assert_eq!(
            without_password(&options),
            "postgres://slop@db.example:6543/accounts"
        );
    }

    /// With nobody listening, connect gives up within the timeout and says
    /// where and why.
    #[tokio::test]
    async fn an_unreachable_postgres_is_named_within_the_timeout() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let url = format!("postgres://slop:hunter2@127.0.0.1:{port}/accounts");
        let started = std::time::Instant::now();
        let error = AccountStore::connect(&url, Duration::from_millis(500))
            .await
            .expect_err("nobody listens");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            error.to_string(),
            format!(
                "cannot reach the account database at postgres://slop@127.0.0.1:{port}/accounts: \
                 connection refused; start PostgreSQL or fix DATABASE_URL"
            )
        );
    }

    #[tokio::test]
    async fn unsupported_urls_are_refused_without_echoing_them() {
        for url in [
            "mysql://root:secret@localhost/db",
            "secret",
            "/var/lib/secret.db",
            ":secret",
        ] {
            let error = AccountStore::connect(url, TIMEOUT).await.expect_err(url);
            assert!(matches!(error, AccountError::Url(_)), "{url}: {error:?}");
            assert!(!error.to_string().contains("secret"), "{error}");
        }
    }

    /// The server's own tests pass a plain DATABASE_URL, so the search_path
    /// must be settable in the URL: both forms that `connect` documents put
    /// the tables in the named schema.
    #[tokio::test]
    async fn postgres_search_path_from_the_url() {
        let mut admin = postgres_admin().await;
        let base = test_database_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        for form in ["options=-c%20search_path%3D", "options[search_path]="] {
            let schema = format!("t_{}", Uuid::new_v4().simple());
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut admin)
                .await
                .expect("create schema");
            let url = format!("{base}{separator}{form}{schema}");
            let checked_schema = schema.clone();
            let checked = async move {
                let store = AccountStore::connect(&url, TIMEOUT).await.expect("connect");
                assert_eq!(store.backend(), "postgres");
                let Pool::Postgres(pool) = &store.pool else {
                    unreachable!("a postgres URL")
                };
                let current: String = sqlx::query_scalar("SELECT current_schema()")
                    .fetch_one(pool)
                    .await
                    .expect("current_schema");
                let tables: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.tables \
                     WHERE table_schema = $1 AND table_name IN ('accounts', 'password_reset_tokens', '_sqlx_migrations')",
                )
                .bind(&checked_schema)
                .fetch_one(pool)
                .await
                .expect("tables");
                store.close().await;
                (current, tables)
            };
            let outcome = tokio::spawn(checked).await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut admin)
                .await
                .expect("drop schema");
            let (current, tables) =
                outcome.unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
            assert_eq!(current, schema, "{form}");
            assert_eq!(tables, 3, "{form}");
        }
        let _ = admin.close().await;
    }
}
