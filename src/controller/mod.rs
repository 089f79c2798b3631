//! The ScanRequest controller. [`reconcile`] is the whole pipeline, one line per step:
//!
//! 1. resolve the Scanner (adapter metadata cached with a TTL, Scanner status updated);
//! 2. validate the request against the adapter and its Secrets;
//! 3. compute the report id of every requested MIME type;
//! 4. use a stored report that is fresh enough;
//! 5. otherwise join or start the single scan in flight for that report id (PostgreSQL);
//! 6. poll it by requeueing after the adapter's `Refresh-After`, never sleeping;
//! 7. upsert the report;
//! 8. apply the status with server-side apply, only when it changed.
//!
//! Steps and their state live in their own modules:
//! * [`context`]: settings, shared clients, per-object backoff.
//! * [`events`]: Kubernetes Events, repeats counted in series.
//! * [`plan`]: steps 1–3 (resolve, validate, credentials, rescan demand).
//! * [`artifact`]: step 2b: tag resolution, media type, image index fan-out, proofs of access.
//! * [`credentials`]: adapter and registry credentials from Kubernetes Secrets.
//! * [`adapters`]: step 1's Scanner resolution, adapter client cache and Scanner status.
//! * [`scan`]: steps 4–7 for one report ([`scan::ReportTask`]).
//! * [`decide`]: the pure decisions (stored report, phase, overall state, rescans, requeue).
//! * [`verdict`]: the policy: which rules apply (step 2), the verdict on the stored findings
//!   (before step 8), the Event when it changes.
//! * [`status`]: step 8 (settle, degrade, apply) and the kstatus conditions.
//! * [`watch`]: the watch wiring of [`run`].
//! * [`generations`]: which watch events reconcile (a new spec), and which requests are gone.
//! * [`retention`]: the leader's reference recording and retention sweep.
//! * [`error`]: [`ReconcileError`], permanent or transient.
//! * [`limits`]: the per-namespace rate limit of forced rescans.

pub mod adapters;
pub mod announced;
pub mod artifact;
pub mod context;
pub mod credentials;
pub mod decide;
pub mod error;
pub mod events;
pub mod generations;
pub mod limits;
pub mod plan;
#[cfg(test)]
mod proptests;
pub mod retention;
pub mod scan;
pub mod status;
pub mod verdict;
pub mod wakeups;
pub mod watch;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::Instrument;

use crate::api::ScanRequest;
use crate::metrics::{ApiSource, ReconcileResult};
use crate::redact::Redactor;
pub use context::{Config, Context, MANAGER};
pub use error::ReconcileError;
use plan::Plan;
use scan::ReportTask;
pub use watch::run;

// `scanrequest`, not `name`: JSON logs already use `name` for the span's own name.
#[tracing::instrument(skip_all, fields(namespace = %sr.namespace().unwrap_or_default(), scanrequest = %sr.name_any()))]
pub async fn reconcile(sr: Arc<ScanRequest>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let mut timer = ctx.metrics.reconcile_timer();
    let (result, label) = contain_panic(pipeline(&sr, &ctx), &sr).await;
    timer.set_result(if result.is_err() {
        ReconcileResult::Error
    } else {
        label
    });
    result
}

/// Second line of defence: a panic inside one reconcile becomes [`ReconcileError::Panicked`]
/// (logged with the object, retried with backoff by [`error_policy`]) instead of unwinding into
/// the controller runtime, which would end the process for every tenant.
async fn contain_panic(
    steps: impl Future<Output = (Result<Action, ReconcileError>, ReconcileResult)>,
    sr: &ScanRequest,
) -> (Result<Action, ReconcileError>, ReconcileResult) {
    match AssertUnwindSafe(steps).catch_unwind().await {
        Ok(done) => done,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default()
                .chars()
                .take(500)
                .collect::<String>();
            tracing::error!(
                namespace = %sr.namespace().unwrap_or_default(),
                scanrequest = %sr.name_any(),
                panic = %message,
                "reconcile panicked; the operator keeps running and retries this object with backoff"
            );
            (Err(ReconcileError::Panicked), ReconcileResult::Error)
        }
    }
}

