//! scanreport-operator: declarative, race-free container image scanning for Kubernetes.
//!
//! Modules, one concern each:
//! * [`api`]: the `ScanRequest` and `Scanner` custom resources.
//! * [`identity`]: deterministic report ids (a public contract, see README).
//! * [`store`]: the Postgres report store and its race-free upsert.
//! * [`jobs`]: durable single-flight scan jobs and the per-scanner queue.
//! * [`scanner`]: the Harbor Pluggable Scanner Adapter client.
//! * [`controller`]: the reconcile pipeline (start reading at `controller/mod.rs`).
//! * [`http`]: health, readiness and metrics endpoints.
//! * [`metrics`]: Prometheus metrics.
//! * [`run`]: `scanreport-operator run`.
//! * [`telemetry`]: logging set-up.

pub mod api;
pub mod controller;
pub mod devscanner;
pub mod http;
pub mod identity;
pub mod jobs;
pub mod metrics;
pub mod redact;
pub mod registry;
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
    #[error("development scanner adapter: {0}")]
    DevScanner(#[from] devscanner::DevScannerError),
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
    #[error("cannot set up logging: {0}")]
    Telemetry(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
