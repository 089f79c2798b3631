//! A development scanner adapter: a small server that speaks the Harbor Pluggable Scanner
//! Adapter API v1.2 (and, on request, v1.1) with made-up but deterministic reports.
//!
//! It exists for tests and demos: tests start it in-process with [`DevScanner::start`] and read
//! its counters; `scanreport-operator dev-scanner --listen 127.0.0.1:8080` serves it for a
//! demo. The operator never uses it, and the client has no special case for it.
//!
//! * Reports derive from the artifact digest: the same digest gives the same vulnerabilities in
//!   every vulnerability format, and the same SBOM (only `generated_at` is the scan time).
//! * Latency: each scan answers `302` with `Refresh-After` for the first `pending_polls` polls.
//! * Faults can be injected per endpoint for the next K requests, in-process
//!   ([`DevScannerHandle::inject_fault`]), over HTTP (`POST /dev/faults`) or with `--fault`.
//! * Counters: `GET /dev/stats` or [`DevScannerHandle::stats`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
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
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::api::SeveritySummary;
use crate::identity::{Digest, MimeType};
use crate::scanner::auth::DEFAULT_API_KEY_HEADER;
use crate::scanner::wire::{self, mime};

pub const SCANNER_NAME: &str = "scanreport-dev-scanner";
pub const SCANNER_VENDOR: &str = "scanreport.io";
/// Scans kept in memory; the oldest are forgotten beyond this (their ids then answer 404).
const MAX_SCANS: usize = 10_000;

/// How the adapter expects clients to authenticate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DevAuth {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
    Bearer {
        token: String,
    },
    ApiKey {
        header: String,
        key: String,
    },
}

/// A PEM certificate chain and private key to serve HTTPS with.
#[derive(Clone, Debug)]
pub struct DevTls {
    pub cert_chain_pem: String,
    pub key_pem: String,
}

/// Which specification version the adapter implements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DevSpec {
    /// v1.1: metadata 1.0 without capability types, scan request 1.0, vulnerability reports.
    #[value(name = "1.1")]
    V1_1,
    /// v1.2: metadata 1.1, typed capabilities including SBOM, scan request 1.0 and 1.1.
    #[default]
    #[value(name = "1.2")]
    V1_2,
}

/// An API endpoint of the adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Metadata,
    Scan,
    Report,
}

impl Endpoint {
    fn as_str(self) -> &'static str {
        match self {
            Self::Metadata => "metadata",
            Self::Scan => "scan",
            Self::Report => "report",
        }
    }
}

/// A failure to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer this 5xx status with an error body.
    ServerError { status: u16 },
    /// Wait for the configured hang time, then answer normally.
    Hang,
    /// Answer the success status and Content-Type with a truncated JSON body.
    MalformedJson,
    /// Answer the success status and Content-Type with a body of the configured oversize
    /// length (valid JSON, streamed without Content-Length).
    Oversized,
    /// Report endpoint only: forget the scan and answer 404, as after an adapter restart.
    LoseScan,
}

/// A fault for the next `count` requests of an endpoint (every request when `count` is absent).
///
/// Command-line form: `ENDPOINT:FAULT[:COUNT]`, with ENDPOINT `metadata`, `scan` or `report` and
/// FAULT a status 500..=599, `hang`, `malformed`, `oversized` or `lost`; e.g. `report:503:2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    pub endpoint: Endpoint,
    #[serde(flatten)]
    pub kind: FaultKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

impl FaultRule {
    pub fn new(endpoint: Endpoint, kind: FaultKind, count: Option<u32>) -> Self {
        Self {
            endpoint,
            kind,
            count,
        }
    }

    fn validate(&self) -> Result<(), DevScannerError> {
        let invalid = |reason: &str| DevScannerError::InvalidFault {
            reason: reason.to_owned(),
        };
        match self.kind {
            FaultKind::ServerError { status } if !(500..=599).contains(&status) => {
                return Err(invalid("a server error status must be 500..=599"));
            }
            FaultKind::LoseScan if self.endpoint != Endpoint::Report => {
                return Err(invalid("`lost` applies to the report endpoint only"));
            }
            _ => {}
        }
        if self.count == Some(0) {
            return Err(invalid("the count must be at least 1"));
        }
        Ok(())
    }
}

