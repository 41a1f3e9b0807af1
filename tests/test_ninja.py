"""django-ninja: bearer and organization-key auth, group/admin/policy checks, 401/403/503."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.http import HttpRequest
from django.test import Client
from django.urls import path
from ninja import NinjaAPI, Router

from keyrunes_django.authorization import get_identity
from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity
from keyrunes_django.ninja import (
    KeyrunesBearer,
    KeyrunesOrganizationKey,
    register_exception_handlers,
    require_admin,
    require_group,
    require_permission,
)
from keyrunes_django.testing.emulator import KeyrunesEmulator

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.test_ninja")]

api = register_exception_handlers(
    NinjaAPI(
        urls_namespace="keyrunes-ninja-tests", auth=[KeyrunesBearer(), KeyrunesOrganizationKey()]
    )
)
plain_api = NinjaAPI(urls_namespace="keyrunes-ninja-plain", auth=KeyrunesBearer())


def caller(request: HttpRequest) -> dict[str, Any]:
    principal = get_identity(request)
    if isinstance(principal, VerifiedIdentity):
        return {"kind": "user", "username": principal.username, "user": str(request.user)}
    assert isinstance(principal, OrganizationPrincipal)
    return {"kind": "organization", "organization_id": principal.organization_id}


@api.get("/me")
def me(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


@api.get("/editors", auth=KeyrunesBearer(groups="editors"))
def editors(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


@api.get("/admin", auth=KeyrunesBearer(admin=True))
def admin(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


@api.get("/policy", auth=KeyrunesBearer(permission=("docs:handbook", "read")))
def docs(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


@api.get("/org", auth=KeyrunesOrganizationKey(organization_id=1))
def org(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


@api.get("/org2", auth=KeyrunesOrganizationKey(organization_id=2))
def org2(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


@api.get("/decorated/group")
@require_group("editors", "writers", all_groups=True)
def decorated_group(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


@api.get("/decorated/admin")
@require_admin()
def decorated_admin(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


@api.get("/decorated/docs/{slug}")
@require_permission("docs:{slug}", "read")
def decorated_doc(request: HttpRequest, slug: str) -> dict[str, Any]:
    return {"slug": slug, **caller(request)}


@api.get("/async/docs/{slug}")
@require_permission("docs:{slug}", "read")
async def async_doc(request: HttpRequest, slug: str) -> dict[str, Any]:
    return {"slug": slug, "async": True}


@api.get("/async/me")
async def async_me(request: HttpRequest) -> dict[str, Any]:
    return {"username": request.auth.username}  # type: ignore[attr-defined]


@api.get("/open", auth=None)
@require_group("editors")
def open_but_grouped(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


router = Router(auth=KeyrunesBearer(groups=["editors"]))


@router.get("/inside")
def inside(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


api.add_router("/router", router)


@plain_api.get("/me")
def plain_me(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


urlpatterns = [path("api/", api.urls), path("plain/", plain_api.urls)]


@pytest.fixture(autouse=True)
def _clean_cache() -> Iterator[None]:
    caches["default"].clear()
    yield
    caches["default"].clear()


@pytest.fixture
def kr(keyrunes: KeyrunesEmulator, settings: Any) -> KeyrunesEmulator:
    # Organization keys are accepted only from this service's organization.
    settings.KEYRUNES = {**settings.KEYRUNES, "ORGANIZATION_SCOPE": 1}
    keyrunes.create_group("editors")
    keyrunes.create_group("writers")
    keyrunes.create_policy("docs_read", "docs:*", "read")
    keyrunes.attach_policy("docs_read", group="editors")
    return keyrunes


def bearer(kr: KeyrunesEmulator, *groups: str, **extra: str) -> dict[str, str]:
    user = kr.create_user(groups=("users", *groups))
    return {"HTTP_AUTHORIZATION": f"Bearer {kr.issue_token(user)}", **extra}


JSON = {"HTTP_ACCEPT": "application/json"}


def get(url: str, **headers: str) -> Any:
    return Client().get(url, **headers)


class TestBearer:
    def test_valid_token_sets_user_and_identity(self, kr: KeyrunesEmulator) -> None:
        user = kr.create_user(groups=("users",))
        response = get("/api/me", HTTP_AUTHORIZATION=f"Bearer {kr.issue_token(user)}")
        assert response.status_code == 200
        assert response.json() == {"kind": "user", "username": user.username, "user": user.username}

    def test_no_credential_is_401_with_a_bare_challenge(self, kr: KeyrunesEmulator) -> None:
        response = get("/api/me", **JSON)
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="keyrunes"'
        assert response.json()["reason"] == "not_authenticated"

    def test_expired_token_is_401_with_reason(self, kr: KeyrunesEmulator) -> None:
        user = kr.create_user()
        response = get("/api/me", HTTP_AUTHORIZATION=f"Bearer {kr.expired_token(user)}", **JSON)
        assert response.status_code == 401
        assert response.json() == {
            "error": "invalid_token",
            "reason": "expired",
            "detail": "The token has expired.",
        }
        assert response["WWW-Authenticate"] == (
            'Bearer realm="keyrunes", error="invalid_token", '
            'error_description="The token has expired."'
        )

    @pytest.mark.parametrize(
        ("header", "reason"),
        [
            ("Bearer", "missing_token"),
            ("Bearer a b", "malformed"),
            ("Bearer tökén", "malformed"),
            ("Bearer " + "a" * 20_000, "header_too_large"),
        ],
    )
    def test_malformed_headers_never_reach_keyrunes(
        self, kr: KeyrunesEmulator, header: str, reason: str
    ) -> None:
        response = get("/api/me", HTTP_AUTHORIZATION=header, **JSON)
        assert response.status_code == 401
        assert response.json()["reason"] == reason
        assert len(kr.request_log) == 0

    def test_lowercase_scheme_is_accepted(self, kr: KeyrunesEmulator) -> None:
        user = kr.create_user()
        assert (
            get("/api/me", HTTP_AUTHORIZATION=f"bearer {kr.issue_token(user)}").status_code == 200
        )

    def test_forged_token_is_refused(self, kr: KeyrunesEmulator) -> None:
        user = kr.create_user()
        token = kr.issue_token(user)
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        response = get("/api/me", HTTP_AUTHORIZATION=f"Bearer {forged}", **JSON)
        assert response.status_code == 401
        assert response.json()["reason"] in {"bad_signature", "malformed"}

    def test_other_namespace_is_refused(self, kr: KeyrunesEmulator) -> None:
        user = kr.create_user()
        token = kr.issue_token(user, namespace="tenant-b")
        response = get("/api/me", HTTP_AUTHORIZATION=f"Bearer {token}", **JSON)
        assert response.status_code == 401
        assert response.json()["reason"] == "wrong_namespace"

    def test_mirror_refusal_is_403(self, kr: KeyrunesEmulator, settings: Any) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "DENY_GROUP": "users"}
        response = get("/api/me", **bearer(kr), **JSON)
        assert response.status_code == 403
        assert response.json()["reason"] == "denied_group"

    def test_outage_is_503_with_retry_after(self, kr: KeyrunesEmulator, settings: Any) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": "remote"}
        kr.faults.add(r"^/api/me$", status=502)
        response = get("/api/me", **bearer(kr), **JSON)
        assert response.status_code == 503
        assert response["Retry-After"] == "5"
        assert response.json()["reason"] == "keyrunes_unavailable"

    def test_fail_open_lets_the_next_auth_decide(self, kr: KeyrunesEmulator, settings: Any) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": "remote", "FAIL_OPEN": True}
        kr.faults.add(r"^/api/me$", status=503)
        response = get("/api/me", **bearer(kr), **JSON)
        assert response.status_code == 401
        assert response.json()["reason"] == "not_authenticated"

    def test_remote_answers_are_cached(self, kr: KeyrunesEmulator, settings: Any) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": "remote"}
        headers = bearer(kr)
        for _ in range(4):
            assert get("/api/me", **headers).status_code == 200
        assert kr.requests_to("/api/me") == 1

    def test_async_operation(self, kr: KeyrunesEmulator) -> None:
        user = kr.create_user()
        response = get("/api/async/me", HTTP_AUTHORIZATION=f"Bearer {kr.issue_token(user)}")
        assert response.status_code == 200
        assert response.json() == {"username": user.username}

    def test_without_registered_handlers_the_status_is_still_right(
        self, kr: KeyrunesEmulator
    ) -> None:
        user = kr.create_user()
        response = get("/plain/me", HTTP_AUTHORIZATION=f"Bearer {kr.expired_token(user)}")
        assert response.status_code == 401
        assert response.json() == {"detail": "The token has expired."}


class TestChecksOnAuth:
    def test_group(self, kr: KeyrunesEmulator) -> None:
        assert get("/api/editors", **bearer(kr, "editors")).status_code == 200
        refused = get("/api/editors", **bearer(kr), **JSON)
        assert refused.status_code == 403
        assert refused.json()["reason"] == "missing_group"

    def test_admin(self, kr: KeyrunesEmulator) -> None:
        superadmin = kr.get_user(1)
        assert superadmin is not None
        headers = {"HTTP_AUTHORIZATION": f"Bearer {kr.issue_token(superadmin)}"}
        assert get("/api/admin", **headers).status_code == 200
        refused = get("/api/admin", **bearer(kr, "editors"), **JSON)
        assert refused.status_code == 403
        assert refused.json()["reason"] == "not_admin"

    def test_policy(self, kr: KeyrunesEmulator) -> None:
        assert get("/api/policy", **bearer(kr, "editors")).status_code == 200
        refused = get("/api/policy", **bearer(kr), **JSON)
        assert refused.status_code == 403
        assert refused.json()["reason"] == "policy_denied"

    def test_router_level_auth(self, kr: KeyrunesEmulator) -> None:
        assert get("/api/router/inside", **bearer(kr, "editors")).status_code == 200
        assert get("/api/router/inside", **bearer(kr)).status_code == 403
        assert get("/api/router/inside").status_code == 401

    def test_bad_arguments(self) -> None:
        with pytest.raises(TypeError):
            KeyrunesBearer(groups=[""])
        with pytest.raises(TypeError):
            KeyrunesBearer(permission=("docs",))  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            KeyrunesOrganizationKey(organization_id=True)
        with pytest.raises(TypeError):
            require_group()
        with pytest.raises(TypeError):
            require_permission("", "read")

    def test_bearer_schema_names_jwt(self) -> None:
        schema = api.get_openapi_schema()
        schemes = schema["components"]["securitySchemes"]
        assert schemes["KeyrunesBearer"] == {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
        }
        assert schemes["KeyrunesOrganizationKey"] == {
            "type": "apiKey",
            "in": "header",
            "name": "X-Organization-Key",
        }


class TestOrganizationKey:
    def test_valid_key(self, kr: KeyrunesEmulator) -> None:
        response = get("/api/me", HTTP_X_ORGANIZATION_KEY=kr.organization_key(1))
        assert response.status_code == 200
        assert response.json() == {"kind": "organization", "organization_id": 1}

    def test_pinned_organization(self, kr: KeyrunesEmulator) -> None:
        key = kr.organization_key(1)
        assert get("/api/org", HTTP_X_ORGANIZATION_KEY=key).status_code == 200
        refused = get("/api/org2", HTTP_X_ORGANIZATION_KEY=key, **JSON)
        assert refused.status_code == 403
        assert refused.json()["reason"] == "wrong_organization"

    def test_unknown_and_malformed_keys(self, kr: KeyrunesEmulator) -> None:
        unknown = get(
            "/api/me", HTTP_X_ORGANIZATION_KEY="00000000-0000-4000-8000-000000000000", **JSON
        )
        assert unknown.status_code == 401
        assert unknown.json()["reason"] == "invalid_key"
        assert unknown["WWW-Authenticate"].startswith("OrganizationKey ")
        malformed = get("/api/me", HTTP_X_ORGANIZATION_KEY="not-a-uuid", **JSON)
        assert malformed.status_code == 401
        assert malformed.json()["reason"] == "malformed"

    def test_organization_has_no_groups(self, kr: KeyrunesEmulator) -> None:
        response = get("/api/decorated/group", HTTP_X_ORGANIZATION_KEY=kr.organization_key(1))
        assert response.status_code == 403

    def test_fail_open(self, kr: KeyrunesEmulator, settings: Any) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "FAIL_OPEN": True}
        kr.faults.add(r"^/api/verify-org-key$", status=503)
        response = get("/api/org", HTTP_X_ORGANIZATION_KEY=kr.organization_key(1), **JSON)
        assert response.status_code == 401

    def test_outage_is_503(self, kr: KeyrunesEmulator) -> None:
        kr.faults.add(r"^/api/verify-org-key$", status=503)
        response = get("/api/org", HTTP_X_ORGANIZATION_KEY=kr.organization_key(1), **JSON)
        assert response.status_code == 503


class TestDecorators:
    def test_all_groups(self, kr: KeyrunesEmulator) -> None:
        assert get("/api/decorated/group", **bearer(kr, "editors", "writers")).status_code == 200
        assert get("/api/decorated/group", **bearer(kr, "editors")).status_code == 403

    def test_admin(self, kr: KeyrunesEmulator) -> None:
        assert get("/api/decorated/admin", **bearer(kr, "editors")).status_code == 403

    def test_policy_placeholder_from_path(self, kr: KeyrunesEmulator) -> None:
        kr.create_policy("guide_read", "docs:guide", "read")
        user = kr.create_user(groups=("users",))
        kr.attach_policy("guide_read", user=user)
        headers = {"HTTP_AUTHORIZATION": f"Bearer {kr.issue_token(user)}"}
        allowed = get("/api/decorated/docs/guide", **headers)
        assert allowed.status_code == 200
        assert allowed.json()["slug"] == "guide"
        assert get("/api/decorated/docs/secret", **headers).status_code == 403

    def test_async_policy(self, kr: KeyrunesEmulator) -> None:
        allowed = get("/api/async/docs/any", **bearer(kr, "editors"))
        assert allowed.status_code == 200
        assert allowed.json() == {"slug": "any", "async": True}
        assert get("/api/async/docs/any", **bearer(kr)).status_code == 403

    def test_decorator_without_auth_refuses_anonymous_with_401(self, kr: KeyrunesEmulator) -> None:
        response = get("/api/open", **JSON)
        assert response.status_code == 401
        assert response.json()["reason"] == "not_authenticated"
