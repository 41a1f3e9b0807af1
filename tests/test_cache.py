"""The verification cache: LRU bounds, shared records, single-flight, stale-if-error."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from django.core.cache import caches

from keyrunes_django import cache, signals
from keyrunes_django.exceptions import InvalidToken, KeyrunesUnavailable
from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity

IDENTITY = VerifiedIdentity(
    user_id=7,
    username="alice",
    email="alice@example.com",
    namespace="public",
    organization_id=1,
    groups=("users", "admin"),
    expires_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
    issued_at=datetime(2029, 12, 31, 23, 0, tzinfo=timezone.utc),
    external_id="3f1c",
    source="remote",
    payload={"user_id": 7, "groups": ["users", "admin"]},
)


@pytest.fixture(autouse=True)
def _settings(settings: Any) -> Iterator[None]:
    settings.KEYRUNES = {
        "BASE_URL": "http://127.0.0.1:9",
        "CACHE_TTL": 300,
        "NEGATIVE_CACHE_TTL": 30,
        "STALE_IF_ERROR": 120,
        "LOCAL_CACHE_SIZE": 100,
    }
    caches["default"].clear()
    yield
    caches["default"].clear()


class Clock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(cache, "now", c)
    return c


class Counter:
    """A compute function that counts calls and can be switched to fail."""

    def __init__(self, value: Any = IDENTITY, expires_at: float | None = None) -> None:
        self.value = value
        self.expires_at = expires_at
        self.calls = 0
        self.error: Exception | None = None

    def __call__(self) -> tuple[Any, float | None]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.value, self.expires_at


def test_credential_hash_is_sha256() -> None:
    import hashlib

    digest = cache.credential_hash("secret-token")
    assert digest == hashlib.sha256(b"secret-token").hexdigest()
    assert "secret" not in digest


class TestSerialisation:
    def test_identity_roundtrip(self) -> None:
        data = cache.identity_to_dict(IDENTITY)
        import json

        json.dumps(data)  # plain data only
        back = cache.identity_from_dict(data)
        assert back == IDENTITY
        assert back.payload == IDENTITY.payload
        assert back.expires_at == IDENTITY.expires_at

    def test_identity_without_optional_fields(self) -> None:
        bare = VerifiedIdentity(
            user_id=1, username="u", email="e", namespace="public", organization_id=1
        )
        assert cache.identity_from_dict(cache.identity_to_dict(bare)) == bare

    def test_principal_roundtrip(self) -> None:
        for principal in (
            OrganizationPrincipal(organization_id=2, name="Company X"),
            OrganizationPrincipal(organization_id=None),
        ):
            assert cache.principal_from_dict(cache.principal_to_dict(principal)) == principal

    @pytest.mark.parametrize(
        "record",
        [
            None,
            "junk",
            {"v": 999},
            {"v": 1, "stored_at": 1.0},
            {"v": 1, "value": {}, "stored_at": 1},
        ],
    )
    def test_bad_records_are_misses(self, record: Any) -> None:
        assert cache._from_record("token", record) is None


class TestLocalCache:
    def test_bounded_lru(self) -> None:
        lru = cache.LocalCache(3)
        entry = cache.CacheEntry(value=None, stored_at=0, fresh_until=1, stale_until=1)
        for key in "abc":
            lru.set(key, entry)
        assert lru.get("a") is entry  # a becomes most recent
        lru.set("d", entry)
        assert len(lru) == 3
        assert lru.get("b") is None
        assert lru.get("a") is entry
        lru.delete("a")
        assert lru.get("a") is None
        lru.clear()
        assert len(lru) == 0

    def test_size_zero_disables(self) -> None:
        lru = cache.LocalCache(0)
        lru.set("a", cache.CacheEntry(value=None, stored_at=0, fresh_until=1, stale_until=1))
        assert lru.get("a") is None

    def test_many_keys_stay_bounded_under_threads(self) -> None:
        lru = cache.LocalCache(50)
        entry = cache.CacheEntry(value=None, stored_at=0, fresh_until=1, stale_until=1)

        def work(n: int) -> None:
            for i in range(2000):
                lru.set(f"{n}:{i}", entry)
                lru.get(f"{n}:{i - 1}")

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(lru) == 50


class TestSingleFlight:
    def test_one_call_for_concurrent_callers(self) -> None:
        flight = cache.SingleFlight()
        started = threading.Event()
        release = threading.Event()
        calls: list[int] = []

        def slow() -> str:
            calls.append(1)
            started.set()
            release.wait(5)
            return "answer"

        results: list[str] = []

        def caller() -> None:
            results.append(flight.run("k", slow))

        threads = [threading.Thread(target=caller) for _ in range(8)]
        threads[0].start()
        started.wait(5)
        for t in threads[1:]:
            t.start()
        time.sleep(0.05)  # let the followers reach the wait
        release.set()
        for t in threads:
            t.join()
        assert calls == [1]
        assert results == ["answer"] * 8
        assert len(flight) == 0

    def test_errors_are_shared(self) -> None:
        flight = cache.SingleFlight()
        release = threading.Event()
        entered = threading.Event()

        def failing() -> str:
            entered.set()
            release.wait(5)
            raise KeyrunesUnavailable("down")

        errors: list[BaseException] = []

        def caller() -> None:
            try:
                flight.run("k", failing)
            except KeyrunesUnavailable as exc:
                errors.append(exc)

        first = threading.Thread(target=caller)
        first.start()
        entered.wait(5)
        second = threading.Thread(target=caller)
        second.start()
        time.sleep(0.05)
        release.set()
        first.join()
        second.join()
        assert len(errors) == 2

    def test_follower_times_out(self) -> None:
        flight = cache.SingleFlight()
        release = threading.Event()
        entered = threading.Event()

        def slow() -> str:
            entered.set()
            release.wait(5)
            return "x"

        leader = threading.Thread(target=lambda: flight.run("k", slow))
        leader.start()
        entered.wait(5)
        with pytest.raises(KeyrunesUnavailable):
            flight.run("k", slow, wait_timeout=0.01)
        release.set()
        leader.join()


class TestLookup:
    def test_positive_ttl_is_min_of_setting_and_expiry(self, clock: Clock) -> None:
        state = cache.get_state()
        compute = Counter(expires_at=clock.value + 60)
        entry = state.lookup("token", "d1", compute, shared=True)
        assert entry.value == IDENTITY
        assert entry.fresh_until == clock.value + 60
        assert entry.stale_until == clock.value + 60  # never past the token's exp
        compute2 = Counter(expires_at=clock.value + 3600)
        entry2 = state.lookup("token", "d2", compute2, shared=True)
        assert entry2.fresh_until == clock.value + 300
        assert entry2.stale_until == clock.value + 300 + 120

    def test_hits_do_not_compute(self, clock: Clock) -> None:
        state = cache.get_state()
        compute = Counter()
        for _ in range(5):
            state.lookup("token", "d", compute, shared=True)
        assert compute.calls == 1
        clock.value += 301
        state.lookup("token", "d", compute, shared=True)
        assert compute.calls == 2

    def test_shared_cache_holds_plain_dicts(self, clock: Clock) -> None:
        state = cache.get_state()
        state.lookup("token", "d", Counter(), shared=True)
        record = caches["default"].get(state.shared.key("token", "d"))
        assert isinstance(record, dict)
        assert record["value"]["username"] == "alice"
        assert "d" not in record["value"].values()

    def test_other_process_hits_shared_cache(self, clock: Clock) -> None:
        cache.get_state().lookup("token", "d", Counter(), shared=True)
        cache.clear_caches()  # a fresh process: empty LRU, same shared cache
        compute = Counter()
        entry = cache.get_state().lookup("token", "d", compute, shared=True)
        assert compute.calls == 0
        assert entry.value == IDENTITY

    def test_local_only(self, clock: Clock) -> None:
        state = cache.get_state()
        state.lookup("token", "d", Counter(), shared=False)
        assert caches["default"].get(state.shared.key("token", "d")) is None

    def test_negative_cached_for_negative_ttl(self, clock: Clock) -> None:
        state = cache.get_state()
        compute = Counter()
        compute.error = InvalidToken("nope", reason="rejected")
        entry = state.lookup("token", "d", compute, shared=True)
        assert entry.reason == "rejected"
        with pytest.raises(InvalidToken):
            entry.raise_if_refused()
        state.lookup("token", "d", compute, shared=True)
        assert compute.calls == 1
        clock.value += 31
        state.lookup("token", "d", compute, shared=True)
        assert compute.calls == 2
        cache.clear_caches()
        again = cache.get_state().lookup("token", "d", compute, shared=True)
        assert again.reason == "rejected"
        assert compute.calls == 2  # from the shared cache

    def test_stale_if_error_window_then_503(self, clock: Clock) -> None:
        state = cache.get_state()
        compute = Counter()
        start = clock.value
        state.lookup("token", "d", compute, shared=True)
        compute.error = KeyrunesUnavailable("down")
        stale_calls: list[Exception] = []

        clock.value = start + 301  # fresh window over, stale window open
        entry = state.lookup("token", "d", compute, shared=True, on_stale=stale_calls.append)
        assert entry.value == IDENTITY
        assert len(stale_calls) == 1
        assert compute.calls == 2
        # Re-served from memory for a few seconds without retrying.
        state.lookup("token", "d", compute, shared=True)
        assert compute.calls == 2
        clock.value += cache.STALE_RETRY_INTERVAL + 0.1
        state.lookup("token", "d", compute, shared=True, on_stale=stale_calls.append)
        assert compute.calls == 3

        clock.value = start + 300 + 120 + 1  # past the stale window
        with pytest.raises(KeyrunesUnavailable):
            state.lookup("token", "d", compute, shared=True)

    def test_stale_from_shared_cache(self, clock: Clock) -> None:
        compute = Counter()
        cache.get_state().lookup("token", "d", compute, shared=True)
        cache.clear_caches()
        clock.value += 350
        compute.error = KeyrunesUnavailable("down")
        entry = cache.get_state().lookup("token", "d", compute, shared=True)
        assert entry.value == IDENTITY

    def test_recovery_after_outage(self, clock: Clock) -> None:
        state = cache.get_state()
        compute = Counter()
        state.lookup("token", "d", compute, shared=True)
        clock.value += 301
        compute.error = KeyrunesUnavailable("down")
        state.lookup("token", "d", compute, shared=True)
        compute.error = None
        clock.value += cache.STALE_RETRY_INTERVAL + 1
        entry = state.lookup("token", "d", compute, shared=True)
        assert entry.stored_at == clock.value
        assert entry.is_fresh(clock.value + 299)

    def test_single_flight_under_threads(self, clock: Clock) -> None:
        state = cache.get_state()
        release = threading.Event()
        calls: list[int] = []

        def slow() -> tuple[Any, float | None]:
            calls.append(1)
            release.wait(5)
            return IDENTITY, None

        results: list[Any] = []

        def worker() -> None:
            results.append(state.lookup("token", "d", slow, shared=True).value)

        threads = [threading.Thread(target=worker) for _ in range(10)]
        for t in threads:
            t.start()
        time.sleep(0.1)
        release.set()
        for t in threads:
            t.join()
        assert len(calls) == 1
        assert results == [IDENTITY] * 10

    def test_shared_cache_failure_is_a_miss(
        self, clock: Clock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        class Broken:
            def get(self, *a: Any, **k: Any) -> Any:
                raise ConnectionError("redis down")

            set = delete = get

        state = cache.get_state()
        monkeypatch.setattr(cache.SharedCache, "backend", property(lambda self: Broken()))
        compute = Counter()
        entry = state.lookup("token", "d", compute, shared=True)
        assert entry.value == IDENTITY
        state.forget("token", "d")
        state.lookup("token", "d", compute, shared=True)
        assert compute.calls == 2

    def test_settings_change_clears_local_layer(self, clock: Clock, settings: Any) -> None:
        state = cache.get_state()
        state.lookup("token", "d", Counter(), shared=False)
        settings.KEYRUNES = {"BASE_URL": "http://127.0.0.1:9", "LOCAL_CACHE_SIZE": 5}
        fresh = cache.get_state()
        assert fresh is not state
        assert fresh.local.maxsize == 5
        assert fresh.peek("token", "d") is None


def test_auth_service_error_signal_payload_has_no_secret() -> None:
    # Documented kwargs only: the signal never carries the credential.
    seen: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        seen.append(kwargs)

    signals.auth_service_error.connect(receiver)
    try:
        from keyrunes_django.tokens import _service_error

        _service_error(KeyrunesUnavailable("down"), "verify_token", None, served_stale=True)
    finally:
        signals.auth_service_error.disconnect(receiver)
    assert seen[0]["served_stale"] is True
    assert seen[0]["operation"] == "verify_token"


def test_queued_caller_reuses_the_finished_answer(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A caller that missed the cache, then queued behind a leader that has
    # finished in between, takes the leader's answer instead of computing again.
    state = cache.get_state()
    state.lookup("token", "d", Counter(), shared=False)
    real_get = state.local.get
    misses = [True]

    def get_once_missing(key: str) -> cache.CacheEntry | None:
        if misses:
            misses.pop()
            return None
        return real_get(key)

    monkeypatch.setattr(state.local, "get", get_once_missing)
    compute = Counter()
    assert state.lookup("token", "d", compute, shared=False).value == IDENTITY
    assert compute.calls == 0
