//! The served objects: a `VulnerabilityReport` or `SbomReport` is one report that a
//! ScanRequest references in `status.reports`, with its metadata from the stored row and, on
//! `get`, the whole body as stored. Built here from plain values, with no client: which
//! references a namespace has ([`references`]), the object ([`ReportObject`]) and its row in
//! `kubectl get` ([`table`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::names::{self, Kind};
use crate::api::{ScanRequest, ScannerInfo, SeveritySummary};
use crate::controller::status::k8s_time;
use crate::identity::MimeType;
use crate::store::ReportMeta;

pub const GROUP: &str = "reports.scanreport.io";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "reports.scanreport.io/v1alpha1";

/// Namespace of the UUIDv5 object uids: uid = UUIDv5(namespace/name/report id).
const UID_NAMESPACE: Uuid = Uuid::from_u128(0x5a1c_0f52_8a4e_5d7b_9c31_7e1b_2f6a_4d10);

/// One report a ScanRequest references, as far as the ScanRequest tells.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub scan_request: String,
    pub report_id: Uuid,
    pub mime_type: String,
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// The platform of an image index the report is of.
    pub platform: Option<String>,
    /// When the referenced report was generated, as the ScanRequest's status says: a new value
    /// means a new report (a rescan).
    pub generated_at: Option<Time>,
    /// Set by the feed: its resourceVersion when this reference last changed.
    pub resource_version: String,
}

/// The stored reports `sr` references, of `kind`. Only entries with a stored report count
/// (`generatedAt` set): a request that has not proven access has none (the controller
/// withholds them), so a namespace sees exactly what its own requests have earned.
pub fn references(sr: &ScanRequest, kind: Kind) -> Vec<Reference> {
    let Some(status) = sr.status.as_ref() else {
        return Vec::new();
    };
    let namespace = sr.namespace().unwrap_or_default();
    let scan_request = sr.name_any();
    status
        .reports
        .iter()
        .filter(|r| r.generated_at.is_some())
        .filter_map(|r| {
            let mime = MimeType::parse(&r.mime_type).ok()?;
            let report_id = Uuid::parse_str(&r.report_id).ok()?;
            (Kind::of(&mime) == kind).then(|| Reference {
                kind,
                namespace: namespace.clone(),
                name: names::object_name(&scan_request, r.platform.as_deref(), &mime),
                scan_request: scan_request.clone(),
                report_id,
                mime_type: mime.to_string(),
                // A URL with user-info would carry a credential into every reader's view.
                registry: crate::redact::scrub_url_userinfo(&sr.spec.registry.url),
                repository: sr.spec.artifact.repository.clone(),
                tag: sr.spec.artifact.tag.clone(),
                platform: r.platform.clone(),
                generated_at: r.generated_at.clone(),
                resource_version: String::new(),
            })
        })
        .collect()
}

/// A served report object. `report.body` is set only on `get` (or a list that opts in).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportObject {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub report: ReportData,
}

/// What is known of one stored report.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportData {
    /// The ScanRequest (same namespace) that references this report.
    pub scan_request: String,
    /// The deterministic report id (UUIDv5 of digest, registration UUID and MIME type).
    #[serde(rename = "reportID")]
    pub report_id: String,
    /// Canonical report MIME type.
    pub mime_type: String,
    pub artifact: ArtifactRef,
    pub scanner: ScannerInfo,
    /// The scanner registration UUID the report id derives from.
    #[serde(rename = "registrationUUID")]
    pub registration_uuid: String,
    /// When the scanner generated the report.
    pub generated_at: Time,
    /// When the report was last stored.
    pub updated_at: Time,
    /// Severity counts (vulnerability reports in Harbor's formats only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SeveritySummary>,
    /// The report as the scanner sent it (as stored); present on `get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub body: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactRef {
    pub registry: String,
    pub repository: String,
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The platform of an image index the report is of (`os/architecture[/variant]`); the
    /// digest is then that platform's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

