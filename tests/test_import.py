"""The package imports before Django is configured, and DRF stays optional."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )


def test_imports_without_settings() -> None:
    result = run(
        "import keyrunes_django, keyrunes_django.conf, keyrunes_django.exceptions, "
        "keyrunes_django.identity, keyrunes_django.signals\n"
        "from django.conf import settings\n"
        "assert not settings.configured\n"
        "print(keyrunes_django.__version__)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.1.0"


def test_client_modules_import_without_settings() -> None:
    result = run(
        "import keyrunes_django.client, keyrunes_django.schemas, keyrunes_django.service_account\n"
        "from django.conf import settings\n"
        "assert not settings.configured\n"
        "c = keyrunes_django.client.KeyrunesClient('http://127.0.0.1:9')\n"
        "print(c.timeout)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(3.05, 10.0)"


def test_drf_independent_modules_do_not_import_rest_framework() -> None:
    modules = [
        "keyrunes_django",
        "keyrunes_django.conf",
        "keyrunes_django.exceptions",
        "keyrunes_django.identity",
        "keyrunes_django.signals",
        "keyrunes_django.schemas",
        "keyrunes_django.client",
        "keyrunes_django.service_account",
        "keyrunes_django.checks",
    ]
    code = (
        "import os, sys, django\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.settings'\n"
        "from django.conf import settings\n"
        "settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != 'rest_framework']\n"
        "django.setup()\n"
        "import importlib\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'rest_framework')\n"
        "print(loaded)\n"
    )
    result = run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
