#!/usr/bin/env bash
# Start or stop the throwaway PostgreSQL cluster and Redis server the tests use.
#   scripts/services.sh start   -> prints the environment to export
#   scripts/services.sh stop
# Both listen on loopback only. Ports: PG_PORT / REDIS_PORT, else free ones
# picked at start (so two runs on one machine do not clash). PostgreSQL is the
# newest version under /usr/lib/postgresql (or PG_BIN). Its data lives in a
# fresh directory under /tmp owned by the postgres user, who may not be able
# to reach the checkout (e.g. one under /root). What `stop` needs is kept in
# .run/services.env.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
RUN_DIR="$PWD/.run"
STATE="$RUN_DIR/services.env"

as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

find_pg_bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  echo "${dir:-}"
}

start() {
  mkdir -p "$RUN_DIR"
  # A run that died without stopping its services left them behind: stop those first.
  stop
  local pg_bin pg_port redis_port pg_data
  pg_bin=$(find_pg_bin)
  if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "PostgreSQL is missing under /usr/lib/postgresql (scripts/install-system-packages.sh installs it)" >&2
    exit 1
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server is missing (scripts/install-system-packages.sh installs it)" >&2
    exit 1
  fi
  pg_port="${PG_PORT:-$(free_port)}"
  redis_port="${REDIS_PORT:-$(free_port)}"
  pg_data=$(mktemp -d /tmp/keyrunes-pg.XXXXXX)
  # PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
  if [ "$(id -u)" = 0 ]; then chown postgres "$pg_data"; fi
  cat >"$STATE" <<STATE
PG_BIN=$pg_bin
PG_DATA=$pg_data
PG_PORT=$pg_port
REDIS_PORT=$redis_port
STATE
  as_postgres "$pg_bin/initdb" -D "$pg_data/data" -U postgres --auth=trust -E UTF8 >"$RUN_DIR/initdb.log" 2>&1
  as_postgres "$pg_bin/pg_ctl" -D "$pg_data/data" -l "$pg_data/postgres.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $pg_port -k $pg_data -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null
  redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --daemonize yes --pidfile "$RUN_DIR/redis.pid" --logfile "$RUN_DIR/redis.log"
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "export PGHOST=127.0.0.1 PGPORT=$pg_port PGUSER=postgres KEYRUNES_TEST_REDIS_URL=redis://127.0.0.1:$redis_port/0"
}

stop() {
  [ -f "$STATE" ] || return 0
  local PG_BIN PG_DATA PG_PORT REDIS_PORT
  # shellcheck disable=SC1090
  source "$STATE"
  if [ -f "$PG_DATA/data/PG_VERSION" ]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA/data" -m fast stop >/dev/null 2>&1 || true
  fi
  case "$PG_DATA" in /tmp/keyrunes-pg.*) rm -rf "$PG_DATA" ;; esac
  if [ -f "$RUN_DIR/redis.pid" ]; then
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$(cat "$RUN_DIR/redis.pid")" 2>/dev/null || true
    rm -f "$RUN_DIR/redis.pid"
  fi
  rm -f "$STATE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
