//! Steps 1–3: resolve the Scanner, validate the request against its adapter and Secrets, learn
//! what the artifact is and prove that the request may see it (step 2b, [`artifact`]; see
//! docs/security.md) before any report is shown or shared, then work out the report ids and
//! what `rescanToken` and `rescanAfter` demand.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use uuid::Uuid;

use super::adapters::Adapter;
use super::artifact::{self, Access, Artifact, Target};
use super::context::Context;
use super::decide::{self, Rescan, RescanDemand};
use super::error::ReconcileError;
use crate::api::{ScanRequest, ScanRequestSpec};
use crate::identity::{MimeType, ReportKey};
use crate::redact::Redactor;
use crate::registry::cache::SecretVersion;
use crate::registry::{RegistryCredentials, RegistryEndpoint};
use crate::scanner::RegistryAuthorization;

/// What steps 1–3 work out.
pub struct Plan {
    pub adapter: Arc<Adapter>,
    pub registration: Uuid,
    /// What the artifact is: its digest, media type and the manifests to scan.
    pub artifact: Artifact,
    /// One report id per manifest to scan and requested MIME type, manifest by manifest.
    pub targets: Vec<ReportKey>,
    /// The manifest of each of `targets`, at the same position.
    pub manifests: Vec<Target>,
    pub registry_auth: Option<RegistryAuthorization>,
    /// Scrubs this request's registry credentials from text that leaves the process.
    pub redactor: Redactor,
    pub rescan_after: Option<Duration>,
    pub rescan: Rescan,
    /// The policy the findings are judged by, if any.
    pub policy: Option<super::verdict::Applied>,
}

impl Plan {
    /// Steps 1–3.
    pub async fn make(sr: &ScanRequest, ctx: &Context) -> Result<Self, ReconcileError> {
        let spec = &sr.spec;
        let adapter = ctx.adapters.resolve(&spec.scanner).await?;
        let registration = adapter.registration;
        let mime_types = report_mime_types(spec, &adapter)?;
        let rescan_after = spec
            .rescan_after
            .as_deref()
            .map(parse_rescan_after)
            .transpose()?;
        let endpoint = RegistryEndpoint::parse(&spec.registry.url, spec.registry.insecure)
            .map_err(ReconcileError::Access)?;
        let (credentials, secret) = registry_credentials(sr, ctx, endpoint.host()).await?;
        let access = Access {
            endpoint: &endpoint,
            credentials: &credentials,
            secret,
        };
        let artifact = artifact::resolve(sr, ctx, &access, chrono::Utc::now()).await?;
        let (targets, manifests) = targets(&mime_types, registration, &adapter, &artifact)?;
        let policy = super::verdict::resolve(sr, ctx, &targets)?;
        let redactor = Redactor::for_credentials(&credentials);
        let registry_auth = authorization(&credentials);
        let rescan = match decide::rescan_demand(spec.rescan_token.as_deref(), sr.status.as_ref()) {
            RescanDemand::Known(rescan) => rescan,
            RescanDemand::NewToken(token) => {
                let namespace = sr.metadata.namespace.clone().unwrap_or_default();
                if let Err(retry_after) = ctx.rescans.take(&namespace, std::time::Instant::now()) {
                    return Err(ReconcileError::RescanRateLimited {
                        namespace,
                        per_hour: ctx.config.rescans_per_hour,
                        burst: ctx.rescans.burst(),
                        retry_after,
                    });
                }
                Rescan::Wanted {
                    token,
                    requested_at: decide::token_requested_at(ctx.store.now().await?),
                }
            }
        };
        Ok(Self {
            adapter,
            registration,
            artifact,
            targets,
            manifests,
            registry_auth,
            redactor,
            rescan_after,
            rescan,
            policy,
        })
    }

    /// Each report id with the manifest it is of.
    pub fn reports(&self) -> impl Iterator<Item = (&ReportKey, &Target)> {
        self.targets.iter().zip(&self.manifests)
    }
}

