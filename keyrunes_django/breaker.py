"""The circuit breaker shared by every call to Keyrunes in the process.

States:

``closed``
    Calls go through. Each attempt that ends in a connection error, a timeout,
    a missed deadline, a 5xx or a 429 counts as a failure; any other answer
    (2xx, 3xx, 4xx: the server is there and decided) resets the count.
    ``BREAKER_FAILURES`` consecutive failures open the breaker.
``open``
    No call is made: :meth:`CircuitBreaker.acquire` raises :class:`CircuitOpen`
    at once, with ``retry_after`` set to the rest of ``BREAKER_COOLDOWN``.
``half_open``
    The cool-down is over and one probe call is in flight; everyone else still
    gets :class:`CircuitOpen`. The probe's success closes the breaker, its
    failure opens it for another cool-down. A probe that never reports back
    (its thread died) is replaced once its own deadline has passed. The
    client sends a probe that only reads from a background thread (see
    :meth:`keyrunes_django.client.KeyrunesClient.request`).

Every change of state is logged (logger ``keyrunes_django.client``) and sent as
:data:`keyrunes_django.signals.breaker_state_changed`.

Processes sharing a cache (``CACHE_ALIAS``, Redis) share the *open* state:
the process whose breaker opens records until when in the shared cache (an
HMAC-sealed record), and every other process, on its next call to Keyrunes,
finds it and opens its own breaker for the rest of that cool-down instead of
spending its own retries on a server known to be down. Each process still
sends its own probe when the cool-down ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

from django.core.exceptions import ImproperlyConfigured

from keyrunes_django.exceptions import CircuitOpen

__all__ = [
    "CircuitBreaker",
    "FleetState",
    "Permit",
    "SharedFleetState",
    "get_breaker",
    "reset_breaker",
]

logger = logging.getLogger("keyrunes_django.client")

BreakerState = Literal["closed", "open", "half_open"]
CLOSED: BreakerState = "closed"
OPEN: BreakerState = "open"
HALF_OPEN: BreakerState = "half_open"

DEFAULT_FAILURES = 5
DEFAULT_COOLDOWN = 10.0

#: Seconds between two looks at the shared open state, per process.
FLEET_CHECK_INTERVAL = 1.0
#: Seconds a shared "open until" may lie beyond one cool-down (clocks differ).
FLEET_CLOCK_TOLERANCE = 1.0

_Transition = tuple[BreakerState, BreakerState, int, float]


class FleetState(Protocol):
    """Where processes publish and find an open breaker (wall-clock seconds)."""

    def opened_until(self) -> float | None:
        """Until when another process found Keyrunes down (None: not known to be)."""

    def publish_open(self, until: float) -> None:
        """Tell the other processes that Keyrunes is down until ``until``."""


def _wall_clock() -> float:
    from keyrunes_django.conf import clock

    return clock.now()


class Permit:
    """Leave to make one attempt; report its outcome exactly once."""

    __slots__ = ("_breaker", "_done", "generation", "probe")

    def __init__(self, breaker: CircuitBreaker, generation: int, *, probe: bool) -> None:
        self._breaker = breaker
        self._done = False
        self.generation = generation
        self.probe = probe

    def succeeded(self) -> None:
        """The server answered (any status that is not an outage)."""
        self._breaker._finish(self, True)

    def failed(self, *, trip: bool = False) -> None:
        """Connection error, timeout, missed deadline, 5xx or 429.

        ``trip`` opens a closed breaker at once, whatever the count: an attempt
        that used up a whole call's deadline shows Keyrunes too slow to wait for,
        and waiting for several such attempts would hold workers for minutes.
        """
        self._breaker._finish(self, False, trip=trip)

    def release(self) -> None:
        """No verdict (the attempt ended for a reason that says nothing about the server)."""
        self._breaker._finish(self, None)


class CircuitBreaker:
    """A thread-safe circuit breaker.

    :param failures: consecutive failures that open it; 0 switches it off.
    :param cooldown: seconds it stays open before one probe is let through.
    :param clock: a monotonic clock (replaceable in tests).
    """

    def __init__(
        self,
        failures: int = DEFAULT_FAILURES,
        cooldown: float = DEFAULT_COOLDOWN,
        *,
        clock: Callable[[], float] = time.monotonic,
        fleet: FleetState | None = None,
        wall_clock: Callable[[], float] = _wall_clock,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._wall_clock = wall_clock
        self.fleet = fleet
        self._fleet_checked_at = float("-inf")
        self._fleet_adopted: float | None = None
        self._threshold = failures
        self._cooldown = cooldown
        self._state: BreakerState = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe: Permit | None = None
        self._probe_expires = 0.0
        # Bumped on every change of state: outcomes of permits handed out
        # before the change say nothing about the present and are ignored.
        self._generation = 0

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._state} failures={self._failures}/{self._threshold}>"

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted while closed."""
        return self._failures

    @property
    def config(self) -> tuple[int, float]:
        return (self._threshold, self._cooldown)

    def retry_after(self) -> float:
        """Seconds until a call may be let through again (0.0 when it may now)."""
        with self._lock:
            return self._retry_after(self._clock())

    def _retry_after(self, now: float) -> float:
        if self._state == OPEN:
            return max(0.0, self._opened_at + self._cooldown - now)
        if self._state == HALF_OPEN and self._probe is not None:
            return max(0.0, self._probe_expires - now)
        return 0.0

    def acquire(self, budget: float) -> Permit:
        """A permit for one attempt, or :class:`CircuitOpen`.

        ``budget`` is the most the attempt can take (the call's remaining
        deadline): a probe that has not reported back by then is given up.
        """
        transitions: list[_Transition] = []
        fleet_until = self._fleet_opened_until()
        with self._lock:
            now = self._clock()
            if fleet_until is not None and self._state == CLOSED and self._threshold > 0:
                self._adopt(fleet_until, now, transitions)
            if self._threshold <= 0 or self._state == CLOSED:
                return Permit(self, self._generation, probe=False)
            wait = self._retry_after(now)
            if wait > 0:
                self._announce(transitions)
                raise CircuitOpen(
                    f"Keyrunes circuit breaker is {self._state}; no call made "
                    f"(next attempt in {wait:.1f} s).",
                    retry_after=wait,
                )
            if self._state == OPEN:
                self._move(HALF_OPEN, now, transitions)
            permit = Permit(self, self._generation, probe=True)
            self._probe = permit
            self._probe_expires = now + max(0.0, budget)
        self._announce(transitions)
        return permit

    def _fleet_opened_until(self) -> float | None:
        """The shared open state, looked at once per :data:`FLEET_CHECK_INTERVAL` while closed."""
        fleet = self.fleet
        if fleet is None or self._state != CLOSED or self._threshold <= 0:
            return None
        now = self._clock()
        if now - self._fleet_checked_at < FLEET_CHECK_INTERVAL:
            return None
        self._fleet_checked_at = now
        try:
            until = fleet.opened_until()
        except Exception as exc:  # the shared cache is a help, never a new failure
            logger.warning("circuit breaker: shared state unreadable: %s", type(exc).__name__)
            return None
        if until is None or until == self._fleet_adopted:
            return None  # nothing, or the cool-down this process already waited out
        left = until - self._wall_clock()
        # A record further ahead than one cool-down comes from a skewed clock
        # (or a bad writer): following it could keep every process open for good.
        if not 0 < left <= self._cooldown + FLEET_CLOCK_TOLERANCE:
            return None
        self._fleet_adopted = until
        return left

    def _adopt(self, left: float, now: float, transitions: list[_Transition]) -> None:
        """Open for the ``left`` seconds of another process's cool-down (not published again)."""
        self._move(OPEN, now, transitions)
        self._opened_at = now - max(0.0, self._cooldown - left)
        old, new = transitions[-1][:2]
        # -1 failures: opened on another process's word (logged as such, not published).
        transitions[-1] = (old, new, -1, self._retry_after(now))

    def _finish(self, permit: Permit, outcome: bool | None, *, trip: bool = False) -> None:
        transitions: list[_Transition] = []
        with self._lock:
            if permit._done:
                return
            permit._done = True
            now = self._clock()
            if permit is self._probe:
                self._probe = None
                if outcome is True:
                    self._move(CLOSED, now, transitions)
                elif outcome is False:
                    self._move(OPEN, now, transitions)
            elif permit.generation == self._generation and self._state == CLOSED:
                if outcome is True:
                    self._failures = 0
                elif outcome is False:
                    self._failures += 1
                    if self._threshold > 0 and (trip or self._failures >= self._threshold):
                        self._move(OPEN, now, transitions)
        self._announce(transitions)

    def _move(self, new: BreakerState, now: float, transitions: list[_Transition]) -> None:
        old = self._state
        failures = self._failures
        self._state = new
        self._generation += 1
        if new == OPEN:
            self._opened_at = now
        if new == CLOSED:
            self._failures = 0
        transitions.append((old, new, failures, self._retry_after(now)))

    def reset(self) -> None:
        """Close the breaker and forget every failure."""
        transitions: list[_Transition] = []
        with self._lock:
            self._probe = None
            self._failures = 0
            if self._state != CLOSED:
                self._move(CLOSED, self._clock(), transitions)
            else:
                self._generation += 1
        self._announce(transitions)

    def reconfigure(self, failures: int, cooldown: float) -> None:
        """New thresholds; the state starts over closed."""
        with self._lock:
            self._threshold = failures
            self._cooldown = cooldown
        self.reset()

    def _announce(self, transitions: list[_Transition]) -> None:
        # Outside the lock: receivers may read the breaker.
        from keyrunes_django.signals import breaker_state_changed

        for old, new, failures, retry_after in transitions:
            if new == OPEN and failures < 0:
                logger.warning(
                    "Keyrunes circuit breaker opened: another process found Keyrunes "
                    "down; no calls for %.1f s",
                    retry_after,
                )
            elif new == OPEN:
                logger.warning(
                    "Keyrunes circuit breaker opened after %d consecutive failure(s); "
                    "no calls for %.1f s",
                    failures if old == CLOSED else 1,
                    retry_after,
                )
                self._publish(retry_after)
            else:
                logger.info("Keyrunes circuit breaker %s -> %s", old, new)
            breaker_state_changed.send(
                sender=CircuitBreaker,
                breaker=self,
                old_state=old,
                new_state=new,
                retry_after=retry_after,
            )

    def _publish(self, seconds: float) -> None:
        if self.fleet is None:
            return
        try:
            self.fleet.publish_open(self._wall_clock() + seconds)
        except Exception as exc:  # best effort, like every shared-cache write
            logger.warning("circuit breaker: shared state not written: %s", type(exc).__name__)


