"""The package imports before Django is configured, and DRF stays optional."""

from __future__ import annotations

import os
import re
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
        "from importlib.metadata import version\n"
        "print(keyrunes_django.__version__, version('keyrunes-django'))"
    )
    assert result.returncode == 0, result.stderr
    # The version lives in __init__.py only; the installed metadata is built from it.
    in_code, in_metadata = result.stdout.split()
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|(a|b|rc)\d+)?", in_code), in_code
    assert in_code == in_metadata


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


def blocked(module: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``module`` unimportable, as if its extra were not installed."""
    return run(f"import sys\nsys.modules[{module!r}] = None\n{code}")


def test_drf_classes_without_drf_name_the_extra() -> None:
    for name in ("authentication", "permissions"):
        result = blocked(
            "rest_framework",
            "import django\n"
            "from django.conf import settings\n"
            "settings.configure(INSTALLED_APPS=['django.contrib.auth', "
            "'django.contrib.contenttypes'])\n"
            "django.setup()\n"
            f"import keyrunes_django.drf.{name}",
        )
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert last == (
            "ImportError: keyrunes_django.drf needs Django REST Framework: "
            'pip install "keyrunes-django[drf]"'
        ), result.stderr


def test_emulator_without_werkzeug_names_the_extra() -> None:
    for code in (
        "from keyrunes_django.testing import KeyrunesEmulator",
        "import keyrunes_django.testing as t\nt.KeyrunesEmulator",
    ):
        result = blocked("werkzeug", code)
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert last == (
            "ImportError: The Keyrunes emulator needs Werkzeug: "
            'pip install "keyrunes-django[testing]"'
        ), result.stderr


def test_testing_package_and_factories_import_without_werkzeug() -> None:
    result = blocked(
        "werkzeug",
        "import keyrunes_django.testing as t\n"
        "from keyrunes_django.testing import FaultInjector, unique_username\n"
        "print(unique_username().startswith('user'), FaultInjector.__name__)\n"
        "try:\n"
        "    t.no_such_name\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "True FaultInjector",
        "module 'keyrunes_django.testing' has no attribute 'no_such_name'",
    ]


def test_drf_and_emulator_import_when_installed() -> None:
    result = run(
        "import os, django\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.settings'\n"
        "django.setup()\n"
        "import keyrunes_django.drf.authentication, keyrunes_django.drf.permissions\n"
        "from keyrunes_django.testing import KeyrunesEmulator, EmulatorError\n"
        "print(KeyrunesEmulator.__name__, EmulatorError.__name__)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "KeyrunesEmulator EmulatorError"
