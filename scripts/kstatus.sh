#!/usr/bin/env bash
# Provide the `kstatus` test helper (tools/kstatus): the status that
# sigs.k8s.io/cli-utils/pkg/kstatus/status, the library behind Flux's health checks, computes for
# objects given as JSON on stdin. Prints the binary's path as the only stdout line.
#
#   1. $KSTATUS_BIN, if executable;
#   2. the cache ${XDG_CACHE_HOME:-$HOME/.cache}/scanreport-operator/kstatus/<cli-utils version>/;
#   3. a `go build` of tools/kstatus through the Go module proxy (under a minute).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
MOD=$(cd "$HERE/../tools/kstatus" && pwd)
log() { printf 'kstatus: %s\n' "$*" >&2; }
die() { printf 'kstatus: error: %s\n' "$*" >&2; exit 1; }

if [ -n "${KSTATUS_BIN:-}" ] && [ -x "$KSTATUS_BIN" ]; then
    printf '%s\n' "$KSTATUS_BIN"
    exit 0
fi
VERSION=$(awk '$1 == "sigs.k8s.io/cli-utils" { print $2; exit }' "$MOD/go.mod")
[ -n "$VERSION" ] || die "cannot read the cli-utils version from $MOD/go.mod"
ROOT="${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/scanreport-operator/kstatus"
DEST="$ROOT/cli-utils-$VERSION"
if [ -x "$DEST/kstatus" ]; then
    printf '%s\n' "$DEST/kstatus"
    exit 0
fi
mkdir -p "$ROOT"
exec 9>"$ROOT/.lock"
flock 9
if [ -x "$DEST/kstatus" ]; then
    printf '%s\n' "$DEST/kstatus"
    exit 0
fi
# shellcheck source=lib/go.sh
source "$HERE/lib/go.sh"
pick_go "$MOD" || die "no Go >= 1.21 found; install Go or set GO=/path/to/go"
WORK=$(mktemp -d "$ROOT/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
log "building tools/kstatus (sigs.k8s.io/cli-utils $VERSION) with $("$GO_BIN" version)"
(cd "$MOD" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -trimpath -buildvcs=false" "$GO_BIN" build -o "$WORK/kstatus" .) >&2 \
    || die "go build of tools/kstatus failed"
rm -rf "$DEST"
mv -T "$WORK" "$DEST"
trap - EXIT
printf '%s\n' "$DEST/kstatus"
