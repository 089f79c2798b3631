//! Severity counts of vulnerability reports, for `status.summary` and `kubectl get`.
//!
//! Both vulnerability report MIME types share the `HarborVulnerabilityReport` schema: an object
//! with a `vulnerabilities` array whose items carry `severity` and, when a fix exists,
//! `fix_version`. Each item counts once, as Harbor counts them.
//!
//! Severity mapping (case-insensitive, surrounding whitespace ignored):
//! `Critical`, `High`, `Medium`, `Low` count as themselves; `Unknown` counts as unknown;
//! `None` and `Negligible` count as none, as Harbor's own CVSS v3 mapping does
//! (`ParseSeverityVersion3`), since CVSS v3 has no negligible rating. Anything else, and a
//! missing or non-string severity, counts as unknown: never dropped.

use serde_json::Value;

use crate::api::SeveritySummary;
use crate::identity::MimeType;

use super::wire::mime;

/// The severity buckets of [`SeveritySummary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    None,
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

/// Maps a report's severity string to its bucket (see the module documentation).
pub fn bucket(severity: &str) -> Bucket {
    match severity.trim().to_ascii_lowercase().as_str() {
        "critical" => Bucket::Critical,
        "high" => Bucket::High,
        "medium" => Bucket::Medium,
        "low" => Bucket::Low,
        "none" | "negligible" => Bucket::None,
        _ => Bucket::Unknown,
    }
}

/// Why a vulnerability report cannot be summarised. The report is then unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SummaryError {
    #[error("the vulnerability report is not a JSON object")]
    NotAnObject,
    #[error("`vulnerabilities` of the vulnerability report is not an array")]
    VulnerabilitiesNotAnArray,
    #[error("item {index} of `vulnerabilities` is not a JSON object")]
    ItemNotAnObject { index: usize },
}

/// Whether reports of this MIME type are vulnerability reports with a summary.
pub fn has_summary(mime_type: &MimeType) -> bool {
    [mime::HARBOR_VULN_REPORT_1_0, mime::VULN_REPORT_1_1]
        .iter()
        .filter_map(|m| MimeType::parse(m).ok())
        .any(|m| &m == mime_type)
}

/// The severity summary of a report of the given MIME type: `None` for SBOM, raw and other
/// reports, which have no severities we can interpret.
pub fn summarize(
    mime_type: &MimeType,
    report: &Value,
) -> Result<Option<SeveritySummary>, SummaryError> {
    if has_summary(mime_type) {
        severity_summary(report).map(Some)
    } else {
        Ok(None)
    }
}

/// Counts the vulnerabilities of a `HarborVulnerabilityReport` per severity, and the fixable
/// ones (a non-blank `fix_version`). A missing or null `vulnerabilities` means none.
pub fn severity_summary(report: &Value) -> Result<SeveritySummary, SummaryError> {
    let report = report.as_object().ok_or(SummaryError::NotAnObject)?;
    let items = match report.get("vulnerabilities") {
        None | Some(Value::Null) => return Ok(SeveritySummary::default()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(SummaryError::VulnerabilitiesNotAnArray),
    };
    let mut summary = SeveritySummary::default();
    for (index, item) in items.iter().enumerate() {
        let item = item
            .as_object()
            .ok_or(SummaryError::ItemNotAnObject { index })?;
        let severity = item.get("severity").and_then(Value::as_str).unwrap_or("");
        let counter = match bucket(severity) {
            Bucket::Critical => &mut summary.critical,
            Bucket::High => &mut summary.high,
            Bucket::Medium => &mut summary.medium,
            Bucket::Low => &mut summary.low,
            Bucket::Unknown => &mut summary.unknown,
            Bucket::None => &mut summary.none,
        };
        *counter += 1;
        let fixable = item
            .get("fix_version")
            .and_then(Value::as_str)
            .is_some_and(|v| !v.trim().is_empty());
        if fixable {
            summary.fixable += 1;
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_every_severity_case_insensitively() {
        let report = json!({
            "generated_at": "2024-01-01T00:00:00Z",
            "severity": "Critical",
            "vulnerabilities": [
                {"id": "CVE-1", "severity": "Critical", "fix_version": "1.2"},
                {"id": "CVE-2", "severity": "CRITICAL"},
                {"id": "CVE-3", "severity": "high", "fix_version": ""},
                {"id": "CVE-4", "severity": " Medium ", "fix_version": "  "},
                {"id": "CVE-5", "severity": "Low", "fix_version": "2"},
                {"id": "CVE-6", "severity": "Negligible"},
                {"id": "CVE-7", "severity": "None"},
                {"id": "CVE-8", "severity": "Unknown"},
                {"id": "CVE-9", "severity": "moderate"},
                {"id": "CVE-10"},
                {"id": "CVE-11", "severity": 3, "fix_version": 4},
            ]
        });
        let s = severity_summary(&report).unwrap();
        assert_eq!(
            s,
            SeveritySummary {
                critical: 2,
                high: 1,
                medium: 1,
                low: 1,
                unknown: 4,
                none: 2,
                fixable: 2,
            }
        );
        assert_eq!(s.total(), 11);
    }

    #[test]
    fn empty_and_missing_lists() {
        for report in [
            json!({}),
            json!({"vulnerabilities": null}),
            json!({"vulnerabilities": []}),
        ] {
            assert_eq!(
                severity_summary(&report).unwrap(),
                SeveritySummary::default()
            );
        }
    }

    #[test]
    fn malformed_reports() {
        assert_eq!(severity_summary(&json!([])), Err(SummaryError::NotAnObject));
        assert_eq!(
            severity_summary(&json!({"vulnerabilities": {}})),
            Err(SummaryError::VulnerabilitiesNotAnArray)
        );
        assert_eq!(
            severity_summary(&json!({"vulnerabilities": [{}, "x"]})),
            Err(SummaryError::ItemNotAnObject { index: 1 })
        );
    }

    #[test]
    fn only_vulnerability_reports_have_a_summary() {
        let report = json!({"vulnerabilities": [{"severity": "High"}]});
        for (m, expect) in [
            (mime::VULN_REPORT_1_1, true),
            (
                "application/vnd.security.vulnerability.report;version=\"1.1\"",
                true,
            ),
            (mime::HARBOR_VULN_REPORT_1_0, true),
            (mime::RAW_VULN_REPORT, false),
            (mime::SBOM_REPORT_1_0, false),
        ] {
            let m = MimeType::parse(m).unwrap();
            assert_eq!(summarize(&m, &report).unwrap().is_some(), expect, "{m}");
        }
    }
}
