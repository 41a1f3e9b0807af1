"""TokenAuthenticator and the thin functions over it: caching, users, remote mode.

Header parsing is tested in test_credentials.py, claim reading in
test_claims.py, local/remote verification without the cache in
test_verification.py.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import jwt
import pytest
from django.test import RequestFactory

from keyrunes_django import tokens
from keyrunes_django.cache import credential_hash
from keyrunes_django.claims import ParsedToken
from keyrunes_django.exceptions import InvalidToken, KeyrunesUnavailable, MirrorRefused
from keyrunes_django.identity import VerifiedIdentity
from keyrunes_django.tokens import (
    TokenAuthenticator,
    authenticate_organization_key,
    authenticate_token,
    authenticate_token_user,
    get_authenticator,
)
from tests.conftest import FrozenClock
from tests.factories import REMOVE, claims, local_settings, make_token

# authenticate_token reads revocation records from the database when the cache has none.
pytestmark = [pytest.mark.usefixtures("clean_caches"), pytest.mark.django_db]


def warm_user(token: str) -> Any:
    """What the warm path (no I/O) knows about ``token``: (user, identity) or None."""
    found = get_authenticator().warm("Bearer " + token)
    return None if found is None else (found.user, found.principal)


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every local signature check the verification layer makes (what a cache hit saves)."""
    from keyrunes_django import verification

    calls: list[bytes] = []
    real = verification.verify_signature

    def counting(parsed: ParsedToken) -> None:
        calls.append(parsed.signing_input)
        real(parsed)

    monkeypatch.setattr(verification, "verify_signature", counting)
    return calls


@pytest.mark.usefixtures("local")
class TestAuthenticateTokenLocal:
    def test_returns_identity(self, verify_calls: list[bytes]) -> None:
        token = make_token()
        first = authenticate_token(token)
        second = authenticate_token(token)
        assert first == second
        assert first.user_id == 7
        assert first.source == "token"
        # Without a user there is no memo, and a local verification is not
        # remembered on its own: each call checks the signature.
        assert len(verify_calls) == 2
        assert get_authenticator().cache.peek("token", credential_hash(token)) is None

    @pytest.mark.django_db
    def test_a_mirrored_token_is_checked_once(self, verify_calls: list[bytes]) -> None:
        token = make_token()
        request = RequestFactory().get("/", HTTP_AUTHORIZATION="Bearer " + token)
        auth = get_authenticator()
        first = auth.authenticate(request)
        second = auth.authenticate(request)
        assert first is not None
        assert second is not None
        assert first.principal == second.principal
        assert len(verify_calls) == 1

    def test_refusals_are_signalled(
        self, rejections: list[dict[str, Any]], verify_calls: list[bytes]
    ) -> None:
        token = make_token(secret="x" * 32)
        for _ in range(2):
            with pytest.raises(InvalidToken) as info:
                authenticate_token(token)
            assert info.value.reason == "bad_signature"
            assert info.value.scheme == "Bearer"
        # Refusals are not remembered in local mode: a signature check costs less
        # than an entry, and bad tokens cannot push good ones out of the LRU.
        assert len(verify_calls) == 2
        assert [r["reason"] for r in rejections] == ["bad_signature", "bad_signature"]
        assert rejections[0]["credential_hash"] == credential_hash(token)
        assert token not in json.dumps([r["credential_hash"] for r in rejections])

    def test_wrong_namespace(self) -> None:
        with pytest.raises(InvalidToken) as info:
            authenticate_token(make_token(namespace="company_x"))
        assert info.value.reason == "wrong_namespace"

    def test_tenant_service(self, settings: Any) -> None:
        settings.KEYRUNES = local_settings(NAMESPACE="company_x", ORGANIZATION_SCOPE=2)
        ok = authenticate_token(make_token(namespace="company_x", organization_id=2))
        assert ok.organization_id == 2
        with pytest.raises(InvalidToken) as info:
            authenticate_token(make_token(namespace="company_x", organization_id=3))
        assert info.value.reason == "scope_mismatch"
        with pytest.raises(InvalidToken) as info:
            authenticate_token(make_token(namespace="public", organization_id=2))
        assert info.value.reason == "wrong_namespace"

    def test_oversized_token(self, rejections: list[dict[str, Any]]) -> None:
        with pytest.raises(InvalidToken) as info:
            authenticate_token("a" * 20_000)
        assert info.value.reason == "header_too_large"
        assert rejections[0]["reason"] == "header_too_large"

    @pytest.mark.django_db
    def test_remembered_answer_expires_with_token(self, frozen_clock: FrozenClock) -> None:
        exp = int(frozen_clock.value) + 60
        token = make_token(exp=exp)
        authenticate_token_user(token)
        frozen_clock.value = exp - 1.0
        get_authenticator().refresh_revocations()
        assert warm_user(token) is not None
        frozen_clock.value = exp + 1.0
        assert warm_user(token) is None

    def test_local_answers_stay_in_this_process(self) -> None:
        # Local verification is cheaper than a shared-cache round trip.
        from django.core.cache import caches

        authenticate_token(make_token())
        shared = get_authenticator().cache.shared
        assert caches["default"].get(shared.key("token", credential_hash(make_token()))) is None


