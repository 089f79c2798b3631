//! The PostgreSQL store: the connection pool, migrations and errors here; reports and their
//! race-free upsert in [`reports`]; durable single-flight scan jobs in [`jobs`]. Both tables
//! are keyed by the report id of an [`identity::ReportKey`](crate::identity::ReportKey).
//!
//! Reports live here, never in etcd; a ScanRequest's status only carries their ids and counts.

pub mod jobs;
pub mod reports;

pub use jobs::{Claim, Job, JobState, Leases};
pub use reports::{
    NewReport, REPORT_LOCK_CLASS, ReportMeta, StoredReport, UPSERT_SQL, UpsertOutcome,
};

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    #[error(
        "cannot reach PostgreSQL at {target}: {source}; check DATABASE_URL and that the server accepts connections"
    )]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration failed: {0}; the schema was left as the last successful migration")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database query failed while {action}: {source}")]
    Query {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored report {id} is corrupt: {reason}")]
    Corrupt { id: Uuid, reason: String },
}

impl StoreError {
    pub(crate) fn query_err(action: &'static str) -> impl Fn(sqlx::Error) -> Self + Copy {
        move |source| Self::Query { action, source }
    }

    /// Whether retrying later can succeed (the database is down or busy) as opposed to a defect.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Query { source, .. } => {
                matches!(
                    source,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Tls(_)
                        | sqlx::Error::Protocol(_)
                        | sqlx::Error::WorkerCrashed
                ) || matches!(source, sqlx::Error::Database(e) if e.code().is_some_and(|c| {
                    // 08: connection exception, 40: rollback, 53: resources, 57: operator intervention.
                    ["08", "40", "53", "57"].iter().any(|class| c.starts_with(class))
                }))
            }
            _ => false,
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

/// Options of the connection pool (flags of `scanreport-operator run`).
#[derive(Debug, Clone, clap::Args)]
pub struct PoolConfig {
    /// Database connections.
    #[arg(long = "database-max-connections", env = "DATABASE_MAX_CONNECTIONS", value_name = "DATABASE_MAX_CONNECTIONS", default_value_t = PoolConfig::MAX_CONNECTIONS)]
    pub max_connections: u32,
    #[arg(skip = PoolConfig::ACQUIRE_TIMEOUT)]
    pub acquire_timeout: Duration,
}

impl PoolConfig {
    const MAX_CONNECTIONS: u32 = 16;
    const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: Self::MAX_CONNECTIONS,
            acquire_timeout: Self::ACQUIRE_TIMEOUT,
        }
    }
}

impl Store {
    /// Connects lazily checked: the pool opens one connection now so a bad URL or an unreachable
    /// server is reported at start-up with a clear message.
    pub async fn connect(database_url: &str, config: &PoolConfig) -> Result<Self, StoreError> {
        let options: PgConnectOptions = database_url.parse().map_err(StoreError::InvalidUrl)?;
        let target = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect { target, source })?;
        Ok(Self { pool })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations. Safe to run from many processes at once: sqlx serialises
    /// them with an advisory lock, and applied migrations are skipped.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// The database clock, so that every replica compares times on one clock.
    pub async fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query_err("reading the database clock"))
    }
}

/// `DATABASE_URL` with any password replaced, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, after)) = url.split_once("://") else {
        return "<unparseable DATABASE_URL>".to_owned();
    };
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, tail) = after.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{user}:***@{host}")
        }
        None => authority.to_owned(),
    };
    // libpq also accepts `?password=...`.
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/reports?sslmode=require"),
            "postgres://app:***@db:5432/reports?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/reports?user=app&password=s3cret"),
            "postgres://db/reports?user=app&password=***"
        );
        assert_eq!(redact_url("postgres://db/reports"), "postgres://db/reports");
        assert!(!redact_url("s3cret").contains("s3cret"));
    }
}
