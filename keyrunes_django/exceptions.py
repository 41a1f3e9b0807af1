"""Errors raised by keyrunes-django.

Everything the Keyrunes HTTP client raises derives from :class:`KeyrunesError`,
so ``except KeyrunesError`` catches every failure of the remote side.
"""

from __future__ import annotations

from typing import Any


class KeyrunesError(Exception):
    """Base class of every Keyrunes failure."""

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.body = body

    def __str__(self) -> str:
        if self.status_code is not None:
            return f"{self.message} (HTTP {self.status_code})"
        return self.message


class KeyrunesUnavailable(KeyrunesError):
    """Keyrunes could not be reached, timed out, missed the deadline, or kept answering 5xx/429.

    ``retry_after`` is how many seconds the caller should wait before trying
    again when that is known (the server's ``Retry-After``, or the circuit
    breaker's cool-down), else None; a 503 answer can pass it on as
    ``Retry-After``.
    """

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, body=body)
        self.retry_after = retry_after


class CircuitOpen(KeyrunesUnavailable):
    """The circuit breaker is open: no call was made (``retry_after`` says for how long)."""


class KeyrunesProtocolError(KeyrunesError):
    """Keyrunes answered with a body of the wrong shape (HTML, truncated JSON, wrong types)."""


class KeyrunesHTTPError(KeyrunesError):
    """Keyrunes refused the request with a 4xx status."""


class AuthenticationFailed(KeyrunesHTTPError):
    """401: bad credentials, or a missing/invalid token or organization key."""


class PermissionDenied(KeyrunesHTTPError):
    """403: the caller is authenticated but not allowed."""


class NotFound(KeyrunesHTTPError):
    """404: the resource does not exist."""


class ValidationFailed(KeyrunesHTTPError):
    """400/422: the server rejected the request body; ``message`` carries its reason."""


class InvalidToken(KeyrunesError):
    """A bearer token or organization key failed verification.

    ``reason`` is a short machine-readable code (``expired``, ``bad_signature``,
    ``malformed``, ``wrong_issuer``, ``wrong_namespace``, ``scope_mismatch``...)
    used in logs and in the ``WWW-Authenticate`` header.
    """

    def __init__(
        self, message: str, *, reason: str = "invalid_token", scheme: str = "Bearer"
    ) -> None:
        super().__init__(message, status_code=401)
        self.reason = reason
        #: The ``WWW-Authenticate`` scheme of the refused credential
        #: (``Bearer`` or ``OrganizationKey``).
        self.scheme = scheme


class ServiceAccountError(KeyrunesError):
    """``KEYRUNES["SERVICE_ACCOUNT"]`` is missing, malformed, or refused by the server."""


class MirrorRefused(KeyrunesError):
    """The mapper would not mirror a verified identity onto a local user.

    ``reason`` is a short code: ``wrong_namespace``, ``wrong_organization``,
    ``missing_required_group``, ``denied_group``, ``groups_unknown``,
    ``local_user_exists`` (takeover refused) or ``username_taken``.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
