"""`make demo` (scripts/demo.sh) in its non-interactive mode, DEMO_CHECK=1."""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from keyrunes_django.testing.emulator import KeyrunesEmulator

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_demo(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KEYRUNES_", "DJANGO_")) and key != "EXAMPLE_DB"
    }
    environment.update(
        DEMO_CHECK="1", DEMO_PORT=str(free_port()), EXAMPLE_DB=str(tmp_path / "demo.sqlite3")
    )
    environment.update(env)
    return subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url + "/api/health", timeout=2)
    except urllib.error.HTTPError:
        return False
    except OSError:
        return True
    return False


def test_demo_check_with_the_embedded_emulator(tmp_path: Path) -> None:
    result = run_demo(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.rstrip().endswith("OK")
    assert "Keyrunes example site: http://127.0.0.1:" in out
    assert "alice / Alice-Pass-1" in out
    assert "bob   / Bob-Pass-1" in out
    assert "admin / Admin-Pass-1" in out
    assert "embedded emulator" in out
    for check in ("home: ok", "login page: ok", "API /api/me/ with a bearer token: ok"):
        assert check in out
    assert (tmp_path / "demo.sqlite3").exists()
    # The trap stopped the emulator on exit.
    line = next(line for line in out.splitlines() if line.startswith("Keyrunes:"))
    emulator_url = line.split()[1]
    assert refused(emulator_url)


def test_demo_against_another_keyrunes_is_one_variable(tmp_path: Path) -> None:
    with KeyrunesEmulator() as other:
        user = other.create_user("dora", password="Dora-Pass-1")
        result = run_demo(
            tmp_path,
            KEYRUNES_URL=other.base_url,
            KEYRUNES_DEMO_IDENTITY=user.username,
            KEYRUNES_DEMO_PASSWORD="Dora-Pass-1",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"Keyrunes:              {other.base_url}\n" in result.stdout
        assert "embedded emulator" not in result.stdout
        assert result.stdout.rstrip().endswith("OK")
        # No secret was given, so the site verified the token remotely.
        assert other.requests_to("/api/me", "GET") >= 1


def test_demo_stops_with_a_clear_message_when_keyrunes_is_down(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_demo(tmp_path, KEYRUNES_URL=url, DEMO_WAIT="0.5")
    assert result.returncode != 0
    assert f"Keyrunes at {url} is not answering" in result.stderr
    assert "OK" not in result.stdout.splitlines()
