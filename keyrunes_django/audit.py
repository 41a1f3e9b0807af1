"""Structured audit records for authentication events.

Every login success/failure, refused credential and Keyrunes outage is sent as
a signal (:mod:`keyrunes_django.signals`); the receivers connected here in
``AppConfig.ready`` turn each one into a log record on the
``keyrunes_django.audit`` logger with ``extra={"event": ..., ...}``, so a JSON
formatter can ship them as they are. No record ever holds a raw token, key or
password: credentials appear only as sha256 hex digests.

The ``send_*`` helpers are what the rest of the app calls: they hash what must
be hashed before the signal leaves, so a third-party receiver cannot see a
secret either.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest

from keyrunes_django import signals
from keyrunes_django.identity import VerifiedIdentity

__all__ = [
    "AUDIT_LOGGER_NAME",
    "audit_event",
    "client_ip",
    "connect_receivers",
    "disconnect_receivers",
    "hash_value",
    "send_credential_rejected",
    "send_login_failed",
    "send_login_succeeded",
    "send_service_error",
]

AUDIT_LOGGER_NAME = "keyrunes_django.audit"
logger = logging.getLogger(AUDIT_LOGGER_NAME)

#: Field names whose values are secrets: they are replaced by ``<name>_hash``.
SENSITIVE_FIELDS = frozenset(
    {"password", "token", "key", "secret", "org_key", "organization_key", "credential"}
)

# LogRecord attributes that ``extra`` may not overwrite.
_RESERVED = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
}


def hash_value(value: str | bytes) -> str:
    """sha256 hex digest: how a credential appears in logs, signals and cache keys."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()


def client_ip(request: HttpRequest | None) -> str | None:
    """The peer address Django saw (``REMOTE_ADDR``).

    Forwarded headers are not trusted here: a client could forge them to dodge
    per-IP throttling. Behind a proxy, set ``REMOTE_ADDR`` in a middleware that
    knows which proxies to trust.
    """
    if request is None:
        return None
    value = request.META.get("REMOTE_ADDR")
    return str(value) if value else None


def _scrub(fields: Mapping[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for name, value in fields.items():
        if name in SENSITIVE_FIELDS:
            if value is not None:
                clean[f"{name}_hash"] = hash_value(str(value))
            continue
        if name in _RESERVED:
            name = f"kr_{name}"
        clean[name] = value
    return clean


def audit_event(
    event: str,
    *,
    level: int = logging.INFO,
    request: HttpRequest | None = None,
    **fields: Any,
) -> None:
    """Log one structured audit record; secret-named fields are hashed, never written."""
    extra = _scrub(fields)
    extra["event"] = event
    if request is not None:
        extra.setdefault("client_ip", client_ip(request))
        extra.setdefault("path", getattr(request, "path", None))
    details = " ".join(
        f"{name}={value}" for name, value in sorted(extra.items()) if name != "event"
    )
    logger.log(level, "keyrunes %s %s", event, details, extra=extra)


def _identity_fields(identity: VerifiedIdentity | None) -> dict[str, Any]:
    if identity is None:
        return {}
    return {
        "user_id": identity.user_id,
        "username": identity.username,
        "namespace": identity.namespace,
        "organization_id": identity.organization_id,
        "source": identity.source,
    }


# ------------------------------------------------------------------ senders


def send_login_succeeded(
    *, user: Any, identity: VerifiedIdentity, request: HttpRequest | None = None
) -> None:
    """Announce a successful Keyrunes login."""
    signals.login_succeeded.send(
        sender=VerifiedIdentity, user=user, identity=identity, request=request
    )


def send_login_failed(*, identity: str, reason: str, request: HttpRequest | None = None) -> None:
    """Announce a failed login. ``identity`` is the login name typed, never a password."""
    signals.login_failed.send(
        sender=VerifiedIdentity, identity=identity, reason=reason, request=request
    )


def send_credential_rejected(
    *, credential: str, reason: str, request: HttpRequest | None = None
) -> None:
    """Announce a refused bearer token or organization key; only its hash is sent."""
    signals.credential_rejected.send(
        sender=VerifiedIdentity,
        reason=reason,
        request=request,
        credential_hash=hash_value(credential),
    )


def send_service_error(
    *,
    error: BaseException,
    operation: str,
    request: HttpRequest | None = None,
    served_stale: bool = False,
) -> None:
    """Announce that Keyrunes was unreachable or answered garbage."""
    signals.auth_service_error.send(
        sender=VerifiedIdentity,
        error=error,
        operation=operation,
        request=request,
        served_stale=served_stale,
    )


# ---------------------------------------------------------------- receivers


def _on_login_succeeded(
    sender: Any, *, identity: VerifiedIdentity | None = None, request: Any = None, **kw: Any
) -> None:
    user = kw.get("user")
    audit_event(
        "login_succeeded",
        request=request,
        local_user_pk=getattr(user, "pk", None),
        **_identity_fields(identity),
    )


def _on_login_failed(
    sender: Any, *, identity: Any = None, reason: str = "", request: Any = None, **kw: Any
) -> None:
    # The typed login name may be a mistyped password: log its hash only.
    audit_event(
        "login_failed",
        level=logging.WARNING,
        request=request,
        reason=reason,
        identity_hash=hash_value(str(identity).strip().lower()) if identity else None,
        namespace=kw.get("namespace"),
    )


def _on_credential_rejected(
    sender: Any,
    *,
    reason: str = "",
    request: Any = None,
    credential_hash: str | None = None,
    **kw: Any,
) -> None:
    audit_event(
        "credential_rejected",
        level=logging.WARNING,
        request=request,
        reason=reason,
        credential_hash=credential_hash,
    )


def _on_service_error(
    sender: Any,
    *,
    error: BaseException | None = None,
    operation: str = "",
    request: Any = None,
    served_stale: bool = False,
    **kw: Any,
) -> None:
    audit_event(
        "auth_service_error",
        level=logging.ERROR,
        request=request,
        operation=operation,
        error_type=type(error).__name__ if error is not None else None,
        error=str(error) if error is not None else None,
        status_code=getattr(error, "status_code", None),
        served_stale=served_stale,
    )


_RECEIVERS = (
    (signals.login_succeeded, _on_login_succeeded),
    (signals.login_failed, _on_login_failed),
    (signals.credential_rejected, _on_credential_rejected),
    (signals.auth_service_error, _on_service_error),
)


def connect_receivers() -> None:
    """Connect the audit log receivers (idempotent; called from ``AppConfig.ready``)."""
    for signal, receiver in _RECEIVERS:
        signal.connect(receiver, dispatch_uid=f"keyrunes_audit_{receiver.__name__}")


def disconnect_receivers() -> None:
    for signal, receiver in _RECEIVERS:
        signal.disconnect(receiver, dispatch_uid=f"keyrunes_audit_{receiver.__name__}")
