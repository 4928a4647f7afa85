//! One conformance suite, run against both backends. Every test gets a
//! database of its own (a temp file, or a PostgreSQL schema), so tests
//! run in parallel and never see each other's rows.

use std::{future::Future, path::PathBuf, time::Duration};

use std::str::FromStr as _;

use sqlx::{Connection, PgConnection, migrate::Migrator, postgres::PgConnectOptions};

use super::{
    connect::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, cause, without_password},
    *,
};
use crate::infra::{
    clock::{Clock, ManualClock},
    tls::testing::{Certificates, PASSWORD, TlsPostgres},
};

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

/// Runs `test` with the store on a PostgreSQL of its own that accepts TLS
/// only, connected with `sslmode=verify-full` and the test CA.
async fn on_postgres_tls<F, Fut>(test: F)
where
    F: FnOnce(TestDatabase) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let certificates = Certificates::make();
    let postgres = TlsPostgres::start(&certificates, "server");
    let url = postgres.url("postgres", &verify(&certificates, "verify-full", "ca.pem"));
    let store = AccountStore::connect(&url, TIMEOUT)
        .await
        .expect("connect over TLS");
    assert!(uses_tls(&store).await, "the connection uses TLS");
    let outcome = tokio::spawn(test(TestDatabase {
        url,
        store: store.clone(),
    }))
    .await;
    store.close().await;
    drop(postgres);
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// `sslmode=MODE&sslrootcert=<the file CA of the set>`.
fn verify(certificates: &Certificates, mode: &str, ca: &str) -> String {
    format!("sslmode={mode}&sslrootcert={}", certificates.file(ca))
}

/// Whether the store's connection is encrypted, as PostgreSQL sees it.
async fn uses_tls(store: &AccountStore) -> bool {
    let Pool::Postgres(pool) = &store.pool else {
        panic!("a PostgreSQL store");
    };
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pool)
        .await
        .expect("read pg_stat_ssl")
}

/// An sslmode libpq does not know is a DATABASE_URL error naming it, and
/// not the password.
#[tokio::test]
async fn an_unknown_sslmode_is_named_without_the_password() {
    let error = AccountStore::connect(
        &format!("postgres://slop:{PASSWORD}@127.0.0.1:1/accounts?sslmode=sometimes"),
        TIMEOUT,
    )
    .await
    .expect_err("no such sslmode");
    let message = error.to_string();
    assert!(matches!(error, AccountError::Url(_)), "{error:?}");
    assert!(
        message.starts_with("DATABASE_URL: ") && message.contains("sometimes"),
        "{message}"
    );
    assert!(!message.contains(PASSWORD), "{message}");
}

/// TLS is really in use (a connection without it is refused), `require`
/// encrypts without checking the certificate, and a certificate of an
/// unrelated CA stops the connect at once with a message that says
/// "certificate", names the host and never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_modes_and_a_wrong_ca() {
    let certificates = Certificates::make();
    let postgres = TlsPostgres::start(&certificates, "server");

    let error = AccountStore::connect(&postgres.url("postgres", "sslmode=disable"), TIMEOUT)
        .await
        .expect_err("pg_hba.conf has hostssl lines only");
    assert!(error.to_string().contains("no encryption"), "{error}");

    let store = AccountStore::connect(&postgres.url("postgres", "sslmode=require"), TIMEOUT)
        .await
        .expect("sslmode=require");
    assert!(uses_tls(&store).await);
    store.close().await;

    let started = std::time::Instant::now();
    let error = AccountStore::connect(
        &postgres.url(
            "postgres",
            &verify(&certificates, "verify-full", "other-ca.pem"),
        ),
        TIMEOUT,
    )
    .await
    .expect_err("an unrelated CA");
    let message = error.to_string();
    assert!(matches!(error, AccountError::Tls { .. }), "{error:?}");
    assert!(
        started.elapsed() < TIMEOUT,
        "a refused certificate is not retried until DATABASE_TIMEOUT"
    );
    for part in ["DATABASE_URL", "certificate", "127.0.0.1", "sslrootcert"] {
        assert!(message.contains(part), "{part} in {message}");
    }
    assert!(!message.contains(PASSWORD), "{message}");

    // Also with verify-ca: the CA, not only the name, is checked.
    let error = AccountStore::connect(
        &postgres.url(
            "postgres",
            &verify(&certificates, "verify-ca", "other-ca.pem"),
        ),
        TIMEOUT,
    )
    .await
    .expect_err("an unrelated CA under verify-ca");
    assert!(matches!(error, AccountError::Tls { .. }), "{error:?}");

    let missing = certificates.file("missing-ca.pem");
    let error = AccountStore::connect(
        &postgres.url(
            "postgres",
            &format!("sslmode=verify-full&sslrootcert={missing}"),
        ),
        TIMEOUT,
    )
    .await
    .expect_err("no such file");
    let message = error.to_string();
    assert!(matches!(error, AccountError::Url(_)), "{error:?}");
    assert!(
        message.contains(&format!("sslrootcert {missing}")),
        "{message}"
    );
    assert!(!message.contains(PASSWORD), "{message}");
}

