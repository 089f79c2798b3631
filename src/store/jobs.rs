//! Durable single-flight scan jobs in PostgreSQL, keyed by report id.
//!
//! Exactly one scan per tuple is in flight across every reconciler, ScanRequest and replica:
//! a requester enqueues the tuple, claims it when the scanner has a free slot (a short claim
//! lease, so a crashed claimant is replaced), records the adapter's scan id, and anyone then
//! polls that scan. See `migrations/*_scan_job.sql` for the states.
//!
//! Every transition is one conditional statement, so racing callers cannot both win it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};
use uuid::Uuid;

use super::connections::on_conn;
use super::reports::{decode_meta, meta_columns};
use super::{ReportMeta, Store, StoreError};
use crate::identity::ReportKey;

/// Advisory-lock class for per-scanner queue decisions (ASCII "SCNQ").
const QUEUE_LOCK_CLASS: i32 = 0x5343_4e51;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for a free slot of the scanner.
    Queued,
    /// `holder` is submitting the scan.
    Submitting { holder: String },
    /// The adapter accepted the scan; poll `scan_id` from `next_poll_at` on.
    Submitted {
        scan_id: String,
        next_poll_at: DateTime<Utc>,
    },
    /// The last scan completed.
    Done,
    /// The adapter rejected the scan permanently.
    Failed { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub report_id: Uuid,
    pub state: JobState,
    /// When the current lease ends (see the migration for what it means per state).
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    /// The database's clock when the row was read, for comparisons without clock skew.
    pub now: DateTime<Utc>,
}

impl Job {
    /// Whether a lease that guards this state has run out (a crashed claimant, a lost scan).
    pub fn lease_expired(&self) -> bool {
        self.lease_expires_at.is_some_and(|t| t <= self.now)
    }
}

/// Timings of the job protocol.
#[derive(Debug, Clone, Copy)]
pub struct Leases {
    /// How long a claimant may take to submit before others take over.
    pub claim: Duration,
    /// How long a submitted scan may take before it is presumed lost and resubmitted.
    pub scan: Duration,
    /// How long a queued entry stays wanted without a requester refreshing it.
    pub queue: Duration,
}

impl Default for Leases {
    fn default() -> Self {
        Self {
            claim: Duration::from_secs(60),
            scan: Duration::from_secs(30 * 60),
            queue: Duration::from_secs(120),
        }
    }
}

/// Result of asking for a free slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the claim and must submit now.
    Won,
    /// Someone else is submitting or has submitted; poll or wait.
    Taken(Job),
    /// The scanner is at its in-flight limit; `ahead` queued entries go first.
    Queued { ahead: i64 },
}

/// What [`Store::tuple_state_or_open`] needs to ask for and claim the scan of a new tuple: the
/// arguments [`Store::request_scan`] and [`Store::claim`] take.
#[derive(Debug, Clone, Copy)]
pub struct Opening<'a> {
    pub key: &'a ReportKey,
    /// The requester's namespace, recorded as a waiter of the job.
    pub namespace: &'a str,
    pub max_in_flight: i64,
    pub holder: &'a str,
    pub leases: &'a Leases,
}

/// What came of opening a new tuple's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The job was created and the caller holds its claim: submit now.
    Won,
    /// The job was created and waits for a free slot; `ahead` entries go first.
    Queued { ahead: i64 },
    /// Another requester created the job after the read: nothing changed; go on with
    /// [`Store::request_scan`] and [`Store::claim`].
    Exists,
}

