"""The verification cache: LRU bounds, sealed shared records, single-flight, stale-if-error."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from django.core.cache import caches

from keyrunes_django.cache import (
    STALE_RETRY_INTERVAL,
    CacheEntry,
    CachePolicy,
    LocalCache,
    SharedCache,
    SingleFlight,
    VerificationCache,
    credential_hash,
    identity_from_dict,
    identity_to_dict,
    principal_from_dict,
    principal_to_dict,
)
from keyrunes_django.exceptions import InvalidToken, KeyrunesUnavailable
from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity
from keyrunes_django.tokens import get_authenticator
from tests.conftest import FrozenClock

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

POLICY = CachePolicy(ttl=300, negative_ttl=30, stale_if_error=120)
SIGNING_KEY = b"s" * 32


def shared_cache(prefix: str = "keyrunes:test", key: bytes = SIGNING_KEY) -> SharedCache:
    return SharedCache("default", prefix, key)


def new_process(shared: SharedCache | None = None) -> VerificationCache:
    """What one process holds: an empty LRU in front of the shared cache."""
    return VerificationCache(POLICY, 100, shared or shared_cache())


@pytest.fixture(autouse=True)
def _settings(settings: Any) -> Iterator[None]:
    settings.KEYRUNES = {"BASE_URL": "http://127.0.0.1:9", "LOCAL_CACHE_SIZE": 100}
    caches["default"].clear()
    yield
    caches["default"].clear()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    from keyrunes_django.conf import clock as package_clock

    frozen = FrozenClock(1_000_000.0)
    monkeypatch.setattr(package_clock, "now", frozen)
    return frozen


@pytest.fixture
def state() -> VerificationCache:
    return new_process()


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
    digest = credential_hash("secret-token")
    assert digest == hashlib.sha256(b"secret-token").hexdigest()
    assert "secret" not in digest


class TestSerialisation:
    def test_identity_roundtrip(self) -> None:
        data = identity_to_dict(IDENTITY)
        json.dumps(data)  # plain data only
        back = identity_from_dict(data)
        assert back == IDENTITY
        assert back.payload == IDENTITY.payload
        assert back.expires_at == IDENTITY.expires_at

    def test_identity_without_optional_fields(self) -> None:
        bare = VerifiedIdentity(
            user_id=1, username="u", email="e", namespace="public", organization_id=1
        )
        assert identity_from_dict(identity_to_dict(bare)) == bare

    def test_principal_roundtrip(self) -> None:
        for principal in (
            OrganizationPrincipal(organization_id=2, name="Company X"),
            OrganizationPrincipal(organization_id=None),
        ):
            assert principal_from_dict(principal_to_dict(principal)) == principal


class TestSealedRecords:
    """Shared records are MAC'd JSON strings bound to their cache key."""

    def stored(self, shared: SharedCache, digest: str = "d") -> Any:
        return caches["default"].get(shared.key("token", digest))

    def test_record_is_a_sealed_string(self, clock: FrozenClock, state: VerificationCache) -> None:
        state.lookup("token", "d", Counter(), shared=True)
        stored = self.stored(state.shared)
        assert isinstance(stored, str)
        mac, body = stored.split(".", 1)
        assert len(mac) == 64
        record = json.loads(body)
        assert record["value"]["username"] == "alice"
        assert "d" not in record["value"].values()
        assert state.shared.unseal(state.shared.key("token", "d"), stored) == record

    @pytest.mark.parametrize(
        "record",
        [
            {"v": 999},
            {"v": 1, "stored_at": 1.0},
            {"v": 2, "value": {}, "stored_at": 1},
            {"v": 2, "stored_at": "x", "fresh_until": 1, "stale_until": 1, "reason": "r"},
            {"v": 2, "stored_at": 1, "fresh_until": 2, "stale_until": 2, "value": {"user_id": 1}},
        ],
    )
    def test_authentic_but_unusable_records_are_misses(self, record: dict[str, Any]) -> None:
        shared = shared_cache()
        key = shared.key("token", "d")
        caches["default"].set(key, shared.seal(key, record))
        assert shared.get("token", "d") is None

    @pytest.mark.parametrize(
        "stored", [None, "junk", "no-dot", {"v": 2}, 12, "0" * 64 + ".[1, 2]", "0" * 64 + ".{"]
    )
    def test_unsealed_values_are_misses(self, stored: Any) -> None:
        shared = shared_cache()
        key = shared.key("token", "d")
        if stored is not None:
            caches["default"].set(key, stored)
        assert shared.get("token", "d") is None

    @pytest.mark.parametrize("body", ["[1, 2]", "{", '"text"'])
    def test_authentic_non_object_is_a_miss(self, body: str) -> None:
        # A MAC over the key and the body, as the record format states, but no JSON object.
        shared = shared_cache()
        key = shared.key("token", "d")
        mac = hmac.new(SIGNING_KEY, f"{key}\n{body}".encode(), hashlib.sha256).hexdigest()
        assert shared.unseal(key, f"{mac}.{body}") is None
        assert shared.unseal(key, shared.seal(key, {"a": 1})) == {"a": 1}

    def test_record_without_the_signing_key_is_ignored(
        self, clock: FrozenClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        writer = new_process(shared_cache(key=b"not-the-key" * 3))
        writer.lookup("token", "d", Counter(), shared=True)
        reader = new_process()
        compute = Counter()
        with caplog.at_level("WARNING", logger="keyrunes_django.auth"):
            reader.lookup("token", "d", compute, shared=True)
        assert compute.calls == 1
        assert any(getattr(r, "event", "") == "cache_forgery" for r in caplog.records)

    def test_record_copied_under_another_key_is_ignored(self, clock: FrozenClock) -> None:
        state = new_process()
        state.lookup("token", "d1", Counter(), shared=True)
        shared = state.shared
        caches["default"].set(shared.key("token", "d2"), self.stored(shared, "d1"))
        caches["default"].set(shared.key("orgkey", "d1"), self.stored(shared, "d1"))
        assert shared.get("token", "d2") is None
        assert shared.get("orgkey", "d1") is None
        assert shared.get("token", "d1") is not None

    def test_prefixes_keep_services_apart(self, clock: FrozenClock) -> None:
        new_process(shared_cache(prefix="keyrunes:a")).lookup("token", "d", Counter(), shared=True)
        compute = Counter()
        new_process(shared_cache(prefix="keyrunes:b")).lookup("token", "d", compute, shared=True)
        assert compute.calls == 1


class TestLocalCache:
    def test_bounded_lru(self) -> None:
        lru: LocalCache[CacheEntry] = LocalCache(3)
        entry = CacheEntry(value=None, stored_at=0, fresh_until=1, stale_until=1)
        for key in "abc":
            lru.set(key, entry)
        assert lru.get("a") is entry  # a becomes most recent
        lru.set("d", entry)
        assert len(lru) == 3
        assert lru.keys() == ["c", "a", "d"]  # least recently used first
        assert lru.get("b") is None
        assert lru.get("a") is entry
        lru.delete("a")
        assert lru.get("a") is None
        lru.clear()
        assert len(lru) == 0

    def test_size_zero_disables(self) -> None:
        lru: LocalCache[CacheEntry] = LocalCache(0)
        lru.set("a", CacheEntry(value=None, stored_at=0, fresh_until=1, stale_until=1))
        assert lru.get("a") is None

    def test_many_keys_stay_bounded_under_threads(self) -> None:
        lru: LocalCache[CacheEntry] = LocalCache(50)
        entry = CacheEntry(value=None, stored_at=0, fresh_until=1, stale_until=1)

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
        flight = SingleFlight()
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
        flight = SingleFlight()
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
        flight = SingleFlight()
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
    def test_positive_ttl_is_min_of_setting_and_expiry(
        self, clock: FrozenClock, state: VerificationCache
    ) -> None:
        compute = Counter(expires_at=clock.value + 60)
        entry = state.lookup("token", "d1", compute, shared=True)
        assert entry.value == IDENTITY
        assert entry.fresh_until == clock.value + 60
        assert entry.stale_until == clock.value + 60  # never past the token's exp
        compute2 = Counter(expires_at=clock.value + 3600)
        entry2 = state.lookup("token", "d2", compute2, shared=True)
        assert entry2.fresh_until == clock.value + 300
        assert entry2.stale_until == clock.value + 300 + 120

    def test_hits_do_not_compute(self, clock: FrozenClock, state: VerificationCache) -> None:
        compute = Counter()
        for _ in range(5):
            state.lookup("token", "d", compute, shared=True)
        assert compute.calls == 1
        clock.value += 301
        state.lookup("token", "d", compute, shared=True)
        assert compute.calls == 2

    def test_shared_record_lives_until_stale_end(
        self, clock: FrozenClock, state: VerificationCache, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        timeouts: list[Any] = []
        backend = caches["default"]
        real_set = backend.set

        def recording_set(key: str, value: Any, timeout: Any = None) -> None:
            timeouts.append(timeout)
            real_set(key, value, timeout)

        monkeypatch.setattr(backend, "set", recording_set)
        state.lookup("token", "d", Counter(), shared=True)
        assert timeouts == [300 + 120]

    def test_other_process_hits_shared_cache(self, clock: FrozenClock) -> None:
        new_process().lookup("token", "d", Counter(), shared=True)
        compute = Counter()
        entry = new_process().lookup("token", "d", compute, shared=True)
        assert compute.calls == 0
        assert entry.value == IDENTITY

    def test_local_only(self, clock: FrozenClock, state: VerificationCache) -> None:
        state.lookup("token", "d", Counter(), shared=False)
        assert caches["default"].get(state.shared.key("token", "d")) is None

    def test_negative_cached_for_negative_ttl(
        self, clock: FrozenClock, state: VerificationCache
    ) -> None:
        compute = Counter()
        compute.error = InvalidToken("nope", reason="rejected")
        entry = state.lookup("token", "d", compute, shared=True)
        assert entry.reason == "rejected"
        with pytest.raises(InvalidToken) as info:
            entry.raise_if_refused()
        assert info.value.message == "nope"
        state.lookup("token", "d", compute, shared=True)
        assert compute.calls == 1
        clock.value += 31
        state.lookup("token", "d", compute, shared=True)
        assert compute.calls == 2
        again = new_process().lookup("token", "d", compute, shared=True)
        assert again.reason == "rejected"
        assert compute.calls == 2  # from the shared cache

    def test_stale_if_error_window_then_503(
        self, clock: FrozenClock, state: VerificationCache
    ) -> None:
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
        clock.value += STALE_RETRY_INTERVAL + 0.1
        state.lookup("token", "d", compute, shared=True, on_stale=stale_calls.append)
        assert compute.calls == 3

        clock.value = start + 300 + 120 + 1  # past the stale window
        with pytest.raises(KeyrunesUnavailable):
            state.lookup("token", "d", compute, shared=True)

    def test_refusals_are_never_served_stale(
        self, clock: FrozenClock, state: VerificationCache
    ) -> None:
        compute = Counter()
        compute.error = InvalidToken("nope", reason="rejected")
        state.lookup("token", "d", compute, shared=True)
        clock.value += 31
        compute.error = KeyrunesUnavailable("down")
        with pytest.raises(KeyrunesUnavailable):
            state.lookup("token", "d", compute, shared=True)

    def test_stale_from_shared_cache(self, clock: FrozenClock) -> None:
        compute = Counter()
        new_process().lookup("token", "d", compute, shared=True)
        clock.value += 350
        compute.error = KeyrunesUnavailable("down")
        entry = new_process().lookup("token", "d", compute, shared=True)
        assert entry.value == IDENTITY

    def test_recovery_after_outage(self, clock: FrozenClock, state: VerificationCache) -> None:
        compute = Counter()
        state.lookup("token", "d", compute, shared=True)
        clock.value += 301
        compute.error = KeyrunesUnavailable("down")
        state.lookup("token", "d", compute, shared=True)  # stale, revalidated in the background
        state.wait_for_revalidations()
        compute.error = None
        clock.value += STALE_RETRY_INTERVAL + 1
        stale = state.lookup("token", "d", compute, shared=True)  # stale again, revalidating
        assert stale.stored_at < clock.value
        state.wait_for_revalidations()
        entry = state.lookup("token", "d", compute, shared=True)
        assert entry.stored_at == clock.value
        assert entry.is_fresh(clock.value + 299)

    def test_single_flight_under_threads(
        self, clock: FrozenClock, state: VerificationCache
    ) -> None:
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
        self, clock: FrozenClock, state: VerificationCache, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        class Broken:
            def get(self, *a: Any, **k: Any) -> Any:
                raise ConnectionError("redis down")

            set = delete = get

        monkeypatch.setattr(SharedCache, "backend", property(lambda self: Broken()))
        compute = Counter()
        entry = state.lookup("token", "d", compute, shared=True)
        assert entry.value == IDENTITY
        state.forget("token", "d")
        state.lookup("token", "d", compute, shared=True)
        assert compute.calls == 2

    def test_forget_drops_both_layers(self, clock: FrozenClock, state: VerificationCache) -> None:
        state.lookup("token", "d", Counter(), shared=True)
        state.forget("token", "d")
        assert state.peek("token", "d") is None
        assert caches["default"].get(state.shared.key("token", "d")) is None

    def test_settings_change_clears_local_layer(self, clock: FrozenClock, settings: Any) -> None:
        before = get_authenticator()
        before.cache.lookup("token", "d", Counter(), shared=False)
        settings.KEYRUNES = {"BASE_URL": "http://127.0.0.1:9", "LOCAL_CACHE_SIZE": 5}
        fresh = get_authenticator()
        assert fresh is not before
        assert fresh.cache.local.maxsize == 5
        assert fresh.cache.peek("token", "d") is None


def test_auth_service_error_signal_payload_has_no_secret(
    service_errors: list[dict[str, Any]],
) -> None:
    # Documented kwargs only: the signal never carries the credential.
    get_authenticator().report_outage(
        KeyrunesUnavailable("down"), "verify_token", None, served_stale=True
    )
    assert service_errors[0]["served_stale"] is True
    assert service_errors[0]["operation"] == "verify_token"
    assert set(service_errors[0]) == {
        "signal",
        "sender",
        "error",
        "operation",
        "request",
        "served_stale",
    }


def test_queued_caller_reuses_the_finished_answer(
    clock: FrozenClock, state: VerificationCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A caller that missed the cache, then queued behind a leader that has
    # finished in between, takes the leader's answer instead of computing again.
    state.lookup("token", "d", Counter(), shared=False)
    real_get = state.local.get
    misses = [True]

    def get_once_missing(key: str) -> CacheEntry | None:
        if misses:
            misses.pop()
            return None
        return real_get(key)

    monkeypatch.setattr(state.local, "get", get_once_missing)
    compute = Counter()
    assert state.lookup("token", "d", compute, shared=False).value == IDENTITY
    assert compute.calls == 0
