"""Throttling of the flows that reach Keyrunes with what a person typed.

Every attempt is counted *before* the remote call, atomically, as in flight;
when it is settled it either becomes a failure (:meth:`Attempt.keep`) or is
taken back (:meth:`Attempt.succeeded`, :meth:`Attempt.not_a_failure`). An
attempt may start only while failures plus attempts in flight stay within the
limit, so concurrent guesses cannot all slip past a check that reads a counter
first: with a limit of 5, at most 5 wrong passwords per window reach Keyrunes
however many arrive at once. An attempt that finds the budget full of attempts
still in flight (not of failures) waits for them to settle, so concurrent
logins with the right password (parallel Basic-auth requests) all get through.

Budgets (failures per ``LOGIN_THROTTLE_WINDOW`` seconds, a window fixed
from the first failure):

- ``account``: login and password-change attempts per account,
  ``LOGIN_THROTTLE_FAILURES``. A login name of an account mirrored here is
  counted under the account's remote id, so its username and its email share
  one budget. A success clears it.
- ``ip``: the same attempts per client IP (IPv6 per /64),
  ``LOGIN_THROTTLE_IP_FAILURES``. A success takes back only its own attempt:
  it never clears what others did from that address.
- ``forgot`` / ``forgot_ip``: forgot-password requests per account or address
  and per IP; every request counts (each one may send an email).
- ``register_ip``: registrations per IP; every request counts.

Counters live in the cache named by ``CACHE_ALIAS`` under keys that hold only
keyed hashes (:func:`keyrunes_django.audit.keyed_hash`). Django's
``RedisCache`` counts with one server-side script; other caches with
``add()`` then ``incr()``, which is atomic on Redis, Memcached and the
local-memory cache but not on the database or file caches.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.core.cache import BaseCache, caches
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.utils.translation import ngettext

from keyrunes_django.audit import audit_event, keyed_hash, login_name_hash
from keyrunes_django.conf import clock, keyrunes_settings

__all__ = [
    "Attempt",
    "LoginThrottled",
    "ThrottleStatus",
    "Throttled",
    "acquire_forgot_password",
    "acquire_login",
    "acquire_password_change",
    "acquire_registration",
    "remote_account_id",
    "reset",
    "status",
]

logger = logging.getLogger(__name__)

_PREFIX = "keyrunes:throttle"
_HASH_PURPOSE = "keyrunes_django.throttling"
# Seconds between two looks at a budget full of attempts still in flight.
_WAIT_STEP = 0.05
# Keyrunes looks a login name up by email when it matches this, else by username.
_EMAIL_RE = re.compile(r"^[\w.+-]+@[\w-]+\.[\w.-]+$")
# Adds delta to a counter and gives it the window as its lifetime if it has
# none, in one step: a key that expired between two commands would otherwise
# come back without an expiry and lock its account out for good. A refund
# (negative delta) never creates a key.
_REDIS_COUNT = """
if tonumber(ARGV[1]) < 0 and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return n
"""


class Throttled(ValidationError):
    """Too many attempts; ``retry_after`` is in seconds.

    A :class:`~django.core.exceptions.ValidationError`, so a form shows its
    message as a form error.
    """

    code_name = "throttled"

    def __init__(self, *, scope: str, retry_after: int) -> None:
        minutes = max(1, math.ceil(retry_after / 60))
        message = self.wait_message(minutes) % {"minutes": minutes}
        super().__init__(message, code=self.code_name, params={"retry_after": retry_after})
        self.scope = scope
        self.retry_after = retry_after
        self.user_message = message

    def __str__(self) -> str:
        return self.user_message

    @staticmethod
    def wait_message(minutes: int) -> str:
        """The text shown, in the active language, with a ``%(minutes)d`` placeholder."""
        return ngettext(
            "Too many attempts. Please try again in %(minutes)d minute.",
            "Too many attempts. Please try again in %(minutes)d minutes.",
            minutes,
        )


class LoginThrottled(Throttled):
    """Too many failed logins (or password-change attempts) for an account or an IP."""

    code_name = "login_throttled"

    @staticmethod
    def wait_message(minutes: int) -> str:
        return ngettext(
            "Too many failed login attempts. Please try again in %(minutes)d minute.",
            "Too many failed login attempts. Please try again in %(minutes)d minutes.",
            minutes,
        )


@dataclass(frozen=True)
class ThrottleStatus:
    failures: int  # settled failures in the window
    limit: int
    retry_after: int  # seconds until the window ends; 0 when no window is open
    in_flight: int = 0  # attempts counted and not settled yet

    @property
    def blocked(self) -> bool:
        return self.limit > 0 and self.failures >= self.limit


@dataclass(frozen=True)
class _Budget:
    scope: str
    value: str
    limit: int
    cleared_by_success: bool = False

    @property
    def keys(self) -> tuple[str, str, str]:
        """The keys of the attempts in flight, the failures and the window's start."""
        digest = keyed_hash(f"{self.scope}\x00{self.value}", _HASH_PURPOSE)
        base = f"{_PREFIX}:{digest}"
        return f"{base}:i", f"{base}:f", f"{base}:t"


