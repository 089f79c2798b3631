//! Scan policies: the rules of a ScanRequest's `spec.policy` or of a `ScanPolicy`, checked once
//! ([`Rules::parse`]) and evaluated ([`evaluate`]) as a pure function of the stored findings
//! (the compact list written with each report, never the report body) and one clock reading.
//!
//! The verdict is deterministic: the same rules, findings and report age give the same
//! [`PolicyStatus`], whatever the clock says between two moments at which it changes (an
//! allowlist entry expiring, a report turning too old). [`Verdict::next_change`] is the next
//! such moment, for a requeue at exactly that time.
//!
//! Counting: a vulnerability (id, package, version) listed by several reports, or twice by one,
//! counts once. `ignoreUnfixed` drops those without a fix version first; then an allowlist entry
//! in force (its `expires` still ahead) drops those it names, by id ignoring ASCII case. What is
//! left counts per severity; every vulnerability of a severity over its limit is a violation.
//! Negligible findings (`None`) never count against a limit.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::{
    INLINE_POLICY, MAX_LISTED_VIOLATIONS, PolicyRules, PolicyStatus, PolicyViolation,
    SeverityLimits, SeveritySummary,
};
use crate::scanner::summary::{Bucket, Finding};

/// The bounds of `maxReportAge`, as the CRD's CEL rule has them.
pub const MAX_REPORT_AGE_MIN: Duration = Duration::from_secs(60);
pub const MAX_REPORT_AGE_MAX: Duration = Duration::from_secs(8760 * 3600);

/// How many of the worst violations the condition message names.
const NAMED_IN_MESSAGE: usize = 5;

/// A rule that cannot be applied: the field (with its object) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RulesError {
    pub field: String,
    pub message: String,
}

/// Where the rules come from, as `status.policy` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The ScanPolicy's name, or [`INLINE_POLICY`].
    pub name: String,
    /// The ScanPolicy's `metadata.generation` (none for inline rules).
    pub generation: Option<i64>,
}

impl Source {
    pub fn inline() -> Self {
        Self {
            name: INLINE_POLICY.to_owned(),
            generation: None,
        }
    }

    pub fn scan_policy(name: &str, generation: Option<i64>) -> Self {
        Self {
            name: name.to_owned(),
            generation,
        }
    }

    fn describe(&self) -> String {
        if self.name == INLINE_POLICY {
            "the inline policy (spec.policy)".to_owned()
        } else {
            format!("ScanPolicy {:?}", self.name)
        }
    }
}

/// FNV-1a of `parts` (ASCII-lowercased when `fold`), each followed by a separator byte. A
/// fast keyless hash for the sets below, which still compare the strings themselves: a
/// collision costs time, never a wrong count.
fn fnv(parts: &[&str], fold: bool) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            let byte = if fold {
                byte.to_ascii_lowercase()
            } else {
                byte
            };
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// A hasher for keys that carry their own hash ([`fnv`]).
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type PrehashedState = BuildHasherDefault<Prehashed>;

/// A finding as a member of the set of vulnerabilities already counted: (id, package,
/// version) with its hash.
struct Counted<'a>(u64, &'a Finding);

impl Hash for Counted<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

impl PartialEq for Counted<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.1.id == other.1.id
            && self.1.package == other.1.package
            && self.1.version == other.1.version
    }
}

impl Eq for Counted<'_> {}

/// Allowlist entries by [`fnv`] of the lowercased id: (lowercased id, expiry).
type Allowlist = HashMap<u64, Vec<(String, Option<DateTime<Utc>>)>, PrehashedState>;

/// Rules ready to evaluate: durations and timestamps parsed and bounded, ids folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    limits: SeverityLimits,
    ignore_unfixed: bool,
    /// [`fnv`] of the lowercased id → (lowercased id, when the entry stops applying; `None`:
    /// never).
    allowlist: Allowlist,
    max_report_age: Option<Duration>,
    max_report_age_text: String,
}

