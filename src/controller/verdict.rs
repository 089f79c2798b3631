//! The policy steps around the pure evaluation in [`crate::policy`]: which rules apply to a
//! request ([`resolve`], part of step 2), the verdict on its stored vulnerability reports
//! ([`judge`], before step 8; it reads the compact findings, never a report body), and the
//! Event when the verdict changes ([`announce`], after step 8).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kube::runtime::events::EventType;

use super::announced::Topic;
use super::context::Context;
use super::decide::Outcome;
use super::error::ReconcileError;
use crate::api::{DEFAULT_REPORT_MIME_TYPE, ScanRequest, ScanRequestStatus};
use crate::identity::ReportKey;
use crate::policy::{self, Rules, Source, Verdict};
use crate::scanner::summary::{Finding, has_summary};

/// The rules a request is judged by, and where they come from.
#[derive(Debug, Clone)]
pub struct Applied {
    pub source: Source,
    pub rules: Rules,
}

/// Step 2, for the policy: the inline rules or the referenced ScanPolicy (from the watch
/// cache), checked; a policy needs a vulnerability report to judge.
pub fn resolve(
    sr: &ScanRequest,
    ctx: &Context,
    targets: &[ReportKey],
) -> Result<Option<Applied>, ReconcileError> {
    let spec = &sr.spec;
    let (applied, field) = match (&spec.policy, &spec.policy_ref) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(ReconcileError::InvalidSpec {
                field: "spec.policyRef".into(),
                message: "spec.policy and spec.policyRef are mutually exclusive; keep one".into(),
            });
        }
        (Some(rules), None) => (
            Applied {
                source: Source::inline(),
                rules: Rules::parse(rules, "spec.policy").map_err(ReconcileError::PolicyInvalid)?,
            },
            "spec.policy",
        ),
        (None, Some(reference)) => {
            let policy = ctx
                .policies
                .get(&reference.name)
                .ok_or_else(|| ReconcileError::PolicyNotFound(reference.name.clone()))?;
            let field = format!("ScanPolicy {:?} spec.rules", reference.name);
            (
                Applied {
                    source: Source::scan_policy(&reference.name, policy.metadata.generation),
                    rules: Rules::parse(&policy.spec.rules, &field)
                        .map_err(ReconcileError::PolicyInvalid)?,
                },
                "spec.policyRef",
            )
        }
    };
    if !targets.iter().any(|t| has_summary(&t.mime_type)) {
        return Err(ReconcileError::InvalidSpec {
            field: field.into(),
            message: format!(
                "a policy judges vulnerability reports, and spec.reportMimeTypes has none; add {DEFAULT_REPORT_MIME_TYPE:?}"
            ),
        });
    }
    Ok(Some(applied))
}

/// The verdict on the stored vulnerability reports, once every one of them has a stored
/// version (`None` until then). Reads only their compact findings, and those only once per
/// report version (the process keeps them, see [`super::context::FindingsCache`]).
pub async fn judge(
    applied: &Applied,
    outcomes: &[Outcome],
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<Option<Verdict>, ReconcileError> {
    let vulnerability: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| has_summary(&o.key.mime_type))
        .collect();
    let Some(stored) = vulnerability
        .iter()
        .map(|o| o.meta.as_ref())
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    // Findings read before for the same row version come from memory; the rest in one query.
    let mut found: Vec<(uuid::Uuid, Arc<Vec<Finding>>)> = Vec::with_capacity(stored.len());
    let mut missing = Vec::new();
    for meta in &stored {
        match ctx.findings.get(meta.id, meta.updated_at) {
            Some(findings) => found.push((meta.id, findings)),
            None => missing.push(meta.id),
        }
    }
    for (id, updated_at, findings) in ctx.store.findings(&missing).await? {
        let findings = Arc::new(findings);
        ctx.findings.insert(id, updated_at, findings.clone());
        found.push((id, findings));
    }
    let mut reports = Vec::with_capacity(stored.len());
    for meta in &stored {
        let findings = found
            .iter()
            .find(|(id, _)| *id == meta.id)
            .map(|(_, f)| f.as_slice())
            .ok_or(ReconcileError::FindingsMissing { report_id: meta.id })?;
        reports.push(findings);
    }
    let oldest = stored.iter().map(|m| m.generated_at).min();
    Ok(Some(policy::evaluate(
        &applied.rules,
        &applied.source,
        &reports,
        oldest,
        now,
    )))
}

/// An Event when the verdict changed (a first verdict is a change): Warning `PolicyViolation`
/// or Normal `PolicyCompliant`. Called after the status was written, so a failed write does
/// not announce a verdict nobody can see.
pub fn announce(
    sr: &ScanRequest,
    ctx: &Context,
    before: Option<&ScanRequestStatus>,
    verdict: Option<&Verdict>,
) {
    let Some(verdict) = verdict else {
        return;
    };
    let was = before.and_then(|s| s.policy.as_ref()).map(|p| p.compliant);
    let compliant = verdict.status.compliant;
    if !ctx
        .announced
        .is_news(sr, Topic::Policy, &compliant, was.as_ref())
    {
        return;
    }
    let (type_, reason) = if verdict.status.compliant {
        (EventType::Normal, "PolicyCompliant")
    } else {
        (EventType::Warning, "PolicyViolation")
    };
    tracing::info!(
        compliant = verdict.status.compliant,
        policy = %verdict.status.policy,
        "policy verdict changed"
    );
    ctx.event(sr, type_, reason, "policy", verdict.message.clone());
}
