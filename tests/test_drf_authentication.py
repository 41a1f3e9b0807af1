"""DRF authentication classes: 401 (not 403) with a challenge, 503 on outage, org keys."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.urls import path
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from keyrunes_django.drf.authentication import (
    KeyrunesOrganizationKeyAuthentication,
    KeyrunesTokenAuthentication,
    OrganizationUser,
    ServiceUnavailable,
)
from keyrunes_django.identity import OrganizationPrincipal
from tests.factories import UNKNOWN_KEY

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.urls("tests.test_drf_authentication"),
    pytest.mark.usefixtures("clean_caches"),
]


class WhoAmI(APIView):
    authentication_classes = [KeyrunesTokenAuthentication, KeyrunesOrganizationKeyAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        auth = request.auth
        return Response(
            {
                "user": str(request.user),
                "auth": type(auth).__name__,
                "organization_id": getattr(auth, "organization_id", None),
            }
        )


class OrgFirst(WhoAmI):
    authentication_classes = [KeyrunesOrganizationKeyAuthentication, KeyrunesTokenAuthentication]


class StaffOnly(WhoAmI):
    permission_classes = [IsAdminUser]


class Open(WhoAmI):
    permission_classes = []


urlpatterns = [
    path("api/whoami/", WhoAmI.as_view()),
    path("api/org-first/", OrgFirst.as_view()),
    path("api/staff/", StaffOnly.as_view()),
    path("api/open/", Open.as_view()),
]


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


class TestToken:
    def test_valid(self, keyrunes: Any, api: APIClient, keyrunes_user: Any) -> None:
        response = api.get("/api/whoami/", **bearer(keyrunes.issue_token(keyrunes_user)))
        assert response.status_code == 200
        assert response.json() == {
            "user": keyrunes_user.username,
            "auth": "VerifiedIdentity",
            "organization_id": 1,
        }

    def test_no_credentials_is_401_not_403(self, keyrunes: Any, api: APIClient) -> None:
        response = api.get("/api/whoami/")
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="keyrunes"'

    def test_invalid_token_challenge(
        self, keyrunes: Any, api: APIClient, keyrunes_user: Any
    ) -> None:
        response = api.get("/api/whoami/", **bearer(keyrunes.expired_token(keyrunes_user)))
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == (
            'Bearer realm="keyrunes", error="invalid_token", '
            'error_description="The token has expired."'
        )
        assert response.json()["detail"] == "The token has expired."

    @pytest.mark.parametrize(
        "header", ["Bearer", "Bearer a b", "Bearer tökén", "Bearer " + "a" * 20_000]
    )
    def test_bad_headers(self, keyrunes: Any, api: APIClient, header: str) -> None:
        response = api.get("/api/whoami/", HTTP_AUTHORIZATION=header)
        assert response.status_code == 401
        assert 'error="invalid_token"' in response["WWW-Authenticate"]
        assert len(keyrunes.request_log) == 0

    def test_lowercase_scheme(self, keyrunes: Any, api: APIClient, keyrunes_user: Any) -> None:
        token = keyrunes.issue_token(keyrunes_user)
        response = api.get("/api/whoami/", HTTP_AUTHORIZATION=f"bearer {token}")
        assert response.status_code == 200

    def test_other_scheme_is_not_ours(self, keyrunes: Any, api: APIClient) -> None:
        response = api.get("/api/whoami/", HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz")
        assert response.status_code == 401
        assert "error=" not in response["WWW-Authenticate"]

    def test_authenticated_but_forbidden_is_403(
        self, keyrunes: Any, api: APIClient, keyrunes_user: Any
    ) -> None:
        response = api.get("/api/staff/", **bearer(keyrunes.issue_token(keyrunes_user)))
        assert response.status_code == 403

    def test_mirror_refused_is_403(
        self, keyrunes: Any, api: APIClient, keyrunes_user: Any, settings: Any
    ) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "DENY_GROUP": "users"}
        response = api.get("/api/whoami/", **bearer(keyrunes.issue_token(keyrunes_user)))
        assert response.status_code == 403

    def test_remote_outage_is_503(
        self, keyrunes: Any, api: APIClient, keyrunes_user: Any, settings: Any
    ) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": "remote"}
        keyrunes.faults.add(r"^/api/me$", status=502)
        response = api.get("/api/whoami/", **bearer(keyrunes.issue_token(keyrunes_user)))
        assert response.status_code == 503
        assert response.json()["detail"] == ServiceUnavailable.default_detail

    def test_remote_cached(
        self, keyrunes: Any, api: APIClient, keyrunes_user: Any, settings: Any
    ) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": "remote"}
        token = keyrunes.issue_token(keyrunes_user)
        for _ in range(5):
            assert api.get("/api/whoami/", **bearer(token)).status_code == 200
        assert keyrunes.requests_to("/api/me") == 1

    def test_fail_open(
        self,
        keyrunes: Any,
        api: APIClient,
        keyrunes_user: Any,
        settings: Any,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        settings.KEYRUNES = {
            **settings.KEYRUNES,
            "VERIFICATION_MODE": "remote",
            "FAIL_OPEN": True,
        }
        keyrunes.faults.add(r"^/api/me$", status=503)
        token = keyrunes.issue_token(keyrunes_user)
        with caplog.at_level(logging.ERROR, logger="keyrunes_django.auth"):
            assert api.get("/api/open/", **bearer(token)).json()["user"] == "AnonymousUser"
            assert api.get("/api/whoami/", **bearer(token)).status_code == 401
        assert sum("FAIL_OPEN" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize("quirks", [False, True], ids=["default", "server_quirks"])
class TestOrganizationKey:
    def test_valid(self, org_service: Any, api: APIClient, quirks: bool) -> None:
        org_service.server_quirks = quirks
        key = org_service.organization_key(1)
        response = api.get("/api/whoami/", HTTP_X_ORGANIZATION_KEY=key)
        assert response.status_code == 200
        # Under quirks the organization comes from the admin listing's key.
        assert response.json() == {
            "user": "organization:1",
            "auth": "OrganizationPrincipal",
            "organization_id": 1,
        }

    def test_invalid(self, keyrunes: Any, api: APIClient, quirks: bool) -> None:
        keyrunes.server_quirks = quirks
        response = api.get("/api/org-first/", HTTP_X_ORGANIZATION_KEY=UNKNOWN_KEY)
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("OrganizationKey ")
        assert 'error="invalid_token"' in response["WWW-Authenticate"]

    def test_refused_without_established_organization(
        self, keyrunes: Any, api: APIClient, quirks: bool
    ) -> None:
        keyrunes.server_quirks = quirks
        response = api.get("/api/org-first/", HTTP_X_ORGANIZATION_KEY=keyrunes.organization_key(1))
        assert response.status_code == 401
        assert response.json()["detail"] == (
            "The organization of this service is not established; organization keys are refused."
        )
        assert response["WWW-Authenticate"].startswith("OrganizationKey ")

    def test_scope(self, keyrunes: Any, api: APIClient, settings: Any, quirks: bool) -> None:
        keyrunes.server_quirks = quirks
        other = keyrunes.create_organization("Company X", "company_x")
        settings.KEYRUNES = {**settings.KEYRUNES, "ORGANIZATION_SCOPE": other.organization_id}
        response = api.get(
            "/api/org-first/",
            HTTP_X_ORGANIZATION_KEY=keyrunes.organization_key(other.organization_id),
        )
        assert response.status_code == (401 if quirks else 200)
        response = api.get("/api/org-first/", HTTP_X_ORGANIZATION_KEY=keyrunes.organization_key(1))
        assert response.status_code == 401
        assert response.json()["detail"] == "The credential belongs to another organization."

    def test_not_staff(self, org_service: Any, api: APIClient, quirks: bool) -> None:
        org_service.server_quirks = quirks
        key = org_service.organization_key(1)
        response = api.get("/api/staff/", HTTP_X_ORGANIZATION_KEY=key)
        assert response.status_code == 403

    def test_outage(self, org_service: Any, api: APIClient, quirks: bool) -> None:
        org_service.server_quirks = quirks
        org_service.faults.add(r"^/api/", status=503)
        key = org_service.organization_key(1)
        response = api.get("/api/whoami/", HTTP_X_ORGANIZATION_KEY=key)
        assert response.status_code == 503

    def test_admin_listing_outage(self, org_service: Any, api: APIClient, quirks: bool) -> None:
        # The organization cannot be established during an outage: 503, never a 500.
        org_service.server_quirks = quirks
        org_service.faults.add(r"^/api/admin/organizations$", status=503)
        key = org_service.organization_key(1)
        response = api.get("/api/whoami/", HTTP_X_ORGANIZATION_KEY=key)
        assert response.status_code == 503


def test_org_key_fail_open(org_service: Any, api: APIClient, settings: Any) -> None:
    settings.KEYRUNES = {**settings.KEYRUNES, "FAIL_OPEN": True}
    org_service.faults.add(r"^/api/", status=503)
    response = api.get("/api/open/", HTTP_X_ORGANIZATION_KEY=org_service.organization_key(1))
    assert response.json()["user"] == "AnonymousUser"


class TestOrganizationUser:
    def test_properties(self) -> None:
        principal = OrganizationPrincipal(organization_id=3, name="C")
        user = OrganizationUser(principal)
        assert user.is_authenticated
        assert not user.is_anonymous
        assert not user.is_staff
        assert not user.is_superuser
        assert user.pk is None
        assert not user.has_perm("auth.view_user")
        assert user.organization_id == 3
        assert str(user) == "organization:3"
        assert user == OrganizationUser(principal)
        assert user != OrganizationUser(OrganizationPrincipal(organization_id=4))
        assert user != AnonymousUser()
        assert hash(user) == hash(OrganizationUser(principal))

    def test_identity_types(self) -> None:
        # An AnonymousUser subclass: every permission API answers "no".
        assert issubclass(OrganizationUser, AnonymousUser)
        assert not OrganizationUser(OrganizationPrincipal(None)).get_all_permissions()