impl ReportObject {
    /// The object of `reference`, with the metadata of its stored row and no body.
    pub fn new(reference: &Reference, meta: &ReportMeta) -> Self {
        let uid = Uuid::new_v5(
            &UID_NAMESPACE,
            format!(
                "{}/{}/{}",
                reference.namespace, reference.name, reference.report_id
            )
            .as_bytes(),
        );
        let report_id = reference.report_id.to_string();
        ReportObject {
            api_version: API_VERSION.to_owned(),
            kind: reference.kind.kind().to_owned(),
            metadata: ObjectMeta {
                name: Some(reference.name.clone()),
                namespace: Some(reference.namespace.clone()),
                uid: Some(uid.to_string()),
                resource_version: Some(reference.resource_version.clone()),
                creation_timestamp: Some(k8s_time(meta.generated_at)),
                labels: Some(names::labels(
                    &reference.scan_request,
                    &report_id,
                    &meta.digest,
                )),
                ..ObjectMeta::default()
            },
            report: ReportData {
                scan_request: reference.scan_request.clone(),
                report_id,
                mime_type: reference.mime_type.clone(),
                artifact: ArtifactRef {
                    registry: reference.registry.clone(),
                    repository: reference.repository.clone(),
                    digest: meta.digest.clone(),
                    tag: reference.tag.clone(),
                    platform: reference.platform.clone(),
                },
                scanner: ScannerInfo {
                    name: meta.scanner_name.clone(),
                    vendor: meta.scanner_vendor.clone(),
                    version: meta.scanner_version.clone(),
                },
                registration_uuid: meta.registration_uuid.to_string(),
                generated_at: k8s_time(meta.generated_at),
                updated_at: k8s_time(meta.updated_at),
                summary: (reference.kind == Kind::Vulnerability
                    && MimeType::parse(&reference.mime_type)
                        .is_ok_and(|m| crate::controller::adapters::has_summary(&m)))
                .then_some(meta.summary),
                body: None,
            },
        }
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        self.metadata.labels.clone().unwrap_or_default()
    }

    /// The object as JSON up to where the body goes, and what closes it: the body is streamed
    /// between the two, so it is never held in memory as a whole.
    pub fn json_around_body(&self) -> Result<(String, &'static str), serde_json::Error> {
        let mut head = serde_json::to_string(self)?;
        // `body` is the last field of `report`, the last field of the object.
        if !head.ends_with("}}") {
            return Err(serde::ser::Error::custom(
                "report object does not end with its report",
            ));
        }
        head.truncate(head.len() - 2);
        head.push_str(",\"body\":");
        Ok((head, "}}"))
    }
}

/// The list object around `items` (each a serialised [`ReportObject`]).
pub fn list_head(kind: Kind, resource_version: &str) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": kind.list_kind(),
        "metadata": { "resourceVersion": resource_version },
    })
}

