"""Structured audit records for authentication events.

Every login success/failure, refused credential and Keyrunes outage is sent as
a signal (:mod:`keyrunes_django.signals`); the receivers connected here in
``AppConfig.ready`` turn each one into a log record on the
``keyrunes_django.audit`` logger with ``extra={"event": ..., ...}``, so a JSON
formatter can ship them as they are. No record ever holds a raw token, key or
password: secrets and typed login names appear only as keyed hashes
(:func:`hash_value`, HMAC-SHA256 with a key derived from ``SECRET_KEY``), which
cannot be reversed by guessing without that key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest
from django.utils.crypto import salted_hmac

from keyrunes_django import signals
from keyrunes_django.identity import VerifiedIdentity

__all__ = [
    "AUDIT_LOGGER_NAME",
    "audit_event",
    "client_ip",
    "connect_receivers",
    "disconnect_receivers",
    "hash_value",
    "keyed_hash",
    "login_name_hash",
]

AUDIT_LOGGER_NAME = "keyrunes_django.audit"
#: The purpose string of :func:`hash_value`'s key: audit hashes match nothing else.
AUDIT_HASH_PURPOSE = "keyrunes_django.audit"
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


def keyed_hash(value: str | bytes, purpose: str) -> str:
    """HMAC-SHA256 hex digest of ``value`` with a key derived from ``SECRET_KEY`` and ``purpose``.

    People type passwords into the login-name box: a plain sha256 of such a
    value is reversed by guessing, an HMAC only by someone who has the key.
    Distinct purposes give unrelated digests of the same value.
    """
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return salted_hmac(purpose, data, algorithm="sha256").hexdigest()


def hash_value(value: str | bytes) -> str:
    """How a secret or a typed login name appears in audit records (a keyed hash)."""
    return keyed_hash(value, AUDIT_HASH_PURPOSE)


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


def login_name_hash(login_name: str) -> str:
    """The keyed hash of a typed login name, case and outer spaces ignored.

    The same name typed on a failed login and on a throttled one gives the
    same digest, so the records can be correlated without holding the name.
    """
    return hash_value(login_name.strip().lower())


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
        identity_hash=login_name_hash(str(identity)) if identity else None,
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
