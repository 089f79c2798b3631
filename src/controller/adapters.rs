//! Step 1 of the pipeline: from a Scanner's name to a ready adapter client with fresh metadata.
//!
//! Clients are cached per Scanner and rebuilt when the Scanner changes or the metadata TTL runs
//! out (which also picks up a rotated auth Secret). The Scanner's status is updated from here,
//! only when it changed. Reconciles that resolve one Scanner at once (every waiting request at
//! start-up) build one client and send one status apply between them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::artifact::Target;
use super::error::ReconcileError;
use super::{MANAGER, status};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    AdapterStatus, ArtifactMimeType, CapabilityStatus, ScanRequestSpec, Scanner, ScannerInfo,
    ScannerStatus, SeveritySummary,
};
use crate::identity::{self, MimeType};
use crate::scanner::summary::Finding;
use crate::scanner::wire::mime;
use crate::scanner::{
    AdapterClient, AdapterMetadata, ClientOptions, MetadataCache, RegistryAuthorization,
    ReportPoll, ScanHandle, ScanSubmission, ScannerError,
};

/// Whether reports of this MIME type carry severity counts (the raw report's format is the
/// adapter's own, so it has none).
pub fn has_summary(mime_type: &MimeType) -> bool {
    [mime::VULN_REPORT_1_1, mime::HARBOR_VULN_REPORT_1_0]
        .iter()
        .any(|m| MimeType::parse(m).is_ok_and(|m| &m == mime_type))
}

/// A Scanner's `status.adapter`, from the adapter's metadata.
pub fn adapter_status(metadata: &AdapterMetadata, fetched_at: Option<Time>) -> AdapterStatus {
    AdapterStatus {
        name: metadata.scanner.name.clone(),
        vendor: metadata.scanner.vendor.clone(),
        version: metadata.scanner.version.clone(),
        capabilities: metadata
            .capabilities
            .iter()
            .map(|c| CapabilityStatus {
                capability_type: c.kind.as_str().to_owned(),
                consumes_mime_types: c.consumes_mime_types.clone(),
                produces_mime_types: c.produces_mime_types.clone(),
            })
            .collect(),
        fetched_at,
    }
}

/// The bounds of a Scanner's `spec.requestTimeout`, as the CRD's CEL rule has them.
pub const REQUEST_TIMEOUT_MIN: Duration = Duration::from_secs(1);
pub const REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(15 * 60);

/// A resolved Scanner: its identity, limits, client and metadata.
pub struct Adapter {
    /// The Scanner object's name.
    pub name: String,
    pub registration: Uuid,
    pub max_in_flight: i64,
    pub request_timeout: Duration,
    client: AdapterClient,
    metadata: Arc<AdapterMetadata>,
}

/// A report ready to store.
pub struct ReadyReport {
    pub body: Box<RawValue>,
    pub summary: Option<SeveritySummary>,
    pub findings: Option<Vec<Finding>>,
    pub generated_at: DateTime<Utc>,
    pub scanner: ScannerInfo,
}

pub enum Poll {
    Ready(ReadyReport),
    NotReady(Duration),
    /// The adapter does not know the scan (any more).
    Lost,
}

impl Adapter {
    /// Step 2 for one MIME type: the adapter must produce it, and (once the artifact's media
    /// type is known) from this kind of artifact.
    pub fn check_supported(
        &self,
        index: usize,
        mime_type: &MimeType,
        artifact: Option<ArtifactMimeType>,
    ) -> Result<(), ReconcileError> {
        let Some(capability) = self.metadata.capability_for(mime_type) else {
            let produced: Vec<String> = self
                .metadata
                .offered_report_mime_types()
                .iter()
                .map(ToString::to_string)
                .collect();
            return Err(ReconcileError::UnsupportedMimeType {
                index,
                scanner: self.name.clone(),
                mime_type: mime_type.to_string(),
                produced: produced.join(", "),
            });
        };
        if let Some(artifact) = artifact
            && !capability.consumes(artifact.as_str())
        {
            return Err(ReconcileError::UnsupportedArtifact {
                scanner: self.name.clone(),
                mime_type: artifact.as_str().to_owned(),
                report: mime_type.to_string(),
                consumed: capability.consumes_mime_types.join(", "),
            });
        }
        Ok(())
    }

