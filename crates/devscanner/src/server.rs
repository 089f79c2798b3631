//! The HTTP handlers: the adapter API (metadata, scan, report) with auth, content negotiation
//! and injected faults, and the `/dev/*` endpoints that steer the adapter over HTTP.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use scanreport_operator::identity::{Digest, MimeType};
use scanreport_operator::scanner::wire::{self, mime};

use crate::*;

// Server state and handlers.

pub(crate) struct Shared {
    spec: DevSpec,
    auth: DevAuth,
    /// Makes scan ids unique across restarts of a long-running demo.
    id_namespace: uuid::Uuid,
    inner: Mutex<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pending_polls: u32,
    pub(crate) refresh_after_secs: u64,
    pub(crate) hang_for: Duration,
    pub(crate) oversize_bytes: u64,
    pub(crate) faults: Vec<FaultRule>,
    pub(crate) scans: HashMap<String, ScanState>,
    pub(crate) scan_order: VecDeque<String>,
    pub(crate) next_scan: u64,
    pub(crate) stats: DevStats,
    pub(crate) last_scan_request: Option<wire::ScanRequest>,
}

pub(crate) struct ScanState {
    digest: Digest,
    artifact: wire::Artifact,
    /// Canonical report MIME types the request enabled; `None` for all.
    enabled: Option<BTreeSet<MimeType>>,
    accepted_at: chrono::DateTime<chrono::Utc>,
    polls: u32,
}

