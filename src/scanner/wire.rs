//! The scanner adapter specification's bodies and MIME types, as JSON on the wire.
//!
//! Field names follow `components/schemas` of `scanner-adapter-openapi-v1.2.yaml`. Types that we
//! receive are lenient (every field defaults) so that an adapter omitting an optional field, or
//! one from an older version of the specification, still parses; the client then checks what it
//! needs. The registry authorization is a [`Secret`] and is exposed only while serialising.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::auth::Secret;

/// MIME types of the specification, exactly as it spells them.
pub mod mime {
    pub const METADATA_1_0: &str = "application/vnd.scanner.adapter.metadata+json; version=1.0";
    /// Introduced by specification v1.2.
    pub const METADATA_1_1: &str = "application/vnd.scanner.adapter.metadata+json; version=1.1";
    pub const SCAN_REQUEST_1_0: &str =
        "application/vnd.scanner.adapter.scan.request+json; version=1.0";
    /// Introduced by specification v1.2, together with `enabled_capabilities`.
    pub const SCAN_REQUEST_1_1: &str =
        "application/vnd.scanner.adapter.scan.request+json; version=1.1";
    pub const SCAN_RESPONSE_1_0: &str =
        "application/vnd.scanner.adapter.scan.response+json; version=1.0";
    pub const ERROR_1_0: &str = "application/vnd.scanner.adapter.error+json; version=1.0";

    /// Harbor's native vulnerability report (all versions of the specification).
    pub const HARBOR_VULN_REPORT_1_0: &str =
        "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0";
    /// The generic vulnerability report (specification v1.1 and later).
    pub const VULN_REPORT_1_1: &str = "application/vnd.security.vulnerability.report; version=1.1";
    /// The scanner's own report format, any JSON or text.
    pub const RAW_VULN_REPORT: &str = "application/vnd.scanner.adapter.vuln.report.raw";
    /// The SBOM report (specification v1.2).
    pub const SBOM_REPORT_1_0: &str = "application/vnd.security.sbom.report+json; version=1.0";

    pub const OCI_IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

    /// SBOM formats for the `sbom_media_type` query parameter and scan request parameters.
    pub const SBOM_SPDX_JSON: &str = "application/spdx+json";
    pub const SBOM_CYCLONEDX_JSON: &str = "application/vnd.cyclonedx+json";
}

/// Capability types of specification v1.2. Older adapters send no type, meaning vulnerability.
pub const CAPABILITY_VULNERABILITY: &str = "vulnerability";
pub const CAPABILITY_SBOM: &str = "sbom";

/// The `Scanner` schema: name, vendor and version of the scanner.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Scanner {
    pub name: String,
    pub vendor: String,
    pub version: String,
}

/// The `ScannerAdapterMetadata` schema.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ScannerAdapterMetadata {
    pub scanner: Scanner,
    pub capabilities: Vec<ScannerCapability>,
    /// Strings per the specification; kept as JSON values so one odd adapter property does not
    /// make the whole metadata unusable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, Value>,
}

/// The `ScannerCapability` schema.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ScannerCapability {
    /// `vulnerability` or `sbom` (v1.2); absent before v1.2.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub capability_type: Option<String>,
    #[serde(default)]
    pub consumes_mime_types: Vec<String>,
    #[serde(default)]
    pub produces_mime_types: Vec<String>,
    /// For `sbom`: `{"sbom_media_types": [...]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_attributes: Option<Value>,
}

/// The `ScanRequest` schema (scan request MIME types 1.0 and 1.1).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct ScanRequest {
    pub registry: Registry,
    pub artifact: Artifact,
    /// Only in scan request 1.1; absent means every capability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled_capabilities: Option<Vec<EnabledCapability>>,
}

/// The `Registry` schema.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct Registry {
    pub url: String,
    /// The `Authorization` header value the adapter sends to the registry.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_secret",
        deserialize_with = "secret_from_string"
    )]
    pub authorization: Option<Secret>,
}

/// The `Artifact` schema.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Artifact {
    pub repository: String,
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub mime_type: String,
}

/// An item of `ScanRequest.enabled_capabilities`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct EnabledCapability {
    #[serde(rename = "type")]
    pub capability_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub produces_mime_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<SbomParameters>,
}

/// The `SbomParameters` schema.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SbomParameters {
    #[serde(default)]
    pub sbom_media_types: Vec<String>,
}

/// The `ScanResponse` schema.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanResponse {
    pub id: String,
}

/// The `ErrorResponse` schema.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

/// The `Error` schema.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct ErrorBody {
    pub message: String,
}

impl ErrorResponse {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            error: ErrorBody {
                message: message.into(),
            },
        }
    }
}

/// The `HarborVulnerabilityReport` schema (both vulnerability report MIME types).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct HarborVulnerabilityReport {
    pub generated_at: String,
    pub artifact: Artifact,
    pub scanner: Scanner,
    /// The highest severity of `vulnerabilities`.
    pub severity: String,
    pub vulnerabilities: Vec<VulnerabilityItem>,
}

/// The `VulnerabilityItem` schema; the last three fields exist since specification v1.1.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct VulnerabilityItem {
    pub id: String,
    pub package: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix_version: Option<String>,
    pub severity: String,
    pub description: String,
    pub links: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_cvss: Option<CvssDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwe_ids: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_attributes: Option<serde_json::Map<String, Value>>,
}

/// The `CVSSDetails` schema.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct CvssDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score_v3: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score_v2: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_v3: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_v2: Option<String>,
}

/// The `HarborSbomReport` schema.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct HarborSbomReport {
    pub generated_at: String,
    pub artifact: Artifact,
    pub scanner: Scanner,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_attributes: Option<serde_json::Map<String, Value>>,
    pub media_type: String,
    pub sbom: Value,
}

fn expose_secret<S: Serializer>(value: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(secret) => s.serialize_str(secret.expose()),
        None => s.serialize_none(),
    }
}

fn secret_from_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(Secret::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_authorization_is_sent_but_never_debug_printed() {
        let registry = Registry {
            url: "https://core.harbor.domain".into(),
            authorization: Some(Secret::new("Basic c2VjcmV0")),
        };
        let json = serde_json::to_value(&registry).unwrap();
        assert_eq!(json["authorization"], "Basic c2VjcmV0");
        assert!(!format!("{registry:?}").contains("c2VjcmV0"));
        let back: Registry = serde_json::from_value(json).unwrap();
        assert_eq!(back, registry);
    }

    #[test]
    fn capability_without_type_parses() {
        let cap: ScannerCapability = serde_json::from_str(
            r#"{"consumes_mime_types":["a/b"],"produces_mime_types":["c/d"]}"#,
        )
        .unwrap();
        assert_eq!(cap.capability_type, None);
        assert_eq!(cap.produces_mime_types, ["c/d"]);
    }

    #[test]
    fn optional_request_fields_are_omitted() {
        let req = ScanRequest::default();
        let json = serde_json::to_value(&req).unwrap();
        assert!(json.get("enabled_capabilities").is_none());
        assert!(json["registry"].get("authorization").is_none());
        assert!(json["artifact"].get("tag").is_none());
    }
}
