//! HTTP client of one scanner adapter: metadata, scan submission and report polling.
//!
//! The client follows the specification's content negotiation exactly (see `docs/scanner.md`):
//! it never follows redirects (a 302 from the report endpoint means "not ready"), caps every
//! response body while streaming it, and turns each answer into a typed outcome or a classified
//! [`ScannerError`]. TLS uses rustls with the `ring` provider, as kube does, so the process
//! never has two crypto providers.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::value::RawValue;

use crate::api::{ScannerInfo, SeveritySummary};
use crate::identity::{Digest, MimeType};

use super::auth::{AdapterCredentials, RegistryAuthorization};
use super::error::{Operation, ScannerError};
use super::summary;
use super::wire::{self, mime};

use super::metadata::*;
use super::redact::*;
use super::tls::*;

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// Wait before polling again when a 302 has no usable `Refresh-After`.
pub const DEFAULT_REFRESH_AFTER: Duration = Duration::from_secs(5);
/// Bounds of `Refresh-After` and `Retry-After`: poll at most once a second, at least every 10
/// minutes, whatever the adapter says.
pub const MIN_REFRESH_AFTER: Duration = Duration::from_secs(1);
pub const MAX_REFRESH_AFTER: Duration = Duration::from_secs(600);
/// Error bodies are read only this far: enough for a message.
const ERROR_BODY_LIMIT: u64 = 16 * 1024;
const MAX_SCAN_ID_LEN: usize = 1024;

/// Timeouts and limits of an [`AdapterClient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// One whole request, body included (a Scanner's `spec.requestTimeout`).
    pub request_timeout: Duration,
    /// Largest response body accepted; enforced while streaming.
    pub max_response_bytes: u64,
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            user_agent: concat!("scanreport-operator/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// One scan to submit: one artifact, one report MIME type.
#[derive(Clone, Debug)]
pub struct ScanSubmission {
    /// `registry.url` as the adapter should reach the registry.
    pub registry_url: String,
    pub registry_authorization: Option<RegistryAuthorization>,
    pub repository: String,
    pub digest: Digest,
    pub tag: Option<String>,
    /// Manifest media type of the artifact, e.g. [`mime::OCI_IMAGE_MANIFEST`].
    pub artifact_mime_type: String,
    /// The report wanted from this scan.
    pub report_mime_type: MimeType,
}

/// A scan the adapter accepted: everything needed to poll for its report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanHandle {
    /// The adapter's scan request id.
    pub id: String,
    /// The report wanted (canonical).
    pub report_mime_type: MimeType,
    /// The `Accept` value: the report MIME type as the adapter spells it.
    pub accept: String,
    /// For SBOM reports: the `sbom_media_type` query parameter.
    pub sbom_media_type: Option<String>,
}

/// A report the adapter delivered.
#[derive(Clone, Debug)]
pub struct Report {
    pub mime_type: MimeType,
    /// The report as the adapter sent it, validated JSON text kept as it is (a raw report that
    /// is not JSON is a JSON string): never built into a tree, so it costs its own size once.
    pub body: Box<RawValue>,
    pub size_bytes: usize,
    /// Severity counts, for vulnerability reports only.
    pub summary: Option<SeveritySummary>,
    /// The vulnerabilities in compact form, for vulnerability reports only.
    pub findings: Option<Vec<summary::Finding>>,
    /// The report's `generated_at`, when present and RFC 3339.
    pub generated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The report's `scanner`, when present.
    pub scanner: Option<ScannerInfo>,
}

impl PartialEq for Report {
    fn eq(&self, other: &Self) -> bool {
        self.mime_type == other.mime_type
            && self.body.get() == other.body.get()
            && self.size_bytes == other.size_bytes
            && self.summary == other.summary
            && self.findings == other.findings
            && self.generated_at == other.generated_at
            && self.scanner == other.scanner
    }
}

/// The answer to a report poll.
#[derive(Clone, Debug, PartialEq)]
pub enum ReportPoll {
    Ready(Box<Report>),
    /// HTTP 302: poll again after `retry_after` (`Refresh-After`, clamped).
    NotReady {
        retry_after: Duration,
    },
    /// HTTP 404: the adapter does not know the scan id (it restarted or expired the scan);
    /// submit the scan again.
    ScanNotFound,
}

