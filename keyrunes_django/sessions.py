"""The Keyrunes token of a logged-in user, kept in the Django session, and its refresh.

The login backend stores the token Keyrunes returned so later remote calls
(``/api/me``, password change, refresh) can act as the user;
:func:`refresh_session_token` keeps it fresh. The session is
server-side state: with the signed-cookie session engine the token would
travel in the cookie (signed, not encrypted), so use a database or cache
session engine. The token is never logged.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from django.contrib.auth import logout
from django.http import HttpRequest

from keyrunes_django import signals
from keyrunes_django.cache import LocalCache, credential_hash
from keyrunes_django.claims import token_expiry, unverified_claims
from keyrunes_django.conf import clock, keyrunes_settings, on_settings_changed
from keyrunes_django.exceptions import AuthenticationFailed, KeyrunesError, MirrorRefused
from keyrunes_django.users import attach_user

__all__ = [
    "SESSION_CHECKED_KEY",
    "SESSION_PASSWORD_CHANGE_KEY",
    "SESSION_TOKEN_EXPIRY_KEY",
    "SESSION_TOKEN_KEY",
    "get_session_token",
    "get_session_token_expiry",
    "password_change_required",
    "refresh_session_token",
    "set_password_change_required",
    "store_session_token",
]

SESSION_TOKEN_KEY = "_keyrunes_token"
SESSION_TOKEN_EXPIRY_KEY = "_keyrunes_token_exp"
SESSION_PASSWORD_CHANGE_KEY = "_keyrunes_password_change"
#: When Keyrunes last confirmed the session's user (login or ``/api/me``), epoch seconds.
SESSION_CHECKED_KEY = "_keyrunes_checked_at"

logger = logging.getLogger("keyrunes_django.auth")


def store_session_token(request: HttpRequest, token: str, expires_at: datetime) -> None:
    """Keep ``token`` (valid until ``expires_at``) in the request's session."""
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    request.session[SESSION_TOKEN_KEY] = token
    # Numbers survive every session serializer.
    request.session[SESSION_TOKEN_EXPIRY_KEY] = int(expires_at.timestamp())
    request.session[SESSION_CHECKED_KEY] = int(clock.now())


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


# ------------------------------------------------------------------ refresh

#: After a failed attempt (Keyrunes unreachable), wait this long before trying
#: again for the same session token.
REFRESH_RETRY_INTERVAL = 30.0

# Session-token hash -> when the next remote attempt may be made.
_backoff: LocalCache[float] = LocalCache(10_000)
# Session-token hash -> when it was last found not revoked.
_revocation_checked: LocalCache[float] = LocalCache(10_000)


@on_settings_changed
def reset_refresh_backoff() -> None:
    """Forget every deferred attempt and revocation check (the next request does them)."""
    _backoff.clear()
    _revocation_checked.clear()


