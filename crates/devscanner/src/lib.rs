//! A development scanner adapter: a small server that speaks the Harbor Pluggable Scanner
//! Adapter API v1.2 (and, on request, v1.1) with made-up but deterministic reports.
//!
//! It exists for tests and demos: tests start it in-process with [`DevScanner::start`] and read
//! its counters; `dev-scanner --listen 127.0.0.1:8080` (the binary of this crate) serves it for a
//! demo. The operator never uses it, and the client has no special case for it.
//!
//! * Reports derive from the artifact digest: the same digest gives the same vulnerabilities in
//!   every vulnerability format, and the same SBOM (only `generated_at` is the scan time).
//! * Latency: each scan answers `302` with `Refresh-After` for the first `pending_polls` polls.
//! * Faults can be injected per endpoint for the next K requests, in-process
//!   ([`DevScannerHandle::inject_fault`]), over HTTP (`POST /dev/faults`) or with `--fault`.
//! * Counters: `GET /dev/stats` or [`DevScannerHandle::stats`].
//!
//! Modules, along its seams:
//! * [`config`]: what to serve (spec version, auth, TLS, latency) and the injectable faults.
//! * [`cli`]: the `dev-scanner` command line, serving until SIGINT or SIGTERM.
//! * [`handle`]: starting an adapter in-process and steering it from a test.
//! * [`server`]: the HTTP handlers of the adapter API and of the `/dev/*` control endpoints.
//! * [`stats`]: the counters of what reached the adapter.
//! * [`tls`]: serving HTTPS.
//! * [`reports`]: the deterministic reports.

use std::net::SocketAddr;
use std::path::PathBuf;

pub mod cli;
pub mod config;
pub mod handle;
pub mod reports;
mod server;
pub mod stats;
mod tls;

pub use cli::{DevScannerArgs, run_cli};
pub use config::{DevAuth, DevScannerConfig, DevSpec, DevTls, Endpoint, FaultKind, FaultRule};
pub use handle::{DevScanner, DevScannerHandle};
pub use reports::{ExpectedVulnerability, expected_summary, expected_vulnerabilities};
pub use stats::DevStats;

use reports::{render_report, scanner_json};
use server::{Shared, router};
use stats::canonical_or_raw;
use tls::{TlsListener, server_tls_config};

pub const SCANNER_NAME: &str = "scanreport-dev-scanner";
pub const SCANNER_VENDOR: &str = "scanreport.io";
/// Scans kept in memory; the oldest are forgotten beyond this (their ids then answer 404).
const MAX_SCANS: usize = 10_000;

/// Failures of the development adapter.
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