/// A client of one scanner adapter. Cheap to clone.
#[derive(Clone)]
pub struct AdapterClient {
    http: reqwest::Client,
    /// The base URL without a trailing slash.
    base: String,
    credentials: AdapterCredentials,
    options: ClientOptions,
}

impl fmt::Debug for AdapterClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdapterClient")
            .field("base", &self.base)
            .field("auth", &self.credentials.kind())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl AdapterClient {
    /// A client of the adapter at `base_url` (the client appends `/api/v1/...`), trusting the
    /// public web PKI roots plus the PEM certificates of `ca_bundle`.
    pub fn new(
        base_url: &str,
        credentials: AdapterCredentials,
        ca_bundle: Option<&str>,
        options: ClientOptions,
    ) -> Result<Self, ScannerError> {
        let base = normalise_base_url(base_url)?;
        let tls = tls_config(ca_bundle)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            // A 302 from the report endpoint means "not ready"; no answer is ever followed.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(options.user_agent.clone())
            .build()
            .map_err(|e| ScannerError::ClientSetup {
                url: base.clone(),
                detail: error_chain(&e.without_url()),
            })?;
        Ok(Self {
            http,
            base,
            credentials,
            options,
        })
    }

    /// The adapter's base URL, normalised; the key of the [`MetadataCache`].
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// `GET /api/v1/metadata`, accepting metadata 1.1 and 1.0.
    pub async fn metadata(&self) -> Result<AdapterMetadata, ScannerError> {
        let op = Operation::Metadata;
        let url = self.url(&["metadata"])?;
        let accept = format!("{}, {}", mime::METADATA_1_1, mime::METADATA_1_0);
        let resp = self
            .send(op, self.http.get(url).header(ACCEPT, accept))
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(self.failure(op, resp, &[]).await);
        }
        let content_type = expect_content_type(
            op,
            resp.headers(),
            &[mime::METADATA_1_1, mime::METADATA_1_0],
        )?;
        let body = self.read_body(op, resp).await?;
        let meta: wire::ScannerAdapterMetadata =
            serde_json::from_slice(&body).map_err(|e| ScannerError::MalformedResponse {
                operation: op,
                reason: format!("not adapter metadata: {e}"),
            })?;
        let meta = AdapterMetadata::from_wire(meta, content_type);
        tracing::debug!(
            adapter = %self.base,
            scanner = %meta.scanner.name,
            version = %meta.scanner.version,
            api_level = ?meta.api_level,
            "fetched adapter metadata"
        );
        Ok(meta)
    }

    /// `POST /api/v1/scan` for one (artifact, report MIME type). Checks first that the adapter
    /// offers the report and consumes the artifact, so an impossible scan never reaches it.
    pub async fn submit_scan(
        &self,
        metadata: &AdapterMetadata,
        scan: &ScanSubmission,
    ) -> Result<ScanHandle, ScannerError> {
        let op = Operation::SubmitScan;
        let (request, mut handle) = build_scan_request(metadata, scan)?;
        let body = serde_json::to_vec(&request).map_err(|e| ScannerError::ClientSetup {
            url: self.base.clone(),
            detail: format!("cannot serialise the scan request: {e}"),
        })?;
        let url = self.url(&["scan"])?;
        let req = self
            .http
            .post(url)
            .header(CONTENT_TYPE, metadata.scan_request_mime_type())
            .header(ACCEPT, mime::SCAN_RESPONSE_1_0)
            .body(body);
        let resp = self.send(op, req).await?;
        if resp.status() != StatusCode::ACCEPTED {
            let extra = scan
                .registry_authorization
                .as_ref()
                .map(registry_secrets)
                .unwrap_or_default();
            return Err(self.failure(op, resp, &extra).await);
        }
        expect_content_type(op, resp.headers(), &[mime::SCAN_RESPONSE_1_0])?;
        let body = self.read_body(op, resp).await?;
        let answer: wire::ScanResponse =
            serde_json::from_slice(&body).map_err(|e| ScannerError::MalformedResponse {
                operation: op,
                reason: format!("not a scan response: {e}"),
            })?;
        let id = answer.id.trim();
        if id.is_empty() || id.len() > MAX_SCAN_ID_LEN || id.chars().any(char::is_control) {
            return Err(ScannerError::MalformedResponse {
                operation: op,
                reason: "the scan response `id` is empty, too long or has control characters"
                    .into(),
            });
        }
        id.clone_into(&mut handle.id);
        tracing::info!(
            adapter = %self.base,
            digest = %scan.digest,
            report_mime_type = %scan.report_mime_type,
            scan_id = %handle.id,
            "scan accepted by the adapter"
        );
        Ok(handle)
    }

    /// `GET /api/v1/scan/{id}/report` with `Accept: <report MIME type>`.
    pub async fn fetch_report(&self, handle: &ScanHandle) -> Result<ReportPoll, ScannerError> {
        let op = Operation::FetchReport;
        let mut url = self.url(&["scan", &handle.id, "report"])?;
        if let Some(media_type) = &handle.sbom_media_type {
            url.query_pairs_mut()
                .append_pair("sbom_media_type", media_type);
        }
        let resp = self
            .send(op, self.http.get(url).header(ACCEPT, &handle.accept))
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::FOUND => {
                let retry_after = refresh_after(resp.headers().get("Refresh-After"));
                tracing::debug!(adapter = %self.base, scan_id = %handle.id, ?retry_after, "report not ready");
                return Ok(ReportPoll::NotReady { retry_after });
            }
            StatusCode::NOT_FOUND => {
                tracing::info!(adapter = %self.base, scan_id = %handle.id, "the adapter does not know the scan");
                return Ok(ReportPoll::ScanNotFound);
            }
            _ => return Err(self.failure(op, resp, &[]).await),
        }
        expect_content_type(op, resp.headers(), &[handle.report_mime_type.as_str()])?;
        let bytes = self.read_body(op, resp).await?;
        let size_bytes = bytes.len();
        let body = parse_report(&handle.report_mime_type, bytes).map_err(|reason| {
            ScannerError::MalformedResponse {
                operation: op,
                reason,
            }
        })?;
        let malformed = |e: summary::SummaryError| ScannerError::MalformedResponse {
            operation: op,
            reason: e.to_string(),
        };
        let (summary, findings) =
            match summary::summarize_findings(&handle.report_mime_type, body.get())
                .map_err(malformed)?
            {
                Some((summary, findings)) => (Some(summary), Some(findings)),
                None => (None, None),
            };
        // Only a report with a summary must have readable fields; others are optional extras.
        let fields = match summary::report_fields(body.get()) {
            Ok(fields) => fields.unwrap_or_default(),
            Err(e) if summary.is_some() => return Err(malformed(e)),
            Err(_) => summary::ReportFields::default(),
        };
        let generated_at = fields
            .generated_at
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        let scanner = fields
            .scanner
            .and_then(|raw| serde_json::from_str::<wire::Scanner>(raw.get()).ok())
            .map(|s| ScannerInfo {
                name: s.name,
                vendor: s.vendor,
                version: s.version,
            });
        tracing::info!(
            adapter = %self.base,
            scan_id = %handle.id,
            report_mime_type = %handle.report_mime_type,
            size_bytes,
            "report fetched"
        );
        Ok(ReportPoll::Ready(Box::new(Report {
            mime_type: handle.report_mime_type.clone(),
            body,
            size_bytes,
            summary,
            findings,
            generated_at,
            scanner,
        })))
    }

    fn url(&self, segments: &[&str]) -> Result<Url, ScannerError> {
        let invalid = |reason: String| ScannerError::InvalidUrl {
            url: self.base.clone(),
            reason,
        };
        let mut url = Url::parse(&self.base).map_err(|e| invalid(e.to_string()))?;
        url.path_segments_mut()
            .map_err(|()| invalid("cannot be a base URL".into()))?
            .pop_if_empty()
            .extend(["api", "v1"])
            .extend(segments);
        Ok(url)
    }

    async fn send(
        &self,
        op: Operation,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ScannerError> {
        let req = match self.credentials.header() {
            Some((name, value)) => req.header(name, value),
            None => req,
        };
        let started = Instant::now();
        let resp = req.send().await.map_err(|e| self.transport_error(op, e))?;
        tracing::debug!(
            adapter = %self.base,
            operation = %op,
            status = resp.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "adapter answered"
        );
        Ok(resp)
    }

    fn transport_error(&self, op: Operation, e: reqwest::Error) -> ScannerError {
        let e = e.without_url();
        if let Some(detail) = tls_failure(&e) {
            return ScannerError::Tls {
                url: self.base.clone(),
                detail,
            };
        }
        if e.is_timeout() {
            let timeout = if e.is_connect() {
                self.options.connect_timeout
            } else {
                self.options.request_timeout
            };
            return ScannerError::Timeout {
                operation: op,
                timeout,
            };
        }
        if e.is_connect() {
            return ScannerError::Connect {
                url: self.base.clone(),
                detail: error_chain(&e),
            };
        }
        if e.is_builder() {
            return ScannerError::ClientSetup {
                url: self.base.clone(),
                detail: error_chain(&e),
            };
        }
        ScannerError::Transport {
            operation: op,
            detail: error_chain(&e),
        }
    }

    /// Reads the body, failing as soon as it exceeds the limit.
    async fn read_body(
        &self,
        op: Operation,
        resp: reqwest::Response,
    ) -> Result<Vec<u8>, ScannerError> {
        let limit = self.options.max_response_bytes;
        read_capped(resp, limit).await.map_err(|e| match e {
            ReadError::TooLarge => ScannerError::ResponseTooLarge {
                operation: op,
                limit,
            },
            ReadError::Transport(e) => self.transport_error(op, e),
        })
    }

    /// Turns an unexpected status into an error, with the adapter's message when it sent one.
    async fn failure(
        &self,
        op: Operation,
        resp: reqwest::Response,
        extra_secrets: &[String],
    ) -> ScannerError {
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        // A body that cannot be read in full still leaves the status to go by.
        let body = read_capped(resp, ERROR_BODY_LIMIT)
            .await
            .unwrap_or_default();
        let mut secrets = self.credentials.secrets();
        secrets.extend_from_slice(extra_secrets);
        let message = error_message(&body, &secrets);
        // Not the message: it may echo registry credentials this client does not know (a
        // report fetch); the caller logs it scrubbed with the request's credentials.
        tracing::debug!(adapter = %self.base, operation = %op, status, "adapter refused");
        classify_status(&self.base, op, status, message, retry_after)
    }
}

