#!/usr/bin/env bash
# Checks of the Helm chart (charts/scanreport-operator): helm lint --strict and rendering with the
# Helm v4 engine, strict schema validation of every manifest and CRD, and assertions on what a
# user of the chart sees. See scripts/chart_check.py.
#
#   scripts/chart-check.sh                 run the checks; the last line is "N passed, M failed"
#   scripts/chart-check.sh --setup-only    only create or update the virtualenv, print its python
#   scripts/chart-check.sh render [--name N] [--namespace NS] [--values JSON]
#                                          print the rendered manifests as a JSON array
#
# The tools come from PyPI into a virtualenv at .venv/chart-check (git-ignored), created on first
# use and reused while it holds the pinned versions. No helm binary is needed: helm-python-sdk
# bundles Helm's Go library.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh

VENV=.venv/chart-check
REQUIREMENTS=("helm-python-sdk==0.2.2" "kubernetes-validate==1.37.0")
# Debian's interpreter, for which python3-venv is the matching package.
PYTHON=/usr/bin/python3

venv_current() {
  [[ -x $VENV/bin/python ]] || return 1
  "$VENV/bin/python" - "${REQUIREMENTS[@]}" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    if version(name) != wanted:
        sys.exit(1)
import helm_python, kubernetes_validate  # the native library loads
EOF
}

setup_venv() {
  venv_current && return 0
  mkdir -p .venv
  # Test binaries and this script may set up the venv at the same time; one does, the others wait.
  exec 9>.venv/chart-check.lock
  flock 9
  if ! venv_current; then
    ensure_packages "$PYTHON:python3"
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
      ensure_packages "/usr/share/doc/python3-venv:python3-venv"
      "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
        || die "python3 -m venv does not work; install python3-venv"
    fi
    log "creating $VENV with ${REQUIREMENTS[*]}"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
      "${REQUIREMENTS[@]}" >&2 || die "pip install ${REQUIREMENTS[*]} failed (PyPI unreachable?)"
    venv_current || die "$VENV does not import helm_python and kubernetes_validate after installing"
  fi
  flock -u 9
}

case "${1:-}" in
  --setup-only)
    setup_venv
    echo "$PWD/$VENV/bin/python"
    ;;
  render)
    shift
    setup_venv
    exec "$VENV/bin/python" scripts/chart_check.py render "$@"
    ;;
  "")
    setup_venv
    log "chart checks (charts/scanreport-operator)"
    exec "$VENV/bin/python" scripts/chart_check.py
    ;;
  *)
    die "usage: scripts/chart-check.sh [--setup-only | render [--name N] [--namespace NS] [--values JSON]]"
    ;;
esac
