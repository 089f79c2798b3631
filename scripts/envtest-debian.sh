#!/usr/bin/env bash
# FALLBACK for machines without Go >= 1.21: kube-apiserver 1.20.2 from Debian sources.
# CI and scripts/envtest.sh use the current version built from Go modules instead.
# Provide a kube-apiserver and an etcd binary for the integration tests
# (the "envtest" convention used by controller-runtime and friends).
#
# Prints the directory that holds both binaries as the only line on stdout.
# Everything else (progress, errors) goes to stderr.
#
# Resolution order:
#   1. $KUBEBUILDER_ASSETS, if it holds both `kube-apiserver` and `etcd`.
#   2. The cache at ${XDG_CACHE_HOME:-$HOME/.cache}/scanreport-operator/envtest/v1.20.2/.
#   3. A build from Debian bookworm's `kubernetes` source package
#      (upstream 1.20.5+really1.20.2, i.e. kube-apiserver v1.20.2) plus Debian's `etcd-server` (3.4.x).
#      Needs network access to the Debian archive and takes several minutes.
#
# The build is serialised with flock(1) on a lock file next to the cache, is
# done in a temporary directory, and the finished directory is moved into place
# with a single rename, so concurrent callers either wait for the build or see
# a complete cache. See docs/envtest.md.
set -euo pipefail

ENVTEST_VERSION=v1.20.2
DEB_SOURCE=kubernetes
DEB_SOURCE_VERSION=1.20.5+really1.20.2
DEB_SUITE=bookworm
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
REQUIRED_PACKAGES=(golang-go etcd-server rsync jq golang-github-modern-go-reflect2-dev)

log() { printf 'envtest: %s\n' "$*" >&2; }
die() {
    printf 'envtest: error: %s\n' "$*" >&2
    exit 1
}

have_bins() { [ -x "$1/kube-apiserver" ] && [ -x "$1/etcd" ]; }

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
DEST="$CACHE_ROOT/$ENVTEST_VERSION"
if have_bins "$DEST"; then
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
# Somebody else may have finished while we waited.
if have_bins "$DEST"; then
    printf '%s\n' "$DEST"
    exit 0
fi

# We hold the lock, so any leftover build directory belongs to a run that died.
for stale in "$CACHE_ROOT"/build.??????; do
    [ -e "$stale" ] || continue
    log "removing stale build directory $stale"
    rm -rf "$stale"
done

START=$(date +%s)
elapsed() { echo "$(($(date +%s) - START))s"; }

WORK=$(mktemp -d "$CACHE_ROOT/build.XXXXXX")
HEARTBEAT_PID=
# The unpacked and built source tree is about 1 GiB; never leave it behind.
remove_work() {
    chmod -R u+w "$WORK" 2>/dev/null || true
    rm -rf "$WORK"
}
cleanup() {
    local rc=$?
    if [ -n "$HEARTBEAT_PID" ]; then
        kill "$HEARTBEAT_PID" 2>/dev/null || true
        wait "$HEARTBEAT_PID" 2>/dev/null || true
    fi
    remove_work
    if [ "$rc" -ne 0 ]; then
        log "build FAILED after $(elapsed); log: $BUILD_LOG"
    fi
}
BUILD_LOG="$CACHE_ROOT/last-build.log"
: >"$BUILD_LOG"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "no cached binaries in $DEST; building kube-apiserver $ENVTEST_VERSION (takes several minutes)"
log "build log: $BUILD_LOG"

# Run a command with its output going to the build log; on failure show the tail.
run_logged() {
    local what=$1
    shift
    printf '\n=== %s: %s\n' "$what" "$*" >>"$BUILD_LOG"
    if ! "$@" >>"$BUILD_LOG" 2>&1; then
        printf 'envtest: ---- last lines of %s ----\n' "$BUILD_LOG" >&2
        tail -n 40 "$BUILD_LOG" >&2
        die "$what failed (see $BUILD_LOG)"
    fi
}

# --- step 1: build dependencies --------------------------------------------
missing=()
for pkg in "${REQUIRED_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        die "missing packages: ${missing[*]}; install them (apt-get install ${missing[*]}) or set KUBEBUILDER_ASSETS"
    fi
    log "[1/5] installing build dependencies: ${missing[*]}"
    run_logged "apt-get update" apt-get update
    run_logged "apt-get install" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
else
    log "[1/5] build dependencies already installed"
fi
command -v go >/dev/null || die "go not found on PATH after installing golang-go"
[ -x /usr/bin/etcd ] || die "/usr/bin/etcd not found (package etcd-server)"
[ -d "$REFLECT2_SRC" ] || die "$REFLECT2_SRC not found (package golang-github-modern-go-reflect2-dev)"
log "      $(go version)"