@dataclass
class Attempt:
    """One attempt, counted in flight against its budgets until it is settled.

    Use it as a context manager around the remote call: an attempt left
    unsettled (an unexpected error) is kept as a failure, so a guess whose
    answer crashed the app is still counted.
    """

    budgets: tuple[_Budget, ...]
    _settled: bool = field(default=False, repr=False)

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.keep()

    def keep(self) -> None:
        """A failure (wrong password), or a request that always counts: it stays counted."""
        if self._settle():
            cache = _cache()
            for budget in self.budgets:
                _record_failure(cache, budget)
                # After the failure is recorded: in flight + failures never dips meanwhile.
                _count(cache, budget.keys[0], -1)

    def succeeded(self) -> None:
        """The credentials were right: clear the account's failures, never the IP's."""
        if self._settle():
            cache = _cache()
            for budget in self.budgets:
                if budget.cleared_by_success:
                    cache.delete_many(list(budget.keys[1:]))
                _count(cache, budget.keys[0], -1)

    def not_a_failure(self) -> None:
        """Nothing was guessed (Keyrunes was unreachable...): take the attempt back."""
        if self._settle():
            _leave(_cache(), self.budgets)

    def _settle(self) -> bool:
        settled, self._settled = self._settled, True
        return not settled


# ------------------------------------------------------------------ settings


def _cache() -> BaseCache:
    return caches[str(keyrunes_settings.CACHE_ALIAS)]


def _window() -> int:
    return max(1, int(keyrunes_settings.LOGIN_THROTTLE_WINDOW))


def _account_limit() -> int:
    value = keyrunes_settings.LOGIN_THROTTLE_FAILURES
    return int(value) if value else 0


def _ip_limit() -> int:
    value = keyrunes_settings.LOGIN_THROTTLE_IP_FAILURES
    if value is None:
        # A shared IP (office NAT) sees many users' typos: allow more there.
        return _account_limit() * 4
    return int(value) if value else 0


# ------------------------------------------------------------------ budgets


def _namespace(namespace: str | None) -> str:
    return namespace if namespace is not None else str(keyrunes_settings.NAMESPACE)


