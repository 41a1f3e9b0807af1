"""Token verification: header parsing, local HS256 decoding, tenant checks, remote mode."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from django.core.exceptions import ImproperlyConfigured

from keyrunes_django import cache, signals, tokens
from keyrunes_django.exceptions import InvalidToken, KeyrunesUnavailable
from keyrunes_django.identity import VerifiedIdentity

SECRET = "k" * 32
_REMOVE = object()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    data: dict[str, Any] = {
        "sub": "7",
        "email": "alice@example.com",
        "username": "alice",
        "groups": ["users"],
        "namespace": "public",
        "organization_id": 1,
        "exp": now + 3600,
        "iat": now,
        "iss": "keyrunes",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not _REMOVE}


def make_token(secret: str = SECRET, algorithm: str = "HS256", **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), secret, algorithm=algorithm)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def forged(header: dict[str, Any], signature: str = "c2ln") -> str:
    return f"{_b64(header)}.{_b64(claims())}.{signature}"


@pytest.fixture(autouse=True)
def _empty_shared_cache() -> Iterator[None]:
    from django.core.cache import caches

    caches["default"].clear()
    yield
    caches["default"].clear()  # leave no verified credential to other tests


@pytest.fixture
def local(settings: Any) -> dict[str, Any]:
    settings.KEYRUNES = {
        "BASE_URL": "http://127.0.0.1:9",
        "JWT_SECRET": SECRET,
        "VERIFICATION_MODE": "local",
        "RETRIES": 0,
    }
    return settings.KEYRUNES  # type: ignore[no-any-return]


@pytest.fixture
def rejections() -> Any:
    seen: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        seen.append(kwargs)

    signals.credential_rejected.connect(receiver)
    yield seen
    signals.credential_rejected.disconnect(receiver)


# ----------------------------------------------------------------- header parsing


class TestParseAuthorizationHeader:
    def test_bearer_token(self) -> None:
        assert tokens.parse_authorization_header("Bearer abc.def.ghi") == "abc.def.ghi"

    @pytest.mark.parametrize("value", [None, ""])
    def test_absent(self, value: str | None) -> None:
        assert tokens.parse_authorization_header(value) is None

    @pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Token abc", "Bearerabc", "   "])
    def test_other_schemes_are_not_ours(self, value: str) -> None:
        assert tokens.parse_authorization_header(value) is None

    @pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
    def test_scheme_is_case_insensitive(self, scheme: str) -> None:
        assert tokens.parse_authorization_header(f"{scheme} a.b.c") == "a.b.c"

    @pytest.mark.parametrize("value", ["Bearer    a.b.c", "  Bearer a.b.c  ", "Bearer\ta.b.c"])
    def test_extra_whitespace_is_tolerated(self, value: str) -> None:
        assert tokens.parse_authorization_header(value) == "a.b.c"

    @pytest.mark.parametrize("value", ["Bearer", "Bearer ", "bearer    "])
    def test_bearer_without_token(self, value: str) -> None:
        with pytest.raises(InvalidToken) as info:
            tokens.parse_authorization_header(value)
        assert info.value.reason == "missing_token"

    @pytest.mark.parametrize(
        "value", ["Bearer a.b.c d", "Bearer a,b", 'Bearer a"b', "Bearer ==abc", "Bearer a;b"]
    )
    def test_malformed_token(self, value: str) -> None:
        with pytest.raises(InvalidToken) as info:
            tokens.parse_authorization_header(value)
        assert info.value.reason == "malformed"

    @pytest.mark.parametrize("value", ["Bearer tökén", "Bearer a.b.c\u2028", "Béarer abc"])
    def test_non_ascii(self, value: str) -> None:
        with pytest.raises(InvalidToken) as info:
            tokens.parse_authorization_header(value)
        assert info.value.reason == "malformed"

    def test_oversized_header_refused_first(self) -> None:
        # Even a non-ASCII oversized value is refused for its size, before anything else.
        with pytest.raises(InvalidToken) as info:
            tokens.parse_authorization_header("Bearer " + "é" * 16 * 1024)
        assert info.value.reason == "header_too_large"

    def test_limit_is_inclusive(self) -> None:
        value = "Bearer " + "a" * (tokens.MAX_CREDENTIAL_LENGTH - 7)
        assert tokens.parse_authorization_header(value) is not None
        with pytest.raises(InvalidToken):
            tokens.parse_authorization_header(value + "a")

    def test_padding_allowed(self) -> None:
        assert tokens.parse_authorization_header("Bearer abc==") == "abc=="


class TestParseOrganizationKeyHeader:
    def test_uuid_forms(self) -> None:
        key = "3f1c2a9e-0b7d-4c1e-9f3a-5d6b7c8e9f00"
        assert tokens.parse_organization_key_header(key) == key
        assert tokens.parse_organization_key_header(f"  {key} ") == key
        assert tokens.parse_organization_key_header(key.replace("-", "")) is not None

    @pytest.mark.parametrize("value", [None, "", "   "])
    def test_absent(self, value: str | None) -> None:
        assert tokens.parse_organization_key_header(value) is None

    @pytest.mark.parametrize("value", ["not-a-uuid", "ключ", "1234"])
    def test_malformed(self, value: str) -> None:
        with pytest.raises(InvalidToken) as info:
            tokens.parse_organization_key_header(value)
        assert info.value.reason == "malformed"

    def test_oversized(self) -> None:
        with pytest.raises(InvalidToken) as info:
            tokens.parse_organization_key_header("a" * 16 * 1024)
        assert info.value.reason == "header_too_large"


# ------------------------------------------------------------------- local mode


@pytest.mark.usefixtures("local")
class TestDecodeLocal:
    def test_valid_token(self) -> None:
        identity = tokens.decode_local(make_token(groups=["users", "admin"]))
        assert identity == VerifiedIdentity(
            user_id=7,
            username="alice",
            email="alice@example.com",
            namespace="public",
            organization_id=1,
            groups=("users", "admin"),
            expires_at=identity.expires_at,
            issued_at=identity.issued_at,
            source="token",
        )
        assert identity.expires_at is not None
        assert identity.expires_at.timestamp() > time.time()

    def _reason(self, token: str) -> str:
        with pytest.raises(InvalidToken) as info:
            tokens.decode_local(token)
        return info.value.reason

    def test_expired(self) -> None:
        past = int(time.time()) - 3600
        assert self._reason(make_token(exp=past, iat=past - 3600)) == "expired"

    def test_leeway(self, local: dict[str, Any], settings: Any) -> None:
        token = make_token(exp=int(time.time()) - 5)
        assert tokens.decode_local(token).user_id == 7  # default leeway 10 s
        settings.KEYRUNES = {**local, "JWT_LEEWAY": 0}
        assert self._reason(token) == "expired"

    def test_wrong_signature(self) -> None:
        assert self._reason(make_token(secret="x" * 32)) == "bad_signature"

    def test_tampered_payload(self) -> None:
        header, _, signature = make_token().split(".")
        payload = _b64(claims(groups=["superadmin"]))
        assert self._reason(f"{header}.{payload}.{signature}") == "bad_signature"

    def test_wrong_issuer(self) -> None:
        assert self._reason(make_token(iss="someone-else")) == "wrong_issuer"

    def test_alg_none(self) -> None:
        token = jwt.encode(claims(), None, algorithm="none")
        assert self._reason(token) == "bad_algorithm"
        assert self._reason(forged({"alg": "none", "typ": "JWT"}, signature="")) in {
            "bad_algorithm",
            "malformed",
        }

    def test_hs512_refused(self) -> None:
        assert self._reason(make_token(SECRET * 2, algorithm="HS512")) == "bad_algorithm"

    def test_rs256_confusion_refused(self) -> None:
        assert self._reason(forged({"alg": "RS256", "typ": "JWT"})) == "bad_algorithm"

    @pytest.mark.parametrize("claim", ["exp", "iat", "iss", "sub"])
    def test_missing_registered_claim(self, claim: str) -> None:
        assert self._reason(make_token(**{claim: _REMOVE})) == "missing_claim"

    @pytest.mark.parametrize(
        "claim", ["email", "username", "groups", "namespace", "organization_id"]
    )
    def test_missing_keyrunes_claim(self, claim: str) -> None:
        assert self._reason(make_token(**{claim: _REMOVE})) == "malformed"

    @pytest.mark.parametrize(
        "overrides",
        [
            {"groups": "users"},
            {"groups": ["users", 3]},
            {"organization_id": "1"},
            {"organization_id": 1.0},
            {"sub": 7},
            {"sub": "seven"},
            {"email": None},
            {"namespace": ["public"]},
        ],
    )
    def test_wrong_claim_types(self, overrides: dict[str, Any]) -> None:
        assert self._reason(make_token(**overrides)) == "malformed"

    def test_float_exp_refused(self) -> None:
        assert self._reason(make_token(exp=time.time() + 3600.5)) == "malformed"

    def test_iat_in_future(self) -> None:
        assert self._reason(make_token(iat=int(time.time()) + 3600)) == "not_yet_valid"

    @pytest.mark.parametrize("token", ["abc", "a.b.c", "", "....", "eyJhbGciOiJIUzI1NiJ9.e30"])
    def test_garbage(self, token: str) -> None:
        assert self._reason(token) == "malformed"

    def test_needs_secret(self, settings: Any) -> None:
        settings.KEYRUNES = {"VERIFICATION_MODE": "local"}
        with pytest.raises(ImproperlyConfigured):
            tokens.decode_local(make_token())


@pytest.mark.usefixtures("local")
class TestAuthenticateTokenLocal:
    def test_returns_identity_and_caches(self, monkeypatch: pytest.MonkeyPatch) -> None:
        token = make_token()
        calls: list[str] = []
        real = tokens.decode_local

        def counting(value: str) -> VerifiedIdentity:
            calls.append(value)
            return real(value)

        monkeypatch.setattr(tokens, "decode_local", counting)
        first = tokens.authenticate_token(token)
        second = tokens.authenticate_token(token)
        assert first == second
        assert first.user_id == 7
        assert len(calls) == 1

    def test_refusals_are_signalled_and_cached(
        self, rejections: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        token = make_token(secret="x" * 32)
        calls: list[str] = []
        real = tokens.decode_local
        monkeypatch.setattr(tokens, "decode_local", lambda t: calls.append(t) or real(t))
        for _ in range(2):
            with pytest.raises(InvalidToken) as info:
                tokens.authenticate_token(token)
            assert info.value.reason == "bad_signature"
        assert len(calls) == 1
        assert [r["reason"] for r in rejections] == ["bad_signature", "bad_signature"]
        assert rejections[0]["credential_hash"] == cache.credential_hash(token)
        assert token not in json.dumps([r["credential_hash"] for r in rejections])

    def test_wrong_namespace(self) -> None:
        with pytest.raises(InvalidToken) as info:
            tokens.authenticate_token(make_token(namespace="company_x"))
        assert info.value.reason == "wrong_namespace"

    def test_tenant_service(self, local: dict[str, Any], settings: Any) -> None:
        settings.KEYRUNES = {**local, "NAMESPACE": "company_x", "ORGANIZATION_SCOPE": 2}
        ok = tokens.authenticate_token(make_token(namespace="company_x", organization_id=2))
        assert ok.organization_id == 2
        with pytest.raises(InvalidToken) as info:
            tokens.authenticate_token(make_token(namespace="company_x", organization_id=3))
        assert info.value.reason == "scope_mismatch"
        with pytest.raises(InvalidToken) as info:
            tokens.authenticate_token(make_token(namespace="public", organization_id=2))
        assert info.value.reason == "wrong_namespace"

    def test_oversized_token(self, rejections: list[dict[str, Any]]) -> None:
        with pytest.raises(InvalidToken) as info:
            tokens.authenticate_token("a" * 20_000)
        assert info.value.reason == "header_too_large"
        assert rejections[0]["reason"] == "header_too_large"

    def test_cached_entry_expires_with_token(self, monkeypatch: pytest.MonkeyPatch) -> None:
        exp = int(time.time()) + 60
        token = make_token(exp=exp)
        tokens.authenticate_token(token)
        entry = cache.get_state().peek("token", cache.credential_hash(token))
        assert entry is not None
        assert entry.fresh_until == pytest.approx(exp)
        monkeypatch.setattr(cache, "now", lambda: exp + 1.0)
        assert cache.get_state().peek("token", cache.credential_hash(token)) is None


@pytest.mark.django_db
@pytest.mark.usefixtures("local")
class TestAuthenticateTokenUser:
    def test_mirrors_once(self, django_assert_num_queries: Any) -> None:
        token = make_token(groups=["users", "admin"])
        user, identity = tokens.authenticate_token_user(token)
        assert user.username == "alice"
        assert user.is_staff  # tenant admin of public -> is_staff by default
        assert identity.user_id == 7
        with django_assert_num_queries(0):
            again, _ = tokens.authenticate_token_user(token)
        assert again.pk == user.pk

    def test_inactive_local_user(self, rejections: list[dict[str, Any]]) -> None:
        token = make_token()
        user, _ = tokens.authenticate_token_user(token)
        user.is_active = False
        with pytest.raises(InvalidToken) as info:
            tokens.authenticate_token_user(token)
        assert info.value.reason == "user_inactive"
        assert tokens.peek_token_user(token) is None

    def test_mirror_refused(self, local: dict[str, Any], settings: Any) -> None:
        from keyrunes_django.exceptions import MirrorRefused

        settings.KEYRUNES = {**local, "REQUIRE_GROUP": "staff"}
        with pytest.raises(MirrorRefused):
            tokens.authenticate_token_user(make_token())

    def test_peek(self) -> None:
        token = make_token()
        assert tokens.peek_token_user(token) is None
        assert tokens.peek_token_user("a" * 20_000) is None
        user, identity = tokens.authenticate_token_user(token)
        assert tokens.peek_token_user(token) == (user, identity)


# ------------------------------------------------------------------ remote mode


@pytest.fixture
def remote(keyrunes: Any, settings: Any) -> Any:
    settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": "remote"}
    return keyrunes


@pytest.mark.parametrize("quirks", [False, True], ids=["default", "server_quirks"])
class TestRemote:
    @pytest.fixture
    def kr(self, remote: Any, quirks: bool) -> Any:
        remote.server_quirks = quirks
        return remote

    def test_valid(self, kr: Any) -> None:
        user = kr.create_user(username="bob", groups=("users",))
        token = kr.issue_token(user)
        identity = tokens.authenticate_token(token)
        assert identity.username == "bob"
        assert identity.user_id == user.user_id
        assert identity.source == "remote"
        assert identity.expires_at is not None
        assert kr.requests_to("/api/me") == 1
        tokens.authenticate_token(token)
        assert kr.requests_to("/api/me") == 1

    def test_expired_refused_without_network(self, kr: Any) -> None:
        user = kr.create_user()
        token = kr.issue_token(user, lifetime=3600, issued_at=int(time.time()) - 7200)
        with pytest.raises(InvalidToken) as info:
            tokens.authenticate_token(token)
        assert info.value.reason == "expired"
        assert kr.requests_to("/api/me") == 0

    def test_rejected_by_server(self, kr: Any) -> None:
        user = kr.create_user()
        token = kr.issue_token(user)
        kr.delete_user(user)
        for _ in range(3):
            with pytest.raises(InvalidToken) as info:
                tokens.authenticate_token(token)
            assert info.value.reason == "rejected"
        assert kr.requests_to("/api/me") == 1  # negative cache

    def test_garbage_refused_without_network(self, kr: Any) -> None:
        for token in ("abc", "a.b.c"):
            with pytest.raises(InvalidToken) as info:
                tokens.authenticate_token(token)
            assert info.value.reason == "malformed"
        no_exp = jwt.encode(claims(exp=_REMOVE), "x" * 32, algorithm="HS256")
        with pytest.raises(InvalidToken) as info:
            tokens.authenticate_token(no_exp)
        assert info.value.reason == "missing_claim"
        float_exp = jwt.encode(claims(exp=time.time() + 60.5), "x" * 32, algorithm="HS256")
        with pytest.raises(InvalidToken) as info:
            tokens.authenticate_token(float_exp)
        assert info.value.reason == "malformed"
        assert kr.requests_to("/api/me") == 0

    def test_outage_without_cache(self, kr: Any) -> None:
        token = kr.issue_token(kr.create_user())
        kr.faults.add(r"^/api/me$", status=503)
        with pytest.raises(KeyrunesUnavailable):
            tokens.authenticate_token(token)

    def test_garbage_answer_is_an_outage(self, kr: Any) -> None:
        token = kr.issue_token(kr.create_user())
        kr.faults.add(r"^/api/me$", malformed=True)
        with pytest.raises(KeyrunesUnavailable):
            tokens.authenticate_token(token)

    def test_unexpected_status_is_an_outage(self, kr: Any) -> None:
        token = kr.issue_token(kr.create_user())
        kr.faults.add(r"^/api/me$", status=404)
        with pytest.raises(KeyrunesUnavailable):
            tokens.authenticate_token(token)

    def test_wrong_namespace(self, kr: Any) -> None:
        org = kr.create_organization("Company X", "company_x")
        user = kr.create_user(namespace="company_x", organization_id=org.organization_id)
        with pytest.raises(InvalidToken) as info:
            tokens.authenticate_token(kr.issue_token(user))
        assert info.value.reason == "wrong_namespace"

    def test_single_flight_with_the_emulator(self, kr: Any) -> None:
        import threading

        kr.faults.add(r"^/api/me$", delay=0.2)
        token = kr.issue_token(kr.create_user())
        results: list[VerifiedIdentity] = []
        threads = [
            threading.Thread(target=lambda: results.append(tokens.authenticate_token(token)))
            for _ in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 6
        assert kr.requests_to("/api/me") == 1

    def test_groups_from_server_not_claims(self, kr: Any) -> None:
        user = kr.create_user(groups=("users",))
        token = kr.issue_token(user)
        kr.create_group("developers")
        kr.add_to_group(user, "developers")
        identity = tokens.authenticate_token(token)
        assert identity.groups is not None
        assert "developers" in identity.groups


@pytest.mark.django_db
@pytest.mark.usefixtures("local")
class TestWarmPath:
    def test_peek_needs_a_mirrored_user(self) -> None:
        token = make_token()
        tokens.authenticate_token(token)  # verified, not mirrored
        assert tokens.peek_token_user(token) is None
        tokens.authenticate_token_user(token)
        assert tokens.peek_bearer_user("Bearer " + token) is not None
        assert tokens.peek_bearer_user("bearer " + token) is None  # full path instead
        assert tokens.peek_bearer_user(None) is None

    def test_settings_change_drops_warm_entries(self, local: dict[str, Any], settings: Any) -> None:
        token = make_token()
        tokens.authenticate_token_user(token)
        settings.KEYRUNES = {**local, "NAMESPACE": "company_x"}
        assert tokens.peek_token_user(token) is None
        with pytest.raises(InvalidToken) as info:
            tokens.authenticate_token_user(token)
        assert info.value.reason == "wrong_namespace"


@pytest.mark.parametrize("key", ["", "   "])
def test_blank_organization_key(key: str, rejections: list[dict[str, Any]]) -> None:
    with pytest.raises(InvalidToken) as info:
        tokens.authenticate_organization_key(key)
    assert info.value.reason == "malformed"
    assert rejections[0]["reason"] == "malformed"
