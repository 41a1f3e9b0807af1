"""Credentials as they arrive in a request: parsing, limits, refusal texts.

* :func:`parse_authorization_header` turns an ``Authorization`` value into a
  bearer token, or None when it carries another scheme;
* :func:`parse_organization_key_header` turns an ``X-Organization-Key`` value
  into a key;
* :func:`describe` gives the fixed, client-safe text of every refusal reason,
  and :func:`invalid` the matching :class:`InvalidToken`.

The texts stay in English here (they are cached with a refusal, which callers
in other languages may later read); the 401/403/503 builder of
:mod:`keyrunes_django.responses` translates them into the request's language.

Nothing here does I/O, hashing or cryptography.
"""

from __future__ import annotations

import re
import uuid

from keyrunes_django.exceptions import InvalidToken

__all__ = [
    "MAX_CREDENTIAL_LENGTH",
    "USER_REFUSED",
    "describe",
    "invalid",
    "parse_authorization_header",
    "parse_organization_key_header",
]

#: Longest ``Authorization``/``X-Organization-Key`` value looked at. Keyrunes
#: tokens are well under 2 KB even with many groups; anything longer is
#: refused before any hashing, crypto or network.
MAX_CREDENTIAL_LENGTH = 8192

# The UUID forms Keyrunes accepts for a key: hyphenated, simple, braced, urn.
_HEX = "[0-9a-fA-F]"
_HYPHENATED = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
_UUID_FORMS = re.compile(f"{_HYPHENATED}|{_HEX}{{32}}|\\{{{_HYPHENATED}\\}}|urn:uuid:{_HYPHENATED}")


def gettext_noop(message: str) -> str:
    """Mark ``message`` for ``makemessages`` (which looks for this name) without translating it.

    Django's own ``gettext_noop`` reads the settings, and this module is imported
    by the HTTP client, which works without them.
    """
    return message


# RFC 6750 b64token: what may follow "Bearer ".
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

_DESCRIPTIONS: dict[str, str] = {
    "missing_token": gettext_noop(
        "The Authorization header names the Bearer scheme but carries no token."
    ),
    "header_too_large": gettext_noop("The credential header is too large."),
    "malformed": gettext_noop("The token is malformed."),
    "expired": gettext_noop("The token has expired."),
    "bad_signature": gettext_noop("The token signature is invalid."),
    "bad_algorithm": gettext_noop("The token is not signed with HS256."),
    "unsupported_header": gettext_noop(
        "The token header names an extension this service does not support."
    ),
    "wrong_issuer": gettext_noop("The token was not issued by Keyrunes."),
    "missing_claim": gettext_noop("The token lacks a required claim."),
    "not_yet_valid": gettext_noop("The token is not valid yet."),
    "wrong_namespace": gettext_noop("The token belongs to another namespace."),
    "scope_mismatch": gettext_noop("The credential belongs to another organization."),
    "organization_unknown": gettext_noop(
        "The organization of this service is not established; organization keys are refused."
    ),
    "rejected": gettext_noop("Keyrunes rejected the credential."),
    "revoked": gettext_noop("The token has been revoked."),
    "invalid_key": gettext_noop("The organization key is invalid."),
    "user_inactive": gettext_noop("The local user is inactive."),
}

_INVALID = gettext_noop("The credential is invalid.")

#: The 403 description of a verified user the mirror refused (namespace, groups...).
USER_REFUSED = gettext_noop("This user may not use this service.")


def describe(reason: str) -> str:
    """A fixed, client-safe description of a refusal reason (English; translated when sent)."""
    return _DESCRIPTIONS.get(reason, _INVALID)


def invalid(reason: str) -> InvalidToken:
    """The :class:`InvalidToken` for ``reason``, with its fixed description."""
    return InvalidToken(describe(reason), reason=reason)


def parse_authorization_header(value: str | None) -> str | None:
    """The bearer token of an ``Authorization`` header value.

    * absent/empty header, or another scheme (``Basic ...``): ``None``, so other
      authentication mechanisms can handle the request;
    * the scheme is matched case-insensitively (``bearer`` works, although the
      Keyrunes server itself only accepts ``Bearer``); spaces around and
      between scheme and token are tolerated;
    * refused with :class:`InvalidToken`: a value over
      :data:`MAX_CREDENTIAL_LENGTH` (``header_too_large``, checked first), any
      non-ASCII character (``malformed``), ``Bearer`` without a token
      (``missing_token``), a token with characters outside RFC 6750's
      ``b64token`` or with inner spaces (``malformed``).
    """
    if not value:
        return None
    if len(value) > MAX_CREDENTIAL_LENGTH:
        raise invalid("header_too_large")
    if not value.isascii():
        raise invalid("malformed")
    if value.startswith("Bearer "):  # the common case, without splitting
        token = value[7:]
        if _B64TOKEN.fullmatch(token) is not None:
            return token
    parts = value.split()
    if not parts or parts[0].lower() != "bearer":
        return None
    if len(parts) == 1:
        raise invalid("missing_token")
    if len(parts) > 2 or _B64TOKEN.fullmatch(parts[1]) is None:
        raise invalid("malformed")
    return parts[1]


def parse_organization_key_header(value: str | None) -> str | None:
    """The key of an ``X-Organization-Key`` value (None when absent or blank).

    Keyrunes keys are UUIDs; anything the server would refuse as malformed is
    refused here (``malformed``) without asking it. The key is returned in its
    canonical hyphenated lower-case form, so one key has one cache entry
    whatever form (braced, simple, urn) the caller wrote it in.
    """
    if value is None:
        return None
    if len(value) > MAX_CREDENTIAL_LENGTH:
        raise invalid("header_too_large")
    key = value.strip()
    if not key:
        return None
    if _UUID_FORMS.fullmatch(key) is None:
        raise invalid("malformed")
    return str(uuid.UUID(key))