impl FromStr for FaultRule {
    type Err = DevScannerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| DevScannerError::InvalidFault { reason };
        let mut parts = s.trim().split(':');
        let endpoint = match parts.next().unwrap_or_default() {
            "metadata" => Endpoint::Metadata,
            "scan" => Endpoint::Scan,
            "report" => Endpoint::Report,
            other => {
                return Err(invalid(format!(
                    "unknown endpoint {other:?} in {s:?}; expected metadata, scan or report"
                )));
            }
        };
        let kind = match parts.next().unwrap_or_default() {
            "hang" => FaultKind::Hang,
            "malformed" => FaultKind::MalformedJson,
            "oversized" => FaultKind::Oversized,
            "lost" => FaultKind::LoseScan,
            other => match other.parse::<u16>() {
                Ok(status) => FaultKind::ServerError { status },
                Err(_) => {
                    return Err(invalid(format!(
                        "unknown fault {other:?} in {s:?}; expected a 5xx status, hang, malformed, oversized or lost"
                    )));
                }
            },
        };
        let count = match parts.next() {
            None => None,
            Some(n) => Some(
                n.parse::<u32>()
                    .map_err(|_| invalid(format!("invalid count {n:?} in {s:?}")))?,
            ),
        };
        if parts.next().is_some() {
            return Err(invalid(format!(
                "too many parts in {s:?}; expected ENDPOINT:FAULT[:COUNT]"
            )));
        }
        let rule = Self::new(endpoint, kind, count);
        rule.validate()?;
        Ok(rule)
    }
}

/// Configuration of a development adapter.
#[derive(Clone, Debug)]
pub struct DevScannerConfig {
    pub listen: SocketAddr,
    pub spec: DevSpec,
    /// Polls answered 302 before the report is ready, per scan.
    pub pending_polls: u32,
    /// `Refresh-After` of those 302 answers, in seconds.
    pub refresh_after_secs: u64,
    pub auth: DevAuth,
    pub tls: Option<DevTls>,
    /// How long a `hang` fault waits.
    pub hang_for: Duration,
    /// Body length of an `oversized` fault.
    pub oversize_bytes: u64,
    pub faults: Vec<FaultRule>,
}

impl Default for DevScannerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            spec: DevSpec::V1_2,
            pending_polls: 1,
            refresh_after_secs: 1,
            auth: DevAuth::None,
            tls: None,
            hang_for: Duration::from_secs(30),
            oversize_bytes: 65 * 1024 * 1024,
            faults: Vec::new(),
        }
    }
}

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

#[derive(Debug, thiserror::Error)]
pub enum DevScannerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TLS certificate or key: {reason}")]
    Tls { reason: String },
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid fault: {reason}")]
    InvalidFault { reason: String },
    #[error("invalid option: {reason}")]
    InvalidOption { reason: String },
    #[error("the development scanner adapter failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Starts development adapters.
pub struct DevScanner;

