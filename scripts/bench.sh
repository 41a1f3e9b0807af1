#!/usr/bin/env bash
# The benchmarks (CONTRIBUTING.md: `make bench`): bulk user sync, then request
# authentication. Extra arguments go to the request-authentication script,
# e.g. `bash scripts/bench.sh --rounds 10 --lru-tokens 100000`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  bash scripts/bootstrap.sh
fi
.venv/bin/python benchmarks/bench_sync_users.py  # bulk user sync vs one by one (>= 10x)
exec .venv/bin/python benchmarks/bench_request_auth.py "$@"
