//! Severity counts of vulnerability reports, for `status.summary` and `kubectl get`, and the
//! compact list of findings ([`Finding`]) that policy evaluation reads instead of the report.
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

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::api::SeveritySummary;
use crate::identity::MimeType;

use super::wire::mime;

/// The severity buckets of [`SeveritySummary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Bucket {
    None,
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Bucket {
    /// The severity as the specification spells it (`None` for none and negligible).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "Critical",
            Self::High => "High",
            Self::Medium => "Medium",
            Self::Low => "Low",
            Self::Unknown => "Unknown",
            Self::None => "None",
        }
    }
}

/// Longest id, package, version or fix version kept in a [`Finding`]; real ones are far
/// shorter, and a hostile report cannot make the stored list much larger than its count.
pub const MAX_FINDING_FIELD_CHARS: usize = 256;

/// One vulnerability of a report, as policy evaluation needs it. Extracted while the report is
/// counted and stored with it, so that evaluation never reads the report body. Stored as a
/// JSON array `[id, package, version, severity, fix_version|null]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    from = "(String, String, String, Bucket, Option<String>)",
    into = "(String, String, String, Bucket, Option<String>)"
)]
pub struct Finding {
    pub id: String,
    pub package: String,
    pub version: String,
    pub severity: Bucket,
    /// The fix version, when the report names a non-blank one.
    pub fix_version: Option<String>,
}

impl From<(String, String, String, Bucket, Option<String>)> for Finding {
    fn from(
        (id, package, version, severity, fix_version): (
            String,
            String,
            String,
            Bucket,
            Option<String>,
        ),
    ) -> Self {
        Self {
            id,
            package,
            version,
            severity,
            fix_version,
        }
    }
}

impl From<Finding> for (String, String, String, Bucket, Option<String>) {
    fn from(f: Finding) -> Self {
        (f.id, f.package, f.version, f.severity, f.fix_version)
    }
}

/// `text` cut to [`MAX_FINDING_FIELD_CHARS`] characters.
fn capped(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(MAX_FINDING_FIELD_CHARS) {
        text.truncate(at);
    }
    text
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
    #[error("the vulnerability report cannot be read: {0}")]
    Malformed(String),
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

/// The top-level fields the operator reads from a report, borrowed from its JSON text: no
/// tree of the whole report is built, so a report costs its own bytes and no more.
#[derive(Deserialize, Default)]
pub struct ReportFields<'a> {
    #[serde(borrow, default)]
    pub vulnerabilities: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub generated_at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub scanner: Option<&'a RawValue>,
}

/// Whether JSON text (already validated) is an object.
pub fn is_object(json: &str) -> bool {
    json.trim_start().starts_with('{')
}

/// The fields of a report whose JSON text is an object; `Ok(None)` for any other JSON value.
pub fn report_fields(json: &str) -> Result<Option<ReportFields<'_>>, SummaryError> {
    if !is_object(json) {
        return Ok(None);
    }
    serde_json::from_str(json)
        .map(Some)
        .map_err(|e| SummaryError::Malformed(e.to_string()))
}

/// [`summarize`] on the report's JSON text, counting while reading: same results, without
/// building the report as a [`Value`] tree (which costs many times the text for small items).
pub fn summarize_raw(
    mime_type: &MimeType,
    json: &str,
) -> Result<Option<SeveritySummary>, SummaryError> {
    Ok(summarize_findings(mime_type, json)?.map(|(summary, _)| summary))
}