impl DevScanner {
    /// Binds, then serves in a background task until [`DevScannerHandle::shutdown`].
    pub async fn start(config: DevScannerConfig) -> Result<DevScannerHandle, DevScannerError> {
        for rule in &config.faults {
            rule.validate()?;
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| DevScannerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DevScannerError::Bind {
                addr: config.listen,
                source,
            })?;
        let tls = config.tls.as_ref().map(server_tls_config).transpose()?;
        let base_url = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
        let shared = Arc::new(Shared::new(&config, addr));
        let app = router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let signal = async move {
            let _ = stopped.await;
        };
        let task = match tls {
            Some(tls) => {
                let listener = TlsListener::new(listener, tls, addr);
                tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(signal)
                        .await
                })
            }
            None => tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(signal)
                    .await
            }),
        };
        tracing::info!(url = %base_url, spec = ?config.spec, "development scanner adapter listening");
        Ok(DevScannerHandle {
            base_url,
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// A running development adapter. Dropping it stops the server abruptly; prefer
/// [`DevScannerHandle::shutdown`].
pub struct DevScannerHandle {
    base_url: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl DevScannerHandle {
    /// `http://127.0.0.1:PORT` or `https://...`: the URL a Scanner's `spec.url` would hold.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> DevStats {
        self.shared.lock().stats.clone()
    }

    pub fn reset_stats(&self) {
        self.shared.lock().stats = DevStats::default();
    }

    /// Applies to scans already in flight too.
    pub fn set_pending_polls(&self, polls: u32) {
        self.shared.lock().pending_polls = polls;
    }

    pub fn set_refresh_after(&self, secs: u64) {
        self.shared.lock().refresh_after_secs = secs;
    }

    pub fn set_hang_for(&self, hang_for: Duration) {
        self.shared.lock().hang_for = hang_for;
    }

    pub fn set_oversize_bytes(&self, bytes: u64) {
        self.shared.lock().oversize_bytes = bytes;
    }

    pub fn inject_fault(&self, rule: FaultRule) -> Result<(), DevScannerError> {
        rule.validate()?;
        self.shared.lock().faults.push(rule);
        Ok(())
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The last accepted scan request, registry authorization included (in-process only).
    pub fn last_scan_request(&self) -> Option<wire::ScanRequest> {
        self.shared.lock().last_scan_request.clone()
    }

    /// Stops accepting, lets requests in flight finish for up to two seconds, then aborts.
    pub async fn shutdown(mut self) {
        self.stop_now().await;
    }

    async fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(2), &mut task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "development scanner adapter failed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "development scanner adapter task failed"),
                Err(_) => task.abort(),
            }
        }
    }

    /// Serves until the task ends (it only ends after [`DevScannerHandle::shutdown`] or on an
    /// I/O failure), for the command line.
    async fn wait(&mut self) -> Result<(), DevScannerError> {
        match self.task.as_mut() {
            Some(task) => match task.await {
                Ok(result) => result.map_err(DevScannerError::Serve),
                Err(e) => Err(DevScannerError::Serve(std::io::Error::other(e))),
            },
            None => Ok(()),
        }
    }
}

impl Drop for DevScannerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `scanreport-operator dev-scanner`: serves a development adapter until SIGINT or SIGTERM.
#[derive(clap::Args, Debug, Clone)]
pub struct DevScannerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Specification version to implement.
    #[arg(long, value_enum, default_value = "1.2")]
    pub spec: DevSpec,
    /// Report polls answered 302 (not ready) per scan before the report is served.
    #[arg(long, default_value_t = 1)]
    pub pending_polls: u32,
    /// `Refresh-After` of the 302 answers, in seconds.
    #[arg(long, default_value_t = 1)]
    pub refresh_after: u64,
    /// Inject a fault: `ENDPOINT:FAULT[:COUNT]`, ENDPOINT metadata|scan|report, FAULT a status
    /// 500..=599, hang, malformed, oversized or lost (report only); COUNT requests, or every
    /// request when omitted. Repeatable. Example: `--fault report:503:2`.
    #[arg(long = "fault", value_name = "ENDPOINT:FAULT[:COUNT]")]
    pub faults: Vec<FaultRule>,
    /// Seconds a `hang` fault waits before answering.
    #[arg(long, default_value_t = 30)]
    pub hang_for: u64,
    /// Body length in bytes of an `oversized` fault.
    #[arg(long, default_value_t = 65 * 1024 * 1024)]
    pub oversize_bytes: u64,
    /// Require HTTP Basic authentication, as `USERNAME:PASSWORD`.
    #[arg(
        long,
        env = "DEV_SCANNER_BASIC_AUTH",
        hide_env_values = true,
        group = "auth"
    )]
    pub basic_auth: Option<String>,
    /// Require `Authorization: Bearer TOKEN`.
    #[arg(
        long,
        env = "DEV_SCANNER_BEARER_TOKEN",
        hide_env_values = true,
        group = "auth"
    )]
    pub bearer_token: Option<String>,
    /// Require this API key in the `--api-key-header` header.
    #[arg(
        long,
        env = "DEV_SCANNER_API_KEY",
        hide_env_values = true,
        group = "auth"
    )]
    pub api_key: Option<String>,
    #[arg(long, default_value = DEFAULT_API_KEY_HEADER)]
    pub api_key_header: String,
    /// Serve HTTPS with this PEM certificate chain (needs `--tls-key`).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl DevScannerArgs {
    pub fn into_config(self) -> Result<DevScannerConfig, DevScannerError> {
        let auth = if let Some(pair) = self.basic_auth {
            let (username, password) =
                pair.split_once(':')
                    .ok_or_else(|| DevScannerError::InvalidOption {
                        reason: "--basic-auth must be USERNAME:PASSWORD".into(),
                    })?;
            DevAuth::Basic {
                username: username.to_owned(),
                password: password.to_owned(),
            }
        } else if let Some(token) = self.bearer_token {
            DevAuth::Bearer { token }
        } else if let Some(key) = self.api_key {
            DevAuth::ApiKey {
                header: self.api_key_header,
                key,
            }
        } else {
            DevAuth::None
        };
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path)
                .map_err(|source| DevScannerError::ReadFile { path, source })
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(DevTls {
                cert_chain_pem: read(cert)?,
                key_pem: read(key)?,
            }),
            _ => None,
        };
        Ok(DevScannerConfig {
            listen: self.listen,
            spec: self.spec,
            pending_polls: self.pending_polls,
            refresh_after_secs: self.refresh_after,
            auth,
            tls,
            hang_for: Duration::from_secs(self.hang_for),
            oversize_bytes: self.oversize_bytes,
            faults: self.faults,
        })
    }
}

