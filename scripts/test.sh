#!/usr/bin/env bash
# `make test`, which CI runs through .ci/run: install what is missing, lint,
# type-check, build the docs and the package, then the test suite on every
# leg of the matrix (see CONTRIBUTING.md). Each step prints its time; a failed
# step does not stop the others, and the run exits 1 if any failed.
# Arguments go to pytest in every leg, e.g. `bash scripts/test.sh -k backend`.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
# Each leg says which database it uses; nothing from the caller's shell decides it.
unset KEYRUNES_TEST_DATABASE KEYRUNES_TEST_REDIS_URL PGHOST PGPORT PGUSER
mkdir -p .run
TIMINGS_FILE=$(mktemp .run/timings.XXXXXX)
export TIMINGS_FILE
START=$(date +%s)

stop_services() { bash scripts/services.sh stop; }
trap stop_services EXIT

step() { timed "$@" || true; }

# Without these nothing else can run.
timed "system packages" bash scripts/install-system-packages.sh || exit 1
timed "bootstrap .venv" bash scripts/bootstrap.sh || exit 1

step "ruff" .venv/bin/ruff check .
step "mypy" .venv/bin/mypy
step "migrations up to date" .venv/bin/python manage.py makemigrations --check --dry-run --settings=tests.settings
step "docs (sphinx -W)" bash scripts/docs.sh
step "sdist + wheel" bash scripts/package-check.sh

step "py310-dj42 (SQLite)" bash scripts/leg.sh py310-dj42 3.10 \
  "Django>=4.2,<5.0" "djangorestframework>=3.15,<3.16" "PyJWT==2.12.0" -- -q "$@"

# A subshell, so the services' environment does not reach the legs after it.
main_leg() (
  rm -f .coverage .coverage.*
  LEG_RUNNER="coverage run -p -m pytest" bash scripts/leg.sh py311-dj52 3.11 \
    "Django>=5.2,<6.0" "djangorestframework" -- -q "$@" || exit 1
  eval "$(bash scripts/services.sh start)" || exit 1
  echo "== py311-dj52 on PostgreSQL with Redis"
  status=0
  KEYRUNES_TEST_DATABASE=postgres LEG_RUNNER="coverage run -p -m pytest" \
    bash scripts/leg.sh py311-dj52 3.11 "Django>=5.2,<6.0" "djangorestframework" -- -q "$@" ||
    status=1
  stop_services
  # The 95% floor holds for the whole suite; a run narrowed by pytest arguments only reports.
  floor=95
  [ $# -gt 0 ] && floor=0
  .run/venvs/py311-dj52/bin/python -m coverage combine -q &&
    .run/venvs/py311-dj52/bin/python -m coverage report --fail-under="$floor" || status=1
  exit "$status"
)
step "py311-dj52 (SQLite, PostgreSQL + Redis, coverage)" main_leg "$@"

step "py313-dj60 (SQLite)" bash scripts/leg.sh py313-dj60 3.13 \
  "Django>=6.0,<6.1" "djangorestframework" -- -q "$@"

echo
echo "== summary"
failed=0
python3 - "$TIMINGS_FILE" "$(( $(date +%s) - START ))" <<'PY' || failed=1
import sys

rows = []
for line in open(sys.argv[1]):
    *label, seconds, status = line.split()
    rows.append((" ".join(label), int(seconds), int(status)))
for label, seconds, status in rows:
    print(f"  {'ok    ' if status == 0 else 'FAILED'}  {seconds // 60:3d}m{seconds % 60:02d}s  {label}")
total = int(sys.argv[2])
print(f"  total {total // 60}m{total % 60:02d}s")
sys.exit(1 if any(status for *_, status in rows) else 0)
PY
rm -f "$TIMINGS_FILE"
exit "$failed"
