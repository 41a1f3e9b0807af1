"""tenancy.py: the one tenant rule, ORGANIZATION_SCOPE, and this service's organization."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from keyrunes_django.exceptions import InvalidToken, KeyrunesUnavailable
from keyrunes_django.identity import OrganizationPrincipal
from keyrunes_django.tenancy import (
    KEY_RECHECK_AGE,
    check_identity,
    check_namespace,
    check_principal,
    forget_service_organization,
    key_digest,
    namespace,
    organization_scope,
    parse_organization_scope,
    scope_problem,
    service_organization,
)
from tests.conftest import FrozenClock
from tests.factories import local_settings, service_account, tenant

LISTING = "/api/admin/organizations"


def reason(func: Any, *args: Any) -> str:
    with pytest.raises(InvalidToken) as info:
        func(*args)
    return info.value.reason


@pytest.fixture(autouse=True)
def _forget() -> Any:
    forget_service_organization()
    yield
    forget_service_organization()


class TestOrganizationScope:
    @pytest.mark.parametrize(("value", "parsed"), [(None, None), (2, 2), ("17", 17), ("007", 7)])
    def test_valid(self, value: Any, parsed: int | None) -> None:
        assert scope_problem(value) is None
        assert parse_organization_scope(value) == parsed

    @pytest.mark.parametrize(
        "value", ["", "  ", 0, -1, "0", "-3", "abc", "1.5", 1.0, True, False, [1], "\u0663", " 2"]
    )
    def test_invalid(self, value: Any) -> None:
        problem = scope_problem(value)
        assert problem is not None
        assert "ORGANIZATION_SCOPE" in problem
        with pytest.raises(ImproperlyConfigured, match="ORGANIZATION_SCOPE"):
            parse_organization_scope(value)

    def test_from_settings(self, settings: Any) -> None:
        settings.KEYRUNES = local_settings(ORGANIZATION_SCOPE="3", NAMESPACE="company_x")
        assert organization_scope() == 3
        assert namespace() == "company_x"
        settings.KEYRUNES = local_settings(ORGANIZATION_SCOPE="")
        with pytest.raises(ImproperlyConfigured):
            organization_scope()


class TestIdentityRule:
    def test_namespace(self, settings: Any) -> None:
        settings.KEYRUNES = local_settings()
        check_namespace("public")
        assert reason(check_namespace, "Public") == "wrong_namespace"

    def test_scope(self, settings: Any) -> None:
        settings.KEYRUNES = local_settings(NAMESPACE="company_x", ORGANIZATION_SCOPE=2)
        check_identity("company_x", 2)
        assert reason(check_identity, "company_x", 3) == "scope_mismatch"
        assert reason(check_identity, "public", 2) == "wrong_namespace"

    def test_no_scope_accepts_any_organization_of_the_namespace(self, settings: Any) -> None:
        settings.KEYRUNES = local_settings()
        check_identity("public", 1)
        check_identity("public", 99)


class TestServiceOrganization:
    def test_unknown_without_scope_or_service_account(self, keyrunes: Any) -> None:
        assert service_organization() is None
        assert len(keyrunes.request_log) == 0

    def test_scope_alone(self, keyrunes: Any, settings: Any) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "ORGANIZATION_SCOPE": 4}
        own = service_organization()
        assert own is not None
        assert own.organization_id == 4
        assert own.key_digest is None
        assert not own.owns_key(keyrunes.organization_key(1))
        assert len(keyrunes.request_log) == 0

    def test_resolved_once_through_the_listing(
        self, org_service: Any, settings: Any, frozen_clock: FrozenClock
    ) -> None:
        a = tenant(org_service, "company_a")
        settings.KEYRUNES = {**settings.KEYRUNES, "NAMESPACE": "company_a"}
        own = service_organization()
        assert own is not None
        assert own.organization_id == a.organization_id
        assert own.owns_key(a.key)
        assert own.owns_key(a.key.upper())
        assert a.key not in repr(own)
        assert service_organization() is own
        assert org_service.requests_to(LISTING) == 1
        frozen_clock.advance(301)  # CACHE_TTL
        assert service_organization() is not own
        assert org_service.requests_to(LISTING) == 2

    def test_settings_change_forgets_it(self, org_service: Any, settings: Any) -> None:
        service_organization()
        settings.KEYRUNES = {**settings.KEYRUNES, "CACHE_TTL": 60}
        service_organization()
        assert org_service.requests_to(LISTING) == 2

    def test_scope_with_service_account_reads_that_organization(
        self, org_service: Any, settings: Any
    ) -> None:
        b = tenant(org_service, "company_b")
        settings.KEYRUNES = {**settings.KEYRUNES, "ORGANIZATION_SCOPE": b.organization_id}
        own = service_organization()
        assert own is not None
        assert own.organization_id == b.organization_id
        assert own.owns_key(b.key)

    def test_outage_is_unavailable(self, org_service: Any) -> None:
        org_service.faults.add(r"^/api/admin/organizations$", status=503)
        with pytest.raises(KeyrunesUnavailable):
            service_organization()

    def test_key_digest_is_keyed(self, settings: Any) -> None:
        key = "3f1c2a9e-0b7d-4c1e-9f3a-5d6b7c8e9f00"
        first = key_digest(key)
        assert key not in first
        assert first == key_digest(key.upper())
        settings.SECRET_KEY = "another-secret"
        assert key_digest(key) != first


class TestCheckPrincipal:
    def test_named_organization_must_be_ours(self, org_service: Any) -> None:
        key = org_service.organization_key(1)
        ours = OrganizationPrincipal(organization_id=1, name="Default")
        assert check_principal(ours, key) is ours
        assert reason(check_principal, OrganizationPrincipal(organization_id=2), key) == (
            "scope_mismatch"
        )

    def test_unnamed_organization_compared_by_key(self, org_service: Any) -> None:
        key = org_service.organization_key(1)
        principal = check_principal(OrganizationPrincipal(organization_id=None), key)
        assert principal.organization_id == 1
        assert principal.namespace == "public"
        other = tenant(org_service, "company_b")
        assert (
            reason(check_principal, OrganizationPrincipal(organization_id=None), other.key)
            == "scope_mismatch"
        )

    def test_rotated_key_is_rechecked_after_a_while(
        self, org_service: Any, frozen_clock: FrozenClock
    ) -> None:
        unnamed = OrganizationPrincipal(organization_id=None)
        check_principal(unnamed, org_service.organization_key(1))
        new_key = org_service.rotate_organization_key(1)
        assert reason(check_principal, unnamed, new_key) == "scope_mismatch"
        assert org_service.requests_to(LISTING) == 1  # not re-listed at once
        frozen_clock.advance(KEY_RECHECK_AGE + 1)
        assert check_principal(unnamed, new_key).organization_id == 1
        assert org_service.requests_to(LISTING) == 2

    def test_unknown_organization(self, keyrunes: Any) -> None:
        principal = OrganizationPrincipal(organization_id=1)
        assert reason(check_principal, principal, keyrunes.organization_key(1)) == (
            "organization_unknown"
        )

    @pytest.mark.parametrize("problem", ["refused_login", "no_such_namespace"])
    def test_broken_service_account_refuses_keys(
        self, keyrunes: Any, settings: Any, problem: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        # Not a 500: the organization cannot be established, so keys are refused.
        account = service_account()
        extra: dict[str, Any] = {"SERVICE_ACCOUNT": account}
        if problem == "refused_login":
            extra["SERVICE_ACCOUNT"] = {**account, "PASSWORD": "Wrong-password-1"}
        else:
            extra["NAMESPACE"] = "nowhere"
        settings.KEYRUNES = {**settings.KEYRUNES, **extra}
        principal = OrganizationPrincipal(organization_id=1)
        with caplog.at_level("ERROR", logger="keyrunes_django.auth"):
            assert reason(check_principal, principal, keyrunes.organization_key(1)) == (
                "organization_unknown"
            )
        assert any(getattr(r, "event", "") == "organization_unknown" for r in caplog.records)
