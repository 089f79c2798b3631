//! What an adapter offers and how to ask for it: its metadata (API level, capabilities), the
//! capability a report MIME type targets, the scan request built from it, and a TTL cache of
//! metadata per adapter.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::ScannerInfo;
use crate::identity::MimeType;

use super::error::ScannerError;
use super::wire::{self, CAPABILITY_SBOM, CAPABILITY_VULNERABILITY, mime};

use super::client::*;

/// The specification level an adapter speaks, as far as the client must care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiLevel {
    /// Specification v1.0 or v1.1: metadata 1.0, scan request 1.0, no capability types.
    V1_0,
    /// Specification v1.2: metadata 1.1 or typed capabilities; scan request 1.1 with
    /// `enabled_capabilities`.
    V1_2,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CapabilityKind {
    Vulnerability,
    Sbom,
    /// A type from a newer specification; kept so that its MIME types are still usable.
    Other(String),
}

impl CapabilityKind {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Vulnerability => CAPABILITY_VULNERABILITY,
            Self::Sbom => CAPABILITY_SBOM,
            Self::Other(s) => s,
        }
    }
}

/// One capability of the adapter, with MIME types as the adapter spells them.
#[derive(Clone, Debug, PartialEq)]
pub struct Capability {
    pub kind: CapabilityKind,
    pub consumes_mime_types: Vec<String>,
    pub produces_mime_types: Vec<String>,
    /// For SBOM capabilities: `additional_attributes.sbom_media_types`.
    pub sbom_media_types: Vec<String>,
}

impl Capability {
    /// The adapter's own spelling of `report`, when this capability produces it.
    pub fn produced_spelling(&self, report: &MimeType) -> Option<&str> {
        self.produces_mime_types
            .iter()
            .find(|m| same_mime(m, report))
            .map(String::as_str)
    }

    /// Whether the capability accepts artifacts of this manifest MIME type. An adapter that
    /// lists no consumed types is taken to accept any.
    pub fn consumes(&self, artifact_mime_type: &str) -> bool {
        let Ok(wanted) = MimeType::parse(artifact_mime_type) else {
            return false;
        };
        self.consumes_mime_types.is_empty()
            || self
                .consumes_mime_types
                .iter()
                .any(|m| same_mime(m, &wanted))
    }

    /// The SBOM format to ask for: the first one the adapter lists that the specification knows,
    /// else SPDX, which is what Harbor asks for.
    pub fn preferred_sbom_media_type(&self) -> &'static str {
        self.sbom_media_types
            .iter()
            .find_map(|m| match m.trim() {
                mime::SBOM_SPDX_JSON => Some(mime::SBOM_SPDX_JSON),
                mime::SBOM_CYCLONEDX_JSON => Some(mime::SBOM_CYCLONEDX_JSON),
                _ => None,
            })
            .unwrap_or(mime::SBOM_SPDX_JSON)
    }
}

/// What `GET /api/v1/metadata` said, interpreted.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterMetadata {
    pub scanner: ScannerInfo,
    pub capabilities: Vec<Capability>,
    pub properties: BTreeMap<String, Value>,
    pub api_level: ApiLevel,
    /// The metadata MIME type the adapter answered with (canonical).
    pub content_type: MimeType,
}

impl AdapterMetadata {
    pub fn from_wire(meta: wire::ScannerAdapterMetadata, content_type: MimeType) -> Self {
        let typed = meta
            .capabilities
            .iter()
            .any(|c| c.capability_type.is_some());
        let api_level = if typed || is(&content_type, mime::METADATA_1_1) {
            ApiLevel::V1_2
        } else {
            ApiLevel::V1_0
        };
        let capabilities = meta
            .capabilities
            .into_iter()
            .map(|c| Capability {
                kind: match c.capability_type.as_deref() {
                    None | Some(CAPABILITY_VULNERABILITY) => CapabilityKind::Vulnerability,
                    Some(CAPABILITY_SBOM) => CapabilityKind::Sbom,
                    Some(other) => CapabilityKind::Other(other.to_owned()),
                },
                sbom_media_types: c
                    .additional_attributes
                    .as_ref()
                    .and_then(|a| a.get("sbom_media_types"))
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                consumes_mime_types: c.consumes_mime_types,
                produces_mime_types: c.produces_mime_types,
            })
            .collect();
        Self {
            scanner: ScannerInfo {
                name: meta.scanner.name,
                vendor: meta.scanner.vendor,
                version: meta.scanner.version,
            },
            capabilities,
            properties: meta.properties,
            api_level,
            content_type,
        }
    }

