"""DRF authentication classes for Keyrunes bearer tokens and organization keys.

::

    REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": [
            "keyrunes_django.drf.authentication.KeyrunesTokenAuthentication",
            "keyrunes_django.drf.authentication.KeyrunesOrganizationKeyAuthentication",
        ],
    }

They make one call each to the middleware's
:class:`~keyrunes_django.tokens.TokenAuthenticator`. A refused credential gives 401 with a
``WWW-Authenticate`` challenge (never 403, because both classes implement
``authenticate_header``); Keyrunes being unavailable with no usable cached
answer gives :class:`ServiceUnavailable` (503).
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from keyrunes_django.credentials import USER_REFUSED
from keyrunes_django.exceptions import InvalidToken, KeyrunesUnavailable, MirrorRefused
from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity
from keyrunes_django.responses import localized, www_authenticate
from keyrunes_django.tokens import Credential, TokenAuthenticator, get_authenticator
from keyrunes_django.users import OrganizationUser

__all__ = [
    "KeyrunesOrganizationKeyAuthentication",
    "KeyrunesTokenAuthentication",
    "OrganizationUser",
    "ServiceUnavailable",
]

# Where a refusal is remembered for authenticate_header(), which DRF asks the
# first configured class, whichever class refused.
_FAILURE_ATTR = "_keyrunes_auth_failure"


class ServiceUnavailable(exceptions.APIException):
    """Keyrunes could not be asked and no usable cached answer exists."""

    status_code = 503
    default_detail = gettext_lazy("The authentication service is unavailable; try again later.")
    default_code = "keyrunes_unavailable"

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__()
        #: Seconds, sent as ``Retry-After`` by DRF's exception handler.
        self.wait = retry_after or 5


class _KeyrunesAuthentication(BaseAuthentication):
    """One credential kind through the shared authenticator."""

    kind = ""

    def get_authenticator(self) -> TokenAuthenticator:
        return get_authenticator()

    def read(self, auth: TokenAuthenticator, request: Any) -> Credential | None:
        raise NotImplementedError

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        django_request = request._request
        auth = self.get_authenticator()
        try:
            if self.kind == "token":
                warm = auth.warm(auth.get_header(django_request))
                if warm is not None:
                    return warm.user, warm.principal
            credential = self.read(auth, django_request)
            if credential is None:
                return None
            result = auth.finish(auth.verify(credential, django_request), django_request)
        except InvalidToken as exc:
            setattr(django_request, _FAILURE_ATTR, (exc.scheme, exc.message))
            raise exceptions.AuthenticationFailed(localized(exc.message), code=exc.reason) from None
        except MirrorRefused as exc:
            raise exceptions.PermissionDenied(localized(USER_REFUSED), code=exc.reason) from None
        except KeyrunesUnavailable as exc:
            if auth.fail_open(exc, django_request):
                return None
            raise ServiceUnavailable(getattr(exc, "retry_after", None)) from None
        return result.user, result.principal

    def authenticate_header(self, request: Request) -> str:
        failure = getattr(request._request, _FAILURE_ATTR, None)
        if failure is not None:
            return www_authenticate(failure[1], scheme=failure[0])
        return www_authenticate(scheme=self.scheme, error=None)

    scheme = "Bearer"


class KeyrunesTokenAuthentication(_KeyrunesAuthentication):
    """``Authorization: Bearer <Keyrunes JWT>`` -> (mirrored local user, VerifiedIdentity)."""

    kind = "token"
    scheme = "Bearer"

    def read(self, auth: TokenAuthenticator, request: Any) -> Credential | None:
        return auth.read_token(request)

    def authenticate(self, request: Request) -> tuple[Any, VerifiedIdentity] | None:
        return super().authenticate(request)


class KeyrunesOrganizationKeyAuthentication(_KeyrunesAuthentication):
    """``X-Organization-Key: <uuid>`` -> (:class:`OrganizationUser`, OrganizationPrincipal)."""

    kind = "orgkey"
    scheme = "OrganizationKey"

    def read(self, auth: TokenAuthenticator, request: Any) -> Credential | None:
        if auth.read_token(request) is not None:
            return None  # a bearer token takes precedence, as in the middleware
        return auth.read_key(request)

    def authenticate(
        self, request: Request
    ) -> tuple[OrganizationUser, OrganizationPrincipal] | None:
        return super().authenticate(request)
