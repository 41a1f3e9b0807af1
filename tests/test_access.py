"""keyrunes_django.access: the shared checks, the one API-client rule, and its settings."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory, override_settings

from keyrunes_django import access, decorators, responses
from keyrunes_django.checks import check_access_settings
from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity
from keyrunes_django.users import StatelessUser

ROOT = Path(__file__).resolve().parent.parent / "keyrunes_django"


def identity(groups: tuple[str, ...] = ("users",)) -> VerifiedIdentity:
    return VerifiedIdentity(
        user_id=7,
        username="alice",
        email="alice@example.com",
        namespace="public",
        organization_id=1,
        groups=groups,
    )


def request_as(principal: Any = None, path: str = "/page/", **headers: str) -> Any:
    request = RequestFactory().get(path, **headers)
    request.user = AnonymousUser()
    request.keyrunes = principal
    return request


# ------------------------------------------------------- the API-client rule

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

RULE = [
    # (path, headers, API client?)
    ("/page/", {}, False),
    ("/page/", {"HTTP_ACCEPT": "*/*"}, False),
    ("/page/", {"HTTP_ACCEPT": BROWSER}, False),
    ("/page/", {"HTTP_ACCEPT": "application/json"}, True),
    ("/page/", {"HTTP_ACCEPT": "Application/JSON; charset=utf-8"}, True),
    ("/page/", {"HTTP_ACCEPT": "application/problem+json"}, True),
    ("/page/", {"HTTP_ACCEPT": "application/json, text/javascript, */*; q=0.01"}, True),
    ("/page/", {"HTTP_ACCEPT": "text/html, application/json"}, False),
    ("/page/", {"HTTP_ACCEPT": "application/xhtml+xml"}, False),
    ("/page/", {"HTTP_AUTHORIZATION": "Bearer x"}, True),
    ("/page/", {"HTTP_AUTHORIZATION": "Bearer x", "HTTP_ACCEPT": "*/*"}, True),
    ("/page/", {"HTTP_AUTHORIZATION": "Bearer x", "HTTP_ACCEPT": "text/plain"}, True),
    # a browser that sends credentials (Basic auth, an extension) still asks for HTML
    ("/page/", {"HTTP_AUTHORIZATION": "Basic eDp5", "HTTP_ACCEPT": BROWSER}, False),
    ("/page/", {"HTTP_X_ORGANIZATION_KEY": "k"}, True),
    ("/page/", {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest"}, True),
    ("/page/", {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest", "HTTP_ACCEPT": BROWSER}, True),
    ("/api/things/", {}, True),
    ("/api/things/", {"HTTP_ACCEPT": "*/*"}, True),
    # the service declared these paths API paths, whatever the client asks for
    ("/api/things/", {"HTTP_ACCEPT": BROWSER}, True),
    ("/apis/", {}, False),
    ("/page/", {"HTTP_ACCEPT": ",,;;"}, False),
]


@pytest.mark.parametrize(("path", "headers", "expected"), RULE)
def test_one_rule_for_redirects_and_bodies(
    path: str, headers: dict[str, str], expected: bool
) -> None:
    request = RequestFactory().get(path, **headers)  # type: ignore[arg-type]
    assert access.is_api_request(request) is expected
    # the decorators' public name and the responses' body choice are the same rule
    assert decorators.is_api_request is access.is_api_request
    assert responses.wants_json(request) is expected


@pytest.mark.parametrize(("accept", "json"), [(None, True), (BROWSER, False)])
def test_refusal_bodies_follow_the_rule(accept: str | None, json: bool) -> None:
    headers = {"HTTP_AUTHORIZATION": "Bearer x"}
    if accept:
        headers["HTTP_ACCEPT"] = accept
    response = responses.unauthorized_response(
        request_as(**headers), reason="malformed", description="Bad."
    )
    assert response["Content-Type"].startswith("application/json" if json else "text/plain")


@pytest.mark.parametrize(
    ("prefixes", "path", "expected"),
    [
        ("/internal/", "/internal/x", True),
        (["/a/", "/b/"], "/b/x", True),
        ((), "/api/x", False),
        (None, "/api/x", False),
        (["", 3, "/v1/"], "/v1/x", True),  # unusable entries are skipped (E081 reports them)
        (["", 3], "/anything", False),
    ],
)
def test_api_path_prefixes(prefixes: Any, path: str, expected: bool) -> None:
    with override_settings(KEYRUNES={**settings.KEYRUNES, "API_PATH_PREFIXES": prefixes}):
        assert access.is_api_request(RequestFactory().get(path)) is expected


# ------------------------------------------------------------- the checks


def test_checks_by_caller() -> None:
    editor = request_as(identity(("users", "editors")))
    root = request_as(identity(("superadmin",)))
    org = request_as(OrganizationPrincipal(organization_id=1))
    anonymous = request_as()

    assert access.check_login(editor) is None
    assert access.check_login(org) == access.Refusal(
        False, "Organization keys are not accepted here; sign in as a user."
    )
    assert access.check_login(org, allow_organization=True) is None
    assert access.check_login(anonymous) == access.Refusal(True, access.NOT_AUTHENTICATED)

    assert access.check_groups(editor, ("editors", "x")) is None
    assert access.check_groups(editor, ("editors", "x"), all_groups=True) == access.Refusal(
        False, "Membership in all of the groups editors, x is required."
    )
    assert access.check_groups(org, ("editors",)) == access.Refusal(
        False, "Membership in one of the groups editors is required."
    )
    assert access.check_groups(anonymous, ("editors",)) == access.Refusal(
        True, access.NOT_AUTHENTICATED
    )

    assert access.check_admin(root) is None
    assert access.check_admin(editor) == access.Refusal(False, access.ADMIN_REQUIRED)
    assert access.check_admin(anonymous) is not None
    assert access.check_admin(anonymous).anonymous  # type: ignore[union-attr]

    # the policy check refuses anonymous and organization callers without asking anyone
    assert access.check_permission(anonymous, "docs:1", "read") == access.Refusal(
        True, access.NOT_AUTHENTICATED
    )
    assert access.check_permission(org, "docs:{id}", "read", {"id": 1}) == access.Refusal(
        False, "Permission 'read' on 'docs:{id}' is required."
    )


def test_principal_kinds() -> None:
    editor = request_as(identity())
    org = request_as(OrganizationPrincipal(organization_id=2))
    assert access.is_keyrunes_user(editor)
    assert access.is_keyrunes_user(StatelessUser(identity()))
    assert not access.is_keyrunes_user(org)
    assert not access.is_keyrunes_user(request_as())
    assert access.is_organization(org)
    assert access.is_organization(org, 2)
    assert not access.is_organization(org, 1)
    assert not access.is_organization(editor)


def test_build_context() -> None:
    request = request_as()
    assert access.build_context(None, request, {"pk": 1}) == {"pk": 1}
    assert access.build_context({"pk": 2, "t": "a"}, request, {"pk": 1}) == {"pk": 2, "t": "a"}
    assert access.build_context(lambda r: {"r": r}, request, {}) == {"r": request}


def test_refuse() -> None:
    refusal = access.Refusal(True, access.NOT_AUTHENTICATED)
    browser = request_as(HTTP_ACCEPT=BROWSER)
    redirect = access.refuse(browser, refusal, login_url="/in/")
    assert redirect.status_code == 302
    assert redirect["Location"] == "/in/?next=/page/"
    api = access.refuse(request_as(HTTP_ACCEPT="application/json"), refusal)
    assert api.status_code == 401
    assert api["WWW-Authenticate"] == 'Bearer realm="keyrunes"'
    assert api["Cache-Control"] == "no-store"
    with pytest.raises(PermissionDenied):
        access.refuse(browser, refusal, raise_exception=True)
    with pytest.raises(PermissionDenied, match=r"^No\.$"):
        access.refuse(browser, access.Refusal(False, "No."))


# --------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("extra", "ids"),
    [
        ({}, []),
        ({"STATELESS_USERS": True}, []),
        ({"STATELESS_USERS": "yes"}, ["keyrunes_django.E080"]),
        ({"STATELESS_USERS": 1}, ["keyrunes_django.E080"]),
        ({"API_PATH_PREFIXES": "/v1/"}, []),
        ({"API_PATH_PREFIXES": ["/v1/", "/v2/"]}, []),
        ({"API_PATH_PREFIXES": ""}, ["keyrunes_django.E081"]),
        ({"API_PATH_PREFIXES": ["/v1/", ""]}, ["keyrunes_django.E081"]),
        ({"API_PATH_PREFIXES": "api/"}, ["keyrunes_django.E081"]),
        ({"API_PATH_PREFIXES": None}, ["keyrunes_django.E081"]),
        ({"API_PATH_PREFIXES": {"/v1/"}}, ["keyrunes_django.E081"]),
    ],
)
def test_system_checks(extra: dict[str, Any], ids: list[str]) -> None:
    with override_settings(KEYRUNES={**settings.KEYRUNES, **extra}):
        assert [m.id for m in check_access_settings()] == ids


def test_system_checks_leave_a_non_dict_to_e012() -> None:
    with override_settings(KEYRUNES=["not", "a", "dict"]):
        assert check_access_settings() == []


def test_stateless_users_is_off_by_default() -> None:
    from keyrunes_django.conf import DEFAULTS

    assert DEFAULTS["STATELESS_USERS"] is False


# ----------------------------------------------------- one home, public names

SHARING = [
    "decorators.py",
    "mixins.py",
    "drf/permissions.py",
    "templatetags/keyrunes.py",
    "authorization.py",
    "responses.py",
]


@pytest.mark.parametrize("module", SHARING)
def test_no_private_name_is_imported_across_modules(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text())
    imported = [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keyrunes_django")
        for alias in node.names
    ]
    assert imported
    assert [name for _, name in imported if name.startswith("_")] == []
    attributes = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "access"
    }
    assert all(name in access.__all__ for name in attributes), attributes
