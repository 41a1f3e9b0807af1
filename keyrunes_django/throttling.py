"""Failed-login throttling per identity and per client IP, through the Django cache.

The login backend calls :func:`check_login_allowed` before asking Keyrunes,
:func:`record_login_failure` when Keyrunes refuses the credentials and
:func:`reset` after a success. Once ``LOGIN_THROTTLE_FAILURES`` failures
happened within ``LOGIN_THROTTLE_WINDOW`` seconds for the same login name (or
``LOGIN_THROTTLE_IP_FAILURES`` from one IP), further attempts are refused with
:class:`LoginThrottled` without reaching Keyrunes, until the window ends.

Counters live in the cache named by ``CACHE_ALIAS`` (use a shared cache such
as Redis when several instances serve logins), under keys holding only a
sha256 of the login name.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from django.core.cache import BaseCache, caches
from django.core.exceptions import ValidationError

from keyrunes_django.audit import audit_event, hash_value
from keyrunes_django.conf import keyrunes_settings

__all__ = [
    "LoginThrottled",
    "ThrottleStatus",
    "check_login_allowed",
    "record_login_failure",
    "reset",
    "status",
]

_PREFIX = "keyrunes:throttle"


class LoginThrottled(ValidationError):
    """Too many failed logins; ``retry_after`` is in seconds.

    A :class:`~django.core.exceptions.ValidationError`, so Django's
    ``AuthenticationForm`` shows its message as a form error instead of the
    generic "wrong password" text.
    """

    def __init__(self, *, scope: str, retry_after: int) -> None:
        minutes = max(1, math.ceil(retry_after / 60))
        unit = "minute" if minutes == 1 else "minutes"
        message = f"Too many failed login attempts. Please try again in {minutes} {unit}."
        super().__init__(message, code="login_throttled", params={"retry_after": retry_after})
        self.scope = scope
        self.retry_after = retry_after
        self.user_message = message

    def __str__(self) -> str:
        return self.user_message


@dataclass(frozen=True)
class ThrottleStatus:
    failures: int
    limit: int
    retry_after: int  # seconds until the window ends; 0 when no window is open

    @property
    def blocked(self) -> bool:
        return self.limit > 0 and self.failures >= self.limit


def _cache() -> BaseCache:
    return caches[str(keyrunes_settings.CACHE_ALIAS)]


def _window() -> int:
    return max(1, int(keyrunes_settings.LOGIN_THROTTLE_WINDOW))


def _identity_limit() -> int:
    value = keyrunes_settings.LOGIN_THROTTLE_FAILURES
    return int(value) if value else 0


def _ip_limit() -> int:
    value = keyrunes_settings.LOGIN_THROTTLE_IP_FAILURES
    if value is None:
        # A shared IP (office NAT) sees many users' typos: allow more there.
        return _identity_limit() * 4
    return int(value) if value else 0


def _normalize(identity: str, namespace: str | None) -> str:
    ns = namespace if namespace is not None else str(keyrunes_settings.NAMESPACE)
    # Emails are matched case-insensitively by the server; counting usernames
    # case-insensitively too only makes the throttle stricter.
    return f"{ns}\x00{identity.strip().lower()}"


def _keys(scope: str, value: str) -> tuple[str, str]:
    digest = hash_value(value)
    return f"{_PREFIX}:{scope}:{digest}:n", f"{_PREFIX}:{scope}:{digest}:t"


def _scopes(
    identity: str | None, ip: str | None, namespace: str | None
) -> list[tuple[str, str, int]]:
    scopes: list[tuple[str, str, int]] = []
    if identity:
        scopes.append(("identity", _normalize(identity, namespace), _identity_limit()))
    if ip:
        scopes.append(("ip", ip, _ip_limit()))
    return scopes


def _status(cache: BaseCache, scope: str, value: str, limit: int) -> ThrottleStatus:
    count_key, start_key = _keys(scope, value)
    found = cache.get_many([count_key, start_key])
    failures = int(found.get(count_key) or 0)
    started = found.get(start_key)
    retry_after = 0
    if failures and started is not None:
        retry_after = max(0, math.ceil(float(started) + _window() - time.time()))
    return ThrottleStatus(failures=failures, limit=limit, retry_after=retry_after)


def status(
    identity: str | None = None, ip: str | None = None, *, namespace: str | None = None
) -> dict[str, ThrottleStatus]:
    """Current counters by scope (``"identity"``, ``"ip"``), for diagnostics and tests."""
    cache = _cache()
    return {
        scope: _status(cache, scope, value, limit)
        for scope, value, limit in _scopes(identity, ip, namespace)
    }


def check_login_allowed(
    identity: str | None, ip: str | None, *, namespace: str | None = None
) -> None:
    """Raise :class:`LoginThrottled` if this login name or IP is over its limit."""
    cache = _cache()
    for scope, value, limit in _scopes(identity, ip, namespace):
        if limit <= 0:
            continue
        current = _status(cache, scope, value, limit)
        if current.blocked:
            audit_event(
                "login_throttled",
                level=logging.WARNING,
                scope=scope,
                identity_hash=hash_value(_normalize(identity, namespace)) if identity else None,
                client_ip=ip,
                failures=current.failures,
                retry_after=current.retry_after,
            )
            raise LoginThrottled(scope=scope, retry_after=max(1, current.retry_after))


def record_login_failure(
    identity: str | None, ip: str | None, *, namespace: str | None = None
) -> dict[str, int]:
    """Count one failed login against the login name and the IP; returns the new counts."""
    cache = _cache()
    window = _window()
    counts: dict[str, int] = {}
    for scope, value, limit in _scopes(identity, ip, namespace):
        if limit <= 0:
            continue
        count_key, start_key = _keys(scope, value)
        # add() only succeeds for the first failure of a window: that fixes its start.
        if cache.add(start_key, time.time(), timeout=window):
            cache.set(count_key, 0, timeout=window)
        try:
            counts[scope] = int(cache.incr(count_key))
        except ValueError:
            # The counter expired between add() and incr(): start over.
            cache.set(count_key, 1, timeout=window)
            cache.set(start_key, time.time(), timeout=window)
            counts[scope] = 1
    return counts


def reset(
    identity: str | None = None, ip: str | None = None, *, namespace: str | None = None
) -> None:
    """Forget the failures of a login name (after a success) and/or of an IP.

    The login backend resets only the login name on success: resetting the IP
    too would let one valid account clear an attacker's per-IP counter.
    """
    keys: list[str] = []
    for scope, value, _limit in _scopes(identity, ip, namespace):
        keys.extend(_keys(scope, value))
    if keys:
        _cache().delete_many(keys)
