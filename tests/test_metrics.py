"""Prometheus counters fed by signals; the app without the optional packages."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import include, path
from prometheus_client import REGISTRY

from keyrunes_django import metrics, signals
from keyrunes_django.exceptions import InvalidToken, KeyrunesError, KeyrunesUnavailable
from keyrunes_django.testing.emulator import KeyrunesEmulator
from keyrunes_django.tokens import authenticate_token

pytestmark = pytest.mark.urls("tests.test_metrics")
urlpatterns = [path("health/", include("keyrunes_django.health_urls"))]

ROOT = Path(__file__).resolve().parent.parent


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """Counts of one sample before and after a block."""

    def __init__(self, name: str, **labels: str) -> None:
        self.name, self.labels = name, labels
        self.before = sample(name, **labels)

    @property
    def value(self) -> float:
        return sample(self.name, **self.labels) - self.before


def test_connected_by_the_app_config() -> None:
    # ready() connected them; connecting again does not double-count.
    assert metrics.connect_metrics() is True
    delta = Delta("keyrunes_cache_hits_total", kind="token", layer="process")
    signals.cache_hit.send(sender=None, kind="token", layer="process")
    assert delta.value == 1


def test_each_signal_feeds_its_counter() -> None:
    verified = Delta("keyrunes_verifications_total", kind="token", source="remote")
    miss = Delta("keyrunes_cache_misses_total", kind="organization_key")
    calls = Delta("keyrunes_remote_calls_total", operation="me", outcome="ok")
    seconds = Delta("keyrunes_remote_call_seconds_count", operation="me")
    signals.credential_verified.send(sender=None, kind="token", source="remote", request=None)
    signals.cache_miss.send(sender=None, kind="organization_key")
    signals.remote_call.send(
        sender=None, operation="me", outcome="ok", status_code=200, duration=0.02
    )
    assert (verified.value, miss.value, calls.value, seconds.value) == (1, 1, 1, 1)


def test_a_bad_duration_counts_the_call_but_not_the_time() -> None:
    calls = Delta("keyrunes_remote_calls_total", operation="health", outcome="error")
    seconds = Delta("keyrunes_remote_call_seconds_count", operation="health")
    for duration in (None, -1.0, True, "1"):
        signals.remote_call.send(
            sender=None, operation="health", outcome="error", duration=duration
        )
    assert (calls.value, seconds.value) == (4, 0)


def test_refusals_and_outages_from_the_request_path(keyrunes: KeyrunesEmulator) -> None:
    from django.conf import settings
    from django.test import override_settings

    user = keyrunes.create_user()
    refused = Delta("keyrunes_refusals_total", reason="expired")
    with pytest.raises(InvalidToken):
        authenticate_token(keyrunes.expired_token(user))
    assert refused.value == 1

    outage = Delta("keyrunes_outages_total", operation="verify_token", served_stale="false")
    keyrunes.faults.add(r"^/api/me$", status=503)
    remote = {**settings.KEYRUNES, "VERIFICATION_MODE": "remote"}
    with override_settings(KEYRUNES=remote), pytest.raises(KeyrunesUnavailable):
        authenticate_token(keyrunes.issue_token(user))
    assert outage.value == 1


def test_stale_outages_are_labelled() -> None:
    delta = Delta("keyrunes_outages_total", operation="verify_org_key", served_stale="true")
    signals.auth_service_error.send(
        sender=KeyrunesError,
        error=KeyrunesUnavailable("down"),
        operation="verify_org_key",
        request=None,
        served_stale=True,
    )
    assert delta.value == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("expired", "expired"),
        ("Expired", "other"),
        ("a" * 49, "other"),
        ("x\ny", "other"),
        ('"}evil{', "other"),
        (None, "other"),
        (7, "other"),
        (True, "true"),
        (False, "false"),
    ],
)
def test_labels_are_short_codes(value: Any, expected: str) -> None:
    assert metrics.label(value) == expected


def test_hostile_reasons_share_one_series() -> None:
    delta = Delta("keyrunes_refusals_total", reason="other")
    for i in range(50):
        signals.credential_rejected.send(
            sender=InvalidToken, reason=f"Reason-{i}", request=None, credential_hash="x"
        )
    assert delta.value == 50
    assert sample("keyrunes_refusals_total", reason="Reason-1") == 0


def test_metrics_view_serves_the_registry() -> None:
    signals.cache_hit.send(sender=None, kind="token", layer="shared")
    response = Client().get("/health/metrics/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    assert 'keyrunes_cache_hits_total{kind="token",layer="shared"}' in body
    assert Client().post("/health/metrics/").status_code == 405


def test_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "prometheus_available", lambda: False)
    assert metrics.connect_metrics() is False
    response = Client().get("/health/metrics/")
    assert response.status_code == 404


BLOCKED = ("drf_spectacular", "ninja", "channels", "daphne", "prometheus_client")


def test_the_app_imports_without_the_optional_packages() -> None:
    script = textwrap.dedent(
        f"""
        import importlib, importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {BLOCKED!r}:
                    raise ModuleNotFoundError(name)
                return None

        sys.meta_path.insert(0, Block())
        import django
        django.setup()
        from django.core.management import call_command
        call_command("check")
        for name in ("keyrunes_django.health", "keyrunes_django.health_urls",
                     "keyrunes_django.metrics", "keyrunes_django.drf.authentication",
                     "keyrunes_django.middleware", "keyrunes_django.decorators"):
            importlib.import_module(name)
        from keyrunes_django import metrics
        assert metrics.connect_metrics() is False
        assert "keyrunes_django.drf.openapi" not in sys.modules
        for name in ("keyrunes_django.ninja", "keyrunes_django.channels",
                     "keyrunes_django.drf.openapi"):
            try:
                importlib.import_module(name)
            except ImportError:
                pass
            else:
                raise AssertionError(name + " imported without its package")
        print("OK")
        """
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK")
