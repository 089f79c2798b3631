//! Counters of what reached the development adapter, for tests to assert on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use scanreport_operator::identity::MimeType;

use crate::*;

/// Counters of what reached the adapter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevStats {
    pub metadata_requests: u64,
    /// Every `POST /scan`, accepted or not.
    pub scan_requests: u64,
    pub scans_accepted: u64,
    /// Accepted scans per digest.
    pub scans_by_digest: BTreeMap<String, u64>,
    /// Accepted scans per digest and enabled report MIME type (canonical, from
    /// `enabled_capabilities[].produces_mime_types`); `*` when the request enabled everything,
    /// `<type>:*` when a capability listed no MIME types.
    pub scans_by_digest_and_mime: BTreeMap<String, BTreeMap<String, u64>>,
    pub report_requests: u64,
    /// 302 answers.
    pub reports_not_ready: u64,
    /// 200 answers with a report, per digest and report MIME type (canonical).
    pub reports_served: BTreeMap<String, BTreeMap<String, u64>>,
    /// Scans with a `registry.authorization`.
    pub scans_with_registry_authorization: u64,
    pub faults_injected: u64,
    /// Every answer, keyed `<endpoint> <status>`, e.g. `scan 422`.
    pub responses: BTreeMap<String, u64>,
}

/// The canonical spelling of a MIME type, or the text itself when it does not parse.
pub(crate) fn canonical_or_raw(m: &str) -> String {
    MimeType::parse(m).map_or_else(|_| m.to_owned(), |m| m.as_str().to_owned())
}

impl DevStats {
    /// Accepted scans of `digest` that enabled `report_mime_type` (any spelling).
    pub fn scans_for(&self, digest: &str, report_mime_type: &str) -> u64 {
        let key = canonical_or_raw(report_mime_type);
        self.scans_by_digest_and_mime
            .get(digest)
            .and_then(|m| m.get(&key))
            .copied()
            .unwrap_or(0)
    }

    /// Reports of `digest` served as `report_mime_type` (any spelling).
    pub fn reports_for(&self, digest: &str, report_mime_type: &str) -> u64 {
        let key = canonical_or_raw(report_mime_type);
        self.reports_served
            .get(digest)
            .and_then(|m| m.get(&key))
            .copied()
            .unwrap_or(0)
    }

    /// Answers of `endpoint` with `status`.
    pub fn responses_with(&self, endpoint: Endpoint, status: u16) -> u64 {
        self.responses
            .get(&format!("{} {status}", endpoint.as_str()))
            .copied()
            .unwrap_or(0)
    }
}
