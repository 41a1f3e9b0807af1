"""Request middleware: bearer tokens and organization keys, and session-token refresh.

``MIDDLEWARE`` order::

    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "keyrunes_django.middleware.KeyrunesAuthenticationMiddleware",
    "keyrunes_django.middleware.KeyrunesSessionRefreshMiddleware",  # optional

Both classes work under WSGI and ASGI. Under ASGI, a warm request (its token
already in the per-process cache) is answered on the event loop; anything that
may touch the network or the database runs in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.contrib.auth import logout
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse

from keyrunes_django import signals
from keyrunes_django.cache import CacheEntry, LocalCache, credential_hash, now
from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.exceptions import (
    AuthenticationFailed,
    InvalidToken,
    KeyrunesError,
    KeyrunesUnavailable,
    MirrorRefused,
)
from keyrunes_django.identity import VerifiedIdentity
from keyrunes_django.responses import (
    forbidden_response,
    service_unavailable_response,
    unauthorized_response,
)
from keyrunes_django.tokens import (
    authenticate_organization_key,
    authenticate_token,
    authenticate_token_user,
    fail_open,
    peek_bearer_user,
    read_bearer,
)

__all__ = ["KeyrunesAuthenticationMiddleware", "KeyrunesSessionRefreshMiddleware"]

logger = logging.getLogger("keyrunes_django.auth")

GetResponse = Callable[[HttpRequest], HttpResponse]
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponse]]

ORG_KEY_META = "HTTP_X_ORGANIZATION_KEY"

# request.keyrunes between the two halves of an async cold request.
_PENDING = object()


def _set_user(request: HttpRequest, user: Any) -> None:
    request.user = user

    async def auser() -> Any:
        return user

    request.auser = auser


def _authenticated(request: HttpRequest, user: Any, principal: Any) -> None:
    _set_user(request, user)
    request.keyrunes = principal  # type: ignore[attr-defined]
    # A bearer header or an organization key is never sent by a browser on its
    # own, so such a request cannot be a cross-site forgery.
    request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]


class _Middleware:
    """Sync and async plumbing: :meth:`process` runs before the view; a response ends the request.

    Under ASGI :meth:`aprocess` runs instead, by default :meth:`process` in
    Django's thread-sensitive executor.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse | AsyncGetResponse) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        response = self.process(request)
        if response is not None:
            return response
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = await self.aprocess(request)
        if response is not None:
            return response
        return await self.get_response(request)  # type: ignore[no-any-return, misc]

    def process(self, request: HttpRequest) -> HttpResponse | None:
        raise NotImplementedError

    async def aprocess(self, request: HttpRequest) -> HttpResponse | None:
        return await sync_to_async(self.process)(request)


class KeyrunesAuthenticationMiddleware(_Middleware):
    """Authenticates ``Authorization: Bearer`` and ``X-Organization-Key`` requests.

    * no credential header: nothing changes (session users stay signed in) and
      ``request.keyrunes`` is ``None``;
    * a valid bearer token: ``request.user`` is the mirrored local user and
      ``request.keyrunes`` the :class:`~keyrunes_django.identity.VerifiedIdentity`;
    * a valid organization key (and no bearer token, which takes precedence):
      ``request.user`` is anonymous and ``request.keyrunes`` the
      :class:`~keyrunes_django.identity.OrganizationPrincipal`;
    * a refused credential: 401 with ``WWW-Authenticate``; a user refused by the
      mapping settings: 403; Keyrunes unavailable with no usable cached answer:
      503 (or anonymous, loudly logged, with ``FAIL_OPEN``).

    Other ``Authorization`` schemes (``Basic`` ...) are left alone.
    """

    def process(self, request: HttpRequest) -> HttpResponse | None:
        return self.authenticate(request)

    async def aprocess(self, request: HttpRequest) -> HttpResponse | None:
        header = request.META.get("HTTP_AUTHORIZATION")
        refusal: HttpResponse | None = None
        if header is None and ORG_KEY_META not in request.META:
            request.keyrunes = None  # type: ignore[attr-defined]
        elif not self._authenticate_warm(request, header):
            # Network first, in a thread of its own (concurrent cold requests must
            # not queue behind each other); then the mirror, in Django's
            # thread-sensitive executor like every other database access.
            refusal = await sync_to_async(self.authenticate, thread_sensitive=False)(
                request, mirror=False
            )
            if refusal is None and request.keyrunes is _PENDING:  # type: ignore[attr-defined]
                refusal = await sync_to_async(self.authenticate)(request)
        return refusal

    @staticmethod
    def _authenticate_warm(request: HttpRequest, header: str | None) -> bool:
        # Per-process cache only: no I/O, so it may run on the event loop.
        found = peek_bearer_user(header)
        if found is None:
            return False
        _authenticated(request, *found)
        return True

    def authenticate(self, request: HttpRequest, *, mirror: bool = True) -> HttpResponse | None:
        """Authenticate ``request`` in place; a response means it is refused.

        With ``mirror=False`` a verified token is only verified (no database
        access) and ``request.keyrunes`` is left as a pending marker for a
        second call that mirrors the user from the now warm cache.
        """
        if self._authenticate_warm(request, request.META.get("HTTP_AUTHORIZATION")):
            return None
        request.keyrunes = None  # type: ignore[attr-defined]
        scheme = "Bearer"
        try:
            token = read_bearer(request.META.get("HTTP_AUTHORIZATION"), request=request)
            if token is not None:
                if not mirror:
                    authenticate_token(token, request=request)
                    request.keyrunes = _PENDING  # type: ignore[attr-defined]
                    return None
                user, identity = authenticate_token_user(token, request=request)
                _authenticated(request, user, identity)
                return None
            raw_key = request.META.get(ORG_KEY_META)
            if raw_key is not None:
                scheme = "OrganizationKey"
                principal = authenticate_organization_key(raw_key, request=request)
                _authenticated(request, AnonymousUser(), principal)
        except InvalidToken as exc:
            return unauthorized_response(
                request, reason=exc.reason, description=exc.message, scheme=scheme
            )
        except MirrorRefused as exc:
            return forbidden_response(
                request, reason=exc.reason, description="This user may not use this service."
            )
        except KeyrunesUnavailable as exc:
            if fail_open(exc, request):
                _set_user(request, AnonymousUser())
                return None
            return service_unavailable_response(request)
        return None


