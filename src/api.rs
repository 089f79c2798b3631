//! The `scanreport.io/v1alpha1` API: `ScanRequest` (namespaced), `Scanner` and `ScanPolicy`
//! (cluster-scoped).
//!
//! Every check that matters is expressed in the schema so that the API server rejects bad input at
//! admission: OpenAPI patterns and bounds first, CEL rules (`x-kubernetes-validations`) for what
//! patterns cannot say (duration bounds, cross-field rules, immutability). The controller
//! validates again in code. The CRDs need Kubernetes 1.33 or newer ([`MIN_KUBERNETES_VERSION`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "scanreport.io";
pub const VERSION: &str = "v1alpha1";
/// The oldest Kubernetes the CRDs work on: CEL rules and `selectableFields` are GA since 1.32,
/// and k8s-openapi 0.29 speaks 1.33 to 1.37. Also in the CRD annotation below and the chart.
pub const MIN_KUBERNETES_VERSION: &str = "1.33";
/// The CRD annotation that states [`MIN_KUBERNETES_VERSION`].
pub const MIN_KUBERNETES_VERSION_ANNOTATION: &str = "scanreport.io/minimum-kubernetes-version";

/// Default report MIME type: Harbor's vulnerability report, schema 1.1.
pub const DEFAULT_REPORT_MIME_TYPE: &str =
    "application/vnd.security.vulnerability.report; version=1.1";

pub const DIGEST_PATTERN: &str = r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$";
pub const HTTP_URL_PATTERN: &str = r"^https?://[^\s/?#]+(/[^\s]*)?$";
/// A lowercase RFC 1123 subdomain, as Kubernetes object names are.
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// OCI distribution-spec repository name.
pub const REPOSITORY_PATTERN: &str =
    r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$";
pub const TAG_PATTERN: &str = r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$";
/// `type/subtype` with optional `; name=value` parameters (token or quoted values).
pub const MIME_PATTERN: &str = r#"^\s*[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(\s*;\s*[A-Za-z0-9!#$&^_.+-]+\s*=\s*("[^"\\]*"|[A-Za-z0-9!#$&^_.+-]+))*\s*;?\s*$"#;
/// A Go-style duration such as `90s`, `15m` or `24h`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";
/// A vulnerability id as scanners report them: `CVE-2024-3094`, `GHSA-xxxx-xxxx-xxxx`,
/// `RUSTSEC-2024-0001`, `DLA-3766-1`, ...
pub const VULNERABILITY_ID_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$";
/// An RFC 3339 timestamp with seconds and a zone, e.g. `2026-12-31T00:00:00Z`.
pub const TIMESTAMP_PATTERN: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$";
/// Most entries of a policy's allowlist.
pub const MAX_ALLOWLIST: usize = 512;
/// Most violating vulnerabilities `status.policy.violations` lists.
pub const MAX_LISTED_VIOLATIONS: usize = 10;
/// `status.policy.policy` of a request with `spec.policy`.
pub const INLINE_POLICY: &str = "inline";
pub const UUID_PATTERN: &str =
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Condition types, following kstatus so Flux and Argo CD can gate on `Ready`.
pub const CONDITION_READY: &str = "Ready";
pub const CONDITION_RECONCILING: &str = "Reconciling";
pub const CONDITION_STALLED: &str = "Stalled";

/// Asks for the reports of one artifact from one scanner.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "scanreport.io",
    version = "v1alpha1",
    kind = "ScanRequest",
    plural = "scanrequests",
    singular = "scanrequest",
    shortname = "sr",
    category = "scanreport",
    namespaced,
    status = "ScanRequestStatus",
    printcolumn = r#"{"name":"Scanner","type":"string","jsonPath":".spec.scanner"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.artifact.digest"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Critical","type":"integer","jsonPath":".status.summary.critical"}"#,
    printcolumn = r#"{"name":"High","type":"integer","jsonPath":".status.summary.high"}"#,
    printcolumn = r#"{"name":"Compliant","type":"boolean","jsonPath":".status.policy.compliant"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    selectable = ".spec.artifact.digest",
    selectable = ".spec.scanner",
    annotation("scanreport.io/minimum-kubernetes-version", "1.33")
)]
#[x_kube(validation = Rule::new(
    "!has(self.rescanAfter) || (duration(self.rescanAfter) >= duration('1h') && duration(self.rescanAfter) <= duration('8760h'))"
).message("spec.rescanAfter must be a duration from 1h to 8760h (365 days), such as 24h").field_path(".rescanAfter").reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new("!(has(self.policy) && has(self.policyRef))")
    .message("spec.policy and spec.policyRef are mutually exclusive: set the rules inline or name a ScanPolicy, not both").field_path(".policyRef").reason(Reason::FieldValueForbidden))]