impl Rules {
    /// Checks the rules; `field` is where they live, e.g. `spec.policy` or
    /// `ScanPolicy "strict" spec.rules`, so that an error names the field. Checked here as well
    /// as at admission: an object stored before a schema rule existed must stall, not panic.
    pub fn parse(rules: &PolicyRules, field: &str) -> Result<Self, RulesError> {
        let error = |sub: String, message: String| RulesError {
            field: format!("{field}.{sub}"),
            message,
        };
        let limits = rules.max_counts.unwrap_or_default();
        for (name, limit) in [
            ("critical", limits.critical),
            ("high", limits.high),
            ("medium", limits.medium),
            ("low", limits.low),
            ("unknown", limits.unknown),
        ] {
            if limit.is_some_and(|l| l < 0) {
                return Err(error(
                    format!("maxCounts.{name}"),
                    "must be 0 or more".into(),
                ));
            }
        }
        let mut allowlist =
            Allowlist::with_capacity_and_hasher(rules.allowlist.len(), PrehashedState::default());
        for (index, entry) in rules.allowlist.iter().enumerate() {
            let expires = entry
                .expires
                .as_deref()
                .map(|raw| {
                    DateTime::parse_from_rfc3339(raw)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|e| {
                            error(
                                format!("allowlist[{index}].expires"),
                                format!(
                                    "{raw:?} is not an RFC 3339 timestamp such as 2026-12-31T00:00:00Z: {e}"
                                ),
                            )
                        })
                })
                .transpose()?;
            let id = entry.id.trim().to_ascii_lowercase();
            if id.is_empty() {
                return Err(error(
                    format!("allowlist[{index}].id"),
                    "must name a vulnerability".into(),
                ));
            }
            // Two entries for one id: the one that lasts longer wins.
            let bucket = allowlist.entry(fnv(&[&id], false)).or_default();
            match bucket.iter_mut().find(|(known, _)| *known == id) {
                Some((_, slot)) => {
                    *slot = match (*slot, expires) {
                        (None, _) | (_, None) => None,
                        (Some(a), Some(b)) => Some(a.max(b)),
                    };
                }
                None => bucket.push((id, expires)),
            }
        }
        let max_report_age = rules
            .max_report_age
            .as_deref()
            .map(|raw| {
                crate::duration::parse_within(raw, MAX_REPORT_AGE_MIN, MAX_REPORT_AGE_MAX)
                    .map_err(|e| error("maxReportAge".into(), e.to_string()))
            })
            .transpose()?;
        Ok(Self {
            limits,
            ignore_unfixed: rules.ignore_unfixed,
            allowlist,
            max_report_age,
            max_report_age_text: rules.max_report_age.clone().unwrap_or_default(),
        })
    }

    /// The allowlist entry naming `id` (ignoring ASCII case): `Some(expires)`.
    fn allowlisted(&self, id: &str) -> Option<Option<DateTime<Utc>>> {
        let id = id.trim();
        self.allowlist
            .get(&fnv(&[id], true))?
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(id))
            .map(|(_, expires)| *expires)
    }

    fn limit(&self, severity: Bucket) -> Option<i64> {
        match severity {
            Bucket::Critical => self.limits.critical,
            Bucket::High => self.limits.high,
            Bucket::Medium => self.limits.medium,
            Bucket::Low => self.limits.low,
            Bucket::Unknown => self.limits.unknown,
            Bucket::None => None,
        }
    }
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: PolicyStatus,
    /// For the `Ready`/`Stalled` condition: what complies or which rules break, naming the
    /// worst vulnerabilities.
    pub message: String,
    /// The next moment at which the verdict changes by itself: the earliest expiry of an
    /// allowlist entry that drops a finding, or when a report turns older than
    /// `maxReportAge`.
    pub next_change: Option<DateTime<Utc>>,
}

