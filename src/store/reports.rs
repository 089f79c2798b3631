//! Reports in `scan_report`: the race-free upsert and the reads, one column list for the
//! metadata ([`meta_columns!`]) decoded by one row type.

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};
use uuid::Uuid;

use super::connections::on_conn;
use super::{Store, StoreError};
use crate::api::SeveritySummary;
use crate::identity::{Digest, ReportKey};
use crate::scanner::summary::Finding;

/// Advisory-lock class for per-report serialisation (ASCII "SCNR"); the two-key lock space never
/// collides with sqlx's single-key migration lock.
pub const REPORT_LOCK_CLASS: i32 = 0x5343_4e52;

/// A report to store. The id is derived from the key by the store itself, so no caller can
/// pair a key with a foreign id.
#[derive(Debug, Clone)]
pub struct NewReport {
    pub key: ReportKey,
    /// The report as the adapter sent it: validated JSON text, stored without re-encoding.
    pub report: Box<serde_json::value::RawValue>,
    pub summary: SeveritySummary,
    /// The vulnerabilities in compact form (vulnerability reports), stored with the report so
    /// that policy evaluation never reads the body.
    pub findings: Option<Vec<Finding>>,
    pub scanner_name: String,
    pub scanner_vendor: String,
    pub scanner_version: String,
    pub generated_at: DateTime<Utc>,
}