#[serde(rename_all = "camelCase")]
pub struct ScanRequestSpec {
    /// Name of the cluster-scoped `Scanner` to use.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub scanner: String,
    /// The registry that holds the artifact, as the scanner adapter should reach it.
    pub registry: RegistrySpec,
    /// The artifact to scan.
    pub artifact: ArtifactSpec,
    /// Platforms of an image index to scan, e.g. `[linux/amd64]` (`os/architecture`, with an
    /// optional `/variant`; one without a variant matches every variant). Default: every
    /// platform of the index except attestation manifests (`unknown/unknown`). Ignored for a
    /// single-platform image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_PLATFORMS_LISTED),
        inner(regex(pattern = PLATFORM_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub platforms: Vec<String>,
    /// Report MIME types to produce, one report each. Compared in canonical form.
    #[serde(default = "default_report_mime_types")]
    #[schemars(
        length(min = 1, max = 8),
        inner(length(min = 3, max = 255), regex(pattern = MIME_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub report_mime_types: Vec<String>,
    /// Rescan when the stored report is older than this (a duration such as `24h`, at least `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub rescan_after: Option<String>,
    /// Any change of this value forces a rescan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub rescan_token: Option<String>,
    /// Rules the findings must satisfy for the request to be `Ready` (a vulnerability report
    /// must be among `reportMimeTypes`). Mutually exclusive with `policyRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Boxed: most requests have none, and the watch cache holds every request.
    pub policy: Option<Box<PolicyRules>>,
    /// A cluster-scoped `ScanPolicy` whose rules apply, by name. Mutually exclusive with
    /// `policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_ref: Option<PolicyReference>,
}

/// The name of a cluster-scoped `ScanPolicy`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct PolicyReference {
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
}

/// What the findings of an artifact's vulnerability reports must satisfy. A vulnerability
/// that several vulnerability reports of the request list counts once.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "!has(self.maxReportAge) || (duration(self.maxReportAge) >= duration('1m') && duration(self.maxReportAge) <= duration('8760h'))"
).message("maxReportAge must be a duration from 1m to 8760h (365 days), such as 168h").field_path(".maxReportAge").reason(Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase")]
pub struct PolicyRules {
    /// The most vulnerabilities allowed per severity, e.g. `{critical: 0, high: 5}`; a
    /// severity not listed has no limit. Negligible findings never count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_counts: Option<SeverityLimits>,
    /// Vulnerabilities without a fix version do not count.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_unfixed: bool,
    /// Vulnerabilities that do not count, until their `expires`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_ALLOWLIST),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"])
    )]
    pub allowlist: Vec<AllowlistEntry>,
    /// Fail when a stored vulnerability report was generated longer ago than this
    /// (a duration such as `168h`, from `1m` to `8760h`). Pair it with a shorter
    /// `rescanAfter` so that rescans keep the request compliant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub max_report_age: Option<String>,
}

/// The most vulnerabilities allowed per severity; unset means no limit.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SeverityLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub critical: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub high: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub medium: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub low: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub unknown: Option<i64>,
}

/// One vulnerability that does not count against the limits.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct AllowlistEntry {
    /// The vulnerability id as the scanner reports it, e.g. `CVE-2024-3094` (compared
    /// ignoring ASCII case).
    #[schemars(length(min = 1, max = 128), regex(pattern = VULNERABILITY_ID_PATTERN))]
    pub id: String,
    /// When the entry stops applying, RFC 3339 (e.g. `2026-12-31T00:00:00Z`); the verdict
    /// changes at that moment. Never, when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = TIMESTAMP_PATTERN))]
    pub expires: Option<String>,
    /// Why the vulnerability is accepted, for reviewers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
}

/// Scan rules a platform team owns; ScanRequests name it in `spec.policyRef`.
#[derive(CustomResource, JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "scanreport.io",
    version = "v1alpha1",
    kind = "ScanPolicy",
    plural = "scanpolicies",
    singular = "scanpolicy",
    category = "scanreport",
    printcolumn = r#"{"name":"IgnoreUnfixed","type":"boolean","jsonPath":".spec.rules.ignoreUnfixed"}"#,
    printcolumn = r#"{"name":"MaxReportAge","type":"string","jsonPath":".spec.rules.maxReportAge"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    annotation("scanreport.io/minimum-kubernetes-version", "1.33")
)]
#[serde(rename_all = "camelCase")]
pub struct ScanPolicySpec {
    /// The rules, as in a ScanRequest's `spec.policy`.
    #[serde(default)]
    pub rules: PolicyRules,
}

