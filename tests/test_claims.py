"""claims.py: the only unverified read of a token (parse, typed claims, claim rules)."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest

from keyrunes_django.claims import (
    ALGORITHM,
    REQUIRED_CLAIMS,
    check_claim_rules,
    parse,
    read_claims,
    token_expiry,
    unverified_claims,
)
from keyrunes_django.exceptions import InvalidToken
from tests.factories import REMOVE, b64, claims, forged, make_token, raw_token

HEADER = '{"alg":"HS256","typ":"JWT"}'


def reason(func: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidToken) as info:
        func(*args, **kwargs)
    return info.value.reason


def read(token: str) -> Any:
    return read_claims(parse(token))


class TestParse:
    def test_splits_and_decodes(self) -> None:
        token = make_token(groups=["users", "admin"])
        parsed = parse(token)
        assert parsed.header == {"alg": ALGORITHM, "typ": "JWT"}
        assert parsed.payload["groups"] == ["users", "admin"]
        head, body, _ = token.split(".")
        assert parsed.signing_input == f"{head}.{body}".encode()
        assert len(parsed.signature) == 32

    @pytest.mark.parametrize(
        "token",
        [
            "abc",
            "a.b.c",
            "",
            "....",
            "a.b",
            "eyJhbGciOiJIUzI1NiJ9.e30",
            "eyJhbGciOiJIUzI1NiJ9.W10.c2ln",  # payload is a list
            "eyJhbGciOiJIUzI1NiJ9.e30=.c2ln",  # padded segment
            "eyJhbGciOiJIUzI1NiJ9..c2ln",  # empty payload
            "ëyJ.e30.c2ln",
        ],
    )
    def test_garbage_is_malformed(self, token: str) -> None:
        assert reason(parse, token) == "malformed"

    @pytest.mark.parametrize("signature", ["", "c2ln=", "c"])
    def test_bad_signature_segment_is_malformed(self, signature: str) -> None:
        head, body, _ = make_token().split(".")
        assert reason(parse, f"{head}.{body}.{signature}") == "malformed"

    def test_invalid_utf8_is_malformed(self) -> None:
        payload = b'{"sub": "' + bytes([255]) + b'"}'
        token = f"{b64(HEADER)}.{b64(payload)}.c2ln"
        assert reason(parse, token) == "malformed"

    @pytest.mark.parametrize(
        ("header", "payload"),
        [
            ('{"alg":"HS256","alg":"none"}', json.dumps(claims())),
            ('{"alg":"none","typ":"JWT","alg":"HS256"}', json.dumps(claims())),
            (HEADER, json.dumps(claims())[:-1] + ',"sub":"1"}'),
            (HEADER, json.dumps(claims())[:-1] + ',"groups":["superadmin"]}'),
            (HEADER, '{"a":{"b":1,"b":2}}'),
        ],
        ids=["header-alg", "header-alg-last", "payload-sub", "payload-groups", "nested"],
    )
    def test_duplicate_members_are_malformed(self, header: str, payload: str) -> None:
        # Correctly signed: only the duplicate can make it fail.
        assert reason(parse, raw_token(header, payload)) == "malformed"

    def test_deeply_nested_payload_is_malformed(self) -> None:
        payload = json.dumps(claims())[:-1] + ',"x":' + "[" * 100_000 + "]" * 100_000 + "}"
        assert reason(parse, raw_token(HEADER, payload)) == "malformed"

    def test_deeply_nested_header_is_malformed(self) -> None:
        header = '{"alg":"HS256","x":' + '{"y":' * 50_000 + "1" + "}" * 50_000 + "}"
        assert reason(parse, raw_token(header, json.dumps(claims()))) == "malformed"

    def test_alg_none(self) -> None:
        assert reason(parse, jwt.encode(claims(), None, algorithm="none")) == "bad_algorithm"
        unsigned = forged({"alg": "none", "typ": "JWT"}, signature="")
        assert reason(parse, unsigned) in {"bad_algorithm", "malformed"}

    def test_other_algorithms(self) -> None:
        assert reason(parse, make_token("k" * 64, algorithm="HS512")) == "bad_algorithm"
        assert reason(parse, forged({"alg": "RS256", "typ": "JWT"})) == "bad_algorithm"
        assert reason(parse, forged({"typ": "JWT"})) == "bad_algorithm"

    @pytest.mark.parametrize("crit", [["exp"], ["b64"], [], "x"])
    def test_crit_header_is_refused(self, crit: Any) -> None:
        token = raw_token(json.dumps({"alg": "HS256", "crit": crit}), json.dumps(claims()))
        assert reason(parse, token) == "unsupported_header"


@pytest.mark.parametrize("depth", [17, 40, 400])
def test_nesting_deeper_than_the_limit_is_malformed_on_every_python(depth: int) -> None:
    """Shallow enough for any JSON reader, deeper than a token ever is."""
    body = json.dumps(claims())[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    assert reason(parse, raw_token({"alg": "HS256", "typ": "JWT"}, body, "k" * 32)) == "malformed"
    shallow = json.dumps(claims())[:-1] + ', "x": ' + "[" * 15 + "]" * 15 + "}"
    assert parse(raw_token({"alg": "HS256", "typ": "JWT"}, shallow, "k" * 32)).payload["x"]


class TestReadClaims:
    def test_typed_claims(self) -> None:
        typed = read(make_token(groups=["users", "admin"]))
        assert typed.user_id == 7
        assert typed.iss == "keyrunes"
        identity = typed.to_identity(source="token")
        assert identity.groups == ("users", "admin")
        assert identity.namespace == "public"

    @pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
    def test_missing_registered_claim(self, claim: str) -> None:
        assert reason(read, make_token(**{claim: REMOVE})) == "missing_claim"

    @pytest.mark.parametrize(
        "claim", ["email", "username", "groups", "namespace", "organization_id"]
    )
    def test_missing_keyrunes_claim(self, claim: str) -> None:
        assert reason(read, make_token(**{claim: REMOVE})) == "malformed"

    @pytest.mark.parametrize(
        "overrides",
        [
            {"groups": "users"},
            {"groups": ["users", 3]},
            {"organization_id": "1"},
            {"organization_id": 1.0},
            {"organization_id": True},
            {"sub": 7},
            {"sub": "seven"},
            {"email": None},
            {"namespace": ["public"]},
            {"exp": time.time() + 3600.5},
            {"exp": str(int(time.time()) + 3600)},
            {"iss": 1},
        ],
    )
    def test_wrong_claim_types(self, overrides: dict[str, Any]) -> None:
        assert reason(read, raw_token(HEADER, json.dumps(claims(**overrides)))) == "malformed"

    @pytest.mark.parametrize(
        "overrides",
        [
            {"sub": str(2**63)},  # past the server's 64-bit ids (and a BigIntegerField)
            {"sub": "9" * 400},
            {"sub": "9" * 5000},  # past Python's own limit on int() of a string
            {"sub": "07"},  # a second spelling of user 7
            {"sub": "-7"},
            {"sub": "\u0667"},  # a non-ASCII digit
            {"organization_id": 2**63},
            {"organization_id": -1},
        ],
    )
    def test_ids_the_server_cannot_have(self, overrides: dict[str, Any]) -> None:
        assert reason(read, raw_token(HEADER, json.dumps(claims(**overrides)))) == "malformed"

    def test_the_largest_id_is_read(self) -> None:
        typed = read(raw_token(HEADER, json.dumps(claims(sub=str(2**63 - 1)))))
        assert typed.user_id == 2**63 - 1


class TestClaimRules:
    NOW = 1_800_000_000.0

    def typed(self, **overrides: Any) -> Any:
        base = {"iat": int(self.NOW), "exp": int(self.NOW) + 3600}
        return read(make_token(**{**base, **overrides}))

    def check(self, typed: Any, *, at: float | None = None, leeway: float = 10) -> None:
        moment = self.NOW if at is None else at
        check_claim_rules(typed, at=moment, issuer="keyrunes", leeway=leeway)

    def test_valid(self) -> None:
        self.check(self.typed())

    def test_wrong_issuer(self) -> None:
        assert reason(self.check, self.typed(iss="someone-else")) == "wrong_issuer"

    def test_issuer_is_compared_exactly(self) -> None:
        assert reason(self.check, self.typed(iss="Keyrunes")) == "wrong_issuer"
        assert reason(self.check, self.typed(iss="keyrunes ")) == "wrong_issuer"

    def test_expired_with_leeway(self) -> None:
        typed = self.typed(exp=int(self.NOW) - 5)
        self.check(typed)  # within the 10 s leeway
        assert reason(self.check, typed, leeway=0) == "expired"

    def test_not_yet_valid(self) -> None:
        typed = self.typed(iat=int(self.NOW) + 3600, exp=int(self.NOW) + 7200)
        assert reason(self.check, typed) == "not_yet_valid"
        self.check(typed, at=self.NOW + 3595)


class TestUnverifiedReads:
    def test_unverified_claims(self) -> None:
        assert unverified_claims(make_token(secret="anything" * 4))["sub"] == "7"
        assert unverified_claims("garbage") == {}
        assert unverified_claims(raw_token(HEADER, '{"a":1,"a":2}')) == {}

    def test_token_expiry(self) -> None:
        assert token_expiry("garbage") is None
        assert token_expiry(jwt.encode({"exp": 1.5}, "k" * 32)) is None
        assert token_expiry(jwt.encode({"exp": True}, "k" * 32)) is None
        assert token_expiry(jwt.encode({"exp": 100}, "k" * 32)) == 100.0
