//! Why a reconcile did not finish, one variant per failure a user must tell apart.
//!
//! Permanent errors stall the ScanRequest (`Stalled=True`) until it or a referenced object
//! changes; transient ones are retried with exponential backoff (`Reconciling=True`).

use super::credentials::CredentialsError;
use crate::registry::AccessError;
use crate::registry::CredentialsError as RegistryCredentialsError;
use crate::scanner::ScannerError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("spec.scanner: Scanner {0:?} does not exist; create it or correct the name")]
    ScannerNotFound(String),
    #[error("{field}: {message}")]
    InvalidSpec { field: String, message: String },
    #[error("spec.policyRef: ScanPolicy {0:?} does not exist; create it or correct the name")]
    PolicyNotFound(String),
    /// A rule of the policy cannot be applied (an object stored before a schema rule existed).
    #[error("{0}")]
    PolicyInvalid(#[source] crate::policy::RulesError),
    /// A stored vulnerability report has no findings to evaluate the policy on (it was written
    /// by an operator version without them).
    #[error(
        "report {report_id} has no stored findings to evaluate the policy on; set a new spec.rescanToken to scan it again"
    )]
    FindingsMissing { report_id: uuid::Uuid },
    #[error(
        "spec.reportMimeTypes[{index}]: scanner {scanner:?} does not produce {mime_type:?}; it produces: {produced}"
    )]
    UnsupportedMimeType {
        index: usize,
        scanner: String,
        mime_type: String,
        produced: String,
    },
    #[error(
        "spec.artifact.mimeType: scanner {scanner:?} cannot scan {mime_type:?} artifacts for {report}; it consumes: {consumed}"
    )]
    UnsupportedArtifact {
        scanner: String,
        mime_type: String,
        report: String,
        consumed: String,
    },
    #[error(
        "spec.registry.credentialsSecretRef: Secret {namespace}/{name} does not exist; create it or remove the reference"
    )]
    SecretNotFound { namespace: String, name: String },
    /// The Secret is not a registry credential, or has none for the registry host; nothing is
    /// sent anywhere. The message names the field and the Secret.
    #[error("{0}")]
    SecretInvalid(#[source] RegistryCredentialsError),
    /// The request's registry did not prove that the request may see its artifact: no
    /// report is shown, shared or scanned for it.
    #[error("{0}")]
    Access(#[source] AccessError),
    #[error(
        "spec.artifact.tag: the operator runs with --artifact-access=trust and calls no registry, so it cannot resolve a tag; set spec.artifact.digest"
    )]
    TagNeedsRegistry,
    #[error(
        "spec.artifact.mimeType: the operator runs with --artifact-access=trust and calls no registry, so it cannot read an image index; name a platform's manifest digest instead"
    )]
    IndexNeedsRegistry,
    #[error(
        "the registry serves {digest} as {media_type:?}, which is neither an image manifest nor an image index; scanners consume OCI and Docker v2 images (check spec.artifact)"
    )]
    UnsupportedMediaType { digest: String, media_type: String },
    /// An image index that cannot be scanned as asked (nested, too many platforms, ...).
    #[error("{0}")]
    Index(#[source] crate::registry::index::IndexError),
    /// A scan shared with other requests failed. The adapter's text may be about another
    /// namespace's pull, so only this generic message reaches the status.
    #[error(
        "scanner {scanner:?} could not deliver the report of this artifact{}",
        if *.transient { "; the operator retries" } else { "" }
    )]
    ScanUnavailable { scanner: String, transient: bool },
    #[error(
        "Scanner {scanner:?} spec.auth.secretRef: Secret {name} does not exist in the operator's namespace {namespace}; Scanner auth Secrets are read only from there"
    )]
    ScannerSecretNotFound {
        scanner: String,
        namespace: String,
        name: String,
    },
    #[error("Scanner {scanner:?} spec.auth: {source}")]
    ScannerAuthInvalid {
        scanner: String,
        #[source]
        source: CredentialsError,
    },
    /// The adapter answered, and the answer will not change by retrying.
    #[error("scanner {scanner:?}: {source}")]
    AdapterRejected {
        scanner: String,
        #[source]
        source: ScannerError,
    },
    /// The adapter is down, slow or overloaded.
    #[error("scanner {scanner:?} is unavailable: {source}")]
    AdapterUnavailable {
        scanner: String,
        #[source]
        source: ScannerError,
    },
    #[error("the report database is unavailable: {0}")]
    Database(#[source] StoreError),
    /// A new `spec.rescanToken` while the namespace has used its forced-rescan budget. Not a
    /// failure to back off from: the rescan starts when the budget allows.
    #[error(
        "spec.rescanToken: forced rescans in namespace {namespace:?} are limited to {per_hour} an hour (bursts of {burst}, --rescans-per-hour); this one starts in about {}s and the stored reports stay in use until then",
        .retry_after.as_secs().max(1)
    )]
    RescanRateLimited {
        namespace: String,
        per_hour: u32,
        burst: u32,
        retry_after: std::time::Duration,
    },
    /// A bug: the reconcile panicked. The panic is contained to this object and retried with
    /// backoff; its message went to the log only (it might quote anything).
    #[error(
        "internal error: the reconcile of this ScanRequest panicked; it is retried with backoff (please report the operator log)"
    )]
    Panicked,
    #[error("Kubernetes API request failed while {action}: {source}")]
    Kube {
        action: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
}