# --- step 2: fetch the source through a private sources list ------------------
# Use the mirror the machine is already configured with.
find_mirror() {
    local f=/etc/apt/sources.list.d/debian.sources
    if [ -r "$f" ]; then
        # deb822: first stanza whose Suites contains exactly "$DEB_SUITE".
        awk -v suite="$DEB_SUITE" '
            function flush() {
                if (uris != "" && (" " suites " ") ~ (" " suite " ")) { print uris; found = 1; exit }
                uris = ""; suites = ""
            }
            /^[[:space:]]*$/ { flush(); next }
            /^[[:space:]]*#/ { next }
            tolower($1) == "uris:" { uris = $2 }
            tolower($1) == "suites:" { $1 = ""; suites = $0; gsub(/^[[:space:]]+|[[:space:]]+$/, "", suites) }
            END { if (!found) flush() }
        ' "$f"
        return
    fi
    # One-line format fallback.
    if [ -r /etc/apt/sources.list ]; then
        awk -v suite="$DEB_SUITE" '
            $1 == "deb" || $1 == "deb-src" {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' /etc/apt/sources.list
    fi
}
MIRROR=$(find_mirror | head -n 1)
[ -n "$MIRROR" ] || die "could not find a '$DEB_SUITE' mirror URI in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
[ -r "$KEYRING" ] || die "$KEYRING not found (package debian-archive-keyring)"

APT_DIR="$WORK/apt"
mkdir -p "$APT_DIR/lists/partial" "$WORK/download"
printf 'deb-src [signed-by=%s] %s %s main\n' "$KEYRING" "$MIRROR" "$DEB_SUITE" >"$APT_DIR/sources.list"
APT_OPTS=(
    -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$APT_DIR/lists"
)
if [ "$(id -u)" -eq 0 ]; then
    # apt drops to the _apt user for downloads, which cannot write into our
    # private (0700) work directory.
    APT_OPTS+=(-o "APT::Sandbox::User=root")
fi
log "[2/5] downloading source package $DEB_SOURCE=$DEB_SOURCE_VERSION from $MIRROR"
run_logged "apt-get update (private source list)" apt-get "${APT_OPTS[@]}" update
# Not pinned to the Debian revision (1.1+deb12u1 today): a stable point
# release may bump it; the upstream tarball is checked below.
(cd "$WORK/download" && run_logged "apt-get source" apt-get "${APT_OPTS[@]}" source --download-only "$DEB_SOURCE")
ORIG="$WORK/download/${DEB_SOURCE}_${DEB_SOURCE_VERSION}.orig.tar.gz"
if [ ! -f "$ORIG" ]; then
    die "expected $(basename "$ORIG") but the archive provides: $(cd "$WORK/download" && ls | tr '\n' ' ')"
fi
log "      unpacking $(basename "$ORIG") ($(du -h "$ORIG" | cut -f1))"
mkdir -p "$WORK/src"
run_logged "unpack" tar -xzf "$ORIG" -C "$WORK/src" --strip-components=1
rm -rf "$WORK/download"
SRC="$WORK/src"
[ -f "$SRC/cmd/kube-apiserver/apiserver.go" ] || die "unexpected source layout in $ORIG"

# --- step 3: patch the vendored reflect2 --------------------------------------
# reflect2 1.0.1 reads Go runtime internals that changed in Go 1.18; the
# apiserver then segfaults in mapiterinit when it stores a custom resource.
log "[3/5] replacing vendored github.com/modern-go/reflect2 with Debian's $(basename "$REFLECT2_SRC") (1.0.2)"
V="$SRC/vendor/github.com/modern-go/reflect2"
[ -d "$V" ] || die "vendored reflect2 not found at $V"
rm -rf "$V"
mkdir -p "$V"
cp -rL "$REFLECT2_SRC"/. "$V"/
rm -f "$V/go.mod" "$V/go.sum"

# --- step 4: build kube-apiserver ---------------------------------------------
log "[4/5] building kube-apiserver (make WHAT=cmd/kube-apiserver); about 6 minutes on 2 cores"
mkdir -p "$SRC/.go/src/k8s.io" "$WORK/home"
ln -s ../../.. "$SRC/.go/src/k8s.io/kubernetes"
(
    exec 9>&-
    while sleep 60 && kill -0 $$ 2>/dev/null; do log "      ... still building ($(elapsed) elapsed)"; done
) &
HEARTBEAT_PID=$!
(cd "$SRC" && run_logged "make" env GOPATH="$SRC/.go" CGO_ENABLED=0 HOME="$WORK/home" \
    GOCACHE="$WORK/home/go-build" GOFLAGS= make WHAT=cmd/kube-apiserver)
kill "$HEARTBEAT_PID" 2>/dev/null || true
wait "$HEARTBEAT_PID" 2>/dev/null || true
HEARTBEAT_PID=
[ -x "$SRC/_output/bin/kube-apiserver" ] || die "make succeeded but $SRC/_output/bin/kube-apiserver is missing"

# --- step 5: assemble and publish ----------------------------------------------
log "[5/5] installing into $DEST"
OUT="$WORK/out"
mkdir -p "$OUT"
cp "$SRC/_output/bin/kube-apiserver" "$OUT/kube-apiserver"
cp /usr/bin/etcd "$OUT/etcd"
chmod 0755 "$OUT/kube-apiserver" "$OUT/etcd"
{
    echo "kube-apiserver: $("$OUT/kube-apiserver" --version 2>&1 | head -n 1) (Debian source $DEB_SOURCE $DEB_SOURCE_VERSION, reflect2 from $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev))"
    echo "etcd: $("$OUT/etcd" --version 2>&1 | head -n 1) (Debian etcd-server $(dpkg-query -W -f='${Version}' etcd-server))"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) with $(go version)"
} >"$OUT/VERSIONS"
have_bins "$OUT" || die "assembled directory is incomplete"
# A half-populated directory (e.g. someone deleted one binary) is replaced.
if [ -e "$DEST" ]; then
    rm -rf "$DEST"
fi
mv -T "$OUT" "$DEST"
log "removing the build tree"
remove_work
log "done in $(elapsed):"
sed 's/^/envtest:       /' "$DEST/VERSIONS" >&2
printf '%s\n' "$DEST"
