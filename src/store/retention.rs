//! Bounded growth: reports no ScanRequest references are deleted after the retention, finished
//! scan jobs and stale queue bookkeeping after theirs. Every delete is a small batch in its own
//! statement, so no sweep holds row locks for long or blocks a reconcile behind it.
//!
//! The guarantee "a report referenced again before the sweep is never deleted under a request
//! that uses it" rests on two statements meeting on the row lock: [`Store::tuple_state`]
//! (every reconcile's read of a tuple) refreshes `last_referenced_at` of a report about to
//! age out in the same statement that reads it, and the sweep's `DELETE` re-checks the age on
//! the row it locked. Whichever commits first wins: a refreshed row is too young to delete; a
//! deleted one reads as missing and is scanned again.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::connections::on_conn;
use super::{Store, StoreError};

/// Report ids per refresh statement.
const TOUCH_BATCH: usize = 500;

/// Tables the sweep deletes from and reports the size of.
pub const TABLES: &[&str] = &[
    "scan_report",
    "scan_job",
    "scan_job_waiter",
    "scan_queue_turn",
];

/// How long queue bookkeeping outlives its use: an expired waiter, a namespace's last turn.
const QUEUE_KEEP: Duration = Duration::from_secs(3600);

/// What one sweep deleted, per table, and how long it took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    pub reports: u64,
    pub jobs: u64,
    pub waiters: u64,
    pub turns: u64,
    pub took: Duration,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Store {
    /// Records that ScanRequests reference `ids` now. Only rows not refreshed within `slack`
    /// are written, so a steady state costs few writes. Returns the rows refreshed.
    pub async fn touch_reports(&self, ids: &[Uuid], slack: Duration) -> Result<u64, StoreError> {
        let mut touched = 0;
        for chunk in ids.chunks(TOUCH_BATCH) {
            let done = on_conn!(self, c => sqlx::query(
                "UPDATE scan_report SET last_referenced_at = now() \
                 WHERE id = ANY($1) AND last_referenced_at < now() - make_interval(secs => $2)",
            )
            .bind(chunk)
            .bind(secs(slack))
            .execute(c))
            .map_err(StoreError::query_err("recording referenced reports"))?;
            touched += done.rows_affected();
        }
        Ok(touched)
    }

    /// Deletes up to `batch` reports not referenced for `retention`. `SKIP LOCKED` passes over
    /// a row a reconcile is refreshing right now; the outer condition re-checks the age on the
    /// locked row, so a refresh committed meanwhile keeps it.
    pub async fn sweep_reports_batch(
        &self,
        retention: Duration,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let done = on_conn!(self, c => sqlx::query(
            "DELETE FROM scan_report WHERE id IN ( \
               SELECT id FROM scan_report \
                WHERE last_referenced_at < now() - make_interval(secs => $1) \
                ORDER BY last_referenced_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             AND last_referenced_at < now() - make_interval(secs => $1)",
        )
        .bind(secs(retention))
        .bind(batch)
        .execute(c))
        .map_err(StoreError::query_err("deleting unreferenced reports"))?;
        Ok(done.rows_affected())
    }

    /// Deletes up to `batch` done or failed jobs last changed more than `keep` ago. A request
    /// that still wants such a tuple enqueues a new job, as it would re-queue the old one.
    pub async fn sweep_jobs_batch(&self, keep: Duration, batch: i64) -> Result<u64, StoreError> {
        let done = on_conn!(self, c => sqlx::query(
            "DELETE FROM scan_job WHERE report_id IN ( \
               SELECT report_id FROM scan_job \
                WHERE state IN ('done', 'failed') \
                  AND updated_at < now() - make_interval(secs => $1) \
                LIMIT $2 FOR UPDATE SKIP LOCKED) \
             AND state IN ('done', 'failed') AND updated_at < now() - make_interval(secs => $1)",
        )
        .bind(secs(keep))
        .bind(batch)
        .execute(c))
        .map_err(StoreError::query_err("deleting finished scan jobs"))?;
        Ok(done.rows_affected())
    }

    /// Deletes up to `batch` waiters whose lease ran out `keep` ago (their requests stopped
    /// asking) and up to `batch` namespace turns older than `keep` (a namespace idle that long
    /// starts as never served, which only moves it to the front of its next round).
    async fn sweep_queue_batch(
        &self,
        keep: Duration,
        batch: i64,
    ) -> Result<(u64, u64), StoreError> {
        let waiters = on_conn!(self, c => sqlx::query(
            "DELETE FROM scan_job_waiter WHERE (report_id, namespace) IN ( \
               SELECT report_id, namespace FROM scan_job_waiter \
                WHERE lease_expires_at < now() - make_interval(secs => $1) \
                LIMIT $2 FOR UPDATE SKIP LOCKED) \
             AND lease_expires_at < now() - make_interval(secs => $1)",
        )
        .bind(secs(keep))
        .bind(batch)
        .execute(c))
        .map_err(StoreError::query_err("deleting expired scan waiters"))?;
        let turns = on_conn!(self, c => sqlx::query(
            "DELETE FROM scan_queue_turn WHERE (registration_uuid, namespace) IN ( \
               SELECT registration_uuid, namespace FROM scan_queue_turn \
                WHERE served_at < now() - make_interval(secs => $1) \
                LIMIT $2 FOR UPDATE SKIP LOCKED) \
             AND served_at < now() - make_interval(secs => $1)",
        )
        .bind(secs(keep))
        .bind(batch)
        .execute(c))
        .map_err(StoreError::query_err("deleting old queue turns"))?;
        Ok((waiters.rows_affected(), turns.rows_affected()))
    }

    /// One sweep: batches of `batch` rows until each table has nothing left to delete.
    /// `report_retention` `None` keeps reports for ever; jobs go after `job_retention`.
    pub async fn sweep(
        &self,
        report_retention: Option<Duration>,
        job_retention: Duration,
        batch: i64,
    ) -> Result<Swept, StoreError> {
        let started = Instant::now();
        let batch = batch.max(1);
        let full = |n: u64| i64::try_from(n).is_ok_and(|n| n >= batch);
        let mut swept = Swept::default();
        if let Some(retention) = report_retention {
            loop {
                let n = self.sweep_reports_batch(retention, batch).await?;
                swept.reports += n;
                if !full(n) {
                    break;
                }
            }
        }
        loop {
            let n = self.sweep_jobs_batch(job_retention, batch).await?;
            swept.jobs += n;
            if !full(n) {
                break;
            }
        }
        loop {
            let (w, t) = self.sweep_queue_batch(QUEUE_KEEP, batch).await?;
            swept.waiters += w;
            swept.turns += t;
            if !full(w) && !full(t) {
                break;
            }
        }
        swept.took = started.elapsed();
        Ok(swept)
    }

    /// On-disk size of each of [`TABLES`] with its indexes and TOAST, in bytes.
    pub async fn table_bytes(&self) -> Result<Vec<(String, i64)>, StoreError> {
        on_conn!(self, c => sqlx::query_as(
            "SELECT t, coalesce(pg_total_relation_size(to_regclass(t)), 0) \
             FROM unnest($1::text[]) AS t ORDER BY t",
        )
        .bind(TABLES)
        .fetch_all(c))
        .map_err(StoreError::query_err("measuring table sizes"))
    }
}
