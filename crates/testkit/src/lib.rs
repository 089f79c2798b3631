//! Shared helpers for integration tests. Use with `mod support;` from a file
//! in `tests/`.
// Each test binary compiles this module separately and uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod envtest;
pub mod registry;

pub use envtest::{
    ADMIN_USER, GuardedChild, TESTER_USER, TestEnv, client, env, eventually, fresh_namespace,
    install_crds_from, spawn_guarded, try_env,
};
