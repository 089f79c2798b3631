#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property and integration tests against a real
# PostgreSQL and a real kube-apiserver + etcd. Starts everything it needs and stops it on exit.
#
#   DATABASE_URL        use this PostgreSQL instead of a throwaway cluster
#   KUBEBUILDER_ASSETS  directory with kube-apiserver and etcd (see docs/envtest.md)
#   KSTATUS_BIN         the tools/kstatus helper (see scripts/kstatus.sh)
#   Extra arguments are passed to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh

# docker-registry (Distribution 2.8) and htpasswd: the real registry of tests/registry.rs; lua5.4:
# tests/argocd_health.rs runs the Argo CD health check (docs/argocd-health.lua) with it; curl:
# tests/report_api.rs calls the report API's port directly, as an attacker would.
ensure_packages cc:gcc python3:python3 kubectl:kubernetes-client \
  /usr/bin/docker-registry:docker-registry htpasswd:apache2-utils lua5.4:lua5.4 curl:curl

trap pg_stop EXIT
trap 'exit 130' INT TERM
if [[ -z ${DATABASE_URL:-} ]]; then
  pg_start
else
  log "using DATABASE_URL from the environment"
fi

# The test control plane: built once from Go modules (about 10 minutes), then cached. See docs/envtest.md.
log "envtest binaries (kube-apiserver + etcd)"
KUBEBUILDER_ASSETS="$(scripts/envtest.sh)"
export KUBEBUILDER_ASSETS
log "$("$KUBEBUILDER_ASSETS/kube-apiserver" --version), $("$KUBEBUILDER_ASSETS/etcd" --version | head -n 1)"
# The kstatus helper (Flux's status library) for tests/kstatus.rs.
KSTATUS_BIN="$(scripts/kstatus.sh)"
export KSTATUS_BIN

log "cargo fmt --check"
cargo fmt --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
scripts/chart-check.sh  # Helm chart: lint, render, strict schema validation (docs/deploy.md)
log "cargo test"
cargo test "$@"
