"""The command-line server, run as a subprocess and in-process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import jwt
import pytest
import requests

from keyrunes_django.testing import server

SEED = {
    "organizations": [{"name": "Acme", "namespace": "acme"}],
    "groups": [{"name": "developers", "description": "Dev team"}],
    "policies": [
        {
            "name": "docs_read",
            "resource": "docs:*",
            "action": "read",
            "groups": ["developers"],
            "users": ["alice"],
        }
    ],
    "users": [
        {"email": "alice@example.com", "password": "Alice-Pass-1", "groups": ["users"]},
        {
            "email": "carol@acme.io",
            "password": "Carol-Pass-1",
            "namespace": "acme",
            "username": "carol",
            "groups": ["admin", "users"],
        },
    ],
    "memberships": [{"user": "alice", "group": "developers"}],
}


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keyrunes_django.testing.server",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    return process, line


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_and_stops_on_signal(tmp_path: Path, stop_signal: signal.Signals) -> None:
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(json.dumps(SEED))
    process, base_url = start(
        "--jwt-secret",
        "cli-secret-0123456789-0123456789",
        "--superadmin",
        "root@example.com:Root-Pass-1",
        "--seed",
        str(seed_file),
    )
    try:
        assert base_url.startswith("http://127.0.0.1:")
        login = requests.post(
            f"{base_url}/api/login",
            json={"identity": "root", "password": "Root-Pass-1", "namespace": "public"},
            timeout=5,
        )
        assert login.status_code == 200
        assert login.json()["user"]["groups"] == ["superadmin", "users"]
        claims = jwt.decode(
            login.json()["token"], "cli-secret-0123456789-0123456789", algorithms=["HS256"]
        )
        assert claims["username"] == "root"
        alice = requests.post(
            f"{base_url}/api/login",
            json={"identity": "alice", "password": "Alice-Pass-1", "namespace": "public"},
            timeout=5,
        )
        assert alice.json()["user"]["groups"] == ["users", "developers"]
        carol = requests.post(
            f"{base_url}/api/login",
            json={"identity": "carol", "password": "Carol-Pass-1", "namespace": "acme"},
            timeout=5,
        )
        assert carol.json()["user"]["groups"] == ["admin", "users"]
    finally:
        process.send_signal(stop_signal)
        assert process.wait(timeout=10) == 0
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{base_url}/api/health", timeout=1)


def test_cli_server_quirks_and_superadmin_username() -> None:
    process, base_url = start(
        "--server-quirks",
        "--superadmin",
        "root@example.com:Root:Pass",
        "--superadmin-username",
        "boss",
    )
    try:
        login = requests.post(
            f"{base_url}/api/login",
            json={"identity": "boss", "password": "Root:Pass", "namespace": "public"},
            timeout=5,
        )
        assert login.status_code == 200
        key = requests.get(
            f"{base_url}/api/admin/organizations",
            headers={"Authorization": f"Bearer {login.json()['token']}"},
            timeout=5,
        ).json()[0]["secret_key"]
        verify = requests.get(
            f"{base_url}/api/verify-org-key", headers={"X-Organization-Key": key}, timeout=5
        )
        assert verify.status_code == 500
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_cli_reports_a_bad_seed(tmp_path: Path) -> None:
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(
        json.dumps({"users": [{"email": "x@y.zz", "password": "p" * 8, "groups": ["nope"]}]})
    )
    assert server.main(["--port", "0", "--seed", str(seed_file)]) == 1
    seed_file.write_text("[]")
    assert server.main(["--port", "0", "--seed", str(seed_file)]) == 1


def test_cli_rejects_bad_superadmin() -> None:
    with pytest.raises(SystemExit):
        server.build_parser().parse_args(["--superadmin", "no-colon"])


def test_main_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    handlers = {}
    monkeypatch.setattr(
        server.signal, "signal", lambda sig, handler: handlers.setdefault(sig, handler)
    )
    result: list[int] = []
    argv = ["--port", "0", "--superadmin", "a@b.co:Pass-1234", "--superadmin-username", "boss"]
    thread = threading.Thread(target=lambda: result.append(server.main(argv)))
    thread.start()
    for _ in range(100):
        out = capsys.readouterr().out
        if out:
            break
        threading.Event().wait(0.02)
    base_url = out.strip()
    login = requests.post(
        f"{base_url}/api/login",
        json={"identity": "boss", "password": "Pass-1234", "namespace": "public"},
        timeout=2,
    )
    assert login.status_code == 200
    handlers[signal.SIGTERM](signal.SIGTERM, None)
    thread.join(timeout=5)
    assert result == [0]
