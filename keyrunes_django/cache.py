"""The verification cache: a per-process LRU in front of Django's cache framework.

This module only caches: what to compute on a miss, how long answers live and
which tenant they belong to are its callers' business (see
:class:`~keyrunes_django.tokens.TokenAuthenticator`). Every verified
credential (bearer token or organization key) is remembered under the sha256
of its text, never the text itself:

* a bounded, thread-safe LRU per process (``LOCAL_CACHE_SIZE`` entries) answers
  warm requests with one dictionary lookup: no network, no database;
* the Django cache named by ``CACHE_ALIAS`` (Redis when several instances
  should share it) holds the same answers as JSON records authenticated with
  an HMAC over the record and its cache key, so an instance that has never seen
  a token still avoids asking Keyrunes, and a record written by anyone without
  the key (or copied under another key) is ignored;
* concurrent first requests for one credential in a process make a single
  remote call (single-flight), the others wait for its answer; across
  processes sharing the cache, a short lock in the shared cache lets one of
  them ask while the others wait for its record (or, after
  :data:`FLEET_WAIT` seconds, ask themselves).

A good answer is fresh for ``min(CACHE_TTL, token exp - now)`` seconds. After
that it is kept as *stale* for up to ``STALE_IF_ERROR`` more seconds (never past
the token's ``exp``). A remotely verified stale answer is served at once while
one background revalidation per credential and process runs
(stale-while-revalidate); if Keyrunes is unavailable the stale answer keeps
being served until the window ends. Refusals are cached for ``NEGATIVE_CACHE_TTL``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

from django.core.cache import BaseCache, caches

from keyrunes_django.conf import clock
from keyrunes_django.exceptions import InvalidToken, KeyrunesUnavailable
from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity

__all__ = [
    "CacheEntry",
    "CachePolicy",
    "LocalCache",
    "SharedCache",
    "SingleFlight",
    "VerificationCache",
    "credential_hash",
    "identity_from_dict",
    "identity_to_dict",
    "principal_from_dict",
    "principal_to_dict",
]

logger = logging.getLogger("keyrunes_django.auth")

T = TypeVar("T")

#: While an outage lasts, a stale answer is re-served from memory for this many
#: seconds before Keyrunes is tried again, so a dead server does not cost every
#: request a connection timeout.
STALE_RETRY_INTERVAL = 5.0

#: Seconds the shared-cache lock of one credential's remote call is held at most.
FLEET_LOCK_TIMEOUT = 10
#: Seconds a process waits for another process's answer before asking itself.
FLEET_WAIT = 2.0
#: Seconds between two looks at the shared cache while waiting.
FLEET_POLL = 0.025

_RECORD_VERSION = 2


def credential_hash(credential: str) -> str:
    """sha256 hex of a credential: the only form of it that is cached or logged."""
    return hashlib.sha256(credential.encode("utf-8", "surrogatepass")).hexdigest()


# ----------------------------------------------------------------------- entries


@dataclass(slots=True)
class CacheEntry:
    """One cached verification outcome.

    ``value`` is the identity or principal for a good answer; ``reason`` is set
    (and ``value`` is None) for a refusal.
    """

    value: VerifiedIdentity | OrganizationPrincipal | None
    stored_at: float
    fresh_until: float
    stale_until: float
    reason: str | None = None
    message: str = ""

    def is_fresh(self, at: float) -> bool:
        return at < self.fresh_until

    def is_usable_stale(self, at: float) -> bool:
        return self.reason is None and at < self.stale_until

    def raise_if_refused(self) -> None:
        if self.reason is not None:
            raise InvalidToken(self.message, reason=self.reason)


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _dt(value: Any) -> datetime | None:
    return datetime.fromtimestamp(float(value), tz=timezone.utc) if value is not None else None


def identity_to_dict(identity: VerifiedIdentity) -> dict[str, Any]:
    """A plain, JSON-able form of an identity (what the shared cache stores)."""
    return {
        "user_id": identity.user_id,
        "username": identity.username,
        "email": identity.email,
        "namespace": identity.namespace,
        "organization_id": identity.organization_id,
        "groups": list(identity.groups) if identity.groups is not None else None,
        "expires_at": _ts(identity.expires_at),
        "issued_at": _ts(identity.issued_at),
        "external_id": identity.external_id,
        "source": identity.source,
        "payload": dict(identity.payload),
    }


def identity_from_dict(data: dict[str, Any]) -> VerifiedIdentity:
    groups = data.get("groups")
    return VerifiedIdentity(
        user_id=int(data["user_id"]),
        username=str(data["username"]),
        email=str(data["email"]),
        namespace=str(data["namespace"]),
        organization_id=int(data["organization_id"]),
        groups=tuple(str(g) for g in groups) if groups is not None else None,
        expires_at=_dt(data.get("expires_at")),
        issued_at=_dt(data.get("issued_at")),
        external_id=data.get("external_id"),
        source=data.get("source", "token"),
        payload=dict(data.get("payload") or {}),
    )


def principal_to_dict(principal: OrganizationPrincipal) -> dict[str, Any]:
    return {
        "organization_id": principal.organization_id,
        "name": principal.name,
        "namespace": principal.namespace,
    }


def principal_from_dict(data: dict[str, Any]) -> OrganizationPrincipal:
    org_id = data.get("organization_id")
    return OrganizationPrincipal(
        organization_id=int(org_id) if org_id is not None else None,
        name=data.get("name"),
        namespace=data.get("namespace"),
    )


_ENCODERS: dict[str, tuple[Callable[[Any], dict[str, Any]], Callable[[dict[str, Any]], Any]]] = {
    "token": (identity_to_dict, identity_from_dict),
    "orgkey": (principal_to_dict, principal_from_dict),
    "confirm": (identity_to_dict, identity_from_dict),
}


def _to_record(kind: str, entry: CacheEntry) -> dict[str, Any]:
    record: dict[str, Any] = {
        "v": _RECORD_VERSION,
        "stored_at": entry.stored_at,
        "fresh_until": entry.fresh_until,
        "stale_until": entry.stale_until,
    }
    if entry.reason is not None:
        record.update(reason=entry.reason, message=entry.message)
    else:
        record["value"] = _ENCODERS[kind][0](entry.value)
    return record


def _from_record(kind: str, record: Any) -> CacheEntry | None:
    if not isinstance(record, dict) or record.get("v") != _RECORD_VERSION:
        return None
    try:
        if "reason" in record:
            return CacheEntry(
                value=None,
                stored_at=float(record["stored_at"]),
                fresh_until=float(record["fresh_until"]),
                stale_until=float(record["stale_until"]),
                reason=str(record["reason"]),
                message=str(record.get("message", "")),
            )
        return CacheEntry(
            value=_ENCODERS[kind][1](record["value"]),
            stored_at=float(record["stored_at"]),
            fresh_until=float(record["fresh_until"]),
            stale_until=float(record["stale_until"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


# ----------------------------------------------------------------- per-process LRU


V = TypeVar("V")


class LocalCache(Generic[V]):
    """A bounded, thread-safe LRU mapping of hashable keys to values."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = max(0, int(maxsize))
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        # Lock-free: each OrderedDict call is atomic under the GIL. The entry
        # may be evicted between the two calls; then it simply is not moved.
        entry = self._data.get(key)
        if entry is not None:
            try:  # noqa: SIM105 - contextlib.suppress costs more on this hot path
                self._data.move_to_end(key)
            except KeyError:
                pass
        return entry

    def set(self, key: Hashable, entry: V) -> None:
        if self.maxsize == 0:
            return
        with self._lock:
            self._data[key] = entry
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def delete(self, key: Hashable) -> None:
        with self._lock:
            self._data.pop(key, None)

    def discard_where(self, predicate: Callable[[V], bool]) -> int:
        """Drop every value for which ``predicate`` is true; how many were dropped."""
        with self._lock:
            doomed = [key for key, value in self._data.items() if predicate(value)]
            for key in doomed:
                del self._data[key]
        return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def keys(self) -> list[Hashable]:
        """A snapshot of the keys, least recently used first."""
        with self._lock:
            return list(self._data)

    def __len__(self) -> int:
        return len(self._data)


