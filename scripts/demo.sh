#!/usr/bin/env bash
# One command to see the app work: the example project against the embedded emulator.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo "The demo (example project + seeded emulator) is not built yet; see issue 'Operations and showcase'." >&2
echo "What exists today: .venv/bin/python manage.py check" >&2
.venv/bin/python manage.py check