/// `kubectl get`'s table (`meta.k8s.io/v1` `Table`) for `objects`. `include` is the
/// `includeObject` parameter: `None`, `Metadata` (the default) or `Object`.
pub fn table(kind: Kind, objects: &[ReportObject], include: &str, now: DateTime<Utc>) -> Value {
    let mut columns = vec![
        column("Name", "string", "name", "The name of the report object", 0),
        column(
            "Scan Request",
            "string",
            "",
            "The ScanRequest that references the report",
            0,
        ),
        column("Digest", "string", "", "The artifact digest, shortened", 0),
        column("Scanner", "string", "", "Scanner name and version", 0),
    ];
    if kind == Kind::Vulnerability {
        for (name, what) in [
            ("Critical", "critical"),
            ("High", "high"),
            ("Medium", "medium"),
            ("Low", "low"),
            ("Fixable", "fixable"),
        ] {
            columns.push(column(
                name,
                "integer",
                "",
                &format!("Vulnerabilities of {what} severity"),
                0,
            ));
        }
    }
    columns.push(column("MIME Type", "string", "", "Report MIME type", 1));
    columns.push(column(
        "Age",
        "string",
        "",
        "Time since the scanner generated the report",
        0,
    ));
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let r = &o.report;
            let mut cells = vec![
                json!(o.metadata.name.clone().unwrap_or_default()),
                json!(r.scan_request),
                json!(short_digest(&r.artifact.digest)),
                json!(format!("{} {}", r.scanner.name, r.scanner.version)),
            ];
            if kind == Kind::Vulnerability {
                let s = r.summary.unwrap_or_default();
                let counted = r.summary.is_some();
                for n in [s.critical, s.high, s.medium, s.low, s.fixable] {
                    cells.push(if counted { json!(n) } else { json!(null) });
                }
            }
            cells.push(json!(r.mime_type));
            cells.push(json!(human_age(
                crate::controller::status::chrono_time(&r.generated_at),
                now
            )));
            let mut row = json!({ "cells": cells });
            match include {
                "None" => {}
                "Object" => row["object"] = serde_json::to_value(o).unwrap_or(Value::Null),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.metadata,
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": "" },
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn column(name: &str, type_: &str, format: &str, description: &str, priority: i32) -> Value {
    json!({
        "name": name,
        "type": type_,
        "format": format,
        "description": description,
        "priority": priority,
    })
}

/// `sha256:` and the first 12 hex digits, as `docker images` shortens ids.
pub fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algorithm, hex)) => format!("{algorithm}:{}", hex.get(..12).unwrap_or(hex)),
        None => digest.to_owned(),
    }
}

/// Age as `kubectl` prints it (`45s`, `3m12s`, `5h`, `2d3h`, `40d`, `2y`).
pub fn human_age(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - then).num_seconds().max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", s % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ if d < 730 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SR: &str = r#"
apiVersion: scanreport.io/v1alpha1
kind: ScanRequest
metadata: { name: web, namespace: team-a, resourceVersion: "42" }
spec:
  scanner: trivy
  registry: { url: "https://registry.example" }
  artifact:
    repository: library/nginx
    digest: sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
    tag: "1.27"
  reportMimeTypes:
  - application/vnd.security.vulnerability.report; version=1.1
  - application/vnd.security.sbom.report+json; version=1.0
  - application/vnd.scanner.adapter.vuln.report.raw
status:
  reports:
  - mimeType: application/vnd.security.vulnerability.report; version=1.1
    reportId: 8d7a2f5e-3c1b-5e9a-9f00-000000000001
    phase: Ready
    generatedAt: "2026-11-30T10:00:00Z"
  - mimeType: application/vnd.security.sbom.report+json; version=1.0
    reportId: 8d7a2f5e-3c1b-5e9a-9f00-000000000002
    phase: Ready
    generatedAt: "2026-11-30T10:00:00Z"
  - mimeType: application/vnd.scanner.adapter.vuln.report.raw
    reportId: 8d7a2f5e-3c1b-5e9a-9f00-000000000003
    phase: Scanning
