#!/usr/bin/env bash
# Benchmarks. Starts a throwaway PostgreSQL unless DATABASE_URL is set.
#   scripts/bench.sh            all benchmarks
#   scripts/bench.sh upsert     only the store's upsert throughput
#   scripts/bench.sh new_report PostgreSQL's CPU for a new report's statements, no API server
#   scripts/bench.sh memory     peak RSS per report (no control plane needed)
#   scripts/bench.sh report_api the report API: list and get latency, peak RSS for a large body
#   scripts/bench.sh churn      ScanRequests created and deleted in waves: RSS, writes, table sizes
#   scripts/bench.sh operator   1,000 ScanRequests (distinct digests) against the floors, then
#                               6 more operator phases paired with honest floors (BENCH_PAIRS)
#   scripts/bench.sh operator_10k
#                               10,000 ScanRequests, 70% sharing 100 digests, 30% distinct
#   scripts/bench.sh operator_joined
#                               1,000 ScanRequests over 10 digests, each scan 2 polls of 1 s:
#                               requests that wait on a scan in flight
# BENCH_RUNS=3 repeats each benchmark (every run prints its own tables).
# SCANREPORT_OPERATOR_BIN runs that operator binary instead of building the release one.
# Results to copy into docs/benchmarks.md are printed as Markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh

ensure_packages cc:gcc python3:python3
trap pg_stop EXIT
trap 'exit 130' INT TERM
# Statement counts per query (benches/operator.rs) need pg_stat_statements preloaded.
if [[ -e /usr/lib/postgresql/15/lib/pg_stat_statements.so ]]; then
  export PG_SERVER_OPTIONS="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.max=1000"
fi
[[ -n ${DATABASE_URL:-} ]] || pg_start
KUBEBUILDER_ASSETS="$(scripts/envtest.sh)"
export KUBEBUILDER_ASSETS

# The benchmarks that run the operator measure the release binary as shipped (LTO, Cargo.toml);
# their own harness is built with the lighter bench profile. A copy, so that building a bench
# (which builds the binary with its own profile) cannot replace it.
if [[ -z ${SCANREPORT_OPERATOR_BIN:-} ]]; then
  log "cargo build --release --bin scanreport-operator (the binary the benchmarks run)"
  cargo build --release --quiet --bin scanreport-operator
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  install -D -m 0755 "$target_dir/release/scanreport-operator" "$target_dir/bench-bin/scanreport-operator"
  export SCANREPORT_OPERATOR_BIN="$target_dir/bench-bin/scanreport-operator"
fi

benches=("$@")
[[ ${#benches[@]} -gt 0 ]] || benches=(upsert new_report memory operator operator_10k report_api policy churn)
runs=${BENCH_RUNS:-1}
for b in "${benches[@]}"; do
  for ((run = 1; run <= runs; run++)); do
    case $b in
      operator_10k)
        log "cargo bench --bench operator, 10,000 requests (run $run/$runs)"
        BENCH_REQUESTS=10000 BENCH_SHARED_PERCENT=70 BENCH_SHARED_DIGESTS=100 \
          cargo bench --bench operator
        ;;
      operator_joined)
        log "cargo bench --bench operator, 1,000 requests joining 10 slow scans (run $run/$runs)"
        BENCH_REQUESTS=1000 BENCH_SHARED_PERCENT=100 BENCH_SHARED_DIGESTS=10 BENCH_PENDING_POLLS=2 \
          cargo bench --bench operator
        ;;
      operator)
        # Six more operator phases, each beside an honest floor of its own: the machine's
        # drift over a run moves both sides of each pair, so their median is the verdict.
        log "cargo bench --bench operator, 1,000 requests and 6 pairs (run $run/$runs)"
        BENCH_PAIRS=${BENCH_PAIRS:-6} cargo bench --bench operator
        ;;
      *)
        log "cargo bench --bench $b (run $run/$runs)"
        cargo bench --bench "$b"
        ;;
    esac
  done
done
