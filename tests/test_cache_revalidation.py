"""Stale-while-revalidate and the fleet-wide single flight of the verification cache."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.core.cache import caches

from keyrunes_django.cache import (
    CachePolicy,
    SharedCache,
    VerificationCache,
)
from keyrunes_django.conf import clock
from keyrunes_django.exceptions import KeyrunesUnavailable
from keyrunes_django.identity import VerifiedIdentity

IDENTITY = VerifiedIdentity(
    user_id=7, username="alice", email="a@example.com", namespace="public", organization_id=1
)


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.value = 1_000_000.0
        monkeypatch.setattr(clock, "now", lambda: self.value)


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@pytest.fixture(autouse=True)
def _empty() -> Any:
    caches["default"].clear()
    yield
    caches["default"].clear()


def make_cache(prefix: str = "t") -> VerificationCache:
    shared = SharedCache("default", prefix, b"k" * 32)
    return VerificationCache(CachePolicy(ttl=10, negative_ttl=5, stale_if_error=60), 100, shared)


class Remote:
    """A compute function that counts calls and can be slowed down or broken."""

    def __init__(self) -> None:
        self.calls = 0
        self.delay = 0.0
        self.down = False
        self.lock = threading.Lock()

    def __call__(self) -> tuple[VerifiedIdentity, float | None]:
        with self.lock:
            self.calls += 1
        time.sleep(self.delay)
        if self.down:
            raise KeyrunesUnavailable("down")
        return IDENTITY, None


def test_stale_answer_is_served_at_once_and_revalidated_once(fake_clock: Clock) -> None:
    cache, remote = make_cache(), Remote()
    first = cache.lookup("token", "d", remote, shared=True)
    assert remote.calls == 1
    fake_clock.value += 11  # past the TTL, inside STALE_IF_ERROR
    remote.delay = 0.2
    started = time.monotonic()
    answers = [cache.lookup("token", "d", remote, shared=True) for _ in range(20)]
    assert time.monotonic() - started < 0.15  # nobody waited for Keyrunes
    assert all(a.value == first.value for a in answers)
    cache.wait_for_revalidations()
    assert remote.calls == 2  # one background revalidation for 20 requests
    assert cache.lookup("token", "d", remote, shared=True).is_fresh(fake_clock.value)


def test_revalidation_during_an_outage_keeps_the_stale_answer(fake_clock: Clock) -> None:
    cache, remote = make_cache(), Remote()
    cache.lookup("token", "d", remote, shared=True)
    fake_clock.value += 11
    remote.down = True
    outages: list[Exception] = []
    assert cache.lookup("token", "d", remote, shared=True, on_stale=outages.append).value
    cache.wait_for_revalidations()
    assert len(outages) == 1
    # The retry window: served from memory, no new attempt for a few seconds.
    assert cache.lookup("token", "d", remote, shared=True).value == IDENTITY
    assert remote.calls == 2
    fake_clock.value += 60  # past the stale window: the outage shows
    with pytest.raises(KeyrunesUnavailable):
        cache.lookup("token", "d", remote, shared=True)


def test_no_background_revalidation_for_shared_first_lookups(fake_clock: Clock) -> None:
    cache, remote = make_cache(), Remote()
    cache.lookup("orgkey", "d", remote, shared=True, shared_first=True)
    fake_clock.value += 11
    cache.lookup("orgkey", "d", remote, shared=True, shared_first=True)
    assert remote.calls == 2  # asked in the request itself
    assert not cache._revalidating


def test_one_remote_call_across_processes() -> None:
    """Three "processes" (caches sharing one Django cache) ask at once: one remote call."""
    remote = Remote()
    remote.delay = 0.3
    processes = [make_cache() for _ in range(3)]
    results: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda c=c: results.append(c.lookup("token", "x", remote, shared=True))
        )
        for c in processes
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert remote.calls == 1
    assert [r.value for r in results] == [IDENTITY] * 3


def test_a_peer_answering_just_before_the_lock_is_taken_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Missed in the shared cache, then a peer answers and lets go: still one remote call."""
    peer, late = make_cache(), make_cache()
    first_remote, second_remote = Remote(), Remote()
    real_acquire = late.shared.acquire

    def acquire_after_the_peer(kind: str, digest: str) -> bool:
        # The peer's whole call fits between this process's miss and its lock.
        peer.lookup(kind, digest, first_remote, shared=True)
        return real_acquire(kind, digest)

    monkeypatch.setattr(late.shared, "acquire", acquire_after_the_peer)
    assert late.lookup("token", "z", second_remote, shared=True).value == IDENTITY
    assert (first_remote.calls, second_remote.calls) == (1, 0)
    # And the lock was let go: the next miss elsewhere may take it.
    assert late.shared.acquire("token", "z")


def test_a_record_nobody_signed_is_no_peer_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Something written under the credential's key between the miss and the lock is ignored."""
    late = make_cache()
    remote = Remote()
    real_acquire = late.shared.acquire

    def acquire_after_a_forgery(kind: str, digest: str) -> bool:
        key = late.shared.key(kind, digest)
        caches["default"].set(key, {"value": "forged", "fresh_until": 10**12}, 60)
        return real_acquire(kind, digest)

    monkeypatch.setattr(late.shared, "acquire", acquire_after_a_forgery)
    assert late.lookup("token", "f", remote, shared=True).value == IDENTITY
    assert remote.calls == 1


def test_a_waiting_process_asks_itself_after_fleet_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    import keyrunes_django.cache as cache_module

    monkeypatch.setattr(cache_module, "FLEET_WAIT", 0.1)
    one, two = make_cache(), make_cache()
    assert one.shared.acquire("token", "y")  # a peer that never answers
    remote = Remote()
    assert two.lookup("token", "y", remote, shared=True).value == IDENTITY
    assert remote.calls == 1


def test_a_failing_cache_never_blocks_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def add(self, *args: Any) -> bool:
            raise ConnectionError

        def get(self, *args: Any) -> Any:
            raise ConnectionError

        def set(self, *args: Any) -> None:
            raise ConnectionError

        def delete(self, *args: Any) -> None:
            raise ConnectionError

    cache = make_cache()
    # Through monkeypatch, which puts SharedCache's own property back afterwards
    # (deleting the patched attribute would leave the class without one).
    monkeypatch.setattr(SharedCache, "backend", property(lambda self: Broken()))
    remote = Remote()
    assert cache.lookup("token", "z", remote, shared=True).value == IDENTITY
    assert remote.calls == 1
