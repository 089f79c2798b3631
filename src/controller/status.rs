//! Step 8: the ScanRequest status (kstatus conditions and per-report entries) from the
//! outcomes ([`settle`]) or from a failure ([`degrade`]), applied only when it changed
//! ([`apply`]).
//!
//! The controller writes status only when it changed, so everything here is deterministic:
//! a condition keeps its `lastTransitionTime` while its status stays the same, and no field
//! carries a clock reading that moves on every reconcile.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use uuid::Uuid;

use super::adapters;
use super::artifact::Artifact;
use super::context::{Context, MANAGER};
use super::decide::{self, Next, Outcome, Rescan};
use super::error::ReconcileError;
use crate::api::{
    CONDITION_READY, CONDITION_RECONCILING, CONDITION_STALLED, ReportPhase, ReportStatus,
    ScanRequest, ScanRequestStatus, ScannerInfo, SeveritySummary,
};
use crate::policy::Verdict;
use crate::redact::Redactor;

/// Step 8, part 1: the status and when to look again, from the outcomes of all reports and
/// the policy verdict on them.
pub fn settle(
    sr: &ScanRequest,
    registration: Uuid,
    rescan: &Rescan,
    outcomes: &[Outcome],
    verdict: Option<&Verdict>,
    stall_recheck: Duration,
    now: DateTime<Utc>,
) -> (ScanRequestStatus, Next) {
    let previous = sr.status.clone().unwrap_or_default();
    let reports: Vec<ReportStatus> = outcomes.iter().map(report_status).collect();
    // The state of the reports decides rescans and requeues; the verdict only what the
    // conditions say, so a violation never keeps a rescan from being answered or polls.
    let overall = decide::overall(outcomes, &reports);
    let (rescan_token, pending_rescan) = decide::rescan_status(
        rescan,
        &overall,
        sr.spec.rescan_token.as_deref(),
        previous.rescan_token.as_deref(),
    );
    let next = decide::next(&overall, outcomes, stall_recheck);
    let changes_in = verdict
        .and_then(|v| v.next_change)
        .map(|at| (at - now).to_std().unwrap_or_default());
    let next = decide::with_verdict_change(next, changes_in);
    let judged = judged(overall, verdict);
    let generation = sr.metadata.generation;
    let mut conditions = conditions(&previous.conditions, &judged, generation, now);
    if let Some(v) = verdict.filter(|v| v.status.compliant && judged == Overall::Ready) {
        for c in conditions.iter_mut().filter(|c| c.type_ == CONDITION_READY) {
            c.message.clone_from(&v.message);
        }
    }
    let status = ScanRequestStatus {
        observed_generation: generation,
        conditions,
        registration_uuid: Some(registration.to_string()),
        // Set by `with_artifact`, which knows what the registry said.
        artifact: previous.artifact.clone(),
        summary: headline_summary(&reports),
        reports,
        rescan_token,
        pending_rescan,
        policy: verdict.map(|v| Box::new(v.status.clone())),
    };
    (status, next)
}

/// The condition reason of findings that break the policy.
pub const POLICY_VIOLATION: &str = "PolicyViolation";

/// The overall state with the verdict: findings that break the policy stall a request whose
/// reports are usable (`Ready=False`, `Stalled=True`, so kstatus says `Failed` and pipelines
/// fail fast); a person must fix the image or the policy. Anything else stays as it is.
pub fn judged(overall: Overall, verdict: Option<&Verdict>) -> Overall {
    match (overall, verdict) {
        (Overall::Ready | Overall::Progressing { usable: true, .. }, Some(v))
            if !v.status.compliant =>
        {
            Overall::Stalled {
                reason: POLICY_VIOLATION.into(),
                message: v.message.clone(),
            }
        }
        (overall, _) => overall,
    }
}

