#!/usr/bin/env bash
# Benchmarks. Starts a throwaway PostgreSQL unless DATABASE_URL is set.
#   scripts/bench.sh            all benchmarks
#   scripts/bench.sh upsert     only the store's upsert throughput
#   scripts/bench.sh memory     peak RSS per report (no control plane needed)
#   scripts/bench.sh report_api the report API: list and get latency, peak RSS for a large body
#   scripts/bench.sh churn      ScanRequests created and deleted in waves: RSS, writes, table sizes
# Results to copy into docs/benchmarks.md are printed as Markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh

ensure_packages cc:gcc python3:python3
trap pg_stop EXIT
trap 'exit 130' INT TERM
[[ -n ${DATABASE_URL:-} ]] || pg_start
KUBEBUILDER_ASSETS="$(scripts/envtest.sh)"
export KUBEBUILDER_ASSETS

benches=("$@")
[[ ${#benches[@]} -gt 0 ]] || benches=(upsert memory operator report_api policy churn)
for b in "${benches[@]}"; do
  log "cargo bench --bench $b"
  cargo bench --bench "$b"
done
