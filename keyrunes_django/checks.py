"""System checks for ``settings.KEYRUNES`` (run by ``manage.py check``).

=====================  ===========================================================
id                     problem
=====================  ===========================================================
keyrunes_django.E001   ``BASE_URL`` is missing
keyrunes_django.E002   ``BASE_URL`` is not an http(s) URL with a host
keyrunes_django.W001   ``BASE_URL`` is plain http (not loopback) while ``DEBUG`` is False
keyrunes_django.E003   ``TIMEOUT`` is not a positive number or (connect, read) pair
keyrunes_django.E004   ``JWT_SECRET`` is not a string of at least 32 bytes
keyrunes_django.E005   an import-string setting (``USER_MAPPER``) cannot be imported
keyrunes_django.E006   unknown keys in ``KEYRUNES`` (with a hint for removed ones)
keyrunes_django.E007   bad ``VERIFICATION_MODE``, or ``"local"`` without ``JWT_SECRET``
keyrunes_django.E008   ``RETRIES``/``BACKOFF``/TTLs/leeways negative or not numbers
keyrunes_django.E009   ``CACHE_ALIAS`` is not a key of ``settings.CACHES``
keyrunes_django.E010   ``SERVICE_ACCOUNT`` is malformed
keyrunes_django.E011   ``NAMESPACE`` is empty or not a string
keyrunes_django.E012   ``settings.KEYRUNES`` is not a dict
keyrunes_django.E020   ``GROUPS`` is not a list
keyrunes_django.E021   a ``GROUPS`` entry is not a name or a {name, description} dict
keyrunes_django.E022   ``GROUPS`` declares a name twice
keyrunes_django.E023   ``POLICIES`` is not a list
keyrunes_django.E024   a ``POLICIES`` entry is malformed (fields, lengths, effect, conditions)
keyrunes_django.E025   ``POLICIES`` declares a name twice
keyrunes_django.E030   ``ORGANIZATION_SCOPE`` is not a positive organization id
keyrunes_django.E031   ``EXEMPT_PATHS`` is not a list of regular expressions
keyrunes_django.E032   ``CACHE_SIGNING_KEY`` is neither None nor a string of 32+ characters
keyrunes_django.E033   a Keyrunes middleware comes before ``AuthenticationMiddleware``
keyrunes_django.W030   signed-cookie sessions would carry the user's Keyrunes token
keyrunes_django.W031   organization keys are refused: the service's organization is unknown
keyrunes_django.E080   ``STATELESS_USERS`` is not True or False
keyrunes_django.E081   ``API_PATH_PREFIXES`` is not a path or a list of paths
keyrunes_django.E040   ``DEADLINE`` is not a positive number
keyrunes_django.E041   ``MAX_RESPONSE_BYTES`` is not a positive integer
keyrunes_django.E042   ``BREAKER_FAILURES``/``BREAKER_COOLDOWN`` out of range
keyrunes_django.W040   one call's worst case (retries, timeouts, back-off, deadline) > 25 s
keyrunes_django.E070   ``HEALTH_TIMEOUT`` is not a positive number
keyrunes_django.E071   ``CHANNELS_QUERY_STRING_TOKEN`` is not a bool
keyrunes_django.E060   a ``LOGIN_THROTTLE_*`` value is not a non-negative integer
keyrunes_django.E061   ``REGISTRATION_ENABLED`` is not a bool
keyrunes_django.E062   ``REGISTRATION_ENABLED`` without ``KeyrunesBackend`` in
                       ``AUTHENTICATION_BACKENDS``
keyrunes_django.W060   the cache of ``CACHE_ALIAS`` cannot count throttle attempts atomically
=====================  ===========================================================

Ids are stable; features with their own settings add checks from E020 on.
The checks read the raw dict (never ``keyrunes_settings``, which would raise on
the first unknown key) so that one run reports every problem.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from keyrunes_django.conf import DEFAULTS, IMPORT_STRINGS, MIN_SECRET_BYTES, REMOVED_SETTINGS

__all__ = ["check_request_path", "check_settings"]

_ID = "keyrunes_django."

#: Numeric settings that must be >= 0; RETRIES must also be an integer.
NON_NEGATIVE_NUMBERS = (
    "RETRIES",
    "BACKOFF",
    "CACHE_TTL",
    "NEGATIVE_CACHE_TTL",
    "PERMISSION_CACHE_TTL",
    "STALE_IF_ERROR",
    "JWT_LEEWAY",
    "LOCAL_CACHE_SIZE",
    "SESSION_REFRESH_MARGIN",
)
_INTEGERS = frozenset({"RETRIES", "LOCAL_CACHE_SIZE"})
VERIFICATION_MODES = ("auto", "local", "remote")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_base_url(value: Any) -> list[CheckMessage]:
    if value is None or value == "":
        return [
            Error(
                "KEYRUNES['BASE_URL'] is not set.",
                hint="Set it to the Keyrunes server's root URL, e.g. 'https://auth.example.com'.",
                id=_ID + "E001",
            )
        ]
    parts = urlsplit(value) if isinstance(value, str) else None
    try:
        host = parts.hostname if parts is not None else None
        if parts is not None:
            _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        host = None
    if parts is None or parts.scheme not in {"http", "https"} or not host:
        return [
            Error(
                f"KEYRUNES['BASE_URL'] = {value!r} is not an http(s) URL.",
                hint="Use a URL like 'https://auth.example.com' (no query string needed).",
                id=_ID + "E002",
            )
        ]
    if parts.scheme == "http" and not settings.DEBUG and not _is_loopback(host):
        return [
            Warning(
                f"KEYRUNES['BASE_URL'] uses plain http ({host}) while DEBUG is False.",
                hint="Passwords and tokens travel to Keyrunes; use https outside development.",
                id=_ID + "W001",
            )
        ]
    return []


def _check_timeout(value: Any) -> list[CheckMessage]:
    from keyrunes_django.client import normalise_timeout

    try:
        normalise_timeout(value)
    except ImproperlyConfigured:
        return [
            Error(
                f"KEYRUNES['TIMEOUT'] = {value!r} is not a positive number "
                "or a (connect, read) pair of positive numbers.",
                hint="For example 5 or (3.05, 10). None (wait forever) is not allowed.",
                id=_ID + "E003",
            )
        ]
    return []


def _check_secret(value: Any) -> list[CheckMessage]:
    if value is None:
        return []
    if not isinstance(value, str) or len(value.encode("utf-8")) < MIN_SECRET_BYTES:
        return [
            Error(
                f"KEYRUNES['JWT_SECRET'] must be a string of at least {MIN_SECRET_BYTES} bytes.",
                hint="Use the server's JWT_SECRET, or leave it unset to verify tokens remotely.",
                id=_ID + "E004",
            )
        ]
    return []


def _check_imports(user: Mapping[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for key in sorted(IMPORT_STRINGS):
        value = user.get(key, DEFAULTS[key])
        if value is None or (not isinstance(value, str) and callable(value)):
            continue
        problem = None
        if not isinstance(value, str):
            problem = f"must be a dotted import path or a class, not {type(value).__name__}"
        else:
            try:
                import_string(value)
            except ImportError as exc:
                problem = f"= {value!r} cannot be imported: {exc}"
        if problem:
            errors.append(Error(f"KEYRUNES[{key!r}] {problem}.", id=_ID + "E005"))
    return errors


def _check_unknown(user: Mapping[str, Any]) -> list[CheckMessage]:
    unknown = sorted(str(k) for k in user if k not in DEFAULTS)
    if not unknown:
        return []
    hints = [f"{k}: {REMOVED_SETTINGS[k]}" for k in unknown if k in REMOVED_SETTINGS]
    return [
        Error(
            "Unknown KEYRUNES keys: " + ", ".join(unknown) + ".",
            hint=" ".join(hints) or "Check the spelling against the settings reference.",
            id=_ID + "E006",
        )
    ]


def _check_mode(user: Mapping[str, Any]) -> list[CheckMessage]:
    mode = user.get("VERIFICATION_MODE", DEFAULTS["VERIFICATION_MODE"])
    if mode not in VERIFICATION_MODES:
        return [
            Error(
                f"KEYRUNES['VERIFICATION_MODE'] = {mode!r} is not one of {VERIFICATION_MODES}.",
                id=_ID + "E007",
            )
        ]
    if mode == "local" and not user.get("JWT_SECRET"):
        return [
            Error(
                "KEYRUNES['VERIFICATION_MODE'] is 'local' but JWT_SECRET is not set.",
                hint="Set JWT_SECRET to the server's secret, or use 'remote'.",
                id=_ID + "E007",
            )
        ]
    return []


def _check_numbers(user: Mapping[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for key in NON_NEGATIVE_NUMBERS:
        value = user.get(key, DEFAULTS[key])
        ok = _is_number(value) and value >= 0
        if key in _INTEGERS:
            ok = ok and isinstance(value, int)
        if not ok:
            kind = "an integer" if key in _INTEGERS else "a number"
            errors.append(
                Error(f"KEYRUNES[{key!r}] = {value!r} must be {kind} >= 0.", id=_ID + "E008")
            )
    return errors


def _check_cache_alias(value: Any) -> list[CheckMessage]:
    caches = getattr(settings, "CACHES", {}) or {}
    if value not in caches:
        return [
            Error(
                f"KEYRUNES['CACHE_ALIAS'] = {value!r} is not defined in settings.CACHES.",
                hint=f"Defined aliases: {', '.join(sorted(caches)) or 'none'}.",
                id=_ID + "E009",
            )
        ]
    return []


def _check_service_account(value: Any) -> list[CheckMessage]:
    from keyrunes_django.service_account import service_account_problems

    return [
        Error(
            problem,
            hint="Use {'IDENTITY': ..., 'PASSWORD': ..., 'NAMESPACE': ...} "
            "or {'TOKEN_ENV': 'ENV_VAR_NAME'}.",
            id=_ID + "E010",
        )
        for problem in service_account_problems(value)
    ]


def _check_adopt_groups(value: Any) -> list[CheckMessage]:
    if (
        isinstance(value, str)
        or not isinstance(value, (list, tuple, set, frozenset))
        or not all(isinstance(name, str) and name for name in value)
    ):
        return [
            Error(
                f"KEYRUNES['ADOPT_GROUPS'] = {value!r} must be a list of local group names.",
                hint="For example ('editors',); the default () adopts no local-only group.",
                id=_ID + "E050",
            )
        ]
    return []


def _check_namespace(value: Any) -> list[CheckMessage]:
    if not isinstance(value, str) or not value.strip():
        return [
            Error(
                f"KEYRUNES['NAMESPACE'] = {value!r} must be a non-empty string.",
                hint="Use 'public' for the default organization.",
                id=_ID + "E011",
            )
        ]
    return []


@register("keyrunes")
def check_settings(
    *,
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """All checks of ``settings.KEYRUNES``."""
    user = getattr(settings, "KEYRUNES", None)
    if user is None:
        user = {}
    if not isinstance(user, Mapping):
        return [Error("settings.KEYRUNES must be a dict.", id=_ID + "E012")]

    def get(key: str) -> Any:
        return user.get(key, DEFAULTS[key])

    messages: list[CheckMessage] = []
    messages += _check_unknown(user)
    messages += _check_base_url(get("BASE_URL"))
    messages += _check_timeout(get("TIMEOUT"))
    messages += _check_secret(get("JWT_SECRET"))
    messages += _check_imports(user)
    messages += _check_mode(user)
    messages += _check_numbers(user)
    messages += _check_cache_alias(get("CACHE_ALIAS"))
    messages += _check_service_account(get("SERVICE_ACCOUNT"))
    messages += _check_namespace(get("NAMESPACE"))
    messages += _check_adopt_groups(get("ADOPT_GROUPS"))
    from keyrunes_django.policies import check_declarations

    messages += check_declarations(get("GROUPS"), get("POLICIES"))
    messages += _check_throttle(user)
    messages += _check_registration(get("REGISTRATION_ENABLED"))
    return messages


# ------------------------------------------------------------------ request path

_AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
_KEYRUNES_MIDDLEWARE = "keyrunes_django.middleware.KeyrunesAuthenticationMiddleware"
_REFRESH_MIDDLEWARE = "keyrunes_django.middleware.KeyrunesSessionRefreshMiddleware"
_ORG_KEY_DRF_CLASS = "keyrunes_django.drf.authentication.KeyrunesOrganizationKeyAuthentication"


def _check_scope(value: Any) -> list[CheckMessage]:
    from keyrunes_django.tenancy import scope_problem

    problem = scope_problem(value)
    if problem is None:
        return []
    return [
        Error(
            problem,
            hint="Set it to the id of this service's organization, or leave it out.",
            id=_ID + "E030",
        )
    ]


def _check_exempt_paths(value: Any) -> list[CheckMessage]:
    import re

    hint = "A list of regular expressions matched against request.path, e.g. [r'^/health/$']."
    if isinstance(value, str) or not isinstance(value, Sequence):
        return [
            Error(
                f"KEYRUNES['EXEMPT_PATHS'] = {value!r} is not a list.", hint=hint, id=_ID + "E031"
            )
        ]
    messages: list[CheckMessage] = []
    for pattern in value:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            messages.append(
                Error(
                    f"KEYRUNES['EXEMPT_PATHS'] entry {pattern!r} is not a regular expression "
                    f"({exc}).",
                    hint=hint,
                    id=_ID + "E031",
                )
            )
    return messages


def _check_signing_key(value: Any) -> list[CheckMessage]:
    if value is None or (isinstance(value, str) and len(value) >= MIN_SECRET_BYTES):
        return []
    return [
        Error(
            "KEYRUNES['CACHE_SIGNING_KEY'] must be None (derived from SECRET_KEY) or a string "
            f"of at least {MIN_SECRET_BYTES} characters.",
            hint="Services that share one cache and should read each other's records use the "
            "same key; leave it out otherwise.",
            id=_ID + "E032",
        )
    ]


def _check_middleware_order() -> list[CheckMessage]:
    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    messages: list[CheckMessage] = []
    for name in (_KEYRUNES_MIDDLEWARE, _REFRESH_MIDDLEWARE):
        if name not in middleware:
            continue
        position = middleware.index(name)
        if _AUTH_MIDDLEWARE not in middleware[:position]:
            messages.append(
                Error(
                    f"{name} must come after {_AUTH_MIDDLEWARE} in MIDDLEWARE.",
                    hint="AuthenticationMiddleware sets request.user lazily; placed after "
                    "Keyrunes' middleware it replaces the token's user with the session's.",
                    id=_ID + "E033",
                )
            )
    return messages


def _check_session_engine(user: Mapping[str, Any]) -> list[CheckMessage]:
    engine = getattr(settings, "SESSION_ENGINE", "")
    backends = getattr(settings, "AUTHENTICATION_BACKENDS", ())
    if engine != "django.contrib.sessions.backends.signed_cookies":
        return []
    if not any(str(b).startswith("keyrunes_django.") for b in backends):
        return []
    return [
        Warning(
            "The signed-cookie session engine stores the session in the browser: the user's "
            "Keyrunes token would travel in the cookie (signed, not encrypted).",
            hint="Use a database or cache session engine.",
            id=_ID + "W030",
        )
    ]


def _uses_org_keys() -> bool:
    # The organization-key DRF class says so explicitly; the middleware serves
    # bearer tokens too, so its presence alone is no sign that keys are expected.
    drf = getattr(settings, "REST_FRAMEWORK", None) or {}
    classes = drf.get("DEFAULT_AUTHENTICATION_CLASSES", ()) if isinstance(drf, Mapping) else ()
    return _ORG_KEY_DRF_CLASS in classes


def _check_org_key_binding(user: Mapping[str, Any]) -> list[CheckMessage]:
    if user.get("ORGANIZATION_SCOPE") is not None or user.get("SERVICE_ACCOUNT") is not None:
        return []
    if not _uses_org_keys():
        return []
    return [
        Warning(
            "Organization keys are refused: this service's organization cannot be established "
            "(no ORGANIZATION_SCOPE and no SERVICE_ACCOUNT).",
            hint="Set KEYRUNES['ORGANIZATION_SCOPE'] to your organization's id, or configure "
            "SERVICE_ACCOUNT so it is looked up by NAMESPACE. Bearer tokens are not affected.",
            id=_ID + "W031",
        )
    ]


@register("keyrunes")
def check_request_path(**kwargs: Any) -> list[CheckMessage]:
    """Checks of the settings the bearer-token and organization-key path reads."""
    user = getattr(settings, "KEYRUNES", None)
    if not isinstance(user, Mapping):
        return []  # reported by check_settings
    messages: list[CheckMessage] = []
    messages += _check_scope(user.get("ORGANIZATION_SCOPE"))
    messages += _check_exempt_paths(user.get("EXEMPT_PATHS", ()))
    messages += _check_signing_key(user.get("CACHE_SIGNING_KEY"))
    messages += _check_middleware_order()
    messages += _check_session_engine(user)
    messages += _check_org_key_binding(user)
    return messages


@register("keyrunes")
def check_access_settings(
    *,
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """``STATELESS_USERS`` (E080) and ``API_PATH_PREFIXES`` (E081)."""
    user = getattr(settings, "KEYRUNES", None)
    if not isinstance(user, Mapping):
        return []  # E012 (or nothing configured, which is the defaults)
    messages: list[CheckMessage] = []
    stateless = user.get("STATELESS_USERS", DEFAULTS["STATELESS_USERS"])
    if not isinstance(stateless, bool):
        messages.append(
            Error(
                f"KEYRUNES['STATELESS_USERS'] = {stateless!r} must be True or False.",
                id=_ID + "E080",
            )
        )
    prefixes = user.get("API_PATH_PREFIXES", DEFAULTS["API_PATH_PREFIXES"])
    entries = [prefixes] if isinstance(prefixes, str) else prefixes
    # An empty prefix would make every path an API path.
    if not isinstance(entries, (list, tuple)) or not all(
        isinstance(p, str) and p.startswith("/") for p in entries
    ):
        messages.append(
            Error(
                f"KEYRUNES['API_PATH_PREFIXES'] = {prefixes!r} must be a path starting "
                "with '/' or a list of such paths.",
                id=_ID + "E081",
            )
        )
    return messages


#: A call that can run longer than this risks the worker being killed
#: mid-request (gunicorn's default worker timeout is 30 s).
MAX_WORST_CASE_SECONDS = 25.0


@register("keyrunes")
def check_client_limits(
    *,
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """``DEADLINE``, ``MAX_RESPONSE_BYTES``, the breaker settings, and one call's worst case."""
    from keyrunes_django.breaker import breaker_config
    from keyrunes_django.client import (
        normalise_deadline,
        normalise_max_bytes,
        worst_case_seconds,
    )

    user = getattr(settings, "KEYRUNES", None) or {}
    if not isinstance(user, Mapping):
        return []  # E012, from check_settings

    def get(key: str) -> Any:
        return user.get(key, DEFAULTS[key])

    messages: list[CheckMessage] = []
    checks: tuple[tuple[str, Callable[[], object]], ...] = (
        ("E040", lambda: normalise_deadline(get("DEADLINE"))),
        ("E041", lambda: normalise_max_bytes(get("MAX_RESPONSE_BYTES"))),
        ("E042", lambda: breaker_config(user)),
    )
    for check_id, validate in checks:
        try:
            validate()
        except ImproperlyConfigured as exc:
            messages.append(Error(str(exc), id=_ID + check_id))
    if messages:
        return messages
    try:
        worst = worst_case_seconds(get("TIMEOUT"), get("RETRIES"), get("BACKOFF"), get("DEADLINE"))
    except (ImproperlyConfigured, TypeError, ValueError):
        return []  # E003/E008 report the bad value
    if worst > MAX_WORST_CASE_SECONDS:
        return [
            Warning(
                f"One call to Keyrunes can take up to {worst:.1f} s (TIMEOUT x (1 + RETRIES) "
                f"+ back-off, capped by DEADLINE = {get('DEADLINE')!r}).",
                hint=f"Keep it under {MAX_WORST_CASE_SECONDS:.0f} s: a worker server such as "
                "gunicorn kills a request at 30 s. Lower DEADLINE (default 5 s).",
                id=_ID + "W040",
            )
        ]
    return []