impl Shared {
    pub(crate) fn new(config: &DevScannerConfig, addr: SocketAddr) -> Self {
        let started = chrono::Utc::now();
        let id_namespace = uuid::Uuid::new_v5(
            &scanreport_operator::identity::NAMESPACE,
            format!("dev-scanner\n{addr}\n{}", started.to_rfc3339()).as_bytes(),
        );
        Self {
            spec: config.spec,
            auth: config.auth.clone(),
            id_namespace,
            inner: Mutex::new(Inner {
                pending_polls: config.pending_polls,
                refresh_after_secs: config.refresh_after_secs,
                hang_for: config.hang_for,
                oversize_bytes: config.oversize_bytes,
                faults: config.faults.clone(),
                scans: HashMap::new(),
                scan_order: VecDeque::new(),
                next_scan: 0,
                stats: DevStats::default(),
                last_scan_request: None,
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next fault for `endpoint`, counting it down.
    fn take_fault(&self, endpoint: Endpoint) -> Option<(FaultKind, Duration, u64)> {
        let mut inner = self.lock();
        let index = inner.faults.iter().position(|f| f.endpoint == endpoint)?;
        let rule = &mut inner.faults[index];
        let kind = rule.kind;
        match rule.count {
            Some(1) => {
                inner.faults.remove(index);
            }
            Some(n) => rule.count = Some(n - 1),
            None => {}
        }
        inner.stats.faults_injected += 1;
        Some((kind, inner.hang_for, inner.oversize_bytes))
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match &self.auth {
            DevAuth::None => true,
            DevAuth::Basic { username, password } => {
                header(AUTHORIZATION.as_str())
                    == Some(&format!(
                        "Basic {}",
                        STANDARD.encode(format!("{username}:{password}"))
                    ))
            }
            DevAuth::Bearer { token } => {
                header(AUTHORIZATION.as_str()) == Some(&format!("Bearer {token}"))
            }
            DevAuth::ApiKey { header: name, key } => header(name) == Some(key.as_str()),
        }
    }

    fn unauthorized(&self) -> Response {
        let mut resp = error(StatusCode::UNAUTHORIZED, "missing or wrong credentials");
        let challenge = match self.auth {
            DevAuth::Basic { .. } => Some("Basic realm=\"scanner-adapter\""),
            DevAuth::Bearer { .. } => Some("Bearer"),
            _ => None,
        };
        if let Some(c) = challenge {
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        resp
    }

    fn record(&self, endpoint: Endpoint, status: StatusCode) {
        let key = format!("{} {}", endpoint.as_str(), status.as_u16());
        *self.lock().stats.responses.entry(key).or_default() += 1;
    }

    fn produces(&self) -> Vec<&'static str> {
        let mut all = vec![
            mime::VULN_REPORT_1_1,
            mime::HARBOR_VULN_REPORT_1_0,
            mime::RAW_VULN_REPORT,
        ];
        if self.spec == DevSpec::V1_2 {
            all.push(mime::SBOM_REPORT_1_0);
        }
        all
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/scan", post(scan))
        .route("/api/v1/scan/{id}/report", get(report))
        .route("/dev/stats", get(dev_stats))
        .route("/dev/faults", post(dev_add_faults).delete(dev_clear_faults))
        .route("/dev/config", post(dev_config))
        .route("/dev/reset", post(dev_reset))
        .with_state(shared)
}

async fn metadata(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let resp = metadata_inner(&s, &headers).await;
    s.record(Endpoint::Metadata, resp.status());
    resp
}

async fn metadata_inner(s: &Shared, headers: &HeaderMap) -> Response {
    s.lock().stats.metadata_requests += 1;
    // v1.2 adapters answer metadata 1.1 unless the client accepts only 1.0.
    let content_type = match s.spec {
        DevSpec::V1_1 => mime::METADATA_1_0,
        DevSpec::V1_2 => {
            let accepted = accept_list(headers);
            let wants = |m: &str| accepted.iter().any(|a| a.matches(m));
            if wants(mime::METADATA_1_0) && !wants(mime::METADATA_1_1) {
                mime::METADATA_1_0
            } else {
                mime::METADATA_1_1
            }
        }
    };
    if let Some(resp) = apply_fault(s, Endpoint::Metadata, StatusCode::OK, content_type).await {
        return resp;
    }
    if !s.authorized(headers) {
        return s.unauthorized();
    }
    let vulnerability = json!({
        "consumes_mime_types": [mime::OCI_IMAGE_MANIFEST, mime::DOCKER_MANIFEST_V2],
        "produces_mime_types": [mime::VULN_REPORT_1_1, mime::HARBOR_VULN_REPORT_1_0, mime::RAW_VULN_REPORT],
    });
    let capabilities = match s.spec {
        DevSpec::V1_1 => json!([vulnerability]),
        DevSpec::V1_2 => {
            let mut vulnerability = vulnerability;
            vulnerability["type"] = json!(wire::CAPABILITY_VULNERABILITY);
            json!([vulnerability, {
                "type": wire::CAPABILITY_SBOM,
                "consumes_mime_types": [mime::OCI_IMAGE_MANIFEST, mime::DOCKER_MANIFEST_V2],
                "produces_mime_types": [mime::SBOM_REPORT_1_0],
                "additional_attributes": {"sbom_media_types": [mime::SBOM_CYCLONEDX_JSON]},
            }])
        }
    };
    let body = json!({
        "scanner": scanner_json(),
        "capabilities": capabilities,
        "properties": {
            "harbor.scanner-adapter/scanner-type": "os-package-vulnerability",
            "harbor.scanner-adapter/vulnerability-database-updated-at": "2024-01-01T00:00:00Z",
            "scanreport.io/dev-scanner": "true",
        },
    });
    json_response(StatusCode::OK, content_type, &body)
}

async fn scan(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let resp = scan_inner(&s, &headers, &body).await;
    s.record(Endpoint::Scan, resp.status());
    resp
}

async fn scan_inner(s: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    s.lock().stats.scan_requests += 1;
    // An echo answers about this very request.
    if let Some(FaultKind::EchoCredentials { .. }) = peek_fault(s, Endpoint::Scan)
        && let Ok(request) = serde_json::from_slice::<wire::ScanRequest>(body)
    {
        s.lock().last_scan_request = Some(request);
    }
    if let Some(resp) = apply_fault(
        s,
        Endpoint::Scan,
        StatusCode::ACCEPTED,
        mime::SCAN_RESPONSE_1_0,
    )
    .await
    {
        return resp;
    }
    if !s.authorized(headers) {
        return s.unauthorized();
    }
    let mut accepted = vec![mime::SCAN_REQUEST_1_0];
    if s.spec == DevSpec::V1_2 {
        accepted.push(mime::SCAN_REQUEST_1_1);
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Ok(content_type) = MimeType::parse(content_type) else {
        return error(StatusCode::BAD_REQUEST, "missing or invalid Content-Type");
    };
    if !accepted
        .iter()
        .any(|a| canonical_or_raw(a) == content_type.as_str())
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "unsupported Content-Type {content_type}; send {}",
                accepted.join(" or ")
            ),
        );
    }
    let request: wire::ScanRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        // Only the position: a typed error would quote values, the authorization among them.
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "invalid scan request: {:?} error at line {} column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            );
        }
    };
    match validate_scan_request(s, &request) {
        Ok((digest, enabled)) => accept_scan(s, request, digest, enabled),
        Err((status, message)) => error(status, &message),
    }
}

type Rejection = (StatusCode, String);

fn validate_scan_request(
    s: &Shared,
    request: &wire::ScanRequest,
) -> Result<(Digest, Option<BTreeSet<MimeType>>), Rejection> {
    let unprocessable = |m: &str| (StatusCode::UNPROCESSABLE_ENTITY, m.to_owned());
    let registry = url::Url::parse(&request.registry.url)
        .map_err(|_| unprocessable("registry.url must be an absolute http(s) URL"))?;
    if !matches!(registry.scheme(), "http" | "https") || registry.host_str().is_none() {
        return Err(unprocessable(
            "registry.url must be an absolute http(s) URL",
        ));
    }
    if let Some(auth) = &request.registry.authorization {
        let value = auth.expose();
        if !(value.starts_with("Basic ") || value.starts_with("Bearer ")) {
            return Err(unprocessable(
                "registry.authorization must be `Basic <base64>` or `Bearer <token>`",
            ));
        }
    }
    if request.artifact.repository.trim().is_empty() {
        return Err(unprocessable("artifact.repository is required"));
    }
    let digest = Digest::parse(&request.artifact.digest).map_err(|_| {
        unprocessable("artifact.digest must be sha256:<64 hex> or sha512:<128 hex>")
    })?;
    if request.artifact.mime_type.trim().is_empty() {
        return Err(unprocessable("artifact.mime_type is required"));
    }
    let consumable = [mime::OCI_IMAGE_MANIFEST, mime::DOCKER_MANIFEST_V2];
    if !consumable
        .iter()
        .any(|c| canonical_or_raw(c) == canonical_or_raw(&request.artifact.mime_type))
    {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "cannot scan artifacts of MIME type {}",
                request.artifact.mime_type
            ),
        ));
    }
    // Adapters before v1.2 do not know the field and ignore it.
    let caps = match (&request.enabled_capabilities, s.spec) {
        (Some(caps), DevSpec::V1_2) => caps,
        _ => return Ok((digest, None)),
    };
    let mut enabled = BTreeSet::new();
    for cap in caps {
        let produced: &[&str] = match cap.capability_type.as_str() {
            wire::CAPABILITY_VULNERABILITY => &[
                mime::VULN_REPORT_1_1,
                mime::HARBOR_VULN_REPORT_1_0,
                mime::RAW_VULN_REPORT,
            ],
            wire::CAPABILITY_SBOM => &[mime::SBOM_REPORT_1_0],
            other => {
                return Err(unprocessable(&format!(
                    "unknown capability type {other:?}; expected vulnerability or sbom"
                )));
            }
        };
        let wanted: Vec<String> = match &cap.produces_mime_types {
            Some(list) => list.clone(),
            None => produced.iter().map(|m| (*m).to_owned()).collect(),
        };
        for m in wanted {
            let parsed = MimeType::parse(&m)
                .map_err(|_| unprocessable(&format!("invalid MIME type {m:?}")))?;
            if !produced
                .iter()
                .any(|p| canonical_or_raw(p) == parsed.as_str())
            {
                return Err((
                    StatusCode::NOT_IMPLEMENTED,
                    format!(
                        "the {} capability does not produce {m}",
                        cap.capability_type
                    ),
                ));
            }
            enabled.insert(parsed);
        }
        if let Some(params) = &cap.parameters {
            for media_type in &params.sbom_media_types {
                match media_type.as_str() {
                    mime::SBOM_CYCLONEDX_JSON => {}
                    mime::SBOM_SPDX_JSON => {
                        return Err((
                            StatusCode::NOT_IMPLEMENTED,
                            "this adapter produces CycloneDX SBOMs only".into(),
                        ));
                    }
                    other => {
                        return Err(unprocessable(&format!("unknown SBOM media type {other:?}")));
                    }
                }
            }
        }
    }
    Ok((digest, Some(enabled)))
}