/// Runs `scanreport-operator dev-scanner` until SIGINT or SIGTERM.
pub async fn run_cli(args: DevScannerArgs) -> Result<(), DevScannerError> {
    let config = args.into_config()?;
    if !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen, "the development scanner adapter is listening beyond loopback");
    }
    let mut handle = DevScanner::start(config).await?;
    println!(
        "development scanner adapter listening on {}",
        handle.base_url()
    );
    tokio::select! {
        result = handle.wait() => return result,
        () = shutdown_signal() => {}
    }
    tracing::info!("stopping the development scanner adapter");
    handle.stop_now().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Server state and handlers.

struct Shared {
    spec: DevSpec,
    auth: DevAuth,
    /// Makes scan ids unique across restarts of a long-running demo.
    id_namespace: uuid::Uuid,
    inner: Mutex<Inner>,
}

struct Inner {
    pending_polls: u32,
    refresh_after_secs: u64,
    hang_for: Duration,
    oversize_bytes: u64,
    faults: Vec<FaultRule>,
    scans: HashMap<String, ScanState>,
    scan_order: VecDeque<String>,
    next_scan: u64,
    stats: DevStats,
    last_scan_request: Option<wire::ScanRequest>,
}

struct ScanState {
    digest: Digest,
    artifact: wire::Artifact,
    /// Canonical report MIME types the request enabled; `None` for all.
    enabled: Option<BTreeSet<MimeType>>,
    accepted_at: chrono::DateTime<chrono::Utc>,
    polls: u32,
}