"#;

    fn sr() -> ScanRequest {
        serde_yaml::from_str(SR).unwrap()
    }

    fn meta(reference: &Reference) -> ReportMeta {
        let t: DateTime<Utc> = "2026-11-30T10:00:00Z".parse().unwrap();
        ReportMeta {
            id: reference.report_id,
            digest: format!("sha256:{}", "a".repeat(64)),
            registration_uuid: Uuid::nil(),
            mime_type: reference.mime_type.clone(),
            summary: SeveritySummary {
                critical: 2,
                high: 3,
                fixable: 4,
                ..SeveritySummary::default()
            },
            scanner_name: "Trivy".into(),
            scanner_vendor: "Aqua".into(),
            scanner_version: "0.74.0".into(),
            generated_at: t,
            created_at: t,
            updated_at: t,
        }
    }

    #[test]
    fn only_stored_reports_of_the_kind_are_referenced() {
        let vulns = references(&sr(), Kind::Vulnerability);
        assert_eq!(vulns.len(), 1, "the raw report is not stored yet");
        assert_eq!(vulns[0].name, "web-vuln");
        assert_eq!(vulns[0].namespace, "team-a");
        assert!(vulns[0].generated_at.is_some());
        let sboms = references(&sr(), Kind::Sbom);
        assert_eq!(sboms.len(), 1);
        assert_eq!(sboms[0].name, "web-sbom");
        let mut withheld = sr();
        withheld.status.as_mut().unwrap().reports.clear();
        assert!(references(&withheld, Kind::Vulnerability).is_empty());
    }

    #[test]
    fn a_registry_url_with_user_info_is_shown_without_it() {
        let mut with_secret = sr();
        with_secret.spec.registry.url = "https://robot:hunter2@registry.example".into();
        let r = &references(&with_secret, Kind::Vulnerability)[0];
        assert!(!r.registry.contains("hunter2"), "{}", r.registry);
        assert!(r.registry.contains("registry.example"), "{}", r.registry);
    }

    #[test]
    fn an_object_carries_the_labels_and_the_counts() {
        let r = &references(&sr(), Kind::Vulnerability)[0];
        let o = ReportObject::new(r, &meta(r));
        let labels = o.labels();
        assert_eq!(labels[names::LABEL_SCANREQUEST], "web");
        assert_eq!(
            labels[names::LABEL_REPORT_ID],
            "8d7a2f5e-3c1b-5e9a-9f00-000000000001"
        );
        assert_eq!(labels[names::LABEL_DIGEST_HASH].len(), 16);
        assert_eq!(o.report.summary.map(|s| s.critical), Some(2));
        assert_eq!(o.report.artifact.tag.as_deref(), Some("1.27"));
        let sbom = &references(&sr(), Kind::Sbom)[0];
        assert!(
            ReportObject::new(sbom, &meta(sbom))
                .report
                .summary
                .is_none()
        );
    }

    #[test]
    fn the_body_splices_into_valid_json() {
        let r = &references(&sr(), Kind::Vulnerability)[0];
        let o = ReportObject::new(r, &meta(r));
        let (head, tail) = o.json_around_body().unwrap();
        let whole = format!("{head}{}{tail}", r#"{"vulnerabilities":[{"id":"CVE-1"}]}"#);
        let parsed: Value = serde_json::from_str(&whole).unwrap();
        assert_eq!(
            parsed["report"]["body"]["vulnerabilities"][0]["id"],
            "CVE-1"
        );
        assert_eq!(parsed["kind"], "VulnerabilityReport");
        assert_eq!(parsed["metadata"]["name"], "web-vuln");
    }

    #[test]
    fn the_table_has_one_row_per_object_with_counts() {
        let r = &references(&sr(), Kind::Vulnerability)[0];
        let o = ReportObject::new(r, &meta(r));
        let now: DateTime<Utc> = "2026-11-30T10:05:00Z".parse().unwrap();
        let t = table(Kind::Vulnerability, &[o], "Metadata", now);
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Scan Request",
                "Digest",
                "Scanner",
                "Critical",
                "High",
                "Medium",
                "Low",
                "Fixable",
                "MIME Type",
                "Age"
            ]
        );
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "web-vuln");
        assert_eq!(cells[2], "sha256:aaaaaaaaaaaa");
        assert_eq!(cells[4], 2);
        assert_eq!(cells[10], "5m0s");
        assert_eq!(
            t["rows"][0]["object"]["kind"], "PartialObjectMetadata",
            "metadata is included by default"
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: i64| human_age(t0, t0 + chrono::Duration::seconds(s));
        assert_eq!(at(45), "45s");
        assert_eq!(at(192), "3m12s");
        assert_eq!(at(3600 * 5 + 60), "5h1m");
        assert_eq!(at(86_400 * 2 + 3600 * 3), "2d3h");
        assert_eq!(at(86_400 * 40), "40d");
        assert_eq!(at(86_400 * 800), "2y");
        assert_eq!(
            at(-5),
            "0s",
            "a clock behind the report never prints a negative age"
        );
    }
}
