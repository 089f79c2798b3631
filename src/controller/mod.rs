//! The ScanRequest controller. The whole reconcile pipeline is in this file:
//!
//! 1. resolve the Scanner (adapter metadata cached with a TTL, Scanner status updated);
//! 2. validate the request against the adapter and its Secrets;
//! 3. compute the report id of every requested MIME type;
//! 4. use a stored report that is fresh enough;
//! 5. otherwise join or start the single scan in flight for that report id (PostgreSQL);
//! 6. poll it by requeueing after the adapter's `Refresh-After`, never sleeping;
//! 7. upsert the report;
//! 8. apply the status with server-side apply, only when it changed.

pub mod adapters;
pub mod error;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use rand::Rng;
use tracing::Instrument;
use uuid::Uuid;

use crate::api::{
    PendingRescan, ReportPhase, ReportStatus, ScanRequest, ScanRequestStatus, Scanner,
};
use crate::identity::{Digest, MimeType};
use crate::jobs::{Claim, JobState, Leases, Tuple};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::scanner::RegistryAuthorization;
use crate::store::{NewReport, ReportMeta, Store, UpsertOutcome};
use adapters::{Adapter, Adapters, Poll};
pub use error::ReconcileError;
use status::Overall;

/// Field manager of every write; also the Events' reporting controller.
pub const MANAGER: &str = "scanreport-operator";

/// Settings of the controller (flags of `scanreport-operator run`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    pub concurrency: u16,
    pub default_max_in_flight: i32,
    pub metadata_ttl: Duration,
    /// How long a submitted scan may run before it is presumed lost and resubmitted.
    pub scan_timeout: Duration,
    /// How often a queued request checks for a free scan slot.
    pub queue_poll: Duration,
    /// How long to wait before retrying a permanently failed scan or stalled request.
    pub stall_recheck: Duration,
    /// Unique per process: holder of scan claims.
    pub instance: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            concurrency: 16,
            default_max_in_flight: 4,
            metadata_ttl: Duration::from_secs(300),
            scan_timeout: Duration::from_secs(30 * 60),
            queue_poll: Duration::from_secs(2),
            stall_recheck: Duration::from_secs(300),
            instance: format!("scanreport-operator-{:016x}", rand::random::<u64>()),
        }
    }
}

/// State shared by all reconciles.
pub struct Context {
    pub client: Client,
    pub store: Store,
    pub adapters: Adapters,
    pub recorder: Recorder,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<ScanRequest>, u32>>,
}

impl Context {
    pub fn new(client: Client, store: Store, config: Config, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: Some(config.instance.clone()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            adapters: Adapters::new(
                client.clone(),
                config.metadata_ttl,
                config.default_max_in_flight,
            ),
            client,
            store,
            config,
            metrics,
            failures: Mutex::default(),
        }
    }

    fn leases(&self, adapter: &Adapter) -> Leases {
        Leases {
            // Long enough for one POST /scan with its timeout, then others may take over.
            claim: adapter.request_timeout * 2 + Duration::from_secs(1),
            scan: self.config.scan_timeout,
            queue: self.config.queue_poll * 10 + Duration::from_secs(30),
        }
    }

    /// Exponential backoff with jitter: 1 s, 2 s, 4 s … up to 5 minutes, times 0.5–1.0.
    fn backoff(&self, sr: &ScanRequest) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(ObjectRef::from(sr)).or_insert(0);
        *n = n.saturating_add(1);
        let base = Duration::from_secs(1 << (*n - 1).min(8)).min(Duration::from_secs(300));
        base.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    fn succeeded(&self, sr: &ScanRequest) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&ObjectRef::from(sr));
    }

    /// Publishes an Event in the background, as client-go's recorder does: a slow or failing
    /// Events API never holds up a reconcile.
    ///
    /// The Recorder merges Events of one object by reason and action into a series, keeping
    /// the first note; `action` therefore names what the Event is about (e.g. the report MIME
    /// type), so that the Events of two reports of one request stay apart.
    async fn event(
        &self,
        sr: &ScanRequest,
        type_: EventType,
        reason: &str,
        about: &str,
        note: String,
    ) {
        let mut action = format!("Scan {about}");
        action.truncate(128);
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action,
            secondary: None,
        };
        let (recorder, reference) = (self.recorder.clone(), sr.object_ref(&()));
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                metrics.api_error("kubernetes");
                tracing::warn!(error = %e, reason = %event.reason, "cannot publish event");
            }
        });
    }
}

