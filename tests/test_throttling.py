"""Throttling: attempts counted before the remote call, per account and per IP."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.cache import caches
from django.db import close_old_connections, connection
from django.test import RequestFactory, override_settings

from keyrunes_django import audit, throttling
from keyrunes_django.audit import AUDIT_LOGGER_NAME
from keyrunes_django.backends import KeyrunesBackend, login_error
from keyrunes_django.models import KeyrunesIdentity
from keyrunes_django.testing import KeyrunesEmulator

# Real Redis when the CI run provides one (no skip otherwise: the list is just shorter).
CACHE_ALIASES = ["default"] + (["redis"] if os.environ.get("KEYRUNES_TEST_REDIS_URL") else [])


def _settings(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "BASE_URL": "http://127.0.0.1:9",
        "LOGIN_THROTTLE_FAILURES": 3,
        "LOGIN_THROTTLE_WINDOW": 60,
    }
    base.update(values)
    return base


def _clear_all() -> None:
    for alias in CACHE_ALIASES:
        caches[alias].clear()


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    _clear_all()
    yield
    _clear_all()


def _fail(name: str, ip: str | None = None, namespace: str | None = None) -> None:
    throttling.acquire_login(name, ip, namespace=namespace).keep()


def _local_keys() -> list[str]:
    return list(caches["default"]._cache.keys())  # type: ignore[attr-defined]


# ------------------------------------------------------------------ the counters


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings())
def test_attempts_beyond_the_limit_are_refused_and_audited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for _ in range(3):
        _fail("alice")
    with (
        caplog.at_level(logging.WARNING, logger=AUDIT_LOGGER_NAME),
        pytest.raises(throttling.LoginThrottled) as info,
    ):
        throttling.acquire_login("ALICE ", None)  # an unknown name counts case-insensitively
    exc = info.value
    assert exc.scope == "account"
    assert 0 < exc.retry_after <= 60
    assert exc.code == "login_throttled"
    assert str(exc) == "Too many failed login attempts. Please try again in 1 minute."
    assert exc.messages == [str(exc)]
    (record,) = [r for r in caplog.records if r.name == AUDIT_LOGGER_NAME]
    assert record.event == "login_throttled"  # type: ignore[attr-defined]
    assert record.identity_hash == audit.login_name_hash("alice")  # type: ignore[attr-defined]
    assert record.identity_hash != hashlib.sha256(b"alice").hexdigest()  # type: ignore[attr-defined]
    # A refused attempt is not counted on top: the counter stays at the limit.
    assert throttling.status("alice")["account"].failures == 3
    # Another login name is not affected.
    throttling.acquire_login("bob", None).keep()


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings())
def test_namespaces_are_counted_apart() -> None:
    for _ in range(3):
        _fail("alice", namespace="tenant_a")
    with pytest.raises(throttling.LoginThrottled):
        throttling.acquire_login("alice", None, namespace="tenant_a")
    throttling.acquire_login("alice", None, namespace="public")


def test_messages() -> None:
    assert "10 minutes" in str(throttling.LoginThrottled(scope="ip", retry_after=599))
    generic = throttling.Throttled(scope="forgot_ip", retry_after=30)
    assert str(generic) == "Too many attempts. Please try again in 1 minute."
    assert generic.code == "throttled"


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings())
def test_ip_limit_defaults_to_four_times_the_account_limit() -> None:
    for i in range(12):
        _fail(f"user{i}", "198.51.100.7")
    with pytest.raises(throttling.LoginThrottled) as info:
        throttling.acquire_login("someone", "198.51.100.7")
    assert info.value.scope == "ip"
    # The refused attempt was taken back from the account it named.
    assert throttling.status("someone")["account"].failures == 0
    throttling.acquire_login("someone", "198.51.100.8")


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings(LOGIN_THROTTLE_IP_FAILURES=2))
def test_ipv6_addresses_count_per_64() -> None:
    _fail("a", "2001:db8:1:2::1")
    _fail("b", "2001:db8:1:2:ffff::9")
    with pytest.raises(throttling.LoginThrottled):
        throttling.acquire_login("c", "2001:db8:1:2:abcd::1")
    throttling.acquire_login("c", "2001:db8:1:3::1").keep()
    # An IPv4-mapped address is the IPv4 address.
    _fail("d", "192.0.2.50")
    _fail("e", "::ffff:192.0.2.50")
    with pytest.raises(throttling.LoginThrottled):
        throttling.acquire_login("f", "192.0.2.50")


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings(LOGIN_THROTTLE_IP_FAILURES=3))
def test_success_clears_the_account_but_not_the_ip() -> None:
    _fail("a", "10.0.0.1")
    _fail("b", "10.0.0.1")
    throttling.acquire_login("c", "10.0.0.1").succeeded()
    current = throttling.status("b", "10.0.0.1")
    # The success took back only its own attempt: the two failures stay.
    assert current["ip"].failures == 2
    assert current["account"].failures == 1
    assert throttling.status("c")["account"].failures == 0
    _fail("d", "10.0.0.1")
    with pytest.raises(throttling.LoginThrottled) as info:
        throttling.acquire_login("c", "10.0.0.1")
    assert info.value.scope == "ip"


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings())
def test_an_attempt_that_is_not_a_failure_is_taken_back_once() -> None:
    attempt = throttling.acquire_login("alice", "10.0.0.4")
    current = throttling.status("alice", "10.0.0.4")
    assert (current["account"].in_flight, current["account"].failures) == (1, 0)
    assert current["ip"].in_flight == 1
    attempt.not_a_failure()
    attempt.not_a_failure()  # settled: no second refund
    attempt.succeeded()
    current = throttling.status("alice", "10.0.0.4")
    assert current["account"] == throttling.ThrottleStatus(0, 3, 0, in_flight=0)
    assert current["ip"].failures == current["ip"].in_flight == 0


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings(LOGIN_THROTTLE_FAILURES=0))
def test_zero_turns_the_throttle_off() -> None:
    for _ in range(30):
        throttling.acquire_login("alice", "10.0.0.2").keep()
    assert _local_keys() == []
    assert throttling.status("alice", "10.0.0.2") == {}


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings(LOGIN_THROTTLE_IP_FAILURES=2))
def test_status_and_reset_by_hand() -> None:
    _fail("alice", "10.0.0.3")
    current = throttling.status("alice", "10.0.0.3")
    assert current["account"].failures == 1
    assert current["account"].limit == 3
    assert not current["account"].blocked
    assert 0 < current["account"].retry_after <= 60
    assert current["ip"].limit == 2
    throttling.reset("alice")
    assert throttling.status("alice")["account"] == throttling.ThrottleStatus(0, 3, 0)
    assert throttling.status(ip="10.0.0.3")["ip"].failures == 1
    throttling.reset(ip="10.0.0.3")
    assert throttling.status(ip="10.0.0.3")["ip"].failures == 0
    throttling.reset()  # nothing to do


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings())
def test_window_expiry_starts_over() -> None:
    for _ in range(3):
        _fail("carol")
    # The counter vanished (cache expiry) while the start marker survived.
    (budget,) = throttling._login_budgets("carol", None, None)
    caches["default"].delete(budget.keys[1])
    throttling.acquire_login("carol", None).keep()
    assert throttling.status("carol")["account"].failures == 1


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings())
def test_a_refund_after_the_window_ended_creates_nothing() -> None:
    attempt = throttling.acquire_login("dave", None)
    caches["default"].clear()
    attempt.not_a_failure()
    assert _local_keys() == []


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings())
def test_cache_keys_hold_no_login_name_ip_or_plain_hash() -> None:
    _fail("secret-name@example.com", "10.9.9.9")
    keys = _local_keys()
    assert len(keys) == 6  # in flight, failures and start, for the account and the IP
    plain = [
        hashlib.sha256(value.encode()).hexdigest()
        for value in ("secret-name@example.com", "10.9.9.9", "public\x00secret-name@example.com")
    ]
    for key in keys:
        assert "secret-name" not in key
        assert "10.9.9.9" not in key
        assert not any(digest in key for digest in plain)


@pytest.mark.django_db
@override_settings(
    KEYRUNES=_settings(CACHE_ALIAS="dummy"),
    CACHES={
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "dummy": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
    },
)
def test_a_cache_that_keeps_nothing_cannot_throttle() -> None:
    # System check W060 warns about it; logins keep working.
    for _ in range(10):
        throttling.acquire_login("alice", "10.0.0.5").keep()


@pytest.mark.parametrize("alias", CACHE_ALIASES)
@pytest.mark.django_db
def test_counters_in_each_cache_backend(alias: str) -> None:
    with override_settings(KEYRUNES=_settings(CACHE_ALIAS=alias)):
        for _ in range(3):
            _fail("redis-user", "10.1.1.1")
        with pytest.raises(throttling.LoginThrottled) as info:
            throttling.acquire_login("redis-user", "10.1.1.1")
        assert 0 < info.value.retry_after <= 60
        assert throttling.status("redis-user", "10.1.1.1")["account"].failures == 3
        assert throttling.status("redis-user", "10.1.1.1")["ip"].failures == 3
        throttling.acquire_login("other", "10.1.1.1").not_a_failure()
        assert throttling.status(ip="10.1.1.1")["ip"].failures == 3
        throttling.reset("redis-user", "10.1.1.1")
        assert throttling.status("redis-user")["account"].failures == 0


# -------------------------------------------------------- one budget per account


def _mirror(keyrunes: KeyrunesEmulator, username: str = "shared") -> Any:
    remote = keyrunes.create_user(username, password="Right-pass-123")
    assert authenticate(username=remote.username, password=remote.password) is not None
    return remote


@pytest.mark.django_db
def test_username_and_email_of_a_mirrored_account_share_one_budget(
    keyrunes: KeyrunesEmulator, settings: Any
) -> None:
    remote = _mirror(keyrunes)
    settings.KEYRUNES = {**settings.KEYRUNES, "LOGIN_THROTTLE_FAILURES": 4}
    calls_before = keyrunes.requests_to("/api/login")
    names = [remote.username, remote.email, remote.email.upper(), remote.username]
    for name in names * 3:
        assert authenticate(username=name, password="wrong-pass") is None
    assert keyrunes.requests_to("/api/login") - calls_before == 4
    assert throttling.status(remote.email)["account"].failures == 4
    # Unlocking by any of its names unlocks the account.
    throttling.reset(remote.email.upper())
    assert authenticate(username=remote.username, password=remote.password) is not None


@pytest.mark.django_db
def test_account_lookup_through_the_payload_when_the_username_is_not_mapped(
    keyrunes: KeyrunesEmulator, settings: Any
) -> None:
    settings.KEYRUNES = {
        **settings.KEYRUNES,
        "USER_ATTR_MAP": {"username": "external_id", "email": "email"},
    }
    remote = _mirror(keyrunes, "payload-user")
    identity = KeyrunesIdentity.objects.get(remote_user_id=remote.user_id)
    assert identity.user.username == remote.external_id
    assert throttling.remote_account_id(remote.username, "public") == remote.user_id
    assert throttling.remote_account_id(remote.email.upper(), "public") == remote.user_id
    assert throttling.remote_account_id(remote.username, "tenant_b") is None
    assert throttling.remote_account_id(remote.username.upper(), "public") is None


@pytest.mark.django_db
def test_an_ambiguous_name_counts_under_the_name(keyrunes: KeyrunesEmulator, settings: Any) -> None:
    first = _mirror(keyrunes, "first")
    second = _mirror(keyrunes, "second")
    assert throttling.remote_account_id(first.email, "public") == first.user_id
    # Stale local data: both mirrored users now carry the same email.
    User.objects.filter(username=second.username).update(email=first.email)
    assert throttling.remote_account_id(first.email, "public") is None


# ------------------------------------------------------------ through the backend


@pytest.mark.django_db
def test_backend_throttles_and_audits(
    keyrunes: KeyrunesEmulator, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    user = keyrunes.create_user("throttled", password="Right-pass-123")
    settings.KEYRUNES = {
        **settings.KEYRUNES,
        "LOGIN_THROTTLE_FAILURES": 2,
        "LOGIN_THROTTLE_WINDOW": 60,
    }
    factory = RequestFactory()
    with caplog.at_level(logging.INFO, AUDIT_LOGGER_NAME):
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
        # Another login name from another IP still works.
        request = factory.post("/login/", REMOTE_ADDR="192.0.2.2")
        other = keyrunes.create_user("other", password="Other-pass-123")
        assert authenticate(request, username=other.username, password="Other-pass-123")
        # A password typed in the login box is never logged, not even as a plain sha256.
        request = factory.post("/login/", REMOTE_ADDR="192.0.2.3")
        assert authenticate(request, username="Typed-Password-99", password="x") is None
    records = [r for r in caplog.records if r.name == AUDIT_LOGGER_NAME]
    events = [getattr(r, "event", None) for r in records]
    assert events.count("login_failed") == 4  # two wrong passwords, one throttled, one typo
    assert "login_throttled" in events
    assert "login_succeeded" in events
    plain = {
        hashlib.sha256(v.encode()).hexdigest() for v in ("Typed-Password-99", "typed-password-99")
    }
    for record in records:
        assert "Right-pass-123" not in record.getMessage()
        assert "Typed-Password" not in record.getMessage()
        assert not plain & {str(v) for v in vars(record).values()}


@pytest.mark.django_db
def test_a_successful_login_does_not_reset_the_ip_counter(
    keyrunes: KeyrunesEmulator, settings: Any
) -> None:
    remote = keyrunes.create_user("goodone", password="Right-pass-123")
    settings.KEYRUNES = {**settings.KEYRUNES, "LOGIN_THROTTLE_IP_FAILURES": 3}
    factory = RequestFactory()

    def attempt(name: str, password: str) -> Any:
        return authenticate(
            factory.post("/login/", REMOTE_ADDR="192.0.2.9"), username=name, password=password
        )

    assert attempt("guess-1", "x") is None
    assert attempt("guess-2", "x") is None
    assert attempt(remote.username, "Right-pass-123") is not None
    assert throttling.status(ip="192.0.2.9")["ip"].failures == 2
    assert attempt("guess-3", "x") is None
    calls = keyrunes.requests_to("/api/login")
    assert attempt(remote.username, "Right-pass-123") is None  # the IP is out of attempts
    assert keyrunes.requests_to("/api/login") == calls


@pytest.mark.django_db
def test_outages_are_not_counted(keyrunes: KeyrunesEmulator, settings: Any) -> None:
    remote = keyrunes.create_user("patient", password="Right-pass-123")
    # The circuit breaker stays out of it: this is about the throttle's counting.
    settings.KEYRUNES = {
        **settings.KEYRUNES,
        "LOGIN_THROTTLE_FAILURES": 2,
        "BREAKER_FAILURES": 0,
    }
    keyrunes.faults.add("/api/login", status=503, times=5)
    for _ in range(5):
        assert authenticate(username=remote.username, password=remote.password) is None
    assert throttling.status(remote.username)["account"].failures == 0
    assert authenticate(username=remote.username, password=remote.password) is not None


@pytest.mark.django_db
def test_a_right_password_clears_the_account(keyrunes: KeyrunesEmulator, settings: Any) -> None:
    remote = keyrunes.create_user("forgetful", password="Right-pass-123")
    settings.KEYRUNES = {**settings.KEYRUNES, "LOGIN_THROTTLE_FAILURES": 3}
    for _ in range(2):
        assert authenticate(username=remote.username, password="wrong") is None
    assert authenticate(username=remote.username, password=remote.password) is not None
    assert throttling.status(remote.username)["account"].failures == 0


# -------------------------------------------------------------- concurrent guesses


def _concurrently(count: int, work: Any) -> list[BaseException]:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            work(index)
        except BaseException as exc:
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


@pytest.mark.parametrize("alias", CACHE_ALIASES)
@pytest.mark.django_db(transaction=True)
def test_concurrent_guesses_reach_keyrunes_at_most_the_limit(
    keyrunes: KeyrunesEmulator, settings: Any, alias: str
) -> None:
    remote = _mirror(keyrunes, "victim")
    settings.KEYRUNES = {**settings.KEYRUNES, "CACHE_ALIAS": alias, "LOGIN_THROTTLE_FAILURES": 5}
    # Every guess stays in flight long enough for all 30 to overlap.
    keyrunes.faults.add("/api/login", delay=0.3)
    calls_before = keyrunes.requests_to("/api/login")
    names = (remote.username, remote.email)
    factory = RequestFactory()

    def guess(index: int) -> None:
        request = factory.post("/login/", REMOTE_ADDR=f"198.51.100.{index}")
        backend = KeyrunesBackend()
        assert backend.authenticate(request, username=names[index % 2], password="wrong") is None

    assert _concurrently(30, guess) == []
    assert keyrunes.requests_to("/api/login") - calls_before == 5


@pytest.mark.parametrize("alias", CACHE_ALIASES)
@pytest.mark.django_db(transaction=True)
def test_concurrent_guesses_from_one_ip_reach_keyrunes_at_most_the_ip_limit(
    keyrunes: KeyrunesEmulator, settings: Any, alias: str
) -> None:
    settings.KEYRUNES = {
        **settings.KEYRUNES,
        "CACHE_ALIAS": alias,
        "LOGIN_THROTTLE_IP_FAILURES": 4,
    }
    keyrunes.faults.add("/api/login", delay=0.3)
    factory = RequestFactory()

    def guess(index: int) -> None:
        request = factory.post("/login/", REMOTE_ADDR="203.0.113.77")
        backend = KeyrunesBackend()
        assert backend.authenticate(request, username=f"name{index}", password="x") is None

    assert _concurrently(30, guess) == []
    assert keyrunes.requests_to("/api/login") == 4


# ------------------------------------------------------------------ odd inputs


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings(LOGIN_THROTTLE_IP_FAILURES=1))
def test_an_address_that_is_not_an_ip_is_still_counted() -> None:
    _fail("a", "unix-socket")
    with pytest.raises(throttling.LoginThrottled):
        throttling.acquire_login("b", " unix-socket ")


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings())
def test_retry_after_without_a_window_start_is_the_whole_window() -> None:
    for _ in range(3):
        _fail("erin")
    (budget,) = throttling._login_budgets("erin", None, None)
    caches["default"].delete(budget.keys[2])  # the start marker was evicted
    with pytest.raises(throttling.LoginThrottled) as info:
        throttling.acquire_login("erin", None)
    assert info.value.retry_after == 60


@pytest.mark.django_db
def test_a_mapped_field_the_user_model_lacks_is_skipped(settings: Any) -> None:
    settings.KEYRUNES = {
        **settings.KEYRUNES,
        "USER_ATTR_MAP": {"nickname": "username", "username": "username"},
    }
    assert throttling._local_field("username") == "username"
    assert throttling._local_field("external_id") is None


# ------------------------------------------------------------ attempts in flight


def _settle_later(attempts: list[throttling.Attempt], how: str, delay: float) -> threading.Thread:
    def settle() -> None:
        time.sleep(delay)
        for attempt in attempts:
            getattr(attempt, how)()

    thread = threading.Thread(target=settle)
    thread.start()
    return thread


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings())
def test_a_budget_full_of_attempts_in_flight_waits_for_them() -> None:
    in_flight = [throttling.acquire_login("frank", None) for _ in range(3)]
    thread = _settle_later(in_flight[:1], "succeeded", 0.3)
    started = time.monotonic()
    throttling.acquire_login("frank", None).keep()
    assert time.monotonic() - started >= 0.25
    thread.join()


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings())
def test_a_waiting_attempt_is_refused_once_they_fail() -> None:
    in_flight = [throttling.acquire_login("gina", None) for _ in range(3)]
    thread = _settle_later(in_flight, "keep", 0.2)
    with pytest.raises(throttling.LoginThrottled):
        throttling.acquire_login("gina", None)
    thread.join()
    assert throttling.status("gina")["account"] == throttling.ThrottleStatus(
        3, 3, throttling.status("gina")["account"].retry_after, in_flight=0
    )


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings(DEADLINE=0.3))
def test_the_wait_ends_with_the_call_deadline() -> None:
    for _ in range(3):
        throttling.acquire_login("hank", None)  # never settled (a crashed worker)
    started = time.monotonic()
    with pytest.raises(throttling.LoginThrottled):
        throttling.acquire_login("hank", None)
    assert 0.25 <= time.monotonic() - started < 2


@pytest.mark.django_db
@override_settings(KEYRUNES=_settings())
def test_an_attempt_left_unsettled_by_an_error_is_a_failure() -> None:
    with pytest.raises(RecursionError), throttling.acquire_login("ivy", None):
        raise RecursionError("a hostile answer crashed the app")
    assert throttling.status("ivy")["account"] == throttling.ThrottleStatus(
        1, 3, throttling.status("ivy")["account"].retry_after, in_flight=0
    )
    with throttling.acquire_login("ivy", None) as attempt:
        attempt.succeeded()
    assert throttling.status("ivy")["account"].failures == 0


@pytest.mark.django_db
def test_a_nul_character_in_the_login_name_is_counted_not_a_500(
    keyrunes: KeyrunesEmulator, settings: Any
) -> None:
    # Django's forms refuse NUL characters, DRF's Basic auth does not.
    _mirror(keyrunes, "nul")
    settings.KEYRUNES = {**settings.KEYRUNES, "LOGIN_THROTTLE_FAILURES": 1}
    assert throttling.remote_account_id("nul\x00", "public") is None
    assert authenticate(username="nul\x00", password="x") is None
    assert authenticate(username="nul\x00", password="x") is None
    assert throttling.status("nul\x00")["account"].failures == 1