fn default_report_mime_types() -> Vec<String> {
    vec![DEFAULT_REPORT_MIME_TYPE.to_owned()]
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySpec {
    /// Base URL of the registry, `http://` or `https://`.
    #[schemars(length(min = 8, max = 2048), regex(pattern = HTTP_URL_PATTERN))]
    pub url: String,
    /// A Secret in the ScanRequest's namespace, of type `kubernetes.io/dockerconfigjson`,
    /// `kubernetes.io/dockercfg` or `kubernetes.io/basic-auth`, whose credentials prove access
    /// to the artifact and are passed to the scanner adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalSecretReference>,
    /// Allow a plain `http://` registry and an unverified TLS certificate for the operator's
    /// own calls to it. The adapter pulls with its own settings.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct LocalSecretReference {
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
}

/// Most platforms one request scans; `spec.platforms` may list no more.
pub const MAX_PLATFORMS_LISTED: usize = 32;
/// `os/architecture` with an optional `/variant`, as image indexes name platforms.
pub const PLATFORM_PATTERN: &str = r"^[a-z0-9._-]{1,32}/[a-z0-9._-]{1,32}(/[a-z0-9._-]{1,32})?$";

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.digest) || has(self.tag)")
    .message("spec.artifact needs a digest or a tag: set spec.artifact.digest (sha256:...) or spec.artifact.tag (e.g. 1.27)").field_path(".digest").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("!has(self.resolveEvery) || has(self.tag)")
    .message("spec.artifact.resolveEvery needs spec.artifact.tag: only a tag can move").field_path(".resolveEvery").reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new(
    "!has(self.resolveEvery) || (duration(self.resolveEvery) >= duration('1m') && duration(self.resolveEvery) <= duration('8760h'))"
).message("spec.artifact.resolveEvery must be a duration from 1m to 8760h (365 days), such as 1h").field_path(".resolveEvery").reason(Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase")]
pub struct ArtifactSpec {
    /// Repository within the registry, e.g. `library/nginx`.
    #[schemars(length(min = 1, max = 255), regex(pattern = REPOSITORY_PATTERN))]
    pub repository: String,
    /// Content digest: `sha256:` + 64 or `sha512:` + 128 lowercase hex characters. Optional
    /// when `tag` is set: the operator then resolves the tag. With both, the digest is
    /// scanned and a tag that points elsewhere is reported (condition `TagMismatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DIGEST_PATTERN))]
    pub digest: Option<String>,
    /// Tag, e.g. `1.27`: resolved to a digest with the request's own credentials (recorded in
    /// `status.artifact`) when no digest is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TAG_PATTERN))]
    pub tag: Option<String>,
    /// Resolve the tag again after this long (a duration from `1m` to `8760h`); a moved tag
    /// has its new digest scanned, the previous reports stay until the new ones are stored.
    /// Unset: the tag is resolved once (and again when the spec changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub resolve_every: Option<String>,
    /// Media type of the manifest the digest or tag names: an image manifest, or an image
    /// index (multi-platform). Optional: the operator learns the real one from the registry
    /// and reports a declared type that differs (condition `MediaTypeMismatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<ArtifactMimeType>,
}

/// The manifest media types a request may name: the image manifests the scanner adapter
/// specification lists as consumable, and the indexes of them (scanned per platform).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ArtifactMimeType {
    #[default]
    #[serde(rename = "application/vnd.oci.image.manifest.v1+json")]
    OciImageManifest,
    #[serde(rename = "application/vnd.docker.distribution.manifest.v2+json")]
    DockerManifestV2,
    #[serde(rename = "application/vnd.oci.image.index.v1+json")]
    OciImageIndex,
    #[serde(rename = "application/vnd.docker.distribution.manifest.list.v2+json")]
    DockerManifestList,
}