/// A server certificate of the right CA for another name: verify-full
/// refuses it (naming the certificate), verify-ca accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_checks_the_name_and_verify_ca_does_not() {
    let certificates = Certificates::make();
    let postgres = TlsPostgres::start(&certificates, "elsewhere");
    let error = AccountStore::connect(
        &postgres.url("postgres", &verify(&certificates, "verify-full", "ca.pem")),
        TIMEOUT,
    )
    .await
    .expect_err("the certificate names db.elsewhere.example");
    assert!(matches!(error, AccountError::Tls { .. }), "{error:?}");
    assert!(error.to_string().contains("certificate"), "{error}");

    let store = AccountStore::connect(
        &postgres.url("postgres", &verify(&certificates, "verify-ca", "ca.pem")),
        TIMEOUT,
    )
    .await
    .expect("verify-ca does not check the name");
    assert!(uses_tls(&store).await);
    store.close().await;
}

/// sslcert and sslkey: a database that wants a client certificate takes
/// the store's, and refuses the store without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_client_certificates_from_the_url() {
    let certificates = Certificates::make();
    let postgres = TlsPostgres::start(&certificates, "server");
    let base = verify(&certificates, "verify-full", "ca.pem");
    let with_certificate = format!(
        "{base}&sslcert={}&sslkey={}",
        certificates.file("client.pem"),
        certificates.file("client.key")
    );
    let store = AccountStore::connect(&postgres.url("mtls", &with_certificate), TIMEOUT)
        .await
        .expect("a client certificate of the test CA");
    assert!(uses_tls(&store).await);
    store.close().await;

    let error = AccountStore::connect(&postgres.url("mtls", &base), TIMEOUT)
        .await
        .expect_err("no client certificate");
    assert!(error.to_string().contains("certificate"), "{error}");
    assert!(!error.to_string().contains(PASSWORD), "{error}");
}

// Each conformance test once per backend:
// `accounts::tests::sqlite_backend::NAME` and
// `accounts::tests::postgres_backend::NAME`.
crate::infra::conformance::backend_conformance! {
    backends: [
        sqlite_backend => on_sqlite,
        postgres_backend => on_postgres,
        postgres_tls_backend => on_postgres_tls,
    ],
    cases: [
        create_and_read_back,
        a_duplicate_email_is_taken,
        concurrent_creates_of_one_email_have_one_winner,
        updates_move_updated_at_and_miss_unknown_ids,
        a_profile_follows_every_change_of_its_account,
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
            tokio::spawn(async move { store.create(new_account("race@example.com"), now).await })
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

/// The test's store caching profiles as the server would without Redis,
/// on a manual clock, with one account.
async fn caching_with_ada(db: TestDatabase) -> (Arc<ManualClock>, AccountStore, Account) {
    let clock = ManualClock::starting_now();
    let mut store = db.store;
    store.cache_profiles(None, clock.clone());
    let created = store
        .create(new_account("ada@example.com"), clock.now())
        .await
        .expect("create");
    (clock, store, created)
}

/// With profiles cached (in process on SQLite, none on PostgreSQL without
/// Redis), a profile read before a change never outlives it.
async fn a_profile_follows_every_change_of_its_account(db: TestDatabase) {
    let (clock, store, created) = caching_with_ada(db).await;
    let profile = store.profile(&created.id).await.expect("profile");
    assert_eq!(profile.as_deref(), Some(&Profile::from(&created)));

    clock.advance(Duration::from_secs(1));
    let renamed = store
        .set_display_name(&created.id, "Countess", clock.now())
        .await
        .expect("set_display_name")
        .expect("the account exists");
    let profile = store.profile(&created.id).await.expect("profile");
    assert_eq!(profile.as_deref(), Some(&Profile::from(&renamed)));

    clock.advance(Duration::from_secs(1));
    store
        .set_password_hash(&created.id, "$argon2id$new", clock.now())
        .await
        .expect("set_password_hash");
    let profile = store.profile(&created.id).await.expect("profile").unwrap();
    assert_eq!(profile.updated_at, clock.now(), "updated_at moved");

    let unknown = Uuid::new_v4().to_string();
    assert_eq!(store.profile(&unknown).await.expect("profile"), None);
}

/// A cached profile is the whole answer: the database is not asked (here,
/// it could not answer).
#[tokio::test]
async fn a_cached_profile_is_served_without_the_database() {
    on_sqlite(|db| async move {
        let (_, store, created) = caching_with_ada(db).await;
        store.profile(&created.id).await.expect("read and cached");
        store.close().await;
        assert!(
            store.by_id(&created.id).await.is_err(),
            "the pool is closed"
        );
        let cached = store.profile(&created.id).await.expect("from the cache");
        assert_eq!(cached.as_deref(), Some(&Profile::from(&created)));
    })
    .await;
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
    let directory = std::env::temp_dir().join(format!("slop-missing-{}", Uuid::new_v4().simple()));
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
