#!/usr/bin/env bash
# The request-authentication benchmark (README: `make bench`). Extra
# arguments go to the script, e.g. `bash scripts/bench.sh --rounds 10`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  bash scripts/bootstrap.sh
fi
exec .venv/bin/python benchmarks/bench_request_auth.py "$@"