fn accept_scan(
    s: &Shared,
    request: wire::ScanRequest,
    digest: Digest,
    enabled: Option<BTreeSet<MimeType>>,
) -> Response {
    let mut inner = s.lock();
    let seq = inner.next_scan;
    inner.next_scan += 1;
    let id = uuid::Uuid::new_v5(&s.id_namespace, &seq.to_be_bytes()).to_string();

    let stats = &mut inner.stats;
    stats.scans_accepted += 1;
    *stats
        .scans_by_digest
        .entry(digest.as_str().to_owned())
        .or_default() += 1;
    let per_mime = stats
        .scans_by_digest_and_mime
        .entry(digest.as_str().to_owned())
        .or_default();
    match (&request.enabled_capabilities, &enabled) {
        (Some(caps), Some(_)) => {
            for cap in caps {
                match &cap.produces_mime_types {
                    Some(list) => {
                        for m in list {
                            *per_mime.entry(canonical_or_raw(m)).or_default() += 1;
                        }
                    }
                    None => {
                        *per_mime
                            .entry(format!("{}:*", cap.capability_type))
                            .or_default() += 1;
                    }
                }
            }
        }
        _ => *per_mime.entry("*".to_owned()).or_default() += 1,
    }
    if request.registry.authorization.is_some() {
        stats.scans_with_registry_authorization += 1;
    }

    inner.scans.insert(
        id.clone(),
        ScanState {
            digest: digest.clone(),
            artifact: request.artifact.clone(),
            enabled,
            accepted_at: chrono::Utc::now(),
            polls: 0,
        },
    );
    inner.scan_order.push_back(id.clone());
    while inner.scan_order.len() > MAX_SCANS {
        if let Some(old) = inner.scan_order.pop_front() {
            inner.scans.remove(&old);
        }
    }
    inner.last_scan_request = Some(request);
    drop(inner);
    tracing::info!(scan_id = %id, digest = %digest, "scan accepted");
    json_response(
        StatusCode::ACCEPTED,
        mime::SCAN_RESPONSE_1_0,
        &json!({ "id": id }),
    )
}