/// Maps a status other than the success status of the operation to an error.
pub(crate) fn classify_status(
    url: &str,
    operation: Operation,
    status: u16,
    message: String,
    retry_after: Option<Duration>,
) -> ScannerError {
    match status {
        401 | 403 => ScannerError::Unauthorized {
            url: url.to_owned(),
            operation,
            status,
        },
        400 | 422 => ScannerError::InvalidRequest {
            operation,
            status,
            message,
        },
        429 => ScannerError::RateLimited {
            operation,
            retry_after,
        },
        501 => ScannerError::Unsupported { operation, message },
        408 | 500..=599 => ScannerError::Server {
            operation,
            status,
            message,
            retry_after,
        },
        _ => ScannerError::UnexpectedStatus {
            operation,
            status,
            message,
        },
    }
}

/// Parses `Refresh-After` (whole seconds) in full, clamped to
/// [`MIN_REFRESH_AFTER`]..=[`MAX_REFRESH_AFTER`]; [`DEFAULT_REFRESH_AFTER`] when absent or not
/// a number. Harbor parses it as an 8-bit integer; we do not, so 300 means 300.
pub fn refresh_after(value: Option<&HeaderValue>) -> Duration {
    let Some(value) = value else {
        return DEFAULT_REFRESH_AFTER;
    };
    match value.to_str().ok().and_then(parse_seconds) {
        Some(d) => d,
        None => {
            tracing::warn!("ignoring a Refresh-After that is not a number of seconds");
            DEFAULT_REFRESH_AFTER
        }
    }
}