/// Step 2: the requested report MIME types the adapter produces, canonical; two spellings of
/// one MIME type are one report.
fn report_mime_types(
    spec: &ScanRequestSpec,
    adapter: &Adapter,
) -> Result<Vec<MimeType>, ReconcileError> {
    let mut found: Vec<MimeType> = Vec::new();
    for (index, raw) in spec.report_mime_types.iter().enumerate() {
        let mime_type = MimeType::parse(raw).map_err(|e| ReconcileError::InvalidSpec {
            field: format!("spec.reportMimeTypes[{index}]"),
            message: e.to_string(),
        })?;
        adapter.check_supported(index, &mime_type, None)?;
        if !found.contains(&mime_type) {
            found.push(mime_type);
        }
    }
    Ok(found)
}

/// Step 3: one report id per manifest to scan and MIME type, once the adapter is known to
/// consume the manifest's type.
fn targets(
    mime_types: &[MimeType],
    registration: Uuid,
    adapter: &Adapter,
    artifact: &Artifact,
) -> Result<(Vec<ReportKey>, Vec<Target>), ReconcileError> {
    let mut keys = Vec::new();
    let mut manifests = Vec::new();
    for target in &artifact.targets {
        for (index, mime_type) in mime_types.iter().enumerate() {
            adapter.check_supported(index, mime_type, Some(target.media_type))?;
            keys.push(ReportKey {
                digest: target.digest.clone(),
                registration_uuid: registration,
                mime_type: mime_type.clone(),
            });
            manifests.push(target.clone());
        }
    }
    Ok((keys, manifests))
}

/// The bounds of `spec.rescanAfter`, as the CRD's CEL rule has them. The floor is 1h: every
/// expiry scans the artifact again for every report type, scanners' vulnerability databases
/// change a few times a day at most, and a forced rescan (`rescanToken`) is there for "now".
pub const RESCAN_AFTER_MIN: Duration = Duration::from_secs(3600);
pub const RESCAN_AFTER_MAX: Duration = Duration::from_secs(8760 * 3600);

/// `spec.rescanAfter`: a duration from 1h to 8760h. Checked here too: an object stored before
/// the CEL rule existed must stall, not overflow the date arithmetic.
pub fn parse_rescan_after(raw: &str) -> Result<Duration, ReconcileError> {
    crate::duration::parse_within(raw, RESCAN_AFTER_MIN, RESCAN_AFTER_MAX).map_err(|e| {
        ReconcileError::InvalidSpec {
            field: "spec.rescanAfter".into(),
            message: e.to_string(),
        }
    })
}

/// The registry credentials from `spec.registry.credentialsSecretRef` (anonymous when it names
/// none), only from a Secret of a registry type, and which version of the Secret they came
/// from.
async fn registry_credentials(
    sr: &ScanRequest,
    ctx: &Context,
    registry_host: &str,
) -> Result<(RegistryCredentials, Option<SecretVersion>), ReconcileError> {
    let Some(secret_ref) = &sr.spec.registry.credentials_secret_ref else {
        return Ok((RegistryCredentials::Anonymous, None));
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
    let credentials = RegistryCredentials::from_secret(&secret, registry_host)
        .map_err(ReconcileError::SecretInvalid)?;
    let version = SecretVersion {
        uid: secret.metadata.uid.clone().unwrap_or_default(),
        resource_version: secret.metadata.resource_version.clone().unwrap_or_default(),
    };
    Ok((credentials, Some(version)))
}

/// The `registry.authorization` the adapter gets: the same credentials that proved access.
fn authorization(credentials: &RegistryCredentials) -> Option<RegistryAuthorization> {
    use secrecy::ExposeSecret;
    match credentials {
        RegistryCredentials::Anonymous => None,
        RegistryCredentials::Basic { username, password } => Some(RegistryAuthorization::basic(
            username.expose_secret(),
            password.expose_secret(),
        )),
        RegistryCredentials::Bearer { token } => {
            Some(RegistryAuthorization::bearer(token.expose_secret()))
        }
    }
}