async fn report(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let resp = report_inner(&s, &id, &query, &headers).await;
    s.record(Endpoint::Report, resp.status());
    resp
}

async fn report_inner(
    s: &Shared,
    id: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    s.lock().stats.report_requests += 1;
    let produces = s.produces();
    // The first acceptable type the client lists; none listed means the default report.
    let accepted = accept_list(headers);
    let chosen: Option<&'static str> = if accepted.is_empty() {
        Some(mime::VULN_REPORT_1_1)
    } else {
        accepted.iter().find_map(|a| match a {
            Accepted::Any => Some(mime::VULN_REPORT_1_1),
            Accepted::Exact(_) => produces.iter().copied().find(|p| a.matches(p)),
        })
    };

    if let Some(FaultKind::LoseScan) = peek_fault(s, Endpoint::Report) {
        let _ = s.take_fault(Endpoint::Report);
        if s.lock().scans.remove(id).is_some() {
            tracing::info!(scan_id = %id, "lost the scan (injected)");
        }
        return StatusCode::NOT_FOUND.into_response();
    }
    let fault_type = chosen.unwrap_or(mime::VULN_REPORT_1_1);
    if let Some(resp) = apply_fault(s, Endpoint::Report, StatusCode::OK, fault_type).await {
        return resp;
    }
    if !s.authorized(headers) {
        return s.unauthorized();
    }
    let mut inner = s.lock();
    let pending_polls = inner.pending_polls;
    let refresh_after = inner.refresh_after_secs;
    let Some(scan) = inner.scans.get_mut(id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(chosen) = chosen else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            &format!(
                "cannot produce any of the accepted MIME types; produces {}",
                produces.join(", ")
            ),
        );
    };
    let chosen_canonical = canonical_or_raw(chosen);
    if let Some(enabled) = &scan.enabled
        && !enabled.iter().any(|m| m.as_str() == chosen_canonical)
    {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            &format!("the scan request did not enable {chosen}"),
        );
    }
    if chosen == mime::SBOM_REPORT_1_0 {
        match query.get("sbom_media_type").map(String::as_str) {
            Some(mime::SBOM_CYCLONEDX_JSON) => {}
            Some(mime::SBOM_SPDX_JSON) => {
                return error(
                    StatusCode::NOT_IMPLEMENTED,
                    "this adapter produces CycloneDX SBOMs only",
                );
            }
            Some(_) | None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "an SBOM report needs the query parameter sbom_media_type=application/vnd.cyclonedx+json",
                );
            }
        }
    }
    if scan.polls < pending_polls {
        scan.polls += 1;
        inner.stats.reports_not_ready += 1;
        drop(inner);
        let mut resp = StatusCode::FOUND.into_response();
        resp.headers_mut()
            .insert("Refresh-After", HeaderValue::from(refresh_after));
        return resp;
    }
    let body = render_report(chosen, &scan.digest, &scan.artifact, scan.accepted_at);
    let digest = scan.digest.as_str().to_owned();
    *inner
        .stats
        .reports_served
        .entry(digest)
        .or_default()
        .entry(chosen_canonical)
        .or_default() += 1;
    drop(inner);
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(chosen));
    resp
}