    /// The capability that produces `report`, compared in canonical form.
    pub fn capability_for(&self, report: &MimeType) -> Option<&Capability> {
        self.capabilities
            .iter()
            .find(|c| c.produced_spelling(report).is_some())
    }

    /// Every report MIME type the adapter produces, canonical, sorted, without duplicates.
    pub fn offered_report_mime_types(&self) -> Vec<MimeType> {
        let mut all: Vec<MimeType> = self
            .capabilities
            .iter()
            .flat_map(|c| &c.produces_mime_types)
            .filter_map(|m| MimeType::parse(m).ok())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The scan request MIME type to send: 1.1 to v1.2 adapters (the version that carries
    /// `enabled_capabilities`), 1.0 to older ones, which know no other.
    pub fn scan_request_mime_type(&self) -> &'static str {
        match self.api_level {
            ApiLevel::V1_2 => mime::SCAN_REQUEST_1_1,
            ApiLevel::V1_0 => mime::SCAN_REQUEST_1_0,
        }
    }
}

/// The scan request body and the handle to poll with, for one submission.
pub(crate) fn build_scan_request(
    metadata: &AdapterMetadata,
    scan: &ScanSubmission,
) -> Result<(wire::ScanRequest, ScanHandle), ScannerError> {
    let report = &scan.report_mime_type;
    let (capability, handle) = ScanHandle::target(metadata, String::new(), report)?;
    if !capability.consumes(&scan.artifact_mime_type) {
        return Err(ScannerError::ArtifactMimeTypeNotConsumed {
            mime_type: scan.artifact_mime_type.clone(),
            report_mime_type: report.to_string(),
            consumed: list_or_none(capability.consumes_mime_types.iter()),
        });
    }
    // Older adapters know no `enabled_capabilities` and may reject unknown fields; v1.2 adapters
    // get exactly the one report this scan is for.
    let enabled_capabilities = (metadata.api_level == ApiLevel::V1_2).then(|| {
        vec![wire::EnabledCapability {
            capability_type: capability.kind.as_str().to_owned(),
            produces_mime_types: Some(vec![handle.accept.clone()]),
            parameters: handle
                .sbom_media_type
                .as_ref()
                .map(|m| wire::SbomParameters {
                    sbom_media_types: vec![m.clone()],
                }),
        }]
    });
    let request = wire::ScanRequest {
        registry: wire::Registry {
            url: scan.registry_url.clone(),
            authorization: scan
                .registry_authorization
                .as_ref()
                .map(|a| a.as_secret().clone()),
        },
        artifact: wire::Artifact {
            repository: scan.repository.clone(),
            digest: scan.digest.as_str().to_owned(),
            tag: scan.tag.clone(),
            mime_type: scan.artifact_mime_type.clone(),
        },
        enabled_capabilities,
    };
    Ok((request, handle))
}

impl ScanHandle {
    /// The handle to poll scan `id` for `report`, exactly as [`AdapterClient::submit_scan`]
    /// returned it: for polling a scan whose id was stored elsewhere (another replica, a
    /// restart).
    pub fn resume(
        metadata: &AdapterMetadata,
        id: impl Into<String>,
        report: &MimeType,
    ) -> Result<Self, ScannerError> {
        Self::target(metadata, id.into(), report).map(|(_, handle)| handle)
    }