@pytest.mark.django_db
@pytest.mark.usefixtures("local")
class TestAuthenticateTokenUser:
    def test_mirrors_once(self, django_assert_num_queries: Any) -> None:
        token = make_token(groups=["users", "admin"])
        user, identity = authenticate_token_user(token)
        assert user.username == "alice"
        assert user.is_staff  # tenant admin of public -> is_staff by default
        assert identity.user_id == 7
        with django_assert_num_queries(0):
            again, _ = authenticate_token_user(token)
        assert again.pk == user.pk

    def test_inactive_local_user(self, rejections: list[dict[str, Any]]) -> None:
        token = make_token()
        user, _ = authenticate_token_user(token)
        user.is_active = False
        user.save()
        with pytest.raises(InvalidToken) as info:
            authenticate_token_user(token)
        assert info.value.reason == "user_inactive"
        assert rejections[-1]["reason"] == "user_inactive"
        assert warm_user(token) is None

    def test_mirror_refused(self, settings: Any) -> None:
        settings.KEYRUNES = local_settings(REQUIRE_GROUP="staff")
        with pytest.raises(MirrorRefused):
            authenticate_token_user(make_token())

    def test_each_request_gets_its_own_user(self) -> None:
        token = make_token()
        user, _ = authenticate_token_user(token)
        user.first_name = "changed by one request"
        again = warm_user(token)
        assert again is not None
        assert again[0] is not user
        assert again[0].pk == user.pk
        assert again[0].first_name != "changed by one request"
        assert warm_user(token)[0] is not again[0]

    def test_warm_path_after_mirror(self) -> None:
        token = make_token()
        assert warm_user(token) is None
        assert get_authenticator().warm("Bearer " + "a" * 20_000) is None
        user, identity = authenticate_token_user(token)
        assert warm_user(token) == (user, identity)


# ------------------------------------------------------------------ remote mode


