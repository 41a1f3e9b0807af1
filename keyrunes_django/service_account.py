"""The token keyrunes-django uses for the Keyrunes admin API (sync, commands).

``KEYRUNES["SERVICE_ACCOUNT"]`` is either

* ``{"IDENTITY": "svc@example.com", "PASSWORD": "...", "NAMESPACE": "public"}``
  (``NAMESPACE`` optional, defaults to ``KEYRUNES["NAMESPACE"]``): the app logs
  in once, keeps the token in memory only, and before it expires refreshes it
  through ``/api/refresh-token``, or logs in again when that fails or the
  token has already expired; or
* ``{"TOKEN_ENV": "KEYRUNES_SERVICE_TOKEN"}``: the token is read from that
  environment variable on every call, and refreshed in memory when it is
  within :data:`REFRESH_MARGIN` seconds of its expiry.

A missing, malformed or refused account raises :class:`ServiceAccountError`;
an unreachable server raises :class:`KeyrunesUnavailable` unchanged, so callers
can tell "misconfigured" from "down". The ``exp`` claim is read without
verifying the signature: it only schedules refreshes, nothing trusts it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from keyrunes_django.claims import token_expiry, unverified_claims
from keyrunes_django.conf import clock, on_settings_changed
from keyrunes_django.exceptions import (
    AuthenticationFailed,
    KeyrunesHTTPError,
    KeyrunesProtocolError,
    ServiceAccountError,
)

if TYPE_CHECKING:
    from keyrunes_django.schemas import Organization

__all__ = [
    "REFRESH_MARGIN",
    "admin_call",
    "clear_service_token",
    "configured",
    "get_service_token",
    "organization_record",
    "resolve_organization_id",
    "service_account_problems",
]

T = TypeVar("T")

SETTING = "KEYRUNES['SERVICE_ACCOUNT']"
#: Refresh a token this many seconds before its ``exp``.
REFRESH_MARGIN = 300
#: Assumed lifetime when a token's ``exp`` cannot be read (the server's is 3600 s).
FALLBACK_LIFETIME = 3000

_PASSWORD_KEYS = frozenset({"IDENTITY", "PASSWORD", "NAMESPACE"})
_ENV_KEYS = frozenset({"TOKEN_ENV"})


def _now() -> float:
    return clock.now()


def service_account_problems(value: Any) -> list[str]:
    """Why ``value`` is not a valid ``SERVICE_ACCOUNT`` (empty list: it is valid or None)."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [f"{SETTING} must be a dict, not {type(value).__name__}."]
    keys = set(value)
    if "TOKEN_ENV" in keys:
        problems = [
            f"{SETTING} has unexpected key {k!r} next to TOKEN_ENV."
            for k in sorted(keys - _ENV_KEYS)
        ]
        env = value["TOKEN_ENV"]
        if not isinstance(env, str) or not env.strip():
            problems.append(f"{SETTING}['TOKEN_ENV'] must name an environment variable.")
        return problems
    problems = [f"{SETTING} has unknown key {k!r}." for k in sorted(keys - _PASSWORD_KEYS)]
    for key in ("IDENTITY", "PASSWORD"):
        if not isinstance(value.get(key), str) or not value.get(key):
            problems.append(
                f"{SETTING} needs a non-empty string {key!r} (or use {{'TOKEN_ENV': ...}})."
            )
    namespace = value.get("NAMESPACE")
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        problems.append(f"{SETTING}['NAMESPACE'] must be a non-empty string.")
    return problems


@dataclass
class _Cached:
    fingerprint: str
    token: str
    expires_at: float


_lock = threading.RLock()
_cached: _Cached | None = None


def _token_expiry(token: str) -> float:
    exp = token_expiry(token)
    return exp if exp is not None else _now() + FALLBACK_LIFETIME


def _config() -> Mapping[str, Any]:
    from keyrunes_django.conf import keyrunes_settings

    value = keyrunes_settings.SERVICE_ACCOUNT
    if value is None:
        raise ServiceAccountError(
            f"{SETTING} is not set; the admin API needs a service account "
            "({'IDENTITY': ..., 'PASSWORD': ...} or {'TOKEN_ENV': 'VARIABLE'})."
        )
    problems = service_account_problems(value)
    if problems:
        raise ServiceAccountError(" ".join(problems))
    assert isinstance(value, Mapping)
    return value


def _fingerprint(config: Mapping[str, Any], base_url: str, namespace: str) -> str:
    # Hashed so the cache key never holds the password or token itself.
    parts = [base_url, namespace]
    if "TOKEN_ENV" in config:
        parts += ["env", str(config["TOKEN_ENV"]), os.environ.get(config["TOKEN_ENV"], "")]
    else:
        parts += ["login", str(config["IDENTITY"]), str(config["PASSWORD"])]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _login(config: Mapping[str, Any], namespace: str) -> str:
    from keyrunes_django.client import get_client

    try:
        answer = get_client().login(str(config["IDENTITY"]), str(config["PASSWORD"]), namespace)
    except KeyrunesHTTPError as exc:
        raise ServiceAccountError(
            f"Keyrunes refused the login of {SETTING}: {exc.message}",
            status_code=exc.status_code,
        ) from exc
    return answer.token