/// What steps 1–3 work out.
struct Plan {
    adapter: Arc<Adapter>,
    registration: Uuid,
    targets: Vec<Tuple>,
    registry_auth: Option<RegistryAuthorization>,
    rescan_after: Option<Duration>,
    rescan: Rescan,
}

/// The demand of `spec.rescanToken`.
enum Rescan {
    /// The reports answer the current token (or there is none).
    Settled,
    /// A new token wants scans completed after `requested_at` (database clock).
    Wanted {
        token: String,
        requested_at: DateTime<Utc>,
    },
}

/// What steps 4–7 leave for one report.
struct Outcome {
    tuple: Tuple,
    phase: ReportPhase,
    meta: Option<ReportMeta>,
    message: Option<String>,
    /// When to look again; `None` when nothing is due.
    requeue: Option<Duration>,
}

// `scanrequest`, not `name`: JSON logs already use `name` for the span's own name.
#[tracing::instrument(skip_all, fields(namespace = %sr.namespace().unwrap_or_default(), scanrequest = %sr.name_any()))]
pub async fn reconcile(sr: Arc<ScanRequest>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = std::time::Instant::now();
    let (result, label) = pipeline(&sr, &ctx).await;
    ctx.metrics.reconciled(
        if result.is_err() { "error" } else { label },
        started.elapsed(),
    );
    result
}

/// Steps 1–8; the label says how it went, for the reconcile metric.
async fn pipeline(
    sr: &ScanRequest,
    ctx: &Context,
) -> (Result<Action, ReconcileError>, &'static str) {
    let steps = async {
        let plan = plan(sr, ctx).await?;
        let mut outcomes = Vec::with_capacity(plan.targets.len());
        for tuple in &plan.targets {
            let span = tracing::info_span!("report", report_id = %tuple.report_id(), mime_type = %tuple.mime_type);
            outcomes.push(drive(sr, &plan, tuple, ctx).instrument(span).await?);
        }
        Ok::<_, ReconcileError>((plan, outcomes))
    };
    match steps.await {
        Ok((plan, outcomes)) => {
            let (status, action) = settle(sr, &plan, &outcomes, ctx);
            let result = apply_status(sr, ctx, status).await.map(|()| action);
            if result.is_ok() {
                ctx.succeeded(sr);
            }
            (result, "ok")
        }
        Err(e) => {
            let label = if e.is_permanent() { "stalled" } else { "retry" };
            match &e {
                ReconcileError::Database(_) => ctx.metrics.api_error("postgres"),
                ReconcileError::Kube { .. } => ctx.metrics.api_error("kubernetes"),
                _ => {}
            }
            (degrade(sr, ctx, e).await, label)
        }
    }
}