@pytest.mark.parametrize("quirks", [False, True], ids=["default", "server_quirks"])
class TestRemote:
    @pytest.fixture
    def kr(self, remote: Any, quirks: bool) -> Any:
        remote.server_quirks = quirks
        return remote

    def test_valid(self, kr: Any) -> None:
        user = kr.create_user(username="bob", groups=("users",))
        token = kr.issue_token(user)
        identity = authenticate_token(token)
        assert identity.username == "bob"
        assert identity.user_id == user.user_id
        assert identity.source == "remote"
        assert identity.expires_at is not None
        assert kr.requests_to("/api/me") == 1
        authenticate_token(token)
        assert kr.requests_to("/api/me") == 1

    def test_expired_refused_without_network(self, kr: Any) -> None:
        user = kr.create_user()
        token = kr.issue_token(user, lifetime=3600, issued_at=int(time.time()) - 7200)
        with pytest.raises(InvalidToken) as info:
            authenticate_token(token)
        assert info.value.reason == "expired"
        assert kr.requests_to("/api/me") == 0

    def test_rejected_by_server(self, kr: Any) -> None:
        user = kr.create_user()
        token = kr.issue_token(user)
        kr.delete_user(user)
        for _ in range(3):
            with pytest.raises(InvalidToken) as info:
                authenticate_token(token)
            assert info.value.reason == "rejected"
        assert kr.requests_to("/api/me") == 1  # negative cache

    def test_garbage_refused_without_network(self, kr: Any) -> None:
        for token in ("abc", "a.b.c"):
            with pytest.raises(InvalidToken) as info:
                authenticate_token(token)
            assert info.value.reason == "malformed"
        no_exp = jwt.encode(claims(exp=REMOVE), "x" * 32, algorithm="HS256")
        with pytest.raises(InvalidToken) as info:
            authenticate_token(no_exp)
        assert info.value.reason == "missing_claim"
        float_exp = jwt.encode(claims(exp=time.time() + 60.5), "x" * 32, algorithm="HS256")
        with pytest.raises(InvalidToken) as info:
            authenticate_token(float_exp)
        assert info.value.reason == "malformed"
        assert kr.requests_to("/api/me") == 0

    def test_outage_without_cache(self, kr: Any, service_errors: list[dict[str, Any]]) -> None:
        token = kr.issue_token(kr.create_user())
        kr.faults.add(r"^/api/me$", status=503)
        with pytest.raises(KeyrunesUnavailable):
            authenticate_token(token)
        assert [e["operation"] for e in service_errors] == ["verify_token"]
        assert service_errors[0]["served_stale"] is False

    def test_garbage_answer_is_an_outage(self, kr: Any) -> None:
        token = kr.issue_token(kr.create_user())
        kr.faults.add(r"^/api/me$", malformed=True)
        with pytest.raises(KeyrunesUnavailable):
            authenticate_token(token)

    def test_unexpected_status_is_an_outage(self, kr: Any) -> None:
        token = kr.issue_token(kr.create_user())
        kr.faults.add(r"^/api/me$", status=404)
        with pytest.raises(KeyrunesUnavailable):
            authenticate_token(token)

    def test_wrong_namespace(self, kr: Any) -> None:
        org = kr.create_organization("Company X", "company_x")
        user = kr.create_user(namespace="company_x", organization_id=org.organization_id)
        with pytest.raises(InvalidToken) as info:
            authenticate_token(kr.issue_token(user))
        assert info.value.reason == "wrong_namespace"
        assert kr.requests_to("/api/me") == 0  # the tenant rule comes before the network

    def test_single_flight_with_the_emulator(self, kr: Any) -> None:
        kr.faults.add(r"^/api/me$", delay=0.2)
        token = kr.issue_token(kr.create_user())
        results: list[VerifiedIdentity] = []
        threads = [
            threading.Thread(target=lambda: results.append(authenticate_token(token)))
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
        identity = authenticate_token(token)
        assert identity.groups is not None
        assert "developers" in identity.groups


@pytest.mark.django_db
@pytest.mark.usefixtures("local")
class TestWarmPath:
    def test_warm_needs_a_mirrored_user(self) -> None:
        token = make_token()
        authenticate_token(token)  # verified, not mirrored
        assert warm_user(token) is None
        authenticate_token_user(token)
        auth = get_authenticator()
        assert auth.warm("Bearer " + token) is not None
        assert auth.warm("bearer " + token) is None  # the full path instead
        assert auth.warm(None) is None

    def test_warm_entry_ends_with_the_token(self, frozen_clock: FrozenClock) -> None:
        exp = int(frozen_clock.value) + 60
        token = make_token(exp=exp)
        authenticate_token_user(token)
        assert warm_user(token) is not None
        frozen_clock.value = exp + 1.0
        assert warm_user(token) is None

    def test_settings_change_drops_warm_entries(self, settings: Any) -> None:
        token = make_token()
        authenticate_token_user(token)
        before = get_authenticator()
        settings.KEYRUNES = local_settings(NAMESPACE="company_x")
        assert get_authenticator() is not before
        assert warm_user(token) is None
        with pytest.raises(InvalidToken) as info:
            authenticate_token_user(token)
        assert info.value.reason == "wrong_namespace"

    def test_forget_drops_every_layer(self) -> None:
        token = make_token()
        authenticate_token_user(token)
        auth = get_authenticator()
        auth.forget("token", token)
        assert warm_user(token) is None
        assert auth.cache.peek("token", credential_hash(token)) is None


@pytest.mark.django_db
@pytest.mark.usefixtures("local")
class TestAuthenticatorSteps:
    """The sequence stays in the class; a subclass overrides one step."""

    def test_authenticate_request(self) -> None:
        token = make_token()
        request = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {token}")
        result = get_authenticator().authenticate(request)
        assert result is not None
        assert result.user.username == "alice"
        assert isinstance(result.principal, VerifiedIdentity)
        assert get_authenticator().authenticate(RequestFactory().get("/")) is None

    def test_overridden_header_step(self) -> None:
        class CustomHeader(TokenAuthenticator):
            def get_header(self, request: Any) -> str | None:
                value = request.META.get("HTTP_X_AUTH")
                return f"Bearer {value}" if value else None

        request = RequestFactory().get("/", HTTP_X_AUTH=make_token())
        result = CustomHeader().authenticate(request)
        assert result is not None
        assert result.user.username == "alice"

    def test_overridden_mirror_step(self) -> None:
        mirrored: list[int] = []

        class Counting(TokenAuthenticator):
            def mirror(self, identity: VerifiedIdentity) -> Any:
                mirrored.append(identity.user_id)
                return super().mirror(identity)

        auth = Counting()
        request = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {make_token()}")
        auth.authenticate(request)
        auth.authenticate(request)
        assert mirrored == [7]  # once per token and process

    def test_bad_header_is_reported_once(self, rejections: list[dict[str, Any]]) -> None:
        request = RequestFactory().get("/", HTTP_AUTHORIZATION="Bearer a b")
        with pytest.raises(InvalidToken):
            get_authenticator().authenticate(request)
        assert [r["reason"] for r in rejections] == ["malformed"]
        assert rejections[0]["request"] is request


@pytest.mark.parametrize("key", ["", "   "])
def test_blank_organization_key(key: str, rejections: list[dict[str, Any]]) -> None:
    with pytest.raises(InvalidToken) as info:
        authenticate_organization_key(key)
    assert info.value.reason == "malformed"
    assert info.value.scheme == "OrganizationKey"
    assert rejections[0]["reason"] == "malformed"


class TestOrganizationKeyFunction:
    def test_valid_key_of_this_service(self, org_service: Any) -> None:
        key = org_service.organization_key(1)
        principal = authenticate_organization_key(key)
        assert principal.organization_id == 1
        assert authenticate_organization_key(key.upper()) == principal
        assert org_service.requests_to("/api/verify-org-key") == 1

    def test_refused_without_an_established_organization(
        self, keyrunes: Any, rejections: list[dict[str, Any]]
    ) -> None:
        with pytest.raises(InvalidToken) as info:
            authenticate_organization_key(keyrunes.organization_key(1))
        assert info.value.reason == "organization_unknown"
        assert info.value.scheme == "OrganizationKey"
        assert rejections[0]["reason"] == "organization_unknown"


class TestReturningUser:
    """A returning user's new token costs one read query and no writes."""

    def test_new_token_same_claims_one_read(
        self, keyrunes: Any, keyrunes_user: Any, settings: Any
    ) -> None:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": "local"}
        first = keyrunes.issue_token(keyrunes_user, issued_at=int(time.time()) - 100)
        tokens.authenticate_token_user(first)
        second = keyrunes.issue_token(keyrunes_user, issued_at=int(time.time()) - 50)
        with CaptureQueriesContext(connection) as queries:
            user, _ = tokens.authenticate_token_user(second)
        assert user.get_username() == keyrunes_user.username
        assert len(queries.captured_queries) == 1
        assert queries.captured_queries[0]["sql"].startswith("SELECT")

    def test_changed_claims_are_mirrored(
        self, keyrunes: Any, keyrunes_user: Any, settings: Any
    ) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": "local"}
        tokens.authenticate_token_user(keyrunes.issue_token(keyrunes_user))
        keyrunes.create_group("editors")
        keyrunes.add_to_group(keyrunes.get_user(keyrunes_user.user_id), "editors")
        user, _ = tokens.authenticate_token_user(
            keyrunes.issue_token(keyrunes_user, issued_at=int(time.time()) + 1)
        )
        assert user.groups.filter(name="editors").exists()

    def test_a_row_changed_locally_is_read_fresh(
        self, keyrunes: Any, keyrunes_user: Any, settings: Any
    ) -> None:
        from django.contrib.auth import get_user_model

        settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": "local"}
        tokens.authenticate_token_user(keyrunes.issue_token(keyrunes_user))
        get_user_model().objects.filter(username=keyrunes_user.username).update(is_active=False)
        with pytest.raises(InvalidToken) as refused:
            tokens.authenticate_token_user(
                keyrunes.issue_token(keyrunes_user, issued_at=int(time.time()) + 1)
            )
        assert refused.value.reason == "user_inactive"
