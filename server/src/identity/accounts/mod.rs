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
//!
//! `connect` opens either backend and brings its schema up to date; the
//! tests are one conformance suite run against both.
//!
//! What a user's own calls show of their account is a [`Profile`], cached
//! in process and kept true across instances ([`profiles`]): the store
//! forgets, and announces, a profile whenever it changes its account.

use std::{future::Future, sync::Arc, time::Duration, time::SystemTime};

use sqlx::{
    error::DatabaseError as _,
    postgres::{PgDatabaseError, PgPool},
    sqlite::{SqliteError, SqlitePool},
};
use uuid::Uuid;

use crate::infra::{
    clock::{SharedClock, from_millis, to_millis},
    observe::StoreCalls,
    redis_context::RedisContext,
};

pub use profiles::{Profile, Profiles};

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
    /// At start-up, TLS to PostgreSQL failed in a way that waiting will not
    /// mend: a certificate refused (the server's, or ours by the server),
    /// or a server without TLS under `sslmode=require` or stricter. `at`
    /// is the URL without its password.
    #[error(
        "DATABASE_URL: TLS to the account database at {at} failed: {cause}; check sslmode, and sslrootcert (the CA that signed the server's certificate; verify-full also checks that the certificate names the host)"
    )]
    Tls {
        /// `postgres://user@host:port/database`, never the password.
        at: String,
        /// Why, in a few words.
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
    /// Every operation, observed.
    calls: Arc<StoreCalls>,
    /// The profiles cached from it (none until [`Self::cache_profiles`]).
    profiles: Profiles,
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
    /// Runs one operation within DATABASE_TIMEOUT: a database that does not
    /// answer in time is unavailable, like one that refuses.
    /// Observed as `operation` (metrics and a `sql` span, see
    /// [`crate::infra::observe`]).
    async fn bounded<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, AccountError>>,
    ) -> Result<T, AccountError> {
        let bounded = async {
            tokio::time::timeout(self.timeout, call)
                .await
                .unwrap_or_else(|_| Err(AccountError::Unavailable(timed_out(self.timeout))))
        };
        self.calls
            .call(operation, bounded, |error| {
                matches!(
                    error,
                    AccountError::Unavailable(_) | AccountError::Database(_)
                )
            })
            .await
    }

    /// Cheap round trip for readiness (`SELECT 1`): proves a connection can
    /// be had and the server answers, without touching the tables.
    pub async fn ping(&self) -> Result<(), AccountError> {
        self.bounded("ping", async {
            on_pool!(self, |pool| {
                sqlx::query("SELECT 1").execute(pool).await.map(drop)
            })
            .map_err(AccountError::from)
        })
        .await
    }

    /// Caches profiles ([`Self::profile`]) where every change can be heard:
    /// across the instances sharing `redis` when there is one, else in
    /// process for SQLite; PostgreSQL without Redis caches nothing, since
    /// other instances may change its accounts unheard.
    pub fn cache_profiles(&mut self, redis: Option<&RedisContext>, clock: SharedClock) {
        self.profiles = match (redis, &self.pool) {
            (Some(redis), _) => Profiles::shared(redis),
            (None, Pool::Sqlite(_)) => Profiles::in_process(clock),
            (None, Pool::Postgres(_)) => Profiles::uncached(),
        };
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
        self.bounded("create_account", async {
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
            .bounded("account_by_email", async {
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
            .bounded("account_by_id", async {
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

    /// The profile of account `id`, for a user's own calls: from the
    /// cache when it holds it, else read (and cached).
    pub async fn profile(&self, id: &str) -> Result<Option<Arc<Profile>>, AccountError> {
        if let Some(profile) = self.profiles.get(id) {
            return Ok(Some(profile));
        }
        let ticket = self.profiles.ticket();
        let Some(account) = self.by_id(id).await? else {
            return Ok(None);
        };
        let profile = Arc::new(Profile::from(&account));
        self.profiles.put(ticket, profile.clone());
        Ok(Some(profile))
    }

    /// Returns the updated account, None if no such id; one statement, so
    /// the caller gets the row as written, not as a second read finds it.
    /// The account's profile is forgotten and the change announced before
    /// it returns.
    pub async fn set_display_name(
        &self,
        id: &str,
        display_name: &str,
        now: SystemTime,
    ) -> Result<Option<Account>, AccountError> {
        let row = self
            .bounded("set_display_name", async {
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
        if row.is_some() {
            self.profiles.changed(id).await;
        }
        Ok(row.map(Account::from))
    }

    /// Returns whether the account existed.
    ///
    /// In the same transaction every unused reset token of the account is
    /// invalidated: a reset link mailed before the change must not undo it
    /// (for example one requested by someone who has since lost access to
    /// the mailbox, or one the user asked for before remembering).
    ///
    /// The account's profile (whose `updated_at` moved) is forgotten and
    /// the change announced before it returns.
    pub async fn set_password_hash(
        &self,
        id: &str,
        password_hash: &str,
        now: SystemTime,
    ) -> Result<bool, AccountError> {
        let millis = to_millis(now);
        let existed = self
            .bounded("set_password_hash", async {
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
            .await?;
        if existed {
            self.profiles.changed(id).await;
        }
        Ok(existed)
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
        self.bounded("create_reset_token", async {
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
        self.bounded("reset_token_account", async {
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
        self.bounded("consume_reset_token", async {
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

// After `on_pool!`, which the tests use.
mod connect;
pub mod profiles;
#[cfg(test)]
mod tests;