/// Step 8, part 2: server-side apply of the status, skipped when nothing changed.
pub async fn apply(
    sr: &ScanRequest,
    ctx: &Context,
    status: ScanRequestStatus,
) -> Result<(), ReconcileError> {
    if sr.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": "scanreport.io/v1alpha1",
        "kind": "ScanRequest",
        "status": status,
    });
    // `Api::patch_status` would decode the object the server sends back, managed fields and
    // all, only to drop it: the watch brings the new object anyway.
    let url = <ScanRequest as Resource>::url_path(&(), sr.namespace().as_deref());
    let sent = async {
        let mut request = kube::core::Request::new(url)
            .patch_subresource(
                "status",
                &sr.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .map_err(kube::Error::BuildRequest)?;
        request.extensions_mut().insert("patch_status");
        ctx.client.request_text(request).await
    };
    sent.await
        .map_err(ReconcileError::kube("applying the ScanRequest status"))?;
    Ok(())
}

/// Longest error message kept in a condition or Event note.
const MAX_MESSAGE_CHARS: usize = 1024;

/// A failed pipeline: record why in the status, then stall or back off. The reports stay,
/// unless the failure means the request has not earned them (no proof of access, no valid
/// credentials): then no summary and no report is shown. Every message is scrubbed of the
/// request's credentials by `redactor` before it reaches the status, an Event or the log.
pub async fn degrade(
    sr: &ScanRequest,
    ctx: &Context,
    error: ReconcileError,
    redactor: &Redactor,
) -> Result<Action, ReconcileError> {
    let previous = sr.status.clone().unwrap_or_default();
    let message = redactor.one_line(&error.to_string(), MAX_MESSAGE_CHARS);
    let (overall, action) = if error.is_permanent() {
        tracing::info!(error = %message, "stalled");
        if newly_stalled(&previous.conditions, &message) {
            ctx.event(
                sr,
                EventType::Warning,
                error.reason(),
                "request",
                message.clone(),
            );
        }
        // A changed ScanRequest or Scanner triggers a reconcile; Secrets are not watched, so
        // look again after a while, never in a hot loop.
        (
            Overall::Stalled {
                reason: error.reason().into(),
                message,
            },
            Action::requeue(ctx.config.stall_recheck),
        )
    } else {
        // A failure that knows when it clears (a rate limit) waits exactly that long and is
        // not counted as a failure; others back off exponentially.
        let delay = error
            .retry_after()
            .unwrap_or_else(|| ctx.backoff.failed(sr.into()));
        tracing::warn!(error = %message, retry_in = ?delay, "transient failure; retrying");
        (
            transient(
                &previous,
                error.withholds_reports(),
                error.reason(),
                message,
            ),
            Action::requeue(delay),
        )
    };
    let mut status = degraded(
        previous,
        sr.metadata.generation,
        &overall,
        chrono::Utc::now(),
    );
    if error.withholds_reports() {
        withhold(&mut status);
    }
    if error.clears_verdict() {
        status.policy = None;
    }
    apply(sr, ctx, status).await?;
    Ok(action)
}

/// Drops everything that came from stored reports or the registry: the request has not proven
/// it may see them. The verdict goes too: its counts and vulnerability ids come from those
/// reports.
pub fn withhold(status: &mut ScanRequestStatus) {
    status.artifact = None;
    status.summary = None;
    status.reports.clear();
    status.policy = None;
}

/// Whether stalling with `message` is news (an Event is published only then).
pub fn newly_stalled(previous: &[Condition], message: &str) -> bool {
    !previous
        .iter()
        .any(|c| c.type_ == CONDITION_STALLED && c.message == message)
}

/// The overall state while a transient failure is retried, from the status before it: the
/// reports stay usable unless `withheld`, and stored reports whose findings break the policy
/// never read as Ready, not even while retrying.
pub fn transient(
    previous: &ScanRequestStatus,
    withheld: bool,
    reason: &str,
    message: String,
) -> Overall {
    let reports: &[ReportStatus] = if withheld { &[] } else { &previous.reports };
    let mut overall = retrying(reports, reason, message);
    let violating = previous.policy.as_ref().is_some_and(|p| !p.compliant);
    if let Overall::Progressing { usable, .. } = &mut overall {
        *usable &= !violating;
    }
    overall
}

