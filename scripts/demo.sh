#!/usr/bin/env bash
# `make demo`: the example project against a seeded Keyrunes emulator.
#
#   make demo                         # emulator on a free loopback port + site on 127.0.0.1:8000
#                                     # (or a free port when 8000 is taken)
#   DEMO_PORT=8080 make demo          # another port for the site
#   KEYRUNES_URL=https://kr.example make demo   # a real Keyrunes instead of the emulator
#                                     # (also set KEYRUNES_JWT_SECRET / KEYRUNES_ORGANIZATION_KEY if you have them)
#   DEMO_CHECK=1 make demo            # non-interactive: start, fetch a few pages and one API call, print OK, exit
#   DEMO_WAIT=20                      # seconds to wait for Keyrunes to answer
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source scripts/lib.sh
PY="$ROOT/.venv/bin/python"
RUN="$ROOT/.run"
if [ -z "${DEMO_PORT:-}" ]; then
  DEMO_PORT=8000
  # Another demo (or anything else) has 8000: take a free port rather than fail.
  if ! python3 -c 'import socket; socket.create_server(("127.0.0.1", 8000)).close()' 2>/dev/null; then
    DEMO_PORT=$(free_port)
    echo "Port 8000 is taken; the site uses $DEMO_PORT."
  fi
fi
mkdir -p "$RUN"

# A fresh machine gets the virtualenv; an existing one that already works is left alone.
if ! "$PY" -c "import django, rest_framework, keyrunes_django, drf_spectacular, ninja, channels" >/dev/null 2>&1; then
  echo "Setting up .venv (scripts/bootstrap.sh)..."
  bash scripts/bootstrap.sh
fi

export DJANGO_SETTINGS_MODULE=example_project.settings
export EXAMPLE_DB="${EXAMPLE_DB:-$RUN/example.sqlite3}"
# Demo only: the home page shows a signed-in user a curl line with their own token.
export EXAMPLE_SHOW_API_TOKEN=1

EMULATOR_PID=""
SERVER_PID=""
out=""
cleanup() {
  if [ -n "$out" ]; then rm -f "$out"; fi
  # Stop only what this script started.
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [ -n "$EMULATOR_PID" ]; then kill "$EMULATOR_PID" 2>/dev/null || true; wait "$EMULATOR_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ADMIN_EMAIL="admin@example.com"
ADMIN_PASSWORD="Admin-Pass-1"

if [ -z "${KEYRUNES_URL:-}" ]; then
  export KEYRUNES_JWT_SECRET="${KEYRUNES_JWT_SECRET:-demo-only-jwt-secret-0123456789abcdef}"
  # A file of its own, so two demos (or a demo and the test suite) never read each other's URL.
  out=$(mktemp "$RUN/emulator-url.XXXXXX")
  "$PY" -m keyrunes_django.testing.server --host 127.0.0.1 --port 0 \
    --jwt-secret "$KEYRUNES_JWT_SECRET" \
    --superadmin "$ADMIN_EMAIL:$ADMIN_PASSWORD" --superadmin-username admin \
    --seed example_project/seed.json >"$out" 2>"$RUN/emulator.log" &
  EMULATOR_PID=$!
  # The emulator prints its URL once it accepts connections.
  for _ in $(seq 1 100); do
    if [ -s "$out" ]; then break; fi
    if ! kill -0 "$EMULATOR_PID" 2>/dev/null; then
      echo "The emulator did not start:" >&2
      cat "$RUN/emulator.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  KEYRUNES_URL=$(head -n 1 "$out")
  if [ -z "$KEYRUNES_URL" ]; then
    echo "The emulator did not report its URL in time." >&2
    exit 1
  fi
  export KEYRUNES_URL
  # Demo only: the emulator has no mail, so the site shows the reset link.
  export KEYRUNES_SHOW_RESET_LINK=1
  EMULATED=1
else
  export KEYRUNES_URL
  EMULATED=0
fi

# Wait until Keyrunes answers, then (emulator only) fetch organization 1's key
# as the superadmin, for policy checks and the org-key API.
"$PY" - <<'EOF'
import os
import sys
import time

import django

django.setup()
from keyrunes_django.client import get_client  # noqa: E402
from keyrunes_django.exceptions import KeyrunesError  # noqa: E402

deadline = time.monotonic() + float(os.environ.get("DEMO_WAIT", "20"))
while True:
    try:
        get_client().health()
        break
    except KeyrunesError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"Keyrunes at {os.environ['KEYRUNES_URL']} is not answering: {exc}")
        time.sleep(0.2)
