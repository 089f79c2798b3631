//! Building ScanRequest status: kstatus conditions and per-report entries.
//!
//! The controller writes status only when it changed, so everything here is deterministic:
//! a condition keeps its `lastTransitionTime` while its status stays the same, and no field
//! carries a clock reading that moves on every reconcile.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::{
    CONDITION_READY, CONDITION_RECONCILING, CONDITION_STALLED, ReportStatus, SeveritySummary,
};

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

/// The summary shown in `kubectl get`: that of the first requested report that has one
/// (vulnerability reports have counts, SBOMs do not).
pub fn headline_summary(reports: &[ReportStatus]) -> Option<SeveritySummary> {
    reports.iter().find_map(|r| r.summary)
}

/// Whether every report has a stored version (Ready, or being rescanned with the old one kept).
pub fn all_usable(reports: &[ReportStatus]) -> bool {
    // Every entry with a stored report carries its `generatedAt`.
    reports.iter().all(|r| r.generated_at.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

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
}