/// [`summarize_raw`], and the report's [`Finding`]s from the same single pass over the text.
pub fn summarize_findings(
    mime_type: &MimeType,
    json: &str,
) -> Result<Option<(SeveritySummary, Vec<Finding>)>, SummaryError> {
    if !has_summary(mime_type) {
        return Ok(None);
    }
    let fields = report_fields(json)?.ok_or(SummaryError::NotAnObject)?;
    let Some(items) = fields.vulnerabilities else {
        return Ok(Some((SeveritySummary::default(), Vec::new())));
    };
    if !items.get().trim_start().starts_with('[') {
        return Err(SummaryError::VulnerabilitiesNotAnArray);
    }
    let counted: Counted =
        serde_json::from_str(items.get()).map_err(|e| SummaryError::Malformed(e.to_string()))?;
    match counted.first_bad_item {
        Some(index) => Err(SummaryError::ItemNotAnObject { index }),
        None => Ok(Some((counted.summary, counted.findings))),
    }
}

/// The counts and findings of a `vulnerabilities` array, item by item.
#[derive(Default)]
struct Counted {
    summary: SeveritySummary,
    findings: Vec<Finding>,
    first_bad_item: Option<usize>,
}

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items;
        impl<'de> Visitor<'de> for Items {
            type Value = Counted;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of vulnerabilities")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Counted, A::Error> {
                let mut counted = Counted::default();
                let mut index = 0usize;
                while let Some(item) = seq.next_element::<Item>()? {
                    match item {
                        Item::Vulnerability(v) => {
                            let severity = v.severity.as_deref().map_or(Bucket::Unknown, bucket);
                            let fix_version = v.fix_version.filter(|f| !f.trim().is_empty());
                            let fixable = fix_version.is_some();
                            counted.findings.push(Finding {
                                id: capped(v.id.unwrap_or_default()),
                                package: capped(v.package.unwrap_or_default()),
                                version: capped(v.version.unwrap_or_default()),
                                severity,
                                fix_version: fix_version.map(capped),
                            });
                            let s = &mut counted.summary;
                            let counter = match severity {
                                Bucket::Critical => &mut s.critical,
                                Bucket::High => &mut s.high,
                                Bucket::Medium => &mut s.medium,
                                Bucket::Low => &mut s.low,
                                Bucket::Unknown => &mut s.unknown,
                                Bucket::None => &mut s.none,
                            };
                            *counter = counter.saturating_add(1);
                            if fixable {
                                s.fixable = s.fixable.saturating_add(1);
                            }
                        }
                        Item::NotAnObject => {
                            counted.first_bad_item.get_or_insert(index);
                        }
                    }
                    index = index.saturating_add(1);
                }
                Ok(counted)
            }
        }
        d.deserialize_seq(Items)
    }
}

/// One item of `vulnerabilities`: only the fields of a [`Finding`] are kept.
enum Item {
    Vulnerability(ItemFields),
    NotAnObject,
}

