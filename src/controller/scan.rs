//! Steps 4–7 for one report id: use the stored report, or join or start the single scan in
//! flight, poll it, and store the report. A [`ReportTask`] carries what every step needs.

use std::time::Duration;

use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;

use super::adapters::Poll;
use super::artifact::Target;
use super::context::Context;
use super::decide::{self, Outcome, StoredReport};
use super::error::ReconcileError;
use super::plan::Plan;
use crate::api::{ReportPhase, ScanRequest};
use crate::identity::ReportKey;
use crate::metrics::Upsert;
use crate::store::{Claim, JobState, Leases, Opened, Opening};
use crate::store::{NewReport, ReportMeta, UpsertOutcome};

/// How long a request that waits on another's scan sleeps when no wake-up comes (a wake lost
/// to a restart): the reconcile that stores the report wakes it at once.
const JOINED_FALLBACK: Duration = Duration::from_secs(5);

/// One report of one ScanRequest, through steps 4–7.
pub struct ReportTask<'a> {
    sr: &'a ScanRequest,
    plan: &'a Plan,
    key: &'a ReportKey,
    /// The manifest the report is of.
    manifest: &'a Target,
    ctx: &'a Context,
    leases: Leases,
    /// The stored report, once read.
    stored: Option<ReportMeta>,
    /// Taken before the tuple was read (see `wakeups`).
    ticket: super::wakeups::Ticket,
}

impl<'a> ReportTask<'a> {
    pub fn new(
        sr: &'a ScanRequest,
        plan: &'a Plan,
        (key, manifest): (&'a ReportKey, &'a Target),
        ctx: &'a Context,
    ) -> Self {
        Self {
            sr,
            plan,
            key,
            manifest,
            ctx,
            leases: ctx.leases(&plan.adapter),
            stored: None,
            ticket: ctx.wakeups.ticket(),
        }
    }