fn peek_fault(s: &Shared, endpoint: Endpoint) -> Option<FaultKind> {
    s.lock()
        .faults
        .iter()
        .find(|f| f.endpoint == endpoint)
        .map(|f| f.kind)
}

/// Applies the next fault of `endpoint`, if any: the response to send instead, or `None` to
/// answer normally (after a hang).
async fn apply_fault(
    s: &Shared,
    endpoint: Endpoint,
    success: StatusCode,
    content_type: &'static str,
) -> Option<Response> {
    let (kind, hang_for, oversize) = s.take_fault(endpoint)?;
    tracing::info!(endpoint = endpoint.as_str(), fault = ?kind, "injecting a fault");
    match kind {
        FaultKind::ServerError { status } => Some(error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "injected server error",
        )),
        FaultKind::Hang => {
            tokio::time::sleep(hang_for).await;
            None
        }
        FaultKind::MalformedJson => {
            let mut resp = (success, "{\"vulnerabilities\": [{\"id\": ").into_response();
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            Some(resp)
        }
        FaultKind::Oversized => {
            let mut resp = (success, oversized_body(oversize)).into_response();
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            Some(resp)
        }
        // Handled by the report endpoint; elsewhere rejected by validation.
        FaultKind::LoseScan => Some(StatusCode::NOT_FOUND.into_response()),
        FaultKind::EchoCredentials { status } => Some(error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            &echo_message(s.lock().last_scan_request.as_ref()),
        )),
    }
}

/// What a careless adapter says when a pull fails: everything it was given.
fn echo_message(request: Option<&wire::ScanRequest>) -> String {
    let Some(request) = request else {
        return "pull failed (no scan request seen)".into();
    };
    let authorization = request
        .registry
        .authorization
        .as_ref()
        .map(|a| a.expose().to_owned())
        .unwrap_or_default();
    let decoded = authorization
        .strip_prefix("Basic ")
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|d| String::from_utf8(d).ok())
        .unwrap_or_default();
    let (user, password) = decoded.split_once(':').unwrap_or(("", ""));
    format!(
        "failed to pull {}/{}@{}: the registry refused Authorization: {authorization} (user {user}, password {password})",
        request.registry.url, request.artifact.repository, request.artifact.digest
    )
}

/// `{"padding": <spaces> "x"}` of exactly `len` bytes (at least 16), streamed in chunks.
fn oversized_body(len: u64) -> Body {
    const CHUNK: usize = 64 * 1024;
    static SPACES: [u8; CHUNK] = [b' '; CHUNK];
    let head: &'static [u8] = b"{\"padding\": ";
    let tail: &'static [u8] = b"\"x\"}";
    let fixed = (head.len() + tail.len()) as u64;
    let mut remaining = len.saturating_sub(fixed);
    let head = std::iter::once(Bytes::from_static(head));
    let middle = std::iter::from_fn(move || {
        if remaining == 0 {
            return None;
        }
        let n = remaining.min(CHUNK as u64) as usize;
        remaining -= n as u64;
        Some(Bytes::from_static(&SPACES[..n]))
    });
    let tail = std::iter::once(Bytes::from_static(tail));
    let stream = futures::stream::iter(
        head.chain(middle)
            .chain(tail)
            .map(Ok::<_, std::convert::Infallible>),
    );
    Body::from_stream(stream)
}

