# Go for building test dependencies (never the product). Source it; it defines functions only.
#
# pick_go MODULE_DIR: sets GO_BIN to a Go that can build the module in MODULE_DIR and exports
# GOTOOLCHAIN. Another `go` (say Debian's 1.19) may come first on PATH, so candidates are tried
# in order: $GO, /usr/local/go/bin/go, go on PATH, /usr/lib/go/bin/go. A Go older than the
# module's `go` line but >= 1.21 fetches GO_FALLBACK_TOOLCHAIN from the module proxy.
GO_FALLBACK_TOOLCHAIN=go1.27.3

# "1.26.8" >= "1.26.0"?
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }

pick_go() {
    local need cand v
    need=$(awk '$1 == "go" { print $2; exit }' "$1/go.mod")
    GO_BIN=
    GOTOOLCHAIN=local
    for cand in ${GO:-} /usr/local/go/bin/go "$(command -v go 2>/dev/null || true)" /usr/lib/go/bin/go; do
        [ -n "$cand" ] && [ -x "$cand" ] || continue
        v=$("$cand" env GOVERSION 2>/dev/null | sed -n 's/^go\([0-9][0-9.]*\).*/\1/p')
        [ -n "$v" ] || continue
        if version_ge "$v" "$need"; then
            GO_BIN=$cand
            GOTOOLCHAIN=local
            break
        fi
        if [ -z "$GO_BIN" ] && version_ge "$v" 1.21; then
            GO_BIN=$cand
            GOTOOLCHAIN=$GO_FALLBACK_TOOLCHAIN
        fi
    done
    export GOTOOLCHAIN
    [ -n "$GO_BIN" ]
}