def _refresh(token: str) -> str:
    from keyrunes_django.client import get_client

    return get_client().refresh_token(token).token


def _obtain(config: Mapping[str, Any], namespace: str, current: _Cached | None) -> str:
    """A fresh token: refresh ``current`` if possible, else log in / refresh the env token."""
    if "TOKEN_ENV" in config:
        source = current.token if current is not None else _env_token(config)
        try:
            return _refresh(source)
        except (KeyrunesHTTPError, KeyrunesProtocolError) as exc:
            raise ServiceAccountError(
                f"Keyrunes refused to refresh the token of {SETTING}: {exc.message}",
                status_code=exc.status_code,
            ) from exc
    if current is not None and current.expires_at > _now():
        try:
            return _refresh(current.token)
        except (KeyrunesHTTPError, KeyrunesProtocolError):
            pass  # fall back to a new login, which also picks up current groups
    return _login(config, namespace)


def _env_token(config: Mapping[str, Any]) -> str:
    name = str(config["TOKEN_ENV"])
    token = os.environ.get(name, "").strip()
    if not token:
        raise ServiceAccountError(f"{SETTING}['TOKEN_ENV']: environment variable {name} is empty.")
    return token


def get_service_token(*, force_refresh: bool = False) -> str:
    """A valid service-account token, from memory when it is not close to expiry."""
    global _cached
    from keyrunes_django.conf import keyrunes_settings

    config = _config()
    namespace = str(config.get("NAMESPACE") or keyrunes_settings.NAMESPACE)
    fingerprint = _fingerprint(config, str(keyrunes_settings.BASE_URL), namespace)
    with _lock:
        current = _cached if _cached is not None and _cached.fingerprint == fingerprint else None
        if current is None and "TOKEN_ENV" in config:
            token = _env_token(config)
            current = _Cached(fingerprint, token, _token_expiry(token))
            _cached = current
        if (
            current is not None
            and not force_refresh
            and current.expires_at - REFRESH_MARGIN > _now()
        ):
            return current.token
        if force_refresh and "TOKEN_ENV" not in config:
            current = None  # a forced refresh of a login account logs in again
        token = _obtain(config, namespace, current)
        _cached = _Cached(fingerprint, token, _token_expiry(token))
        return token


def clear_service_token() -> None:
    """Forget the cached token (the next call logs in again)."""
    global _cached
    with _lock:
        _cached = None


def admin_call(fn: Callable[[str], T]) -> T:
    """Run ``fn(token)`` with the service token, retrying once with a new token on a 401.

    A 401 means the server no longer accepts the token (e.g. ``JWT_SECRET``
    was rotated); any other error propagates. A second 401 becomes a
    :class:`ServiceAccountError`.
    """
    token = get_service_token()
    try:
        return fn(token)
    except AuthenticationFailed:
        with _lock:
            # Another thread may already have replaced the rejected token.
            if _cached is not None and _cached.token != token:
                token = _cached.token
            else:
                token = get_service_token(force_refresh=True)
    try:
        return fn(token)
    except AuthenticationFailed as exc:
        raise ServiceAccountError(
            f"Keyrunes rejected the token of {SETTING}: {exc.message}", status_code=401
        ) from exc


@on_settings_changed
def _forget_on_settings_change() -> None:
    clear_service_token()


def configured() -> bool:
    """Whether ``SERVICE_ACCOUNT`` is set (it may still be refused when used)."""
    from keyrunes_django.conf import keyrunes_settings

    return keyrunes_settings.SERVICE_ACCOUNT is not None


def resolve_organization_id(
    token: str, namespace: str, explicit: int | None = None, *, scope: int | None = None
) -> int:
    """The one rule for "which organization" an admin operation acts on.

    In order: ``explicit`` (a command's ``--organization-id``), ``scope``
    (``ORGANIZATION_SCOPE``), the organization of ``token`` when the token
    belongs to ``namespace``, else the organization whose namespace is
    ``namespace`` in the admin listing. There is no default: when none
    applies, :class:`ServiceAccountError` says how to configure it.
    """
    if explicit is not None:
        return int(explicit)
    if scope is not None:
        return scope
    claims = unverified_claims(token)
    org = claims.get("organization_id")
    if claims.get("namespace") == namespace and type(org) is int:
        return org
    return _find_organization(token, namespace, None).organization_id


def organization_record(namespace: str, scope: int | None = None) -> Organization:
    """The admin listing's record of this service's organization (with its current key)."""
    return admin_call(lambda token: _find_organization(token, namespace, scope))


def _find_organization(token: str, namespace: str, scope: int | None) -> Organization:
    from keyrunes_django.client import get_client

    for organization in get_client().list_organizations(token):
        if scope is not None and organization.organization_id == scope:
            return organization
        if scope is None and organization.namespace == namespace:
            return organization
    wanted = f"id {scope}" if scope is not None else f"namespace {namespace!r}"
    raise ServiceAccountError(
        f"No organization with {wanted} is visible to {SETTING}; set "
        "KEYRUNES['ORGANIZATION_SCOPE'] (or pass --organization-id to a command)."
    )
