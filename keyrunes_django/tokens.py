"""Verification of bearer tokens and organization keys, cached.

One code path serves the middleware, the DRF authentication classes and
direct callers:

* :func:`parse_authorization_header` turns an ``Authorization`` header into a
  token (or None when it carries another scheme);
* :func:`authenticate_token` verifies a token locally (HS256 with the shared
  ``JWT_SECRET``) or remotely (``GET /api/me``), per ``VERIFICATION_MODE``, and
  applies the tenant check (contract §12.3);
* :func:`authenticate_organization_key` verifies an ``X-Organization-Key``
  (§12.4);
* :func:`authenticate_token_user` adds the mirrored local user, kept in the
  per-process cache so a warm request does no database query.

Refusals raise :class:`~keyrunes_django.exceptions.InvalidToken` with a
``reason`` code; an outage with no usable cached answer raises
:class:`~keyrunes_django.exceptions.KeyrunesUnavailable`. Every refusal and
outage is logged on ``keyrunes_django.auth`` and signalled.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import jwt
from django.core.exceptions import ImproperlyConfigured

from keyrunes_django import signals
from keyrunes_django.cache import (
    CacheEntry,
    CacheState,
    credential_hash,
    get_state,
    now,
)
from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.exceptions import (
    AuthenticationFailed,
    InvalidToken,
    KeyrunesError,
    KeyrunesHTTPError,
    KeyrunesProtocolError,
    KeyrunesUnavailable,
    MirrorRefused,
    NotFound,
)
from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity
from keyrunes_django.schemas import TokenClaims

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = [
    "ALGORITHM",
    "MAX_CREDENTIAL_LENGTH",
    "authenticate_organization_key",
    "authenticate_token",
    "authenticate_token_user",
    "check_tenant",
    "decode_local",
    "fail_open",
    "parse_authorization_header",
    "parse_organization_key_header",
    "peek_bearer_user",
    "peek_token_user",
    "read_bearer",
    "verify_remote",
]

logger = logging.getLogger("keyrunes_django.auth")

#: The only algorithm Keyrunes signs with; anything else is refused.
ALGORITHM = "HS256"

#: Longest ``Authorization``/``X-Organization-Key`` value looked at. Keyrunes
#: tokens are well under 2 KB even with many groups; anything longer is
#: refused before any hashing, crypto or network.
MAX_CREDENTIAL_LENGTH = 8192

# RFC 6750 b64token: what may follow "Bearer ".
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

_DESCRIPTIONS: dict[str, str] = {
    "missing_token": "The Authorization header names the Bearer scheme but carries no token.",
    "header_too_large": "The credential header is too large.",
    "malformed": "The token is malformed.",
    "expired": "The token has expired.",
    "bad_signature": "The token signature is invalid.",
    "bad_algorithm": "The token is not signed with HS256.",
    "wrong_issuer": "The token was not issued by Keyrunes.",
    "missing_claim": "The token lacks a required claim.",
    "not_yet_valid": "The token is not valid yet.",
    "wrong_namespace": "The token belongs to another namespace.",
    "scope_mismatch": "The credential belongs to another organization.",
    "rejected": "Keyrunes rejected the credential.",
    "invalid_key": "The organization key is invalid.",
    "user_inactive": "The local user is inactive.",
}


def describe(reason: str) -> str:
    """A fixed, client-safe description of a refusal reason."""
    return _DESCRIPTIONS.get(reason, "The credential is invalid.")


def _invalid(reason: str) -> InvalidToken:
    return InvalidToken(describe(reason), reason=reason)


# ------------------------------------------------------------------------ headers


def parse_authorization_header(value: str | None) -> str | None:
    """The bearer token of an ``Authorization`` header value.

    * absent/empty header, or another scheme (``Basic ...``): ``None``, so other
      authentication mechanisms can handle the request;
    * the scheme is matched case-insensitively (RFC 7235 §2.1: ``bearer`` works,
      although the Keyrunes server itself only accepts ``Bearer``); spaces
      around and between scheme and token are tolerated;
    * refused with :class:`InvalidToken`: a value over
      :data:`MAX_CREDENTIAL_LENGTH` (``header_too_large``, checked first), any
      non-ASCII character (``malformed``), ``Bearer`` without a token
      (``missing_token``), a token with characters outside RFC 6750's
      ``b64token`` or with inner spaces (``malformed``).
    """
    if not value:
        return None
    if len(value) > MAX_CREDENTIAL_LENGTH:
        raise _invalid("header_too_large")
    if not value.isascii():
        raise _invalid("malformed")
    if value.startswith("Bearer "):  # the common case, without splitting
        token = value[7:]
        if _B64TOKEN.fullmatch(token) is not None:
            return token
    parts = value.split()
    if not parts or parts[0].lower() != "bearer":
        return None
    if len(parts) == 1:
        raise _invalid("missing_token")
    if len(parts) > 2 or _B64TOKEN.fullmatch(parts[1]) is None:
        raise _invalid("malformed")
    return parts[1]


def read_bearer(value: str | None, *, request: HttpRequest | None = None) -> str | None:
    """:func:`parse_authorization_header`, with a refusal logged and signalled."""
    try:
        return parse_authorization_header(value)
    except InvalidToken as err:
        _rejected(err, credential_hash((value or "")[:MAX_CREDENTIAL_LENGTH]), "token", request)
        raise


def parse_organization_key_header(value: str | None) -> str | None:
    """The key of an ``X-Organization-Key`` header value (None when absent/blank).

    Keyrunes keys are UUIDs; anything else is refused with ``malformed``
    without asking the server (which would refuse it too).
    """
    if value is None:
        return None
    if len(value) > MAX_CREDENTIAL_LENGTH:
        raise _invalid("header_too_large")
    key = value.strip()
    if not key:
        return None
    if not key.isascii():
        raise _invalid("malformed")
    try:
        uuid.UUID(key)
    except ValueError:
        raise _invalid("malformed") from None
    return key


# ---------------------------------------------------------------------- local mode

_PYJWT_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.InvalidAlgorithmError, "bad_algorithm"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
)


def decode_local(token: str) -> VerifiedIdentity:
    """Verify a token with ``JWT_SECRET``: HS256 only, issuer, ``exp`` with leeway, claims."""
    secret = keyrunes_settings.JWT_SECRET
    if not secret:
        raise ImproperlyConfigured("Local token verification needs KEYRUNES['JWT_SECRET'].")
    try:
        payload = jwt.decode(
            token,
            key=secret,
            algorithms=[ALGORITHM],
            issuer=str(keyrunes_settings.JWT_ISSUER),
            leeway=float(keyrunes_settings.JWT_LEEWAY),
            options={
                "require": ["exp", "iat", "iss", "sub"],
                "verify_aud": False,
            },
        )
    except jwt.InvalidTokenError as exc:
        for cls, reason in _PYJWT_REASONS:
            if isinstance(exc, cls):
                raise _invalid(reason) from None
        raise _invalid("malformed") from None
    try:
        claims = TokenClaims.from_payload(payload)
    except InvalidToken:
        raise _invalid("malformed") from None
    return claims.to_identity(source="token")


# --------------------------------------------------------------------- remote mode


def _unverified_times(token: str) -> tuple[int, int | None]:
    """(exp, iat) read from the payload without verifying it (§12.1)."""
    try:
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise _invalid("malformed") from None
    exp = payload.get("exp")
    iat = payload.get("iat")
    if exp is None:
        raise _invalid("missing_claim")
    if type(exp) is not int:
        raise _invalid("malformed")
    return exp, iat if type(iat) is int else None


def verify_remote(token: str) -> VerifiedIdentity:
    """Ask ``GET /api/me``, after refusing an expired token ourselves (the server would not)."""
    from keyrunes_django.client import get_client

    exp, iat = _unverified_times(token)
    if exp + float(keyrunes_settings.JWT_LEEWAY) < now():
        raise _invalid("expired")
    try:
        user = get_client().me(token)
    except AuthenticationFailed:
        raise _invalid("rejected") from None
    except KeyrunesUnavailable:
        raise
    except (KeyrunesProtocolError, KeyrunesHTTPError) as exc:
        # /api/me answers 200 or 401; anything else means Keyrunes is not working.
        raise KeyrunesUnavailable(
            f"Unexpected answer from /api/me: {type(exc).__name__}", status_code=exc.status_code
        ) from exc
    identity = user.to_identity(source="remote")
    return dataclasses.replace(
        identity,
        expires_at=datetime.fromtimestamp(exp, tz=timezone.utc),
        issued_at=datetime.fromtimestamp(iat, tz=timezone.utc) if iat is not None else None,
    )


# ----------------------------------------------------------------------- tenancy


def check_tenant(identity: VerifiedIdentity, state: CacheState | None = None) -> None:
    """Refuse an identity of another namespace or, with ``ORGANIZATION_SCOPE``, organization."""
    state = state or get_state()
    if identity.namespace != state.namespace:
        raise _invalid("wrong_namespace")
    scope = state.organization_scope
    if scope is not None and identity.organization_id != scope:
        raise _invalid("scope_mismatch")


# ------------------------------------------------------------------ reporting


def _rejected(error: InvalidToken, digest: str, kind: str, request: HttpRequest | None) -> None:
    logger.warning(
        "keyrunes %s rejected: %s",
        kind,
        error.reason,
        extra={
            "event": "credential_rejected",
            "credential_kind": kind,
            "reason": error.reason,
            "credential_hash": digest,
        },
    )
    signals.credential_rejected.send(
        sender=InvalidToken, reason=error.reason, request=request, credential_hash=digest
    )


def _service_error(
    error: KeyrunesError, operation: str, request: HttpRequest | None, *, served_stale: bool
) -> None:
    logger.log(
        logging.WARNING if served_stale else logging.ERROR,
        "keyrunes unavailable during %s (%s)%s",
        operation,
        error,
        "; serving the cached identity" if served_stale else "",
        extra={
            "event": "auth_service_error",
            "operation": operation,
            "served_stale": served_stale,
            "status_code": error.status_code,
        },
    )
    signals.auth_service_error.send(
        sender=KeyrunesError,
        error=error,
        operation=operation,
        request=request,
        served_stale=served_stale,
    )


def fail_open(error: KeyrunesUnavailable, request: HttpRequest | None) -> bool:
    """Whether ``FAIL_OPEN`` lets this request through as anonymous (logged loudly if so)."""
    if not get_state().fail_open:
        return False
    logger.error(
        "KEYRUNES FAIL_OPEN: Keyrunes is unavailable (%s); the request continues "
        "UNAUTHENTICATED instead of getting 503",
        error,
        extra={"event": "fail_open", "path": getattr(request, "path", None)},
    )
    return True


# ------------------------------------------------------------------ entry points


def _lookup(
    state: CacheState,
    kind: str,
    digest: str,
    compute: Callable[[], tuple[VerifiedIdentity | OrganizationPrincipal, float | None]],
    shared: bool,
    operation: str,
    request: HttpRequest | None,
) -> CacheEntry:
    """``state.lookup`` reporting outages as ``operation``, whether served stale or raised."""

    def stale(error: KeyrunesUnavailable) -> None:
        _service_error(error, operation, request, served_stale=True)

    try:
        return state.lookup(kind, digest, compute, shared=shared, on_stale=stale)
    except KeyrunesUnavailable as exc:
        _service_error(exc, operation, request, served_stale=False)
        raise


def _token_entry(token: str, request: HttpRequest | None) -> tuple[CacheEntry, str]:
    if len(token) > MAX_CREDENTIAL_LENGTH:
        err = _invalid("header_too_large")
        _rejected(err, credential_hash(token[:MAX_CREDENTIAL_LENGTH]), "token", request)
        raise err
    state = get_state()
    digest = credential_hash(token)
    entry = state.peek("token", digest)
    if entry is None:
        remote = state.mode != "local"

        def compute() -> tuple[VerifiedIdentity, float | None]:
            identity = verify_remote(token) if remote else decode_local(token)
            return identity, _ts(identity.expires_at)

        entry = _lookup(state, "token", digest, compute, remote, "verify_token", request)
    try:
        entry.raise_if_refused()
        assert isinstance(entry.value, VerifiedIdentity)
        # After the cache, not inside it: a shared cache may serve several tenants.
        check_tenant(entry.value, state)
    except InvalidToken as err:
        _rejected(err, digest, "token", request)
        raise
    return entry, digest


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def authenticate_token(token: str, *, request: HttpRequest | None = None) -> VerifiedIdentity:
    """The verified identity of a bearer token (cached; local or remote per settings)."""
    entry, _ = _token_entry(token, request)
    assert isinstance(entry.value, VerifiedIdentity)
    return entry.value


def mirror_user(identity: VerifiedIdentity) -> Any:
    """The local user for an identity, through the configured mapper."""
    from keyrunes_django.mapping import get_mapper

    return get_mapper().mirror(identity).user


def authenticate_token_user(
    token: str, *, request: HttpRequest | None = None
) -> tuple[Any, VerifiedIdentity]:
    """(local user, identity) for a bearer token.

    The mirrored user is kept with the per-process cache entry, so only the
    first request per token and process (per TTL) touches the database.
    Raises :class:`InvalidToken` (also when the local user is inactive) and
    :class:`~keyrunes_django.exceptions.MirrorRefused` when the mapping
    settings refuse the user.
    """
    entry, digest = _token_entry(token, request)
    identity = entry.value
    assert isinstance(identity, VerifiedIdentity)
    user = entry.user
    if user is None:
        try:
            user = get_state().flight.run("mirror:" + digest, lambda: mirror_user(identity))
        except MirrorRefused as exc:
            _rejected(InvalidToken(exc.message, reason=exc.reason), digest, "token", request)
            raise
        entry.user = user
    if not getattr(user, "is_active", True):
        err = _invalid("user_inactive")
        _rejected(err, digest, "token", request)
        raise err
    return user, identity


def peek_token_user(token: str) -> tuple[Any, VerifiedIdentity] | None:
    """(user, identity) from the per-process cache only, or None; never does I/O.

    The warm path of the middleware and the DRF class: one sha256 and one
    dictionary lookup. A hit means this exact token was parsed, verified and
    mirrored before, so it is not parsed again; anything unusual (a miss, a
    refusal, another tenant, an inactive user) returns None and the caller
    takes the full path, which reports it. Safe on an event loop.
    """
    if len(token) > MAX_CREDENTIAL_LENGTH:
        return None
    state = get_state()
    entry = state.peek("token", credential_hash(token))
    if entry is None:
        return None
    user = entry.user
    identity = entry.value
    # A user is stored only after the tenant check passed, and the per-process
    # layer is rebuilt whenever the settings change, so it need not be redone.
    if user is None or not isinstance(identity, VerifiedIdentity):
        return None
    if not getattr(user, "is_active", True):
        return None
    return user, identity


def peek_bearer_user(header: str | None) -> tuple[Any, VerifiedIdentity] | None:
    """:func:`peek_token_user` for an ``Authorization`` value of the form ``Bearer <token>``."""
    if header is not None and header.startswith("Bearer "):
        return peek_token_user(header[7:])
    return None


# ------------------------------------------------------------------- org keys


def _verify_org_key_remote(key: str) -> OrganizationPrincipal:
    from keyrunes_django.client import VerifyOrgKeyDefect, get_client

    client = get_client()
    try:
        answer = client.verify_org_key(key)
    except AuthenticationFailed:
        raise _invalid("invalid_key") from None
    except VerifyOrgKeyDefect:
        pass  # this server version's 500 for a valid key: probe instead (§12.4)
    except (KeyrunesProtocolError, KeyrunesHTTPError) as exc:
        raise KeyrunesUnavailable(
            f"Unexpected answer from /api/verify-org-key: {type(exc).__name__}",
            status_code=exc.status_code,
        ) from exc
    else:
        return OrganizationPrincipal(
            organization_id=answer.organization_id, name=answer.organization
        )
    try:
        client.check_permission(0, "keyrunes-django:probe", "verify", org_key=key)
    except AuthenticationFailed:
        raise _invalid("invalid_key") from None
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


def authenticate_organization_key(
    key: str, *, request: HttpRequest | None = None
) -> OrganizationPrincipal:
    """The organization behind an ``X-Organization-Key`` value (cached by its hash).

    With ``ORGANIZATION_SCOPE`` set, a key of another organization, or one
    whose organization Keyrunes cannot name (this server version), is refused
    with ``scope_mismatch``.
    """
    state = get_state()
    digest = credential_hash(key[:MAX_CREDENTIAL_LENGTH])
    try:
        key = parse_organization_key_header(key) or ""
        if not key:
            raise _invalid("malformed")
    except InvalidToken as err:
        _rejected(err, digest, "organization key", request)
        raise

    def compute() -> tuple[OrganizationPrincipal, float | None]:
        return _verify_org_key_remote(key), None

    entry = _lookup(state, "orgkey", digest, compute, True, "verify_org_key", request)
    try:
        entry.raise_if_refused()
        principal = entry.value
        assert isinstance(principal, OrganizationPrincipal)
        scope = state.organization_scope
        if scope is not None and principal.organization_id != scope:
            raise _invalid("scope_mismatch")
    except InvalidToken as err:
        _rejected(err, digest, "organization key", request)
        raise
    return principal