/// Evaluates `rules` against the findings of the request's stored vulnerability reports at
/// `now`. `oldest_report` is when the oldest of those reports was generated.
pub fn evaluate(
    rules: &Rules,
    source: &Source,
    reports: &[&[Finding]],
    oldest_report: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Verdict {
    let mut seen: HashSet<Counted<'_>, PrehashedState> = HashSet::with_capacity_and_hasher(
        reports.iter().map(|r| r.len()).sum(),
        PrehashedState::default(),
    );
    let mut counts = SeveritySummary::default();
    let (mut allowlisted, mut ignored_unfixed) = (0i64, 0i64);
    let mut next_change: Option<DateTime<Utc>> = None;
    let mut counted: Vec<&Finding> = Vec::new();
    for finding in reports.iter().flat_map(|r| r.iter()) {
        let key = fnv(&[&finding.id, &finding.package, &finding.version], false);
        if !seen.insert(Counted(key, finding)) {
            continue;
        }
        if rules.ignore_unfixed && finding.fix_version.is_none() {
            ignored_unfixed = ignored_unfixed.saturating_add(1);
            continue;
        }
        if !rules.allowlist.is_empty() {
            match rules.allowlisted(&finding.id) {
                Some(None) => {
                    allowlisted = allowlisted.saturating_add(1);
                    continue;
                }
                Some(Some(expires)) if now < expires => {
                    allowlisted = allowlisted.saturating_add(1);
                    next_change = earliest(next_change, expires);
                    continue;
                }
                _ => {}
            }
        }
        let counter = match finding.severity {
            Bucket::Critical => &mut counts.critical,
            Bucket::High => &mut counts.high,
            Bucket::Medium => &mut counts.medium,
            Bucket::Low => &mut counts.low,
            Bucket::Unknown => &mut counts.unknown,
            Bucket::None => &mut counts.none,
        };
        *counter = counter.saturating_add(1);
        if finding.fix_version.is_some() {
            counts.fixable = counts.fixable.saturating_add(1);
        }
        counted.push(finding);
    }

    // Severities over their limit, worst first.
    let over: Vec<(Bucket, i64, i64)> = [
        Bucket::Critical,
        Bucket::High,
        Bucket::Medium,
        Bucket::Low,
        Bucket::Unknown,
    ]
    .into_iter()
    .filter_map(|b| {
        let limit = rules.limit(b)?;
        let count = count_of(&counts, b);
        (count > limit).then_some((b, count, limit))
    })
    .collect();
    let mut violating: Vec<&Finding> = counted
        .into_iter()
        .filter(|f| over.iter().any(|(b, _, _)| *b == f.severity))
        .collect();
    let violation_count = i64::try_from(violating.len()).unwrap_or(i64::MAX);
    let worst_first = |a: &&Finding, b: &&Finding| {
        (Reverse(a.severity), &a.id, &a.package, &a.version).cmp(&(
            Reverse(b.severity),
            &b.id,
            &b.package,
            &b.version,
        ))
    };
    if violating.len() > MAX_LISTED_VIOLATIONS {
        violating.select_nth_unstable_by(MAX_LISTED_VIOLATIONS - 1, worst_first);
        violating.truncate(MAX_LISTED_VIOLATIONS);
    }
    violating.sort_by(worst_first);
    let violations: Vec<PolicyViolation> = violating
        .iter()
        .map(|f| PolicyViolation {
            id: f.id.clone(),
            package: f.package.clone(),
            version: f.version.clone(),
            severity: f.severity.as_str().to_owned(),
            fix_version: f.fix_version.clone(),
        })
        .collect();

    let mut report_too_old = false;
    if let (Some(max_age), Some(generated)) = (rules.max_report_age, oldest_report) {
        let too_old_at = chrono::Duration::from_std(max_age)
            .ok()
            .and_then(|age| generated.checked_add_signed(age));
        match too_old_at {
            Some(at) if now < at => next_change = earliest(next_change, at),
            _ => report_too_old = true,
        }
    }

    let compliant = over.is_empty() && !report_too_old;
    let message = message(
        rules,
        source,
        &over,
        &violations,
        report_too_old.then_some(oldest_report).flatten(),
    );
    Verdict {
        status: PolicyStatus {
            compliant,
            policy: source.name.clone(),
            generation: source.generation,
            counts,
            allowlisted,
            ignored_unfixed,
            violation_count,
            violations,
            report_too_old,
        },
        message,
        next_change,
    }
}

fn earliest(current: Option<DateTime<Utc>>, candidate: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(current.map_or(candidate, |c| c.min(candidate)))
}

fn count_of(counts: &SeveritySummary, severity: Bucket) -> i64 {
    match severity {
        Bucket::Critical => counts.critical,
        Bucket::High => counts.high,
        Bucket::Medium => counts.medium,
        Bucket::Low => counts.low,
        Bucket::Unknown => counts.unknown,
        Bucket::None => counts.none,
    }
}