impl Shared {
    fn new(config: &DevScannerConfig, addr: SocketAddr) -> Self {
        let started = chrono::Utc::now();
        let id_namespace = uuid::Uuid::new_v5(
            &crate::identity::NAMESPACE,
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

    fn lock(&self) -> MutexGuard<'_, Inner> {
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

fn router(shared: Arc<Shared>) -> Router {
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
    let registry = reqwest::Url::parse(&request.registry.url)
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
    }
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

fn canonical_or_raw(m: &str) -> String {
    MimeType::parse(m).map_or_else(|_| m.to_owned(), |m| m.as_str().to_owned())
}

// ---------------------------------------------------------------------------------------------
// TLS.

fn server_tls_config(tls: &DevTls) -> Result<Arc<rustls::ServerConfig>, DevScannerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |reason: String| DevScannerError::Tls { reason };
    let certs = CertificateDer::pem_slice_iter(tls.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("no CERTIFICATE block in the chain".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())
        .map_err(|e| invalid(format!("private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TCP connections and hands out TLS streams; handshakes run in their own tasks so a
/// slow client cannot hold up others.
struct TlsListener {
    streams: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>, local: SocketAddr) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let tls = tokio_rustls::TlsAcceptor::from(config);
        let acceptor = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((tcp, peer)) => {
                        let tls = tls.clone();
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp))
                                .await
                            {
                                Ok(Ok(stream)) => {
                                    let _ = tx.send((stream, peer)).await;
                                }
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                }
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Self {
            streams: rx,
            local,
            acceptor,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.streams.recv().await {
            Some(conn) => conn,
            // The acceptor only stops when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic reports.

/// Severities of the specification's `Severity` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Severity {
    Unknown,
    Negligible,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::Negligible => "Negligible",
            Self::Low => "Low",
            Self::Medium => "Medium",
            Self::High => "High",
            Self::Critical => "Critical",
        }
    }
}

struct PlannedVuln {
    id: String,
    package: &'static str,
    version: &'static str,
    fix_version: Option<String>,
    severity: Severity,
    score_tenths: Option<u64>,
    vector: Option<&'static str>,
    cwe: &'static str,
    description: String,
}

/// splitmix64, seeded from the digest: the digest is already a hash.
struct Rng(u64);

impl Rng {
    fn for_digest(digest: &Digest) -> Self {
        let hex = digest.as_str().split_once(':').map_or("", |(_, h)| h);
        let seed = u64::from_str_radix(hex.get(..16).unwrap_or("0"), 16).unwrap_or(0);
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

const PACKAGES: &[(&str, &str, &str)] = &[
    ("openssl", "3.0.11-1~deb12u2", "Apache-2.0"),
    ("libssl3", "3.0.11-1~deb12u2", "Apache-2.0"),
    ("libc6", "2.36-9+deb12u4", "LGPL-2.1"),
    ("libc-bin", "2.36-9+deb12u4", "LGPL-2.1"),
    ("zlib1g", "1:1.2.13.dfsg-1", "Zlib"),
    ("curl", "7.88.1-10+deb12u5", "curl"),
    ("libcurl4", "7.88.1-10+deb12u5", "curl"),
    ("libxml2", "2.9.14+dfsg-1.3~deb12u1", "MIT"),
    ("perl-base", "5.36.0-7+deb12u1", "GPL-1.0-or-later"),
    ("tar", "1.34+dfsg-1.2+deb12u1", "GPL-3.0-or-later"),
    ("libgnutls30", "3.7.9-2+deb12u2", "LGPL-2.1-or-later"),
    ("libsqlite3-0", "3.40.1-2", "blessing"),
    ("ncurses-base", "6.4-4", "X11"),
    ("login", "1:4.13+dfsg1-1+b1", "BSD-3-Clause"),
    ("passwd", "1:4.13+dfsg1-1+b1", "BSD-3-Clause"),
    ("coreutils", "9.1-1", "GPL-3.0-or-later"),
    ("util-linux", "2.38.1-5+b1", "GPL-2.0-or-later"),
    ("libgcrypt20", "1.10.1-3", "LGPL-2.1-or-later"),
    ("libtasn1-6", "4.19.0-2", "LGPL-2.1-or-later"),
    ("libkrb5-3", "1.20.1-2+deb12u1", "MIT"),
    ("libsystemd0", "252.22-1~deb12u1", "LGPL-2.1-or-later"),
    ("apt", "2.6.1", "GPL-2.0-or-later"),
    ("bash", "5.2.15-2+b2", "GPL-3.0-or-later"),
    ("libpcre2-8-0", "10.42-1", "BSD-3-Clause"),
    ("libexpat1", "2.5.0-1", "MIT"),
    ("libcap2", "1:2.66-4", "BSD-3-Clause"),
    ("gzip", "1.12-1", "GPL-3.0-or-later"),
    ("libldap-2.5-0", "2.5.13+dfsg-5", "OLDAP-2.8"),
    ("libnghttp2-14", "1.52.0-1+deb12u1", "MIT"),
    ("libpam0g", "1.5.2-6+deb12u1", "BSD-3-Clause"),
    ("libzstd1", "1.5.4+dfsg2-5", "BSD-3-Clause"),
    ("liblzma5", "5.4.1-0.2", "0BSD"),
];

const FLAWS: &[&str] = &[
    "A heap-based buffer overflow",
    "An out-of-bounds read",
    "A use-after-free",
    "An integer overflow",
    "Improper input validation",
    "A NULL pointer dereference",
    "A race condition",
    "Uncontrolled resource consumption",
];
const PLACES: &[&str] = &[
    "the certificate parser",
    "the HTTP header handling",
    "the archive extraction code",
    "the regular expression engine",
    "the DNS resolver",
    "the compression routines",
    "the locale handling",
    "the authentication module",
];
const IMPACTS: &[&str] = &[
    "cause a denial of service (crash)",
    "execute arbitrary code",
    "read sensitive memory",
    "bypass intended access restrictions",
    "escalate privileges",
    "corrupt memory",
];
const VECTORS_OF_ATTACK: &[&str] = &[
    "a crafted file",
    "a malicious network packet",
    "specially crafted input",
    "a long string",
    "a crafted certificate",
];
const CWES: &[&str] = &[
    "CWE-787", "CWE-125", "CWE-416", "CWE-190", "CWE-20", "CWE-476", "CWE-362", "CWE-400",
];

fn cvss_vector(severity: Severity) -> Option<&'static str> {
    Some(match severity {
        Severity::Critical => "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        Severity::High => "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H",
        Severity::Medium => "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:L/A:L",
        Severity::Low => "CVSS:3.1/AV:L/AC:H/PR:L/UI:N/S:U/C:L/I:N/A:N",
        Severity::Negligible => "CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:N/I:N/A:L",
        Severity::Unknown => return None,
    })
}

/// The vulnerabilities of an artifact: 12 to 40, a spread of severities, a pure function of the
/// digest.
fn plan(digest: &Digest) -> Vec<PlannedVuln> {
    let mut rng = Rng::for_digest(digest);
    let count = 12 + rng.below(29);
    (0..count)
        .map(|i| {
            let roll = rng.below(100);
            let severity = match roll {
                0..8 => Severity::Critical,
                8..28 => Severity::High,
                28..63 => Severity::Medium,
                63..88 => Severity::Low,
                88..94 => Severity::Negligible,
                _ => Severity::Unknown,
            };
            let (package, version, _) = rng.pick(PACKAGES);
            let fix_version = (rng.below(100) < 55).then(|| bump(version, rng.below(5) + 1));
            let score_tenths = match severity {
                Severity::Critical => Some(90 + rng.below(11)),
                Severity::High => Some(70 + rng.below(20)),
                Severity::Medium => Some(40 + rng.below(30)),
                Severity::Low => Some(10 + rng.below(30)),
                Severity::Negligible => Some(1 + rng.below(9)),
                Severity::Unknown => None,
            };
            let id = format!(
                "CVE-{}-{}",
                2017 + rng.below(8),
                10_000 + rng.below(40_000) + i
            );
            let description = format!(
                "{} in {} of {package} before {} allows remote attackers to {} via {}.",
                rng.pick(FLAWS),
                rng.pick(PLACES),
                fix_version.as_deref().unwrap_or("the latest release"),
                rng.pick(IMPACTS),
                rng.pick(VECTORS_OF_ATTACK),
            );
            PlannedVuln {
                id,
                package,
                version,
                fix_version,
                severity,
                score_tenths,
                vector: cvss_vector(severity),
                cwe: rng.pick(CWES),
                description,
            }
        })
        .collect()
}

fn bump(version: &str, n: u64) -> String {
    match version.rsplit_once("deb12u") {
        Some((head, tail)) if tail.chars().all(|c| c.is_ascii_digit()) => {
            let current: u64 = tail.parse().unwrap_or(0);
            format!("{head}deb12u{}", current + n)
        }
        _ => format!("{version}+deb12u{n}"),
    }
}

/// The severity summary a client should compute from this adapter's vulnerability reports for
/// `digest` (Negligible counts as none).
pub fn expected_summary(digest: &Digest) -> SeveritySummary {
    let mut s = SeveritySummary::default();
    for v in plan(digest) {
        match v.severity {
            Severity::Critical => s.critical += 1,
            Severity::High => s.high += 1,
            Severity::Medium => s.medium += 1,
            Severity::Low => s.low += 1,
            Severity::Negligible => s.none += 1,
            Severity::Unknown => s.unknown += 1,
        }
        if v.fix_version.is_some() {
            s.fixable += 1;
        }
    }
    s
}

fn scanner_json() -> Value {
    json!({
        "name": SCANNER_NAME,
        "vendor": SCANNER_VENDOR,
        "version": env!("CARGO_PKG_VERSION"),
    })
}

fn artifact_json(artifact: &wire::Artifact) -> Value {
    let mut a = json!({
        "repository": artifact.repository,
        "digest": artifact.digest,
        "mime_type": artifact.mime_type,
    });
    if let Some(tag) = &artifact.tag {
        a["tag"] = json!(tag);
    }
    a
}

/// The report body for `mime_type` (one of [`Shared::produces`]).
fn render_report(
    mime_type: &str,
    digest: &Digest,
    artifact: &wire::Artifact,
    generated_at: chrono::DateTime<chrono::Utc>,
) -> String {
    let generated_at = generated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let vulns = plan(digest);
    let body = match mime_type {
        mime::SBOM_REPORT_1_0 => sbom_report(digest, artifact, &generated_at, &vulns),
        mime::RAW_VULN_REPORT => raw_report(artifact, &vulns),
        other => harbor_report(
            artifact,
            &generated_at,
            &vulns,
            other == mime::VULN_REPORT_1_1,
        ),
    };
    body.to_string()
}

fn harbor_report(
    artifact: &wire::Artifact,
    generated_at: &str,
    vulns: &[PlannedVuln],
    v1_1: bool,
) -> Value {
    let highest = vulns
        .iter()
        .map(|v| v.severity)
        .max()
        .unwrap_or(Severity::Unknown);
    let items: Vec<Value> = vulns
        .iter()
        .map(|v| {
            let mut item = json!({
                "id": v.id,
                "package": v.package,
                "version": v.version,
                "severity": v.severity.as_str(),
                "description": v.description,
                "links": [
                    format!("https://security-tracker.debian.org/tracker/{}", v.id),
                    format!("https://nvd.nist.gov/vuln/detail/{}", v.id),
                ],
            });
            if let Some(fix) = &v.fix_version {
                item["fix_version"] = json!(fix);
            }
            if v1_1 {
                let mut cvss = json!({});
                if let Some(t) = v.score_tenths {
                    cvss["score_v3"] = json!(t as f64 / 10.0);
                }
                if let Some(vector) = v.vector {
                    cvss["vector_v3"] = json!(vector);
                }
                item["preferred_cvss"] = cvss;
                item["cwe_ids"] = json!([v.cwe]);
                item["vendor_attributes"] = json!({
                    "data_source": "debian",
                    "primary_url": format!("https://avd.aquasec.com/nvd/{}", v.id.to_lowercase()),
                });
            }
            item
        })
        .collect();
    json!({
        "generated_at": generated_at,
        "artifact": artifact_json(artifact),
        "scanner": scanner_json(),
        "severity": highest.as_str(),
        "vulnerabilities": items,
    })
}

/// A Trivy-like vendor report.
fn raw_report(artifact: &wire::Artifact, vulns: &[PlannedVuln]) -> Value {
    let target = format!("{}@{} (debian 12.5)", artifact.repository, artifact.digest);
    let items: Vec<Value> = vulns
        .iter()
        .map(|v| {
            json!({
                "VulnerabilityID": v.id,
                "PkgName": v.package,
                "InstalledVersion": v.version,
                "FixedVersion": v.fix_version.clone().unwrap_or_default(),
                "Severity": v.severity.as_str().to_uppercase(),
                "Title": v.description,
            })
        })
        .collect();
    json!({
        "SchemaVersion": 2,
        "ArtifactName": format!("{}@{}", artifact.repository, artifact.digest),
        "ArtifactType": "container_image",
        "Results": [{
            "Target": target,
            "Class": "os-pkgs",
            "Type": "debian",
            "Vulnerabilities": items,
        }],
    })
}

/// A `HarborSbomReport` carrying a CycloneDX 1.5 document.
fn sbom_report(
    digest: &Digest,
    artifact: &wire::Artifact,
    generated_at: &str,
    vulns: &[PlannedVuln],
) -> Value {
    let mut rng = Rng::for_digest(digest);
    let mut names: BTreeSet<&str> = vulns.iter().map(|v| v.package).collect();
    for (name, _, _) in PACKAGES {
        if rng.below(100) < 60 {
            names.insert(name);
        }
    }
    let components: Vec<Value> = PACKAGES
        .iter()
        .filter(|(name, _, _)| names.contains(name))
        .map(|(name, version, license)| {
            let purl = format!("pkg:deb/debian/{name}@{version}?arch=amd64&distro=debian-12.5");
            json!({
                "bom-ref": purl,
                "type": "library",
                "name": name,
                "version": version,
                "purl": purl,
                "licenses": [{"license": {"id": license}}],
            })
        })
        .collect();
    let refs: Vec<Value> = components.iter().map(|c| c["bom-ref"].clone()).collect();
    let serial = uuid::Uuid::new_v5(&crate::identity::NAMESPACE, digest.as_str().as_bytes());
    let sbom = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{serial}"),
        "version": 1,
        "metadata": {
            "timestamp": generated_at,
            "tools": {"components": [{"type": "application", "name": SCANNER_NAME, "version": env!("CARGO_PKG_VERSION")}]},
            "component": {
                "bom-ref": digest.as_str(),
                "type": "container",
                "name": artifact.repository,
                "version": digest.as_str(),
            },
        },
        "components": components,
        "dependencies": [{"ref": digest.as_str(), "dependsOn": refs}],
    });
    json!({
        "generated_at": generated_at,
        "artifact": artifact_json(artifact),
        "scanner": scanner_json(),
        "media_type": mime::SBOM_CYCLONEDX_JSON,
        "sbom": sbom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scanner::summary::severity_summary;

    fn digest(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn artifact(d: &Digest) -> wire::Artifact {
        wire::Artifact {
            repository: "library/nginx".into(),
            digest: d.as_str().into(),
            tag: Some("1.25".into()),
            mime_type: mime::OCI_IMAGE_MANIFEST.into(),
        }
    }

    #[test]
    fn reports_are_deterministic_and_agree() {
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        for c in ['a', 'b', '7'] {
            let d = digest(c);
            let a = artifact(&d);
            let v11 = render_report(mime::VULN_REPORT_1_1, &d, &a, t);
            assert_eq!(v11, render_report(mime::VULN_REPORT_1_1, &d, &a, t));
            let v10 = render_report(mime::HARBOR_VULN_REPORT_1_0, &d, &a, t);
            let expected = expected_summary(&d);
            for body in [&v11, &v10] {
                let value: Value = serde_json::from_str(body).unwrap();
                assert_eq!(severity_summary(&value).unwrap(), expected);
            }
            assert!((12..=40).contains(&expected.total()), "{expected:?}");
            // A realistic size.
            assert!((5_000..40_000).contains(&v11.len()), "{}", v11.len());
            let raw: Value =
                serde_json::from_str(&render_report(mime::RAW_VULN_REPORT, &d, &a, t)).unwrap();
            assert_eq!(
                raw["Results"][0]["Vulnerabilities"]
                    .as_array()
                    .unwrap()
                    .len() as i64,
                expected.total()
            );
        }
        assert_ne!(
            expected_summary(&digest('a')),
            expected_summary(&digest('b'))
        );
    }

    #[test]
    fn sbom_is_cyclonedx() {
        let d = digest('c');
        let t = chrono::Utc::now();
        let sbom: Value =
            serde_json::from_str(&render_report(mime::SBOM_REPORT_1_0, &d, &artifact(&d), t))
                .unwrap();
        assert_eq!(sbom["media_type"], mime::SBOM_CYCLONEDX_JSON);
        assert_eq!(sbom["sbom"]["bomFormat"], "CycloneDX");
        assert!(sbom["sbom"]["components"].as_array().unwrap().len() >= 10);
    }

    #[test]
    fn fault_rules_parse() {
        assert_eq!(
            "report:503:2".parse::<FaultRule>().unwrap(),
            FaultRule::new(
                Endpoint::Report,
                FaultKind::ServerError { status: 503 },
                Some(2)
            )
        );
        assert_eq!(
            "scan:hang".parse::<FaultRule>().unwrap(),
            FaultRule::new(Endpoint::Scan, FaultKind::Hang, None)
        );
        assert_eq!(
            "report:lost:1".parse::<FaultRule>().unwrap().kind,
            FaultKind::LoseScan
        );
        for bad in [
            "",
            "scan",
            "scan:404",
            "metadata:lost",
            "x:500",
            "report:500:0",
            "report:hang:1:2",
            "report:hang:x",
        ] {
            assert!(bad.parse::<FaultRule>().is_err(), "{bad}");
        }
        let json = serde_json::to_value(FaultRule::new(
            Endpoint::Metadata,
            FaultKind::ServerError { status: 500 },
            Some(1),
        ))
        .unwrap();
        assert_eq!(
            json,
            json!({"endpoint": "metadata", "fault": "server_error", "status": 500, "count": 1})
        );
        let back: FaultRule = serde_json::from_value(json).unwrap();
        assert_eq!(back.count, Some(1));
    }

    #[test]
    fn fix_versions_bump() {
        assert_eq!(bump("2.36-9+deb12u4", 2), "2.36-9+deb12u6");
        assert_eq!(bump("9.1-1", 1), "9.1-1+deb12u1");
    }

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
