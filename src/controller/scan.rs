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
use crate::scanner::ScannerError;
use crate::store::{Claim, JobState, Leases, Opened, Opening};
use crate::store::{Completes, NewReport, ReportMeta, UpsertOutcome};

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
                self.poll(scan_id, Fetcher::Poller).await
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

    /// Step 5, having won the claim: submit the scan, poll it once, and record what is left.
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
        let scan_id = match submitted {
            Ok(scan_id) => scan_id,
            Err(e) if e.is_transient() => {
                ctx.store
                    .release_claim(report_id, holder, &self.leases)
                    .await?;
                return Err(ReconcileError::scanner(&plan.adapter.name, e));
            }
            Err(e) => return self.reject(holder, e, true).await,
        };
        tracing::info!(scan_id, "scan submitted");
        ctx.record_submitter(report_id, plan.redactor.clone());
        ctx.metrics.scan_submitted(&plan.adapter.name);
        let sr = self.sr;
        // At most --max-concurrent-downloads fetches at once; the semaphore is never closed.
        let permit = tokio::time::timeout(plan.adapter.request_timeout, ctx.downloads.acquire());
        let polled = match permit.await {
            // An adapter may answer at once, so the first poll goes out before the submission
            // is recorded: a report that came with it is stored and its claimed job completed
            // in one statement, and otherwise the submission is recorded with its next poll,
            // also in one. The claim lease covers the submit, this wait and this poll, each
            // bounded by the request timeout (`leases`).
            Ok(Ok(_permit)) => {
                let fetched = plan.adapter.poll(&scan_id, &key.mime_type).await;
                if let Some(after) = next_poll(&fetched)
                    && !ctx
                        .store
                        .record_submission_polled(report_id, holder, &scan_id, &self.leases, after)
                        .await?
                {
                    return Ok(self.claim_lost());
                }
                self.settle(fetched, &scan_id, Fetcher::FirstPoll).await
            }
            // No download slot came free in time: waiting longer with the submission
            // unrecorded could outlast the claim. Record it, holding the first poll, then poll.
            _ => {
                if !ctx
                    .store
                    .record_submission_and_poll(report_id, holder, &scan_id, &self.leases)
                    .await?
                {
                    return Ok(self.claim_lost());
                }
                self.poll(&scan_id, Fetcher::RecordedSubmitter).await
            }
        };
        // A report stored right away gets one Event that tells both.
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

    /// Our claim expired before the submission was recorded and someone else took over:
    /// follow their scan.
    fn claim_lost(&self) -> Outcome {
        let phase = decide::in_flight_phase(self.stored.is_some(), ReportPhase::Scanning);
        self.outcome(phase, None, Some(Duration::from_secs(1)))
    }

    /// Steps 6–7 for a recorded scan: take its poll (unless its submitter holds it) and
    /// fetch the report.
    async fn poll(self, scan_id: &str, fetcher: Fetcher) -> Result<Outcome, ReconcileError> {
        let ctx = self.ctx;
        let scanner = &self.plan.adapter.name;
        // At most --max-concurrent-downloads fetches at once; the semaphore is never closed.
        let _permit = ctx.downloads.acquire().await.ok();
        // One fetch per scan: whoever takes the poll downloads; joined requests wait for the
        // stored row.
        if fetcher == Fetcher::Poller
            && !ctx
                .store
                .take_poll(self.key.report_id(), scan_id, self.leases.claim)
                .await?
        {
            return Ok(self.joined(
                ReportPhase::Scanning,
                format!("Scanner {scanner:?} is scanning"),
                JOINED_FALLBACK,
            ));
        }
        let fetched = self.plan.adapter.poll(scan_id, &self.key.mime_type).await;
        self.settle(fetched, scan_id, fetcher).await
    }

    /// Step 7: store a fetched report and complete its job, or schedule the next poll.
    async fn settle(
        self,
        fetched: Result<Poll, ScannerError>,
        scan_id: &str,
        fetcher: Fetcher,
    ) -> Result<Outcome, ReconcileError> {
        let (ctx, key) = (self.ctx, self.key);
        let report_id = key.report_id();
        let pending = decide::in_flight_phase(self.stored.is_some(), ReportPhase::Scanning);
        let plan = self.plan;
        let scanner = &plan.adapter.name;
        let submitted_now = fetcher != Fetcher::Poller;
        // The submitter's first poll recorded the next one with the submission.
        let scheduled = fetcher == Fetcher::FirstPoll;
        let completes = match fetcher {
            Fetcher::FirstPoll => Completes::Claim(&ctx.config.instance),
            Fetcher::Poller | Fetcher::RecordedSubmitter => Completes::Scan(scan_id),
        };
        match fetched {
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
                let (upserted, meta, took) = ctx.store.complete_with_report(new, completes).await?;
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
                if !scheduled {
                    ctx.store.poll_later(report_id, scan_id, after).await?;
                }
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
                if !scheduled {
                    ctx.store
                        .poll_later(report_id, scan_id, Duration::ZERO)
                        .await?;
                }
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
        e: ScannerError,
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

/// Who fetched a report, which decides what its job records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetcher {
    /// A poll taken through the job: the next one is scheduled after the fetch.
    Poller,
    /// The submitter, which recorded its submission holding the first poll: as a poller,
    /// without taking the poll.
    RecordedSubmitter,
    /// The submitter before it recorded the submission: a report completes the claimed job;
    /// any other answer was recorded, with the next poll, before the report is settled.
    FirstPoll,
}

/// When the next poll is due after the submitter's first, recorded with the submission; `None`
/// when the report came with it (the upsert then completes the claimed job).
fn next_poll(fetched: &Result<Poll, ScannerError>) -> Option<Duration> {
    match fetched {
        Ok(Poll::Ready(_)) => None,
        Ok(Poll::NotReady(after)) => Some(*after),
        // Anyone may poll at once: a lost scan is queued again by the settle, and a failed
        // fetch is tried again, as a poller's would be.
        Ok(Poll::Lost) | Err(_) => Some(Duration::ZERO),
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