impl ArtifactMimeType {
    pub const ALL: [ArtifactMimeType; 4] = [
        Self::OciImageManifest,
        Self::DockerManifestV2,
        Self::OciImageIndex,
        Self::DockerManifestList,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OciImageManifest => "application/vnd.oci.image.manifest.v1+json",
            Self::DockerManifestV2 => "application/vnd.docker.distribution.manifest.v2+json",
            Self::OciImageIndex => "application/vnd.oci.image.index.v1+json",
            Self::DockerManifestList => "application/vnd.docker.distribution.manifest.list.v2+json",
        }
    }

    /// The type a registry's `Content-Type` names (parameters ignored), if it is one of these.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(essence))
    }

    /// An image index or manifest list, whose children are scanned per platform.
    pub fn is_index(self) -> bool {
        matches!(self, Self::OciImageIndex | Self::DockerManifestList)
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanRequestStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`, following kstatus.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The scanner registration UUID the report ids were derived from.
    #[serde(
        default,
        rename = "registrationUUID",
        skip_serializing_if = "Option::is_none"
    )]
    pub registration_uuid: Option<String>,
    /// The artifact the reports are of: the digest (given, or resolved from the tag), its
    /// media type as the registry serves it, and when the tag was last resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactStatus>,
    /// Severity counts of the first requested vulnerability report type, for `kubectl get`;
    /// for an image index, the worst count of each severity across its platforms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SeveritySummary>,
    /// One entry per requested report MIME type (per platform of an image index).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<ReportStatus>,
    /// The `spec.rescanToken` that the reports answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescan_token: Option<String>,
    /// A rescan forced by a new `spec.rescanToken` that is still under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_rescan: Option<PendingRescan>,
    /// The verdict of `spec.policy` or `spec.policyRef` on the stored vulnerability reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Boxed: without a policy the watch cache, which holds every request, keeps a pointer
    // instead of a whole verdict.
    pub policy: Option<Box<PolicyStatus>>,
}

/// The verdict of the request's policy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// Whether the findings satisfy every rule.
    pub compliant: bool,
    /// The ScanPolicy's name, or `inline` for `spec.policy`.
    pub policy: String,
    /// The ScanPolicy's `metadata.generation` the verdict was reached with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The vulnerabilities that counted against the limits, per severity (after
    /// `ignoreUnfixed` and the allowlist; each vulnerability once).
    pub counts: SeveritySummary,
    /// Vulnerabilities not counted because an allowlist entry in force names them.
    pub allowlisted: i64,
    /// Vulnerabilities not counted because they have no fix and `ignoreUnfixed` is set.
    pub ignored_unfixed: i64,
    /// Vulnerabilities in severities over their limit.
    pub violation_count: i64,
    /// Up to 10 of them, worst first (severity, then id and package).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<PolicyViolation>,
    /// A stored vulnerability report is older than `maxReportAge`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub report_too_old: bool,
}

/// A vulnerability that breaks a limit.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyViolation {
    pub id: String,
    pub package: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// `Critical`, `High`, `Medium`, `Low` or `Unknown`.
    pub severity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix_version: Option<String>,
}

/// What the registry said about the artifact.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactStatus {
    /// The digest whose reports `reports` lists: `spec.artifact.digest`, or what the tag
    /// resolved to. After the tag moves, the previous digest stays here until the new one's
    /// reports are stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The media type the registry serves `digest` as (unset when the operator does not call
    /// registries, `--artifact-access=trust`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The tag last resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The digest the tag pointed to when last resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_digest: Option<String>,
    /// When the tag was last resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Time>,
    /// The platforms scanned, for an image index (`os/architecture[/variant]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingRescan {
    pub token: String,
    /// Reports must come from scans completed after this time.
    pub requested_at: Time,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportStatus {
    /// Canonical report MIME type.
    pub mime_type: String,
    /// The platform of an image index this report is of (`os/architecture[/variant]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The digest scanned: the platform's manifest for an image index. Unset when it is
    /// `status.artifact.digest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Deterministic report id; the primary key of the report in Postgres.
    pub report_id: String,
    pub phase: ReportPhase,
    /// Severity counts of the stored report (vulnerability reports only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SeveritySummary>,
    /// When the scanner generated the stored report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner: Option<ScannerInfo>,
    /// Why the report is not ready, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReportPhase {
    /// Waiting for a free scan slot of the scanner.
    Pending,
    /// A scan is in flight and no report is stored yet.
    Scanning,
    /// A report is stored and a newer scan is in flight; the stored one stays usable.
    Rescanning,
    /// The report is stored and fresh.
    Ready,
    /// The scan failed permanently; see `message`.
    Failed,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SeveritySummary {
    pub critical: i64,
    pub high: i64,
    pub medium: i64,
    pub low: i64,
    pub unknown: i64,
    pub none: i64,
    /// Vulnerabilities with a fix version available.
    pub fixable: i64,
}

impl SeveritySummary {
    pub fn total(&self) -> i64 {
        self.critical + self.high + self.medium + self.low + self.unknown + self.none
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ScannerInfo {
    pub name: String,
    pub vendor: String,
    pub version: String,
}

/// A Harbor Pluggable Scanner Adapter endpoint.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "scanreport.io",
    version = "v1alpha1",
    kind = "Scanner",
    plural = "scanners",
    singular = "scanner",
    category = "scanreport",
    status = "ScannerStatus",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Adapter","type":"string","jsonPath":".status.adapter.name"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.adapter.version"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    annotation("scanreport.io/minimum-kubernetes-version", "1.33")
)]
#[x_kube(validation = Rule::new(
    "duration(self.requestTimeout) >= duration('1s') && duration(self.requestTimeout) <= duration('15m')"
).message("spec.requestTimeout must be a duration from 1s to 15m, such as 30s").field_path(".requestTimeout").reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new(
    "has(self.registrationUUID) == has(oldSelf.registrationUUID) && (!has(self.registrationUUID) || self.registrationUUID == oldSelf.registrationUUID)"
).message("spec.registrationUUID cannot be changed, added or removed: every stored report id derives from it; create a new Scanner instead").field_path(".registrationUUID").reason(Reason::FieldValueForbidden))]
#[serde(rename_all = "camelCase")]
pub struct ScannerSpec {
    /// Adapter base URL; the client appends `/api/v1/...`.
    #[schemars(length(min = 8, max = 2048), regex(pattern = HTTP_URL_PATTERN))]
    pub url: String,
    /// Registration UUID that report ids derive from. Defaults to UUIDv5 of the Scanner's name,
    /// so a Scanner deleted and re-applied keeps its identity. Set it to keep Harbor's ids.
    #[serde(
        default,
        rename = "registrationUUID",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(regex(pattern = UUID_PATTERN))]
    pub registration_uuid: Option<String>,
    /// How the operator authenticates to the adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ScannerAuth>,
    /// PEM CA bundle that signs the adapter's TLS certificate, when not publicly trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 262144))]
    pub ca_bundle: Option<String>,
    /// Scans in flight at once on this adapter, across all replicas; further scans queue in
    /// arrival order. Defaults to the operator's `--default-max-in-flight` (4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_in_flight: Option<i32>,
    /// Timeout of one HTTP request to the adapter (a duration such as `30s`).
    #[serde(default = "default_request_timeout")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub request_timeout: String,
}

