"""The ``KEYRUNES`` settings dict, read lazily.

Every attribute of :data:`keyrunes_settings` is looked up in ``settings.KEYRUNES``
at the moment it is read, so ``override_settings(KEYRUNES=...)`` takes effect at
once and nothing is computed at import time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

#: Every supported key with its default. Keep in step with the settings reference
#: (docs/reference/settings.md; tests/test_readme.py checks every key has a row).
DEFAULTS: dict[str, Any] = {
    # Where Keyrunes lives and which tenant this service belongs to.
    "BASE_URL": None,
    "NAMESPACE": "public",
    "ORGANIZATION_KEY": None,
    "ORGANIZATION_SCOPE": None,
    # Token verification.
    "VERIFICATION_MODE": "auto",  # "auto" | "local" | "remote"
    "JWT_SECRET": None,
    "JWT_ISSUER": "keyrunes",
    "JWT_LEEWAY": 10,
    # The class that runs the bearer-token / organization-key request path.
    "AUTHENTICATOR_CLASS": "keyrunes_django.tokens.TokenAuthenticator",
    # HTTP behaviour.
    "TIMEOUT": (3.05, 10.0),  # seconds per socket operation: a number or (connect, read)
    "RETRIES": 2,
    "BACKOFF": 0.25,
    "DEADLINE": 5.0,  # seconds for a whole call: connect, reads, retries and back-off
    "MAX_RESPONSE_BYTES": 1024 * 1024,  # counted after decompression
    "BREAKER_FAILURES": 5,  # consecutive failures that open the circuit breaker; 0 = off
    "BREAKER_COOLDOWN": 10.0,  # seconds the breaker stays open before one probe call
    "VERIFY_SSL": True,
    # Caching and outage policy.
    "CACHE_ALIAS": "default",
    "CACHE_TTL": 300,
    "NEGATIVE_CACHE_TTL": 30,
    "LOCAL_CACHE_SIZE": 10_000,
    "PERMISSION_CACHE_TTL": 60,
    "STALE_IF_ERROR": 300,
    "FAIL_OPEN": False,
    # Key of the HMAC that authenticates shared-cache records; None derives one from SECRET_KEY.
    "CACHE_SIGNING_KEY": None,
    # Admin API access for commands and sync.
    "SERVICE_ACCOUNT": None,
    # Session tokens.
    "SESSION_REFRESH_MARGIN": 300,
    # Revocation: how often a remembered token is re-checked against the shared
    # cache, and how often a session re-reads its user from Keyrunes (/api/me).
    "REVOCATION_CHECK_INTERVAL": 2.0,
    "SESSION_RECHECK_INTERVAL": 300,
    # Password flows: show the reset link the server leaks when mail is off (demo only).
    "SHOW_RESET_LINK": False,
    # Mapping remote users and groups onto Django models.
    "USER_MAPPER": "keyrunes_django.mapping.UserMapper",
    "USER_ATTR_MAP": {"username": "username", "email": "email"},
    "GROUP_MAP": {},
    "MIRROR_GROUPS": True,
    "MIRROR_GROUPS_EXCEPT": (),
    "FLAGS_BY_GROUP": None,
    "REQUIRE_GROUP": None,
    "DENY_GROUP": None,
    "ALWAYS_UPDATE_USER": True,
    "LINK_EXISTING_USERS": False,
    "ADOPT_GROUPS": (),  # local-only group names the mirror may take over
    # Declared groups and policies (policy registry).
    "GROUPS": (),
    "POLICIES": (),
    # Paths whose anonymous callers get 401 JSON instead of a login redirect.
    "API_PATH_PREFIXES": ("/api/",),
    # URL patterns (regular expressions matched against request.path) the bearer
    # middleware leaves alone: a stale token sent to them is not a 401.
    "EXEMPT_PATHS": (),
    # Bearer requests get a StatelessUser (no database row) instead of the mirrored user.
    "STATELESS_USERS": False,
    # Login throttling.
    "LOGIN_THROTTLE_FAILURES": 5,
    "LOGIN_THROTTLE_WINDOW": 300,
    "LOGIN_THROTTLE_IP_FAILURES": None,  # per-IP limit; None = 4 x LOGIN_THROTTLE_FAILURES, 0 = off
    # Integrations: readiness probe timeout (seconds); websocket tokens in the query string.
    "HEALTH_TIMEOUT": 2.0,
    "CHANNELS_QUERY_STRING_TOKEN": False,
    # Self-registration through POST /api/register (RegistrationView); 404 while off.
    "REGISTRATION_ENABLED": False,
}

#: Shortest secret accepted for ``JWT_SECRET`` and ``CACHE_SIGNING_KEY`` (HS256 wants 256 bits).
MIN_SECRET_BYTES = 32

#: Keys whose value may be a dotted import path to a class or callable.
IMPORT_STRINGS: frozenset[str] = frozenset({"USER_MAPPER", "AUTHENTICATOR_CLASS"})

#: Keys people bring from the SDK or older notes, with what to do instead.
REMOVED_SETTINGS: dict[str, str] = {
    "API_KEY": "Keyrunes reads no API key; use ORGANIZATION_KEY.",
    "ADMIN_KEY": "Keyrunes has no admin key; configure SERVICE_ACCOUNT.",
    "JWT_EXPIRATION": "The token lifetime is fixed by the server (1 hour).",
    "JWT_ALGORITHM": "The algorithm is pinned to HS256 and cannot be changed.",
    "ORG_KEY": "Renamed to ORGANIZATION_KEY.",
}


def unknown_key_message(key: str) -> str:
    """Why ``key`` is not accepted in ``KEYRUNES`` (with a hint for removed keys)."""
    if key in REMOVED_SETTINGS:
        return f"KEYRUNES[{key!r}] is not supported: {REMOVED_SETTINGS[key]}"
    return f"KEYRUNES[{key!r}] is not a known setting."


class KeyrunesSettings:
    """Attribute access to ``settings.KEYRUNES`` merged over :data:`DEFAULTS`."""

    def __init__(self) -> None:
        # Caches keyed on the identity of the user's dict, which
        # override_settings replaces; they never outlive a settings change.
        # The dict itself, not its id(): a new dict may reuse a freed one's id.
        self._validated: Mapping[str, Any] | None = None
        self._imports: dict[tuple[str, str], Any] = {}

    @property
    def user_settings(self) -> Mapping[str, Any]:
        from django.conf import settings

        value = getattr(settings, "KEYRUNES", None)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ImproperlyConfigured("settings.KEYRUNES must be a dict.")
        return value

    def unknown_keys(self) -> list[str]:
        return sorted(key for key in self.user_settings if key not in DEFAULTS)

    def _validate(self, user: Mapping[str, Any]) -> None:
        if self._validated is user:
            return
        unknown = sorted(key for key in user if key not in DEFAULTS)
        if unknown:
            raise ImproperlyConfigured(" ".join(unknown_key_message(k) for k in unknown))
        self._validated = user

    def raw(self, name: str) -> Any:
        """The configured value without import-string resolution."""
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid Keyrunes setting: {name!r}")
        user = self.user_settings
        self._validate(user)
        return user.get(name, DEFAULTS[name])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        value = self.raw(name)
        if name in IMPORT_STRINGS and isinstance(value, str):
            return self._import(name, value)
        return value

    def _import(self, name: str, path: str) -> Any:
        key = (name, path)
        if key not in self._imports:
            try:
                self._imports[key] = import_string(path)
            except ImportError as exc:
                raise ImproperlyConfigured(
                    f"KEYRUNES[{name!r}] = {path!r} could not be imported: {exc}"
                ) from exc
        return self._imports[key]

    @property
    def verification_mode(self) -> str:
        """``"local"`` or ``"remote"``; ``"auto"`` picks local when a secret is set."""
        mode = str(self.raw("VERIFICATION_MODE"))
        if mode == "auto":
            return "local" if self.raw("JWT_SECRET") else "remote"
        return mode


keyrunes_settings = KeyrunesSettings()


class Clock:
    """The package's one wall clock (seconds since the epoch).

    Every module reads the time through :data:`clock`, so a test moves time for
    all of them by patching ``clock.now``.
    """

    def now(self) -> float:
        return time.time()


clock = Clock()

_hooks: list[Callable[[], None]] = []
_hooks_lock = threading.Lock()

#: Settings whose change resets every per-process singleton of the package.
WATCHED_SETTINGS = frozenset({"KEYRUNES", "CACHES", "SECRET_KEY"})


def on_settings_changed(hook: Callable[[], None]) -> Callable[[], None]:
    """Register ``hook`` to run whenever a watched setting changes (decorator).

    Per-process state built from settings (caches, clients, memos) registers a
    reset here, so ``override_settings`` and a settings reload never leave a
    stale copy behind.
    """
    with _hooks_lock:
        if hook not in _hooks:
            _hooks.append(hook)
    return hook


def settings_changed() -> None:
    """Run every registered hook (also what the ``setting_changed`` receiver does)."""
    for hook in list(_hooks):
        hook()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in WATCHED_SETTINGS:
        settings_changed()


def _connect() -> None:
    from django.core.signals import setting_changed

    setting_changed.connect(_on_setting_changed, dispatch_uid="keyrunes_django.conf")


_connect()
