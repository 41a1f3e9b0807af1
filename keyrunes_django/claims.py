"""Reading a Keyrunes token: the only place that looks inside one without verifying it.

A token is parsed once into a :class:`ParsedToken` (header, payload, the bytes
the signature covers), its claims are typed strictly as the server types them
(:class:`~keyrunes_django.schemas.TokenClaims`), and :func:`check_claim_rules`
applies the rules every verification mode shares: issuer, expiry and issue
time. Whether the signature is right is :mod:`keyrunes_django.verification`'s
business; which tenant may use the token is :mod:`keyrunes_django.tenancy`'s.

Everything that goes wrong raises
:class:`~keyrunes_django.exceptions.InvalidToken` with a ``reason`` code.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from keyrunes_django.credentials import invalid
from keyrunes_django.exceptions import InvalidToken
from keyrunes_django.schemas import TokenClaims

__all__ = [
    "ALGORITHM",
    "REQUIRED_CLAIMS",
    "ParsedToken",
    "check_claim_rules",
    "parse",
    "read_claims",
    "token_expiry",
    "unverified_claims",
]

#: The only algorithm Keyrunes signs with; anything else is refused.
ALGORITHM = "HS256"

#: Claims without which a token is refused as ``missing_claim``.
REQUIRED_CLAIMS = ("sub", "exp", "iat", "iss")


@dataclass(frozen=True)
class ParsedToken:
    """A compact JWS split and decoded, not verified."""

    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # The server's JSON reader refuses an object with a repeated member; a token
    # that two readers would read differently is refused here too.
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate member {key!r}")
            seen.add(key)
    return result


_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64decode(part: str) -> bytes:
    # Only the canonical unpadded base64url form: a decoder that skips stray
    # characters or ignores the spare bits of the last one would let one token
    # be written several ways, each with its own hash (and its own cache entry
    # and deny-list record).
    if _BASE64URL.fullmatch(part) is None:
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != part:
        raise ValueError("not the canonical encoding")
    return raw


#: Deepest nesting accepted inside a token's JSON. Keyrunes writes flat claims;
#: how deep a JSON reader may go otherwise depends on the Python version.
MAX_JSON_DEPTH = 16


def _too_deep(value: Any) -> bool:
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        if isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
    return False


def _json_object(data: bytes) -> dict[str, Any]:
    value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    if _too_deep(value):
        raise ValueError("nested too deeply")
    return value


def parse(token: str) -> ParsedToken:
    """Split and decode ``token`` (``malformed`` / ``bad_algorithm`` / ``unsupported_header``)."""
    parts = token.split(".")
    if len(parts) != 3 or not token.isascii():
        raise invalid("malformed")
    try:
        header = _json_object(_b64decode(parts[0]))
        payload = _json_object(_b64decode(parts[1]))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise invalid("malformed") from None
    # Before the signature: an unsigned "alg": "none" token is a bad algorithm.
    if header.get("alg") != ALGORITHM:
        raise invalid("bad_algorithm")
    if "crit" in header:
        # No JWS extension is understood here, so any critical one must be refused.
        raise invalid("unsupported_header")
    try:
        signature = _b64decode(parts[2])
    except (ValueError, binascii.Error):
        raise invalid("malformed") from None
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return ParsedToken(header, payload, signing_input, signature)


def read_claims(parsed: ParsedToken) -> TokenClaims:
    """The typed claims of a parsed token (``missing_claim`` / ``malformed``)."""
    if any(name not in parsed.payload for name in REQUIRED_CLAIMS):
        raise invalid("missing_claim")
    try:
        return TokenClaims.from_payload(parsed.payload)
    except InvalidToken:
        raise invalid("malformed") from None


def check_claim_rules(claims: TokenClaims, *, at: float, issuer: str, leeway: float) -> None:
    """The rules both verification modes apply before anything else.

    Keyrunes itself never compares ``exp`` with its clock, so expiry is
    enforced here for remote verification too.
    """
    if claims.iss != issuer:
        raise invalid("wrong_issuer")
    if claims.exp + leeway < at:
        raise invalid("expired")
    if claims.iat - leeway > at:
        raise invalid("not_yet_valid")


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a token we hold ourselves (a service or session token), unverified.

    For reading our own tokens' metadata (organization, expiry) only: nothing
    is ever authorised on the strength of it. Empty when it is not a JWT.
    """
    try:
        return parse(token).payload
    except InvalidToken:
        return {}


def token_expiry(token: str) -> float | None:
    """``exp`` of a token we hold ourselves, or None when it has no integer ``exp``."""
    exp = unverified_claims(token).get("exp")
    return float(exp) if type(exp) is int else None
