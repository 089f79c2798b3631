//! Steps 1–3: resolve the Scanner, validate the request against its adapter and Secrets, work
//! out the report ids and what `rescanToken` and `rescanAfter` demand.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use uuid::Uuid;

use super::adapters::Adapter;
use super::context::Context;
use super::decide::{self, Rescan, RescanDemand};
use super::error::ReconcileError;
use crate::api::{ScanRequest, ScanRequestSpec};
use crate::identity::ReportKey;
use crate::identity::{Digest, MimeType};
use crate::scanner::RegistryAuthorization;

/// What steps 1–3 work out.
pub struct Plan {
    pub adapter: Arc<Adapter>,
    pub registration: Uuid,
    pub targets: Vec<ReportKey>,
    pub registry_auth: Option<RegistryAuthorization>,
    pub rescan_after: Option<Duration>,
    pub rescan: Rescan,
}

impl Plan {
    /// Steps 1–3.
    pub async fn make(sr: &ScanRequest, ctx: &Context) -> Result<Self, ReconcileError> {
        let spec = &sr.spec;
        let adapter = ctx.adapters.resolve(&spec.scanner).await?;
        let registration = adapter.registration;
        let targets = targets(spec, registration, &adapter)?;
        let rescan_after = spec
            .rescan_after
            .as_deref()
            .map(parse_rescan_after)
            .transpose()?;
        let registry_auth = registry_authorization(sr, ctx).await?;
        let rescan = match decide::rescan_demand(spec.rescan_token.as_deref(), sr.status.as_ref()) {
            RescanDemand::Known(rescan) => rescan,
            RescanDemand::NewToken(token) => Rescan::Wanted {
                token,
                requested_at: decide::token_requested_at(ctx.store.now().await?),
            },
        };
        Ok(Self {
            adapter,
            registration,
            targets,
            registry_auth,
            rescan_after,
            rescan,
        })
    }
}

/// Step 2 and 3: one report id per requested MIME type the adapter produces for the artifact.
/// Two spellings of one MIME type are one report.
fn targets(
    spec: &ScanRequestSpec,
    registration: Uuid,
    adapter: &Adapter,
) -> Result<Vec<ReportKey>, ReconcileError> {
    let digest = Digest::parse(&spec.artifact.digest).map_err(|e| ReconcileError::InvalidSpec {
        field: "spec.artifact.digest".into(),
        message: e.to_string(),
    })?;
    let mut targets: Vec<ReportKey> = Vec::new();
    for (index, raw) in spec.report_mime_types.iter().enumerate() {
        let mime_type = MimeType::parse(raw).map_err(|e| ReconcileError::InvalidSpec {
            field: format!("spec.reportMimeTypes[{index}]"),
            message: e.to_string(),
        })?;
        adapter.check_supported(index, &mime_type, spec.artifact.mime_type)?;
        if !targets.iter().any(|t| t.mime_type == mime_type) {
            targets.push(ReportKey {
                digest: digest.clone(),
                registration_uuid: registration,
                mime_type,
            });
        }
    }
    Ok(targets)
}

/// The bounds of `spec.rescanAfter`, as the CRD's CEL rule has them.
pub const RESCAN_AFTER_MIN: Duration = Duration::from_secs(60);
pub const RESCAN_AFTER_MAX: Duration = Duration::from_secs(8760 * 3600);

/// `spec.rescanAfter`: a duration from 1m to 8760h. Checked here too: an object stored before
/// the CEL rule existed must stall, not overflow the date arithmetic.
pub fn parse_rescan_after(raw: &str) -> Result<Duration, ReconcileError> {
    crate::duration::parse_within(raw, RESCAN_AFTER_MIN, RESCAN_AFTER_MAX).map_err(|e| {
        ReconcileError::InvalidSpec {
            field: "spec.rescanAfter".into(),
            message: e.to_string(),
        }
    })
}

/// The registry credentials from `spec.registry.credentialsSecretRef`, if any.
async fn registry_authorization(
    sr: &ScanRequest,
    ctx: &Context,
) -> Result<Option<RegistryAuthorization>, ReconcileError> {
    let Some(secret_ref) = &sr.spec.registry.credentials_secret_ref else {
        return Ok(None);
    };
    let namespace = sr.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret = api
        .get_opt(&secret_ref.name)
        .await
        .map_err(ReconcileError::kube(
            "reading the registry credentials Secret",
        ))?
        .ok_or_else(|| ReconcileError::SecretNotFound {
            namespace: namespace.clone(),
            name: secret_ref.name.clone(),
        })?;
    super::credentials::registry_authorization_from_secret(&secret, &sr.spec.registry.url)
        .map(Some)
        .map_err(|source| ReconcileError::SecretInvalid {
            namespace,
            name: secret_ref.name.clone(),
            source,
        })
}
