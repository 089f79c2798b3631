//! The Postgres report store: migrations, the race-free upsert and reads.
//!
//! Reports live here, never in etcd; a ScanRequest's status only carries their ids and counts.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::api::SeveritySummary;
use crate::identity::{self, Digest, MimeType};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Advisory-lock class for per-report serialisation (ASCII "SCNR"); the two-key lock space never
/// collides with sqlx's single-key migration lock.
pub const REPORT_LOCK_CLASS: i32 = 0x5343_4e52;

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

/// A report to store. The id is derived from the tuple by the store itself, so no caller can
/// pair a tuple with a foreign id.
#[derive(Debug, Clone)]
pub struct NewReport {
    pub digest: Digest,
    pub registration_uuid: Uuid,
    pub mime_type: MimeType,
    /// The report as the adapter sent it: validated JSON text, stored without re-encoding.
    pub report: Box<serde_json::value::RawValue>,
    pub summary: SeveritySummary,
    pub scanner_name: String,
    pub scanner_vendor: String,
    pub scanner_version: String,
    pub generated_at: DateTime<Utc>,
}

impl NewReport {
    pub fn id(&self) -> Uuid {
        identity::report_id(&self.digest, &self.registration_uuid, &self.mime_type)
    }
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    Inserted,
    Updated,
    /// The stored report was generated at the same time or later; it was kept unchanged.
    KeptExisting,
}

impl UpsertOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inserted => "inserted",
            Self::Updated => "updated",
            Self::KeptExisting => "kept_existing",
        }
    }
}

