"""The circuit breaker: states, thread safety, settings, and how the client obeys it."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses
from django.core import checks as django_checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.test import override_settings

from keyrunes_django import breaker as breaker_module
from keyrunes_django.breaker import (
    CircuitBreaker,
    breaker_config,
    get_breaker,
    reset_breaker,
)
from keyrunes_django.checks import check_client_limits
from keyrunes_django.client import KeyrunesClient, VerifyOrgKeyDefect
from keyrunes_django.exceptions import (
    AuthenticationFailed,
    CircuitOpen,
    KeyrunesUnavailable,
    NotFound,
)
from keyrunes_django.signals import breaker_state_changed

BASE = "http://kr.test"
TOKEN = "header.payload.signature"
USER = {
    "user_id": 7,
    "external_id": "x-7",
    "email": "alice@example.com",
    "username": "alice",
    "groups": ["users"],
    "first_login": False,
    "organization_id": 1,
    "namespace": "public",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def changes() -> Iterator[list[tuple[str, str, float]]]:
    seen: list[tuple[str, str, float]] = []

    def receiver(**kwargs: Any) -> None:
        seen.append((kwargs["old_state"], kwargs["new_state"], kwargs["retry_after"]))

    breaker_state_changed.connect(receiver, dispatch_uid="test_breaker.changes")
    yield seen
    breaker_state_changed.disconnect(dispatch_uid="test_breaker.changes")


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.acquire(5.0).failed()


# ------------------------------------------------------------------ the state machine


def test_opens_after_consecutive_failures(
    clock: Clock, changes: list[tuple[str, str, float]]
) -> None:
    breaker = CircuitBreaker(3, 10.0, clock=clock)
    fail(breaker, 2)
    assert breaker.state == "closed"
    assert breaker.failures == 2
    fail(breaker)
    assert breaker.state == "open"
    assert breaker.retry_after() == 10.0
    assert changes == [("closed", "open", 10.0)]
    clock.now += 4
    with pytest.raises(CircuitOpen) as info:
        breaker.acquire(5.0)
    assert info.value.retry_after == pytest.approx(6.0)
    assert isinstance(info.value, KeyrunesUnavailable)


def test_a_success_resets_the_count(clock: Clock) -> None:
    breaker = CircuitBreaker(3, 10.0, clock=clock)
    fail(breaker, 2)
    breaker.acquire(5.0).succeeded()
    fail(breaker, 2)
    assert breaker.state == "closed"
    assert breaker.failures == 2


def test_half_open_lets_one_probe_through_and_its_success_closes(
    clock: Clock, changes: list[tuple[str, str, float]]
) -> None:
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    fail(breaker)
    clock.now += 10
    assert breaker.retry_after() == 0.0
    probe = breaker.acquire(2.0)
    assert probe.probe
    assert breaker.state == "half_open"
    with pytest.raises(CircuitOpen) as info:
        breaker.acquire(2.0)  # one probe at a time
    assert info.value.retry_after == pytest.approx(2.0)
    probe.succeeded()
    assert breaker.state == "closed"
    assert breaker.retry_after() == 0.0
    assert not breaker.acquire(2.0).probe
    assert [(old, new) for old, new, _ in changes] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


def test_failed_probe_reopens_for_a_full_cooldown(clock: Clock) -> None:
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    fail(breaker)
    clock.now += 11
    breaker.acquire(2.0).failed()
    assert breaker.state == "open"
    assert breaker.retry_after() == 10.0


def test_probe_that_never_reports_is_replaced_after_its_budget(clock: Clock) -> None:
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    fail(breaker)
    clock.now += 10
    lost = breaker.acquire(2.0)
    clock.now += 2
    second = breaker.acquire(2.0)
    assert second.probe
    lost.failed()  # a late report of the lost probe changes nothing
    assert breaker.state == "half_open"
    second.succeeded()
    assert breaker.state == "closed"


def test_probe_without_verdict_frees_the_slot(clock: Clock) -> None:
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    fail(breaker)
    clock.now += 10
    breaker.acquire(2.0).release()
    assert breaker.state == "half_open"
    assert breaker.acquire(2.0).probe


def test_outcomes_from_before_a_change_of_state_are_ignored(clock: Clock) -> None:
    breaker = CircuitBreaker(2, 10.0, clock=clock)
    early = [breaker.acquire(5.0) for _ in range(4)]
    early[0].failed()
    early[1].failed()
    assert breaker.state == "open"
    early[2].succeeded()  # started while closed, ends while open: not a probe
    assert breaker.state == "open"
    early[2].failed()  # reported twice: the second report is ignored
    clock.now += 10
    breaker.acquire(1.0).succeeded()
    assert breaker.state == "closed"
    early[3].failed()  # handed out two states ago
    assert breaker.failures == 0
    breaker.acquire(1.0).failed()
    assert breaker.failures == 1


def test_zero_failures_switches_it_off(clock: Clock) -> None:
    breaker = CircuitBreaker(0, 10.0, clock=clock)
    fail(breaker, 50)
    assert breaker.state == "closed"


def test_reset_closes(clock: Clock, changes: list[tuple[str, str, float]]) -> None:
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    fail(breaker)
    breaker.reset()
    assert breaker.state == "closed"
    assert breaker.failures == 0
    assert changes[-1][:2] == ("open", "closed")
    assert "closed" in repr(breaker)


def test_state_changes_are_logged(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    breaker = CircuitBreaker(2, 10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="keyrunes_django.client"):
        fail(breaker, 2)
        clock.now += 10
        breaker.acquire(1.0).succeeded()
    messages = [r.getMessage() for r in caplog.records if r.name == "keyrunes_django.client"]
    assert any("opened after 2 consecutive failure(s)" in m for m in messages)
    assert any("open -> half_open" in m for m in messages)
    assert any("half_open -> closed" in m for m in messages)


def test_receivers_may_read_the_breaker(clock: Clock) -> None:
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    seen: list[float] = []

    def receiver(**kwargs: Any) -> None:
        # The breaker's lock is not held while signals are sent.
        seen.append(kwargs["breaker"].retry_after())

    breaker_state_changed.connect(receiver, dispatch_uid="test_breaker.reader")
    try:
        fail(breaker)
    finally:
        breaker_state_changed.disconnect(dispatch_uid="test_breaker.reader")
    assert seen == [10.0]


# ------------------------------------------------------------------ threads


def test_concurrent_failures_are_all_counted_and_open_once(
    changes: list[tuple[str, str, float]],
) -> None:
    breaker = CircuitBreaker(400, 10.0)
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            breaker.acquire(1.0).failed()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert breaker.state == "open"
    assert [(old, new) for old, new, _ in changes] == [("closed", "open")]


def test_concurrent_callers_in_half_open_get_exactly_one_probe(clock: Clock) -> None:
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    fail(breaker)
    clock.now += 10
    barrier = threading.Barrier(16)
    probes: list[bool] = []
    refused: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        try:
            permit = breaker.acquire(5.0)
        except CircuitOpen as exc:
            with lock:
                refused.append(exc.retry_after or 0.0)
        else:
            with lock:
                probes.append(permit.probe)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert probes == [True]
    assert len(refused) == 15
    assert all(wait == pytest.approx(5.0) for wait in refused)


# ------------------------------------------------------------------ settings


def test_get_breaker_follows_the_settings() -> None:
    breaker = get_breaker()
    with override_settings(KEYRUNES={"BREAKER_FAILURES": 2, "BREAKER_COOLDOWN": 3}):
        assert get_breaker() is breaker
        assert breaker.config == (2, 3.0)
        fail(breaker, 2)
        assert breaker.state == "open"
    # Leaving override_settings is a settings change: the breaker starts over.
    assert get_breaker().state == "closed"
    assert get_breaker().config == (5, 10.0)


def test_settings_change_without_signal_reconfigures(settings: Any) -> None:
    breaker = get_breaker()
    fail(breaker, 4)
    settings.KEYRUNES = {**settings.KEYRUNES, "BREAKER_FAILURES": 9}
    assert get_breaker().failures == 0
    assert get_breaker().config[0] == 9


def test_any_keyrunes_change_resets_the_breaker() -> None:
    breaker = get_breaker()
    fail(breaker, 5)
    assert breaker.state == "open"
    with override_settings(KEYRUNES={"BASE_URL": "https://elsewhere.example.com"}):
        assert breaker.state == "closed"


def test_reset_breaker() -> None:
    fail(get_breaker(), 5)
    reset_breaker()
    assert get_breaker().state == "closed"


@pytest.mark.parametrize(
    "config",
    [
        {"BREAKER_FAILURES": -1},
        {"BREAKER_FAILURES": 2.5},
        {"BREAKER_FAILURES": True},
        {"BREAKER_COOLDOWN": 0},
        {"BREAKER_COOLDOWN": "10"},
    ],
)
def test_bad_breaker_settings(config: dict[str, Any]) -> None:
    with pytest.raises(ImproperlyConfigured):
        breaker_config(config)
    with override_settings(KEYRUNES={"BASE_URL": BASE, **config}):
        assert [m.id for m in check_client_limits()] == ["keyrunes_django.E042"]
        with pytest.raises(ImproperlyConfigured):
            get_breaker()


def test_defaults_without_django_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.conf import settings

    monkeypatch.setattr(type(settings), "configured", property(lambda self: False))
    assert breaker_module._configured() == (5, 10.0)


# ------------------------------------------------------------------ the client obeys it


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def kr() -> KeyrunesClient:
    client = KeyrunesClient(BASE, timeout=(0.5, 1.0), retries=2, backoff=0.0)
    client.sleep = lambda seconds: None
    return client


def test_open_breaker_makes_no_call(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/api/me", status=502)
    with pytest.raises(KeyrunesUnavailable):
        kr.me(TOKEN)  # 3 attempts
    with pytest.raises(KeyrunesUnavailable) as info:
        kr.me(TOKEN)  # 2 more attempts: the breaker opens, the retry is dropped
    assert len(rsps.calls) == 5
    assert not isinstance(info.value, CircuitOpen)
    assert info.value.status_code == 502
    assert info.value.retry_after == pytest.approx(10.0, abs=0.5)
    assert get_breaker().state == "open"
    with pytest.raises(CircuitOpen) as opened:
        kr.me(TOKEN)
    assert len(rsps.calls) == 5  # nothing sent
    assert 9.0 < (opened.value.retry_after or 0) <= 10.0


def test_retries_stop_once_the_breaker_opens(rsps: responses.RequestsMock) -> None:
    client = KeyrunesClient(BASE, retries=10, backoff=0.0)
    client.sleep = lambda seconds: None
    rsps.get(BASE + "/api/me", body=requests.ConnectionError("refused"))
    with pytest.raises(KeyrunesUnavailable, match="unreachable"):
        client.me(TOKEN)
    assert len(rsps.calls) == 5  # BREAKER_FAILURES, not 1 + RETRIES


def test_refusals_are_not_failures(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/api/me", status=401, json={"error": "Unauthorized"})
    rsps.get(BASE + "/api/admin/users/9", status=404)
    for _ in range(6):
        with pytest.raises(AuthenticationFailed):
            kr.me(TOKEN)
    assert get_breaker().state == "closed"
    assert get_breaker().failures == 0


def test_verify_org_key_defect_is_not_a_failure(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.get(BASE + "/api/verify-org-key", status=500, json={"error": "x"})
    for _ in range(6):
        with pytest.raises(VerifyOrgKeyDefect):
            kr.verify_org_key("key")
    assert get_breaker().failures == 0


def test_health_503_counts_as_failure(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/api/health/live", status=503, body="down")
    with pytest.raises(KeyrunesUnavailable):
        kr.health_live()
    assert get_breaker().failures == 1


def probe_done(client: KeyrunesClient) -> None:
    assert client.probe_thread is not None
    client.probe_thread.join(5)
    assert not client.probe_thread.is_alive()


def test_probe_success_closes_through_the_client(rsps: responses.RequestsMock) -> None:
    clock = Clock()
    breaker = CircuitBreaker(2, 10.0, clock=clock)
    client = KeyrunesClient(BASE, retries=2, backoff=0.0, breaker=breaker)
    client.sleep = lambda seconds: None
    rsps.get(BASE + "/api/me", status=503)
    rsps.get(BASE + "/api/me", status=503)
    rsps.get(BASE + "/api/me", json=USER)
    with pytest.raises(KeyrunesUnavailable):
        client.me(TOKEN)
    assert breaker.state == "open"
    clock.now += 10
    # The caller that finds the cool-down over is answered at once; the probe
    # (one attempt) runs in the background and closes the breaker.
    with pytest.raises(CircuitOpen) as waiting:
        client.me(TOKEN)
    assert waiting.value.retry_after == 1.0
    probe_done(client)
    assert breaker.state == "closed"
    assert len(rsps.calls) == 3
    assert client.me(TOKEN).username == "alice"


def test_failed_probe_is_not_retried(rsps: responses.RequestsMock) -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    client = KeyrunesClient(BASE, retries=2, backoff=0.0, breaker=breaker)
    client.sleep = lambda seconds: None
    rsps.get(BASE + "/api/me", status=503)
    with pytest.raises(KeyrunesUnavailable):
        client.me(TOKEN)
    clock.now += 10
    with pytest.raises(CircuitOpen):
        client.me(TOKEN)
    probe_done(client)
    assert len(rsps.calls) == 2
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen) as info:
        client.me(TOKEN)
    assert info.value.retry_after == 10.0
    assert len(rsps.calls) == 2


def cooled_down() -> tuple[KeyrunesClient, CircuitBreaker]:
    """A client whose breaker opened on one failure and whose cool-down is over."""
    clock = Clock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    breaker.acquire(1.0).failed()
    clock.now += 10
    return KeyrunesClient(BASE, breaker=breaker), breaker


def test_a_slow_probe_never_holds_its_caller(rsps: responses.RequestsMock) -> None:
    """A sync worker is not spent waiting on a Keyrunes that may still be slow."""
    client, breaker = cooled_down()
    release = threading.Event()

    def slow(request: Any) -> tuple[int, dict[str, str], str]:
        release.wait(5)
        return 200, {}, json.dumps(USER)

    rsps.add_callback("GET", BASE + "/api/me", callback=slow)
    with pytest.raises(CircuitOpen):
        client.me(TOKEN)  # returns while the probe still waits for its answer
    assert not release.is_set()
    with pytest.raises(CircuitOpen):
        client.me(TOKEN)  # one probe at a time
    assert breaker.state == "half_open"
    release.set()
    probe_done(client)
    assert breaker.state == "closed"
    assert len(rsps.calls) == 1


def test_a_call_that_changes_something_probes_inline(rsps: responses.RequestsMock) -> None:
    """Its caller must learn whether it happened, so it is never sent behind its back."""
    client, breaker = cooled_down()
    rsps.post(BASE + "/api/login", json={"token": "t", "user": USER})
    client.request("POST", "/api/login", json={"identity": "a", "password": "b"})
    assert client.probe_thread is None
    assert breaker.state == "closed"


def test_unexpected_error_gives_no_verdict(rsps: responses.RequestsMock) -> None:
    client, breaker = cooled_down()
    rsps.post(BASE + "/api/admin/users/3", body=KeyError("bug"))
    with pytest.raises(KeyError):
        client.request("POST", "/api/admin/users/3")
    assert breaker.state == "half_open"
    rsps.get(BASE + "/api/admin/users/5", body=KeyError("bug"))
    with pytest.raises(CircuitOpen):
        client.request("GET", "/api/admin/users/5")
    probe_done(client)  # the background probe's error is no verdict either
    assert breaker.state == "half_open"
    rsps.get(BASE + "/api/admin/users/4", status=404)
    with pytest.raises(CircuitOpen):
        client.request("GET", "/api/admin/users/4")  # the next caller starts the probe
    probe_done(client)
    assert breaker.state == "closed"  # a 404 is an answer
    with pytest.raises(NotFound):
        client.request("GET", "/api/admin/users/4")


def test_protocol_errors_leave_the_breaker_closed(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.get(BASE + "/api/me", body="<html>", status=200)
    for _ in range(6):
        with pytest.raises(Exception, match="not JSON"):
            kr.me(TOKEN)
    assert get_breaker().state == "closed"


# ------------------------------------------------------------------ reporting


def test_keyrunes_check_prints_the_state() -> None:
    def run() -> str:
        out = io.StringIO()
        call_command("keyrunes_check", "--dry-run", stdout=out, stderr=io.StringIO(), no_color=True)
        return out.getvalue()

    with override_settings(KEYRUNES={"BASE_URL": BASE}):
        assert "OK   breaker: closed (0 consecutive failure(s))" in run()
        fail(get_breaker(), 5)
        assert "WARN breaker: open: calls to Keyrunes refused for 10 s more" in run()


def test_keyrunes_check_reports_bad_breaker_settings() -> None:
    out = io.StringIO()
    with (
        override_settings(KEYRUNES={"BASE_URL": BASE, "BREAKER_COOLDOWN": 0}),
        pytest.raises(CommandError),
    ):
        call_command("keyrunes_check", "--dry-run", stdout=out, stderr=io.StringIO())
    assert "BREAKER_COOLDOWN" in out.getvalue()


def test_checks_registered_with_django() -> None:
    with override_settings(KEYRUNES={"BASE_URL": BASE, "BREAKER_COOLDOWN": -1}):
        assert "keyrunes_django.E042" in [m.id for m in django_checks.run_checks()]