/// `Retry-After` in seconds, clamped like `Refresh-After`. HTTP dates are ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_seconds)
}

/// A non-negative decimal integer of seconds, saturating when too large, then clamped.
fn parse_seconds(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = s.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).clamp(MIN_REFRESH_AFTER, MAX_REFRESH_AFTER))
}

/// Checks `Content-Type` against the expected MIME types, canonically. A `charset` parameter is
/// ignored: it does not change the type.
fn expect_content_type(
    operation: Operation,
    headers: &HeaderMap,
    expected: &[&str],
) -> Result<MimeType, ScannerError> {
    let received = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let canonical = MimeType::parse(received)
        .ok()
        .and_then(|m| MimeType::parse(&without_charset(&m)).ok());
    if let Some(got) = canonical
        && expected.iter().any(|e| is(&got, e))
    {
        return Ok(got);
    }
    Err(ScannerError::UnexpectedContentType {
        operation,
        expected: expected.join(" or "),
        received: received.chars().take(200).collect(),
    })
}

fn without_charset(m: &MimeType) -> String {
    m.as_str()
        .split("; ")
        .filter(|p| !p.starts_with("charset="))
        .collect::<Vec<_>>()
        .join("; ")
}

pub(super) fn is(m: &MimeType, expected: &str) -> bool {
    MimeType::parse(expected).is_ok_and(|e| &e == m)
}

