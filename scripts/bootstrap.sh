#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the package with everything the demo, the
# linters and the docs need.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
PYTHON="${PYTHON:-$(find_python 3.11 2>/dev/null || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,docs]"