# -------------------------------------------------------------------- single-flight


class _Call:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class SingleFlight:
    """Runs one call per key at a time; concurrent callers share its outcome."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call] = {}

    def run(self, key: Hashable, func: Callable[[], T], *, wait_timeout: float = 60.0) -> T:
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
        if not leader:
            if not call.done.wait(wait_timeout):
                raise KeyrunesUnavailable("Timed out waiting for a concurrent verification.")
            if call.error is not None:
                raise call.error
            return call.result  # type: ignore[no-any-return]
        try:
            call.result = func()
            return call.result  # type: ignore[no-any-return]
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()

    def __len__(self) -> int:
        return len(self._calls)


# ------------------------------------------------------------------- shared cache


class SharedCache:
    """The Django cache named ``alias``, holding HMAC-authenticated records.

    ``prefix`` binds every key to one configuration (server, namespace,
    organization scope, mode), so services that share a Redis stay apart;
    ``signing_key`` authenticates each record together with its full key. A
    record that fails the check, or any failure of the backend, is a miss.
    """

    def __init__(self, alias: str, prefix: str, signing_key: bytes) -> None:
        self.alias = alias
        self.prefix = prefix
        self._signing_key = signing_key

    @property
    def backend(self) -> BaseCache:
        return caches[self.alias]

    def key(self, kind: str, digest: str) -> str:
        return f"{self.prefix}:{kind}:{digest}"

    def _mac(self, key: str, body: str) -> str:
        message = f"{key}\n{body}".encode()
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    def seal(self, key: str, record: dict[str, Any]) -> str:
        """``record`` as stored under ``key``: its MAC, a dot, its JSON."""
        body = json.dumps(record, sort_keys=True, separators=(",", ":"))
        return f"{self._mac(key, body)}.{body}"

    def unseal(self, key: str, stored: Any) -> dict[str, Any] | None:
        """The record stored under ``key``, or None when it is not authentic."""
        if not isinstance(stored, str) or "." not in stored:
            return None
        mac, body = stored.split(".", 1)
        if not hmac.compare_digest(mac, self._mac(key, body)):
            logger.warning(
                "keyrunes shared cache record failed authentication; ignored",
                extra={"event": "cache_forgery", "alias": self.alias},
            )
            return None
        try:
            record = json.loads(body)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def get(self, kind: str, digest: str) -> CacheEntry | None:
        key = self.key(kind, digest)
        try:
            stored = self.backend.get(key)
        except Exception as exc:  # a cache outage must not become an auth outage
            self._failed("get", exc)
            return None
        if stored is None:
            return None
        return _from_record(kind, self.unseal(key, stored))

    def set(self, kind: str, digest: str, entry: CacheEntry, at: float) -> None:
        key = self.key(kind, digest)
        timeout = max(1, math.ceil(max(entry.stale_until, entry.fresh_until) - at))
        try:
            self.backend.set(key, self.seal(key, _to_record(kind, entry)), timeout)
        except Exception as exc:
            self._failed("set", exc)

    def get_values(
        self, names: list[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, Any]] | None:
        """Authentic plain records for (kind, name) pairs in one round trip (None: cache failed)."""
        keys = {self.key(kind, name): (kind, name) for kind, name in names}
        try:
            stored = self.backend.get_many(list(keys))
        except Exception as exc:
            self._failed("get", exc)
            return None
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for key, value in stored.items():
            record = self.unseal(key, value)
            if record is not None and key in keys:
                found[keys[key]] = record
        return found

    def set_values(self, values: dict[tuple[str, str], dict[str, Any]], timeout: float) -> None:
        """Store several plain records in one round trip per thousand."""
        sealed = {}
        for (kind, name), value in values.items():
            key = self.key(kind, name)
            sealed[key] = self.seal(key, value)
        items = list(sealed.items())
        try:
            for start in range(0, len(items), 1000):
                chunk = dict(items[start : start + 1000])
                self.backend.set_many(chunk, max(1, math.ceil(timeout)))
        except Exception as exc:
            self._failed("set", exc)

    def set_value(self, kind: str, name: str, value: dict[str, Any], timeout: float) -> None:
        """Store a plain record (sealed like every other) for ``timeout`` seconds."""
        key = self.key(kind, name)
        try:
            self.backend.set(key, self.seal(key, value), max(1, math.ceil(timeout)))
        except Exception as exc:
            self._failed("set", exc)

    def acquire(self, kind: str, digest: str) -> bool:
        """Take the fleet-wide lock of one credential's remote call (True on cache failure)."""
        try:
            return bool(self.backend.add(self.key("lock:" + kind, digest), 1, FLEET_LOCK_TIMEOUT))
        except Exception as exc:
            self._failed("add", exc)
            return True

    def release(self, kind: str, digest: str) -> None:
        self.delete("lock:" + kind, digest)

    def delete(self, kind: str, digest: str) -> None:
        try:
            self.backend.delete(self.key(kind, digest))
        except Exception as exc:  # best effort, like set()
            self._failed("delete", exc)

    def _failed(self, operation: str, exc: Exception) -> None:
        logger.warning(
            "keyrunes shared cache %s failed: %s",
            operation,
            type(exc).__name__,
            extra={"event": "cache_error", "operation": operation, "alias": self.alias},
        )