@register("keyrunes")
def check_integration_settings(**kwargs: Any) -> list[CheckMessage]:
    """Settings of the health probe and the Channels middleware."""
    user = getattr(settings, "KEYRUNES", None)
    if not isinstance(user, Mapping):
        return []  # E012 is reported by check_settings
    messages: list[CheckMessage] = []
    timeout = user.get("HEALTH_TIMEOUT", DEFAULTS["HEALTH_TIMEOUT"])
    if not _is_number(timeout) or not timeout > 0:
        messages.append(
            Error(
                f"KEYRUNES['HEALTH_TIMEOUT'] = {timeout!r} must be a number of seconds > 0.",
                id=_ID + "E070",
            )
        )
    query = user.get("CHANNELS_QUERY_STRING_TOKEN", DEFAULTS["CHANNELS_QUERY_STRING_TOKEN"])
    if not isinstance(query, bool):
        messages.append(
            Error(
                f"KEYRUNES['CHANNELS_QUERY_STRING_TOKEN'] = {query!r} must be True or False.",
                id=_ID + "E071",
            )
        )
    return messages


#: Cache backends whose incr() is a read then a write: concurrent attempts get lost.
_NON_ATOMIC_CACHES = (
    "django.core.cache.backends.dummy.DummyCache",
    "django.core.cache.backends.db.DatabaseCache",
    "django.core.cache.backends.filebased.FileBasedCache",
)


