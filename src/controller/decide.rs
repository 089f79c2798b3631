//! The controller's decisions, as pure functions of what the other steps found out: what to do
//! with a stored report, which phase a report is in, the overall state, what `rescanToken`
//! asks for, and when to look again. No clients, no clocks: tests feed them plain values.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::runtime::controller::Action;
use rand::Rng;

use super::status::Overall;
use crate::api::{PendingRescan, ReportPhase, ReportStatus, ScanRequestStatus};
use crate::identity::ReportKey;
use crate::store::ReportMeta;

/// What steps 4–7 leave for one report.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub key: ReportKey,
    /// The platform of an image index the report is of.
    pub platform: Option<String>,
    pub phase: ReportPhase,
    /// The stored report, if there is one.
    pub meta: Option<ReportMeta>,
    pub message: Option<String>,
    /// When to look again; `None` when nothing is due.
    pub requeue: Option<Duration>,
}

/// The demand of `spec.rescanToken`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rescan {
    /// The reports answer the current token (or there is none).
    Settled,
    /// A new token wants scans completed after `requested_at` (database clock).
    Wanted {
        token: String,
        requested_at: DateTime<Utc>,
    },
}

/// What `spec.rescanToken` asks for, as far as the status tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RescanDemand {
    Known(Rescan),
    /// A token never seen before: it wants scans completed after now (see
    /// [`token_requested_at`]).
    NewToken(String),
}

/// Works out what `spec.rescanToken` asks for. A token present when the request is first seen
/// is taken as answered by whatever is stored; a *changed* token forces new scans.
pub fn rescan_demand(token: Option<&str>, status: Option<&ScanRequestStatus>) -> RescanDemand {
    let Some(token) = token else {
        return RescanDemand::Known(Rescan::Settled);
    };
    let empty = ScanRequestStatus::default();
    let status = status.unwrap_or(&empty);
    if status.rescan_token.as_deref() == Some(token) {
        return RescanDemand::Known(Rescan::Settled);
    }
    if let Some(pending) = status.pending_rescan.as_ref().filter(|p| p.token == token) {
        return RescanDemand::Known(Rescan::Wanted {
            token: token.to_owned(),
            requested_at: super::status::chrono_time(&pending.requested_at),
        });
    }
    let first_sight = status.rescan_token.is_none() && status.reports.is_empty();
    if first_sight {
        return RescanDemand::Known(Rescan::Settled);
    }
    RescanDemand::NewToken(token.to_owned())
}

/// The time a new token asks scans to be newer than: `now` rounded up to whole seconds. The
/// status keeps whole seconds; rounding up means a scan that completed just before the token
/// changed can never count as the forced one.
pub fn token_requested_at(now: DateTime<Utc>) -> DateTime<Utc> {
    let whole = now
        .timestamp()
        .saturating_add(i64::from(now.timestamp_subsec_nanos() > 0));
    DateTime::from_timestamp(whole, 0).unwrap_or(now)
}

/// The time after which a scan must have completed for the stored report to count as fresh.
pub fn needed_after(
    rescan_after: Option<Duration>,
    rescan: &Rescan,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let by_age = rescan_after
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| now.checked_sub_signed(d));
    let by_token = match rescan {
        Rescan::Wanted { requested_at, .. } => Some(*requested_at),
        Rescan::Settled => None,
    };
    by_age.max(by_token)
}

/// Step 4: what to do about the stored report of one report id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredReport {
    /// Use it as it is; look again when it turns stale (`None`: it never does).
    Fresh { requeue: Option<Duration> },
    /// Scan (or join the scan in flight). `newer_than`: the scan must complete after this
    /// time: when a stored report is too old, the time it is needed after; when nothing is
    /// stored, the time of the read, since a scan that completed after it stored a report the
    /// read could not see (another request of the tuple, racing this one).
    Scan { newer_than: Option<DateTime<Utc>> },
}

