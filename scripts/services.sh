#!/usr/bin/env bash
# Start or stop the throwaway PostgreSQL cluster and Redis server the tests use.
#   scripts/services.sh start   -> prints the environment to export
#   scripts/services.sh stop
# Both listen on loopback only, under .run/ in the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR="$PWD/.run"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_PORT="${PG_PORT:-54329}"
REDIS_PORT="${REDIS_PORT:-63790}"
PG_DATA="$RUN_DIR/pgdata"

as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start() {
  mkdir -p "$RUN_DIR"
  if [ ! -x "$PG_BIN/initdb" ]; then
    echo "PostgreSQL 15 is missing at $PG_BIN (apt-get install postgresql-15)" >&2
    exit 1
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server is missing (scripts/install-system-packages.sh installs it)" >&2
    exit 1
  fi
  # PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
  if [ "$(id -u)" = 0 ]; then chown postgres "$RUN_DIR"; fi
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 >"$RUN_DIR/initdb.log" 2>&1
  fi
  if ! as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$RUN_DIR/postgres.log" -w -t 60 \
      -o "-h 127.0.0.1 -p $PG_PORT -k $RUN_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      start >/dev/null
  fi
  if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
      --daemonize yes --pidfile "$RUN_DIR/redis.pid" --logfile "$RUN_DIR/redis.log"
    for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  echo "export PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=postgres KEYRUNES_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
}

stop() {
  if [ -f "$PG_DATA/PG_VERSION" ]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null 2>&1 || true
  fi
  if [ -f "$RUN_DIR/redis.pid" ]; then
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$(cat "$RUN_DIR/redis.pid")" 2>/dev/null || true
    rm -f "$RUN_DIR/redis.pid"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
