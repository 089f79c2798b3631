#!/usr/bin/env bash
# Provide a kube-apiserver and an etcd binary for the integration tests
# (the "envtest" convention used by controller-runtime and friends).
#
# Prints the directory that holds both binaries as the only line on stdout. A directory this
# script built also holds the matching `kubectl`, which the tests prefer to the one on PATH.
# Everything else (progress, errors) goes to stderr.
#
# Resolution order:
#   1. $KUBEBUILDER_ASSETS, if it holds both `kube-apiserver` and `etcd`.
#   2. The cache ${XDG_CACHE_HOME:-$HOME/.cache}/scanreport-operator/envtest/k8s-<v>-etcd-<v>/.
#   3. A build with `go build` through the Go module proxy from the wrapper modules in
#      tools/envtest/ (kube-apiserver and kubectl from k8s.io/kubernetes, etcd from
#      go.etcd.io/etcd/server/v3),
#      whose go.mod/go.sum pin every version. About 10 minutes on 2 cores when cold.
#
# ENVTEST_SOURCE=debian selects the old Kubernetes 1.20 build from Debian sources
# (scripts/envtest-debian.sh), for machines without Go; see docs/envtest.md.
#
# The build is serialised with flock(1) on a lock file next to the cache, is
# done in a temporary directory, and the finished directory is moved into place
# with a single rename, so concurrent callers either wait for the build or see
# a complete cache.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TOOLS=$(cd "$HERE/../tools/envtest" && pwd)

log() { printf 'envtest: %s\n' "$*" >&2; }
die() {
    printf 'envtest: error: %s\n' "$*" >&2
    exit 1
}
have_bins() { [ -x "$1/kube-apiserver" ] && [ -x "$1/etcd" ]; }

if [ "${ENVTEST_SOURCE:-go}" = debian ]; then
    exec "$HERE/envtest-debian.sh"
fi

# The version a wrapper module requires of a module, read from its go.mod (one source of truth).
mod_version() {
    awk -v m="$2" '($1 == "require" && $2 == m) { print $3; exit } ($1 == m && $2 ~ /^v/) { print $2; exit }' "$1/go.mod"
}
KUBE_VERSION=$(mod_version "$TOOLS/kube-apiserver" k8s.io/kubernetes)
ETCD_VERSION=$(mod_version "$TOOLS/etcd" go.etcd.io/etcd/server/v3)
[ -n "$KUBE_VERSION" ] && [ -n "$ETCD_VERSION" ] || die "cannot read the pinned versions from $TOOLS/*/go.mod"

# 1. KUBEBUILDER_ASSETS
if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
    if have_bins "$KUBEBUILDER_ASSETS"; then
        printf '%s\n' "$KUBEBUILDER_ASSETS"
        exit 0
    fi
    log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS does not contain executable kube-apiserver and etcd; ignoring it"
fi

# 2. Cache
CACHE_ROOT="${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/scanreport-operator/envtest"
DEST="$CACHE_ROOT/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION"
complete() { have_bins "$1" && [ -x "$1/kubectl" ] && [ -f "$1/VERSIONS" ]; }
if complete "$DEST"; then
    printf '%s\n' "$DEST"
    exit 0
fi

# 3. Build, holding the lock.
mkdir -p "$CACHE_ROOT" || die "cannot create cache directory $CACHE_ROOT"
exec 9>"$CACHE_ROOT/.lock"
if ! flock -n 9; then
    log "another process is preparing the binaries; waiting for the lock on $CACHE_ROOT/.lock"
    flock 9
fi
if complete "$DEST"; then
    printf '%s\n' "$DEST"
    exit 0
fi
for stale in "$CACHE_ROOT"/build.??????; do
    [ -e "$stale" ] || continue
    log "removing stale build directory $stale"
    rm -rf "$stale"
done

# shellcheck source=lib/go.sh
source "$HERE/lib/go.sh"
pick_go "$TOOLS/kube-apiserver" || die "no Go >= 1.21 found (tried \$GO, /usr/local/go/bin/go, go on PATH); install Go, set GO=/path/to/go, or use ENVTEST_SOURCE=debian for the Kubernetes 1.20 fallback (docs/envtest.md)"

