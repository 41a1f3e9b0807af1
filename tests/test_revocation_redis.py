"""Two processes sharing one Redis: a revocation on one is enforced on the other in time.

Runs when ``KEYRUNES_TEST_REDIS_URL`` is set (CI's PostgreSQL run; locally
``eval "$(bash scripts/services.sh start)"``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches

from keyrunes_django import revocation

pytestmark = [
    pytest.mark.redis,
    pytest.mark.django_db,
    pytest.mark.skipif(
        not os.environ.get("KEYRUNES_TEST_REDIS_URL"), reason="KEYRUNES_TEST_REDIS_URL not set"
    ),
]

INTERVAL = 1.0

# The other instance: its own process, its own (empty) database, the same
# SECRET_KEY, Keyrunes settings and Redis. It authenticates the token through the
# middleware's path every 50 ms and reports when it is refused.
CHILD = textwrap.dedent(
    """
    import json, sys, time
    import django
    from django.conf import settings

    config = json.loads(sys.argv[1])
    settings.configure(
        SECRET_KEY=config["secret_key"],
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.auth", "django.contrib.contenttypes", "keyrunes_django",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "redis": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": config["redis"],
            },
        },
        KEYRUNES=config["keyrunes"],
    )
    django.setup()
    from django.core.management import call_command
    from django.test import RequestFactory
    from keyrunes_django.exceptions import InvalidToken
    from keyrunes_django.tokens import get_authenticator

    call_command("migrate", verbosity=0)
    header = "Bearer " + config["token"]
    request = RequestFactory().get("/", HTTP_AUTHORIZATION=header)
    auth = get_authenticator()
    assert auth.authenticate(request) is not None
    print("warm", flush=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            auth.warm(header) or auth.authenticate(request)
        except InvalidToken as exc:
            print("refused", exc.reason, time.time(), flush=True)
            break
        time.sleep(0.05)
    else:
        print("never refused", flush=True)
    """
)


def test_revocation_reaches_another_process_within_the_interval(
    keyrunes: Any, keyrunes_user: Any, settings: Any, tmp_path: Path
) -> None:
    settings.KEYRUNES = {
        **settings.KEYRUNES,
        "CACHE_ALIAS": "redis",
        "VERIFICATION_MODE": "local",
        "REVOCATION_CHECK_INTERVAL": INTERVAL,
    }
    caches["redis"].clear()
    token = keyrunes.issue_token(keyrunes_user, issued_at=int(time.time()) - 5)
    config = {
        "secret_key": settings.SECRET_KEY,
        "redis": os.environ["KEYRUNES_TEST_REDIS_URL"],
        "keyrunes": settings.KEYRUNES,
        "token": token,
    }
    script = tmp_path / "other_instance.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), json.dumps(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "warm"
        revoked_at = time.time()
        revocation.revoke_user_tokens(
            revocation.Subject(keyrunes_user.namespace, keyrunes_user.user_id), reason="test"
        )
        line = child.stdout.readline().split()
        child.wait(timeout=30)
    finally:
        child.kill()
        caches["redis"].clear()
    assert line[:2] == ["refused", "revoked"], (line, child.stderr.read() if child.stderr else "")
    elapsed = float(line[2]) - revoked_at
    assert elapsed <= INTERVAL + 0.5
