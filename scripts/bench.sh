#!/usr/bin/env bash
# The benchmarks (CONTRIBUTING.md: `make bench`), short versions: bulk user sync,
# its scaling curve (2k and 10k users; the full curve is 10k/50k/100k), the
# servers (BENCH_SERVERS_ARGS=--full for the long run), then request
# authentication in one process (6 rounds, 100k tokens through the LRU).
# Extra arguments replace those of the request-authentication script, e.g.
# `bash scripts/bench.sh --rounds 30 --lru-tokens 1000000` for its long run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  bash scripts/bootstrap.sh
fi
.venv/bin/python benchmarks/bench_sync_users.py  # bulk user sync vs one by one (>= 10x)
.venv/bin/python benchmarks/bench_emulator.py  # emulator login and /api/me per second with keep-alive, seeding 10k users
.venv/bin/python benchmarks/bench_sync_scale.py --sizes 2000 10000  # streamed sync: linear, flat memory
.venv/bin/python -c "import gunicorn, uvicorn, mozilla_django_oidc, psycopg_pool" 2>/dev/null || .venv/bin/pip install -q -e ".[bench]"
.venv/bin/python benchmarks/bench_servers.py ${BENCH_SERVERS_ARGS:-}  # real servers; BENCH_SERVERS_ARGS=--full for the long run
if [ "$#" -eq 0 ]; then set -- --rounds 6 --lru-tokens 100000; fi
exec .venv/bin/python benchmarks/bench_request_auth.py "$@"