    /// `POST /api/v1/scan` for one report of one manifest (`target`: the artifact, or one
    /// platform of its index); returns the adapter's scan id.
    pub async fn submit(
        &self,
        spec: &ScanRequestSpec,
        target: &Target,
        mime_type: &MimeType,
        registry_authorization: Option<&RegistryAuthorization>,
    ) -> Result<String, ScannerError> {
        let submission = ScanSubmission {
            registry_url: spec.registry.url.clone(),
            registry_authorization: registry_authorization.cloned(),
            repository: spec.artifact.repository.clone(),
            digest: target.digest.clone(),
            // A platform's manifest is not what the tag names; the adapter is told the digest.
            tag: spec
                .artifact
                .tag
                .clone()
                .filter(|_| target.platform.is_none()),
            artifact_mime_type: target.media_type.as_str().to_owned(),
            report_mime_type: mime_type.clone(),
        };
        let handle = self.client.submit_scan(&self.metadata, &submission).await?;
        Ok(handle.id)
    }

    /// `GET /api/v1/scan/{id}/report` for one report MIME type.
    pub async fn poll(&self, scan_id: &str, mime_type: &MimeType) -> Result<Poll, ScannerError> {
        let handle = ScanHandle::resume(&self.metadata, scan_id, mime_type)?;
        Ok(match self.client.fetch_report(&handle).await? {
            ReportPoll::NotReady { retry_after } => Poll::NotReady(retry_after),
            ReportPoll::ScanNotFound => Poll::Lost,
            ReportPoll::Ready(report) => {
                let report = *report;
                Poll::Ready(ReadyReport {
                    body: report.body,
                    summary: report.summary,
                    findings: report.findings,
                    // Reports without a timestamp count as generated when fetched.
                    generated_at: report.generated_at.unwrap_or_else(Utc::now),
                    scanner: report
                        .scanner
                        .clone()
                        .unwrap_or_else(|| self.metadata.scanner.clone()),
                })
            }
        })
    }
}

struct CachedClient {
    /// The Scanner's uid and generation the client was built from.
    key: (String, Option<i64>),
    built: Instant,
    client: AdapterClient,
}

/// What this process keeps per Scanner. Each part is behind its own async lock, so that the
/// reconciles that resolve one Scanner together (every request at start-up) build one client and
/// send one status apply, not one each.
#[derive(Default)]
struct ScannerSlot {
    client: tokio::sync::Mutex<Option<CachedClient>>,
    applied: tokio::sync::Mutex<Option<AppliedStatus>>,
}

/// The status this process last applied to a Scanner, and the version of the Scanner it was
/// computed from.
struct AppliedStatus {
    from_version: Option<String>,
    status: ScannerStatus,
}

/// The Scanner's status as it is now: the cache's, or the one this process applied to the very
/// version the cache still shows (its watch has not delivered the apply yet). Comparing with
/// the cache alone would apply again, with a new transition time, from every reconcile until
/// the watch catches up; each apply changes the Scanner, which re-reconciles all its requests.
fn current_status(scanner: &Scanner, applied: Option<&AppliedStatus>) -> ScannerStatus {
    match applied {
        Some(a)
            if a.from_version.is_some() && a.from_version == scanner.metadata.resource_version =>
        {
            a.status.clone()
        }
        _ => scanner.status.clone().unwrap_or_default(),
    }
}

pub struct Adapters {
    client: Client,
    metadata: MetadataCache,
    scanners: Mutex<Option<Store<Scanner>>>,
    slots: Mutex<HashMap<String, Arc<ScannerSlot>>>,
    /// Scanner name to registration UUID, of every Scanner resolved so far.
    known: Mutex<HashMap<String, Uuid>>,
    default_max_in_flight: i32,
    /// `--max-report-size`: the response limit of every adapter client.
    max_report_size: u64,
    /// The only namespace Scanner auth Secrets are read from.
    secret_namespace: String,
}

