"""The README's Quickstart, applied literally to a fresh ``django-admin startproject``.

The code blocks are read from README.md, so the test fails when the README
drifts: settings are appended to the generated settings.py, urls.py is
replaced, the ``python manage.py`` lines of the shell block are run (all but
``runserver``), and a user logs in through ``/login/`` against the emulator.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyrunes_django.testing import KeyrunesEmulator

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "quickstart-secret-0123456789abcdef-xyz"
PASSWORD = "Quick-Start-Pass-1"


def quickstart_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block in the README's Quickstart section."""
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"^## Quickstart\n(.*?)(?=^## )", readme, re.M | re.S)
    assert section, "README.md has no '## Quickstart' section"
    return re.findall(r"^```(\w+)\n(.*?)^```", section.group(1), re.M | re.S)


def python_block(first_line: str) -> str:
    for language, code in quickstart_blocks():
        if language == "python" and code.splitlines()[0].strip() == first_line:
            return code
    raise AssertionError(f"the Quickstart has no python block starting with {first_line!r}")


def shell_lines() -> list[str]:
    lines = []
    for language, code in quickstart_blocks():
        if language == "bash":
            lines += [line.split("#")[0].strip() for line in code.splitlines()]
    return [line for line in lines if line]


@pytest.fixture(scope="module")
def emulator() -> Iterator[KeyrunesEmulator]:
    with KeyrunesEmulator(jwt_secret=JWT_SECRET) as kr:
        kr.create_user("quickstarter", "quick@example.com", PASSWORD, groups=("users",))
        yield kr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, emulator: KeyrunesEmulator) -> Path:
    base = tmp_path_factory.mktemp("quickstart")
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(base)],
        check=True,
        capture_output=True,
        env=clean_env(emulator),
        timeout=60,
    )
    settings = base / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\n" + python_block("# settings.py"))
    (base / "mysite" / "urls.py").write_text(python_block("# urls.py"))
    return base


def clean_env(emulator: KeyrunesEmulator) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "KEYRUNES")) and k != "PYTHONPATH"
    }
    # What the README tells the reader to export.
    env["KEYRUNES_URL"] = emulator.base_url
    env["KEYRUNES_JWT_SECRET"] = JWT_SECRET
    return env


def manage(project: Path, emulator: KeyrunesEmulator, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=clean_env(emulator),
        timeout=120,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout + result.stderr


def test_the_readme_explains_keyrunes_url() -> None:
    assert any(line.startswith("export KEYRUNES_URL=") for line in shell_lines())
    assert 'os.environ["KEYRUNES_URL"]' in python_block("# settings.py")


def test_the_pasted_settings_keep_what_startproject_wrote(
    project: Path, emulator: KeyrunesEmulator
) -> None:
    out = manage(
        project,
        emulator,
        "shell",
        "-c",
        "from django.conf import settings; print(settings.INSTALLED_APPS); "
        "print(settings.MIDDLEWARE)",
    )
    for name in (
        "django.contrib.staticfiles",
        "django.contrib.admin",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "keyrunes_django",
        "keyrunes_django.middleware.KeyrunesAuthenticationMiddleware",
    ):
        assert f"'{name}'" in out, name


def test_check_migrate_and_keyrunes_check_as_the_readme_says(
    project: Path, emulator: KeyrunesEmulator
) -> None:
    manage(project, emulator, "check", "--fail-level", "WARNING")
    commands = [line.split()[2:] for line in shell_lines() if line.startswith("python manage.py")]
    names = [command[0] for command in commands]
    assert names[:2] == ["migrate", "keyrunes_check"], names
    outputs = {}
    for command in commands:
        if command[0] != "runserver":
            outputs[command[0]] = manage(project, emulator, *command)
    report = outputs["keyrunes_check"]
    assert emulator.base_url in report
    assert "FAIL" not in report


LOGIN_SCRIPT = """
import django
django.setup()
from django.conf import settings
from django.test import Client
from django.test.utils import setup_test_environment

setup_test_environment()
client = Client()
page = client.get("/login/")
assert page.status_code == 200, page.status_code
assert b'name="password"' in page.content and b"csrfmiddlewaretoken" in page.content
wrong = client.post("/login/", {"username": "quickstarter", "password": "wrong-password"})
assert wrong.status_code == 200 and b"errorlist" in wrong.content
answer = client.post("/login/", {"username": "quickstarter", "password": PASSWORD})
assert answer.status_code == 302, (answer.status_code, answer.content[:500])
assert answer["Location"] == settings.LOGIN_REDIRECT_URL, answer["Location"]
from django.contrib.auth import get_user_model
user = get_user_model().objects.get(pk=client.session["_auth_user_id"])
print(user.get_username(), user.keyrunes_identity.namespace, user.has_usable_password())
"""


def test_log_in_through_login(project: Path, emulator: KeyrunesEmulator) -> None:
    manage(project, emulator, "migrate", "-v", "0")
    env = clean_env(emulator)
    env["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
    result = subprocess.run(
        [sys.executable, "-c", f"PASSWORD = {PASSWORD!r}\n{LOGIN_SCRIPT}"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["quickstarter", "public", "False"]
    assert emulator.requests_to("/api/login", method="POST") >= 2