START=$(date +%s)
elapsed() { echo "$(($(date +%s) - START))s"; }
WORK=$(mktemp -d "$CACHE_ROOT/build.XXXXXX")
HEARTBEAT_PID=
BUILD_LOG="$CACHE_ROOT/last-build.log"
: >"$BUILD_LOG"
cleanup() {
    local rc=$?
    if [ -n "$HEARTBEAT_PID" ]; then
        kill "$HEARTBEAT_PID" 2>/dev/null || true
        wait "$HEARTBEAT_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    if [ "$rc" -ne 0 ]; then
        log "build FAILED after $(elapsed); log: $BUILD_LOG"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export CGO_ENABLED=0 GOFLAGS="-mod=readonly -trimpath -buildvcs=false"
GO_DESC="$("$GO_BIN" version) (GOTOOLCHAIN=$GOTOOLCHAIN)"
log "no cached binaries in $DEST"
log "building kube-apiserver $KUBE_VERSION and etcd $ETCD_VERSION with $GO_DESC"
log "about 10 minutes on 2 cores when the Go caches are cold; build log: $BUILD_LOG"

# Progress: `go build -v` prints each package as it is compiled.
(
    # Not the lock: a heartbeat outliving a failed build must not keep others waiting.
    exec 9>&-
    while sleep 30 && kill -0 $$ 2>/dev/null; do
        log "      ... $(grep -c '^[a-z]' "$BUILD_LOG" 2>/dev/null || echo 0) packages compiled ($(elapsed) elapsed)"
    done
) &
HEARTBEAT_PID=$!

build() {
    local what=$1 module=$2 pkg=$3 out=$4
    shift 4
    log "[$what] go build $pkg"
    printf '\n=== %s: go build %s\n' "$what" "$pkg" >>"$BUILD_LOG"
    if ! (cd "$module" && "$GO_BIN" build -v -o "$out" "$@" "$pkg") >>"$BUILD_LOG" 2>&1; then
        printf 'envtest: ---- last lines of %s ----\n' "$BUILD_LOG" >&2
        tail -n 40 "$BUILD_LOG" >&2
        die "building $pkg failed (see $BUILD_LOG)"
    fi
}

MINOR=$(echo "$KUBE_VERSION" | cut -d. -f2)
VERSION_PKG=k8s.io/component-base/version
# `kubectl version` and the apiserver's /version report these instead of v0.0.0-master.
KUBE_LDFLAGS="-s -w -X $VERSION_PKG.gitVersion=$KUBE_VERSION -X $VERSION_PKG.gitMajor=1 -X $VERSION_PKG.gitMinor=$MINOR -X $VERSION_PKG.gitTreeState=clean -X $VERSION_PKG.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
build 1/3 "$TOOLS/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver "$WORK/kube-apiserver" -ldflags "$KUBE_LDFLAGS"
build 2/3 "$TOOLS/kube-apiserver" k8s.io/kubernetes/cmd/kubectl "$WORK/kubectl" -ldflags "$KUBE_LDFLAGS"
build 3/3 "$TOOLS/etcd" go.etcd.io/etcd/server/v3 "$WORK/etcd" -ldflags "-s -w"
kill "$HEARTBEAT_PID" 2>/dev/null || true
wait "$HEARTBEAT_PID" 2>/dev/null || true
HEARTBEAT_PID=

{
    echo "kube-apiserver: $("$WORK/kube-apiserver" --version 2>&1 | head -n 1) (k8s.io/kubernetes $KUBE_VERSION, tools/envtest/kube-apiserver)"
    echo "kubectl: $("$WORK/kubectl" version --client 2>&1 | head -n 1) (k8s.io/kubernetes $KUBE_VERSION)"
    echo "etcd: $("$WORK/etcd" --version 2>&1 | head -n 1) (go.etcd.io/etcd/server/v3 $ETCD_VERSION, tools/envtest/etcd)"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(elapsed) with $GO_DESC"
} >"$WORK/VERSIONS"
mkdir "$WORK/out"
mv "$WORK/kube-apiserver" "$WORK/kubectl" "$WORK/etcd" "$WORK/VERSIONS" "$WORK/out/"
complete "$WORK/out" || die "assembled directory is incomplete"
if [ -e "$DEST" ]; then
    rm -rf "$DEST"
fi
mv -T "$WORK/out" "$DEST"
log "done in $(elapsed):"
sed 's/^/envtest:       /' "$DEST/VERSIONS" >&2
printf '%s\n' "$DEST"
