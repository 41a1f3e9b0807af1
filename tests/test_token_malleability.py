"""One token, one spelling: variants of a valid token are refused, so its hash stays its identity.

The deny list, the caches and the logs know a token by the sha256 of its text.
If another spelling of the same token verified, a logged-out token could be
replayed under a new hash.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from keyrunes_django import revocation, tokens
from keyrunes_django.claims import parse
from keyrunes_django.exceptions import InvalidToken

pytestmark = pytest.mark.django_db


def _spare_bits_variant(segment: str) -> str:
    """Another base64url spelling of the same bytes (the last character's spare bits set)."""
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for char in alphabet:
        candidate = segment[:-1] + char
        if candidate != segment:
            decoded = base64.urlsafe_b64decode(candidate + "=" * (-len(candidate) % 4))
            if decoded == raw:
                return candidate
    raise AssertionError("no variant")  # a 32-byte signature always has spare bits


def variants(token: str) -> list[str]:
    header, payload, signature = token.split(".")
    return [
        f"{header}.{payload}.{_spare_bits_variant(signature)}",
        f"{header}.{payload}.{signature}=",
        f"{header}.{payload}.{signature}~",
        f"{header}.{payload}.{signature[:10]}+{signature[10:]}",
        f"{header}=.{payload}.{signature}",
    ]


def test_only_the_canonical_spelling_parses(keyrunes: Any, keyrunes_user: Any) -> None:
    token = keyrunes.issue_token(keyrunes_user)
    assert parse(token).payload["sub"] == str(keyrunes_user.user_id)
    for variant in variants(token):
        with pytest.raises(InvalidToken) as refused:
            parse(variant)
        assert refused.value.reason == "malformed"


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_a_denied_token_cannot_be_replayed_under_another_spelling(
    keyrunes: Any, keyrunes_user: Any, settings: Any, mode: str
) -> None:
    settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": mode}
    token = keyrunes.issue_token(keyrunes_user, issued_at=int(time.time()) - 5)
    assert tokens.authenticate_token(token).user_id == keyrunes_user.user_id
    revocation.deny_token(token, reason="logout")
    for candidate in [token, *variants(token)]:
        with pytest.raises(InvalidToken):
            tokens.authenticate_token(candidate)
