"""Failed-login throttling per login name and per IP."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.test import override_settings

from keyrunes_django import throttling
from keyrunes_django.audit import AUDIT_LOGGER_NAME


def _settings(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "BASE_URL": "http://127.0.0.1:9",
        "LOGIN_THROTTLE_FAILURES": 3,
        "LOGIN_THROTTLE_WINDOW": 60,
    }
    base.update(values)
    return base


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    caches["default"].clear()
    yield
    caches["default"].clear()


@override_settings(KEYRUNES=_settings())
def test_identity_is_blocked_after_limit(caplog: pytest.LogCaptureFixture) -> None:
    for expected in (1, 2, 3):
        throttling.check_login_allowed("alice", None)
        assert throttling.record_login_failure("alice", None) == {"identity": expected}
    with (
        caplog.at_level(logging.WARNING, logger=AUDIT_LOGGER_NAME),
        pytest.raises(throttling.LoginThrottled) as info,
    ):
        throttling.check_login_allowed("ALICE ", None)
    exc = info.value
    assert exc.scope == "identity"
    assert 0 < exc.retry_after <= 60
    assert exc.code == "login_throttled"
    assert str(exc) == "Too many failed login attempts. Please try again in 1 minute."
    assert exc.messages == [str(exc)]
    (record,) = [r for r in caplog.records if r.name == AUDIT_LOGGER_NAME]
    assert record.event == "login_throttled"  # type: ignore[attr-defined]
    # Another login name is not affected.
    throttling.check_login_allowed("bob", None)


@override_settings(KEYRUNES=_settings())
def test_namespaces_are_counted_apart() -> None:
    for _ in range(3):
        throttling.record_login_failure("alice", None, namespace="tenant_a")
    with pytest.raises(throttling.LoginThrottled):
        throttling.check_login_allowed("alice", None, namespace="tenant_a")
    throttling.check_login_allowed("alice", None, namespace="public")


@override_settings(KEYRUNES=_settings(LOGIN_THROTTLE_WINDOW=600))
def test_message_uses_minutes() -> None:
    exc = throttling.LoginThrottled(scope="ip", retry_after=599)
    assert "10 minutes" in str(exc)


@override_settings(KEYRUNES=_settings())
def test_ip_limit_defaults_to_four_times_identity_limit() -> None:
    for i in range(11):
        throttling.record_login_failure(f"user{i}", "198.51.100.7")
    throttling.check_login_allowed("someone", "198.51.100.7")
    throttling.record_login_failure("user-last", "198.51.100.7")
    with pytest.raises(throttling.LoginThrottled) as info:
        throttling.check_login_allowed("someone", "198.51.100.7")
    assert info.value.scope == "ip"
    throttling.check_login_allowed("someone", "198.51.100.8")


@override_settings(KEYRUNES=_settings(LOGIN_THROTTLE_IP_FAILURES=2))
def test_explicit_ip_limit_and_reset_scopes() -> None:
    throttling.record_login_failure("a", "10.0.0.1")
    throttling.record_login_failure("b", "10.0.0.1")
    with pytest.raises(throttling.LoginThrottled):
        throttling.check_login_allowed("c", "10.0.0.1")
    # Resetting the login name leaves the IP counter alone.
    throttling.reset("a")
    with pytest.raises(throttling.LoginThrottled):
        throttling.check_login_allowed("a", "10.0.0.1")
    throttling.reset(ip="10.0.0.1")
    throttling.check_login_allowed("a", "10.0.0.1")
    assert throttling.status("b", "10.0.0.1")["ip"].failures == 0
    assert throttling.status("b", "10.0.0.1")["identity"].failures == 1


@override_settings(KEYRUNES=_settings(LOGIN_THROTTLE_FAILURES=0))
def test_zero_disables_throttling() -> None:
    for _ in range(30):
        assert throttling.record_login_failure("alice", "10.0.0.2") == {}
    throttling.check_login_allowed("alice", "10.0.0.2")


@override_settings(KEYRUNES=_settings())
def test_reset_after_success_and_status() -> None:
    throttling.record_login_failure("alice", "10.0.0.3")
    current = throttling.status("alice", "10.0.0.3")
    assert current["identity"].failures == 1
    assert current["identity"].limit == 3
    assert not current["identity"].blocked
    assert 0 < current["identity"].retry_after <= 60
    throttling.reset("alice")
    assert throttling.status("alice")["identity"].failures == 0
    assert throttling.status("alice")["identity"].retry_after == 0
    throttling.reset()  # nothing to do


@override_settings(KEYRUNES=_settings())
def test_window_expiry_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(3):
        throttling.record_login_failure("carol", None)
    # The counter vanished (cache expiry) while the start marker survived.
    count_key, _start = throttling._keys("identity", throttling._normalize("carol", None))
    caches["default"].delete(count_key)
    assert throttling.record_login_failure("carol", None) == {"identity": 1}
    throttling.check_login_allowed("carol", None)


@override_settings(KEYRUNES=_settings())
def test_cache_keys_hold_no_login_name() -> None:
    throttling.record_login_failure("secret-name@example.com", "10.9.9.9")
    cache = caches["default"]
    keys = list(cache._cache.keys())  # type: ignore[attr-defined]
    assert keys
    assert not any("secret-name" in k or "10.9.9.9" in k for k in keys)


# ----------------------------------------------------- through the login backend


@pytest.mark.django_db
def test_backend_throttles_and_audits(keyrunes: Any, caplog: pytest.LogCaptureFixture) -> None:
    from django.conf import settings
    from django.contrib.auth import authenticate
    from django.test import RequestFactory

    from keyrunes_django.backends import login_error

    user = keyrunes.create_user("throttled", password="Right-pass-123")
    limits = {**settings.KEYRUNES, "LOGIN_THROTTLE_FAILURES": 2, "LOGIN_THROTTLE_WINDOW": 60}
    factory = RequestFactory()
    with override_settings(KEYRUNES=limits), caplog.at_level(logging.INFO, AUDIT_LOGGER_NAME):
        for _ in range(2):
            request = factory.post("/login/", REMOTE_ADDR="192.0.2.1")
            assert authenticate(request, username=user.username, password="wrong-pass") is None
        logins_before = keyrunes.requests_to("/api/login")
        request = factory.post("/login/", REMOTE_ADDR="192.0.2.1")
        assert authenticate(request, username=user.username, password="Right-pass-123") is None
        assert keyrunes.requests_to("/api/login") == logins_before  # Keyrunes not asked
        error = login_error(request)
        assert error is not None
        assert "Too many failed login attempts" in str(error)
        # Another login name from another IP still works, and resets only its own counter.
        request = factory.post("/login/", REMOTE_ADDR="192.0.2.2")
        other = keyrunes.create_user("other", password="Other-pass-123")
        assert authenticate(request, username=other.username, password="Other-pass-123")
    events = [getattr(r, "event", None) for r in caplog.records if r.name == AUDIT_LOGGER_NAME]
    assert events.count("login_failed") == 3  # two wrong passwords, one throttled
    assert "login_throttled" in events
    assert "login_succeeded" in events
    assert not any("Right-pass-123" in r.getMessage() for r in caplog.records)


# Real Redis when the CI run provides one (no skip otherwise: the list is just shorter).
CACHE_ALIASES = ["default"] + (["redis"] if os.environ.get("KEYRUNES_TEST_REDIS_URL") else [])


@pytest.mark.parametrize("alias", CACHE_ALIASES)
def test_counters_in_each_cache_backend(alias: str) -> None:
    with override_settings(KEYRUNES=_settings(CACHE_ALIAS=alias, LOGIN_THROTTLE_IP_FAILURES=0)):
        throttling.reset("redis-user", "10.1.1.1")
        try:
            assert throttling.record_login_failure("redis-user", "10.1.1.1") == {"identity": 1}
            throttling.record_login_failure("redis-user", "10.1.1.1")
            throttling.record_login_failure("redis-user", "10.1.1.1")
            with pytest.raises(throttling.LoginThrottled) as info:
                throttling.check_login_allowed("redis-user", "10.1.1.1")
            assert 0 < info.value.retry_after <= 60
            # The counter expired while the window marker survived: start over.
            count_key, _start = throttling._keys(
                "identity", throttling._normalize("redis-user", None)
            )
            caches[alias].delete(count_key)
            assert throttling.record_login_failure("redis-user", None) == {"identity": 1}
        finally:
            throttling.reset("redis-user", "10.1.1.1")
        assert throttling.status("redis-user")["identity"].failures == 0