def _ip_value(ip: str) -> str:
    """An IPv4 address, or the /64 of an IPv6 one (one host usually holds a whole /64)."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ip.strip()
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _local_field(remote_name: str) -> str | None:
    """The user-model field ``USER_ATTR_MAP`` fills from the remote ``remote_name``."""
    model = get_user_model()
    for local, remote in dict(keyrunes_settings.USER_ATTR_MAP).items():
        if remote != remote_name:
            continue
        try:
            model._meta.get_field(local)
        except FieldDoesNotExist:
            continue
        return str(local)
    return None


def remote_account_id(login_name: str, namespace: str) -> int | None:
    """The remote id of the mirrored account ``login_name`` names in ``namespace``, if known.

    Looked up the way Keyrunes does: by email (case-insensitive) when the name
    looks like one, else by username (exact). ``None`` when no mirrored
    account, or more than one, matches.
    """
    from keyrunes_django.models import KeyrunesIdentity

    if "\x00" in login_name:
        return None  # no account has one, and PostgreSQL refuses it in a query
    is_email = bool(_EMAIL_RE.match(login_name))
    remote_field = "email" if is_email else "username"
    lookup = f"{remote_field}__iexact" if is_email else remote_field
    local = _local_field(remote_field)
    if local is not None:
        # The user table: its username column is indexed, the identities' payload is not.
        users = get_user_model()._default_manager.filter(
            **{f"{local}__iexact" if is_email else local: login_name},
            keyrunes_identity__namespace=namespace,
        )
        ids = list(users.values_list("keyrunes_identity__remote_user_id", flat=True)[:2])
    else:
        rows = KeyrunesIdentity.objects.filter(
            namespace=namespace, **{f"payload__{lookup}": login_name}
        )
        ids = list(rows.values_list("remote_user_id", flat=True)[:2])
    return ids[0] if len(ids) == 1 else None


def _account_value(login_name: str, namespace: str) -> str:
    remote_id = remote_account_id(login_name, namespace)
    if remote_id is not None:
        return f"{namespace}\x00id:{remote_id}"
    # Unknown here: count the name itself, case-insensitively (only ever stricter).
    return f"{namespace}\x00name:{login_name.strip().lower()}"


def _budgets(
    account: str | None, ip: str | None, *, account_scope: str, ip_scope: str
) -> list[_Budget]:
    """The account budget (cleared by a success only for logins) and the IP budget."""
    budgets: list[_Budget] = []
    if account is not None:
        cleared = account_scope == "account"
        budgets.append(_Budget(account_scope, account, _account_limit(), cleared))
    if ip:
        budgets.append(_Budget(ip_scope, _ip_value(ip), _ip_limit()))
    return [budget for budget in budgets if budget.limit > 0]


def _login_budgets(login_name: str | None, ip: str | None, namespace: str | None) -> list[_Budget]:
    ns = _namespace(namespace)
    account = _account_value(login_name, ns) if login_name else None
    return _budgets(account, ip, account_scope="account", ip_scope="ip")


# ------------------------------------------------------------------ counting


def _redis_client(cache: BaseCache, key: str) -> tuple[Any, str] | None:
    """The redis-py client and full key behind Django's own ``RedisCache``, else ``None``."""
    from django.core.cache.backends.redis import RedisCache

    if not isinstance(cache, RedisCache):
        return None
    full_key = cache.make_and_validate_key(key)
    return cache._cache.get_client(full_key, write=True), full_key


def _count(cache: BaseCache, key: str, delta: int) -> int:
    """Add ``delta`` to a counter living one window; a negative delta never creates one."""
    window = _window()
    redis = _redis_client(cache, key)
    if redis is not None:
        client, full_key = redis
        return int(client.eval(_REDIS_COUNT, 1, full_key, delta, window))
    for _ in range(3):
        if delta > 0:
            cache.add(key, 0, timeout=window)
        try:
            return int(cache.incr(key, delta))
        except ValueError:
            if delta < 0:
                return 0  # the window ended: nothing to take back
            # Expired between add() and incr(): add it again.
    # A cache that keeps nothing (DummyCache) cannot count; system check W060 says so.
    return 0


def _failures(cache: BaseCache, budget: _Budget) -> int:
    return max(0, int(cache.get(budget.keys[1]) or 0))


def _record_failure(cache: BaseCache, budget: _Budget) -> None:
    # add() only succeeds for the first failure of a window: that fixes its start.
    cache.add(budget.keys[2], clock.now(), timeout=_window())
    _count(cache, budget.keys[1], 1)


def _leave(cache: BaseCache, budgets: Sequence[_Budget]) -> None:
    for budget in budgets:
        _count(cache, budget.keys[0], -1)


def _enter(cache: BaseCache, budgets: Sequence[_Budget]) -> tuple[_Budget, int] | None:
    """Count the attempt in flight on every budget; the full budget and its failures if not."""
    entered: list[_Budget] = []
    for budget in budgets:
        in_flight = _count(cache, budget.keys[0], 1)
        entered.append(budget)
        # Read after the increment: a failure settling meanwhile is counted twice, never zero times.
        failures = _failures(cache, budget)
        if in_flight + failures > budget.limit:
            _leave(cache, entered)
            return budget, failures
    return None


