#!/usr/bin/env bash
# The whole check, as CI runs it: install, lint, type-check, then the test
# suite on SQLite and on a real PostgreSQL (with a real Redis), with coverage.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-packages.sh
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

trap 'bash scripts/services.sh stop' EXIT
eval "$(bash scripts/services.sh start)"

echo "== ruff"
ruff check .
echo "== mypy"
mypy
echo "== makemigrations --check"
python manage.py makemigrations --check --dry-run --settings=tests.settings

rm -f .coverage .coverage.*
echo "== tests on SQLite"
coverage run -p -m pytest "$@"
echo "== tests on PostgreSQL (+ Redis)"
KEYRUNES_TEST_DATABASE=postgres coverage run -p -m pytest "$@"
coverage combine -q
coverage report --fail-under=90
