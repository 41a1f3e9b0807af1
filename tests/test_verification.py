"""verification.py: token -> identity and key -> principal, local and remote, no cache."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from keyrunes_django.claims import parse
from keyrunes_django.exceptions import InvalidToken, KeyrunesUnavailable
from keyrunes_django.identity import VerifiedIdentity
from keyrunes_django.verification import (
    verify_organization_key,
    verify_signature,
    verify_token,
)
from tests.factories import UNKNOWN_KEY, b64, claims, local_settings, make_token, tenant


def reason(func: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidToken) as info:
        func(*args, **kwargs)
    return info.value.reason


@pytest.mark.usefixtures("local")
class TestLocal:
    def test_valid_token(self) -> None:
        identity = verify_token(make_token(groups=["users", "admin"]))
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

    def test_expired(self) -> None:
        past = int(time.time()) - 3600
        assert reason(verify_token, make_token(exp=past, iat=past - 3600)) == "expired"

    def test_leeway(self, settings: Any) -> None:
        token = make_token(exp=int(time.time()) - 5)
        assert verify_token(token).user_id == 7  # default leeway 10 s
        settings.KEYRUNES = local_settings(JWT_LEEWAY=0)
        assert reason(verify_token, token) == "expired"

    def test_wrong_signature(self) -> None:
        assert reason(verify_token, make_token(secret="x" * 32)) == "bad_signature"

    def test_tampered_payload(self) -> None:
        header, _, signature = make_token().split(".")
        payload = b64(claims(groups=["superadmin"]))
        assert reason(verify_token, f"{header}.{payload}.{signature}") == "bad_signature"

    def test_wrong_issuer(self) -> None:
        assert reason(verify_token, make_token(iss="someone-else")) == "wrong_issuer"

    def test_configured_issuer(self, settings: Any) -> None:
        settings.KEYRUNES = local_settings(JWT_ISSUER="keyrunes-staging")
        assert verify_token(make_token(iss="keyrunes-staging")).user_id == 7
        assert reason(verify_token, make_token()) == "wrong_issuer"

    def test_iat_in_future(self) -> None:
        assert reason(verify_token, make_token(iat=int(time.time()) + 3600)) == "not_yet_valid"

    def test_tenant_rule_before_signature(self) -> None:
        # A wrong namespace is refused as such even with a wrong signature: cheapest first.
        token = make_token(secret="x" * 32, namespace="company_x")
        assert reason(verify_token, token) == "wrong_namespace"

    def test_needs_secret(self, settings: Any) -> None:
        settings.KEYRUNES = {"VERIFICATION_MODE": "local"}
        with pytest.raises(ImproperlyConfigured):
            verify_token(make_token())

    def test_verify_signature(self) -> None:
        verify_signature(parse(make_token()))
        assert reason(verify_signature, parse(make_token(secret="y" * 32))) == "bad_signature"


class TestRemote:
    """Remote mode applies the same claim rules before asking /api/me."""

    def test_valid(self, remote: Any) -> None:
        user = remote.create_user()
        identity = verify_token(remote.issue_token(user))
        assert identity.user_id == user.user_id
        assert identity.source == "remote"
        assert remote.requests_to("/api/me") == 1

    def test_mode_argument_overrides_setting(self, keyrunes: Any) -> None:
        user = keyrunes.create_user()
        token = keyrunes.issue_token(user)
        assert verify_token(token).source == "token"  # auto: a secret is set
        assert verify_token(token, mode="remote").source == "remote"
        assert keyrunes.requests_to("/api/me") == 1

    @pytest.mark.parametrize(
        ("overrides", "expected"),
        [
            ({"iss": "someone-else"}, "wrong_issuer"),
            ({"exp": int(time.time()) - 60, "iat": int(time.time()) - 3660}, "expired"),
            ({"iat": int(time.time()) + 3600}, "not_yet_valid"),
            ({"namespace": "company_x"}, "wrong_namespace"),
            ({"organization_id": "1"}, "malformed"),
            ({"groups": "users"}, "malformed"),
            ({"sub": 7}, "malformed"),
            ({"iss": None}, "missing_claim"),
        ],
    )
    def test_claim_rules_without_calling_me(
        self, remote: Any, overrides: dict[str, Any], expected: str
    ) -> None:
        user = remote.create_user()
        token = remote.issue_token(user, **overrides)
        assert reason(verify_token, token) == expected
        assert remote.requests_to("/api/me") == 0

    def test_scope_rule_without_calling_me(self, remote: Any, settings: Any) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "ORGANIZATION_SCOPE": 2}
        token = remote.issue_token(remote.create_user())
        assert reason(verify_token, token) == "scope_mismatch"
        assert remote.requests_to("/api/me") == 0

    def test_rejected(self, remote: Any) -> None:
        user = remote.create_user()
        token = remote.issue_token(user)
        remote.delete_user(user)
        assert reason(verify_token, token) == "rejected"

    def test_answer_about_another_user_is_an_outage(
        self, remote: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Remote mode does not check the signature; an /api/me answer about
        # another user than the token names is never taken as "you are them".
        from keyrunes_django.client import KeyrunesClient

        alice = remote.create_user()
        bob_token = remote.issue_token(remote.create_user())
        real_me = KeyrunesClient.me

        def me_of_bob(self: KeyrunesClient, token: str) -> Any:
            return real_me(self, bob_token)

        monkeypatch.setattr(KeyrunesClient, "me", me_of_bob)
        with pytest.raises(KeyrunesUnavailable):
            verify_token(remote.issue_token(alice))


class TestOrganizationKeys:
    def test_key_of_this_service(self, org_service: Any) -> None:
        principal = verify_organization_key(org_service.organization_key(1))
        assert principal.organization_id == 1

    def test_unknown_key(self, org_service: Any) -> None:
        assert reason(verify_organization_key, UNKNOWN_KEY) == "invalid_key"

    def test_other_tenant_key(self, org_service: Any) -> None:
        other = tenant(org_service, "company_b")
        assert reason(verify_organization_key, other.key) == "scope_mismatch"

    def test_no_established_organization(self, keyrunes: Any) -> None:
        assert reason(verify_organization_key, keyrunes.organization_key(1)) == (
            "organization_unknown"
        )

    def test_quirks_probe_then_listing(self, org_service: Any) -> None:
        org_service.server_quirks = True
        principal = verify_organization_key(org_service.organization_key(1))
        assert principal.organization_id == 1
        assert principal.namespace == "public"
        assert org_service.requests_to("/api/check-permission") == 1
