#!/usr/bin/env bash
# Build the sdist and the wheel, check their metadata (twine --strict), and
# install the wheel without extras into a clean virtualenv: the backend, the
# middleware and the decorators import and Django's checks pass there.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
DIST=.run/dist
rm -rf "$DIST" build
.venv/bin/python -m build --sdist --wheel --outdir "$DIST" . >.run/build.log 2>&1 ||
  { grep -v "^WARNING: Location" .run/build.log >&2; exit 1; }
.venv/bin/python -m twine check --strict "$DIST"/*

sdist=$(ls "$DIST"/*.tar.gz)
wheel=$(ls "$DIST"/*.whl)
# The sdist carries no test tree (the tests need the repository's settings and
# services); it does carry the licence.
listing=$(tar tzf "$sdist")
if grep -E '^[^/]+/tests/' <<<"$listing"; then
  echo "the sdist carries a test tree" >&2
  exit 1
fi
grep -qE '^[^/]+/LICENSE$' <<<"$listing" || { echo "the sdist lacks LICENSE" >&2; exit 1; }
.venv/bin/python - "$wheel" <<'PY'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
for member in (
    "keyrunes_django/py.typed",
    "keyrunes_django/templates/registration/login.html",
    "keyrunes_django/migrations/0001_initial.py",
):
    assert member in names, f"the wheel lacks {member}"
assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "the wheel lacks LICENSE"
assert not any(n.startswith("tests/") for n in names), "the wheel carries the tests"
PY

venv=.run/venvs/wheel-only
rm -rf "$venv"
"$(find_python 3.11)" -m venv "$venv"
"$venv/bin/python" -m pip install -q "$wheel" >.run/wheel-install.log 2>&1 ||
  { grep -v "^WARNING: Location" .run/wheel-install.log >&2; exit 1; }
# Outside the checkout, so the installed wheel is what gets imported.
(cd "$venv" && bin/python - <<'PY'
import importlib.util

import django
from django.conf import settings

for extra in ("rest_framework", "werkzeug", "redis", "psycopg"):
    assert importlib.util.find_spec(extra) is None, f"{extra} came without its extra"
settings.configure(
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "keyrunes_django",
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    AUTHENTICATION_BACKENDS=["keyrunes_django.backends.KeyrunesBackend"],
    KEYRUNES={"BASE_URL": "https://auth.example.com"},
)
django.setup()
import keyrunes_django
import keyrunes_django.backends
import keyrunes_django.decorators
import keyrunes_django.middleware
from django.core.management import call_command

assert keyrunes_django.__file__.startswith(__import__("sys").prefix), keyrunes_django.__file__
call_command("check", "--fail-level", "WARNING")
print(f"wheel {keyrunes_django.__version__}: backend, middleware, decorators import without extras")
PY
)
