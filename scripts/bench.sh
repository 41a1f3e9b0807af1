#!/usr/bin/env bash
# The benchmarks (README: `make bench`): bulk user sync, then request
# authentication. Extra arguments go to the request-authentication script,
# e.g. `bash scripts/bench.sh --rounds 10 --lru-tokens 100000`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  bash scripts/bootstrap.sh
fi
.venv/bin/python benchmarks/bench_sync_users.py  # bulk user sync vs one by one (>= 10x)
.venv/bin/python -c "import gunicorn, uvicorn, mozilla_django_oidc, psycopg_pool" 2>/dev/null || .venv/bin/pip install -q -e ".[bench]"
.venv/bin/python benchmarks/bench_servers.py ${BENCH_SERVERS_ARGS:-}  # real servers; BENCH_SERVERS_ARGS=--full for the long run
exec .venv/bin/python benchmarks/bench_request_auth.py "$@"
