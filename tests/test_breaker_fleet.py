"""The open state shared between processes through the shared cache."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
from django.core.cache import caches
from django.test import override_settings

from keyrunes_django import breaker as breaker_module
from keyrunes_django.breaker import (
    CLOSED,
    OPEN,
    CircuitBreaker,
    SharedFleetState,
    reset_breaker,
)
from keyrunes_django.exceptions import CircuitOpen
from keyrunes_django.tokens import get_authenticator


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Board:
    """A fleet state in memory: what two processes sharing a cache would see."""

    def __init__(self) -> None:
        self.until: float | None = None
        self.reads = 0
        self.writes: list[float] = []

    def opened_until(self) -> float | None:
        self.reads += 1
        return self.until

    def publish_open(self, until: float) -> None:
        self.writes.append(until)
        self.until = until


def process(board: Any, mono: Clock, wall: Clock) -> CircuitBreaker:
    return CircuitBreaker(3, 10.0, clock=mono, fleet=board, wall_clock=wall)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.acquire(5.0).failed()


def test_the_first_process_to_open_tells_the_others() -> None:
    board, mono, wall = Board(), Clock(100.0), Clock(5_000.0)
    first, second = process(board, mono, wall), process(board, Clock(7.0), wall)
    fail(first, 3)
    assert first.state == OPEN
    assert board.writes == [5_010.0]
    wall.now += 4.0
    with pytest.raises(CircuitOpen) as refused:
        second.acquire(5.0)
    assert second.state == OPEN
    assert refused.value.retry_after == pytest.approx(6.0)
    assert board.writes == [5_010.0]  # adopting is not publishing again


def test_the_cooldown_ends_with_an_own_probe() -> None:
    board, mono, wall = Board(), Clock(0.0), Clock(1_000.0)
    board.until = 1_002.0
    breaker = process(board, mono, wall)
    with pytest.raises(CircuitOpen):
        breaker.acquire(5.0)
    mono.now += 2.5
    wall.now += 2.5
    probe = breaker.acquire(5.0)
    assert probe.probe
    probe.succeeded()
    assert breaker.state == CLOSED


def test_a_past_or_missing_record_changes_nothing() -> None:
    board, mono, wall = Board(), Clock(0.0), Clock(1_000.0)
    board.until = 999.0
    breaker = process(board, mono, wall)
    breaker.acquire(5.0).succeeded()
    assert breaker.state == CLOSED
    board.until = None
    mono.now += 2
    breaker.acquire(5.0).succeeded()
    assert breaker.state == CLOSED


def test_the_shared_state_is_read_at_most_once_a_second() -> None:
    board, mono, wall = Board(), Clock(0.0), Clock(1_000.0)
    breaker = process(board, mono, wall)
    for _ in range(50):
        breaker.acquire(5.0).succeeded()
    assert board.reads == 1
    mono.now += breaker_module.FLEET_CHECK_INTERVAL
    breaker.acquire(5.0).succeeded()
    assert board.reads == 2


def test_an_unreadable_or_unwritable_board_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def opened_until(self) -> float | None:
            raise ConnectionError("redis down")

        def publish_open(self, until: float) -> None:
            raise ConnectionError("redis down")

    breaker = CircuitBreaker(2, 10.0, clock=Clock(0.0), fleet=Broken(), wall_clock=Clock(0.0))
    with caplog.at_level(logging.WARNING, logger="keyrunes_django.client"):
        breaker.acquire(5.0).failed()
        breaker.acquire(5.0).failed()
    assert breaker.state == OPEN
    assert "shared state unreadable" in caplog.text
    assert "shared state not written" in caplog.text


def test_adoption_is_logged_as_another_process_s_finding(
    caplog: pytest.LogCaptureFixture,
) -> None:
    board = Board()
    board.until = 1_005.0
    breaker = process(board, Clock(0.0), Clock(1_000.0))
    with (
        caplog.at_level(logging.WARNING, logger="keyrunes_django.client"),
        pytest.raises(CircuitOpen),
    ):
        breaker.acquire(5.0)
    assert "another process found Keyrunes down" in caplog.text


class SharedLocMem(SharedFleetState):
    """The real record format, on the test cache (a per-process cache is normally skipped)."""

    PROCESS_LOCAL = ()


@pytest.mark.usefixtures("clean_caches")
class TestSharedFleetState:
    @pytest.fixture(autouse=True)
    def _keyrunes(self, settings: Any) -> None:
        settings.KEYRUNES = {
            **settings.KEYRUNES,
            "BASE_URL": "http://kr.test",
            "JWT_SECRET": "s" * 40,
        }

    def test_round_trip_through_a_sealed_record(self) -> None:
        board = SharedLocMem()
        assert board.opened_until() is None
        board.publish_open(2_000_000_000.0)
        assert board.opened_until() == 2_000_000_000.0
        board.forget()
        assert board.opened_until() is None

    def test_a_record_without_the_seal_is_ignored(self) -> None:
        board = SharedLocMem()
        shared = get_authenticator().cache.shared
        shared.backend.set(shared.key(board.KIND, board.NAME), '{"until": 2000000000}', 60)
        assert board.opened_until() is None

    def test_a_process_local_cache_is_not_used(self) -> None:
        board = SharedFleetState()
        board.publish_open(2_000_000_000.0)
        assert board.opened_until() is None
        assert not caches["default"]._cache  # type: ignore[attr-defined]

    def test_nothing_without_django_settings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from django.conf import settings

        monkeypatch.setattr(type(settings), "configured", property(lambda self: False))
        assert SharedLocMem().opened_until() is None

    def test_reset_breaker_forgets_the_shared_state(self, monkeypatch: pytest.MonkeyPatch) -> None:
        board = SharedLocMem()
        monkeypatch.setattr(breaker_module, "_FLEET", board)
        board.publish_open(2_000_000_000.0)
        reset_breaker()
        assert board.opened_until() is None


def test_reset_breaker_survives_a_broken_configuration() -> None:
    with override_settings(KEYRUNES={"CACHE_ALIAS": "missing"}):
        reset_breaker()  # logged at debug level, never raised


@pytest.mark.redis
@pytest.mark.skipif(
    not os.environ.get("KEYRUNES_TEST_REDIS_URL"), reason="KEYRUNES_TEST_REDIS_URL not set"
)
def test_two_processes_on_one_redis(settings: Any) -> None:
    settings.KEYRUNES = {
        **settings.KEYRUNES,
        "BASE_URL": "http://kr.test",
        "JWT_SECRET": "s" * 40,
        "CACHE_ALIAS": "redis",
    }
    caches["redis"].clear()
    try:
        first = CircuitBreaker(2, 10.0, fleet=SharedFleetState())
        second = CircuitBreaker(2, 10.0, fleet=SharedFleetState())
        fail(first, 2)
        assert first.state == OPEN
        with pytest.raises(CircuitOpen) as refused:
            second.acquire(5.0)
        assert 0 < (refused.value.retry_after or 0) <= 10.0
        reset_breaker()
        assert SharedFleetState().opened_until() is None
    finally:
        caches["redis"].clear()


def test_a_record_further_than_one_cooldown_ahead_is_ignored() -> None:
    board, mono, wall = Board(), Clock(0.0), Clock(1_000.0)
    board.until = 1_000.0 + 86_400  # a skewed clock, or a bad writer
    breaker = process(board, mono, wall)
    breaker.acquire(5.0).succeeded()
    assert breaker.state == CLOSED
    board.until = 1_000.0 + 10.5  # within the tolerance: followed
    mono.now += 2
    with pytest.raises(CircuitOpen):
        breaker.acquire(5.0)


def test_a_cooldown_waited_out_is_not_followed_again() -> None:
    board, mono, wall = Board(), Clock(0.0), Clock(1_000.0)
    board.until = 1_008.0
    breaker = process(board, mono, wall)
    with pytest.raises(CircuitOpen):
        breaker.acquire(5.0)
    mono.now += 8.0
    wall.now += 7.5  # the clocks disagree a little: the record still looks live
    breaker.acquire(5.0).succeeded()
    assert breaker.state == CLOSED
    mono.now += 2
    breaker.acquire(5.0).succeeded()
    assert breaker.state == CLOSED