class SharedFleetState:
    """The open state in the shared verification cache (one sealed record per configuration).

    Only a cache other processes can see is used: with a per-process cache
    (LocMem, Dummy) there is no one to tell, and nothing is read or written.
    """

    KIND = "breaker"
    NAME = "open"
    PROCESS_LOCAL = ("LocMemCache", "DummyCache")

    def _shared(self) -> Any:
        """The shared cache, or None when it is not shared between processes."""
        from django.conf import settings

        if not settings.configured:
            return None
        from keyrunes_django.tokens import get_authenticator

        shared = get_authenticator().cache.shared
        if type(shared.backend).__name__ in self.PROCESS_LOCAL:
            return None
        return shared

    def opened_until(self) -> float | None:
        shared = self._shared()
        if shared is None:
            return None
        found = shared.get_values([(self.KIND, self.NAME)])
        record = (found or {}).get((self.KIND, self.NAME))
        until = record.get("until") if record is not None else None
        return float(until) if isinstance(until, (int, float)) else None

    def publish_open(self, until: float) -> None:
        shared = self._shared()
        if shared is not None:
            shared.set_value(self.KIND, self.NAME, {"until": until}, until - _wall_clock())

    def forget(self) -> None:
        shared = self._shared()
        if shared is not None:
            shared.delete(self.KIND, self.NAME)