async fn dev_stats(State(s): State<Arc<Shared>>) -> Response {
    let stats = s.lock().stats.clone();
    axum::Json(stats).into_response()
}

/// A fault as JSON: a rule object or its command-line string.
#[derive(Deserialize)]
#[serde(untagged)]
enum FaultInput {
    Text(String),
    Rule(FaultRule),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FaultsInput {
    Many(Vec<FaultInput>),
    One(FaultInput),
}

async fn dev_add_faults(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let input: FaultsInput = match serde_json::from_slice(&body) {
        Ok(i) => i,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid faults: {e}")),
    };
    let inputs = match input {
        FaultsInput::Many(v) => v,
        FaultsInput::One(f) => vec![f],
    };
    let mut rules = Vec::new();
    for input in inputs {
        let rule = match input {
            FaultInput::Text(t) => t.parse::<FaultRule>(),
            FaultInput::Rule(r) => r.validate().map(|()| r),
        };
        match rule {
            Ok(r) => rules.push(r),
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    }
    s.lock().faults.extend(rules);
    let faults = s.lock().faults.clone();
    axum::Json(faults).into_response()
}

async fn dev_clear_faults(State(s): State<Arc<Shared>>) -> Response {
    s.lock().faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

/// Runtime knobs for `POST /dev/config`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigInput {
    pending_polls: Option<u32>,
    refresh_after_secs: Option<u64>,
    hang_for_secs: Option<u64>,
    oversize_bytes: Option<u64>,
}

async fn dev_config(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let input: ConfigInput = match serde_json::from_slice(&body) {
        Ok(i) => i,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid config: {e}")),
    };
    let mut inner = s.lock();
    if let Some(v) = input.pending_polls {
        inner.pending_polls = v;
    }
    if let Some(v) = input.refresh_after_secs {
        inner.refresh_after_secs = v;
    }
    if let Some(v) = input.hang_for_secs {
        inner.hang_for = Duration::from_secs(v);
    }
    if let Some(v) = input.oversize_bytes {
        inner.oversize_bytes = v;
    }
    axum::Json(json!({
        "pending_polls": inner.pending_polls,
        "refresh_after_secs": inner.refresh_after_secs,
        "hang_for_secs": inner.hang_for.as_secs(),
        "oversize_bytes": inner.oversize_bytes,
    }))
    .into_response()
}

async fn dev_reset(State(s): State<Arc<Shared>>) -> Response {
    let mut inner = s.lock();
    inner.stats = DevStats::default();
    inner.faults.clear();
    inner.scans.clear();
    inner.scan_order.clear();
    inner.last_scan_request = None;
    StatusCode::NO_CONTENT.into_response()
}

fn json_response(status: StatusCode, content_type: &'static str, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        mime::ERROR_1_0,
        &json!(wire::ErrorResponse::new(message)),
    )
}

/// An `Accept` entry: a wildcard (`*/*`, `application/*`) or one media type.
#[derive(Debug, PartialEq, Eq)]
enum Accepted {
    Any,
    Exact(MimeType),
}

impl Accepted {
    fn matches(&self, m: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(a) => canonical_or_raw(m) == a.as_str(),
        }
    }
}

/// The `Accept` header's entries in the order given, canonical and without `q`.
fn accept_list(headers: &HeaderMap) -> Vec<Accepted> {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let essence = item.split(';').next().unwrap_or("").trim();
            if essence.ends_with("/*") {
                return Some(Accepted::Any);
            }
            let m = MimeType::parse(item.trim()).ok()?;
            let kept: Vec<&str> = m
                .as_str()
                .split("; ")
                .filter(|p| !p.starts_with("q="))
                .collect();
            MimeType::parse(&kept.join("; ")).ok().map(Accepted::Exact)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_lists() {
        let mut h = HeaderMap::new();
        h.insert(
            ACCEPT,
            HeaderValue::from_static(
                "application/vnd.scanner.adapter.metadata+json; version=1.0; q=0.5, */*;q=0.1",
            ),
        );
        let list = accept_list(&h);
        assert_eq!(
            list,
            [
                Accepted::Exact(MimeType::parse(mime::METADATA_1_0).unwrap()),
                Accepted::Any
            ]
        );
    }
}