pub(super) fn same_mime(spelling: &str, canonical: &MimeType) -> bool {
    MimeType::parse(spelling).is_ok_and(|m| &m == canonical)
}

pub(super) fn list_or_none<T: fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let items: Vec<String> = items.map(|i| i.to_string()).collect();
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// The report as JSON text: vulnerability and SBOM reports must be JSON objects; a raw report
/// may be any JSON or, failing that, UTF-8 text (kept as a JSON string). The text is validated
/// and kept, in the buffer it arrived in when its capacity fits: no tree is built.
fn parse_report(mime_type: &MimeType, bytes: Vec<u8>) -> Result<Box<RawValue>, String> {
    let raw = is(mime_type, mime::RAW_VULN_REPORT);
    let mut text = String::from_utf8(bytes).map_err(|_| {
        if raw {
            "the raw report is neither JSON nor UTF-8 text".to_owned()
        } else {
            "the report is not JSON: it is not UTF-8".to_owned()
        }
    })?;
    if raw && serde_json::from_str::<serde::de::IgnoredAny>(&text).is_err() {
        return serde_json::value::to_raw_value(&text).map_err(|e| e.to_string());
    }
    text.shrink_to_fit();
    let value = RawValue::from_string(text).map_err(|e| format!("the report is not JSON: {e}"))?;
    let known = [
        mime::HARBOR_VULN_REPORT_1_0,
        mime::VULN_REPORT_1_1,
        mime::SBOM_REPORT_1_0,
    ];
    if known.iter().any(|k| is(mime_type, k)) && !summary::is_object(value.get()) {
        return Err("the report is not a JSON object".into());
    }
    Ok(value)
}

enum ReadError {
    TooLarge,
    Transport(reqwest::Error),
}

