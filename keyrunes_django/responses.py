"""The one builder of 401/403/503 answers: refused credentials, refused users, outages.

Every answer has one body shape, ``{"error": ..., "reason": ..., "detail": ...}``,
as JSON for API clients and plain text for browsers, by the one rule of
:func:`keyrunes_django.negotiation.is_api_request` (an ``Accept`` naming JSON
or HTML decides; otherwise a credential header or an API path means JSON). A
401 always carries an RFC 6750 ``WWW-Authenticate`` challenge naming the
reason, e.g.
``Bearer realm="keyrunes", error="invalid_token", error_description="The token has expired."``.
Descriptions are our own fixed texts, never echoes of the credential or of
the server's error body. They arrive in English (or lazily translated) and the
body's ``detail`` is given in the active language; the ``reason`` code and the
challenge's ``error_description`` (US-ASCII by RFC 6750) stay in English.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import patch_vary_headers
from django.utils.functional import Promise
from django.utils.translation import gettext, override

from keyrunes_django.credentials import gettext_noop
from keyrunes_django.negotiation import is_api_request

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

__all__ = [
    "NOT_AUTHENTICATED",
    "REALM",
    "UNAVAILABLE",
    "authentication_required_response",
    "forbidden_response",
    "localized",
    "refusal_response",
    "service_unavailable_response",
    "unauthorized_response",
    "wants_json",
    "www_authenticate",
]

REALM = "keyrunes"

#: Default details (English; translated when an answer is built).
NOT_AUTHENTICATED = gettext_noop("Authentication credentials were not provided.")
UNAVAILABLE = gettext_noop("The authentication service is unavailable; try again later.")


def wants_json(request: HttpRequest) -> bool:
    """Whether the answer's body is JSON: the caller is an API client (``is_api_request``)."""
    return is_api_request(request)


def localized(description: StrOrPromise) -> str:
    """``description`` in the active language (a text without a translation stays as is)."""
    return gettext(str(description))


def _english(description: StrOrPromise) -> str:
    # A lazy text rendered with translations off gives its English source.
    if isinstance(description, Promise):
        with override(None):
            return str(description)
    return description


def _quoted(value: str) -> str:
    # An RFC 7230 quoted-string: printable ASCII only, with \ and " escaped.
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def www_authenticate(
    description: StrOrPromise | None = None,
    *,
    scheme: str = "Bearer",
    error: str | None = "invalid_token",
) -> str:
    """The ``WWW-Authenticate`` challenge value; ``error=None`` gives a bare challenge."""
    parts = [f"realm={_quoted(REALM)}"]
    if error:
        parts.append(f"error={_quoted(error)}")
        if description:
            parts.append(f"error_description={_quoted(_english(description))}")
    return f"{scheme} " + ", ".join(parts)


_STATUS_TEXT = {401: "Unauthorized", 403: "Forbidden", 503: "Service Unavailable"}


def refusal_response(
    request: HttpRequest,
    status: int,
    *,
    error: str,
    reason: str,
    description: StrOrPromise,
) -> HttpResponse:
    """An answer of the one body shape, JSON or plain text by the ``Accept`` header.

    The refusal was already logged where it was decided, so Django's request
    logger is told not to log it a second time.
    """
    description = localized(description)
    payload = {"error": error, "reason": reason, "detail": description}
    response: HttpResponse
    if wants_json(request):
        response = JsonResponse(payload, status=status)
    else:
        response = HttpResponse(
            f"{status} {_STATUS_TEXT.get(status, '')}: {description}\n",
            status=status,
            content_type="text/plain; charset=utf-8",
        )
    patch_vary_headers(response, ["Accept"])
    response["Cache-Control"] = "no-store"
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def unauthorized_response(
    request: HttpRequest,
    *,
    reason: str,
    description: StrOrPromise,
    scheme: str = "Bearer",
) -> HttpResponse:
    """401 for a refused credential; ``reason`` is the machine-readable code."""
    response = refusal_response(
        request, 401, error="invalid_token", reason=reason, description=description
    )
    response["WWW-Authenticate"] = www_authenticate(description, scheme=scheme)
    return response


def authentication_required_response(
    request: HttpRequest,
    *,
    description: StrOrPromise = NOT_AUTHENTICATED,
) -> HttpResponse:
    """401 for a caller that sent no credential (RFC 6750: a challenge without an error)."""
    response = refusal_response(
        request,
        401,
        error="not_authenticated",
        reason="not_authenticated",
        description=description,
    )
    response["WWW-Authenticate"] = www_authenticate(error=None)
    return response


def forbidden_response(
    request: HttpRequest, *, reason: str, description: StrOrPromise
) -> HttpResponse:
    """403 for an authenticated caller who is not allowed."""
    return refusal_response(request, 403, error="forbidden", reason=reason, description=description)


def service_unavailable_response(
    request: HttpRequest,
    *,
    description: StrOrPromise = UNAVAILABLE,
    retry_after: float | None = 5,
) -> HttpResponse:
    """503 when Keyrunes cannot be asked and no usable cached answer exists."""
    response = refusal_response(
        request,
        503,
        error="service_unavailable",
        reason="keyrunes_unavailable",
        description=description,
    )
    if retry_after is not None:
        response["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response