/// Steps 1–8; the label says how it went, for the reconcile metric.
async fn pipeline(
    sr: &ScanRequest,
    ctx: &Context,
) -> (Result<Action, ReconcileError>, ReconcileResult) {
    // 1–3. Resolve the Scanner, validate, compute the report ids, prove access.
    let plan = match Plan::make(sr, ctx).await {
        Ok(plan) => plan,
        Err(e) => return failed(sr, ctx, e, &Redactor::default()).await,
    };
    // 4–7. Per report: use the stored one, or scan, poll and store.
    let mut outcomes = Vec::with_capacity(plan.targets.len());
    for (key, manifest) in plan.reports() {
        let span = tracing::info_span!("report", report_id = %key.report_id(), mime_type = %key.mime_type, platform = manifest.platform.as_deref());
        let task = ReportTask::new(sr, &plan, (key, manifest), ctx);
        match task.drive().instrument(span).await {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => return failed(sr, ctx, e, &plan.redactor).await,
        }
    }
    // A moved tag whose new digest is still being scanned keeps the previous reports.
    let keep = status::keeps_previous(sr, &plan.artifact, &outcomes);
    // The policy verdict on the stored findings (never a report body).
    let now = chrono::Utc::now();
    let verdict = match plan.policy.as_ref().filter(|_| !keep) {
        Some(applied) => match verdict::judge(applied, &outcomes, ctx, now).await {
            Ok(verdict) => verdict,
            Err(e) => return failed(sr, ctx, e, &plan.redactor).await,
        },
        None => None,
    };
    // 8. Apply the status, only when it changed.
    let (status, next) = status::settle(
        sr,
        plan.registration,
        &plan.rescan,
        &outcomes,
        verdict.as_ref(),
        ctx.config.stall_recheck,
        now,
    );
    let (status, next) = status::with_artifact(sr, status, next, &plan.artifact, keep, now);
    let result = status::apply(sr, ctx, status).await.map(|()| next.action());
    if result.is_ok() {
        verdict::announce(sr, ctx, sr.status.as_ref(), verdict.as_ref());
        ctx.backoff.forget(&sr.into());
    }
    (result, ReconcileResult::Ok)
}

/// A step failed: record it in the status (its text scrubbed by `redactor`), stall or retry.
async fn failed(
    sr: &ScanRequest,
    ctx: &Context,
    e: ReconcileError,
    redactor: &Redactor,
) -> (Result<Action, ReconcileError>, ReconcileResult) {
    let label = if e.is_permanent() {
        ReconcileResult::Stalled
    } else {
        ReconcileResult::Retry
    };
    match &e {
        ReconcileError::Database(_) => ctx.metrics.api_error(ApiSource::Postgres),
        ReconcileError::Kube { .. } => ctx.metrics.api_error(ApiSource::Kubernetes),
        _ => {}
    }
    (status::degrade(sr, ctx, e, redactor).await, label)
}

/// Errors that escape `reconcile` are Kubernetes API failures (a status write); back off.
pub fn error_policy(sr: Arc<ScanRequest>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.metrics.api_error(ApiSource::Kubernetes);
    let delay = ctx.backoff.failed(sr.as_ref().into());
    tracing::warn!(error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decide::tests::fixture;

    #[tokio::test]
    async fn a_panicking_reconcile_becomes_a_retried_error_and_the_task_survives() {
        let sr = fixture("new.yaml");
        // Spawned like the controller runtime does: a panic that escaped would fail the join.
        let task = tokio::spawn(async move {
            let boom = async {
                let huge = chrono::Duration::MAX;
                // The overflow that once ended the operator (issue 11).
                let _ = chrono::Utc::now() - huge;
                (Ok(Action::await_change()), ReconcileResult::Ok)
            };
            contain_panic(boom, &sr).await
        });
        let (result, label) = task.await.expect("the panic did not escape the reconcile");
        let error = result.expect_err("a panic is an error");
        assert!(matches!(error, ReconcileError::Panicked), "{error}");
        assert!(!error.is_permanent(), "retried with backoff, not stalled");
        assert_eq!(error.reason(), "InternalError");
        assert!(matches!(label, ReconcileResult::Error));
    }

    #[tokio::test]
    async fn a_reconcile_that_does_not_panic_passes_through_unchanged() {
        let sr = fixture("new.yaml");
        let ok = async { (Ok(Action::await_change()), ReconcileResult::Stalled) };
        let (result, label) = contain_panic(ok, &sr).await;
        assert_eq!(result.ok(), Some(Action::await_change()));
        assert!(matches!(label, ReconcileResult::Stalled));
    }
}
