"""Tokens that name critical header extensions nobody here understands are refused.

RFC 7515 says a JWS whose ``crit`` header lists an extension the recipient does not
process is invalid. PyJWT refuses such tokens from 2.12.0 on, which is why that
release is the package's floor; this test fails on an older PyJWT.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from keyrunes_django import tokens
from keyrunes_django.exceptions import InvalidToken
from tests.factories import claims

SECRET = "crit-test-secret-0123456789abcdef-xyz"


def signed(headers: dict[str, Any] | None = None) -> str:
    payload = claims()
    return jwt.encode(payload, SECRET, algorithm="HS256", headers=headers)


@pytest.fixture(autouse=True)
def local_mode(settings: Any) -> Iterator[None]:
    from django.core.cache import caches

    settings.KEYRUNES = {
        "BASE_URL": "http://127.0.0.1:9",
        "JWT_SECRET": SECRET,
        "VERIFICATION_MODE": "local",
        "RETRIES": 0,
    }
    caches["default"].clear()
    yield
    caches["default"].clear()


@pytest.mark.django_db
def test_the_same_token_without_crit_is_accepted() -> None:
    identity = tokens.authenticate_token(signed())
    assert identity.username == "alice"


@pytest.mark.django_db
def test_a_correctly_signed_token_with_an_unknown_critical_extension_is_refused() -> None:
    token = signed({"crit": ["x-unknown"], "x-unknown": True})
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "HS256", "typ": "JWT", "crit": ["x-unknown"], "x-unknown": True}
    with pytest.raises(InvalidToken) as caught:
        tokens.authenticate_token(token)
    assert caught.value.reason == "unsupported_header"


@pytest.mark.django_db
def test_a_critical_extension_missing_from_the_header_is_refused() -> None:
    token = signed({"crit": ["x-unknown"]})
    with pytest.raises(InvalidToken):
        tokens.authenticate_token(token)
