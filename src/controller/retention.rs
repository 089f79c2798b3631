//! The leader's retention loop: every [`Context::sweep_interval`] it records which reports the
//! ScanRequests reference (the report ids in their status, from the controller's watch caches;
//! no finalizer), then sweeps what is no longer needed (`store::retention`).
//!
//! References are recorded before each sweep and only from synced caches, so a report that a
//! request's status names is refreshed within one interval of the status being written; the
//! read in each reconcile (`Store::tuple_state`) covers the moment before the status exists.
//! Each cycle also drops the backoff counters and Event series of requests no longer in the
//! caches.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::runtime::reflector::ObjectRef;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::context::Context;
use super::watch::RequestCache;
use crate::api::ScanRequest;
use crate::metrics::ApiSource;

/// Rows per delete statement: small, so that no sweep holds many row locks at once.
const SWEEP_BATCH: i64 = 500;

/// The report ids named in the status of the cached ScanRequests.
pub fn referenced(requests: &[RequestCache]) -> Vec<Uuid> {
    let ids: BTreeSet<Uuid> = requests
        .iter()
        .flat_map(|cache| cache.store.state())
        .flat_map(|sr| {
            sr.status
                .as_ref()
                .map(|s| {
                    s.reports
                        .iter()
                        .filter_map(|r| Uuid::parse_str(&r.report_id).ok())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect();
    ids.into_iter().collect()
}

/// Runs until `shutdown`: waits for the caches, then records references and sweeps each
/// interval. A failed reference update skips that sweep (an unrecorded reference must never
/// let its report go).
pub async fn run(ctx: Arc<Context>, requests: Vec<RequestCache>, shutdown: CancellationToken) {
    // Only a cache that has read its whole first list names every referenced report.
    for cache in &requests {
        tokio::select! {
            listed = cache.listed() => if !listed { return; },
            () = shutdown.cancelled() => return,
        }
    }
    let mut tick = tokio::time::interval(ctx.sweep_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        cycle(&ctx, &requests).await;
    }
}

async fn cycle(ctx: &Context, requests: &[RequestCache]) {
    // Backoff counters of requests that are gone (deleted while the watch was down).
    let live: std::collections::HashSet<ObjectRef<ScanRequest>> = requests
        .iter()
        .flat_map(|cache| cache.store.state())
        .map(|sr| ObjectRef::from(sr.as_ref()))
        .collect();
    ctx.backoff.retain(|object| live.contains(object));
    // Series of Events about requests that are gone, or past their window.
    ctx.recorder.retain(|object| live.contains(object));
    ctx.announced.retain(|object| live.contains(object));
    let retention = ctx.report_retention();
    if let Some(slack) = ctx.touch_after() {
        let ids = referenced(requests);
        if let Err(e) = ctx.store.touch_reports(&ids, slack).await {
            ctx.metrics.api_error(ApiSource::Postgres);
            tracing::warn!(error = %e, "cannot record referenced reports; skipping this sweep");
            return;
        }
    }
    match ctx
        .store
        .sweep(retention, ctx.config.job_retention, SWEEP_BATCH)
        .await
    {
        Ok(swept) => {
            ctx.metrics.swept(&swept);
            if swept.reports + swept.jobs > 0 {
                tracing::info!(
                    reports = swept.reports,
                    jobs = swept.jobs,
                    took_ms = u64::try_from(swept.took.as_millis()).unwrap_or(u64::MAX),
                    "retention sweep"
                );
            }
        }
        Err(e) => {
            ctx.metrics.api_error(ApiSource::Postgres);
            tracing::warn!(error = %e, "retention sweep failed; retrying next interval");
        }
    }
    match ctx.store.table_bytes().await {
        Ok(sizes) => ctx.metrics.table_bytes(&sizes),
        Err(e) => {
            ctx.metrics.api_error(ApiSource::Postgres);
            tracing::debug!(error = %e, "cannot measure table sizes");
        }
    }
}
