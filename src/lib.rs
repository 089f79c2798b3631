//! scanreport-operator: declarative, race-free container image scanning for Kubernetes.
//!
//! Modules, one concern each:
//! * [`api`]: the `ScanRequest` and `Scanner` custom resources.
//! * [`identity`]: deterministic report ids (a public contract, see README).
//! * [`store`]: the Postgres report store and its race-free upsert.
//! * [`telemetry`]: logging set-up.

pub mod api;
pub mod identity;
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
    #[error("cannot set up logging: {0}")]
    Telemetry(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
