#!/usr/bin/env bash
# One leg of the CI matrix: a virtualenv of its own under .run/venvs/, the
# package installed editable with its `test` extra plus the leg's pins, then
# pytest (or LEG_RUNNER, e.g. "coverage run -p -m pytest"). Arguments after
# `--` go to pytest.
#
#   scripts/leg.sh py310-dj42 3.10 "Django>=4.2,<5.0" "djangorestframework>=3.15,<3.16" -- -x
#
# The venv is reused while the leg's requirements and pyproject.toml are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
name="$1" version="$2"
shift 2
pins=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do pins+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift

python=$(find_python "$version")
venv=".run/venvs/$name"
stamp="$venv/.installed"
want="$("$python" --version) ${pins[*]} $(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  log="$venv/install.log"
  if ! { "$venv/bin/python" -m pip install -q --upgrade pip &&
         "$venv/bin/python" -m pip install -q -e ".[test]" "${pins[@]}"; } >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" >&2
    echo "leg $name: installing its requirements failed (above)" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
fi
"$venv/bin/python" -c 'import sys, django, rest_framework, jwt
print(f"== leg {sys.argv[1]}: Python {sys.version.split()[0]}, Django {django.__version__}, "
      f"DRF {rest_framework.VERSION}, PyJWT {jwt.__version__}")' "$name"
read -r -a runner <<<"${LEG_RUNNER:-pytest}"
exec "$venv/bin/python" -m "${runner[@]}" "$@"