async fn read_capped(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|len| len > limit) {
        return Err(ReadError::TooLarge);
    }
    // A declared length (within the limit) is allocated once, so the body is never copied
    // while growing and the report text can keep this very buffer.
    let initial = resp.content_length().unwrap_or(0).min(limit);
    let mut body = Vec::with_capacity(usize::try_from(initial).unwrap_or(0));
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Transport)? {
        if (body.len().saturating_add(chunk.len())) as u64 > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Checks the base URL: http(s), a host, no credentials, query or fragment.
pub(super) fn normalise_base_url(base_url: &str) -> Result<String, ScannerError> {
    let invalid = |reason: &str| ScannerError::InvalidUrl {
        url: crate::redact::scrub_url_userinfo(base_url),
        reason: reason.to_owned(),
    };
    let url = Url::parse(base_url.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "credentials in the URL are not allowed; use spec.auth",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a query or fragment is not allowed"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// An error and its sources, joined with `: `, repeated texts once.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn metadata(json: Value, content_type: &str) -> AdapterMetadata {
        AdapterMetadata::from_wire(
            serde_json::from_value(json).unwrap(),
            MimeType::parse(content_type).unwrap(),
        )
    }

    fn legacy() -> AdapterMetadata {
        metadata(
            serde_json::json!({
                "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.20"},
                "capabilities": [{
                    "consumes_mime_types": [mime::OCI_IMAGE_MANIFEST, mime::DOCKER_MANIFEST_V2],
                    "produces_mime_types": [mime::HARBOR_VULN_REPORT_1_0, "application/vnd.security.vulnerability.report;version=1.1"]
                }]
            }),
            mime::METADATA_1_0,
        )
    }

    fn modern() -> AdapterMetadata {
        metadata(
            serde_json::json!({
                "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.50"},
                "capabilities": [
                    {"type": "vulnerability",
                     "consumes_mime_types": [mime::OCI_IMAGE_MANIFEST],
                     "produces_mime_types": [mime::VULN_REPORT_1_1, mime::RAW_VULN_REPORT]},
                    {"type": "sbom",
                     "consumes_mime_types": [mime::OCI_IMAGE_MANIFEST],
                     "produces_mime_types": [mime::SBOM_REPORT_1_0],
                     "additional_attributes": {"sbom_media_types": ["application/x-unknown", mime::SBOM_CYCLONEDX_JSON, mime::SBOM_SPDX_JSON]}}
                ],
                "properties": {"harbor.scanner-adapter/scanner-type": "os-package-vulnerability"}
            }),
            mime::METADATA_1_1,
        )
    }

    fn submission(report: &str) -> ScanSubmission {
        ScanSubmission {
            registry_url: "https://core.harbor.domain".into(),
            registry_authorization: Some(RegistryAuthorization::basic("robot", "s3cret")),
            repository: "library/nginx".into(),
            digest: Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap(),
            tag: Some("1.25".into()),
            artifact_mime_type: mime::OCI_IMAGE_MANIFEST.into(),
            report_mime_type: MimeType::parse(report).unwrap(),
        }
    }

    #[test]
    fn api_level_detection() {
        assert_eq!(legacy().api_level, ApiLevel::V1_0);
        assert_eq!(legacy().scan_request_mime_type(), mime::SCAN_REQUEST_1_0);
        assert_eq!(modern().api_level, ApiLevel::V1_2);
        assert_eq!(modern().scan_request_mime_type(), mime::SCAN_REQUEST_1_1);
        // Metadata 1.1 alone marks a v1.2 adapter, even without capability types.
        let m = metadata(
            serde_json::json!({"scanner": {}, "capabilities": [{"consumes_mime_types": [], "produces_mime_types": []}]}),
            mime::METADATA_1_1,
        );
        assert_eq!(m.api_level, ApiLevel::V1_2);
    }

    #[test]
    fn legacy_scan_request_has_no_enabled_capabilities() {
        let (req, handle) =
            build_scan_request(&legacy(), &submission(mime::VULN_REPORT_1_1)).unwrap();
        assert!(req.enabled_capabilities.is_none());
        // The adapter's own spelling goes into Accept.
        assert_eq!(
            handle.accept,
            "application/vnd.security.vulnerability.report;version=1.1"
        );
        assert_eq!(handle.sbom_media_type, None);
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["registry"]["authorization"], "Basic cm9ib3Q6czNjcmV0");
        assert_eq!(json["artifact"]["tag"], "1.25");
    }

    #[test]
    fn modern_scan_request_enables_exactly_one_report() {
        let (req, handle) =
            build_scan_request(&modern(), &submission(mime::RAW_VULN_REPORT)).unwrap();
        let caps = req.enabled_capabilities.unwrap();
        assert_eq!(caps.len(), 1);
        assert_eq!(caps[0].capability_type, "vulnerability");
        assert_eq!(
            caps[0].produces_mime_types.as_deref(),
            Some(&[mime::RAW_VULN_REPORT.to_owned()][..])
        );
        assert!(caps[0].parameters.is_none());
        assert_eq!(handle.accept, mime::RAW_VULN_REPORT);

        let (req, handle) =
            build_scan_request(&modern(), &submission(mime::SBOM_REPORT_1_0)).unwrap();
        let caps = req.enabled_capabilities.unwrap();
        assert_eq!(caps[0].capability_type, "sbom");
        // The first format the adapter lists that the specification knows.
        assert_eq!(
            caps[0].parameters.as_ref().unwrap().sbom_media_types,
            [mime::SBOM_CYCLONEDX_JSON]
        );
        assert_eq!(
            handle.sbom_media_type.as_deref(),
            Some(mime::SBOM_CYCLONEDX_JSON)
        );
    }

    #[test]
    fn impossible_scans_never_reach_the_adapter() {
        let err = build_scan_request(&legacy(), &submission(mime::SBOM_REPORT_1_0)).unwrap_err();
        assert!(
            matches!(err, ScannerError::ReportMimeTypeNotOffered { .. }),
            "{err}"
        );
        assert!(!err.is_transient());
        assert!(
            err.to_string().contains(mime::HARBOR_VULN_REPORT_1_0),
            "{err}"
        );

        let mut scan = submission(mime::VULN_REPORT_1_1);
        scan.artifact_mime_type = mime::DOCKER_MANIFEST_V2.into();
        let err = build_scan_request(&modern(), &scan).unwrap_err();
        assert!(
            matches!(err, ScannerError::ArtifactMimeTypeNotConsumed { .. }),
            "{err}"
        );
    }

    #[test]
    fn refresh_after_is_parsed_in_full_and_clamped() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(refresh_after(Some(&h("300"))), Duration::from_secs(300));
        assert_eq!(refresh_after(Some(&h(" 44 "))), Duration::from_secs(44));
        assert_eq!(refresh_after(Some(&h("0"))), MIN_REFRESH_AFTER);
        assert_eq!(refresh_after(Some(&h("601"))), MAX_REFRESH_AFTER);
        assert_eq!(
            refresh_after(Some(&h("99999999999999999999999999"))),
            MAX_REFRESH_AFTER
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "abc",
            "+3",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(
                refresh_after(Some(&h(bad))),
                DEFAULT_REFRESH_AFTER,
                "{bad:?}"
            );
        }
        assert_eq!(refresh_after(None), DEFAULT_REFRESH_AFTER);
    }

    #[test]
    fn status_classification() {
        let cases = [
            (400, "InvalidRequest", false),
            (401, "Unauthorized", false),
            (403, "Unauthorized", false),
            (404, "UnexpectedStatus", false),
            (405, "UnexpectedStatus", false),
            (301, "UnexpectedStatus", false),
            (408, "AdapterError", true),
            (422, "InvalidRequest", false),
            (429, "RateLimited", true),
            (500, "AdapterError", true),
            (501, "Unsupported", false),
            (502, "AdapterError", true),
            (503, "AdapterError", true),
            (504, "AdapterError", true),
        ];
        for (status, reason, transient) in cases {
            let e = classify_status("http://a", Operation::SubmitScan, status, "m".into(), None);
            assert_eq!(
                (e.reason(), e.is_transient()),
                (reason, transient),
                "{status}"
            );
        }
    }

    #[test]
    fn content_types_compare_canonically() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(
                "Application/Vnd.Security.Vulnerability.Report; Version=\"1.1\"; charset=utf-8",
            ),
        );
        let got = expect_content_type(Operation::FetchReport, &headers, &[mime::VULN_REPORT_1_1])
            .unwrap();
        assert_eq!(got.as_str(), mime::VULN_REPORT_1_1);
        let err = expect_content_type(
            Operation::FetchReport,
            &headers,
            &[mime::HARBOR_VULN_REPORT_1_0],
        )
        .unwrap_err();
        assert!(matches!(err, ScannerError::UnexpectedContentType { .. }));
        assert!(!err.is_transient());
        let err = expect_content_type(
            Operation::Metadata,
            &HeaderMap::new(),
            &[mime::METADATA_1_0],
        )
        .unwrap_err();
        assert!(err.to_string().contains("Content-Type \"\""), "{err}");
    }

    #[test]
    fn raw_reports_may_be_text() {
        let raw = MimeType::parse(mime::RAW_VULN_REPORT).unwrap();
        assert_eq!(
            parse_report(&raw, b"{\"a\":1}".to_vec()).unwrap().get(),
            "{\"a\":1}",
            "JSON is kept as it came"
        );
        assert_eq!(
            parse_report(&raw, b"plain text".to_vec()).unwrap().get(),
            "\"plain text\""
        );
        assert!(parse_report(&raw, vec![0xff, 0xfe]).is_err());
        let vuln = MimeType::parse(mime::VULN_REPORT_1_1).unwrap();
        assert!(parse_report(&vuln, b"[1]".to_vec()).is_err());
        assert!(parse_report(&vuln, b"{".to_vec()).is_err());
    }

    #[test]
    fn error_messages_are_scrubbed_and_short() {
        let auth = RegistryAuthorization::basic("robot", "pa55word");
        let secrets = registry_secrets(&auth);
        let body = br#"{"error":{"message":"cannot pull with Basic cm9ib3Q6cGE1NXdvcmQ= (robot:pa55word) pa55word\n"}}"#;
        let msg = error_message(body, &secrets);
        assert!(
            !msg.contains("pa55word") && !msg.contains("cm9ib3Q6cGE1NXdvcmQ="),
            "{msg}"
        );
        assert_eq!(msg, "cannot pull with Basic *** (***) ***");
        // The account name too, and a password with two spaces in a row, echoed as sent.
        let auth = RegistryAuthorization::basic("robot-a", "pa  55");
        let body = br#"{"error":{"message":"user robot-a password pa  55 refused"}}"#;
        let msg = error_message(body, &registry_secrets(&auth));
        assert_eq!(msg, "user *** password *** refused");
        let long = "x".repeat(2000);
        assert_eq!(
            error_message(long.as_bytes(), &[]).chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
        assert_eq!(
            error_message(b"<html>\n<b>Bad</b></html>", &[]),
            "<html> <b>Bad</b></html>"
        );
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            normalise_base_url("http://adapter:8080/").unwrap(),
            "http://adapter:8080"
        );
        assert_eq!(
            normalise_base_url("https://a.example/prefix/").unwrap(),
            "https://a.example/prefix"
        );
        for bad in [
            "ftp://a",
            "adapter:8080",
            "http://a?x=1",
            "https://u:p@a.example",
        ] {
            let err = normalise_base_url(bad).unwrap_err();
            assert!(matches!(err, ScannerError::InvalidUrl { .. }), "{bad}");
            assert!(!err.to_string().contains("u:p"), "{err}");
        }
        assert_eq!(
            crate::redact::scrub_url_userinfo("https://user:pw@h/x@y"),
            "https://***@h/x@y"
        );
        assert_eq!(crate::redact::scrub_url_userinfo("not a url"), "not a url");
    }

    #[test]
    fn url_building_encodes_the_scan_id() {
        let c = AdapterClient::new(
            "http://a:1/p/",
            AdapterCredentials::None,
            None,
            ClientOptions::default(),
        )
        .unwrap();
        assert_eq!(
            c.url(&["metadata"]).unwrap().as_str(),
            "http://a:1/p/api/v1/metadata"
        );
        assert_eq!(
            c.url(&["scan", "a/b c?", "report"]).unwrap().as_str(),
            "http://a:1/p/api/v1/scan/a%2Fb%20c%3F/report"
        );
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn ca_bundles() {
        assert!(matches!(
            tls_config(Some("not pem")),
            Err(ScannerError::InvalidCaBundle { .. })
        ));
        assert!(matches!(
            tls_config(Some(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            )),
            Err(ScannerError::InvalidCaBundle { .. })
        ));
        assert!(tls_config(None).is_ok());
        assert!(tls_config(Some("  ")).is_ok());
    }
}