# ------------------------------------------------------------------ session refresh

#: After a failed refresh attempt (Keyrunes unreachable), wait this long before
#: trying again for the same session token.
REFRESH_RETRY_INTERVAL = 30.0

_refresh_backoff = LocalCache(10_000)


def _exp_of(token: str) -> datetime | None:
    import jwt

    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.InvalidTokenError:
        return None
    if type(exp) is not int:
        return None
    return datetime.fromtimestamp(exp, tz=timezone.utc)


def refresh_session_token(request: HttpRequest) -> str:
    """Refresh the session's Keyrunes token if it expires within ``SESSION_REFRESH_MARGIN``.

    Returns what happened: ``"skipped"``, ``"refreshed"``, ``"logged_out"``
    (Keyrunes refused the token) or ``"deferred"`` (unreachable; kept for a
    later request).
    """
    from keyrunes_django.client import get_client
    from keyrunes_django.sessions import (
        get_session_token,
        get_session_token_expiry,
        store_session_token,
    )

    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return "skipped"
    if isinstance(getattr(request, "keyrunes", None), VerifiedIdentity):
        return "skipped"  # a bearer-token request; its session is not involved
    token = get_session_token(request)
    expiry = get_session_token_expiry(request)
    if token is None or expiry is None:
        return "skipped"
    at = now()
    if expiry.timestamp() - at > float(keyrunes_settings.SESSION_REFRESH_MARGIN):
        return "skipped"
    digest = credential_hash(token)
    retry = _refresh_backoff.get(digest)
    if retry is not None and at < retry.fresh_until:
        return "deferred"
    client = get_client()
    try:
        new_token = client.refresh_token(token, body_token=token).token
    except AuthenticationFailed:
        return _refused_logout(request, digest, "refresh_refused")
    except KeyrunesError as exc:
        return _defer_refresh(request, digest, exc, at)
    store_session_token(
        request,
        new_token,
        _exp_of(new_token) or datetime.fromtimestamp(at + 3600, tz=timezone.utc),
    )
    # §12.6: refresh re-signs the old claims; re-read the user so groups follow the server.
    try:
        identity = client.me(new_token).to_identity(source="remote")
    except AuthenticationFailed:
        return _refused_logout(request, digest, "user_refused")
    except KeyrunesError as exc:
        # The new token is stored; the groups are re-read at the next refresh.
        _report_refresh_error(request, exc)
        return "refreshed"
    from keyrunes_django.mapping import get_mapper

    try:
        mirrored = get_mapper().mirror(identity).user
    except MirrorRefused as exc:
        return _refused_logout(request, digest, exc.reason)
    if mirrored.pk != user.pk:
        return _refused_logout(request, digest, "user_changed")
    _set_user(request, mirrored)
    return "refreshed"


def _refused_logout(request: HttpRequest, digest: str, reason: str) -> str:
    logger.warning(
        "keyrunes refused the session's token (%s); logging the user out",
        reason,
        extra={"event": "session_refresh_refused", "reason": reason, "credential_hash": digest},
    )
    signals.credential_rejected.send(
        sender=KeyrunesSessionRefreshMiddleware,
        reason=reason,
        request=request,
        credential_hash=digest,
    )
    logout(request)
    return "logged_out"


def _report_refresh_error(request: HttpRequest, exc: KeyrunesError) -> None:
    logger.warning(
        "keyrunes session refresh failed (%s); retrying on a later request",
        exc,
        extra={"event": "auth_service_error", "operation": "refresh_session"},
    )
    signals.auth_service_error.send(
        sender=KeyrunesSessionRefreshMiddleware,
        error=exc,
        operation="refresh_session",
        request=request,
        served_stale=True,
    )


def _defer_refresh(request: HttpRequest, digest: str, exc: KeyrunesError, at: float) -> str:
    _report_refresh_error(request, exc)
    until = at + REFRESH_RETRY_INTERVAL
    _refresh_backoff.set(
        digest, CacheEntry(value=None, stored_at=at, fresh_until=until, stale_until=until)
    )
    return "deferred"


class KeyrunesSessionRefreshMiddleware(_Middleware):
    """Keeps a logged-in session's Keyrunes token fresh (``POST /api/refresh-token``).

    When the stored token expires within ``SESSION_REFRESH_MARGIN`` seconds it is
    refreshed, ``/api/me`` is re-read and the user re-mirrored (so groups follow
    the server). Keyrunes refusing the token logs the user out; Keyrunes being
    unreachable keeps the session and retries on a later request.
    """

    def process(self, request: HttpRequest) -> HttpResponse | None:
        refresh_session_token(request)
        return None