    /// The capability that produces `report`, and the handle asking for it as the adapter
    /// spells it (plus the SBOM format, for SBOM reports).
    fn target<'m>(
        metadata: &'m AdapterMetadata,
        id: String,
        report: &MimeType,
    ) -> Result<(&'m Capability, Self), ScannerError> {
        let not_offered = || ScannerError::ReportMimeTypeNotOffered {
            mime_type: report.to_string(),
            offered: list_or_none(metadata.offered_report_mime_types().iter()),
        };
        let capability = metadata.capability_for(report).ok_or_else(not_offered)?;
        let accept = capability
            .produced_spelling(report)
            .ok_or_else(not_offered)?
            .to_owned();
        let sbom_media_type = (capability.kind == CapabilityKind::Sbom)
            .then(|| capability.preferred_sbom_media_type().to_owned());
        Ok((
            capability,
            Self {
                id,
                report_mime_type: report.clone(),
                accept,
                sbom_media_type,
            },
        ))
    }
}

/// Adapter metadata cached per adapter URL for a TTL, so reconciles do not query the adapter
/// each time. Concurrent misses for one adapter make one request; failures are not cached.
#[derive(Debug)]
pub struct MetadataCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
}

#[derive(Debug)]
struct Cached {
    fetched: Instant,
    metadata: Arc<AdapterMetadata>,
}

impl MetadataCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The adapter's metadata, from the cache while younger than the TTL.
    pub async fn get(&self, client: &AdapterClient) -> Result<Arc<AdapterMetadata>, ScannerError> {
        let slot = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries
                .entry(client.base_url().to_owned())
                .or_default()
                .clone()
        };
        let mut slot = slot.lock().await;
        if let Some(cached) = slot.as_ref()
            && cached.fetched.elapsed() < self.ttl
        {
            return Ok(cached.metadata.clone());
        }
        let metadata = Arc::new(client.metadata().await?);
        *slot = Some(Cached {
            fetched: Instant::now(),
            metadata: metadata.clone(),
        });
        Ok(metadata)
    }

    /// Drops entries older than the TTL (or never filled) that nobody is filling right now:
    /// an adapter URL no Scanner uses any more would otherwise stay for ever.
    pub fn prune_expired(&self) {
        let ttl = self.ttl;
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, slot| match slot.try_lock() {
                Ok(cached) => cached.as_ref().is_some_and(|c| c.fetched.elapsed() < ttl),
                // Being fetched: in use.
                Err(_) => true,
            });
    }

    /// Adapters with an entry.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets an adapter, e.g. when its Scanner changed or was deleted.
    pub fn invalidate(&self, base_url: &str) {
        let key = normalise_base_url(base_url).unwrap_or_else(|_| base_url.to_owned());
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    #[test]
    fn expired_and_empty_entries_are_pruned_and_fresh_or_busy_ones_stay() {
        let cache = MetadataCache::new(Duration::from_secs(60));
        let cached = |age: Duration| {
            Arc::new(tokio::sync::Mutex::new(Some(Cached {
                fetched: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
                metadata: Arc::new(AdapterMetadata::from_wire(
                    serde_json::from_value(serde_json::json!({
                        "scanner": {"name": "t", "vendor": "v", "version": "1"},
                        "capabilities": []
                    }))
                    .unwrap(),
                    MimeType::parse(mime::METADATA_1_1).unwrap(),
                )),
            })))
        };
        let busy = Arc::new(tokio::sync::Mutex::new(None));
        let guard = busy.try_lock().unwrap();
        {
            let mut entries = cache.entries.lock().unwrap();
            entries.insert("http://fresh".into(), cached(Duration::ZERO));
            entries.insert("http://old".into(), cached(Duration::from_secs(120)));
            entries.insert("http://empty".into(), Arc::default());
            entries.insert("http://busy".into(), busy.clone());
        }
        cache.prune_expired();
        let mut left: Vec<String> = cache.entries.lock().unwrap().keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["http://busy", "http://fresh"]);
        drop(guard);
        cache.prune_expired();
        assert_eq!(cache.len(), 1);
    }
}