/// A stored report without its body.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportMeta {
    pub id: Uuid,
    pub digest: String,
    pub registration_uuid: Uuid,
    pub mime_type: String,
    pub summary: SeveritySummary,
    pub scanner_name: String,
    pub scanner_vendor: String,
    pub scanner_version: String,
    pub generated_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredReport {
    pub meta: ReportMeta,
    pub report: serde_json::Value,
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

/// Options of the connection pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

// One statement, three guarantees:
// * The CTE takes a transaction-scoped advisory lock on the report id before the INSERT runs.
//   ON CONFLICT only arbitrates its target index; a concurrent *first* insert would otherwise
//   fail on the other unique index (the primary key) with 23505. Serialised writers of one tuple
//   instead find the committed row and take the DO UPDATE path.
// * DO UPDATE only when the incoming report is strictly newer: an older one never overwrites.
// * `xmax = 0` tells an insert from an update; no row returned means the existing one was kept.
pub const UPSERT_SQL: &str = r#"
WITH serialise AS (SELECT pg_advisory_xact_lock($16, hashtext($1::text)))
INSERT INTO scan_report AS r (
    id, digest, registration_uuid, mime_type, report,
    critical_cnt, high_cnt, medium_cnt, low_cnt, unknown_cnt, none_cnt, fixable_cnt,
    scanner_name, scanner_vendor, scanner_version, generated_at)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $17 FROM serialise
ON CONFLICT (digest, registration_uuid, mime_type) DO UPDATE SET
    report = EXCLUDED.report,
    critical_cnt = EXCLUDED.critical_cnt, high_cnt = EXCLUDED.high_cnt,
    medium_cnt = EXCLUDED.medium_cnt, low_cnt = EXCLUDED.low_cnt,
    unknown_cnt = EXCLUDED.unknown_cnt, none_cnt = EXCLUDED.none_cnt,
    fixable_cnt = EXCLUDED.fixable_cnt,
    scanner_name = EXCLUDED.scanner_name, scanner_vendor = EXCLUDED.scanner_vendor,
    scanner_version = EXCLUDED.scanner_version,
    generated_at = EXCLUDED.generated_at,
    updated_at = now()
WHERE r.generated_at < EXCLUDED.generated_at
RETURNING (xmax = 0) AS inserted, created_at, updated_at
"#;

/// `SELECT <metadata columns> <tail>`, as a `&'static str` the query API takes.
macro_rules! select_meta {
    ($extra:literal, $tail:literal) => {
        concat!(
            "SELECT id, digest, registration_uuid, mime_type, critical_cnt, high_cnt, ",
            "medium_cnt, low_cnt, unknown_cnt, none_cnt, fixable_cnt, scanner_name, ",
            "scanner_vendor, scanner_version, generated_at, created_at, updated_at",
            $extra,
            " FROM scan_report ",
            $tail
        )
    };
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

    /// Inserts or updates the report of its tuple; see [`UPSERT_SQL`] for the guarantees.
    pub async fn upsert(&self, report: &NewReport) -> Result<(Uuid, UpsertOutcome), StoreError> {
        let (outcome, _) = self.write(report).await?;
        Ok((report.id(), outcome))
    }

    /// [`Store::upsert`], then the metadata of the row that is stored now: the written one, or
    /// the newer one that was kept (read back only in that case).
    pub async fn upsert_and_read(
        &self,
        report: &NewReport,
    ) -> Result<(UpsertOutcome, Option<ReportMeta>), StoreError> {
        match self.write(report).await? {
            (outcome, Some(meta)) => Ok((outcome, Some(meta))),
            (outcome, None) => Ok((outcome, self.get_meta(report.id()).await?)),
        }
    }

    /// The upsert; the metadata of the row when this call wrote it.
    async fn write(
        &self,
        report: &NewReport,
    ) -> Result<(UpsertOutcome, Option<ReportMeta>), StoreError> {
        let id = report.id();
        let s = &report.summary;
        // Postgres keeps microseconds; truncating here keeps the newer-than test exact.
        let generated_at = report.generated_at.trunc_subsecs(6);
        let row = sqlx::query(UPSERT_SQL)
            .bind(id)
            .bind(report.digest.as_str())
            .bind(report.registration_uuid)
            .bind(report.mime_type.as_str())
            .bind(sqlx::types::Json(&*report.report))
            .bind(s.critical)
            .bind(s.high)
            .bind(s.medium)
            .bind(s.low)
            .bind(s.unknown)
            .bind(s.none)
            .bind(s.fixable)
            .bind(&report.scanner_name)
            .bind(&report.scanner_vendor)
            .bind(&report.scanner_version)
            .bind(REPORT_LOCK_CLASS)
            .bind(generated_at)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query_err("upserting a report"))?;
        let Some(row) = row else {
            return Ok((UpsertOutcome::KeptExisting, None));
        };
        let corrupt = |e: sqlx::Error| StoreError::Corrupt {
            id,
            reason: e.to_string(),
        };
        let outcome = if row.try_get::<bool, _>("inserted").map_err(corrupt)? {
            UpsertOutcome::Inserted
        } else {
            UpsertOutcome::Updated
        };
        let meta = ReportMeta {
            id,
            digest: report.digest.to_string(),
            registration_uuid: report.registration_uuid,
            mime_type: report.mime_type.to_string(),
            summary: report.summary,
            scanner_name: report.scanner_name.clone(),
            scanner_vendor: report.scanner_vendor.clone(),
            scanner_version: report.scanner_version.clone(),
            generated_at,
            created_at: row.try_get("created_at").map_err(corrupt)?,
            updated_at: row.try_get("updated_at").map_err(corrupt)?,
        };
        Ok((outcome, Some(meta)))
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<StoredReport>, StoreError> {
        let row = sqlx::query(select_meta!(", report", "WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query_err("reading a report"))?;
        row.map(|row| {
            let meta = meta_from_row(&row)?;
            let report = row.try_get("report").map_err(|e| StoreError::Corrupt {
                id,
                reason: e.to_string(),
            })?;
            Ok(StoredReport { meta, report })
        })
        .transpose()
    }

    /// Metadata of the report of one tuple, if stored.
    pub async fn get_meta(&self, id: Uuid) -> Result<Option<ReportMeta>, StoreError> {
        let row = sqlx::query(select_meta!("", "WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query_err("reading report metadata"))?;
        row.as_ref().map(meta_from_row).transpose()
    }

    /// The report of a tuple. Looks up by the derived id, which the tuple determines.
    pub async fn get_by_tuple(
        &self,
        digest: &Digest,
        registration_uuid: &Uuid,
        mime_type: &MimeType,
    ) -> Result<Option<StoredReport>, StoreError> {
        self.get(identity::report_id(digest, registration_uuid, mime_type))
            .await
    }

    /// Metadata of every report of a digest, ordered by registration and MIME type.
    pub async fn list_by_digest(&self, digest: &Digest) -> Result<Vec<ReportMeta>, StoreError> {
        let rows = sqlx::query(select_meta!(
            "",
            "WHERE digest = $1 ORDER BY registration_uuid, mime_type"
        ))
        .bind(digest.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query_err("listing reports"))?;
        rows.iter().map(meta_from_row).collect()
    }
}

pub(crate) fn meta_from_row(row: &sqlx::postgres::PgRow) -> Result<ReportMeta, StoreError> {
    let id: Uuid = row
        .try_get("id")
        .map_err(StoreError::query_err("decoding a report id"))?;
    let corrupt = |e: sqlx::Error| StoreError::Corrupt {
        id,
        reason: e.to_string(),
    };
    Ok(ReportMeta {
        id,
        digest: row.try_get("digest").map_err(corrupt)?,
        registration_uuid: row.try_get("registration_uuid").map_err(corrupt)?,
        mime_type: row.try_get("mime_type").map_err(corrupt)?,
        summary: SeveritySummary {
            critical: row.try_get("critical_cnt").map_err(corrupt)?,
            high: row.try_get("high_cnt").map_err(corrupt)?,
            medium: row.try_get("medium_cnt").map_err(corrupt)?,
            low: row.try_get("low_cnt").map_err(corrupt)?,
            unknown: row.try_get("unknown_cnt").map_err(corrupt)?,
            none: row.try_get("none_cnt").map_err(corrupt)?,
            fixable: row.try_get("fixable_cnt").map_err(corrupt)?,
        },
        scanner_name: row.try_get("scanner_name").map_err(corrupt)?,
        scanner_vendor: row.try_get("scanner_vendor").map_err(corrupt)?,
        scanner_version: row.try_get("scanner_version").map_err(corrupt)?,
        generated_at: row.try_get("generated_at").map_err(corrupt)?,
        created_at: row.try_get("created_at").map_err(corrupt)?,
        updated_at: row.try_get("updated_at").map_err(corrupt)?,
    })
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