impl ReconcileError {
    pub fn kube(action: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Kube {
            action,
            source: Box::new(source),
        }
    }

    pub fn scanner(scanner: &str, source: ScannerError) -> Self {
        let scanner = scanner.to_owned();
        if source.is_transient() {
            Self::AdapterUnavailable { scanner, source }
        } else {
            Self::AdapterRejected { scanner, source }
        }
    }

    /// Permanent errors need a person to change something; retrying alone cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::AdapterUnavailable { .. }
            | Self::Kube { .. }
            | Self::Panicked
            | Self::RescanRateLimited { .. } => false,
            Self::Access(e) => !e.is_transient(),
            Self::ScanUnavailable { transient, .. } => !transient,
            Self::Database(e) => !e.is_transient(),
            _ => true,
        }
    }

    /// The condition reason, in PascalCase.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ScannerNotFound(_) => "ScannerNotFound",
            Self::InvalidSpec { .. } => "InvalidSpec",
            Self::PolicyNotFound(_) => "PolicyNotFound",
            Self::PolicyInvalid(_) => "PolicyInvalid",
            Self::FindingsMissing { .. } => "FindingsMissing",
            Self::UnsupportedMimeType { .. } => "UnsupportedMimeType",
            Self::UnsupportedArtifact { .. } => "UnsupportedArtifact",
            Self::SecretNotFound { .. } => "SecretNotFound",
            Self::SecretInvalid(_) => "SecretInvalid",
            Self::Access(e) => e.reason(),
            Self::TagNeedsRegistry | Self::IndexNeedsRegistry => "RegistryNotConsulted",
            Self::UnsupportedMediaType { .. } => "UnsupportedMediaType",
            Self::Index(e) => e.reason(),
            Self::ScanUnavailable {
                transient: true, ..
            } => "ScannerUnavailable",
            Self::ScanUnavailable {
                transient: false, ..
            } => "ScanRejected",
            Self::ScannerSecretNotFound { .. } | Self::ScannerAuthInvalid { .. } => {
                "ScannerMisconfigured"
            }
            Self::AdapterRejected { .. } => "ScanRejected",
            Self::AdapterUnavailable { .. } => "ScannerUnavailable",
            Self::Database(_) => "DatabaseUnavailable",
            Self::Kube { .. } => "KubernetesAPIError",
            Self::Panicked => "InternalError",
            Self::RescanRateLimited { .. } => "RescanRateLimited",
        }
    }

    /// When to look again, if this failure knows it (instead of the exponential backoff).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::RescanRateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

impl ReconcileError {
    /// Whether this failure means the request has not earned its reports: it then shows no
    /// summary and no report, not even ones it had before.
    pub fn withholds_reports(&self) -> bool {
        matches!(
            self,
            Self::Access(_)
                | Self::SecretInvalid(_)
                | Self::SecretNotFound { .. }
                | Self::Index(_)
                | Self::UnsupportedMediaType { .. }
        )
    }
}

impl ReconcileError {
    /// Whether this failure leaves no policy to judge by: the previous verdict then goes.
    pub fn clears_verdict(&self) -> bool {
        matches!(
            self,
            Self::PolicyNotFound(_) | Self::PolicyInvalid(_) | Self::FindingsMissing { .. }
        )
    }
}

impl From<StoreError> for ReconcileError {
    fn from(e: StoreError) -> Self {
        Self::Database(e)
    }
}