fn default_request_timeout() -> String {
    "30s".to_owned()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("self.type == 'None' || has(self.secretRef)")
    .message("spec.auth.secretRef is required unless spec.auth.type is None").field_path(".secretRef").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("self.type != 'APIKey' || has(self.header)")
    .message("spec.auth.header is required when spec.auth.type is APIKey").field_path(".header").reason(Reason::FieldValueRequired))]
#[serde(rename_all = "camelCase")]
pub struct ScannerAuth {
    /// `None`, `Basic` (Secret keys `username`, `password`), `Bearer` (key `token`) or
    /// `APIKey` (key `apiKey`, sent in `header`).
    #[serde(rename = "type")]
    pub auth_type: ScannerAuthType,
    /// The Secret holding the credentials (required unless `type` is `None`), in the
    /// operator's own namespace (`--cluster-resource-namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalSecretReference>,
    /// Header name for `APIKey` authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub header: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ScannerAuthType {
    None,
    Basic,
    Bearer,
    #[serde(rename = "APIKey")]
    ApiKey,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScannerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The registration UUID in effect.
    #[serde(
        default,
        rename = "registrationUUID",
        skip_serializing_if = "Option::is_none"
    )]
    pub registration_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// What the adapter's metadata endpoint reported, once fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterStatus>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdapterStatus {
    pub name: String,
    pub vendor: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<CapabilityStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<Time>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityStatus {
    /// `vulnerability` or `sbom` (adapters older than spec 1.2 imply `vulnerability`).
    #[serde(rename = "type")]
    pub capability_type: String,
    pub consumes_mime_types: Vec<String>,
    pub produces_mime_types: Vec<String>,
}

/// Every CRD, each as a YAML document starting with `---`, sorted by CRD name: the files in
/// `crds/` are `<name>.yaml` with exactly this content, and `scanreport-operator crds` prints
/// them in this order.
pub fn crds_yaml() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let mut docs = [ScanRequest::crd(), Scanner::crd(), ScanPolicy::crd()]
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            serde_yaml::to_string(&crd).map(|y| (name, format!("---\n{y}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    docs.sort();
    Ok(docs)
}
