//! The PostgreSQL store: the connection pool, migrations and errors here; reports and their
//! race-free upsert in [`reports`]; durable single-flight scan jobs in [`jobs`]; deletion of
//! what is no longer needed in [`retention`]. Reports and jobs are keyed by the report id of an [`identity::ReportKey`](crate::identity::ReportKey).
//!
//! Reports live here, never in etcd; a ScanRequest's status only carries their ids and counts.

mod connections;
pub mod jobs;
pub mod reports;
pub mod retention;

pub use jobs::{Claim, Job, JobState, Leases, Opened, Opening, TupleState};
pub use reports::{
    Completed, Completes, NewReport, REPORT_LOCK_CLASS, ReportMeta, StoredReport, UPSERT_SQL,
    UpsertOutcome,
};
pub use retention::Swept;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use connections::{Connections, on_conn};

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

                    // 55P03: lock_timeout ran out; 57014 (class 57): statement_timeout did.
                    ["08", "40", "53", "57", "55P03"].iter().any(|class| c.starts_with(class))
                }))
            }
            _ => false,
        }
    }
}

#[derive(Clone)]
pub struct Store {
    /// Every statement of the store runs on these (see [`connections`]).
    connections: Arc<Connections>,
    /// sqlx's pool, for migrations and for callers that run their own SQL ([`Store::pool`]);
    /// lazy, so it opens a connection only when used.
    pool: PgPool,
    /// See [`PoolConfig::max_clock_skew`].
    max_clock_skew: Duration,
}

/// Options of the connection pool (flags of `scanreport-operator run`).
#[derive(Debug, Clone, clap::Args)]
pub struct PoolConfig {
    /// Database connections.
    #[arg(long = "database-max-connections", env = "DATABASE_MAX_CONNECTIONS", value_name = "DATABASE_MAX_CONNECTIONS", default_value_t = PoolConfig::MAX_CONNECTIONS)]
    pub max_connections: u32,
    /// Longest statement the server runs before cancelling it (PostgreSQL
    /// `statement_timeout`): a hung query becomes an error, not a silent reconcile.
    #[arg(long = "database-statement-timeout", env = "DATABASE_STATEMENT_TIMEOUT", default_value = "30s", value_parser = crate::duration::flag_within::<100, { crate::duration::HOUR_MS }>)]
    pub statement_timeout: Duration,
    /// Longest wait for a row or table lock (PostgreSQL `lock_timeout`).
    #[arg(long = "database-lock-timeout", env = "DATABASE_LOCK_TIMEOUT", default_value = "10s", value_parser = crate::duration::flag_within::<100, { crate::duration::HOUR_MS }>)]
    pub lock_timeout: Duration,
    /// How far in the future of the database clock an adapter's `generated_at` may lie; later
    /// ones are stored as the database clock plus this, so they cannot pin a report.
    #[arg(long = "max-clock-skew", env = "MAX_CLOCK_SKEW", default_value = "1m", value_parser = crate::duration::flag_within::<0, { crate::duration::HOUR_MS }>)]
    pub max_clock_skew: Duration,
    #[arg(skip = PoolConfig::ACQUIRE_TIMEOUT)]
    pub acquire_timeout: Duration,
}

impl PoolConfig {
    const MAX_CONNECTIONS: u32 = 16;
    const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
    const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: Self::MAX_CONNECTIONS,
            statement_timeout: Self::STATEMENT_TIMEOUT,
            lock_timeout: Self::LOCK_TIMEOUT,
            max_clock_skew: Self::MAX_CLOCK_SKEW,
            acquire_timeout: Self::ACQUIRE_TIMEOUT,
        }
    }
}

/// Where a database URL points, for logs and error messages: host, port and database from
/// the parsed options, so that no part of the password can leak whatever characters it holds.
pub fn describe_url(database_url: &str) -> String {
    match database_url.parse::<PgConnectOptions>() {
        Ok(options) => describe(&options),
        Err(_) => "<unparseable DATABASE_URL>".to_owned(),
    }
}

fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

impl Store {
    /// Connects: one connection is opened now, so a bad URL or an unreachable server is
    /// reported at start-up with a clear message.
    pub async fn connect(database_url: &str, config: &PoolConfig) -> Result<Self, StoreError> {
        let options: PgConnectOptions = database_url.parse().map_err(StoreError::InvalidUrl)?;
        let target = describe(&options);
        // Session settings of every connection: the server cancels a hung statement or lock
        // wait, and the reconcile sees an error (retried, counted in the error metric).
        let options = options.options([
            (
                "statement_timeout",
                config.statement_timeout.as_millis().to_string(),
            ),
            ("lock_timeout", config.lock_timeout.as_millis().to_string()),
        ]);
        let connections = Connections::new(
            options.clone(),
            config.max_connections,
            config.acquire_timeout,
        );
        // One connection now, so a bad URL or an unreachable server is reported at start-up.
        let mut first = connections
            .acquire()
            .await
            .map_err(|source| StoreError::Connect { target, source })?;
        first.keep();
        drop(first);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(config.acquire_timeout)
            .idle_timeout(Duration::from_secs(30))
            .connect_lazy_with(options);
        Ok(Self {
            connections: Arc::new(connections),
            pool,
            max_clock_skew: config.max_clock_skew,
        })
    }

    /// A store on `pool`'s server, with as many connections of its own as `pool` may open.
    pub fn from_pool(pool: PgPool) -> Self {
        let connections = Connections::new(
            (*pool.connect_options()).clone(),
            pool.options().get_max_connections(),
            pool.options().get_acquire_timeout(),
        );
        Self {
            connections: Arc::new(connections),
            pool,
            max_clock_skew: PoolConfig::MAX_CLOCK_SKEW,
        }
    }

    /// [`Store::from_pool`] with another allowed `generated_at` skew.
    pub fn with_max_clock_skew(mut self, skew: Duration) -> Self {
        self.max_clock_skew = skew;
        self
    }

    /// sqlx's pool on the store's server, for running other SQL (tests, tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the store's connections and the pool, waiting for nothing in flight.
    pub async fn close(&self) {
        self.connections.close().await;
        self.pool.close().await;
    }

    /// Applies pending migrations. Safe to run from many processes at once: sqlx serialises
    /// them with an advisory lock, and applied migrations are skipped.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// The database clock, so that every replica compares times on one clock.
    pub async fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        on_conn!(self, c => sqlx::query_scalar("SELECT now()").fetch_one(c))
            .map_err(StoreError::query_err("reading the database clock"))
    }
}

#[cfg(test)]
mod tests {
    use super::describe_url;

    #[test]
    fn database_urls_are_described_by_host_port_and_database_only() {
        for (url, want) in [
            (
                "postgres://app:s3cret@db:5432/reports?sslmode=require",
                "db:5432/reports",
            ),
            // A password with `/`, `@` and `:` once leaked through string surgery.
            (
                "postgres://app:pa%2Fss%40w%3Ard@db/reports",
                "db:5432/reports",
            ),
            ("postgres://app:pa/ss@db:6543/reports", ""),
            (
                "postgres://db/reports?user=app&password=s3cret",
                "db:5432/reports",
            ),
            ("s3cret", "<unparseable DATABASE_URL>"),
        ] {
            let described = describe_url(url);
            if !want.is_empty() {
                assert_eq!(described, want, "{url}");
            }
            for secret in ["s3cret", "pa/ss", "pa%2Fss", "ss@", "w%3Ard", "app"] {
                assert!(!described.contains(secret), "{url} -> {described}");
            }
        }
    }
}
