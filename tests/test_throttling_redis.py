"""The throttle's counters on a real Redis server.

Runs when ``KEYRUNES_TEST_REDIS_URL`` is set (CI's PostgreSQL run; locally
``eval "$(bash scripts/services.sh start)"``). The concurrency tests in
test_throttling.py also run against Redis then.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.test import override_settings

from keyrunes_django import throttling

pytestmark = [
    pytest.mark.redis,
    pytest.mark.django_db,
    pytest.mark.skipif(
        not os.environ.get("KEYRUNES_TEST_REDIS_URL"), reason="KEYRUNES_TEST_REDIS_URL not set"
    ),
]

SETTINGS = {
    "BASE_URL": "http://127.0.0.1:9",
    "CACHE_ALIAS": "redis",
    "LOGIN_THROTTLE_FAILURES": 3,
    "LOGIN_THROTTLE_WINDOW": 60,
}


@pytest.fixture(autouse=True)
def _redis() -> Iterator[None]:
    caches["redis"].clear()
    with override_settings(KEYRUNES=SETTINGS):
        yield
    caches["redis"].clear()


def _raw() -> Any:
    import redis

    return redis.Redis.from_url(os.environ["KEYRUNES_TEST_REDIS_URL"])


def _count_key(name: str, part: int = 1) -> str:
    """The Redis key of a login name's failures (``part=0``: attempts in flight)."""
    (budget,) = throttling._login_budgets(name, None, None)
    return str(caches["redis"].make_and_validate_key(budget.keys[part]))


def test_counters_expire_with_the_window() -> None:
    attempt = throttling.acquire_login("alice", None)
    assert 0 < _raw().ttl(_count_key("alice", part=0)) <= 60
    attempt.keep()
    assert 0 < _raw().ttl(_count_key("alice")) <= 60


def test_a_counter_that_lost_its_expiry_gets_it_back() -> None:
    # What Django's own incr() (EXISTS, then INCR) leaves when the key expires in
    # between: a counter with no expiry, which would lock the account out for good.
    raw = _raw()
    raw.set(_count_key("bob"), 1)
    raw.set(_count_key("bob", part=0), 0)
    assert raw.ttl(_count_key("bob")) == -1
    throttling.acquire_login("bob", None).keep()
    assert int(raw.get(_count_key("bob"))) == 2
    assert 0 < raw.ttl(_count_key("bob")) <= 60
    assert 0 < raw.ttl(_count_key("bob", part=0)) <= 60


def test_a_refund_never_creates_a_counter() -> None:
    attempt = throttling.acquire_login("carol", None)
    caches["redis"].clear()
    attempt.not_a_failure()
    assert _raw().exists(_count_key("carol", part=0)) == 0


def test_counters_are_plain_integers_django_can_read() -> None:
    for _ in range(2):
        throttling.acquire_login("dave", None).keep()
    assert throttling.status("dave")["account"].failures == 2
    assert int(_raw().get(_count_key("dave"))) == 2
