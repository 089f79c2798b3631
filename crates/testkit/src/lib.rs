//! Test helpers of scanreport-operator, shared by the integration tests (`tests/`), the
//! benchmarks and the demo: `use testkit::...` from any of them.
//!
//! - [`envtest`]: a throw-away control plane (etcd + kube-apiserver with the CRDs), one per test
//!   process, and guarded child processes.
//! - [`pgtest`]: a fresh PostgreSQL database per test, or a cluster of a test's own.
//! - [`registry`]: a real OCI registry (Distribution with htpasswd) and test images pushed to it.
//! - [`operator`]: the operator binary run as a process against the control plane, and Scanners.
//! - [`aggregation`]: the report API's APIService, routed to the operator on loopback.
//! - [`fixtures`]: builders for test ScanRequests and registry credential Secrets.
//! - [`cpu`]: CPU seconds per process, for the benchmarks.
//!
//! The binary `control-plane` runs [`envtest`] as a process of its own, for scripts/demo.sh.

pub mod aggregation;
pub mod cpu;
pub mod envtest;
pub mod fixtures;
pub mod operator;
pub mod pgtest;
pub mod registry;

pub use envtest::{
    ADMIN_USER, GuardedChild, TESTER_USER, TestEnv, client, env, eventually, fresh_namespace,
    install_crds_from, spawn_guarded, try_env,
};
