"""Readiness and liveness views: Keyrunes and cache checks, bounded time, nothing leaked."""

from __future__ import annotations

import json
import socket
import sys
import time
import types
from typing import Any
from unittest import mock

import pytest
from django.core.cache import caches
from django.core.checks import run_checks
from django.test import Client
from django.urls import include, path

from keyrunes_django import health
from keyrunes_django.testing.emulator import KeyrunesEmulator

pytestmark = pytest.mark.urls("tests.test_health")

urlpatterns = [path("health/", include("keyrunes_django.health_urls"))]


def ready() -> tuple[int, dict[str, Any]]:
    response = Client().get("/health/ready/")
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    return response.status_code, response.json()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ready_when_keyrunes_and_cache_work(keyrunes: KeyrunesEmulator) -> None:
    status, body = ready()
    assert status == 200
    assert body["status"] == "ok"
    assert body["checks"]["keyrunes"]["ok"] is True
    assert body["checks"]["keyrunes"]["status"] == "healthy"
    assert body["checks"]["cache"] == {"ok": True, "status": "ok", "duration_ms": mock.ANY}
    assert keyrunes.requests_to("/api/health") == 1


def test_the_body_names_no_url_or_secret(keyrunes: KeyrunesEmulator) -> None:
    keyrunes.faults.add(r"^/api/health$", status=500)
    _, body = ready()
    text = json.dumps(body)
    for secret in (
        keyrunes.base_url,
        keyrunes.jwt_secret,
        keyrunes.organization_key(1),
        "127.0.0.1",
    ):
        assert secret not in text


def test_unhealthy_keyrunes_is_503(keyrunes: KeyrunesEmulator) -> None:
    keyrunes.faults.add(r"^/api/health$", status=503)
    status, body = ready()
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["keyrunes"] == {
        "ok": False,
        "status": "unhealthy",
        "duration_ms": mock.ANY,
    }
    assert body["checks"]["cache"]["ok"] is True


def test_unreachable_keyrunes_is_503(settings: Any) -> None:
    settings.KEYRUNES = {**settings.KEYRUNES, "BASE_URL": f"http://127.0.0.1:{free_port()}"}
    status, body = ready()
    assert status == 503
    assert body["checks"]["keyrunes"]["status"] == "unreachable"


def test_not_configured_is_503(settings: Any) -> None:
    settings.KEYRUNES = {**settings.KEYRUNES, "BASE_URL": None}
    status, body = ready()
    assert status == 503
    assert body["checks"]["keyrunes"]["status"] == "not_configured"


def test_a_slow_keyrunes_is_cut_off_at_the_timeout(
    keyrunes: KeyrunesEmulator, settings: Any
) -> None:
    settings.KEYRUNES = {**settings.KEYRUNES, "HEALTH_TIMEOUT": 0.3}
    keyrunes.faults.add(r"^/api/health$", delay=2.0)
    started = time.monotonic()
    status, body = ready()
    elapsed = time.monotonic() - started
    assert status == 503
    assert body["checks"]["keyrunes"]["status"] in {"timeout", "unreachable"}
    assert elapsed < 1.5


def test_the_probe_is_not_retried(keyrunes: KeyrunesEmulator, settings: Any) -> None:
    settings.KEYRUNES = {**settings.KEYRUNES, "RETRIES": 3}
    keyrunes.faults.add(r"^/api/health$", status=502)
    status, _ = ready()
    assert status == 503
    assert keyrunes.requests_to("/api/health") == 1


def test_probe_crash_answers_503(keyrunes: KeyrunesEmulator) -> None:
    with mock.patch.object(health, "_probe_keyrunes", side_effect=RuntimeError("boom")):
        status, body = ready()
    assert status == 503
    assert body["checks"]["keyrunes"]["status"] == "error"