# ------------------------------------------------------------------------ lookups


@dataclass(frozen=True)
class CachePolicy:
    """How long answers live, in seconds (see the module docstring)."""

    ttl: float
    negative_ttl: float
    stale_if_error: float

    def positive_entry(
        self,
        value: VerifiedIdentity | OrganizationPrincipal,
        at: float,
        expires_at: float | None,
    ) -> CacheEntry:
        fresh = at + self.ttl
        stale = fresh + self.stale_if_error
        if expires_at is not None:
            fresh = min(fresh, expires_at)
            stale = min(stale, expires_at)
        return CacheEntry(value=value, stored_at=at, fresh_until=fresh, stale_until=stale)

    def negative_entry(self, error: InvalidToken, at: float) -> CacheEntry:
        until = at + self.negative_ttl
        return CacheEntry(
            value=None,
            stored_at=at,
            fresh_until=until,
            stale_until=until,
            reason=error.reason,
            message=error.message,
        )


Compute = Callable[[], tuple[VerifiedIdentity | OrganizationPrincipal, float | None]]


class VerificationCache:
    """The per-process LRU, the shared cache and single-flight, used together."""

    def __init__(self, policy: CachePolicy, local_size: int, shared: SharedCache) -> None:
        self.policy = policy
        self.local: LocalCache[CacheEntry] = LocalCache(local_size)
        self.shared = shared
        self.flight = SingleFlight()
        self._revalidating: dict[tuple[str, str], threading.Thread] = {}
        self._revalidating_lock = threading.Lock()

    def lookup(
        self,
        kind: str,
        digest: str,
        compute: Compute,
        *,
        shared: bool,
        shared_first: bool = False,
        remember: bool = True,
        on_stale: Callable[[KeyrunesUnavailable], None] | None = None,
        on_hit: Callable[[str], None] | None = None,
    ) -> CacheEntry:
        """The cached outcome for a credential, computing it on a miss.

        With ``remember=False`` a computed outcome is not kept in this
        process's LRU (the caller keeps what it needs); the shared cache and
        single-flight still apply.

        ``on_hit`` is told where a cached answer came from: ``"process"``,
        ``"shared"`` or ``"stale"``.

        With ``shared_first`` a fresh per-process entry counts only while the
        shared cache still holds the credential's record: deleting that record
        ends the answer on every process at its next lookup. ``compute`` returns
        (value, expiry timestamp or None) or raises
        :class:`InvalidToken` (cached as a refusal) or
        :class:`KeyrunesUnavailable` (never cached; a usable stale answer is
        served instead, after calling ``on_stale``).
        """
        key = (kind, digest)
        at = clock.now()
        entry = self.local.get(key)
        if entry is not None and entry.is_fresh(at) and not shared_first:
            if on_hit is not None:
                on_hit("process")
            return entry
        stale = entry if entry is not None and entry.is_usable_stale(at) else None
        if shared:
            remote = self.shared.get(kind, digest)
            if remote is not None:
                if remote.is_fresh(at):
                    self.local.set(key, remote)
                    if on_hit is not None:
                        on_hit("shared")
                    return remote
                newer = stale is None or remote.stored_at > stale.stored_at
                if remote.is_usable_stale(at) and newer:
                    stale = remote
            if stale is not None and not shared_first:
                self._revalidate(kind, digest, compute, stale, on_stale)
                if on_hit is not None:
                    on_hit("stale")
                return stale
        try:
            return self.flight.run(
                key, lambda: self._refresh(kind, digest, compute, shared, at, remember)
            )
        except KeyrunesUnavailable as exc:
            if stale is None:
                raise
            if on_stale is not None:
                on_stale(exc)
            if on_hit is not None:
                on_hit("stale")
            return self._serve_stale(key, stale)

    def _revalidate(
        self,
        kind: str,
        digest: str,
        compute: Compute,
        stale: CacheEntry,
        on_stale: Callable[[KeyrunesUnavailable], None] | None,
    ) -> None:
        """Refresh a stale answer in a background thread, once per credential at a time."""
        key = (kind, digest)

        def run() -> None:
            try:
                self.flight.run(key, lambda: self._refresh(kind, digest, compute, True, 0.0))
            except KeyrunesUnavailable as exc:
                if on_stale is not None:
                    on_stale(exc)
                self._serve_stale(key, stale)
            except Exception:  # a background thread has no caller to tell
                logger.exception("keyrunes background revalidation failed")
            finally:
                with self._revalidating_lock:
                    self._revalidating.pop(key, None)

        with self._revalidating_lock:
            if key in self._revalidating:
                return
            thread = threading.Thread(target=run, name="keyrunes-revalidate", daemon=True)
            self._revalidating[key] = thread
        thread.start()

    def wait_for_revalidations(self, timeout: float = 10.0) -> None:
        """Wait until no background revalidation runs (for tests and shutdown)."""
        with self._revalidating_lock:
            threads = list(self._revalidating.values())
        for thread in threads:
            thread.join(timeout)

    def _refresh(
        self,
        kind: str,
        digest: str,
        compute: Compute,
        shared: bool,
        started: float,
        remember: bool = True,
    ) -> CacheEntry:
        key = (kind, digest)
        # Another thread may have finished the same call while we queued.
        current = self.local.get(key)
        if current is not None and current.stored_at >= started and current.is_fresh(clock.now()):
            return current
        if shared and not self.shared.acquire(kind, digest):
            answer = self._wait_for_peer(kind, digest)
            if answer is not None:
                self.local.set(key, answer)
                return answer
        try:
            if shared:
                # A peer may have answered and let go of the lock between this
                # process's miss and its taking the lock.
                record = self._peer_answer(kind, digest)
                if record is not None:
                    if remember:
                        self.local.set(key, record)
                    return record
            return self._compute(kind, digest, compute, shared, remember)
        finally:
            if shared:
                self.shared.release(kind, digest)

    def _wait_for_peer(self, kind: str, digest: str) -> CacheEntry | None:
        """Another process is asking Keyrunes about this credential: wait for its record."""
        deadline = time.monotonic() + FLEET_WAIT
        while time.monotonic() < deadline:
            time.sleep(FLEET_POLL)
            record = self._peer_answer(kind, digest)
            if record is not None:
                return record
        return None

    def _peer_answer(self, kind: str, digest: str) -> CacheEntry | None:
        """A fresh answer another process wrote to the shared cache, if any."""
        record = self.shared.get(kind, digest)
        if record is not None and record.is_fresh(clock.now()):
            return record
        return None

    def _compute(
        self, kind: str, digest: str, compute: Compute, shared: bool, remember: bool = True
    ) -> CacheEntry:
        try:
            value, expires_at = compute()
        except InvalidToken as exc:
            done = self.policy.negative_entry(exc, clock.now())
        else:
            done = self.policy.positive_entry(value, clock.now(), expires_at)
        if remember:
            self.local.set((kind, digest), done)
        if shared:
            self.shared.set(kind, digest, done, clock.now())
        return done

    def _serve_stale(self, key: tuple[str, str], stale: CacheEntry) -> CacheEntry:
        # Re-served from memory for a short while instead of timing out on every request.
        retry = CacheEntry(
            value=stale.value,
            stored_at=stale.stored_at,
            fresh_until=min(clock.now() + STALE_RETRY_INTERVAL, stale.stale_until),
            stale_until=stale.stale_until,
        )
        self.local.set(key, retry)
        return retry

    def peek(self, kind: str, digest: str) -> CacheEntry | None:
        """The fresh per-process entry, if any (no I/O: safe on an event loop)."""
        entry = self.local.get((kind, digest))
        if entry is not None and entry.is_fresh(clock.now()):
            return entry
        return None

    def forget(self, kind: str, digest: str) -> None:
        """Drop a credential's answer here and in the shared cache."""
        self.local.delete((kind, digest))
        self.shared.delete(kind, digest)
