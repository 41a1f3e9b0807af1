"""Credential headers: Authorization and X-Organization-Key parsing, limits, refusal texts."""

from __future__ import annotations

import uuid

import pytest

from keyrunes_django.credentials import (
    MAX_CREDENTIAL_LENGTH,
    describe,
    invalid,
    parse_authorization_header,
    parse_organization_key_header,
)
from keyrunes_django.exceptions import InvalidToken

KEY = "3f1c2a9e-0b7d-4c1e-9f3a-5d6b7c8e9f00"


def reason_of(func: object, value: str) -> str:
    with pytest.raises(InvalidToken) as info:
        func(value)  # type: ignore[operator]
    return info.value.reason


class TestParseAuthorizationHeader:
    def test_bearer_token(self) -> None:
        assert parse_authorization_header("Bearer abc.def.ghi") == "abc.def.ghi"

    @pytest.mark.parametrize("value", [None, ""])
    def test_absent(self, value: str | None) -> None:
        assert parse_authorization_header(value) is None

    @pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Token abc", "Bearerabc", "   "])
    def test_other_schemes_are_not_ours(self, value: str) -> None:
        assert parse_authorization_header(value) is None

    @pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
    def test_scheme_is_case_insensitive(self, scheme: str) -> None:
        assert parse_authorization_header(f"{scheme} a.b.c") == "a.b.c"

    @pytest.mark.parametrize("value", ["Bearer    a.b.c", "  Bearer a.b.c  ", "Bearer\ta.b.c"])
    def test_extra_whitespace_is_tolerated(self, value: str) -> None:
        assert parse_authorization_header(value) == "a.b.c"

    @pytest.mark.parametrize("value", ["Bearer", "Bearer ", "bearer    "])
    def test_bearer_without_token(self, value: str) -> None:
        assert reason_of(parse_authorization_header, value) == "missing_token"

    @pytest.mark.parametrize(
        "value",
        ["Bearer a.b.c d", "Bearer a,b", 'Bearer a"b', "Bearer ==abc", "Bearer a;b", "Bearer a b"],
    )
    def test_malformed_token(self, value: str) -> None:
        assert reason_of(parse_authorization_header, value) == "malformed"

    @pytest.mark.parametrize("value", ["Bearer tökén", "Bearer a.b.c\u2028", "Béarer abc"])
    def test_non_ascii(self, value: str) -> None:
        assert reason_of(parse_authorization_header, value) == "malformed"

    def test_oversized_header_refused_first(self) -> None:
        # Even a non-ASCII oversized value is refused for its size, before anything else.
        value = "Bearer " + "é" * 16 * 1024
        assert reason_of(parse_authorization_header, value) == "header_too_large"

    def test_limit_is_inclusive(self) -> None:
        value = "Bearer " + "a" * (MAX_CREDENTIAL_LENGTH - 7)
        assert parse_authorization_header(value) is not None
        assert reason_of(parse_authorization_header, value + "a") == "header_too_large"

    def test_padding_allowed(self) -> None:
        assert parse_authorization_header("Bearer abc==") == "abc=="


class TestParseOrganizationKeyHeader:
    @pytest.mark.parametrize(
        "value",
        [
            KEY,
            KEY.upper(),
            f"  {KEY} ",
            KEY.replace("-", ""),
            "{" + KEY + "}",
            "urn:uuid:" + KEY,
            "{" + KEY.upper() + "}",
        ],
        ids=["hyphenated", "upper", "padded", "simple", "braced", "urn", "braced-upper"],
    )
    def test_accepted_forms_are_canonicalised(self, value: str) -> None:
        assert parse_organization_key_header(value) == KEY

    @pytest.mark.parametrize("value", [None, "", "   "])
    def test_absent(self, value: str | None) -> None:
        assert parse_organization_key_header(value) is None

    @pytest.mark.parametrize(
        "value",
        [
            "not-a-uuid",
            "ключ",
            "1234",
            "uuid:" + KEY,
            "{" + KEY,
            KEY + "}",
            "3f1c2a9e0-b7d-4c1e-9f3a-5d6b7c8e9f00",  # misplaced hyphen
            "3f1c-2a9e-0b7d-4c1e-9f3a5d6b7c8e9f00",
            KEY + "0",
            "urn:uuid:" + KEY.replace("-", ""),
            "URN:UUID:" + KEY,
            KEY.replace("3", "g", 1),
            "\u0663" * 32,  # non-ASCII digits
        ],
    )
    def test_malformed(self, value: str) -> None:
        assert reason_of(parse_organization_key_header, value) == "malformed"

    def test_oversized(self) -> None:
        assert reason_of(parse_organization_key_header, "a" * 16 * 1024) == "header_too_large"

    def test_canonical_form_is_what_uuid_prints(self) -> None:
        value = uuid.uuid4()
        assert parse_organization_key_header(value.hex) == str(value)


class TestDescriptions:
    def test_invalid_carries_reason_and_fixed_text(self) -> None:
        err = invalid("expired")
        assert err.reason == "expired"
        assert err.message == describe("expired") == "The token has expired."

    def test_unknown_reason_gets_a_generic_text(self) -> None:
        assert describe("made-up") == "The credential is invalid."

    def test_organization_unknown_says_keys_are_refused(self) -> None:
        assert "organization keys are refused" in describe("organization_unknown")