def _retry_after(cache: BaseCache, budget: _Budget) -> int:
    started = cache.get(budget.keys[2])
    if started is None:
        return _window()
    return max(1, math.ceil(float(started) + _window() - clock.now()))


def _max_wait() -> float:
    # Attempts in flight settle within one call's deadline.
    from keyrunes_django.client import normalise_deadline

    return normalise_deadline(keyrunes_settings.DEADLINE)


def _acquire(
    budgets: Sequence[_Budget],
    *,
    error: type[Throttled],
    action: str,
    login_name: str | None = None,
    ip: str | None = None,
) -> Attempt:
    cache = _cache()
    deadline = time.monotonic() + _max_wait()
    while True:
        full = _enter(cache, budgets)
        if full is None:
            return Attempt(tuple(budgets))
        budget, failures = full
        if failures < budget.limit and time.monotonic() < deadline:
            # Full of attempts still in flight: wait for them to settle.
            time.sleep(_WAIT_STEP * (1 + random.random()))  # noqa: S311 (jitter only)
            continue
        retry_after = _retry_after(cache, budget)
        audit_event(
            f"{action}_throttled",
            level=logging.WARNING,
            scope=budget.scope,
            identity_hash=login_name_hash(login_name) if login_name else None,
            client_ip=ip,
            failures=failures,
            retry_after=retry_after,
        )
        raise error(scope=budget.scope, retry_after=retry_after)


# ------------------------------------------------------------------ the flows


def acquire_login(login_name: str, ip: str | None, *, namespace: str | None = None) -> Attempt:
    """Count one login attempt before asking Keyrunes; raises :class:`LoginThrottled`."""
    return _acquire(
        _login_budgets(login_name, ip, namespace),
        error=LoginThrottled,
        action="login",
        login_name=login_name,
        ip=ip,
    )


def acquire_password_change(namespace: str, remote_user_id: int, ip: str | None) -> Attempt:
    """Count one password change (it checks the current password) against the account."""
    account = f"{namespace}\x00id:{remote_user_id}"
    budgets = _budgets(account, ip, account_scope="account", ip_scope="ip")
    return _acquire(budgets, error=LoginThrottled, action="password_change", ip=ip)


def acquire_forgot_password(email: str, ip: str | None, *, namespace: str | None = None) -> Attempt:
    """Count one forgot-password request for ``email`` and the IP; raises :class:`Throttled`."""
    ns = _namespace(namespace)
    budgets = _budgets(_account_value(email, ns), ip, account_scope="forgot", ip_scope="forgot_ip")
    return _acquire(budgets, error=Throttled, action="password_forgot", login_name=email, ip=ip)


def acquire_registration(ip: str | None) -> Attempt:
    """Count one registration from the IP; raises :class:`Throttled`."""
    budgets = _budgets(None, ip, account_scope="register", ip_scope="register_ip")
    return _acquire(budgets, error=Throttled, action="register", ip=ip)


# ------------------------------------------------------------------ diagnostics


def status(
    identity: str | None = None, ip: str | None = None, *, namespace: str | None = None
) -> dict[str, ThrottleStatus]:
    """The login counters (``"account"``, ``"ip"``) of a login name and an IP."""
    cache = _cache()
    result: dict[str, ThrottleStatus] = {}
    for budget in _login_budgets(identity, ip, namespace):
        in_flight_key, failures_key, start_key = budget.keys
        found = cache.get_many([in_flight_key, failures_key, start_key])
        failures = max(0, int(found.get(failures_key) or 0))
        started = found.get(start_key)
        retry_after = 0
        if failures and started is not None:
            retry_after = max(0, math.ceil(float(started) + _window() - clock.now()))
        in_flight = max(0, int(found.get(in_flight_key) or 0))
        result[budget.scope] = ThrottleStatus(failures, budget.limit, retry_after, in_flight)
    return result


def reset(
    identity: str | None = None, ip: str | None = None, *, namespace: str | None = None
) -> None:
    """Clear the login counters of a login name's account and/or of an IP (to unlock by hand)."""
    keys = [key for budget in _login_budgets(identity, ip, namespace) for key in budget.keys[1:]]
    if keys:
        _cache().delete_many(keys)
