//! A PostgreSQL schema of the run's own for the server's accounts, for the
//! run with PostgreSQL accounts: created before the server starts (the
//! server applies its migrations into it), dropped at the end.

use sqlx::{Connection as _, PgConnection};

/// The run's schema.
pub struct Schema {
    /// The URL the bench was given.
    base: String,
    /// `slop_bench_<run id>`.
    name: String,
}

impl Schema {
    /// Creates `slop_bench_<run_id>` on the PostgreSQL at `base`.
    pub async fn create(base: &str, run_id: &str) -> Result<Self, String> {
        let name = format!("slop_bench_{run_id}");
        let mut admin = connect(base).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut admin)
            .await
            .map_err(|error| format!("PostgreSQL: cannot create schema {name}: {error}"))?;
        Ok(Self {
            base: base.to_owned(),
            name,
        })
    }

    /// The server's DATABASE_URL: `base` with the schema as search path.
    pub fn url(&self) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-c%20search_path%3D{}",
            self.base, self.name
        )
    }

    /// Drops the schema and everything the server made in it; a failure is
    /// a warning.
    pub async fn drop(self) {
        let dropped = async {
            let mut admin = connect(&self.base).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA {} CASCADE",
                self.name
            )))
            .execute(&mut admin)
            .await
            .map_err(|error| error.to_string())
        };
        match dropped.await {
            Ok(_) => eprintln!("postgres: dropped schema {}", self.name),
            Err(error) => eprintln!("warning: could not drop schema {}: {error}", self.name),
        }
    }
}

async fn connect(url: &str) -> Result<PgConnection, String> {
    PgConnection::connect(url).await.map_err(|error| {
        format!("PostgreSQL is not reachable at {url} ({error}): start it, set --postgres-url, or pass --no-postgres")
    })
}