impl Adapters {
    pub fn new(
        client: Client,
        metadata_ttl: Duration,
        default_max_in_flight: i32,
        max_report_size: u64,
        secret_namespace: String,
    ) -> Self {
        Self {
            secret_namespace,
            client,
            metadata: MetadataCache::new(metadata_ttl),
            scanners: Mutex::default(),
            slots: Mutex::default(),
            known: Mutex::default(),
            default_max_in_flight,
            max_report_size,
        }
    }

    /// Every Scanner resolved so far, with its registration UUID.
    pub fn known(&self) -> Vec<(String, Uuid)> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.iter().map(|(n, r)| (n.clone(), *r)).collect()
    }

    /// Forgets what is cached for Scanners that no longer exist (clients, registrations) and
    /// adapter metadata past its TTL; returns the names forgotten. Without a Scanner cache (a
    /// standby) nothing is known to be gone.
    pub fn prune(&self) -> Vec<String> {
        let live: std::collections::HashSet<String> = {
            let scanners = self.scanners.lock().unwrap_or_else(|e| e.into_inner());
            match scanners.as_ref() {
                Some(store) => store.state().iter().map(|s| s.name_any()).collect(),
                None => return Vec::new(),
            }
        };
        retain_live(
            &mut self.slots.lock().unwrap_or_else(|e| e.into_inner()),
            &live,
        );
        let gone = retain_live(
            &mut self.known.lock().unwrap_or_else(|e| e.into_inner()),
            &live,
        );
        self.metadata.prune_expired();
        gone
    }

    /// Scanners are read from a watch cache; the first one registered is used.
    pub fn add_scanner_store(&self, store: Store<Scanner>) {
        let mut scanners = self.scanners.lock().unwrap_or_else(|e| e.into_inner());
        scanners.get_or_insert(store);
    }

    fn slot(&self, name: &str) -> Arc<ScannerSlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(name.to_owned()).or_default().clone()
    }

    fn scanner(&self, name: &str) -> Option<Arc<Scanner>> {
        let scanners = self.scanners.lock().unwrap_or_else(|e| e.into_inner());
        scanners.as_ref()?.get(&ObjectRef::new(name))
    }

    /// Step 1: the adapter of Scanner `name`, with metadata no older than the TTL.
    pub async fn resolve(&self, name: &str) -> Result<Arc<Adapter>, ReconcileError> {
        let scanner = self
            .scanner(name)
            .ok_or_else(|| ReconcileError::ScannerNotFound(name.to_owned()))?;
        let registration = match &scanner.spec.registration_uuid {
            Some(raw) => identity::parse_registration_uuid(raw),
            None => identity::default_registration_uuid(name),
        }
        .map_err(|e| ReconcileError::InvalidSpec {
            field: format!("Scanner {name:?} spec.registrationUUID"),
            message: e.to_string(),
        })?;
        let invalid_timeout = |message: String| ReconcileError::InvalidSpec {
            field: format!("Scanner {name:?} spec.requestTimeout"),
            message,
        };
        // 1s..15m as the CRD's CEL rule; checked here too, since leases and timers derive
        // from it and an object may predate the rule.
        let request_timeout = crate::duration::parse_within(
            &scanner.spec.request_timeout,
            REQUEST_TIMEOUT_MIN,
            REQUEST_TIMEOUT_MAX,
        )
        .map_err(|e| invalid_timeout(e.to_string()))?;
        let slot = self.slot(name);
        let resolved = async {
            let client = self.client_for(&slot, &scanner, request_timeout).await?;
            let metadata = self
                .metadata
                .get(&client)
                .await
                .map_err(|e| ReconcileError::scanner(name, e))?;
            Ok::<_, ReconcileError>((client, metadata))
        }
        .await;
        self.update_scanner_status(&slot, &scanner, registration, &resolved)
            .await;
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), registration);
        let (client, metadata) = resolved?;
        Ok(Arc::new(Adapter {
            name: name.to_owned(),
            registration,
            max_in_flight: i64::from(
                scanner
                    .spec
                    .max_in_flight
                    .unwrap_or(self.default_max_in_flight)
                    .max(1),
            ),
            request_timeout,
            client,
            metadata,
        }))
    }

    async fn client_for(
        &self,
        slot: &ScannerSlot,
        scanner: &Scanner,
        request_timeout: Duration,
    ) -> Result<AdapterClient, ReconcileError> {
        let key = (
            scanner.uid().unwrap_or_default(),
            scanner.metadata.generation,
        );
        let mut cached = slot.client.lock().await;
        if let Some(cached) = cached.as_ref()
            && cached.key == key
            && cached.built.elapsed() < self.metadata.ttl()
        {
            return Ok(cached.client.clone());
        }
        let name = scanner.name_any();
        let secret = match scanner
            .spec
            .auth
            .as_ref()
            .and_then(|a| a.secret_ref.as_ref())
        {
            Some(r) => Some(
                Api::<Secret>::namespaced(self.client.clone(), &self.secret_namespace)
                    .get_opt(&r.name)
                    .await
                    .map_err(ReconcileError::kube("reading the Scanner's auth Secret"))?
                    .ok_or_else(|| ReconcileError::ScannerSecretNotFound {
                        scanner: name.clone(),
                        namespace: self.secret_namespace.clone(),
                        name: r.name.clone(),
                    })?,
            ),
            None => None,
        };
        let credentials = super::credentials::adapter_credentials_from_secret(
            scanner.spec.auth.as_ref(),
            secret.as_ref(),
        )
        .map_err(|source| ReconcileError::ScannerAuthInvalid {
            scanner: name.clone(),
            source,
        })?;
        let options = ClientOptions {
            request_timeout,
            max_response_bytes: self.max_report_size,
            ..ClientOptions::default()
        };
        let client = AdapterClient::new(
            &scanner.spec.url,
            credentials,
            scanner.spec.ca_bundle.as_deref(),
            options,
        )
        .map_err(|e| ReconcileError::scanner(&name, e))?;
        // A changed Scanner may point elsewhere or speak differently: fetch metadata anew.
        self.metadata.invalidate(client.base_url());
        tracing::debug!(scanner = %name, "built the adapter client");
        *cached = Some(CachedClient {
            key,
            built: Instant::now(),
            client: client.clone(),
        });
        Ok(client)
    }

    /// Records what resolving found in the Scanner's status, when that changed.
    async fn update_scanner_status(
        &self,
        slot: &ScannerSlot,
        scanner: &Scanner,
        registration: Uuid,
        resolved: &Result<(AdapterClient, Arc<AdapterMetadata>), ReconcileError>,
    ) {
        let mut applied = slot.applied.lock().await;
        let previous = current_status(scanner, applied.as_ref());
        let (overall, adapter) = match resolved {
            Ok((_, metadata)) => (status::Overall::Ready, Some(adapter_status(metadata, None))),
            Err(e) if e.is_permanent() => (
                status::Overall::Stalled {
                    reason: e.reason().into(),
                    message: e.to_string(),
                },
                previous.adapter.clone(),
            ),
            Err(e) => (
                status::Overall::Progressing {
                    reason: e.reason().into(),
                    message: e.to_string(),
                    usable: false,
                },
                previous.adapter.clone(),
            ),
        };
        let generation = scanner.metadata.generation;
        let mut conditions =
            status::conditions(&previous.conditions, &overall, generation, Utc::now());
        if overall == status::Overall::Ready
            && let Some(ready) = conditions.first_mut()
        {
            ready.reason = "AdapterReachable".into();
            ready.message = "The adapter answered its metadata request".into();
        }
        let desired = ScannerStatus {
            observed_generation: generation,
            registration_uuid: Some(registration.to_string()),
            conditions,
            adapter,
        };
        if previous == desired {
            return;
        }
        let api: Api<Scanner> = Api::all(self.client.clone());
        let patch = serde_json::json!({
            "apiVersion": "scanreport.io/v1alpha1",
            "kind": "Scanner",
            "status": desired,
        });
        match api
            .patch_status(
                &scanner.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => {
                tracing::debug!(scanner = %scanner.name_any(), "applied the Scanner status");
                *applied = Some(AppliedStatus {
                    from_version: scanner.metadata.resource_version.clone(),
                    status: desired,
                });
            }
            Err(e) => {
                tracing::warn!(scanner = %scanner.name_any(), error = %e, "cannot update the Scanner status");
            }
        }
    }
}