def breaker_config(user: Any) -> tuple[int, float]:
    """``(BREAKER_FAILURES, BREAKER_COOLDOWN)`` read from a ``KEYRUNES``-like mapping.

    Raises :class:`~django.core.exceptions.ImproperlyConfigured` for values the
    system check ``keyrunes_django.E042`` reports.
    """
    failures = user.get("BREAKER_FAILURES", DEFAULT_FAILURES)
    cooldown = user.get("BREAKER_COOLDOWN", DEFAULT_COOLDOWN)
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
        raise ImproperlyConfigured(
            f"KEYRUNES['BREAKER_FAILURES'] = {failures!r} must be an integer >= 0 (0 = off)."
        )
    if isinstance(cooldown, bool) or not isinstance(cooldown, (int, float)) or not cooldown > 0:
        raise ImproperlyConfigured(
            f"KEYRUNES['BREAKER_COOLDOWN'] = {cooldown!r} must be a number of seconds > 0."
        )
    return failures, float(cooldown)


_FLEET = SharedFleetState()
_breaker = CircuitBreaker(fleet=_FLEET)


def _configured() -> tuple[int, float]:
    from django.conf import settings

    if not settings.configured:
        return (DEFAULT_FAILURES, DEFAULT_COOLDOWN)
    from keyrunes_django.conf import keyrunes_settings

    return breaker_config(
        {
            "BREAKER_FAILURES": keyrunes_settings.BREAKER_FAILURES,
            "BREAKER_COOLDOWN": keyrunes_settings.BREAKER_COOLDOWN,
        }
    )


def get_breaker() -> CircuitBreaker:
    """The process-wide breaker, set up from ``BREAKER_FAILURES`` and ``BREAKER_COOLDOWN``.

    Always the same object; a change of those settings resets it.
    """
    config = _configured()
    if config != _breaker.config:
        _breaker.reconfigure(*config)
    return _breaker


def reset_breaker() -> None:
    """Close the process-wide breaker and forget the shared open state (between tests)."""
    _breaker.reset()
    try:
        _FLEET.forget()
    except Exception as exc:  # best effort: a missing or broken cache has nothing to forget
        logger.debug("circuit breaker: shared state not cleared: %s", type(exc).__name__)