def _check_throttle(user: Mapping[str, Any]) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for key in ("LOGIN_THROTTLE_FAILURES", "LOGIN_THROTTLE_WINDOW", "LOGIN_THROTTLE_IP_FAILURES"):
        value = user.get(key, DEFAULTS[key])
        if key == "LOGIN_THROTTLE_IP_FAILURES" and value is None:
            continue
        minimum = 1 if key == "LOGIN_THROTTLE_WINDOW" else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            messages.append(
                Error(
                    f"KEYRUNES[{key!r}] = {value!r} must be an integer >= {minimum}.",
                    hint="0 turns a limit off." if minimum == 0 else None,
                    id=_ID + "E060",
                )
            )
    alias = user.get("CACHE_ALIAS", DEFAULTS["CACHE_ALIAS"])
    backend = (getattr(settings, "CACHES", {}) or {}).get(alias, {}).get("BACKEND")
    failures = user.get("LOGIN_THROTTLE_FAILURES", DEFAULTS["LOGIN_THROTTLE_FAILURES"])
    ip_failures = user.get("LOGIN_THROTTLE_IP_FAILURES")
    throttling_on = bool(failures) or bool(ip_failures)
    if backend in _NON_ATOMIC_CACHES and throttling_on:
        messages.append(
            Warning(
                f"The cache {alias!r} ({backend}) cannot count login attempts atomically: "
                "concurrent guesses can exceed the login throttle's limits.",
                hint="Point KEYRUNES['CACHE_ALIAS'] at Redis, Memcached or (one process) "
                "the local-memory cache.",
                id=_ID + "W060",
            )
        )
    return messages


def _check_registration(enabled: Any) -> list[CheckMessage]:
    if not isinstance(enabled, bool):
        return [
            Error(
                f"KEYRUNES['REGISTRATION_ENABLED'] = {enabled!r} must be True or False.",
                id=_ID + "E061",
            )
        ]
    if enabled:
        from keyrunes_django.backends import keyrunes_backend_path

        if keyrunes_backend_path() is None:
            return [
                Error(
                    "KEYRUNES['REGISTRATION_ENABLED'] is on, but no KeyrunesBackend is in "
                    "AUTHENTICATION_BACKENDS to sign new users in.",
                    hint="Add 'keyrunes_django.backends.KeyrunesBackend'.",
                    id=_ID + "E062",
                )
            ]
    return []