/// Step 4. `last_scan` is when the report was last scanned (the job's completion, else the
/// report's last update); `needed_after` comes from [`needed_after`].
pub fn stored_report(
    stored: bool,
    last_scan: Option<DateTime<Utc>>,
    needed_after: Option<DateTime<Utc>>,
    rescan_after: Option<Duration>,
    now: DateTime<Utc>,
) -> StoredReport {
    if !stored {
        return StoredReport::Scan {
            newer_than: Some(now),
        };
    }
    if needed_after.is_none_or(|t| last_scan.is_some_and(|l| l >= t)) {
        let requeue = rescan_after.and_then(|every| {
            let stale_at =
                last_scan?.checked_add_signed(chrono::Duration::from_std(every).ok()?)?;
            Some((stale_at - now).to_std().unwrap_or_default())
        });
        return StoredReport::Fresh { requeue };
    }
    StoredReport::Scan {
        newer_than: needed_after,
    }
}

/// The phase of a report whose scan is under way: while a stored report exists it is
/// `Rescanning` (the stored one stays usable), otherwise `phase` (`Pending` or `Scanning`).
/// The one place that decides this.
pub fn in_flight_phase(stored: bool, phase: ReportPhase) -> ReportPhase {
    if stored {
        ReportPhase::Rescanning
    } else {
        phase
    }
}

/// The overall state from the outcomes of all reports: a failed report stalls the request,
/// the first report not ready says what is under way, and otherwise the request is ready.
pub fn overall(outcomes: &[Outcome], reports: &[ReportStatus]) -> Overall {
    let failed = outcomes.iter().find(|o| o.phase == ReportPhase::Failed);
    let busy = outcomes.iter().find(|o| o.phase != ReportPhase::Ready);
    match (failed, busy) {
        (Some(f), _) => Overall::Stalled {
            reason: "ScanRejected".into(),
            message: format!(
                "{}: {}",
                f.key.mime_type,
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
            usable: super::status::all_usable(reports),
        },
        (None, None) => Overall::Ready,
    }
}

/// `status.rescanToken` and `status.pendingRescan`: a wanted rescan is answered once the
/// request is ready again; until then the previous token stays and the new one is pending.
pub fn rescan_status(
    rescan: &Rescan,
    overall: &Overall,
    spec_token: Option<&str>,
    previous_token: Option<&str>,
) -> (Option<String>, Option<PendingRescan>) {
    match rescan {
        Rescan::Settled => (spec_token.map(str::to_owned), None),
        Rescan::Wanted { .. } if *overall == Overall::Ready => {
            (spec_token.map(str::to_owned), None)
        }
        Rescan::Wanted {
            token,
            requested_at,
        } => (
            previous_token.map(str::to_owned),
            Some(PendingRescan {
                token: token.clone(),
                requested_at: super::status::k8s_time(*requested_at),
            }),
        ),
    }
}

/// When to reconcile again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Something is due after this long (at least 100 ms); jittered by up to 10 % so that
    /// requests due together spread out.
    Soon(Duration),
    /// Stalled with nothing due: look again after `--stall-recheck`, since Secrets are not
    /// watched.
    Recheck(Duration),
    /// Nothing is due: wait for a change of the request or its Scanner.
    AwaitChange,
    /// The policy verdict changes by itself after exactly this long (an allowlist entry
    /// expires, a report turns too old): no jitter, so the verdict flips on time.
    Exact(Duration),
}

/// Step 8: when to look again, from the earliest requeue any report asked for.
pub fn next(overall: &Overall, outcomes: &[Outcome], stall_recheck: Duration) -> Next {
    match (overall, outcomes.iter().filter_map(|o| o.requeue).min()) {
        (_, Some(after)) => Next::Soon(after.max(Duration::from_millis(100))),
        (Overall::Stalled { .. }, None) => Next::Recheck(stall_recheck),
        (_, None) => Next::AwaitChange,
    }
}

/// `next`, or the moment the policy verdict changes by itself (`verdict_changes_in`) when that
/// comes first.
pub fn with_verdict_change(next: Next, verdict_changes_in: Option<Duration>) -> Next {
    let Some(exact) = verdict_changes_in else {
        return next;
    };
    match next {
        Next::Soon(after) | Next::Recheck(after) | Next::Exact(after) if after <= exact => next,
        _ => Next::Exact(exact),
    }
}

