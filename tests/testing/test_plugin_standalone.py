"""The pytest plugin in a plain pytest project: no Django settings, maybe no Werkzeug.

The plugin is registered as a ``pytest11`` entry point, so it loads in every
pytest run of a project that installs the package; these tests run pytest in a
subprocess on a throwaway project to see what such a project sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

PLUGIN = "keyrunes_django.testing.pytest_plugin"

PLAIN_TESTS = """
import json
import urllib.request


def _call(base_url, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base_url + path, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_user_logs_in(keyrunes, keyrunes_user):
    answer = _call(keyrunes.base_url, "/api/login", {
        "identity": keyrunes_user.email, "password": keyrunes_user.password, "namespace": "public"})
    me = _call(keyrunes.base_url, "/api/me", token=answer["token"])
    assert me["user_id"] == keyrunes_user.user_id


def test_superadmin_and_quirks(keyrunes_superadmin, keyrunes_quirks):
    assert keyrunes_superadmin.groups == ("superadmin", "users")
    assert keyrunes_quirks.server_quirks is True


def test_no_django_settings_needed():
    import sys
    assert "django.conf" not in sys.modules or not sys.modules["django.conf"].settings.configured
"""

NO_WERKZEUG_CONFTEST = """
import sys

sys.modules["werkzeug"] = None  # as if the testing extra were not installed
"""

NO_WERKZEUG_TESTS = """
def test_without_fixture():
    assert True


def test_with_fixture(keyrunes):
    pass
"""


def _run_pytest(project: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        # The plugin loads through the package's pytest11 entry point, as it
        # does in a user's project; naming it with -p too would register it twice.
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _project(tmp_path: Path, tests: str, conftest: str = "") -> Path:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(textwrap.dedent(conftest))
    (tmp_path / "test_app.py").write_text(textwrap.dedent(tests))
    return tmp_path


def test_fixtures_work_in_a_plain_pytest_project(tmp_path: Path) -> None:
    result = _run_pytest(_project(tmp_path, PLAIN_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_without_werkzeug_the_plugin_loads_and_fixtures_say_what_they_need(
    tmp_path: Path,
) -> None:
    result = _run_pytest(_project(tmp_path, NO_WERKZEUG_TESTS, NO_WERKZEUG_CONFTEST))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed, 1 error" in result.stdout
    assert "install the testing extra" in result.stdout
    assert "pip install 'keyrunes-django[testing]'" in result.stdout


def test_importing_the_plugin_loads_nothing_heavy() -> None:
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["werkzeug"] = None
        import {PLUGIN}
        heavy = sorted(
            name for name, module in sys.modules.items()
            if module is not None
            and name.split(".")[0] in ("django", "werkzeug", "requests", "jwt", "rest_framework")
        )
        print(heavy)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
