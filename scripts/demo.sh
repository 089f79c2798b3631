#!/usr/bin/env bash
# The operator's whole job, end to end, on local infrastructure:
#   a local Kubernetes control plane (kube-apiserver + etcd), a throwaway PostgreSQL, the
#   development scanner adapter and the operator; then it applies examples/*.yaml, waits for
#   every ScanRequest to be Ready, prints `kubectl get sr` and the stored reports, and cleans up.
#
#   scripts/demo.sh          run the demo and clean up
#   scripts/demo.sh --keep   leave everything running and print how to use it by hand
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh

keep=false
case "${1:-}" in
  --keep) keep=true ;;
  "") ;;
  *) die "usage: scripts/demo.sh [--keep]" ;;
esac

ensure_packages cc:gcc python3:python3 kubectl:kubernetes-client

work=$(mktemp -d /tmp/scanreport-demo.XXXXXX)
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pg_stop
  if [[ $status -ne 0 ]]; then
    log "the demo failed; logs were in $work:"
    for f in "$work"/*.log; do [[ -f $f ]] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building (the first build takes a few minutes)"
cargo build --quiet --bin scanreport-operator --bin dev-scanner --bin control-plane
bin=target/debug/scanreport-operator

log "local control plane: kube-apiserver + etcd (built once and cached; see docs/envtest.md)"
KUBEBUILDER_ASSETS="$(scripts/envtest.sh)"
export KUBEBUILDER_ASSETS
# The kubectl built with the apiserver, when there is one: same version, no skew warnings.
[[ -x $KUBEBUILDER_ASSETS/kubectl ]] && export PATH="$KUBEBUILDER_ASSETS:$PATH"
target/debug/control-plane "$work/kubeconfig" 2>"$work/control-plane.log" &
pids+=($!)
for _ in $(seq 1 180); do
  [[ -f $work/kubeconfig ]] && break
  kill -0 "${pids[-1]}" 2>/dev/null || die "the control plane did not start"
  sleep 1
done
[[ -f $work/kubeconfig ]] || die "the control plane did not become ready"
export KUBECONFIG=$work/kubeconfig

[[ -n ${DATABASE_URL:-} ]] || pg_start
"$bin" migrate

adapter_port=$(free_port)
log "development scanner adapter on 127.0.0.1:$adapter_port"
target/debug/dev-scanner --listen "127.0.0.1:$adapter_port" 2>"$work/dev-scanner.log" &
pids+=($!)

health_port=$(free_port)
log "operator (health on 127.0.0.1:$health_port)"
# examples/ name images on Docker Hub, which this offline demo cannot reach to prove access, so
# the demo trusts every namespace (a single-tenant setting; docs/security.md). Clusters shared by
# teams keep the default, --artifact-access=verify.
log "operator with --artifact-access=trust: the example registry is not reachable offline"
"$bin" run --listen "127.0.0.1:$health_port" --artifact-access trust 2>"$work/operator.log" &
pids+=($!)
for _ in $(seq 1 60); do
  python3 - "$health_port" <<'EOF' && break
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1)
except Exception:
    sys.exit(1)
EOF
  kill -0 "${pids[-1]}" 2>/dev/null || die "the operator exited"
  sleep 1
done

log "applying examples/ (the Scanner pointed at the local adapter)"
kubectl create namespace demo >/dev/null
sed "s#http://127.0.0.1:8480#http://127.0.0.1:$adapter_port#" examples/scanner.yaml | kubectl apply -f -
for f in examples/scanrequest-*.yaml; do
  kubectl apply -n demo -f "$f"
done

log "waiting for every ScanRequest to be Ready"
kubectl wait -n demo --for=condition=Ready scanrequests --all --timeout=180s

echo
kubectl get scanners
echo
kubectl get scanrequests -n demo
echo
"$PG_BIN/psql" "$DATABASE_URL" -X -P pager=off -c \
  "SELECT id, left(digest, 19) || '…' AS digest, mime_type, critical_cnt AS critical, high_cnt AS high,
          medium_cnt AS medium, low_cnt AS low, fixable_cnt AS fixable, pg_size_pretty(pg_column_size(report)::bigint) AS size
     FROM scan_report ORDER BY digest, mime_type"
echo
log "the status of one request (report bodies stay in PostgreSQL):"
kubectl get sr -n demo nginx -o jsonpath='{.status.reports[*].reportId}{"\n"}'

if $keep; then
  cat <<EOF

Everything keeps running until you press Ctrl-C. In another shell:

  export KUBECONFIG=$KUBECONFIG
  export DATABASE_URL=$DATABASE_URL
  kubectl get sr -A
  kubectl describe sr -n demo nginx
  kubectl patch sr -n demo alpine --type merge -p '{"spec":{"rescanToken":"now"}}'
  $PG_BIN/psql "\$DATABASE_URL" -c 'SELECT id, mime_type, generated_at FROM scan_report'
  $bin report-id --scanner dev-scanner --digest <digest> --mime-type '<report MIME type>'

Logs: $work/*.log
EOF
  while true; do sleep 3600; done
fi
log "demo finished; cleaning up"