/// `next`, or `due` (a tag resolution) when that comes first; jittered like any other
/// requeue, since nothing hangs on the exact moment.
pub fn with_deadline(next: Next, due: Duration) -> Next {
    match next {
        Next::Soon(after) | Next::Recheck(after) | Next::Exact(after) if after <= due => next,
        _ => Next::Soon(due.max(Duration::from_millis(100))),
    }
}

/// The longest requeue: the runtime's timer queue panics on deadlines years ahead, and a
/// report due in a year is as well looked at daily (the reconcile then finds it fresh).
pub const MAX_REQUEUE: Duration = Duration::from_secs(24 * 3600);

impl Next {
    pub fn action(self) -> Action {
        match self.delay() {
            Some(after) => Action::requeue(after),
            None => Action::await_change(),
        }
    }

    /// The requeue delay, jittered and at most [`MAX_REQUEUE`] (times the jitter).
    pub fn delay(self) -> Option<Duration> {
        Some(match self {
            Self::Soon(after) => {
                let jitter = rand::rng().random_range(1.0..=1.1);
                Duration::try_from_secs_f64(after.min(MAX_REQUEUE).as_secs_f64() * jitter)
                    .unwrap_or(MAX_REQUEUE)
            }
            Self::Recheck(after) => after.min(MAX_REQUEUE),
            // Timers never fire early; a margin of a millisecond keeps the reconcile after the
            // moment rather than at it.
            Self::Exact(after) => after
                .saturating_add(Duration::from_millis(1))
                .min(MAX_REQUEUE),
            Self::AwaitChange => return None,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::ScanRequest;
    use crate::identity::{Digest, MimeType};
    use chrono::TimeZone;

    /// A ScanRequest from a YAML fixture in `src/controller/fixtures/`.
    pub(crate) fn fixture(name: &str) -> ScanRequest {
        let path = format!(
            "{}/src/controller/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub(crate) fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    pub(crate) fn outcome(mime: &str, phase: ReportPhase, requeue: Option<u64>) -> Outcome {
        Outcome {
            key: ReportKey {
                digest: Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap(),
                registration_uuid: uuid::Uuid::nil(),
                mime_type: MimeType::parse(mime).unwrap(),
            },
            platform: None,
            phase,
            meta: None,
            message: Some(format!("{phase:?} message")),
            requeue: requeue.map(Duration::from_secs),
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);
    const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";
    const RAW: &str = "application/vnd.scanner.adapter.vuln.report.raw";

    #[test]
    fn nothing_stored_means_scan_unless_a_scan_completed_after_the_read() {
        let d = stored_report(false, None, Some(at(0)), Some(HOUR), at(10));
        assert_eq!(
            d,
            StoredReport::Scan {
                newer_than: Some(at(10))
            }
        );
    }

    #[test]
    fn a_stored_report_without_rescan_settings_is_used_forever() {
        let d = stored_report(true, Some(at(0)), None, None, at(1_000_000));
        assert_eq!(d, StoredReport::Fresh { requeue: None });
    }

    #[test]
    fn far_requeues_are_capped_at_a_day_and_never_panic() {
        let far = Next::Soon(Duration::MAX).delay().expect("a delay");
        assert!(
            far >= MAX_REQUEUE && far <= MAX_REQUEUE.mul_f64(1.1),
            "{far:?}"
        );
        assert_eq!(Next::Recheck(Duration::MAX).delay(), Some(MAX_REQUEUE));
        let near = Next::Soon(Duration::from_secs(10))
            .delay()
            .expect("a delay");
        assert!(near >= Duration::from_secs(10) && near <= Duration::from_secs(11));
        assert_eq!(Next::AwaitChange.delay(), None);
        let _ = Next::Soon(Duration::MAX).action();
    }

    #[test]
    fn a_verdict_change_requeues_exactly_then_unless_something_is_due_sooner() {
        let in_5s = Some(Duration::from_secs(5));
        assert_eq!(
            with_verdict_change(Next::AwaitChange, in_5s),
            Next::Exact(Duration::from_secs(5))
        );
        assert_eq!(
            with_verdict_change(Next::Soon(Duration::from_secs(2)), in_5s),
            Next::Soon(Duration::from_secs(2))
        );
        assert_eq!(
            with_verdict_change(Next::Recheck(HOUR), in_5s),
            Next::Exact(Duration::from_secs(5))
        );
        assert_eq!(
            with_verdict_change(Next::AwaitChange, None),
            Next::AwaitChange
        );
        // No jitter: the requeue is the moment itself (plus a millisecond).
        assert_eq!(
            Next::Exact(Duration::from_secs(5)).delay(),
            Some(Duration::from_millis(5001))
        );
        assert_eq!(Next::Exact(Duration::MAX).delay(), Some(MAX_REQUEUE));
    }

    #[test]
    fn a_stored_report_younger_than_rescan_after_is_used_until_it_turns_stale() {
        let now = at(1800);
        let needed = needed_after(Some(HOUR), &Rescan::Settled, now);
        assert_eq!(needed, Some(at(-1800)));
        let d = stored_report(true, Some(at(0)), needed, Some(HOUR), now);
        assert_eq!(
            d,
            StoredReport::Fresh {
                requeue: Some(Duration::from_secs(1800))
            },
            "look again exactly when it turns stale"
        );
    }

    #[test]
    fn a_stored_report_older_than_rescan_after_is_rescanned() {
        let now = at(7200);
        let needed = needed_after(Some(HOUR), &Rescan::Settled, now);
        let d = stored_report(true, Some(at(0)), needed, Some(HOUR), now);
        assert_eq!(
            d,
            StoredReport::Scan {
                newer_than: Some(at(3600))
            }
        );
    }

    #[test]
    fn a_changed_token_wants_a_scan_completed_after_it_was_seen() {
        let wanted = Rescan::Wanted {
            token: "t2".into(),
            requested_at: at(100),
        };
        let needed = needed_after(None, &wanted, at(200));
        assert_eq!(needed, Some(at(100)));
        // Scanned before the token changed: scan again.
        assert_eq!(
            stored_report(true, Some(at(99)), needed, None, at(200)),
            StoredReport::Scan {
                newer_than: Some(at(100))
            }
        );
        // Scanned since: the token is answered.
        assert_eq!(
            stored_report(true, Some(at(150)), needed, None, at(200)),
            StoredReport::Fresh { requeue: None }
        );
        // The later of the two demands wins.
        assert_eq!(needed_after(Some(HOUR), &wanted, at(7200)), Some(at(3600)));
    }

    #[test]
    fn a_scan_in_flight_shows_rescanning_exactly_when_a_report_is_stored() {
        for phase in [ReportPhase::Pending, ReportPhase::Scanning] {
            assert_eq!(in_flight_phase(true, phase), ReportPhase::Rescanning);
            assert_eq!(in_flight_phase(false, phase), phase);
        }
    }

    #[test]
    fn a_failed_report_stalls_the_request_and_names_its_mime_type() {
        let outcomes = [
            outcome(VULN, ReportPhase::Scanning, Some(1)),
            outcome(RAW, ReportPhase::Failed, Some(300)),
        ];
        let Overall::Stalled { reason, message } = overall(&outcomes, &[]) else {
            panic!("not stalled");
        };
        assert_eq!(reason, "ScanRejected");
        assert!(message.starts_with(RAW), "{message}");
        assert!(message.ends_with("Failed message"), "{message}");
    }

    #[test]
    fn the_first_busy_report_says_what_is_under_way() {
        let cases = [
            (ReportPhase::Pending, "Queued"),
            (ReportPhase::Scanning, "Scanning"),
            (ReportPhase::Rescanning, "Rescanning"),
        ];
        for (phase, expected) in cases {
            let outcomes = [
                outcome(VULN, ReportPhase::Ready, None),
                outcome(RAW, phase, Some(2)),
            ];
            let Overall::Progressing {
                reason, message, ..
            } = overall(&outcomes, &[])
            else {
                panic!("not progressing");
            };
            assert_eq!(reason, expected);
            assert_eq!(message, format!("{phase:?} message"));
        }
        let all_ready = [outcome(VULN, ReportPhase::Ready, None)];
        assert_eq!(overall(&all_ready, &[]), Overall::Ready);
    }

    #[test]
    fn the_earliest_requeue_wins_with_a_floor_of_100_ms() {
        let ready = Overall::Ready;
        let outcomes = [
            outcome(VULN, ReportPhase::Scanning, Some(5)),
            outcome(RAW, ReportPhase::Scanning, Some(2)),
        ];
        assert_eq!(
            next(&ready, &outcomes, HOUR),
            Next::Soon(Duration::from_secs(2))
        );
        let mut now = outcome(VULN, ReportPhase::Scanning, None);
        now.requeue = Some(Duration::ZERO);
        assert_eq!(
            next(&ready, &[now], HOUR),
            Next::Soon(Duration::from_millis(100))
        );
        assert_eq!(
            next(&ready, &[outcome(VULN, ReportPhase::Ready, None)], HOUR),
            Next::AwaitChange
        );
        let stalled = Overall::Stalled {
            reason: "ScanRejected".into(),
            message: "no".into(),
        };
        assert_eq!(
            next(&stalled, &[outcome(VULN, ReportPhase::Ready, None)], HOUR),
            Next::Recheck(HOUR)
        );
    }

    #[test]
    fn rescan_demand_from_the_status() {
        let pending = fixture("rescan-pending.yaml");
        // The pending token is still wanted, from when it was first seen.
        assert_eq!(
            rescan_demand(
                pending.spec.rescan_token.as_deref(),
                pending.status.as_ref()
            ),
            RescanDemand::Known(Rescan::Wanted {
                token: "2026-11-28".into(),
                requested_at: "2026-11-28T08:00:00Z".parse().unwrap(),
            })
        );
        // The token the reports answer: settled.
        assert_eq!(
            rescan_demand(Some("2026-11-27"), pending.status.as_ref()),
            RescanDemand::Known(Rescan::Settled)
        );
        // Yet another token: new, it needs the database clock.
        assert_eq!(
            rescan_demand(Some("2026-11-29"), pending.status.as_ref()),
            RescanDemand::NewToken("2026-11-29".into())
        );
        // No token: nothing to do.
        assert_eq!(
            rescan_demand(None, pending.status.as_ref()),
            RescanDemand::Known(Rescan::Settled)
        );
        // A token present when the request is first seen is answered by what is stored.
        let new = fixture("new.yaml");
        assert_eq!(
            rescan_demand(new.spec.rescan_token.as_deref(), new.status.as_ref()),
            RescanDemand::Known(Rescan::Settled)
        );
    }

    #[test]
    fn a_new_token_is_requested_at_the_next_whole_second() {
        let t = at(10) + chrono::Duration::milliseconds(200);
        assert_eq!(token_requested_at(t), at(11));
        assert_eq!(token_requested_at(at(10)), at(10));
    }

    #[test]
    fn a_wanted_rescan_is_answered_only_once_the_request_is_ready() {
        let wanted = Rescan::Wanted {
            token: "new".into(),
            requested_at: at(0),
        };
        let busy = Overall::Progressing {
            reason: "Rescanning".into(),
            message: "m".into(),
            usable: true,
        };
        let (token, pending) = rescan_status(&wanted, &busy, Some("new"), Some("old"));
        assert_eq!(token.as_deref(), Some("old"));
        let pending = pending.expect("pending rescan");
        assert_eq!(pending.token, "new");
        assert_eq!(pending.requested_at, super::super::status::k8s_time(at(0)));

        let (token, pending) = rescan_status(&wanted, &Overall::Ready, Some("new"), Some("old"));
        assert_eq!(token.as_deref(), Some("new"));
        assert!(pending.is_none());

        let (token, pending) = rescan_status(&Rescan::Settled, &busy, Some("new"), Some("old"));
        assert_eq!(token.as_deref(), Some("new"));
        assert!(pending.is_none());
    }
}
