#!/usr/bin/env bash
# Build the documentation site (Sphinx + MyST) with warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-.run/docs-html}"
rm -rf "$out"
exec .venv/bin/python -m sphinx -W --keep-going -q -b html docs "$out"