impl NewReport {
    pub fn id(&self) -> Uuid {
        self.key.report_id()
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

/// What an upsert that may complete a scan did, the metadata of the row when it wrote it, and
/// how long the completed scan took from submission (`None`: no job was completed).
pub type Completed = (
    UpsertOutcome,
    Option<ReportMeta>,
    Option<std::time::Duration>,
);

/// Which scan job an upsert marks done, in the same statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completes<'a> {
    /// None: the report did not come from a scan of this store's jobs.
    Nothing,
    /// The submitted scan with this id, whoever recorded it.
    Scan(&'a str),
    /// The job this holder claimed and has not recorded a submission for: the report came
    /// with the submitter's first poll.
    Claim(&'a str),
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

// One statement, these guarantees:
// * The CTE takes a transaction-scoped advisory lock on the report id before the INSERT runs.
//   ON CONFLICT only arbitrates its target index; a concurrent *first* insert would otherwise
//   fail on the other unique index (the primary key) with 23505. Serialised writers of one tuple
//   instead find the committed row and take the DO UPDATE path.
// * DO UPDATE only when the incoming report is strictly newer: an older one never overwrites.
// * The body ($5) is text cast to `json`: validated, stored as sent, never parsed further.
// * `xmax = 0` tells an insert from an update; `inserted` NULL means the existing one was kept.
// * `generated_at` is at most the database clock plus the allowed skew ($18 seconds): an
//   adapter's timestamp in the future would otherwise keep every later report out for ever.
// * The findings ($19) travel with the report: a row never pairs one report with another's.
// * With a scan id ($20), the scan job is marked done in the same statement (what
//   `Store::complete` does): the report and the end of its scan commit together, one round
//   trip. Its UPDATE waits for the advisory lock first, so two writers of one tuple always take
//   the lock and the job row in the same order. With a holder ($21) instead, the job that
//   holder still claims is marked done: a submitter whose first poll brought the report has
//   not recorded its submission. NULL matches no job; the scan's time then counts from the
//   claim.
pub const UPSERT_SQL: &str = r#"
WITH serialise AS (SELECT pg_advisory_xact_lock($16, hashtext($1::text))),
written AS (
INSERT INTO scan_report AS r (
    id, digest, registration_uuid, mime_type, report,
    critical_cnt, high_cnt, medium_cnt, low_cnt, unknown_cnt, none_cnt, fixable_cnt,
    scanner_name, scanner_vendor, scanner_version, generated_at, findings)
SELECT $1, $2, $3, $4, $5::json, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
    LEAST($17, date_trunc('microseconds', now() + make_interval(secs => $18))), $19 FROM serialise
ON CONFLICT (digest, registration_uuid, mime_type) DO UPDATE SET
    report = EXCLUDED.report,
    findings = EXCLUDED.findings,
    critical_cnt = EXCLUDED.critical_cnt, high_cnt = EXCLUDED.high_cnt,
    medium_cnt = EXCLUDED.medium_cnt, low_cnt = EXCLUDED.low_cnt,
    unknown_cnt = EXCLUDED.unknown_cnt, none_cnt = EXCLUDED.none_cnt,
    fixable_cnt = EXCLUDED.fixable_cnt,
    scanner_name = EXCLUDED.scanner_name, scanner_vendor = EXCLUDED.scanner_vendor,
    scanner_version = EXCLUDED.scanner_version,
    generated_at = EXCLUDED.generated_at,
    updated_at = now()
WHERE r.generated_at < EXCLUDED.generated_at
RETURNING (xmax = 0) AS inserted, created_at, updated_at, r.generated_at),
completed AS (
UPDATE scan_job SET state = 'done', completed_at = now(), scan_id = NULL, holder = NULL,
    lease_expires_at = NULL, next_poll_at = NULL, last_error = NULL, updated_at = now()
WHERE report_id = $1 AND EXISTS (SELECT 1 FROM serialise)
  AND ((state = 'submitted' AND scan_id = $20) OR (state = 'submitting' AND holder = $21))
RETURNING extract(epoch FROM now() - coalesce(submitted_at, updated_at))::float8 AS took)
SELECT w.inserted, w.created_at, w.updated_at, w.generated_at, c.took
FROM (SELECT 1) AS one LEFT JOIN written AS w ON true LEFT JOIN completed AS c ON true
"#;

/// The metadata columns of `scan_report` (everything but the report body): the one list every
/// read of report metadata selects, decoded by [`MetaRow`].
macro_rules! meta_columns {
    () => {
        "id, digest, registration_uuid, mime_type, critical_cnt, high_cnt, medium_cnt, \
         low_cnt, unknown_cnt, none_cnt, fixable_cnt, scanner_name, scanner_vendor, \
         scanner_version, generated_at, created_at, updated_at"
    };
}
pub(crate) use meta_columns;

/// A row of [`meta_columns!`].
#[derive(FromRow)]
struct MetaRow {
    id: Uuid,
    digest: String,
    registration_uuid: Uuid,
    mime_type: String,
    critical_cnt: i64,
    high_cnt: i64,
    medium_cnt: i64,
    low_cnt: i64,
    unknown_cnt: i64,
    none_cnt: i64,
    fixable_cnt: i64,
    scanner_name: String,
    scanner_vendor: String,
    scanner_version: String,
    generated_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<MetaRow> for ReportMeta {
    fn from(r: MetaRow) -> Self {
        Self {
            id: r.id,
            digest: r.digest,
            registration_uuid: r.registration_uuid,
            mime_type: r.mime_type,
            summary: SeveritySummary {
                critical: r.critical_cnt,
                high: r.high_cnt,
                medium: r.medium_cnt,
                low: r.low_cnt,
                unknown: r.unknown_cnt,
                none: r.none_cnt,
                fixable: r.fixable_cnt,
            },
            scanner_name: r.scanner_name,
            scanner_vendor: r.scanner_vendor,
            scanner_version: r.scanner_version,
            generated_at: r.generated_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Report metadata from a row that holds [`meta_columns!`]; a row that does not decode is
/// reported as a corrupt report.
pub(crate) fn decode_meta(row: &PgRow) -> Result<ReportMeta, StoreError> {
    let id: Uuid = row
        .try_get("id")
        .map_err(StoreError::query_err("decoding a report id"))?;
    MetaRow::from_row(row)
        .map(ReportMeta::from)
        .map_err(|e| StoreError::Corrupt {
            id,
            reason: e.to_string(),
        })
}

/// A placeholder body for a report whose body was moved out.
fn empty_body() -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::NULL.to_owned()
}

impl Store {
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

    /// [`Store::upsert_and_read`] that takes the report: its body is released as soon as the
    /// statement holds its copy, so storing a report costs two bodies (statement and wire
    /// buffer) at the peak instead of three.
    pub async fn store_report(
        &self,
        report: NewReport,
    ) -> Result<(UpsertOutcome, Option<ReportMeta>), StoreError> {
        let (outcome, meta, _) = self
            .complete_with_report(report, Completes::Nothing)
            .await?;
        Ok((outcome, meta))
    }

    /// [`Store::store_report`] that also marks the report's scan job done in the same statement
    /// (what [`Store::complete`] does, without its round trip), as `completes` names it. The
    /// third value is how long the scan took, `None` when the job had already moved on.
    pub async fn complete_with_report(
        &self,
        mut report: NewReport,
        completes: Completes<'_>,
    ) -> Result<Completed, StoreError> {
        let body = std::mem::replace(&mut report.report, empty_body());
        let (outcome, meta, took) = self.write_with(&report, Some(body), completes).await?;
        let meta = match meta {
            Some(meta) => Some(meta),
            // Kept: the newer row was committed by another writer, read it (rare: one fetch
            // per scan).
            None => self.get_meta(report.id()).await?,
        };
        Ok((outcome, meta, took))
    }

    /// The upsert; the metadata of the row when this call wrote it.
    async fn write(
        &self,
        report: &NewReport,
    ) -> Result<(UpsertOutcome, Option<ReportMeta>), StoreError> {
        let (outcome, meta, _) = self.write_with(report, None, Completes::Nothing).await?;
        Ok((outcome, meta))
    }

    /// The upsert of `report`, with `body` instead of its own when given (then dropped once
    /// bound), completing the job `completes` names.
    async fn write_with(
        &self,
        report: &NewReport,
        body: Option<Box<serde_json::value::RawValue>>,
        completes: Completes<'_>,
    ) -> Result<Completed, StoreError> {
        let (scan_id, holder) = match completes {
            Completes::Nothing => (None, None),
            Completes::Scan(scan_id) => (Some(scan_id), None),
            Completes::Claim(holder) => (None, Some(holder)),
        };
        let id = report.id();
        let s = &report.summary;
        // Postgres keeps microseconds; truncating here keeps the newer-than test exact.
        let generated_at = report.generated_at.trunc_subsecs(6);
        let query = sqlx::query(UPSERT_SQL)
            .bind(id)
            .bind(report.key.digest.as_str())
            .bind(report.key.registration_uuid)
            .bind(report.key.mime_type.as_str());
        // The body goes as text: the column is `json`, which only validates it. A body moved
        // in is released once the statement has encoded its copy, at the bind.
        let query = match body {
            Some(body) => query.bind(Box::<str>::from(body)),
            None => query.bind(report.report.get()),
        };
        let row = on_conn!(self, c => query
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
            .bind(self.max_clock_skew.as_secs_f64())
            .bind(report.findings.as_ref().map(sqlx::types::Json))
            .bind(scan_id)
            .bind(holder)
            .fetch_one(c))
        .map_err(StoreError::query_err("upserting a report"))?;
        let corrupt = |e: sqlx::Error| StoreError::Corrupt {
            id,
            reason: e.to_string(),
        };
        let took = row
            .try_get::<Option<f64>, _>("took")
            .map_err(corrupt)?
            .map(|secs| std::time::Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or_default());
        let outcome = match row
            .try_get::<Option<bool>, _>("inserted")
            .map_err(corrupt)?
        {
            None => return Ok((UpsertOutcome::KeptExisting, None, took)),
            Some(true) => UpsertOutcome::Inserted,
            Some(false) => UpsertOutcome::Updated,
        };
        let meta = ReportMeta {
            id,
            digest: report.key.digest.to_string(),
            registration_uuid: report.key.registration_uuid,
            mime_type: report.key.mime_type.to_string(),
            summary: report.summary,
            scanner_name: report.scanner_name.clone(),
            scanner_vendor: report.scanner_vendor.clone(),
            scanner_version: report.scanner_version.clone(),
            generated_at: row.try_get("generated_at").map_err(corrupt)?,
            created_at: row.try_get("created_at").map_err(corrupt)?,
            updated_at: row.try_get("updated_at").map_err(corrupt)?,
        };
        Ok((outcome, Some(meta), took))
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<StoredReport>, StoreError> {
        let row = on_conn!(self, c => sqlx::query(concat!(
            "SELECT ",
            meta_columns!(),
            ", report FROM scan_report WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(c))
        .map_err(StoreError::query_err("reading a report"))?;
        row.map(|row| {
            let meta = decode_meta(&row)?;
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
        let row = on_conn!(self, c => sqlx::query(concat!(
            "SELECT ",
            meta_columns!(),
            " FROM scan_report WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(c))
        .map_err(StoreError::query_err("reading report metadata"))?;
        row.as_ref().map(decode_meta).transpose()
    }

    /// The stored findings of each of `ids` that has them (vulnerability reports), by id, with
    /// the `updated_at` of the row they belong to. Reads the compact column only, never a body.
    pub async fn findings(
        &self,
        ids: &[Uuid],
    ) -> Result<Vec<(Uuid, DateTime<Utc>, Vec<Finding>)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = on_conn!(self, c => sqlx::query(
            "SELECT id, updated_at, findings FROM scan_report \
             WHERE id = ANY($1) AND findings IS NOT NULL ORDER BY id",
        )
        .bind(ids)
        .fetch_all(c))
        .map_err(StoreError::query_err("reading report findings"))?;
        rows.iter()
            .map(|row| {
                let id: Uuid = row
                    .try_get("id")
                    .map_err(StoreError::query_err("decoding a report id"))?;
                let corrupt = |e: sqlx::Error| StoreError::Corrupt {
                    id,
                    reason: format!("findings: {e}"),
                };
                let updated_at = row.try_get("updated_at").map_err(corrupt)?;
                let sqlx::types::Json(findings) = row.try_get("findings").map_err(corrupt)?;
                Ok((id, updated_at, findings))
            })
            .collect()
    }

    /// The report of a key. Looks up by the derived id, which the key determines.
    pub async fn get_by_key(&self, key: &ReportKey) -> Result<Option<StoredReport>, StoreError> {
        self.get(key.report_id()).await
    }

    /// Metadata of the reports with these ids, in one round trip (ids not stored are absent).
    pub async fn list_meta(
        &self,
        ids: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, ReportMeta>, StoreError> {
        if ids.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let rows = on_conn!(self, c => sqlx::query(concat!(
            "SELECT ",
            meta_columns!(),
            " FROM scan_report WHERE id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(c))
        .map_err(StoreError::query_err("listing report metadata"))?;
        rows.iter()
            .map(|row| decode_meta(row).map(|m| (m.id, m)))
            .collect()
    }

    /// Sends the body of report `id` as JSON text to `out`, in pieces of at most `chunk` bytes,
    /// and returns how many bytes it sent (0: no such report). The database renders the text
    /// once and returns it as rows of one piece each, which arrive as they are read: with a
    /// bounded `out`, a large body never sits whole in this process.
    pub async fn stream_body(
        &self,
        id: Uuid,
        chunk: usize,
        out: &tokio::sync::mpsc::Sender<Result<Vec<u8>, StoreError>>,
    ) -> Result<u64, StoreError> {
        use futures::TryStreamExt;
        let chunk = i32::try_from(chunk.clamp(1024, 8 << 20)).unwrap_or(1 << 20);
        let failed = StoreError::query_err("reading a report body");
        let mut lease = self.connections.acquire().await.map_err(failed)?;
        let conn = lease.conn().map_err(failed)?;
        // Ok((bytes sent, whether every row was read)).
        let read = async {
            // MATERIALIZED: read and convert the text once, not once per piece.
            let mut rows = sqlx::query_scalar::<_, Vec<u8>>(
                "WITH body AS MATERIALIZED (
                     SELECT convert_to(report::text, 'UTF8') AS b FROM scan_report WHERE id = $1)
                 SELECT substring(body.b FROM piece * $2 + 1 FOR $2)
                 FROM body, generate_series(0, (length(body.b) - 1) / $2) AS piece
                 ORDER BY piece",
            )
            .bind(id)
            .bind(chunk)
            .fetch(conn);
            let mut sent = 0u64;
            while let Some(piece) = rows.try_next().await? {
                sent = sent.saturating_add(piece.len() as u64);
                if out.send(Ok(piece)).await.is_err() {
                    // The client went away: stop reading.
                    return Ok((sent, false));
                }
            }
            Ok((sent, true))
        }
        .await;
        // Rows left unread leave the connection mid-answer: it is closed, not reused.
        if !matches!(read, Ok((_, false))) {
            lease.settle(&read);
        }
        read.map(|(sent, _)| sent).map_err(failed)
    }

    /// Metadata of every report of a digest, ordered by registration and MIME type.
    pub async fn list_by_digest(&self, digest: &Digest) -> Result<Vec<ReportMeta>, StoreError> {
        let rows = on_conn!(self, c => sqlx::query(concat!(
            "SELECT ",
            meta_columns!(),
            " FROM scan_report WHERE digest = $1 ORDER BY registration_uuid, mime_type"
        ))
        .bind(digest.as_str())
        .fetch_all(c))
        .map_err(StoreError::query_err("listing reports"))?;
        rows.iter().map(decode_meta).collect()
    }
}
