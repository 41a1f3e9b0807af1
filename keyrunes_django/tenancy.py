"""Which tenant this service serves, and the one rule that keeps the others out.

Keyrunes signs every tenant's tokens with one secret, so the signature alone
says nothing about the tenant. A service configured with
``KEYRUNES["NAMESPACE"]`` accepts only identities of that namespace and, when
an organization is known, of that organization:

* ``ORGANIZATION_SCOPE`` names the organization explicitly;
* without it, organization keys are still bound to this service's
  organization, established once through the admin API (the organization whose
  namespace is ``NAMESPACE``) and remembered for ``CACHE_TTL`` seconds. Where it
  cannot be established (no ``SERVICE_ACCOUNT``), keys are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from keyrunes_django.conf import clock, keyrunes_settings, on_settings_changed
from keyrunes_django.credentials import invalid
from keyrunes_django.exceptions import ServiceAccountError
from keyrunes_django.identity import OrganizationPrincipal

__all__ = [
    "ServiceOrganization",
    "check_identity",
    "check_namespace",
    "check_principal",
    "forget_service_organization",
    "namespace",
    "organization_scope",
    "parse_organization_scope",
    "scope_problem",
    "service_organization",
]


def parse_organization_scope(value: Any) -> int | None:
    """``ORGANIZATION_SCOPE`` as an organization id, or None when unset.

    Accepted: None, a positive int, or a string of decimal digits. Anything else
    (``""``, ``0``, ``True``, ``"abc"``) raises ImproperlyConfigured; the system
    check reports the same problem at ``manage.py check``.
    """
    problem = scope_problem(value)
    if problem is not None:
        raise ImproperlyConfigured(problem)
    return None if value is None else int(value)


def scope_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid ``ORGANIZATION_SCOPE`` (None: it is valid)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return f"KEYRUNES['ORGANIZATION_SCOPE'] = {value!r} is not an organization id."
    text = str(value)
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        return (
            f"KEYRUNES['ORGANIZATION_SCOPE'] = {value!r} is not a positive organization id "
            "(leave it out, or None, for no scope)."
        )
    return None


def namespace() -> str:
    """The namespace this service serves."""
    return str(keyrunes_settings.NAMESPACE)


def organization_scope() -> int | None:
    """The configured ``ORGANIZATION_SCOPE`` (None when unset)."""
    return parse_organization_scope(keyrunes_settings.ORGANIZATION_SCOPE)


def check_namespace(value: str) -> None:
    """Refuse (``wrong_namespace``) an identity of another namespace."""
    if value != namespace():
        raise invalid("wrong_namespace")


def check_identity(identity_namespace: str, organization_id: int) -> None:
    """The tenant rule for a user: this namespace, and the scoped organization if any."""
    check_namespace(identity_namespace)
    scope = organization_scope()
    if scope is not None and organization_id != scope:
        raise invalid("scope_mismatch")


# --------------------------------------------------------------- organization keys


@dataclass(frozen=True)
class ServiceOrganization:
    """This service's organization: its id and a keyed digest of its current key."""

    organization_id: int
    key_digest: str | None
    resolved_at: float

    def owns_key(self, key: str) -> bool:
        if self.key_digest is None:
            return False
        return hmac.compare_digest(self.key_digest, key_digest(key))


def key_digest(key: str) -> str:
    """A keyed digest of an organization key, so memory never holds the key itself."""
    from django.conf import settings

    secret = hashlib.sha256(b"keyrunes-django:orgkey:" + str(settings.SECRET_KEY).encode()).digest()
    return hmac.new(secret, key.strip().lower().encode(), hashlib.sha256).hexdigest()


_lock = threading.Lock()
_memo: ServiceOrganization | None = None


@on_settings_changed
def forget_service_organization() -> None:
    """Forget the remembered organization (the next key check resolves it again)."""
    global _memo
    with _lock:
        _memo = None


def service_organization(*, max_age: float | None = None) -> ServiceOrganization | None:
    """This service's organization, or None when it cannot be established.

    With ``ORGANIZATION_SCOPE`` it is that id. Otherwise it is asked of the
    admin API with the service account (raising
    :class:`~keyrunes_django.exceptions.KeyrunesUnavailable` on an outage) and
    remembered for ``CACHE_TTL`` seconds, or ``max_age`` when given.
    """
    global _memo
    from keyrunes_django.service_account import configured, organization_record

    scope = organization_scope()
    if scope is None and not configured():
        return None
    limit = float(keyrunes_settings.CACHE_TTL) if max_age is None else max_age
    memo = _memo
    if memo is not None and clock.now() - memo.resolved_at < limit:
        return memo
    with _lock:
        memo = _memo
        if memo is not None and clock.now() - memo.resolved_at < limit:
            return memo
        if not configured():
            memo = ServiceOrganization(scope or 0, None, clock.now())
        else:
            record = organization_record(namespace(), scope)
            secret = record.secret_key
            memo = ServiceOrganization(
                record.organization_id, key_digest(secret) if secret else None, clock.now()
            )
        _memo = memo
        return memo


logger = logging.getLogger("keyrunes_django.auth")


def _own_organization(max_age: float | None = None) -> ServiceOrganization | None:
    # A refused service account, or no organization of this namespace in its
    # listing, is a configuration problem: keys are refused (fail closed) and
    # the reason is logged for the operator, never a 500.
    try:
        return service_organization(max_age=max_age)
    except ServiceAccountError as exc:
        logger.error(
            "keyrunes cannot establish this service's organization (%s); "
            "organization keys are refused",
            exc,
            extra={"event": "organization_unknown"},
        )
        return None


#: How old the remembered organization key may be before a key that does not
#: match it is checked against a fresh one (a rotation elsewhere).
KEY_RECHECK_AGE = 30.0


def check_principal(principal: OrganizationPrincipal, key: str) -> OrganizationPrincipal:
    """The tenant rule for an organization key; returns the principal with its organization.

    A key Keyrunes tied to an organization must be of this service's
    organization. A valid key whose organization Keyrunes could not name is
    accepted only when it is this service's current key. Refusals:
    ``organization_unknown`` (this service's organization is not established)
    and ``scope_mismatch``.
    """
    own = _own_organization()
    if own is None:
        raise invalid("organization_unknown")
    if principal.organization_id is not None:
        if principal.organization_id != own.organization_id:
            raise invalid("scope_mismatch")
        return principal
    if not own.owns_key(key) and clock.now() - own.resolved_at > KEY_RECHECK_AGE:
        own = _own_organization(max_age=0.0) or own
    if not own.owns_key(key):
        raise invalid("scope_mismatch")
    return OrganizationPrincipal(
        organization_id=own.organization_id, name=principal.name, namespace=namespace()
    )