/// Keeps the entries of `map` whose Scanner name is in `live`; returns the names dropped.
fn retain_live<V>(
    map: &mut HashMap<String, V>,
    live: &std::collections::HashSet<String>,
) -> Vec<String> {
    let mut gone: Vec<String> = map.keys().filter(|n| !live.contains(*n)).cloned().collect();
    for name in &gone {
        map.remove(name);
    }
    gone.sort();
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_deleted_scanners_are_dropped_and_named() {
        let mut map: HashMap<String, u32> =
            [("trivy".into(), 1), ("gone".into(), 2), ("old".into(), 3)].into();
        let live = ["trivy".to_owned(), "new".to_owned()].into();
        assert_eq!(retain_live(&mut map, &live), ["gone", "old"]);
        assert_eq!(map.keys().collect::<Vec<_>>(), ["trivy"]);
    }

    #[test]
    fn the_status_just_applied_counts_until_the_watch_delivers_a_newer_scanner() {
        let mut scanner: Scanner = serde_yaml::from_str(
            "metadata: {name: trivy, resourceVersion: '5'}\nspec: {url: 'http://trivy:8080'}",
        )
        .unwrap();
        let applied = AppliedStatus {
            from_version: Some("5".into()),
            status: ScannerStatus {
                registration_uuid: Some("applied".into()),
                ..ScannerStatus::default()
            },
        };
        // The cache still shows version 5, without the status applied from it.
        assert_eq!(current_status(&scanner, Some(&applied)), applied.status);
        // A newer version is what the cluster holds now, whoever wrote it.
        scanner.metadata.resource_version = Some("6".into());
        scanner.status = Some(ScannerStatus {
            registration_uuid: Some("theirs".into()),
            ..ScannerStatus::default()
        });
        assert_eq!(
            current_status(&scanner, Some(&applied)),
            scanner.status.clone().unwrap()
        );
        assert_eq!(
            current_status(&scanner, None),
            scanner.status.clone().unwrap()
        );
    }

    fn metadata(json: serde_json::Value, content_type: &str) -> AdapterMetadata {
        AdapterMetadata::from_wire(
            serde_json::from_value(json).unwrap(),
            MimeType::parse(content_type).unwrap(),
        )
    }

    #[test]
    fn adapter_metadata_becomes_the_scanner_status() {
        let modern = metadata(
            serde_json::json!({
                "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.50"},
                "capabilities": [
                    {"type": "vulnerability",
                     "consumes_mime_types": [mime::OCI_IMAGE_MANIFEST],
                     "produces_mime_types": [mime::VULN_REPORT_1_1, mime::RAW_VULN_REPORT]},
                    {"type": "sbom",
                     "consumes_mime_types": [mime::OCI_IMAGE_MANIFEST],
                     "produces_mime_types": [mime::SBOM_REPORT_1_0]}
                ]
            }),
            mime::METADATA_1_1,
        );
        let status = adapter_status(&modern, None);
        assert_eq!(status.name, "Trivy");
        assert_eq!(status.capabilities.len(), 2);
        assert_eq!(status.capabilities[1].capability_type, "sbom");
        assert_eq!(modern.offered_report_mime_types().len(), 3);

        let legacy = metadata(
            serde_json::json!({
                "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.20"},
                "capabilities": [{
                    "consumes_mime_types": [mime::OCI_IMAGE_MANIFEST],
                    "produces_mime_types": [mime::HARBOR_VULN_REPORT_1_0]
                }]
            }),
            mime::METADATA_1_0,
        );
        assert_eq!(
            adapter_status(&legacy, None).capabilities[0].capability_type,
            "vulnerability"
        );
    }
}