def refresh_session_token(request: HttpRequest) -> str:
    """Keep a signed-in session's Keyrunes token valid and its user current.

    For a session user with a stored token, in order:

    * revoked (a logout elsewhere, the user's not-before): log out, checked at
      most every ``REVOCATION_CHECK_INTERVAL`` seconds;
    * the token expires within ``SESSION_REFRESH_MARGIN``: refresh it, then
      read ``/api/me`` and re-mirror the user (Keyrunes re-signs old claims);
    * ``SESSION_RECHECK_INTERVAL`` seconds since Keyrunes last confirmed the
      user: read ``/api/me`` and re-mirror, so a deleted user or a removed group
      ends the session within that bound.

    Returns ``"skipped"``, ``"refreshed"``, ``"rechecked"``, ``"logged_out"``,
    ``"deferred"`` (Keyrunes unreachable; tried again later) or
    ``"unavailable"`` (unreachable for longer than ``STALE_IF_ERROR`` past the
    re-check: the caller answers 503).
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return "skipped"
    if getattr(request, "keyrunes", None) is not None:
        # A bearer-token or organization-key request: request.user is not the
        # session's user, so the session is not involved (comparing the two
        # would log the session out).
        return "skipped"
    token = get_session_token(request)
    expiry = get_session_token_expiry(request)
    if token is None or expiry is None:
        return "skipped"
    at = clock.now()
    digest = credential_hash(token)
    if _revoked(token, digest, at):
        return _refused_logout(request, digest, "revoked")
    refresh_due = expiry.timestamp() - at <= float(keyrunes_settings.SESSION_REFRESH_MARGIN)
    checked = _checked_at(request)
    recheck_due = at - checked >= float(keyrunes_settings.SESSION_RECHECK_INTERVAL)
    if not (refresh_due or recheck_due):
        return "skipped"
    retry_at = _backoff.get(digest)
    if retry_at is not None and at < retry_at:
        return _while_unreachable(checked, at)
    if refresh_due:
        return _refresh(request, user, token, digest, at)
    return _recheck(request, user, token, digest, at)


def _revoked(token: str, digest: str, at: float) -> bool:
    from keyrunes_django.revocation import Subject, is_revoked

    last = _revocation_checked.get(digest)
    if last is not None and at - last <= float(keyrunes_settings.REVOCATION_CHECK_INTERVAL):
        return False
    claims = unverified_claims(token)
    sub, namespace, iat = claims.get("sub"), claims.get("namespace"), claims.get("iat")
    if not (isinstance(sub, str) and sub.isdigit() and isinstance(namespace, str)):
        return False  # not a Keyrunes token we can place; Keyrunes decides at refresh
    issued = float(iat) if type(iat) is int else None
    if is_revoked(Subject(namespace, int(sub)), issued, digest):
        return True
    _revocation_checked.set(digest, at)
    return False


def _checked_at(request: HttpRequest) -> float:
    value = request.session.get(SESSION_CHECKED_KEY)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    # A session stored without the mark (an older version, or force_login):
    # the interval starts now.
    now = int(clock.now())
    request.session[SESSION_CHECKED_KEY] = now
    return float(now)


def _while_unreachable(checked: float, at: float) -> str:
    overdue = at - checked - float(keyrunes_settings.SESSION_RECHECK_INTERVAL)
    return "unavailable" if overdue > float(keyrunes_settings.STALE_IF_ERROR) else "deferred"


def _refresh(request: HttpRequest, user: object, token: str, digest: str, at: float) -> str:
    from keyrunes_django.client import get_client

    try:
        new_token = get_client().refresh_token(token, body_token=token).token
    except AuthenticationFailed:
        return _refused_logout(request, digest, "refresh_refused")
    except KeyrunesError as exc:
        return _unreachable(request, digest, exc, at)
    exp = token_expiry(new_token)
    checked = _checked_at(request)
    store_session_token(
        request, new_token, datetime.fromtimestamp(exp or at + 3600, tz=timezone.utc)
    )
    request.session[SESSION_CHECKED_KEY] = checked  # the refresh itself confirms nothing
    outcome = _recheck(request, user, new_token, credential_hash(new_token), at)
    return "refreshed" if outcome in ("rechecked", "deferred") else outcome


def _recheck(request: HttpRequest, user: object, token: str, digest: str, at: float) -> str:
    """Read ``/api/me`` for the session's token and re-mirror the user."""
    from keyrunes_django.client import get_client
    from keyrunes_django.mapping import get_mapper

    try:
        identity = get_client().me(token).to_identity(source="remote")
    except AuthenticationFailed:
        return _refused_logout(request, digest, "user_refused")
    except KeyrunesError as exc:
        return _unreachable(request, digest, exc, at)
    try:
        mirrored = get_mapper().mirror(identity).user
    except MirrorRefused as exc:
        return _refused_logout(request, digest, exc.reason)
    if mirrored.pk != getattr(user, "pk", None):
        return _refused_logout(request, digest, "user_changed")
    if not getattr(mirrored, "is_active", True):
        return _refused_logout(request, digest, "user_inactive")
    request.session[SESSION_CHECKED_KEY] = int(at)
    attach_user(request, mirrored)
    return "rechecked"


def _unreachable(request: HttpRequest, digest: str, exc: KeyrunesError, at: float) -> str:
    _report_refresh_error(request, exc)
    _backoff.set(digest, at + REFRESH_RETRY_INTERVAL)
    return _while_unreachable(_checked_at(request), at)


def _refused_logout(request: HttpRequest, digest: str, reason: str) -> str:
    logger.warning(
        "keyrunes refused the session's token (%s); logging the user out",
        reason,
        extra={"event": "session_refresh_refused", "reason": reason, "credential_hash": digest},
    )
    signals.credential_rejected.send(
        sender=refresh_session_token, reason=reason, request=request, credential_hash=digest
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
        sender=refresh_session_token,
        error=exc,
        operation="refresh_session",
        request=request,
        served_stale=True,
    )
