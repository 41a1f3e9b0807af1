"""The Django authentication backend that logs users in against Keyrunes.

``KeyrunesBackend.authenticate`` sends the login name and password to
``POST /api/login``; the answer itself is the proof of identity. The remote
user is then mirrored onto a local user by the configured
:class:`~keyrunes_django.mapping.UserMapper`. A local password is never
checked, not even for users that exist only locally.

Failures follow Django's contract (``None``), with the reason logged and a
signal sent. When Keyrunes is unreachable the error is recorded on the request
(:func:`login_error`) so :class:`keyrunes_django.forms.KeyrunesAuthenticationForm`
can say so instead of "wrong password".

Every attempt is counted by :mod:`keyrunes_django.throttling` before Keyrunes
is asked. The token of a successful login reaches the session only through
``login()`` (the ``user_logged_in`` signal); it is never set on the user.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.signals import user_logged_in
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils.module_loading import import_string
from django.utils.translation import gettext, gettext_noop
from django.views.decorators.debug import sensitive_variables

from keyrunes_django import signals, throttling
from keyrunes_django.audit import client_ip
from keyrunes_django.claims import parse, read_claims
from keyrunes_django.client import get_client
from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.exceptions import (
    AuthenticationFailed,
    InvalidToken,
    KeyrunesError,
    KeyrunesHTTPError,
    KeyrunesProtocolError,
    MirrorRefused,
)
from keyrunes_django.identity import VerifiedIdentity
from keyrunes_django.mapping import get_mapper
from keyrunes_django.schemas import AuthResponse
from keyrunes_django.sessions import set_password_change_required, store_session_token

__all__ = [
    "SERVICE_UNAVAILABLE_MESSAGE",
    "KeyrunesBackend",
    "identity_from_login",
    "keyrunes_backend_path",
    "login_error",
]

logger = logging.getLogger(__name__)

#: English (it is a public constant others compare with); shown through ``gettext``.
SERVICE_UNAVAILABLE_MESSAGE = gettext_noop(
    "The authentication service is unavailable. Please try again later."
)

# Set on the request when a login failed for a reason the user should see.
_REQUEST_ERROR_ATTR = "_keyrunes_auth_error"


@dataclass(frozen=True)
class _LoginToken:
    token: str = field(repr=False)
    expires_at: datetime
    requires_password_change: bool


class _PendingTokens:
    """Login tokens waiting for ``login()`` of the user object ``authenticate()`` returned.

    Keyed by the object's identity and dropped when the object is garbage
    collected: the token never sits on the user (which may be cached or
    pickled), and a caller that authenticates without logging in (DRF Basic
    auth, a script) leaves nothing behind once it lets go of the user.
    Single dict operations only, so the weakref callback needs no lock.
    """

    def __init__(self) -> None:
        self._items: dict[int, tuple[weakref.ref[Any], _LoginToken]] = {}

    def put(self, user: Any, login_token: _LoginToken) -> None:
        key = id(user)
        items = self._items

        def forget(ref: weakref.ref[Any]) -> None:
            entry = items.get(key)
            if entry is not None and entry[0] is ref:
                items.pop(key, None)

        items[key] = (weakref.ref(user, forget), login_token)

    def pop(self, user: Any) -> _LoginToken | None:
        entry = self._items.get(id(user))
        if entry is None or entry[0]() is not user:
            return None
        self._items.pop(id(user), None)
        return entry[1]

    def __len__(self) -> int:
        return len(self._items)


_pending_tokens = _PendingTokens()


def login_error(request: HttpRequest | None) -> ValidationError | None:
    """The user-facing error of the last failed Keyrunes login on this request, if any."""
    error = getattr(request, _REQUEST_ERROR_ATTR, None) if request is not None else None
    return error if isinstance(error, ValidationError) else None


def _set_login_error(request: HttpRequest | None, error: ValidationError | None) -> None:
    if request is not None:
        setattr(request, _REQUEST_ERROR_ATTR, error)


def identity_from_login(response: AuthResponse) -> VerifiedIdentity:
    """The identity of a login answer, with expiry/issue times from its token.

    The token's claims are decoded without verifying the signature: they only
    supply timestamps. The login answer is the proof; its ``user`` is
    authoritative, and a token about someone else is a protocol error.
    """
    try:
        claims = read_claims(parse(response.token))
    except InvalidToken as exc:
        raise KeyrunesProtocolError("Keyrunes returned a login token that is not a JWT.") from exc
    user = response.user
    if claims.user_id != user.user_id or claims.namespace != user.namespace:
        raise KeyrunesProtocolError("Keyrunes returned a login token for another user.")
    identity = user.to_identity(source="login")
    return dataclasses.replace(identity, expires_at=claims.expires_at, issued_at=claims.issued_at)


class KeyrunesBackend(ModelBackend):
    """Authenticate against Keyrunes and mirror the user locally.

    Inherits Django's permission handling (``has_perm`` and friends) from
    :class:`~django.contrib.auth.backends.ModelBackend`, but never its local
    password check.
    """

    def _login_name(self, username: str | None, kwargs: dict[str, Any]) -> str | None:
        if username:
            return username
        username_field = get_user_model().USERNAME_FIELD
        for key in (username_field, "email", "identity"):
            value = kwargs.get(key)
            if isinstance(value, str) and value:
                return value
        return None

    @sensitive_variables("password")
    def authenticate(  # type: ignore[override]
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        namespace: str | None = None,
        **kwargs: Any,
    ) -> AbstractBaseUser | None:
        """Log in with Keyrunes; ``username`` may be a username or an email."""
        _set_login_error(request, None)
        login_name = self._login_name(username, kwargs)
        if not login_name or not password:
            return None
        ns = namespace or str(keyrunes_settings.NAMESPACE)

        try:
            # Counted before the remote call, so concurrent guesses cannot overtake it.
            attempt = throttling.acquire_login(login_name, client_ip(request), namespace=ns)
        except throttling.LoginThrottled as exc:
            self._failed(request, login_name, ns, "throttled")
            _set_login_error(request, exc)
            return None

        with attempt:
            try:
                response = get_client().login(login_name, password, namespace=ns)
            except AuthenticationFailed:
                self._failed(request, login_name, ns, "invalid_credentials")
                return None
            except KeyrunesHTTPError as exc:
                # 400/422 from the login route: the request was refused, not the service down.
                self._failed(request, login_name, ns, f"rejected_{exc.status_code}")
                return None
            except KeyrunesError as exc:
                attempt.not_a_failure()
                self._service_error(request, exc)
                return None
            attempt.succeeded()
        return self.user_from_auth_response(request, response, login_name=login_name)

    def user_from_auth_response(
        self, request: HttpRequest | None, response: AuthResponse, *, login_name: str
    ) -> AbstractBaseUser | None:
        """The mirrored local user of a login (or registration) answer, ready for ``login()``.

        Refusals (mapper, inactive user) return ``None`` with the reason logged
        and signalled. The answer's token is held for the ``user_logged_in``
        signal, which moves it into the session; it is never put on the user.
        """
        try:
            identity = identity_from_login(response)
        except KeyrunesProtocolError as exc:
            self._service_error(request, exc)
            return None
        try:
            result = get_mapper().mirror(identity)
        except MirrorRefused as exc:
            logger.warning(
                "Keyrunes user %s:%s not mirrored: %s (%s)",
                identity.namespace,
                identity.user_id,
                exc.reason,
                exc.message,
            )
            self._failed(request, login_name, identity.namespace, exc.reason)
            return None

        user = result.user
        if not self.user_can_authenticate(cast(Any, user)):
            self._failed(request, login_name, identity.namespace, "inactive")
            return None
        # identity_from_login always takes the expiry from the token.
        expires_at = cast(datetime, identity.expires_at)
        login_token = _LoginToken(response.token, expires_at, response.requires_password_change)
        _pending_tokens.put(user, login_token)
        signals.login_succeeded.send(
            sender=type(self), user=user, identity=identity, request=request
        )
        logger.info(
            "Keyrunes login of %s:%s as local user pk=%s (created=%s, changed=%s)",
            identity.namespace,
            identity.user_id,
            user.pk,
            result.created,
            result.changed,
        )
        return user

    @sensitive_variables("password")
    async def aauthenticate(  # type: ignore[override]
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        namespace: str | None = None,
        **kwargs: Any,
    ) -> AbstractBaseUser | None:
        """Async :meth:`authenticate`; never falls back to a local password check."""
        return await sync_to_async(self.authenticate, thread_sensitive=True)(
            request, username=username, password=password, namespace=namespace, **kwargs
        )

    def _failed(
        self, request: HttpRequest | None, login_name: str, namespace: str, reason: str
    ) -> None:
        # The login name may be a password typed in the wrong box: not logged here;
        # the audit receiver logs its hash.
        logger.info("Keyrunes login refused: reason=%s namespace=%s", reason, namespace)
        signals.login_failed.send(
            sender=type(self),
            identity=login_name,
            reason=reason,
            request=request,
            namespace=namespace,
        )

    def _service_error(self, request: HttpRequest | None, exc: KeyrunesError) -> None:
        logger.error("Keyrunes login impossible: %s: %s", type(exc).__name__, exc)
        _set_login_error(
            request,
            ValidationError(gettext(SERVICE_UNAVAILABLE_MESSAGE), code="service_unavailable"),
        )
        signals.auth_service_error.send(
            sender=type(self), error=exc, operation="login", request=request, served_stale=False
        )


def keyrunes_backend_path() -> str | None:
    """The first entry of ``AUTHENTICATION_BACKENDS`` that is a :class:`KeyrunesBackend`."""
    for path in getattr(settings, "AUTHENTICATION_BACKENDS", ()):
        try:
            backend = import_string(path)
        except ImportError:
            continue
        if isinstance(backend, type) and issubclass(backend, KeyrunesBackend):
            return str(path)
    return None


def _store_login_token(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """Move the login token held for this user object into the (already cycled) session."""
    login_token = _pending_tokens.pop(user)
    if request is None or login_token is None or not hasattr(request, "session"):
        return
    store_session_token(request, login_token.token, login_token.expires_at)
    set_password_change_required(request, login_token.requires_password_change)


user_logged_in.connect(_store_login_token, dispatch_uid="keyrunes_django.backends.store_token")
