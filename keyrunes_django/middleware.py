"""Request middleware: bearer tokens and organization keys, and session-token refresh.

``MIDDLEWARE`` order::

    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "keyrunes_django.middleware.KeyrunesAuthenticationMiddleware",
    "keyrunes_django.middleware.KeyrunesSessionRefreshMiddleware",  # optional

Both classes work under WSGI and ASGI. The authentication itself is
:class:`~keyrunes_django.tokens.TokenAuthenticator`'s; this module only turns
its outcome into ``request.user`` / ``request.keyrunes`` or into a 401, 403 or
503 answer (:mod:`keyrunes_django.responses`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve

from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.exceptions import InvalidToken, KeyrunesUnavailable, MirrorRefused
from keyrunes_django.responses import (
    forbidden_response,
    service_unavailable_response,
    unauthorized_response,
)
from keyrunes_django.sessions import refresh_session_token
from keyrunes_django.tokens import Authenticated, get_authenticator
from keyrunes_django.users import attach_user

__all__ = [
    "KeyrunesAuthenticationMiddleware",
    "KeyrunesSessionRefreshMiddleware",
    "keyrunes_exempt",
]

GetResponse = Callable[[HttpRequest], HttpResponse]
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponse]]
F = TypeVar("F", bound=Callable[..., Any])

_EXEMPT_ATTR = "keyrunes_exempt"


def keyrunes_exempt(view: F) -> F:
    """Mark a view whose requests a refused or unverifiable credential does not block.

    The request goes on unauthenticated instead of getting a 401 or 503: for a
    login page or a health check that a client calls with a stale token.
    """

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return view(*args, **kwargs)

    setattr(wrapped, _EXEMPT_ATTR, True)
    return wrapped  # type: ignore[return-value]


def is_exempt(request: HttpRequest) -> bool:
    """Whether ``KEYRUNES["EXEMPT_PATHS"]`` or :func:`keyrunes_exempt` covers ``request``."""
    path = request.path_info
    for pattern in keyrunes_settings.EXEMPT_PATHS or ():
        if re.match(pattern, path):
            return True
    try:
        match = resolve(path, getattr(request, "urlconf", None))
    except Resolver404:
        return False
    return bool(getattr(match.func, _EXEMPT_ATTR, False))


def _authenticated(request: HttpRequest, result: Authenticated) -> None:
    attach_user(request, result.user)
    request.keyrunes = result.principal  # type: ignore[attr-defined]
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


_REFUSALS = (InvalidToken, MirrorRefused, KeyrunesUnavailable)


class KeyrunesAuthenticationMiddleware(_Middleware):
    """Authenticates ``Authorization: Bearer`` and ``X-Organization-Key`` requests.

    * no credential header: nothing changes (session users stay signed in) and
      ``request.keyrunes`` is ``None``;
    * a valid bearer token: ``request.user`` is the mirrored local user and
      ``request.keyrunes`` the :class:`~keyrunes_django.identity.VerifiedIdentity`;
    * a valid organization key (and no bearer token, which takes precedence):
      ``request.user`` is an :class:`~keyrunes_django.users.OrganizationUser`
      and ``request.keyrunes`` the
      :class:`~keyrunes_django.identity.OrganizationPrincipal`;
    * a refused credential: 401 with ``WWW-Authenticate``; a user refused by the
      mapping settings: 403; Keyrunes unavailable with no usable cached answer:
      503 with ``Retry-After`` (or anonymous, loudly logged, with ``FAIL_OPEN``);
    * on an exempt path (``EXEMPT_PATHS``, :func:`keyrunes_exempt`) a refusal or
      an outage leaves the request unauthenticated instead.

    Other ``Authorization`` schemes (``Basic`` ...) are left alone.
    """

    def process(self, request: HttpRequest) -> HttpResponse | None:
        request.keyrunes = None  # type: ignore[attr-defined]
        try:
            result = get_authenticator().authenticate(request)
        except _REFUSALS as exc:
            return self.refuse(request, exc)
        if result is not None:
            _authenticated(request, result)
        return None

    async def aprocess(self, request: HttpRequest) -> HttpResponse | None:
        request.keyrunes = None  # type: ignore[attr-defined]
        try:
            result = await get_authenticator().aauthenticate(request)
        except _REFUSALS as exc:
            return self.refuse(request, exc)
        if result is not None:
            _authenticated(request, result)
        return None

    def refuse(
        self, request: HttpRequest, exc: InvalidToken | MirrorRefused | KeyrunesUnavailable
    ) -> HttpResponse | None:
        """The answer to a refusal or an outage (None: go on unauthenticated)."""
        if is_exempt(request):
            # Unauthenticated, not the session's user: a refused credential
            # never falls back to another identity.
            attach_user(request, AnonymousUser())
            return None
        if isinstance(exc, InvalidToken):
            return unauthorized_response(
                request, reason=exc.reason, description=exc.message, scheme=exc.scheme
            )
        if isinstance(exc, MirrorRefused):
            return forbidden_response(
                request, reason=exc.reason, description="This user may not use this service."
            )
        if get_authenticator().fail_open(exc, request):
            attach_user(request, AnonymousUser())
            return None
        return service_unavailable_response(
            request, retry_after=getattr(exc, "retry_after", None) or 5
        )


class KeyrunesSessionRefreshMiddleware(_Middleware):
    """Keeps a signed-in session's Keyrunes token fresh and its user current.

    Refreshes the token before it expires, re-reads ``/api/me`` every
    ``SESSION_RECHECK_INTERVAL`` seconds, and logs out a revoked, deleted or
    refused user (see :func:`keyrunes_django.sessions.refresh_session_token`).
    Answers 503 when Keyrunes has been unreachable for longer than
    ``STALE_IF_ERROR`` past a due re-check.
    """

    def process(self, request: HttpRequest) -> HttpResponse | None:
        if refresh_session_token(request) == "unavailable" and not is_exempt(request):
            return service_unavailable_response(request)
        return None
