//! scanreport-operator: declarative, race-free container image scanning for Kubernetes.
//!
//! Modules, one concern each (the same map is in docs/controller.md):
//! * `api`: the `ScanRequest`, `Scanner` and `ScanPolicy` custom resources (the CRD schema).
//! * `identity`: report ids and `ReportKey`, the (digest, registration, MIME type) key every module uses.
//! * `policy`: scan policy rules checked and evaluated, a pure function of stored findings and a clock reading.
//! * `duration`: Go-style durations of flags and specs, parsed once with `kube::core::Duration`, bounded.
//! * `store`: PostgreSQL connection pool, migrations, `StoreError`, the database clock.
//! * `store::reports`: `scan_report`: the race-free upsert and the reads (one column list, one row type).
//! * `store::jobs`: `scan_job`: durable single-flight scan jobs and the per-scanner queue.
//! * `scanner`: the Harbor Pluggable Scanner Adapter client; knows nothing of Kubernetes.
//! * `scanner::client`: `AdapterClient`: HTTP calls (metadata, scan, report), body caps, status classification.
//! * `scanner::metadata`: adapter metadata, capability targeting, scan request building, `MetadataCache`.
//! * `scanner::tls`: the client's rustls configuration and TLS failure classification.
//! * `scanner::redact`: adapter messages made safe to show (through `redact`), capped to one line.
//! * `scanner::auth`: adapter and registry credentials as the client sends them (with `secrecy`).
//! * `scanner::summary`, `scanner::wire`, `scanner::error`: severity counts, the spec's JSON bodies, `ScannerError`.
//! * `registry`: proof of access to an artifact (OCI distribution, Basic and Bearer challenges), tag resolution, bounded manifest fetch, credentials from registry Secrets only, `ProofCache`, `ArtifactAccess`.
//! * `redact`: credentials scrubbed from any text (raw, escaped, base64 and Basic forms, URL user-info), the one URL-redaction helper.
//! * `controller`: the driver: `reconcile` reads as the 8 steps, `error_policy`.
//! * `controller::context`: `Config` (the `run` flags), `Context`, per-object `Backoff`, the findings cache.
//! * `controller::events`: Kubernetes Events, repeats counted in series, dropped with their request.
//! * `controller::generations`: which watch events reconcile (a new spec), and which requests are gone.
//! * `controller::plan`: steps 1–3: resolve the Scanner, validate, registry credentials, proof of access, rescan demand.
//! * `controller::credentials`: adapter credentials (Scanner `spec.auth`) from Secret data in the operator's namespace.
//! * `controller::adapters`: the Scanner cache look-up, adapter clients per Scanner, the Scanner status.
//! * `controller::scan`: steps 4–7 for one report: `ReportTask` (`drive`, `submit`, `poll`, `reject`).
//! * `controller::decide`: the pure decisions: stored report, in-flight phase, overall state, rescans, requeue.
//! * `controller::verdict`: the policy: which rules apply (step 2), the verdict on the stored findings, the Event on a change.
//! * `controller::status`: step 8: settle, degrade, apply; kstatus conditions.
//! * `controller::watch`: the watch wiring of `run` (ScanRequest watches, Scanner and ScanPolicy caches, readiness).
//! * `controller::error`: `ReconcileError`, permanent or transient, with its condition reason.
//! * `reports_api`: the aggregated API `reports.scanreport.io` that serves stored reports to `kubectl` under RBAC (see its module docs).
//! * `http`: health, readiness and metrics endpoints.
//! * `metrics`: Prometheus metrics.
//! * `memory`: freed memory handed back to the system (glibc `malloc_trim`) after bursts.
//! * `run`: `scanreport-operator run`: wiring, leader election (`LeaderElection` flags), shutdown.
//! * `telemetry`: logging set-up.

pub mod api;
pub mod controller;
pub mod duration;
pub mod http;
pub mod identity;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod redact;
pub mod registry;
pub mod reports_api;
pub mod run;
pub mod scanner;
pub mod store;
pub mod telemetry;

/// Errors of the command-line entry points. Each variant is a failure the user must tell apart.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot serialise the CRDs to YAML: {0}")]
    CrdYaml(#[from] serde_yaml::Error),
    #[error("DATABASE_URL is not set: pass --database-url or set the environment variable")]
    MissingDatabaseUrl,
    #[error("cannot write {path}: {source}")]
    WriteFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot connect to Kubernetes: {0}; run in a cluster or set KUBECONFIG to a kubeconfig file"
    )]
    Kube(#[source] kube::Error),
    #[error(
        "leader election failed: {0}; check that the operator may get, create and patch Leases in its namespace"
    )]
    Lease(#[source] kube_lease_manager::LeaseManagerError),
    #[error(
        "lost the leader lease to another replica; exiting so that this one restarts as a standby"
    )]
    LostLeadership,
    #[error("cannot listen on {addr}: {source}; pick a free address with --listen")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    ReportApi(#[from] reports_api::ReportApiError),
    #[error("cannot set up logging: {0}")]
    Telemetry(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