/// A tuple's state as [`Store::tuple_state_or_open`] read it.
#[derive(Debug, Clone)]
pub struct TupleState {
    pub meta: Option<ReportMeta>,
    /// The job as read, before any opening.
    pub job: Option<Job>,
    /// The database clock.
    pub now: DateTime<Utc>,
    /// `Some` when the tuple was new and an opening was asked for.
    pub opened: Option<Opened>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The columns of `scan_job` a [`Job`] is read from (with `now() AS db_now`): the one list
/// every read of a job selects, decoded by [`JobRow`].
macro_rules! job_columns {
    () => {
        "report_id, state, scan_id, holder, lease_expires_at, next_poll_at, completed_at, \
         attempts, last_error"
    };
}

/// `$sql RETURNING` the job's columns and the database clock.
macro_rules! returning_job {
    ($sql:literal) => {
        concat!($sql, " RETURNING ", job_columns!(), ", now() AS db_now")
    };
}

/// A row of [`job_columns!`] and `db_now`.
#[derive(FromRow)]
struct JobRow {
    report_id: Uuid,
    state: String,
    scan_id: Option<String>,
    holder: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    next_poll_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    attempts: i32,
    last_error: Option<String>,
    db_now: DateTime<Utc>,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(r: JobRow) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            id: r.report_id,
            reason,
        };
        let state = match r.state.as_str() {
            "queued" => JobState::Queued,
            "submitting" => JobState::Submitting {
                holder: r.holder.clone().unwrap_or_default(),
            },
            "submitted" => JobState::Submitted {
                scan_id: r
                    .scan_id
                    .clone()
                    .ok_or_else(|| corrupt("submitted job without scan id".into()))?,
                next_poll_at: r.next_poll_at.unwrap_or(r.db_now),
            },
            "done" => JobState::Done,
            "failed" => JobState::Failed {
                error: r.last_error.clone().unwrap_or_default(),
            },
            other => return Err(corrupt(format!("unknown job state {other:?}"))),
        };
        Ok(Job {
            report_id: r.report_id,
            state,
            lease_expires_at: r.lease_expires_at,
            completed_at: r.completed_at,
            attempts: r.attempts,
            now: r.db_now,
        })
    }
}

/// A job from a row that holds [`job_columns!`] and `db_now`; a row that does not decode is
/// reported as a corrupt job.
fn job_from_row(row: &PgRow) -> Result<Job, StoreError> {
    let report_id: Uuid = row
        .try_get("report_id")
        .map_err(StoreError::query_err("decoding a scan job"))?;
    JobRow::from_row(row)
        .map_err(|e| StoreError::Corrupt {
            id: report_id,
            reason: e.to_string(),
        })?
        .try_into()
}