/// The condition message: deterministic (no clock reading), naming the broken rules and the
/// worst vulnerabilities.
fn message(
    rules: &Rules,
    source: &Source,
    over: &[(Bucket, i64, i64)],
    violations: &[PolicyViolation],
    too_old: Option<DateTime<Utc>>,
) -> String {
    let policy = source.describe();
    if over.is_empty() && too_old.is_none() {
        return format!("Every requested report is stored; the findings comply with {policy}");
    }
    let mut text = format!("The findings violate {policy}:");
    let mut first = true;
    for (severity, count, limit) in over {
        let _ = write!(
            text,
            "{} {count} {} (at most {limit} allowed)",
            if first { "" } else { "," },
            severity.as_str().to_ascii_lowercase()
        );
        first = false;
    }
    if let Some(generated) = too_old {
        let _ = write!(
            text,
            "{} the report generated at {} is older than maxReportAge {}; rescan with a new spec.rescanToken or a rescanAfter shorter than maxReportAge",
            if first { "" } else { ";" },
            generated.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            rules.max_report_age_text
        );
    }
    if !violations.is_empty() {
        let named: Vec<String> = violations
            .iter()
            .take(NAMED_IN_MESSAGE)
            .map(|v| {
                let fix = v
                    .fix_version
                    .as_deref()
                    .map_or_else(|| "no fix".to_owned(), |f| format!("fixed in {f}"));
                format!(
                    "{} ({}, {} {}, {fix})",
                    v.id, v.severity, v.package, v.version
                )
            })
            .collect();
        let _ = write!(text, ". Worst: {}", named.join("; "));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AllowlistEntry;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn finding(id: &str, package: &str, severity: Bucket, fix: Option<&str>) -> Finding {
        Finding {
            id: id.into(),
            package: package.into(),
            version: "1.0".into(),
            severity,
            fix_version: fix.map(str::to_owned),
        }
    }

    /// Rules from YAML, as a user writes them in `spec.policy`.
    fn rules(yaml: &str) -> Rules {
        let parsed: PolicyRules = serde_yaml::from_str(yaml).unwrap();
        Rules::parse(&parsed, "spec.policy").unwrap()
    }

    fn sample() -> Vec<Finding> {
        vec![
            finding("CVE-2024-0001", "openssl", Bucket::Critical, Some("3.1")),
            finding("CVE-2024-0002", "zlib", Bucket::High, None),
            finding("CVE-2024-0003", "curl", Bucket::High, Some("8.0")),
            finding("CVE-2024-0004", "tar", Bucket::Medium, None),
            finding("CVE-2024-0005", "bash", Bucket::None, None),
        ]
    }

    fn eval(rules: &Rules, findings: &[Finding], now: DateTime<Utc>) -> Verdict {
        evaluate(rules, &Source::inline(), &[findings], Some(at(0)), now)
    }

    #[test]
    fn findings_within_every_limit_comply() {
        let r = rules("maxCounts: {critical: 1, high: 2}");
        let v = eval(&r, &sample(), at(10));
        assert!(v.status.compliant, "{v:?}");
        assert_eq!(v.status.policy, "inline");
        assert_eq!(
            v.status.counts,
            SeveritySummary {
                critical: 1,
                high: 2,
                medium: 1,
                low: 0,
                unknown: 0,
                none: 1,
                fixable: 2
            }
        );
        assert!(v.status.violations.is_empty());
        assert_eq!(v.next_change, None);
        assert!(v.message.contains("comply"), "{}", v.message);
    }

    #[test]
    fn a_severity_over_its_limit_lists_its_vulnerabilities_worst_first() {
        let r = rules("maxCounts: {critical: 0, high: 1}");
        let v = eval(&r, &sample(), at(10));
        assert!(!v.status.compliant);
        assert_eq!(v.status.violation_count, 3);
        let ids: Vec<&str> = v.status.violations.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["CVE-2024-0001", "CVE-2024-0002", "CVE-2024-0003"]);
        assert_eq!(v.status.violations[0].package, "openssl");
        assert_eq!(v.status.violations[0].severity, "Critical");
        assert!(
            v.message.starts_with(
                "The findings violate the inline policy (spec.policy): 1 critical (at most 0 allowed), 2 high (at most 1 allowed). Worst: CVE-2024-0001 (Critical, openssl 1.0, fixed in 3.1)"
            ),
            "{}",
            v.message
        );
    }

    #[test]
    fn ignore_unfixed_drops_vulnerabilities_without_a_fix_version() {
        let r = rules("maxCounts: {high: 1, medium: 0}\nignoreUnfixed: true");
        let v = eval(&r, &sample(), at(10));
        assert!(v.status.compliant, "{v:?}");
        assert_eq!(v.status.ignored_unfixed, 3);
        assert_eq!(v.status.counts.high, 1);
        let strict = rules("maxCounts: {high: 1, medium: 0}");
        assert!(!eval(&strict, &sample(), at(10)).status.compliant);
    }

    #[test]
    fn an_allowlist_entry_applies_until_it_expires_and_the_verdict_flips_exactly_then() {
        let r = rules(
            "maxCounts: {critical: 0}\nallowlist:\n- id: cve-2024-0001\n  expires: \"2027-01-15T08:00:10Z\"\n  reason: vendor backport",
        );
        let expires: DateTime<Utc> = "2027-01-15T08:00:10Z".parse().unwrap();
        let before = eval(&r, &sample(), expires - chrono::Duration::seconds(1));
        assert!(before.status.compliant, "{before:?}");
        assert_eq!(before.status.allowlisted, 1);
        assert_eq!(
            before.next_change,
            Some(expires),
            "requeue exactly at expiry"
        );
        let after = eval(&r, &sample(), expires);
        assert!(!after.status.compliant);
        assert_eq!(after.status.violations[0].id, "CVE-2024-0001");
        assert_eq!(
            after.next_change, None,
            "nothing changes by itself any more"
        );
        // Between the moments the verdict changes, it is the same whatever the clock says.
        assert_eq!(
            eval(&r, &sample(), expires - chrono::Duration::hours(5)),
            before
        );
    }

    #[test]
    fn an_allowlist_entry_without_expiry_applies_for_ever_and_schedules_nothing() {
        let r = rules("maxCounts: {critical: 0}\nallowlist:\n- id: CVE-2024-0001");
        let v = eval(&r, &sample(), at(10));
        assert!(v.status.compliant);
        assert_eq!(v.next_change, None);
    }

    #[test]
    fn a_vulnerability_in_two_reports_counts_once() {
        let r = rules("maxCounts: {critical: 1}");
        let a = sample();
        let b = sample();
        let v = evaluate(&r, &Source::inline(), &[&a, &b], Some(at(0)), at(10));
        assert!(v.status.compliant, "{v:?}");
        assert_eq!(v.status.counts.critical, 1);
    }

    #[test]
    fn a_report_older_than_max_report_age_fails_and_the_moment_it_does_is_scheduled() {
        let r = rules("maxReportAge: 1h");
        let young = eval(&r, &sample(), at(1800));
        assert!(young.status.compliant);
        assert_eq!(young.next_change, Some(at(3600)));
        let old = eval(&r, &sample(), at(3600));
        assert!(!old.status.compliant);
        assert!(old.status.report_too_old);
        assert!(
            old.message.contains("older than maxReportAge 1h"),
            "{}",
            old.message
        );
    }

    #[test]
    fn at_most_ten_violations_are_listed_and_all_are_counted() {
        let many: Vec<Finding> = (0..5000)
            .map(|i| finding(&format!("CVE-2024-{i:05}"), "pkg", Bucket::High, None))
            .collect();
        let r = rules("maxCounts: {high: 0}");
        let v = eval(&r, &many, at(0));
        assert_eq!(v.status.violation_count, 5000);
        assert_eq!(v.status.violations.len(), MAX_LISTED_VIOLATIONS);
        assert_eq!(v.status.violations[0].id, "CVE-2024-00000");
        assert_eq!(v.status.violations[9].id, "CVE-2024-00009");
    }

    #[test]
    fn colliding_keys_are_still_told_apart_by_their_strings() {
        // Every key hashes alike: counting must still compare the strings.
        let mut seen: HashSet<Counted<'_>, PrehashedState> = HashSet::default();
        let a = finding("CVE-1", "a", Bucket::High, None);
        let b = finding("CVE-1", "b", Bucket::High, None);
        assert!(seen.insert(Counted(7, &a)));
        assert!(seen.insert(Counted(7, &b)));
        assert!(!seen.insert(Counted(7, &a)));
        assert_ne!(fnv(&["ab", "c"], false), fnv(&["a", "bc"], false));
        assert_eq!(fnv(&["CVE-1"], true), fnv(&["cve-1"], false));
    }

    #[test]
    fn a_scan_policy_source_is_named_with_its_generation() {
        let r = rules("maxCounts: {critical: 0}");
        let source = Source::scan_policy("strict", Some(3));
        let v = evaluate(&r, &source, &[&sample()], None, at(0));
        assert_eq!(
            (v.status.policy.as_str(), v.status.generation),
            ("strict", Some(3))
        );
        assert!(v.message.contains("ScanPolicy \"strict\""), "{}", v.message);
    }

    #[test]
    fn rules_that_cannot_apply_name_their_field() {
        let bad_expiry = PolicyRules {
            allowlist: vec![AllowlistEntry {
                id: "CVE-1".into(),
                expires: Some("tomorrow".into()),
                reason: None,
            }],
            ..PolicyRules::default()
        };
        let e = Rules::parse(&bad_expiry, "spec.policy").unwrap_err();
        assert_eq!(e.field, "spec.policy.allowlist[0].expires");
        let bad_age = PolicyRules {
            max_report_age: Some("10s".into()),
            ..PolicyRules::default()
        };
        let e = Rules::parse(&bad_age, "ScanPolicy \"x\" spec.rules").unwrap_err();
        assert_eq!(e.field, "ScanPolicy \"x\" spec.rules.maxReportAge");
        let negative = PolicyRules {
            max_counts: Some(SeverityLimits {
                high: Some(-1),
                ..SeverityLimits::default()
            }),
            ..PolicyRules::default()
        };
        assert!(Rules::parse(&negative, "spec.policy").is_err());
    }
}
