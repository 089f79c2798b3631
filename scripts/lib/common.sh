# Shared helpers for scripts/*.sh. Source it; it defines functions and sets nothing else.

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Installs Debian packages that provide the given commands/files when missing. Arguments are
# pairs "path-or-command:package". Only root can install; others get a clear message.
ensure_packages() {
  local missing=() pair what pkg
  for pair in "$@"; do
    what=${pair%%:*}; pkg=${pair#*:}
    if [[ $what == /* ]]; then [[ -e $what ]] && continue; else command -v "$what" >/dev/null 2>&1 && continue; fi
    missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    die "missing packages: ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

# Starts a throwaway PostgreSQL 15 cluster on a free loopback port and exports DATABASE_URL.
# The cluster lives in a temp dir and is stopped and removed by pg_stop (call it from a trap).
# PG_SERVER_OPTIONS adds server options (e.g. "-c shared_preload_libraries=pg_stat_statements").
pg_start() {
  ensure_packages "$PG_BIN/initdb:postgresql-15"
  PG_DIR=$(mktemp -d /tmp/scanreport-pg.XXXXXX)
  local port; port=$(free_port)
  local as=()
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres:postgres "$PG_DIR"
    as=(runuser -u postgres --)
  fi
  log "starting throwaway PostgreSQL on 127.0.0.1:$port ($PG_DIR)"
  "${as[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync -E UTF8 >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
  "${as[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/data/server.log" -w -t 60 \
    -o "-p $port -k $PG_DIR/data -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off ${PG_SERVER_OPTIONS:-}" \
    start >/dev/null || { cat "$PG_DIR/data/server.log" >&2; die "PostgreSQL did not start"; }
  PG_PORT=$port
  PG_AS=("${as[@]}")
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

# Stops and removes the cluster pg_start made; a no-op when there is none.
pg_stop() {
  [[ -n ${PG_DIR:-} && -d $PG_DIR ]] || return 0
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
  PG_DIR=
}