    /// Steps 4–7.
    pub async fn drive(mut self) -> Result<Outcome, ReconcileError> {
        let store = &self.ctx.store;
        let report_id = self.key.report_id();
        // A new tuple (no report, no job) is also requested and claimed by this read.
        let opening = Opening {
            key: self.key,
            namespace: self.sr.metadata.namespace.as_deref().unwrap_or_default(),
            max_in_flight: self.plan.adapter.max_in_flight,
            holder: &self.ctx.config.instance,
            leases: &self.leases,
        };
        let state = store
            .tuple_state_or_open(report_id, self.ctx.touch_after(), Some(&opening))
            .await?;
        let (job, now) = (state.job, state.now);
        self.stored = state.meta;
        match state.opened {
            Some(Opened::Won) => return self.submit().await,
            Some(Opened::Queued { .. }) => {
                return Ok(self.waiting(
                    ReportPhase::Pending,
                    format!(
                        "Waiting for a free scan slot of scanner {:?}",
                        self.plan.adapter.name
                    ),
                    self.ctx.config.queue_poll,
                ));
            }
            // Someone else created the job meanwhile: request and claim as for any job.
            Some(Opened::Exists) | None => {}
        }

        // 4. A stored report that is fresh enough is used as it is.
        let last_scan = job
            .as_ref()
            .and_then(|j| j.completed_at)
            .or(self.stored.as_ref().map(|m| m.updated_at));
        let needed_after = decide::needed_after(self.plan.rescan_after, &self.plan.rescan, now);
        let demand = match decide::stored_report(
            self.stored.is_some(),
            last_scan,
            needed_after,
            self.plan.rescan_after,
            now,
        ) {
            StoredReport::Fresh { requeue } => {
                return Ok(self.outcome(ReportPhase::Ready, None, requeue));
            }
            StoredReport::Scan { newer_than } => newer_than,
        };

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
                let sr = self.sr;
                let retry_failed = sr.status.as_ref().and_then(|s| s.observed_generation)
                    != sr.metadata.generation;
                store
                    .request_scan(
                        self.key,
                        sr.metadata.namespace.as_deref().unwrap_or_default(),
                        demand,
                        retry_failed,
                        self.ctx.config.stall_recheck,
                        &self.leases,
                    )
                    .await?
            }
        };
        let plan = self.plan;
        let scanner = &plan.adapter.name;
        match &job.state {
            JobState::Failed { error } => Ok(self.outcome(
                ReportPhase::Failed,
                Some(error.clone()),
                Some(self.ctx.config.stall_recheck),
            )),
            JobState::Done => Ok(self.joined(
                ReportPhase::Scanning,
                "Storing the report".into(),
                Duration::from_secs(1),
            )),
            JobState::Submitted {
                scan_id,
                next_poll_at,
            } if !job.lease_expired() => {
                if *next_poll_at > job.now {
                    // Due to poll then (unless whoever polls first stores it before).
                    let after = (*next_poll_at - job.now).to_std().unwrap_or_default();
                    return Ok(self.joined(
                        ReportPhase::Scanning,
                        format!("Scanner {scanner:?} is scanning"),
                        after,
                    ));
                }
                // 6. Poll.
                self.poll(scan_id, false).await
            }
            JobState::Submitting { .. } if !job.lease_expired() => {
                let left = job.lease_expires_at.map_or(Duration::ZERO, |t| {
                    (t - job.now).to_std().unwrap_or_default()
                });
                Ok(self.joined(
                    ReportPhase::Scanning,
                    format!("Submitting the scan to scanner {scanner:?}"),
                    left.min(Duration::from_secs(2)),
                ))
            }
            // Queued, or a claim or scan whose lease ran out: try to take a slot.
            _ => {
                let claim = store
                    .claim(
                        report_id,
                        self.plan.registration,
                        self.plan.adapter.max_in_flight,
                        &self.ctx.config.instance,
                        &self.leases,
                    )
                    .await?;
                match claim {
                    Claim::Won => self.submit().await,
                    Claim::Queued { .. } => Ok(self.waiting(
                        ReportPhase::Pending,
                        format!("Waiting for a free scan slot of scanner {scanner:?}"),
                        self.ctx.config.queue_poll,
                    )),
                    Claim::Taken(_) => Ok(self.joined(
                        ReportPhase::Scanning,
                        format!("Scanner {scanner:?} is scanning"),
                        JOINED_FALLBACK,
                    )),
                }
            }
        }
    }

    /// Step 5, having won the claim: submit the scan and record its id.
    async fn submit(self) -> Result<Outcome, ReconcileError> {
        let (ctx, plan, key) = (self.ctx, self.plan, self.key);
        let report_id = key.report_id();
        let holder = &ctx.config.instance;
        let submitted = plan
            .adapter
            .submit(
                &self.sr.spec,
                self.manifest,
                &key.mime_type,
                plan.registry_auth.as_ref(),
            )
            .await;
        match submitted {
            Ok(scan_id) => {
                tracing::info!(scan_id, "scan submitted");
                ctx.record_submitter(report_id, plan.redactor.clone());
                ctx.metrics.scan_submitted(&plan.adapter.name);
                // The first poll is taken with the submission: it follows at once.
                if !ctx
                    .store
                    .record_submission_and_poll(report_id, holder, &scan_id, &self.leases)
                    .await?
                {
                    // Our claim expired meanwhile and someone else took over; follow theirs.
                    let phase =
                        decide::in_flight_phase(self.stored.is_some(), ReportPhase::Scanning);
                    return Ok(self.outcome(phase, None, Some(Duration::from_secs(1))));
                }
                // An adapter may answer at once; poll now rather than after a requeue. A
                // report stored right away gets one Event that tells both.
                let sr = self.sr;
                let polled = self.poll(&scan_id, true).await;
                if !matches!(&polled, Ok(o) if o.phase == ReportPhase::Ready) {
                    ctx.event(
                        sr,
                        EventType::Normal,
                        "ScanSubmitted",
                        key.mime_type.as_str(),
                        format!(
                            "Submitted a scan of {} for {} to scanner {:?}",
                            key.digest, key.mime_type, plan.adapter.name
                        ),
                    );
                }
                polled
            }
            Err(e) if e.is_transient() => {
                ctx.store
                    .release_claim(report_id, holder, &self.leases)
                    .await?;
                Err(ReconcileError::scanner(&plan.adapter.name, e))
            }
            Err(e) => self.reject(holder, e, true).await,
        }
    }

    /// Steps 6–7: fetch the report; store it when it is there. `submitted_now`: the scan was
    /// submitted by this reconcile, which took the first poll with the submission (the Event
    /// then tells both).
    async fn poll(self, scan_id: &str, submitted_now: bool) -> Result<Outcome, ReconcileError> {
        let (ctx, key) = (self.ctx, self.key);
        let report_id = key.report_id();
        let pending = decide::in_flight_phase(self.stored.is_some(), ReportPhase::Scanning);
        let plan = self.plan;
        let scanner = &plan.adapter.name;
        // At most --max-concurrent-downloads fetches at once; the semaphore is never closed.
        let _permit = ctx.downloads.acquire().await.ok();
        // One fetch per scan: whoever takes the poll downloads; joined requests wait for the
        // stored row.
        if !submitted_now
            && !ctx
                .store
                .take_poll(report_id, scan_id, self.leases.claim)
                .await?
        {
            return Ok(self.joined(
                ReportPhase::Scanning,
                format!("Scanner {scanner:?} is scanning"),
                JOINED_FALLBACK,
            ));
        }
        match plan.adapter.poll(scan_id, &key.mime_type).await {
            Ok(Poll::Ready(report)) => {
                let new = NewReport {
                    key: key.clone(),
                    summary: report.summary.unwrap_or_default(),
                    findings: report.findings,
                    report: report.body,
                    scanner_name: report.scanner.name,
                    scanner_vendor: report.scanner.vendor,
                    scanner_version: report.scanner.version,
                    generated_at: report.generated_at,
                };
                // The report and the end of its scan in one statement.
                let (upserted, meta, took) =
                    ctx.store.complete_with_report(new, Some(scan_id)).await?;
                ctx.metrics.upserted(match upserted {
                    UpsertOutcome::Inserted => Upsert::Inserted,
                    UpsertOutcome::Updated => Upsert::Updated,
                    UpsertOutcome::KeptExisting => Upsert::KeptExisting,
                });
                ctx.forget_submitter(report_id);
                self.wake_joined();
                if let Some(took) = took {
                    ctx.metrics.scan_completed(scanner, took);
                }
                tracing::info!(outcome = upserted.as_str(), "report stored");
                if upserted != UpsertOutcome::KeptExisting {
                    ctx.event(
                        self.sr,
                        EventType::Normal,
                        "ReportStored",
                        key.mime_type.as_str(),
                        format!(
                            "{} report {report_id} ({}) of {}",
                            if submitted_now {
                                "Scanned and stored"
                            } else {
                                "Stored"
                            },
                            key.mime_type,
                            key.digest
                        ),
                    );
                }
                Ok(Outcome {
                    key: key.clone(),
                    platform: self.platform(),
                    phase: ReportPhase::Ready,
                    meta,
                    message: None,
                    requeue: None,
                })
            }
            Ok(Poll::NotReady(after)) => {
                ctx.store.poll_later(report_id, scan_id, after).await?;
                Ok(self.outcome(
                    pending,
                    Some(format!("Scanner {scanner:?} is scanning")),
                    Some(after),
                ))
            }
            Ok(Poll::Lost) => {
                tracing::warn!(scan_id, "the scanner lost the scan; submitting again");
                ctx.store
                    .requeue_lost(report_id, scan_id, &self.leases)
                    .await?;
                self.wake_joined();
                Ok(self.outcome(
                    pending,
                    Some(format!(
                        "Scanner {scanner:?} lost the scan; submitting again"
                    )),
                    Some(Duration::from_millis(200)),
                ))
            }
            // The scan may have been submitted for another namespace, and the adapter's text
            // may be about that namespace's pull: it goes to the log only, scrubbed. The poll
            // is given back at once, so that a joined request need not wait out the lease.
            Err(e) if e.is_transient() => {
                let detail = ctx
                    .scan_redactor(report_id, &plan.redactor)
                    .one_line(&e.to_string(), 1024);
                tracing::warn!(scan_id, error = %detail, "fetching the report failed; retrying");
                ctx.store
                    .poll_later(report_id, scan_id, Duration::ZERO)
                    .await?;
                self.wake_joined();
                Err(ReconcileError::ScanUnavailable {
                    scanner: scanner.clone(),
                    transient: true,
                })
            }
            Err(e) => self.reject(scan_id, e, false).await,
        }
    }

    /// The adapter rejected the scan for good: the job fails for every requester of the
    /// report. The job (which every requester of the report reads) keeps only a generic
    /// message: the adapter's text may name the submitter's registry, repository or account.
    /// The details, scrubbed of this request's credentials, go to the log, and to a Warning
    /// Event of this request when it submitted the scan itself (`own`).
    async fn reject(
        self,
        holder_or_scan: &str,
        e: crate::scanner::ScannerError,
        own: bool,
    ) -> Result<Outcome, ReconcileError> {
        let plan = self.plan;
        let scanner = &plan.adapter.name;
        let report_id = self.key.report_id();
        let detail = self
            .ctx
            .scan_redactor(report_id, &plan.redactor)
            .one_line(&ReconcileError::scanner(scanner, e).to_string(), 1024);
        self.ctx.forget_submitter(report_id);
        tracing::warn!(error = %detail, "the scanner rejected the scan");
        if own {
            self.ctx.event(
                self.sr,
                EventType::Warning,
                "ScanRejected",
                self.key.mime_type.as_str(),
                detail,
            );
        }
        let error = shared_failure(scanner);
        self.ctx.metrics.scan_failed(scanner);
        self.ctx
            .store
            .fail(self.key.report_id(), holder_or_scan, &error)
            .await?;
        self.wake_joined();
        let recheck = self.ctx.config.stall_recheck;
        Ok(self.outcome(ReportPhase::Failed, Some(error), Some(recheck)))
    }

    /// [`ReportTask::waiting`] on a scan another reconcile runs or fetches: woken when it
    /// ends (see `wakeups`), `after` at the latest.
    fn joined(&self, phase: ReportPhase, message: String, after: Duration) -> Outcome {
        self.ctx
            .wakeups
            .wait(self.key.report_id(), ObjectRef::from(self.sr), self.ticket);
        self.waiting(phase, message, after)
    }

    /// The scan of this report ended, or its poll was given back: wake who waits for it.
    fn wake_joined(&self) {
        self.ctx
            .wakeups
            .wake(self.key.report_id(), &ObjectRef::from(self.sr));
    }

    /// A scan is under way: `phase`, or `Rescanning` while a stored report exists.
    fn waiting(&self, phase: ReportPhase, message: String, after: Duration) -> Outcome {
        let phase = decide::in_flight_phase(self.stored.is_some(), phase);
        self.outcome(phase, Some(message), Some(after))
    }

    fn outcome(
        &self,
        phase: ReportPhase,
        message: Option<String>,
        requeue: Option<Duration>,
    ) -> Outcome {
        Outcome {
            key: self.key.clone(),
            platform: self.platform(),
            phase,
            meta: self.stored.clone(),
            message,
            requeue,
        }
    }

    /// The platform of an image index this report is of.
    fn platform(&self) -> Option<String> {
        self.manifest.platform.clone()
    }
}

/// What every requester of a failed scan sees: nothing about whose pull failed or why. The
/// request that submitted it has the adapter's answer in its Events; a changed ScanRequest
/// (or a new `rescanToken`) submits the scan again with its own registry credentials.
pub fn shared_failure(scanner: &str) -> String {
    format!(
        "scanner {scanner:?} could not scan this artifact; the request that submitted the scan has the adapter's answer in its Events. Check spec.registry and its credentials, then change the ScanRequest (e.g. set a new rescanToken) to scan again with them"
    )
}