/// The string fields of an item; any other JSON value counts as absent.
#[derive(Default)]
struct ItemFields {
    id: Option<String>,
    package: Option<String>,
    version: Option<String>,
    severity: Option<String>,
    fix_version: Option<String>,
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Item;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a vulnerability object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
                let mut fields = ItemFields::default();
                // The last of duplicate keys wins, as in a JSON object read whole.
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::Id => &mut fields.id,
                        Key::Package => &mut fields.package,
                        Key::Version => &mut fields.version,
                        Key::Severity => &mut fields.severity,
                        Key::FixVersion => &mut fields.fix_version,
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value::<Text>()?.0;
                }
                Ok(Item::Vulnerability(fields))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Item::NotAnObject)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Item, E> {
                Ok(Item::NotAnObject)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Item, E> {
                Ok(Item::NotAnObject)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Item, E> {
                Ok(Item::NotAnObject)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Item, E> {
                Ok(Item::NotAnObject)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Item, E> {
                Ok(Item::NotAnObject)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Item, E> {
                Ok(Item::NotAnObject)
            }
        }
        d.deserialize_any(V)
    }
}

/// A key of a vulnerability object, matched without allocating.
enum Key {
    Id,
    Package,
    Version,
    Severity,
    FixVersion,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "id" => Key::Id,
                    "package" => Key::Package,
                    "version" => Key::Version,
                    "severity" => Key::Severity,
                    "fix_version" => Key::FixVersion,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// A JSON string, or `None` for any other JSON value (which is skipped without being built).
struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(Some(v.to_owned())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(V)
    }
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

    #[test]
    fn counting_from_text_matches_counting_the_tree_on_the_examples() {
        let m = MimeType::parse(mime::VULN_REPORT_1_1).unwrap();
        for report in [
            json!({"vulnerabilities": [
                {"severity": "Critical", "fix_version": "1.2"}, {"severity": "CRITICAL"},
                {"severity": " Medium ", "fix_version": "  "}, {"severity": "Negligible"},
                {"severity": 3, "fix_version": 4}, {"severity": {"nested": [1, 2]}}, {},
                {"severity": "low", "severity": "High"},
            ]}),
            json!({}),
            json!({"vulnerabilities": null}),
            json!({"vulnerabilities": {}}),
            json!({"vulnerabilities": [{}, "x", 1]}),
            json!([]),
        ] {
            let text = report.to_string();
            assert_eq!(
                summarize_raw(&m, &text).map_err(|e| e.to_string()),
                summarize(&m, &report).map_err(|e| e.to_string()),
                "{text}"
            );
        }
    }

    #[test]
    fn findings_come_from_the_same_pass_with_ids_packages_and_fix_versions() {
        let m = MimeType::parse(mime::HARBOR_VULN_REPORT_1_0).unwrap();
        let text = json!({"vulnerabilities": [
            {"id": "CVE-2024-1", "package": "openssl", "version": "3.0", "severity": "critical",
             "fix_version": "3.1", "links": ["x"]},
            {"id": "CVE-2024-2", "package": "zlib", "severity": "Negligible", "fix_version": "  "},
            {"id": 7, "package": ["x"], "severity": "High", "version": "1"},
            {"id": "x".repeat(300), "severity": "Low"},
        ]})
        .to_string();
        let (summary, findings) = summarize_findings(&m, &text).unwrap().unwrap();
        assert_eq!(Some(summary), summarize_raw(&m, &text).unwrap());
        assert_eq!(findings.len(), 4);
        assert_eq!(
            findings[0],
            Finding {
                id: "CVE-2024-1".into(),
                package: "openssl".into(),
                version: "3.0".into(),
                severity: Bucket::Critical,
                fix_version: Some("3.1".into()),
            }
        );
        assert_eq!(findings[1].severity, Bucket::None);
        assert_eq!(
            findings[1].fix_version, None,
            "a blank fix version is no fix"
        );
        assert_eq!(
            (findings[2].id.as_str(), findings[2].package.as_str()),
            ("", "")
        );
        assert_eq!(findings[3].id.len(), MAX_FINDING_FIELD_CHARS);
        // The stored form is a compact array per finding, and reads back the same.
        let stored = serde_json::to_string(&findings[0]).unwrap();
        assert_eq!(stored, r#"["CVE-2024-1","openssl","3.0","Critical","3.1"]"#);
        assert_eq!(
            serde_json::from_str::<Finding>(&stored).unwrap(),
            findings[0]
        );
        let sbom = MimeType::parse(mime::SBOM_REPORT_1_0).unwrap();
        assert_eq!(summarize_findings(&sbom, &text).unwrap(), None);
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            prop_oneof![
                Just("Critical"),
                Just("high"),
                Just(" Low "),
                Just("None"),
                Just(""),
                Just("x")
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("severity".to_owned()),
                        Just("fix_version".to_owned()),
                        Just("vulnerabilities".to_owned()),
                        "[a-z]{1,3}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn counting_from_text_matches_counting_the_tree(report in arb_json()) {
            let m = MimeType::parse(mime::VULN_REPORT_1_1).unwrap();
            let text = report.to_string();
            proptest::prop_assert_eq!(
                summarize_raw(&m, &text).map_err(|e| e.to_string()),
                summarize(&m, &report).map_err(|e| e.to_string())
            );
        }
    }
}
