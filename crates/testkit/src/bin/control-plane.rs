//! `cargo run -p testkit --bin control-plane -- KUBECONFIG_OUT`: the test control plane (etcd
//! and kube-apiserver with the CRDs installed) as a standalone process for scripts/demo.sh.
//!
//! Writes an admin kubeconfig to KUBECONFIG_OUT once the API server is ready, then runs until
//! SIGTERM or Ctrl-C and tears everything down (the same teardown the tests use).

use anyhow::Context as _;
use testkit::envtest;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .context("usage: control-plane KUBECONFIG_OUT")?;
    let env = envtest::try_env().await?;
    let tmp = format!("{out}.tmp");
    std::fs::copy(env.kubeconfig(), &tmp).context("writing the kubeconfig")?;
    // Renamed into place so that a waiting script never reads half a file.
    std::fs::rename(&tmp, &out).context("writing the kubeconfig")?;
    eprintln!(
        "control plane ready: {} (Kubernetes {}), kubeconfig {out}",
        env.server_url(),
        env.server_version()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("stopping the control plane");
    // Returning runs the atexit teardown.
    Ok(())
}