EOF
if [ "$EMULATED" = 1 ] && [ -z "${KEYRUNES_ORGANIZATION_KEY:-}" ]; then
  KEYRUNES_ORGANIZATION_KEY=$(ADMIN_EMAIL="$ADMIN_EMAIL" ADMIN_PASSWORD="$ADMIN_PASSWORD" "$PY" -c '
import os, django
django.setup()
from keyrunes_django.client import get_client
client = get_client()
token = client.login(os.environ["ADMIN_EMAIL"], os.environ["ADMIN_PASSWORD"]).token
print(client.org_secret(token).secret_key)
')
  export KEYRUNES_ORGANIZATION_KEY
fi

"$PY" manage.py migrate --noinput -v 0

URL="http://127.0.0.1:$DEMO_PORT/"
banner() {
  echo
  echo "Keyrunes example site: $URL"
  echo "Keyrunes:              $KEYRUNES_URL$([ "$EMULATED" = 1 ] && echo ' (embedded emulator, seeded from example_project/seed.json)')"
  if [ "$EMULATED" = 1 ]; then
    echo "Demo users (log in with username or email):"
    echo "  alice / Alice-Pass-1   groups users, editors (may read and write docs:*)"
    echo "  bob   / Bob-Pass-1     group users (may read docs:*)"
    echo "  admin / $ADMIN_PASSWORD   global superadmin (Django admin at ${URL}admin/)"
  fi
  echo "API:                   ${URL}api/me/  (sign in: the home page shows a curl line with your token)"
  echo "OpenAPI:               ${URL}api/schema/  Swagger UI: ${URL}api/schema/swagger/"
  echo "django-ninja:          ${URL}ninja/me  Swagger UI: ${URL}ninja/docs"
  echo "Probes:                ${URL}health/ready/  ${URL}health/metrics/"
  echo "Websockets:            daphne example_project.asgi:application (see example_project/consumers.py)"
  echo
}

if [ -n "${DEMO_CHECK:-}" ]; then
  "$PY" manage.py runserver "127.0.0.1:$DEMO_PORT" --noreload >"$RUN/demo-server.log" 2>&1 &
  SERVER_PID=$!
  banner
  DEMO_URL="$URL" "$PY" - <<'EOF'
import json
import os
import sys
import time
import urllib.error
import urllib.request

import django

django.setup()
from keyrunes_django.client import get_client  # noqa: E402

base = os.environ["DEMO_URL"]


def fetch(path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(base + path.lstrip("/"), headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


deadline = time.monotonic() + 30
while True:
    try:
        status, body = fetch("/")
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("the example site did not start (see .run/demo-server.log)")
        time.sleep(0.2)
checks = []
checks.append(("home", status == 200 and b"Keyrunes example site" in body))
status, body = fetch("/login/")
checks.append(("login page", status == 200 and b'name="password"' in body))
# Against a real Keyrunes, name an existing account with KEYRUNES_DEMO_IDENTITY/PASSWORD.
identity = os.environ.get("KEYRUNES_DEMO_IDENTITY", "alice")
password = os.environ.get("KEYRUNES_DEMO_PASSWORD", "Alice-Pass-1")
token = get_client().login(identity, password).token
status, body = fetch("/api/me/", {"Authorization": f"Bearer {token}", "Accept": "application/json"})
caller = json.loads(body).get("caller", {}) if status == 200 else {}
checks.append(("API /api/me/ with a bearer token", caller.get("username") == identity))
status, body = fetch("/ninja/me", {"Authorization": f"Bearer {token}"})
checks.append(("ninja /ninja/me", status == 200 and json.loads(body).get("username") == identity))
status, body = fetch("/api/schema/", {"Accept": "application/vnd.oai.openapi+json"})
checks.append(("OpenAPI schema", status == 200 and b"keyrunesBearer" in body))
status, body = fetch("/health/ready/")
checks.append(("readiness probe", status == 200 and json.loads(body).get("status") == "ok"))
for name, ok in checks:
    print(f"  {name}: {'ok' if ok else 'FAILED'}")
if not all(ok for _, ok in checks):
    sys.exit(1)
print("OK")
EOF
  exit 0
fi

banner
echo "Press Ctrl-C to stop (the emulator stops with the site)."
"$PY" manage.py runserver "127.0.0.1:$DEMO_PORT" --noreload &
SERVER_PID=$!
wait "$SERVER_PID"