/// The overall state while a transient failure is retried: the reports stay usable when every
/// one has a stored version.
pub fn retrying(reports: &[ReportStatus], reason: &str, message: String) -> Overall {
    Overall::Progressing {
        reason: reason.into(),
        message,
        usable: !reports.is_empty() && all_usable(reports),
    }
}

/// The status after a failure: the previous one (reports included) with new conditions.
pub fn degraded(
    mut status: ScanRequestStatus,
    generation: Option<i64>,
    overall: &Overall,
    now: DateTime<Utc>,
) -> ScanRequestStatus {
    status.observed_generation = generation;
    status.conditions = conditions(&status.conditions, overall, generation, now);
    status
}

/// The status entry of one report.
pub fn report_status(o: &Outcome) -> ReportStatus {
    ReportStatus {
        mime_type: o.key.mime_type.to_string(),
        platform: o.platform.clone(),
        digest: o.platform.as_ref().map(|_| o.key.digest.to_string()),
        report_id: o.key.report_id().to_string(),
        phase: o.phase,
        summary: o
            .meta
            .as_ref()
            .filter(|_| adapters::has_summary(&o.key.mime_type))
            .map(|m| m.summary),
        generated_at: o.meta.as_ref().map(|m| k8s_time(m.generated_at)),
        scanner: o.meta.as_ref().map(|m| ScannerInfo {
            name: m.scanner_name.clone(),
            vendor: m.scanner_vendor.clone(),
            version: m.scanner_version.clone(),
        }),
        message: o.message.clone().filter(|_| o.phase != ReportPhase::Ready),
    }
}

/// `Time` from a chrono timestamp, at whole seconds as Kubernetes prints times.
pub fn k8s_time(t: DateTime<Utc>) -> Time {
    Time(Timestamp::from_second(t.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH))
}

pub fn chrono_time(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

/// The overall state of a ScanRequest, from which the three kstatus conditions follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overall {
    /// Every report is stored and fresh.
    Ready,
    /// Work is under way (or being retried); `usable` when every report has a stored version.
    Progressing {
        reason: String,
        message: String,
        usable: bool,
    },
    /// A permanent problem that needs a change of the ScanRequest or a referenced object.
    Stalled { reason: String, message: String },
}

