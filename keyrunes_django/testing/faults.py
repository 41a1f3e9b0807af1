"""Fault injection and request accounting for the Keyrunes emulator.

A :class:`Fault` applies to requests whose path matches its regex (``None``
matches every path) and optionally its method. It can delay the request, answer
with a status, drop the connection without answering, or send a malformed JSON
body. ``times`` limits how many requests it hits; ``None`` means until cleared.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

__all__ = ["Fault", "FaultInjector", "RequestLog", "RequestRecord"]


@dataclass
class Fault:
    pattern: re.Pattern[str] | None
    status: int | None = None
    delay: float | None = None
    drop: bool = False
    malformed: bool = False
    times: int | None = None
    method: str | None = None
    #: How many requests this fault has hit so far.
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.pattern is None or self.pattern.search(path) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


class FaultInjector:
    """The faults of one emulator; thread-safe. First matching fault wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def fail_next(self, n: int = 1, status: int = 503) -> Fault:
        """Answer the next ``n`` requests, whatever their path, with ``status``."""
        return self._register(Fault(pattern=None, status=status, times=n))

    def add(
        self,
        path_regex: str | re.Pattern[str] | None,
        *,
        status: int | None = None,
        delay: float | None = None,
        drop: bool = False,
        malformed: bool = False,
        times: int | None = None,
        method: str | None = None,
    ) -> Fault:
        """Register a fault for paths matching ``path_regex`` (searched, not anchored)."""
        if status is None and delay is None and not drop and not malformed:
            raise ValueError("a fault needs a status, a delay, drop=True or malformed=True")
        pattern = re.compile(path_regex) if isinstance(path_regex, str) else path_regex
        return self._register(
            Fault(
                pattern=pattern,
                status=status,
                delay=delay,
                drop=drop,
                malformed=malformed,
                times=times,
                method=method,
            )
        )

    def _register(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def active(self) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if not f.exhausted]

    def take(self, method: str, path: str) -> Fault | None:
        """The fault this request hits (counting the hit), if any."""
        with self._lock:
            for fault in self._faults:
                if not fault.exhausted and fault.matches(method, path):
                    fault.hits += 1
                    self._faults = [f for f in self._faults if not f.exhausted]
                    return fault
        return None


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    #: The route rule that served it (e.g. ``/api/admin/users/<user_id>``), or None.
    route: str | None
    timestamp: float = field(default_factory=time.time)


class RequestLog:
    """Every request the emulator received, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def record(self, method: str, path: str, route: str | None) -> None:
        with self._lock:
            self._records.append(RequestRecord(method, path, route))

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    @property
    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def count(self, path_or_regex: str | re.Pattern[str], method: str | None = None) -> int:
        """Requests whose path equals ``path_or_regex`` or fully matches it as a regex."""
        if isinstance(path_or_regex, re.Pattern):
            pattern: re.Pattern[str] | None = path_or_regex
            literal = None
        else:
            literal = path_or_regex
            try:
                pattern = re.compile(path_or_regex)
            except re.error:
                pattern = None
        total = 0
        for record in self.records:
            if method is not None and record.method.upper() != method.upper():
                continue
            if record.path == literal or (pattern is not None and pattern.fullmatch(record.path)):
                total += 1
        return total

    def by_route(self) -> dict[str, int]:
        """Counts keyed by ``"METHOD route"`` (unknown paths under their path)."""
        counts: dict[str, int] = {}
        for record in self.records:
            key = f"{record.method} {record.route or record.path}"
            counts[key] = counts.get(key, 0) + 1
        return counts
