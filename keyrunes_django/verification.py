"""Credential -> principal: bearer tokens and organization keys, local or remote.

No cache and no database here: :mod:`keyrunes_django.tokens` decides when to
call these functions and remembers their answers.

A token goes through the same steps in both modes, cheapest first:

1. parse it and type its claims (:mod:`keyrunes_django.claims`);
2. the claim rules: issuer, expiry, issue time;
3. the tenant rule (:mod:`keyrunes_django.tenancy`);
4. then either the HS256 signature with ``JWT_SECRET`` (local mode) or
   ``GET /api/me`` (remote mode, which also sees deleted users and current
   groups).

Refusals raise :class:`~keyrunes_django.exceptions.InvalidToken`; an outage
raises :class:`~keyrunes_django.exceptions.KeyrunesUnavailable`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

from django.core.exceptions import ImproperlyConfigured

from keyrunes_django import claims as token_claims
from keyrunes_django import tenancy
from keyrunes_django.conf import clock, keyrunes_settings
from keyrunes_django.credentials import invalid
from keyrunes_django.exceptions import (
    AuthenticationFailed,
    KeyrunesHTTPError,
    KeyrunesProtocolError,
    KeyrunesUnavailable,
    NotFound,
)
from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity
from keyrunes_django.schemas import TokenClaims

__all__ = [
    "verify_organization_key",
    "verify_signature",
    "verify_token",
]

#: The resource of the check-permission call that validates a key when
#: ``/api/verify-org-key`` cannot answer.
PROBE_RESOURCE = "keyrunes-django:probe"


def verify_token(token: str, *, mode: str | None = None) -> VerifiedIdentity:
    """The identity of a bearer token, by ``mode`` (default: the configured one)."""
    parsed = token_claims.parse(token)
    claims = token_claims.read_claims(parsed)
    token_claims.check_claim_rules(
        claims,
        at=clock.now(),
        issuer=str(keyrunes_settings.JWT_ISSUER),
        leeway=float(keyrunes_settings.JWT_LEEWAY),
    )
    tenancy.check_identity(claims.namespace, claims.organization_id)
    if (mode or keyrunes_settings.verification_mode) == "local":
        verify_signature(parsed)
        return claims.to_identity(source="token")
    return _ask_me(token, claims)


def verify_signature(parsed: token_claims.ParsedToken) -> None:
    """Check the HS256 signature with ``JWT_SECRET`` (``bad_signature``), in constant time."""
    secret = keyrunes_settings.JWT_SECRET
    if not secret:
        raise ImproperlyConfigured("Local token verification needs KEYRUNES['JWT_SECRET'].")
    expected = hmac.new(str(secret).encode(), parsed.signing_input, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, parsed.signature):
        raise invalid("bad_signature")


def _ask_me(token: str, claims: TokenClaims) -> VerifiedIdentity:
    from keyrunes_django.client import get_client

    try:
        user = get_client().me(token)
    except AuthenticationFailed:
        raise invalid("rejected") from None
    except (KeyrunesProtocolError, KeyrunesHTTPError) as exc:
        # /api/me answers 200 or 401; anything else means Keyrunes is not working.
        raise KeyrunesUnavailable(
            f"Unexpected answer from /api/me: {type(exc).__name__}", status_code=exc.status_code
        ) from exc
    if user.user_id != claims.user_id or user.namespace != claims.namespace:
        raise KeyrunesUnavailable("Keyrunes answered /api/me about another user.")
    tenancy.check_identity(user.namespace, user.organization_id)
    identity = user.to_identity(source="remote")
    return dataclasses.replace(identity, expires_at=claims.expires_at, issued_at=claims.issued_at)


def verify_organization_key(key: str) -> OrganizationPrincipal:
    """The organization behind a (parsed, canonical) organization key, tenant rule applied."""
    principal = _ask_key(key)
    return tenancy.check_principal(principal, key)


def _ask_key(key: str) -> OrganizationPrincipal:
    from keyrunes_django.client import VerifyOrgKeyDefect, get_client

    client = get_client()
    try:
        answer = client.verify_org_key(key)
    except AuthenticationFailed:
        raise invalid("invalid_key") from None
    except VerifyOrgKeyDefect:
        # Some server versions answer 500 for every valid key: probe instead.
        return _probe_key(key)
    except (KeyrunesProtocolError, KeyrunesHTTPError) as exc:
        raise KeyrunesUnavailable(
            f"Unexpected answer from /api/verify-org-key: {type(exc).__name__}",
            status_code=exc.status_code,
        ) from exc
    return OrganizationPrincipal(organization_id=answer.organization_id, name=answer.organization)


def _probe_key(key: str) -> OrganizationPrincipal:
    """Validate a key through check-permission for user 0: 404 "user not found" = valid key."""
    from keyrunes_django.client import get_client

    try:
        get_client().check_permission(0, PROBE_RESOURCE, "verify", org_key=key)
    except AuthenticationFailed:
        raise invalid("invalid_key") from None
    except NotFound as exc:
        if "user not found" not in exc.message.lower():
            raise KeyrunesUnavailable(
                "Unexpected 404 from /api/check-permission", status_code=404
            ) from exc
    except KeyrunesHTTPError as exc:
        if exc.status_code != 403:  # 403 = past the key gate, so the key is valid
            raise KeyrunesUnavailable(
                f"Unexpected answer from /api/check-permission: {type(exc).__name__}",
                status_code=exc.status_code,
            ) from exc
    except KeyrunesProtocolError as exc:
        raise KeyrunesUnavailable(
            "Unexpected answer from /api/check-permission", status_code=exc.status_code
        ) from exc
    return OrganizationPrincipal(organization_id=None)
