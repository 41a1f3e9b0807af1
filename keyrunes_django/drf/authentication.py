"""DRF authentication classes for Keyrunes bearer tokens and organization keys.

::

    REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": [
            "keyrunes_django.drf.authentication.KeyrunesTokenAuthentication",
            "keyrunes_django.drf.authentication.KeyrunesOrganizationKeyAuthentication",
        ],
    }

They share the middleware's verification and cache
(:mod:`keyrunes_django.tokens`). A refused credential gives 401 with a
``WWW-Authenticate`` challenge (never 403, because both classes implement
``authenticate_header``); Keyrunes being unavailable with no usable cached
answer gives :class:`ServiceUnavailable` (503).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from keyrunes_django.exceptions import InvalidToken, KeyrunesUnavailable, MirrorRefused
from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity
from keyrunes_django.responses import www_authenticate
from keyrunes_django.tokens import (
    authenticate_organization_key,
    authenticate_token_user,
    fail_open,
    peek_bearer_user,
    read_bearer,
)

__all__ = [
    "KeyrunesOrganizationKeyAuthentication",
    "KeyrunesTokenAuthentication",
    "OrganizationUser",
    "ServiceUnavailable",
]

_FAILURE_ATTR = "_keyrunes_auth_failure"


class ServiceUnavailable(exceptions.APIException):
    """Keyrunes could not be asked and no usable cached answer exists."""

    status_code = 503
    default_detail = "The authentication service is unavailable; try again later."
    default_code = "keyrunes_unavailable"


class OrganizationUser(AnonymousUser):
    """``request.user`` for a request authenticated by an organization key.

    It is *authenticated* (DRF's ``IsAuthenticated`` lets it through: a valid
    key is a known caller) but it is no Django user: no pk, no local
    permissions, never staff. Views that serve users only should check
    ``request.auth`` (an :class:`OrganizationPrincipal`) or use the
    authorization helpers, which tell the two apart.
    """

    def __init__(self, principal: OrganizationPrincipal) -> None:
        self.principal = principal

    @property
    def organization_id(self) -> int | None:
        return self.principal.organization_id

    @property
    def is_anonymous(self) -> bool:  # type: ignore[override]
        return False

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True

    def __str__(self) -> str:
        return f"organization:{self.principal.organization_id or 'unknown'}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrganizationUser) and other.principal == self.principal

    def __hash__(self) -> int:
        return hash(self.principal)


def _refuse(request: Request, error: InvalidToken, scheme: str) -> exceptions.AuthenticationFailed:
    setattr(request._request, _FAILURE_ATTR, (scheme, error.message))
    return exceptions.AuthenticationFailed(error.message, code=error.reason)


def _challenge(request: Request, scheme: str) -> str:
    failure = getattr(request._request, _FAILURE_ATTR, None)
    if failure is not None and failure[0] == scheme:
        return www_authenticate(failure[1], scheme=scheme)
    return www_authenticate(scheme=scheme, error=None)


class KeyrunesTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <Keyrunes JWT>`` -> (mirrored local user, VerifiedIdentity)."""

    scheme = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, VerifiedIdentity] | None:
        django_request = request._request
        header = django_request.META.get("HTTP_AUTHORIZATION")
        warm = peek_bearer_user(header)
        if warm is not None:
            return warm
        try:
            token = read_bearer(header, request=django_request)
            if token is None:
                return None
            return authenticate_token_user(token, request=django_request)
        except InvalidToken as exc:
            raise _refuse(request, exc, self.scheme) from None
        except MirrorRefused as exc:
            raise exceptions.PermissionDenied(
                "This user may not use this service.", code=exc.reason
            ) from None
        except KeyrunesUnavailable as exc:
            if fail_open(exc, django_request):
                return None
            raise ServiceUnavailable() from None

    def authenticate_header(self, request: Request) -> str:
        return _challenge(request, self.scheme)


class KeyrunesOrganizationKeyAuthentication(BaseAuthentication):
    """``X-Organization-Key: <uuid>`` -> (:class:`OrganizationUser`, OrganizationPrincipal)."""

    scheme = "OrganizationKey"

    def authenticate(
        self, request: Request
    ) -> tuple[OrganizationUser, OrganizationPrincipal] | None:
        django_request = request._request
        raw = django_request.META.get("HTTP_X_ORGANIZATION_KEY")
        if raw is None:
            return None
        try:
            principal = authenticate_organization_key(raw, request=django_request)
        except InvalidToken as exc:
            raise _refuse(request, exc, self.scheme) from None
        except KeyrunesUnavailable as exc:
            if fail_open(exc, django_request):
                return None
            raise ServiceUnavailable() from None
        return OrganizationUser(principal), principal

    def authenticate_header(self, request: Request) -> str:
        return _challenge(request, self.scheme)