def test_a_cache_that_forgets_is_503(keyrunes: KeyrunesEmulator, settings: Any) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "forgetful": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
    }
    settings.KEYRUNES = {**settings.KEYRUNES, "CACHE_ALIAS": "forgetful"}
    status, body = ready()
    assert status == 503
    assert body["checks"]["cache"]["status"] == "mismatch"
    assert body["checks"]["keyrunes"]["ok"] is True


def test_a_failing_cache_is_503(keyrunes: KeyrunesEmulator) -> None:
    with mock.patch.object(type(caches["default"]), "set", side_effect=ConnectionError("down")):
        status, body = ready()
    assert status == 503
    assert body["checks"]["cache"]["status"] == "error"


def test_the_round_trip_leaves_nothing_behind(keyrunes: KeyrunesEmulator) -> None:
    caches["default"].clear()
    ready()
    cache = caches["default"]
    assert not [key for key in getattr(cache, "_cache", {}) if "health" in str(key)]


def test_breaker_state_is_reported_when_the_breaker_exists(
    keyrunes: KeyrunesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.ModuleType("keyrunes_django.breaker")
    fake.get_breaker = lambda: types.SimpleNamespace(state="open")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyrunes_django.breaker", fake)
    status, body = ready()
    assert body["checks"]["breaker"] == {"state": "open"}
    assert status == 200  # reported, not deciding


def test_a_broken_breaker_reports_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise RuntimeError("no breaker")

    fake = types.ModuleType("keyrunes_django.breaker")
    fake.get_breaker = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyrunes_django.breaker", fake)
    assert health.breaker_state() == "unknown"


def test_an_open_breaker_shows_in_the_readiness_report(keyrunes: KeyrunesEmulator) -> None:
    from keyrunes_django.breaker import get_breaker

    breaker = get_breaker()
    while breaker.state == "closed":
        breaker.acquire(1.0).failed()
    assert health.breaker_state() == "open"
    ready, report = health.readiness()
    assert report["checks"]["breaker"] == {"state": "open"}
    assert not ready  # the probe of Keyrunes itself is refused while the breaker is open


def test_only_get_and_head(keyrunes: KeyrunesEmulator) -> None:
    assert Client().post("/health/ready/").status_code == 405
    assert Client().head("/health/ready/").status_code == 200


def test_liveness_does_no_io(settings: Any) -> None:
    settings.KEYRUNES = {**settings.KEYRUNES, "BASE_URL": f"http://127.0.0.1:{free_port()}"}
    with mock.patch.object(health, "check_cache", side_effect=AssertionError("no I/O")):
        response = Client().get("/health/live/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("value", [0, -1, "2", None, True])
def test_bad_health_timeout_is_e070(settings: Any, value: Any) -> None:
    settings.KEYRUNES = {**settings.KEYRUNES, "HEALTH_TIMEOUT": value}
    assert "keyrunes_django.E070" in {m.id for m in run_checks()}


@pytest.mark.parametrize("value", [1, "yes", None])
def test_bad_query_string_setting_is_e071(settings: Any, value: Any) -> None:
    settings.KEYRUNES = {**settings.KEYRUNES, "CHANNELS_QUERY_STRING_TOKEN": value}
    assert "keyrunes_django.E071" in {m.id for m in run_checks()}


def test_good_integration_settings_pass(settings: Any) -> None:
    settings.KEYRUNES = {
        **settings.KEYRUNES,
        "HEALTH_TIMEOUT": 0.5,
        "CHANNELS_QUERY_STRING_TOKEN": True,
    }
    ids = {m.id for m in run_checks()}
    assert not ids & {"keyrunes_django.E070", "keyrunes_django.E071"}


def test_integration_checks_leave_a_non_dict_to_e012(settings: Any) -> None:
    settings.KEYRUNES = ["not", "a", "dict"]
    ids = {m.id for m in run_checks()}
    assert "keyrunes_django.E012" in ids
    assert not ids & {"keyrunes_django.E070", "keyrunes_django.E071"}
