#!/usr/bin/env bash
# Gates a pipeline on a ScanRequest: exits 0 once it is Ready (every report stored and, with a
# policy, the findings comply), 1 as soon as it is Stalled (e.g. PolicyViolation, a missing
# ScanPolicy or Scanner), 2 on timeout. Both outcomes are read from the generation just applied.
#
#   docs/gate-scanrequest.sh NAME [NAMESPACE] [TIMEOUT]     e.g. nginx team-a 10m
#
# `kubectl wait --for=condition=Ready` alone waits out its whole timeout on a violation: kubectl
# knows no Stalled condition. This waits for Ready and for Stalled at once; the first one wins.
# KUBECTL overrides the kubectl binary. Needs bash 5.1 or newer (`wait -n` with process ids).
set -uo pipefail
name=${1:?usage: gate-scanrequest.sh NAME [NAMESPACE] [TIMEOUT]}
namespace=${2:-default}
timeout=${3:-10m}
kubectl=${KUBECTL:-kubectl}
sr=(-n "$namespace" "scanrequest/$name")

generation=$("$kubectl" get "${sr[@]}" -o jsonpath='{.metadata.generation}') || exit 2
"$kubectl" wait "${sr[@]}" --for=jsonpath='{.status.observedGeneration}'="$generation" \
  --timeout="$timeout" >/dev/null || exit 2

"$kubectl" wait "${sr[@]}" --for=condition=Ready --timeout="$timeout" >/dev/null 2>&1 &
ready=$!
"$kubectl" wait "${sr[@]}" --for=condition=Stalled --timeout="$timeout" >/dev/null 2>&1 &
stalled=$!
wait -n "$ready" "$stalled"
kill "$ready" "$stalled" 2>/dev/null
wait 2>/dev/null

conditions='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
state=$("$kubectl" get "${sr[@]}" -o jsonpath="$conditions") || exit 2
if grep -q '^Ready=True ' <<<"$state"; then
  echo "scanrequest $namespace/$name is Ready"
  exit 0
fi
if grep -q '^Stalled=True ' <<<"$state"; then
  echo "scanrequest $namespace/$name failed: $(grep '^Stalled=True ' <<<"$state" | cut -d' ' -f2-)" >&2
  exit 1
fi
echo "scanrequest $namespace/$name: not Ready within $timeout" >&2
exit 2
