"""The Keyrunes token of a logged-in user, kept in the Django session.

The login backend stores the token Keyrunes returned so later remote calls
(``/api/me``, password change, refresh) can act as the user. The session is
server-side state: with the signed-cookie session engine the token would
travel in the cookie (signed, not encrypted), so use a database or cache
session engine. The token is never logged.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from django.http import HttpRequest

__all__ = [
    "SESSION_PASSWORD_CHANGE_KEY",
    "SESSION_TOKEN_EXPIRY_KEY",
    "SESSION_TOKEN_KEY",
    "clear_session_token",
    "get_session_token",
    "get_session_token_expiry",
    "password_change_required",
    "session_token_expires_within",
    "set_password_change_required",
    "store_session_token",
]

SESSION_TOKEN_KEY = "_keyrunes_token"
SESSION_TOKEN_EXPIRY_KEY = "_keyrunes_token_exp"
SESSION_PASSWORD_CHANGE_KEY = "_keyrunes_password_change"


def store_session_token(request: HttpRequest, token: str, expires_at: datetime) -> None:
    """Keep ``token`` (valid until ``expires_at``) in the request's session."""
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    request.session[SESSION_TOKEN_KEY] = token
    # A number survives every session serializer.
    request.session[SESSION_TOKEN_EXPIRY_KEY] = int(expires_at.timestamp())


def get_session_token(request: HttpRequest) -> str | None:
    """The stored token, or ``None``. Expiry is not checked here."""
    session = getattr(request, "session", None)
    if session is None:
        return None
    token = session.get(SESSION_TOKEN_KEY)
    return token if isinstance(token, str) and token else None


def get_session_token_expiry(request: HttpRequest) -> datetime | None:
    """When the stored token expires (UTC), or ``None`` if no token is stored."""
    session = getattr(request, "session", None)
    if session is None or not session.get(SESSION_TOKEN_KEY):
        return None
    value = session.get(SESSION_TOKEN_EXPIRY_KEY)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return datetime.fromtimestamp(value, tz=timezone.utc)


def session_token_expires_within(request: HttpRequest, seconds: float) -> bool:
    """True if there is no usable token or it expires within ``seconds`` from now."""
    expiry = get_session_token_expiry(request)
    if expiry is None:
        return True
    return expiry <= datetime.now(tz=timezone.utc) + timedelta(seconds=seconds)


def clear_session_token(request: HttpRequest) -> None:
    """Forget the stored token (and the password-change flag)."""
    session = getattr(request, "session", None)
    if session is None:
        return
    for key in (SESSION_TOKEN_KEY, SESSION_TOKEN_EXPIRY_KEY, SESSION_PASSWORD_CHANGE_KEY):
        session.pop(key, None)


def set_password_change_required(request: HttpRequest, required: bool) -> None:
    """Remember Keyrunes' ``requires_password_change`` answer for this session."""
    if required:
        request.session[SESSION_PASSWORD_CHANGE_KEY] = True
    else:
        request.session.pop(SESSION_PASSWORD_CHANGE_KEY, None)


def password_change_required(request: HttpRequest) -> bool:
    """True if Keyrunes asked this session's user to change their password at login."""
    session = getattr(request, "session", None)
    return bool(session is not None and session.get(SESSION_PASSWORD_CHANGE_KEY))