/// Errors that escape `reconcile` are Kubernetes API failures (a status write); back off.
pub fn error_policy(sr: Arc<ScanRequest>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.metrics.api_error("kubernetes");
    let delay = ctx.backoff(&sr);
    tracing::warn!(error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Steps 1–3: resolve the Scanner, validate, compute the report ids.
async fn plan(sr: &ScanRequest, ctx: &Context) -> Result<Plan, ReconcileError> {
    let spec = &sr.spec;
    let adapter = ctx.adapters.resolve(&spec.scanner).await?;
    let registration = adapter.registration;

    let digest = Digest::parse(&spec.artifact.digest).map_err(|e| ReconcileError::InvalidSpec {
        field: "spec.artifact.digest".into(),
        message: e.to_string(),
    })?;
    let mut targets: Vec<Tuple> = Vec::new();
    for (index, raw) in spec.report_mime_types.iter().enumerate() {
        let mime_type = MimeType::parse(raw).map_err(|e| ReconcileError::InvalidSpec {
            field: format!("spec.reportMimeTypes[{index}]"),
            message: e.to_string(),
        })?;
        adapter.check_supported(index, &mime_type, spec.artifact.mime_type)?;
        // Two spellings of one MIME type are one report.
        if !targets.iter().any(|t| t.mime_type == mime_type) {
            targets.push(Tuple {
                digest: digest.clone(),
                registration_uuid: registration,
                mime_type,
            });
        }
    }
    let rescan_after = spec
        .rescan_after
        .as_deref()
        .map(parse_rescan_after)
        .transpose()?;
    let registry_auth = registry_authorization(sr, ctx).await?;
    let rescan = rescan_demand(sr, ctx).await?;
    Ok(Plan {
        adapter,
        registration,
        targets,
        registry_auth,
        rescan_after,
        rescan,
    })
}

/// Steps 4–7 for one report id.
async fn drive(
    sr: &ScanRequest,
    plan: &Plan,
    tuple: &Tuple,
    ctx: &Context,
) -> Result<Outcome, ReconcileError> {
    let store = &ctx.store;
    let leases = ctx.leases(&plan.adapter);
    let report_id = tuple.report_id();
    let (meta, job, now) = store.tuple_state(report_id).await?;

    // 4. A stored report that is fresh enough is used as it is.
    let needed_after = needed_after(plan, now);
    let last_scan = job
        .as_ref()
        .and_then(|j| j.completed_at)
        .or(meta.as_ref().map(|m| m.updated_at));
    if let Some(meta) = &meta
        && needed_after.is_none_or(|t| last_scan.is_some_and(|l| l >= t))
    {
        let requeue = plan.rescan_after.and_then(|every| {
            let stale_at = last_scan? + chrono::Duration::from_std(every).ok()?;
            Some((stale_at - now).to_std().unwrap_or_default())
        });
        return Ok(outcome(
            tuple,
            ReportPhase::Ready,
            Some(meta.clone()),
            None,
            requeue,
        ));
    }

    // 5. Join the scan in flight, or ask for one.
    let job = match job {
        Some(j)
            if matches!(
                j.state,
                JobState::Submitting { .. } | JobState::Submitted { .. }
            ) =>
        {
            j
        }
        _ => {
            let retry_failed =
                sr.status.as_ref().and_then(|s| s.observed_generation) != sr.metadata.generation;
            let demand = if meta.is_some() { needed_after } else { None };
            store
                .request_scan(
                    tuple,
                    demand,
                    retry_failed,
                    ctx.config.stall_recheck,
                    &leases,
                )
                .await?
        }
    };
    let waiting = |phase, message: String, after| {
        let phase = if meta.is_some() {
            ReportPhase::Rescanning
        } else {
            phase
        };
        Ok(outcome(
            tuple,
            phase,
            meta.clone(),
            Some(message),
            Some(after),
        ))
    };
    let scanner = &plan.adapter.name;
    match &job.state {
        JobState::Failed { error } => Ok(outcome(
            tuple,
            ReportPhase::Failed,
            meta.clone(),
            Some(error.clone()),
            Some(ctx.config.stall_recheck),
        )),
        JobState::Done => waiting(
            ReportPhase::Scanning,
            "Storing the report".into(),
            Duration::from_secs(1),
        ),
        JobState::Submitted {
            scan_id,
            next_poll_at,
        } if !job.lease_expired() => {
            if *next_poll_at > job.now {
                let after = (*next_poll_at - job.now).to_std().unwrap_or_default();
                return waiting(
                    ReportPhase::Scanning,
                    format!("Scanner {scanner:?} is scanning"),
                    after,
                );
            }
            // 6. Poll.
            poll(sr, plan, tuple, scan_id, meta.clone(), ctx, &leases, false).await
        }
        JobState::Submitting { .. } if !job.lease_expired() => {
            let left = job.lease_expires_at.map_or(Duration::ZERO, |t| {
                (t - job.now).to_std().unwrap_or_default()
            });
            waiting(
                ReportPhase::Scanning,
                format!("Submitting the scan to scanner {scanner:?}"),
                left.min(Duration::from_secs(2)),
            )
        }
        // Queued, or a claim or scan whose lease ran out: try to take a slot.
        _ => {
            let holder = &ctx.config.instance;
            match store
                .claim(
                    report_id,
                    plan.registration,
                    plan.adapter.max_in_flight,
                    holder,
                    &leases,
                )
                .await?
            {
                Claim::Won => submit(sr, plan, tuple, meta.clone(), ctx, &leases).await,
                Claim::Queued { .. } => waiting(
                    ReportPhase::Pending,
                    format!("Waiting for a free scan slot of scanner {scanner:?}"),
                    ctx.config.queue_poll,
                ),
                Claim::Taken(_) => waiting(
                    ReportPhase::Scanning,
                    format!("Scanner {scanner:?} is scanning"),
                    Duration::from_secs(1),
                ),
            }
        }
    }
}

/// Step 5, having won the claim: submit the scan and record its id.
async fn submit(
    sr: &ScanRequest,
    plan: &Plan,
    tuple: &Tuple,
    meta: Option<ReportMeta>,
    ctx: &Context,
    leases: &Leases,
) -> Result<Outcome, ReconcileError> {
    let report_id = tuple.report_id();
    let holder = &ctx.config.instance;
    let submitted = plan
        .adapter
        .submit(&sr.spec, &tuple.mime_type, plan.registry_auth.as_ref())
        .await;
    match submitted {
        Ok(scan_id) => {
            tracing::info!(scan_id, "scan submitted");
            ctx.metrics
                .scans_submitted
                .get_or_create(&Metrics::scanner(&plan.adapter.name))
                .inc();
            if !ctx
                .store
                .record_submission(report_id, holder, &scan_id, leases)
                .await?
            {
                // Our claim expired meanwhile and someone else took over; follow theirs.
                let phase = if meta.is_some() {
                    ReportPhase::Rescanning
                } else {
                    ReportPhase::Scanning
                };
                return Ok(outcome(
                    tuple,
                    phase,
                    meta,
                    None,
                    Some(Duration::from_secs(1)),
                ));
            }
            // An adapter may answer at once; poll now rather than after a requeue. A report
            // stored right away gets one Event that tells both.
            let polled = poll(sr, plan, tuple, &scan_id, meta, ctx, leases, true).await;
            if !matches!(&polled, Ok(o) if o.phase == ReportPhase::Ready) {
                ctx.event(
                    sr,
                    EventType::Normal,
                    "ScanSubmitted",
                    tuple.mime_type.as_str(),
                    format!(
                        "Submitted a scan of {} for {} to scanner {:?}",
                        tuple.digest, tuple.mime_type, plan.adapter.name
                    ),
                )
                .await;
            }
            polled
        }
        Err(e) if e.is_transient() => {
            ctx.store.release_claim(report_id, holder, leases).await?;
            Err(ReconcileError::scanner(&plan.adapter.name, e))
        }
        Err(e) => reject(ctx, &plan.adapter.name, tuple, meta, holder, e).await,
    }
}

/// Steps 6–7: fetch the report; store it when it is there.
#[allow(clippy::too_many_arguments)]
async fn poll(
    sr: &ScanRequest,
    plan: &Plan,
    tuple: &Tuple,
    scan_id: &str,
    meta: Option<ReportMeta>,
    ctx: &Context,
    leases: &Leases,
    submitted_now: bool,
) -> Result<Outcome, ReconcileError> {
    let report_id = tuple.report_id();
    let pending = if meta.is_some() {
        ReportPhase::Rescanning
    } else {
        ReportPhase::Scanning
    };
    let scanner = &plan.adapter.name;
    match plan.adapter.poll(scan_id, &tuple.mime_type).await {
        Ok(Poll::Ready(report)) => {
            let new = NewReport {
                digest: tuple.digest.clone(),
                registration_uuid: tuple.registration_uuid,
                mime_type: tuple.mime_type.clone(),
                summary: report.summary.unwrap_or_default(),
                report: report.body,
                scanner_name: report.scanner.name,
                scanner_vendor: report.scanner.vendor,
                scanner_version: report.scanner.version,
                generated_at: report.generated_at,
            };
            let (outcome_, meta) = ctx.store.upsert_and_read(&new).await?;
            ctx.metrics
                .upserts
                .get_or_create(&OutcomeLabels {
                    outcome: outcome_.as_str(),
                })
                .inc();
            if let Some(took) = ctx.store.complete(report_id, scan_id).await? {
                let labels = Metrics::scanner(scanner);
                ctx.metrics.scans_completed.get_or_create(&labels).inc();
                ctx.metrics
                    .scan_latency
                    .get_or_create(&labels)
                    .observe(took.as_secs_f64());
            }
            tracing::info!(outcome = outcome_.as_str(), "report stored");
            if outcome_ != UpsertOutcome::KeptExisting {
                ctx.event(
                    sr,
                    EventType::Normal,
                    "ReportStored",
                    tuple.mime_type.as_str(),
                    format!(
                        "{} report {report_id} ({}) of {}",
                        if submitted_now {
                            "Scanned and stored"
                        } else {
                            "Stored"
                        },
                        tuple.mime_type,
                        tuple.digest
                    ),
                )
                .await;
            }
            Ok(outcome(tuple, ReportPhase::Ready, meta, None, None))
        }
        Ok(Poll::NotReady(after)) => {
            ctx.store.poll_later(report_id, scan_id, after).await?;
            Ok(outcome(
                tuple,
                pending,
                meta,
                Some(format!("Scanner {scanner:?} is scanning")),
                Some(after),
            ))
        }
        Ok(Poll::Lost) => {
            tracing::warn!(scan_id, "the scanner lost the scan; submitting again");
            ctx.store.requeue_lost(report_id, scan_id, leases).await?;
            Ok(outcome(
                tuple,
                pending,
                meta,
                Some(format!(
                    "Scanner {scanner:?} lost the scan; submitting again"
                )),
                Some(Duration::from_millis(200)),
            ))
        }
        Err(e) if e.is_transient() => Err(ReconcileError::scanner(scanner, e)),
        Err(e) => reject(ctx, scanner, tuple, meta, scan_id, e).await,
    }
}

/// The adapter rejected the scan for good: the job fails for every requester of the report,
/// and the report shows why.
async fn reject(
    ctx: &Context,
    scanner: &str,
    tuple: &Tuple,
    meta: Option<ReportMeta>,
    holder_or_scan: &str,
    e: crate::scanner::ScannerError,
) -> Result<Outcome, ReconcileError> {
    let error = ReconcileError::scanner(scanner, e).to_string();
    ctx.metrics
        .scans_failed
        .get_or_create(&Metrics::scanner(scanner))
        .inc();
    ctx.store
        .fail(tuple.report_id(), holder_or_scan, &error)
        .await?;
    Ok(outcome(
        tuple,
        ReportPhase::Failed,
        meta,
        Some(error),
        Some(ctx.config.stall_recheck),
    ))
}

/// Step 8, part 1: the status and the next action from the outcomes.
fn settle(
    sr: &ScanRequest,
    plan: &Plan,
    outcomes: &[Outcome],
    ctx: &Context,
) -> (ScanRequestStatus, Action) {
    let previous = sr.status.clone().unwrap_or_default();
    let reports: Vec<ReportStatus> = outcomes.iter().map(report_status).collect();
    let failed = outcomes.iter().find(|o| o.phase == ReportPhase::Failed);
    let busy = outcomes.iter().find(|o| o.phase != ReportPhase::Ready);
    let overall = match (failed, busy) {
        (Some(f), _) => Overall::Stalled {
            reason: "ScanRejected".into(),
            message: format!(
                "{}: {}",
                f.tuple.mime_type,
                f.message.clone().unwrap_or_default()
            ),
        },
        (None, Some(b)) => Overall::Progressing {
            reason: match b.phase {
                ReportPhase::Pending => "Queued",
                ReportPhase::Rescanning => "Rescanning",
                _ => "Scanning",
            }
            .into(),
            message: b.message.clone().unwrap_or_else(|| "Scanning".into()),
            usable: status::all_usable(&reports),
        },
        (None, None) => Overall::Ready,
    };
    let (rescan_token, pending_rescan) = match &plan.rescan {
        Rescan::Settled => (sr.spec.rescan_token.clone(), None),
        Rescan::Wanted { .. } if overall == Overall::Ready => (sr.spec.rescan_token.clone(), None),
        Rescan::Wanted {
            token,
            requested_at,
        } => (
            previous.rescan_token.clone(),
            Some(PendingRescan {
                token: token.clone(),
                requested_at: status::k8s_time(*requested_at),
            }),
        ),
    };
    let generation = sr.metadata.generation;
    let status = ScanRequestStatus {
        observed_generation: generation,
        conditions: status::conditions(&previous.conditions, &overall, generation, Utc::now()),
        registration_uuid: Some(plan.registration.to_string()),
        summary: status::headline_summary(&reports),
        reports,
        rescan_token,
        pending_rescan,
    };
    let next = outcomes.iter().filter_map(|o| o.requeue).min();
    let action = match (&overall, next) {
        (_, Some(after)) => Action::requeue(jitter(after.max(Duration::from_millis(100)))),
        (Overall::Stalled { .. }, None) => Action::requeue(ctx.config.stall_recheck),
        (_, None) => Action::await_change(),
    };
    (status, action)
}

/// Step 8, part 2: server-side apply of the status, skipped when nothing changed.
async fn apply_status(
    sr: &ScanRequest,
    ctx: &Context,
    status: ScanRequestStatus,
) -> Result<(), ReconcileError> {
    if sr.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<ScanRequest> =
        Api::namespaced(ctx.client.clone(), &sr.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "scanreport.io/v1alpha1",
        "kind": "ScanRequest",
        "status": status,
    });
    api.patch_status(
        &sr.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(ReconcileError::kube("applying the ScanRequest status"))?;
    Ok(())
}

/// A failed pipeline: record why in the status (keeping the reports it had), then stall or
/// back off.
async fn degrade(
    sr: &ScanRequest,
    ctx: &Context,
    error: ReconcileError,
) -> Result<Action, ReconcileError> {
    let mut status = sr.status.clone().unwrap_or_default();
    let (overall, action) = if error.is_permanent() {
        tracing::info!(error = %error, "stalled");
        let stalled = Overall::Stalled {
            reason: error.reason().into(),
            message: error.to_string(),
        };
        let newly = !status
            .conditions
            .iter()
            .any(|c| c.type_ == crate::api::CONDITION_STALLED && c.message == error.to_string());
        if newly {
            ctx.event(
                sr,
                EventType::Warning,
                error.reason(),
                "request",
                error.to_string(),
            )
            .await;
        }
        // A changed ScanRequest or Scanner triggers a reconcile; Secrets are not watched, so
        // look again after a while, never in a hot loop.
        (stalled, Action::requeue(ctx.config.stall_recheck))
    } else {
        let delay = ctx.backoff(sr);
        tracing::warn!(error = %error, retry_in = ?delay, "transient failure; retrying");
        let usable = !status.reports.is_empty() && status::all_usable(&status.reports);
        (
            Overall::Progressing {
                reason: error.reason().into(),
                message: error.to_string(),
                usable,
            },
            Action::requeue(delay),
        )
    };
    status.observed_generation = sr.metadata.generation;
    status.conditions = status::conditions(
        &status.conditions,
        &overall,
        sr.metadata.generation,
        Utc::now(),
    );
    apply_status(sr, ctx, status).await?;
    Ok(action)
}

fn outcome(
    tuple: &Tuple,
    phase: ReportPhase,
    meta: Option<ReportMeta>,
    message: Option<String>,
    requeue: Option<Duration>,
) -> Outcome {
    Outcome {
        tuple: tuple.clone(),
        phase,
        meta,
        message,
        requeue,
    }
}

fn report_status(o: &Outcome) -> ReportStatus {
    ReportStatus {
        mime_type: o.tuple.mime_type.to_string(),
        report_id: o.tuple.report_id().to_string(),
        phase: o.phase,
        summary: o
            .meta
            .as_ref()
            .filter(|_| adapters::has_summary(&o.tuple.mime_type))
            .map(|m| m.summary),
        generated_at: o.meta.as_ref().map(|m| status::k8s_time(m.generated_at)),
        scanner: o.meta.as_ref().map(|m| crate::api::ScannerInfo {
            name: m.scanner_name.clone(),
            vendor: m.scanner_vendor.clone(),
            version: m.scanner_version.clone(),
        }),
        message: o.message.clone().filter(|_| o.phase != ReportPhase::Ready),
    }
}

/// The time after which a scan must have completed for the stored report to count as fresh.
fn needed_after(plan: &Plan, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let by_age = plan
        .rescan_after
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map(|d| now - d);
    let by_token = match &plan.rescan {
        Rescan::Wanted { requested_at, .. } => Some(*requested_at),
        Rescan::Settled => None,
    };
    by_age.max(by_token)
}

fn parse_rescan_after(raw: &str) -> Result<Duration, ReconcileError> {
    let invalid = |message: String| ReconcileError::InvalidSpec {
        field: "spec.rescanAfter".into(),
        message,
    };
    let d = parse_go_duration(raw)
        .ok_or_else(|| invalid(format!("{raw:?} is not a duration such as 90m or 24h")))?;
    if d < Duration::from_secs(60) {
        return Err(invalid(format!(
            "{raw:?} is shorter than the minimum of 1m"
        )));
    }
    Ok(d)
}

/// Go's `time.ParseDuration` format, as the CRD pattern admits it.
pub fn parse_go_duration(raw: &str) -> Option<Duration> {
    let mut rest = raw.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// The registry credentials from `spec.registry.credentialsSecretRef`, if any.
async fn registry_authorization(
    sr: &ScanRequest,
    ctx: &Context,
) -> Result<Option<RegistryAuthorization>, ReconcileError> {
    let Some(secret_ref) = &sr.spec.registry.credentials_secret_ref else {
        return Ok(None);
    };
    let namespace = sr.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret = api
        .get_opt(&secret_ref.name)
        .await
        .map_err(ReconcileError::kube(
            "reading the registry credentials Secret",
        ))?
        .ok_or_else(|| ReconcileError::SecretNotFound {
            namespace: namespace.clone(),
            name: secret_ref.name.clone(),
        })?;
    crate::scanner::registry_authorization_from_secret(&secret, &sr.spec.registry.url)
        .map(Some)
        .map_err(|source| ReconcileError::SecretInvalid {
            namespace,
            name: secret_ref.name.clone(),
            source,
        })
}

/// Works out what `spec.rescanToken` asks for. A token present when the request is first seen
/// is taken as answered by whatever is stored; a *changed* token forces new scans.
async fn rescan_demand(sr: &ScanRequest, ctx: &Context) -> Result<Rescan, ReconcileError> {
    let status = sr.status.clone().unwrap_or_default();
    let Some(token) = sr.spec.rescan_token.clone() else {
        return Ok(Rescan::Settled);
    };
    if status.rescan_token.as_ref() == Some(&token) {
        return Ok(Rescan::Settled);
    }
    if let Some(pending) = status.pending_rescan.filter(|p| p.token == token) {
        return Ok(Rescan::Wanted {
            token,
            requested_at: status::chrono_time(&pending.requested_at),
        });
    }
    let first_sight = status.rescan_token.is_none() && status.reports.is_empty();
    if first_sight {
        return Ok(Rescan::Settled);
    }
    // The status keeps whole seconds; rounding up means a scan that completed just before the
    // token changed can never count as the forced one.
    let now = ctx.store.now().await?;
    let whole = now.timestamp() + i64::from(now.timestamp_subsec_nanos() > 0);
    Ok(Rescan::Wanted {
        token,
        requested_at: DateTime::from_timestamp(whole, 0).unwrap_or(now),
    })
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(1.0..=1.1))
}

/// Runs the controller until `shutdown` resolves: one watch per namespace (or one for all),
/// each re-reconciling the ScanRequests that name a Scanner when that Scanner changes.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: tokio_util::sync::CancellationToken,
    ready: tokio::sync::watch::Sender<bool>,
) {
    let shutdown_scanners = shutdown.clone();
    let namespaces: Vec<Option<String>> = if ctx.config.namespaces.is_empty() {
        vec![None]
    } else {
        ctx.config.namespaces.iter().cloned().map(Some).collect()
    };
    // One watch cache of Scanners for look-ups; each controller also watches Scanners to map a
    // changed Scanner to the ScanRequests that name it.
    let (scanner_reader, scanner_writer) = reflector::store();
    let scanner_cache = watcher(
        Api::<Scanner>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(scanner_writer)
    .for_each(|_| futures::future::ready(()));
    let scanner_cache = tokio::spawn(async move {
        tokio::select! {
            () = scanner_cache => {}
            () = shutdown_scanners.cancelled() => {}
        }
    });
    ctx.adapters.add_scanner_store(scanner_reader.clone());
    // Reconciles look Scanners up in this cache: an empty one would stall every request with
    // "Scanner does not exist" at start-up.
    tokio::select! {
        ready = scanner_reader.wait_until_ready() => {
            if ready.is_err() {
                return;
            }
        }
        () = shutdown.cancelled() => return,
    }
    let mut controllers = Vec::new();
    let mut stores = Caches {
        scanners: vec![scanner_reader],
        requests: Vec::new(),
    };
    for ns in namespaces {
        let requests: Api<ScanRequest> = match &ns {
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
            None => Api::all(ctx.client.clone()),
        };
        // Only spec changes (a new generation) trigger a reconcile from the watch: the
        // operator's own status writes would otherwise each cause one more, to no effect.
        // Requeues, Scanner changes and restarts still reconcile everything they must.
        let (sr_store, writer) = reflector::store();
        let changes = watcher(requests, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects()
            .predicate_filter(predicates::generation, Default::default());
        let controller = Controller::for_stream(changes, sr_store.clone()).with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency),
        );
        stores.requests.push(sr_store.clone());
        let controller = controller
            .watches(
                Api::<Scanner>::all(ctx.client.clone()),
                watcher::Config::default(),
                move |scanner: Scanner| {
                    let name = scanner.name_any();
                    sr_store
                        .state()
                        .into_iter()
                        .filter(|sr| sr.spec.scanner == name)
                        .map(|sr| ObjectRef::from(sr.as_ref()))
                        .collect::<Vec<_>>()
                },
            )
            .graceful_shutdown_on(shutdown.clone().cancelled_owned())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|res| async move {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "reconcile loop");
                }
            });
        controllers.push(controller);
    }
    let readiness = async move {
        for scanners in stores.scanners {
            scanners.wait_until_ready().await.ok();
        }
        for requests in stores.requests {
            requests.wait_until_ready().await.ok();
        }
        ready.send_replace(true);
        tracing::info!("watch caches synced");
    };
    futures::join!(futures::future::join_all(controllers), readiness);
    scanner_cache.abort();
}

/// Watch caches that must be filled before the operator reports ready.
#[derive(Default)]
struct Caches {
    scanners: Vec<reflector::Store<Scanner>>,
    requests: Vec<reflector::Store<ScanRequest>>,
}