/// The conditions for `overall`, carrying over transition times from `previous`.
/// `Reconciling` and `Stalled` are "abnormal-true" conditions: present only while true.
pub fn conditions(
    previous: &[Condition],
    overall: &Overall,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let mut desired = Vec::new();
    match overall {
        Overall::Ready => desired.push((
            CONDITION_READY,
            true,
            "ReportsReady",
            "Every requested report is stored".to_owned(),
        )),
        Overall::Progressing {
            reason,
            message,
            usable,
        } => {
            desired.push((
                CONDITION_READY,
                *usable,
                if *usable {
                    "ReportsReady"
                } else {
                    reason.as_str()
                },
                if *usable {
                    "Every requested report is stored; newer ones are on the way".to_owned()
                } else {
                    message.clone()
                },
            ));
            desired.push((
                CONDITION_RECONCILING,
                true,
                reason.as_str(),
                message.clone(),
            ));
        }
        Overall::Stalled { reason, message } => {
            desired.push((CONDITION_READY, false, reason.as_str(), message.clone()));
            desired.push((CONDITION_STALLED, true, reason.as_str(), message.clone()));
        }
    }
    desired
        .into_iter()
        .map(|(type_, status, reason, message)| {
            let status = if status { "True" } else { "False" }.to_owned();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| k8s_time(now));
            Condition {
                type_: type_.to_owned(),
                status,
                reason: reason.to_owned(),
                message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The summary shown in `kubectl get`: that of the first requested report type that has one
/// (vulnerability reports have counts, SBOMs do not). For an image index, the worst count of
/// each severity across its platforms: a column that reads "Critical 3" then means some
/// platform has 3, which a sum would overstate (platforms mostly share packages) and an average
/// would hide.
pub fn headline_summary(reports: &[ReportStatus]) -> Option<SeveritySummary> {
    let first = reports.iter().find(|r| r.summary.is_some())?;
    reports
        .iter()
        .filter(|r| r.mime_type == first.mime_type)
        .filter_map(|r| r.summary)
        .reduce(|a, b| SeveritySummary {
            critical: a.critical.max(b.critical),
            high: a.high.max(b.high),
            medium: a.medium.max(b.medium),
            low: a.low.max(b.low),
            unknown: a.unknown.max(b.unknown),
            none: a.none.max(b.none),
            fixable: a.fixable.max(b.fixable),
        })
}

/// Whether the status keeps showing the previous digest's reports: the tag moved (the spec did
/// not change), the new digest's reports are on the way, none has failed, and the previous
/// ones are all usable. As for rescans, there is no gap without a result.
pub fn keeps_previous(sr: &ScanRequest, artifact: &Artifact, outcomes: &[Outcome]) -> bool {
    let Some(previous) = sr.status.as_ref() else {
        return false;
    };
    let moved = previous
        .artifact
        .as_ref()
        .and_then(|a| a.digest.as_deref())
        .is_some_and(|shown| shown != artifact.digest.as_str());
    moved
        && sr.spec.artifact.digest.is_none()
        && previous.observed_generation == sr.metadata.generation
        && !previous.reports.is_empty()
        && all_usable(&previous.reports)
        && outcomes.iter().all(|o| o.phase != ReportPhase::Failed)
        && outcomes.iter().any(|o| o.phase != ReportPhase::Ready)
}

/// Step 8, part 1b: `status.artifact`, the informative conditions, and the next tag
/// resolution. With `keep` ([`keeps_previous`]), the previous digest's reports, summary and
/// verdict stay, and `Reconciling` says that the moved tag is being scanned.
pub fn with_artifact(
    sr: &ScanRequest,
    mut status: ScanRequestStatus,
    next: Next,
    artifact: &Artifact,
    keep: bool,
    now: DateTime<Utc>,
) -> (ScanRequestStatus, Next) {
    let previous = sr.status.clone().unwrap_or_default();
    let mut shown = artifact.status();
    if keep {
        let before = previous.artifact.clone().unwrap_or_default();
        let message = format!(
            "tag {:?} moved to {}; scanning it, the reports of {} stay until its reports are stored",
            shown.tag.as_deref().unwrap_or_default(),
            artifact.digest,
            before.digest.as_deref().unwrap_or_default(),
        );
        shown.digest = before.digest;
        shown.media_type = before.media_type;
        shown.platforms = before.platforms;
        status.reports = previous.reports.clone();
        status.summary = previous.summary;
        status.policy = previous.policy.clone();
        let usable = previous.policy.as_ref().is_none_or(|p| p.compliant);
        let overall = Overall::Progressing {
            reason: "TagMoved".into(),
            message,
            usable,
        };
        status.conditions = conditions(&previous.conditions, &overall, sr.metadata.generation, now);
    }
    status.artifact = Some(shown);
    for notice in &artifact.notices {
        let last_transition_time = previous
            .conditions
            .iter()
            .find(|c| c.type_ == notice.type_ && c.status == "True")
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| k8s_time(now));
        status.conditions.push(Condition {
            type_: notice.type_.to_owned(),
            status: "True".to_owned(),
            reason: notice.reason.to_owned(),
            message: notice.message.clone(),
            observed_generation: sr.metadata.generation,
            last_transition_time,
        });
    }
    let next = match artifact.resolve_in {
        Some(due) => decide::with_deadline(next, due),
        None => next,
    };
    (status, next)
}

/// Whether every report has a stored version (Ready, or being rescanned with the old one kept).
pub fn all_usable(reports: &[ReportStatus]) -> bool {
    // Every entry with a stored report carries its `generatedAt`.
    reports.iter().all(|r| r.generated_at.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decide::tests::{fixture, outcome};
    use crate::store::ReportMeta;
    use chrono::TimeZone;

    const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";
    const RAW: &str = "application/vnd.scanner.adapter.vuln.report.raw";

    fn stored(o: &mut Outcome, generated_at: DateTime<Utc>) {
        o.meta = Some(ReportMeta {
            id: o.key.report_id(),
            digest: o.key.digest.to_string(),
            registration_uuid: o.key.registration_uuid,
            mime_type: o.key.mime_type.to_string(),
            summary: SeveritySummary {
                critical: 1,
                high: 2,
                ..SeveritySummary::default()
            },
            scanner_name: "Trivy".into(),
            scanner_vendor: "Aqua Security".into(),
            scanner_version: "0.50.0".into(),
            generated_at,
            created_at: generated_at,
            updated_at: generated_at,
        });
    }

    #[test]
    fn a_rescan_under_way_keeps_ready_true_and_the_pending_token() {
        let sr = fixture("rescan-pending.yaml");
        let wanted = Rescan::Wanted {
            token: "2026-11-28".into(),
            requested_at: "2026-11-28T08:00:00Z".parse().unwrap(),
        };
        let mut o = outcome(VULN, ReportPhase::Rescanning, Some(3));
        stored(&mut o, "2026-11-27T05:06:33Z".parse().unwrap());
        let now: DateTime<Utc> = "2026-11-28T09:00:00Z".parse().unwrap();
        let (status, next) = settle(
            &sr,
            Uuid::nil(),
            &wanted,
            &[o],
            None,
            Duration::from_secs(300),
            now,
        );
        assert_eq!(next, Next::Soon(Duration::from_secs(3)));
        assert_eq!(status.rescan_token.as_deref(), Some("2026-11-27"));
        assert_eq!(
            status.pending_rescan.as_ref().map(|p| p.token.as_str()),
            Some("2026-11-28")
        );
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "True")
        );
        assert_eq!(
            ready.last_transition_time,
            sr.status.as_ref().unwrap().conditions[0].last_transition_time,
            "Ready stayed True: its transition time is kept"
        );
        assert_eq!(status.reports[0].phase, ReportPhase::Rescanning);
        assert_eq!(status.summary.map(|s| s.critical), Some(1));
        assert_eq!(status.observed_generation, Some(3));
    }

    #[test]
    fn a_finished_rescan_answers_the_token_and_clears_reconciling() {
        let sr = fixture("rescan-pending.yaml");
        let wanted = Rescan::Wanted {
            token: "2026-11-28".into(),
            requested_at: "2026-11-28T08:00:00Z".parse().unwrap(),
        };
        let mut vuln = outcome(VULN, ReportPhase::Ready, None);
        stored(&mut vuln, "2026-11-28T08:10:00Z".parse().unwrap());
        let mut raw = outcome(RAW, ReportPhase::Ready, None);
        stored(&mut raw, "2026-11-28T08:10:00Z".parse().unwrap());
        let now: DateTime<Utc> = "2026-11-28T09:00:00Z".parse().unwrap();
        let (status, next) = settle(
            &sr,
            Uuid::nil(),
            &wanted,
            &[vuln, raw],
            None,
            Duration::from_secs(300),
            now,
        );
        assert_eq!(next, Next::AwaitChange);
        assert_eq!(status.rescan_token.as_deref(), Some("2026-11-28"));
        assert!(status.pending_rescan.is_none());
        let types: Vec<_> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready"]);
        // Severity counts for the vulnerability report only; no message once Ready.
        assert!(status.reports[0].summary.is_some());
        assert!(
            status.reports[1].summary.is_none(),
            "raw reports have no counts"
        );
        assert!(status.reports.iter().all(|r| r.message.is_none()));
        assert_eq!(
            status.registration_uuid.as_deref(),
            Some("00000000-0000-0000-0000-000000000000")
        );
    }

    fn verdict(compliant: bool, next_change: Option<DateTime<Utc>>) -> Verdict {
        Verdict {
            status: crate::api::PolicyStatus {
                compliant,
                policy: "strict".into(),
                generation: Some(2),
                ..Default::default()
            },
            message: if compliant {
                "the findings comply".into()
            } else {
                "The findings violate ScanPolicy \"strict\": CVE-2024-1".into()
            },
            next_change,
        }
    }

    #[test]
    fn violating_findings_stall_the_request_without_polling_and_still_answer_the_rescan() {
        let sr = fixture("rescan-pending.yaml");
        let wanted = Rescan::Wanted {
            token: "2026-11-28".into(),
            requested_at: "2026-11-28T08:00:00Z".parse().unwrap(),
        };
        let mut o = outcome(VULN, ReportPhase::Ready, None);
        stored(&mut o, "2026-11-28T08:10:00Z".parse().unwrap());
        let now: DateTime<Utc> = "2026-11-28T09:00:00Z".parse().unwrap();
        let bad = verdict(false, None);
        let (status, next) = settle(
            &sr,
            Uuid::nil(),
            &wanted,
            std::slice::from_ref(&o),
            Some(&bad),
            Duration::from_secs(300),
            now,
        );
        assert_eq!(
            next,
            Next::AwaitChange,
            "a violation waits for a change, no polling"
        );
        let kinds: Vec<_> = status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("Ready", "False", "PolicyViolation"),
                ("Stalled", "True", "PolicyViolation")
            ]
        );
        assert!(status.conditions[1].message.contains("CVE-2024-1"));
        assert_eq!(status.policy, Some(Box::new(bad.status.clone())));
        assert_eq!(
            status.rescan_token.as_deref(),
            Some("2026-11-28"),
            "the reports answer the token, whatever the verdict"
        );

        // An allowlist entry that expires in 5 s: requeue exactly then.
        let good = verdict(true, Some(now + chrono::Duration::seconds(5)));
        let (status, next) = settle(
            &sr,
            Uuid::nil(),
            &wanted,
            &[o],
            Some(&good),
            Duration::from_secs(300),
            now,
        );
        assert_eq!(next, Next::Exact(Duration::from_secs(5)));
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(status.conditions[0].message, "the findings comply");
    }

    #[test]
    fn a_violating_request_is_not_ready_while_a_transient_failure_is_retried() {
        let sr = fixture("rescan-pending.yaml");
        let mut previous = sr.status.clone().unwrap();
        assert!(all_usable(&previous.reports));
        let compliant = transient(&previous, false, "DatabaseUnavailable", "down".into());
        assert!(matches!(
            compliant,
            Overall::Progressing { usable: true, .. }
        ));
        previous.policy = Some(Box::new(verdict(false, None).status));
        let violating = transient(&previous, false, "DatabaseUnavailable", "down".into());
        assert!(
            matches!(violating, Overall::Progressing { usable: false, .. }),
            "{violating:?}"
        );
        let ready = conditions(&[], &violating, Some(3), Utc::now());
        assert_eq!(ready[0].status, "False");
    }

    #[test]
    fn withheld_reports_take_the_verdict_with_them() {
        let mut status = ScanRequestStatus {
            policy: Some(Box::new(verdict(false, None).status)),
            ..ScanRequestStatus::default()
        };
        withhold(&mut status);
        assert_eq!(
            status.policy, None,
            "its CVE ids come from the withheld reports"
        );
    }

    #[test]
    fn a_transient_failure_keeps_the_reports_and_says_why() {
        let sr = fixture("rescan-pending.yaml");
        let previous = sr.status.clone().unwrap();
        let overall = retrying(&previous.reports, "DatabaseUnavailable", "db down".into());
        assert!(
            matches!(overall, Overall::Progressing { usable: true, .. }),
            "every report has a stored version: {overall:?}"
        );
        let now: DateTime<Utc> = "2026-11-28T09:00:00Z".parse().unwrap();
        let status = degraded(previous.clone(), Some(4), &overall, now);
        assert_eq!(status.reports, previous.reports);
        assert_eq!(status.observed_generation, Some(4));
        let reconciling = status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_RECONCILING)
            .unwrap();
        assert_eq!(reconciling.message, "db down");
        assert!(matches!(
            retrying(&[], "X", "m".into()),
            Overall::Progressing { usable: false, .. }
        ));
    }

    #[test]
    fn stalling_again_for_the_same_reason_is_no_news() {
        let stalled = Overall::Stalled {
            reason: "ScannerNotFound".into(),
            message: "gone".into(),
        };
        let c = conditions(&[], &stalled, Some(1), at(0));
        assert!(newly_stalled(&[], "gone"));
        assert!(!newly_stalled(&c, "gone"));
        assert!(newly_stalled(&c, "another reason"));
    }

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn transition_times_survive_unchanged_conditions() {
        let progressing = Overall::Progressing {
            reason: "Scanning".into(),
            message: "Waiting for the scanner".into(),
            usable: false,
        };
        let first = conditions(&[], &progressing, Some(1), at(0));
        assert_eq!(first.len(), 2);
        let again = conditions(&first, &progressing, Some(1), at(30));
        assert_eq!(first, again, "same state, same conditions: no status write");

        let ready = conditions(&again, &Overall::Ready, Some(1), at(60));
        assert_eq!(ready.len(), 1, "Reconciling disappears when done");
        assert_eq!(ready[0].status, "True");
        assert_eq!(ready[0].last_transition_time, k8s_time(at(60)));
    }

    #[test]
    fn stalled_sets_ready_false_and_stalled_true() {
        let stalled = Overall::Stalled {
            reason: "ScannerNotFound".into(),
            message: "spec.scanner: Scanner \"nope\" does not exist".into(),
        };
        let c = conditions(&[], &stalled, Some(3), at(0));
        let types: Vec<_> = c
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(types, [("Ready", "False"), ("Stalled", "True")]);
        assert!(c.iter().all(|c| c.observed_generation == Some(3)));
        assert!(c[1].message.contains("spec.scanner"));
    }

    #[test]
    fn rescans_keep_ready_true() {
        let rescanning = Overall::Progressing {
            reason: "Rescanning".into(),
            message: "A newer scan is under way".into(),
            usable: true,
        };
        let c = conditions(&[], &rescanning, Some(2), at(0));
        assert_eq!(c[0].type_, "Ready");
        assert_eq!(c[0].status, "True");
        assert_eq!(c[1].type_, "Reconciling");
    }

    #[test]
    fn times_round_trip_at_second_precision() {
        let t = at(5) + chrono::Duration::microseconds(123_456);
        assert_eq!(chrono_time(&k8s_time(t)), at(5));
    }

    fn platform_report(platform: &str, mime: &str, critical: i64, high: i64) -> ReportStatus {
        ReportStatus {
            mime_type: mime.into(),
            platform: Some(platform.into()),
            digest: None,
            report_id: uuid::Uuid::nil().to_string(),
            phase: ReportPhase::Ready,
            summary: Some(SeveritySummary {
                critical,
                high,
                ..SeveritySummary::default()
            }),
            generated_at: Some(k8s_time(at(0))),
            scanner: None,
            message: None,
        }
    }

    #[test]
    fn the_headline_is_the_worst_of_each_severity_across_platforms_of_one_type() {
        let reports = [
            platform_report("linux/amd64", VULN, 3, 1),
            platform_report("linux/arm64", VULN, 1, 7),
            // Another report type's counts never mix in.
            platform_report("linux/amd64", RAW, 99, 99),
        ];
        let headline = headline_summary(&reports).unwrap();
        assert_eq!((headline.critical, headline.high), (3, 7));
        assert_eq!(headline_summary(&reports[1..2]).map(|s| s.high), Some(7));
        assert_eq!(headline_summary(&[]), None);
    }

    fn moved_artifact(digest_char: char) -> Artifact {
        let digest = format!("sha256:{}", digest_char.to_string().repeat(64));
        Artifact {
            digest: crate::identity::Digest::parse(&digest).unwrap(),
            served: Some(crate::api::ArtifactMimeType::OciImageManifest),
            tag: Some(crate::controller::artifact::TagState {
                tag: "1.27".into(),
                digest: Some(digest),
                resolved_at: at(100),
                failure: None,
            }),
            targets: Vec::new(),
            notices: Vec::new(),
            resolve_in: Some(Duration::from_secs(60)),
        }
    }

    fn ready_tag_request() -> ScanRequest {
        let mut sr = fixture("tag-resolved.yaml");
        let status = sr.status.as_mut().unwrap();
        status.reports = vec![platform_report("linux/amd64", VULN, 2, 0)];
        status.summary = status.reports[0].summary;
        sr
    }

    #[test]
    fn a_moved_tag_keeps_the_previous_reports_until_the_new_ones_are_stored() {
        let sr = ready_tag_request();
        let moved = moved_artifact('2');
        let scanning = [outcome(VULN, ReportPhase::Scanning, Some(1))];
        assert!(keeps_previous(&sr, &moved, &scanning));
        let (status, next) = with_artifact(
            &sr,
            ScanRequestStatus::default(),
            Next::Soon(Duration::from_secs(1)),
            &moved,
            true,
            at(200),
        );
        assert_eq!(status.reports, sr.status.as_ref().unwrap().reports);
        assert_eq!(status.summary.map(|s| s.critical), Some(2));
        let artifact = status.artifact.unwrap();
        assert_eq!(
            artifact.digest.as_deref(),
            Some(format!("sha256:{}", "1".repeat(64)).as_str()),
            "the previous digest is still the one shown"
        );
        assert_eq!(
            artifact.tag_digest.as_deref(),
            Some(format!("sha256:{}", "2".repeat(64)).as_str())
        );
        let kinds: Vec<_> = status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("Ready", "True", "ReportsReady"),
                ("Reconciling", "True", "TagMoved")
            ]
        );
        assert_eq!(next, Next::Soon(Duration::from_secs(1)));

        // Once stored, or when the new scan failed, or after a spec change: no keeping.
        let stored = [outcome(VULN, ReportPhase::Ready, None)];
        assert!(!keeps_previous(&sr, &moved, &stored));
        let failed = [outcome(VULN, ReportPhase::Failed, None)];
        assert!(!keeps_previous(&sr, &moved, &failed));
        let mut edited = sr.clone();
        edited.metadata.generation = Some(3);
        assert!(!keeps_previous(&edited, &moved, &scanning));
        // The same digest is no move.
        assert!(!keeps_previous(&sr, &moved_artifact('1'), &scanning));
    }

    #[test]
    fn notices_become_true_conditions_that_keep_their_transition_time() {
        let sr = ready_tag_request();
        let mut artifact = moved_artifact('1');
        artifact.notices = vec![crate::controller::artifact::Notice {
            type_: "TagMismatch",
            reason: "TagPointsElsewhere",
            message: "points elsewhere".into(),
        }];
        let (first, _) = with_artifact(
            &sr,
            ScanRequestStatus::default(),
            Next::AwaitChange,
            &artifact,
            false,
            at(10),
        );
        let notice = first
            .conditions
            .iter()
            .find(|c| c.type_ == "TagMismatch")
            .unwrap();
        assert_eq!(notice.status, "True");
        assert_eq!(notice.last_transition_time, k8s_time(at(10)));
        let mut again = sr.clone();
        again.status = Some(first.clone());
        let (second, _) = with_artifact(
            &again,
            ScanRequestStatus::default(),
            Next::AwaitChange,
            &artifact,
            false,
            at(500),
        );
        assert_eq!(
            second.conditions, first.conditions,
            "nothing moved: no write"
        );
    }

    #[test]
    fn the_next_tag_resolution_bounds_the_requeue() {
        let sr = ready_tag_request();
        let artifact = moved_artifact('1');
        let (_, next) = with_artifact(
            &sr,
            ScanRequestStatus::default(),
            Next::AwaitChange,
            &artifact,
            false,
            at(10),
        );
        assert_eq!(next, Next::Soon(Duration::from_secs(60)));
        let (_, sooner) = with_artifact(
            &sr,
            ScanRequestStatus::default(),
            Next::Soon(Duration::from_secs(5)),
            &artifact,
            false,
            at(10),
        );
        assert_eq!(sooner, Next::Soon(Duration::from_secs(5)));
    }
}