impl Store {
    /// The job of a report id, if any.
    pub async fn job(&self, report_id: Uuid) -> Result<Option<Job>, StoreError> {
        let row = on_conn!(self, c => sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            ", now() AS db_now FROM scan_job WHERE report_id = $1"
        ))
        .bind(report_id)
        .fetch_optional(c))
        .map_err(StoreError::query_err("reading a scan job"))?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// The stored report's metadata, the job and the database clock of one report id, in one
    /// round trip.
    ///
    /// With `touch_after` (report retention is on), reading the report also records that it is
    /// referenced when its `last_referenced_at` is older than that, in the same statement: a
    /// retention sweep racing this read either deletes the row first (it then reads as
    /// missing) or finds it refreshed and keeps it (see `store::retention`). A row older than
    /// `touch_after` that could not be refreshed (the sweep holds or deleted it) reads as
    /// missing.
    pub async fn tuple_state(
        &self,
        report_id: Uuid,
        touch_after: Option<Duration>,
    ) -> Result<(Option<ReportMeta>, Option<Job>, DateTime<Utc>), StoreError> {
        let state = self
            .tuple_state_or_open(report_id, touch_after, None)
            .await?;
        Ok((state.meta, state.job, state.now))
    }

    /// [`Store::tuple_state`] that, with `open`, also asks for and claims the scan of a tuple it
    /// finds new (neither a report, nor a job): what [`Store::request_scan`] and
    /// [`Store::claim`] would do next, in the same round trip (`scan_job_open()`, see the
    /// migrations). `opened` says what came of it; `job` is the state read before.
    pub async fn tuple_state_or_open(
        &self,
        report_id: Uuid,
        touch_after: Option<Duration>,
        open: Option<&Opening<'_>>,
    ) -> Result<TupleState, StoreError> {
        // Without retention nothing is refreshed: an age limit no row reaches.
        let touch_secs = touch_after.map_or(f64::MAX, secs).min(1e11);
        // One text without the opening (the common read) and one with it.
        macro_rules! read_state {
            ($($open:literal)?) => {
                concat!(
                    "WITH touched AS (UPDATE scan_report SET last_referenced_at = now() \
                       WHERE id = $1 AND last_referenced_at < now() - make_interval(secs => $2) \
                       RETURNING id) \
                     SELECT now() AS db_now, r.*, j.*",
                    $(", o.outcome AS opened, o.ahead AS opened_ahead", $open,)?
                    " FROM (SELECT 1) AS one LEFT JOIN (SELECT ",
                    meta_columns!(),
                    " FROM scan_report WHERE id = $1 \
                       AND (last_referenced_at >= now() - make_interval(secs => $2) \
                            OR EXISTS (SELECT 1 FROM touched))) AS r ON true \
                     LEFT JOIN (SELECT ",
                    job_columns!(),
                    " FROM scan_job WHERE report_id = $1) AS j ON true",
                    $(" LEFT JOIN LATERAL scan_job_open(r.id IS NULL AND j.report_id IS NULL, \
                       $1, $3, $4, $5, $6, $7, $8, $9, $10, $11) AS o ON true", $open)?
                )
            };
        }
        let row = on_conn!(self, c => match open {
            None => sqlx::query(read_state!())
                .bind(report_id)
                .bind(touch_secs)
                .fetch_one(c),
            Some(o) => sqlx::query(read_state!(""))
                .bind(report_id)
                .bind(touch_secs)
                .bind(o.key.registration_uuid)
                .bind(o.key.digest.as_str())
                .bind(o.key.mime_type.as_str())
                .bind(o.namespace)
                .bind(secs(o.leases.queue))
                .bind(o.max_in_flight)
                .bind(o.holder)
                .bind(secs(o.leases.claim))
                .bind(QUEUE_LOCK_CLASS)
                .fetch_one(c),
        })
        .map_err(StoreError::query_err("reading a report and its scan job"))?;
        let q = StoreError::query_err("decoding a report and its scan job");
        let now: DateTime<Utc> = row.try_get("db_now").map_err(q)?;
        let meta = match row.try_get::<Option<Uuid>, _>("id").map_err(q)? {
            Some(_) => Some(decode_meta(&row)?),
            None => None,
        };
        let job = match row.try_get::<Option<Uuid>, _>("report_id").map_err(q)? {
            Some(_) => Some(job_from_row(&row)?),
            None => None,
        };
        let opened = match open {
            None => None,
            Some(_) => {
                let outcome: Option<String> = row.try_get("opened").map_err(q)?;
                let ahead: Option<i64> = row.try_get("opened_ahead").map_err(q)?;
                match outcome.as_deref() {
                    None => None,
                    Some("won") => Some(Opened::Won),
                    Some("queued") => Some(Opened::Queued {
                        ahead: ahead.unwrap_or_default(),
                    }),
                    Some("exists") => Some(Opened::Exists),
                    Some(other) => {
                        return Err(StoreError::Corrupt {
                            id: report_id,
                            reason: format!("opening the scan job answered {other:?}"),
                        });
                    }
                }
            }
        };
        Ok(TupleState {
            meta,
            job,
            now,
            opened,
        })
    }

    /// Asks for a scan of `key` that completes after `needed_after` (`None`: any completed
    /// scan is too old, as when no report is stored).
    ///
    /// Creates a queued job, or re-queues a done one whose last completion is older than
    /// `needed_after`, or a failed one when `retry_failed` or when it failed longer than
    /// `failed_retry_after` ago. A job already queued or in flight is joined: its queue lease is
    /// refreshed and it is returned unchanged otherwise.
    ///
    /// `namespace` (the requester's) is recorded as a waiter of the job with the same queue
    /// lease, in the same statement: the claim orders the queue round-robin across the
    /// namespaces still waiting (see the fair-queue migration).
    pub async fn request_scan(
        &self,
        key: &ReportKey,
        namespace: &str,
        needed_after: Option<DateTime<Utc>>,
        retry_failed: bool,
        failed_retry_after: Duration,
        leases: &Leases,
    ) -> Result<Job, StoreError> {
        let row = on_conn!(self, c => sqlx::query(returning_job!(
            "WITH waiter AS (INSERT INTO scan_job_waiter AS w \
               (report_id, namespace, registration_uuid, lease_expires_at) \
               VALUES ($1, $9, $2, now() + make_interval(secs => $5)) \
               ON CONFLICT (report_id, namespace) DO UPDATE \
               SET lease_expires_at = EXCLUDED.lease_expires_at) \
             INSERT INTO scan_job AS j (report_id, registration_uuid, digest, mime_type, state, \
             lease_expires_at) \
             VALUES ($1, $2, $3, $4, 'queued', now() + make_interval(secs => $5)) \
             ON CONFLICT (report_id) DO UPDATE SET \
               state = CASE WHEN j.state IN ('done', 'failed') THEN 'queued' ELSE j.state END, \
               enqueued_at = CASE WHEN j.state IN ('done', 'failed') THEN now() ELSE j.enqueued_at END, \
               last_error = CASE WHEN j.state IN ('done', 'failed') THEN NULL ELSE j.last_error END, \
               lease_expires_at = CASE \
                 WHEN j.state IN ('done', 'failed', 'queued') THEN now() + make_interval(secs => $5) \
                 ELSE j.lease_expires_at END, \
               updated_at = now() \
             WHERE j.state = 'queued' \
                OR (j.state = 'done' AND (j.completed_at IS NULL OR j.completed_at < $6)) \
                OR (j.state = 'failed' AND ($7 OR j.updated_at < now() - make_interval(secs => $8)))"
        ))
        .bind(key.report_id())
        .bind(key.registration_uuid)
        .bind(key.digest.as_str())
        .bind(key.mime_type.as_str())
        .bind(secs(leases.queue))
        .bind(needed_after.unwrap_or(DateTime::<Utc>::MAX_UTC))
        .bind(retry_failed)
        .bind(secs(failed_retry_after))
        .bind(namespace)
        .fetch_optional(c))
        .map_err(StoreError::query_err("requesting a scan"))?;
        match row {
            Some(row) => job_from_row(&row),
            // Nothing to change: the job is in flight, done recently enough, or failed.
            None => self.job(key.report_id()).await?.ok_or(StoreError::Corrupt {
                id: key.report_id(),
                reason: "scan job vanished while requesting a scan".into(),
            }),
        }
    }

    /// Tries to claim a queued (or abandoned) job for submission, honouring the scanner's
    /// in-flight limit and a round-robin order across the namespaces still waiting (within a
    /// namespace, first come first served). One round trip:
    /// the decision runs in `scan_job_claim()` (see the migrations) under a per-scanner lock.
    pub async fn claim(
        &self,
        report_id: Uuid,
        registration_uuid: Uuid,
        max_in_flight: i64,
        holder: &str,
        leases: &Leases,
    ) -> Result<Claim, StoreError> {
        let (outcome, ahead): (String, i64) =
            on_conn!(self, c => sqlx::query_as("SELECT outcome, ahead FROM scan_job_claim($1, $2, $3, $4, $5, $6)")
                .bind(report_id)
                .bind(registration_uuid)
                .bind(max_in_flight)
                .bind(holder)
                .bind(secs(leases.claim))
                .bind(QUEUE_LOCK_CLASS)
                .fetch_one(c))
                .map_err(StoreError::query_err("claiming a scan slot"))?;
        let vanished = |what: &str| StoreError::Corrupt {
            id: report_id,
            reason: format!("scan job {what}"),
        };
        match outcome.as_str() {
            "won" => Ok(Claim::Won),
            "queued" => Ok(Claim::Queued { ahead }),
            "taken" => Ok(Claim::Taken(
                self.job(report_id)
                    .await?
                    .ok_or_else(|| vanished("vanished while claiming"))?,
            )),
            _ => Err(vanished("claimed before it was requested")),
        }
    }

    /// Records the adapter's scan id for a claim the caller still holds. `false` when the claim
    /// was lost (it expired and someone took over); the caller's scan is then left to expire.
    pub async fn record_submission(
        &self,
        report_id: Uuid,
        holder: &str,
        scan_id: &str,
        leases: &Leases,
    ) -> Result<bool, StoreError> {
        self.submission(report_id, holder, scan_id, leases, Duration::ZERO)
            .await
    }

    /// [`Store::record_submission`] that also takes the scan's first poll for the caller (what
    /// [`Store::take_poll`] with the claim lease would do next), in the same statement: the
    /// submitter polls at once, and should it die, others poll once the claim lease ran out.
    pub async fn record_submission_and_poll(
        &self,
        report_id: Uuid,
        holder: &str,
        scan_id: &str,
        leases: &Leases,
    ) -> Result<bool, StoreError> {
        self.submission(report_id, holder, scan_id, leases, leases.claim)
            .await
    }

    /// [`Store::record_submission`] after the submitter's own first poll found no report: the
    /// next poll is due after `next_poll`, for whoever takes it (what [`Store::poll_later`]
    /// would do next), in the same statement.
    pub async fn record_submission_polled(
        &self,
        report_id: Uuid,
        holder: &str,
        scan_id: &str,
        leases: &Leases,
        next_poll: Duration,
    ) -> Result<bool, StoreError> {
        self.submission(report_id, holder, scan_id, leases, next_poll)
            .await
    }

    /// The submission, with the next poll due after `poll_held`.
    async fn submission(
        &self,
        report_id: Uuid,
        holder: &str,
        scan_id: &str,
        leases: &Leases,
        poll_held: Duration,
    ) -> Result<bool, StoreError> {
        let done = on_conn!(self, c => sqlx::query(
            "UPDATE scan_job SET state = 'submitted', scan_id = $3, submitted_at = now(), \
               next_poll_at = now() + make_interval(secs => $5), \
               lease_expires_at = now() + make_interval(secs => $4), updated_at = now() \
             WHERE report_id = $1 AND state = 'submitting' AND holder = $2",
        )
        .bind(report_id)
        .bind(holder)
        .bind(scan_id)
        .bind(secs(leases.scan))
        .bind(secs(poll_held))
        .execute(c))
        .map_err(StoreError::query_err("recording a scan submission"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a claim back after a transient submit failure, so that another caller may try.
    pub async fn release_claim(
        &self,
        report_id: Uuid,
        holder: &str,
        leases: &Leases,
    ) -> Result<(), StoreError> {
        on_conn!(self, c => sqlx::query(
            "UPDATE scan_job SET state = 'queued', holder = NULL, \
               lease_expires_at = now() + make_interval(secs => $3), updated_at = now() \
             WHERE report_id = $1 AND state = 'submitting' AND holder = $2",
        )
        .bind(report_id)
        .bind(holder)
        .bind(secs(leases.queue))
        .execute(c))
        .map_err(StoreError::query_err("releasing a scan claim"))?;
        Ok(())
    }

    /// Schedules the next poll of a scan that is not ready yet.
    pub async fn poll_later(
        &self,
        report_id: Uuid,
        scan_id: &str,
        after: Duration,
    ) -> Result<(), StoreError> {
        on_conn!(self, c => sqlx::query(
            "UPDATE scan_job SET next_poll_at = now() + make_interval(secs => $3), \
               updated_at = now() WHERE report_id = $1 AND scan_id = $2 AND state = 'submitted'",
        )
        .bind(report_id)
        .bind(scan_id)
        .bind(secs(after))
        .execute(c))
        .map_err(StoreError::query_err("scheduling a poll"))?;
        Ok(())
    }

    /// Takes the next poll of a submitted scan that is due, for `lease`: `false` when it is not
    /// due or another requester (of any ScanRequest, on any replica) took it. Only the winner
    /// fetches the report, so a report is downloaded once per scan however many requests
    /// joined it; the others read the stored row once it is there. A winner that dies leaves
    /// the poll to others after `lease`.
    pub async fn take_poll(
        &self,
        report_id: Uuid,
        scan_id: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let taken = on_conn!(self, c => sqlx::query(
            "UPDATE scan_job SET next_poll_at = now() + make_interval(secs => $3), \
               updated_at = now() \
             WHERE report_id = $1 AND scan_id = $2 AND state = 'submitted' \
               AND (next_poll_at IS NULL OR next_poll_at <= now())",
        )
        .bind(report_id)
        .bind(scan_id)
        .bind(secs(lease))
        .execute(c))
        .map_err(StoreError::query_err("taking a poll"))?;
        Ok(taken.rows_affected() == 1)
    }

    /// Marks the scan done after its report was stored. Idempotent: `None` when the job had
    /// already moved on (another caller completed or replaced it), otherwise how long the scan
    /// took from submission.
    pub async fn complete(
        &self,
        report_id: Uuid,
        scan_id: &str,
    ) -> Result<Option<Duration>, StoreError> {
        let took: Option<f64> = on_conn!(self, c => sqlx::query_scalar(
            "UPDATE scan_job SET state = 'done', completed_at = now(), scan_id = NULL, \
               holder = NULL, lease_expires_at = NULL, next_poll_at = NULL, last_error = NULL, \
               updated_at = now() WHERE report_id = $1 AND scan_id = $2 AND state = 'submitted' \
             RETURNING extract(epoch FROM now() - coalesce(submitted_at, now()))::float8",
        )
        .bind(report_id)
        .bind(scan_id)
        .fetch_optional(c))
        .map_err(StoreError::query_err("completing a scan"))?;
        Ok(took.map(|secs| Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or_default()))
    }

    /// The adapter no longer knows `scan_id` (404): queue the report id again, keeping its place.
    pub async fn requeue_lost(
        &self,
        report_id: Uuid,
        scan_id: &str,
        leases: &Leases,
    ) -> Result<(), StoreError> {
        on_conn!(self, c => sqlx::query(
            "UPDATE scan_job SET state = 'queued', scan_id = NULL, holder = NULL, \
               next_poll_at = NULL, lease_expires_at = now() + make_interval(secs => $3), \
               updated_at = now() WHERE report_id = $1 AND scan_id = $2 AND state = 'submitted'",
        )
        .bind(report_id)
        .bind(scan_id)
        .bind(secs(leases.queue))
        .execute(c))
        .map_err(StoreError::query_err("re-queueing a lost scan"))?;
        Ok(())
    }

    /// Records a permanent failure of the current submission or scan.
    pub async fn fail(
        &self,
        report_id: Uuid,
        holder_or_scan: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        on_conn!(self, c => sqlx::query(
            "UPDATE scan_job SET state = 'failed', last_error = $3, scan_id = NULL, \
               holder = NULL, lease_expires_at = NULL, next_poll_at = NULL, updated_at = now() \
             WHERE report_id = $1 AND state IN ('submitting', 'submitted') \
               AND (holder = $2 OR scan_id = $2)",
        )
        .bind(report_id)
        .bind(holder_or_scan)
        .bind(error)
        .execute(c))
        .map_err(StoreError::query_err("recording a failed scan"))?;
        Ok(())
    }

    /// Queued jobs of one scanner per namespace still waiting for them (live queue and waiter
    /// leases), sorted by namespace. A job several namespaces wait for counts in each; a job
    /// without a live waiter counts under `""`.
    pub async fn queue_depths(
        &self,
        registration_uuid: Uuid,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        on_conn!(self, c => sqlx::query_as(
            "SELECT coalesce(w.namespace, '') AS namespace, count(*) FROM scan_job j \
             LEFT JOIN scan_job_waiter w \
               ON w.report_id = j.report_id AND w.lease_expires_at > now() \
             WHERE j.registration_uuid = $1 AND j.state = 'queued' AND j.lease_expires_at > now() \
             GROUP BY 1 ORDER BY 1",
        )
        .bind(registration_uuid)
        .fetch_all(c))
        .map_err(StoreError::query_err("counting queued scans per namespace"))
    }

    /// In-flight (claimed or submitted, lease alive) and queued job counts of one scanner.
    pub async fn scanner_load(&self, registration_uuid: Uuid) -> Result<(i64, i64), StoreError> {
        on_conn!(self, c => sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state IN ('submitting', 'submitted')), \
               count(*) FILTER (WHERE state = 'queued') FROM scan_job \
             WHERE registration_uuid = $1 AND lease_expires_at > now()",
        )
        .bind(registration_uuid)
        .fetch_one(c))
        .map_err(StoreError::query_err("counting scans in flight"))
    }
}
