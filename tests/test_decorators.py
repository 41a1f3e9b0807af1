"""keyrunes_django.decorators against the emulator: every decorator x principal x format.

Principals: anonymous, a session user (logged in through the backend), a bearer
token user, an organization key, and the global superadmin (bearer token). The
session and token users are members of ``editors``, which carries the policy
``docs_read`` (``docs:*`` / ``read``); the superadmin holds ``full_access``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import caches
from django.http import HttpResponse
from django.test import AsyncClient, Client, RequestFactory

from keyrunes_django.decorators import (
    is_api_request,
    keyrunes_login_required,
    require_admin,
    require_group,
    require_permission,
)
from keyrunes_django.testing import KeyrunesEmulator
from keyrunes_django.testing.emulator import EmulatedUser

PRINCIPALS = ("anonymous", "session", "token", "org", "superadmin")
FORMATS = ("html", "json")
KEYRUNES_MIDDLEWARE = "keyrunes_django.middleware.KeyrunesAuthenticationMiddleware"

# Expected status for each authenticated principal (session, token, org, superadmin).
# Anonymous callers get a login redirect (HTML) or 401 (JSON), unless "raise" -> 403.
EXPECTED: dict[str, tuple[tuple[int, int, int, int], bool]] = {
    # name: ((session, token, org, superadmin), raises_for_anonymous)
    "login": ((200, 200, 403, 200), False),
    "login-org": ((200, 200, 200, 200), False),
    "login-raise": ((200, 200, 403, 200), True),
    "group-any": ((200, 200, 403, 403), False),
    "group-all": ((403, 403, 403, 403), False),
    "group-raise": ((200, 200, 403, 403), True),
    "admin": ((403, 403, 403, 200), False),
    "admin-raise": ((403, 403, 403, 200), True),
    "perm": ((200, 200, 403, 200), False),
    "perm-write": ((403, 403, 403, 200), False),
}


def expected_status(name: str, principal: str, fmt: str) -> int:
    codes, raises = EXPECTED[name]
    if principal == "anonymous":
        if raises:
            return 403
        return 302 if fmt == "html" else 401
    return codes[PRINCIPALS.index(principal) - 1]


@pytest.fixture(autouse=True)
def _keyrunes_middleware(settings: Any) -> Iterator[None]:
    if KEYRUNES_MIDDLEWARE not in settings.MIDDLEWARE:
        middleware = list(settings.MIDDLEWARE)
        middleware.insert(
            middleware.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
            KEYRUNES_MIDDLEWARE,
        )
        settings.MIDDLEWARE = middleware
    caches["default"].clear()
    yield
    caches["default"].clear()


class Principals:
    """Builds the callers of the matrix on the emulator and sends requests as them."""

    def __init__(self, kr: KeyrunesEmulator) -> None:
        self.kr = kr
        kr.create_group("editors")
        kr.create_group("writers")
        kr.create_policy("docs_read", "docs:*", "read")
        kr.attach_policy("docs_read", group="editors")
        self.editor = kr.create_user(groups=("users", "editors"))
        self.token_user = kr.create_user(groups=("users", "editors"))
        superadmin = kr.get_user(1)
        assert superadmin is not None
        self.superadmin: EmulatedUser = superadmin
        self._logged_in: set[int] = set()

    def headers(self, principal: str, fmt: str) -> dict[str, str]:
        headers: dict[str, str] = {}
        if fmt == "json":
            headers["Accept"] = "application/json"
        if principal == "token":
            headers["Authorization"] = f"Bearer {self.kr.issue_token(self.token_user)}"
        elif principal == "superadmin":
            headers["Authorization"] = f"Bearer {self.kr.issue_token(self.superadmin)}"
        elif principal == "org":
            headers["X-Organization-Key"] = self.kr.organization_key(1)
        return headers

    def login(self, client: Client, user: EmulatedUser) -> None:
        assert client.login(username=user.username, password=user.password)

    def get(self, client: Client, principal: str, url: str, fmt: str = "html") -> HttpResponse:
        if principal == "session" and id(client) not in self._logged_in:
            self.login(client, self.editor)
            self._logged_in.add(id(client))
        return client.get(url, headers=self.headers(principal, fmt))  # type: ignore[return-value]


@pytest.fixture
def principals(keyrunes: KeyrunesEmulator, db: Any) -> Principals:
    return Principals(keyrunes)


def assert_outcome(response: Any, expected: int, url: str) -> None:
    assert response.status_code == expected, (url, response.status_code, response.content[:200])
    if expected == 302:
        assert response["Location"].startswith("/login/?next=")
        assert url.rstrip("/").split("/")[-1] in response["Location"]
    elif expected == 401:
        assert response["Content-Type"] == "application/json"
        assert response.json()["reason"] == "not_authenticated"
        assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sync_decorators(
    principals: Principals, client: Client, name: str, principal: str, fmt: str
) -> None:
    url = f"/authz/fn/{name}/"
    response = principals.get(client, principal, url, fmt)
    assert_outcome(response, expected_status(name, principal, fmt), url)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("name", ["login", "login-org", "group-any", "admin", "perm", "perm-write"])
def test_async_decorators(
    principals: Principals, client: Client, name: str, principal: str, fmt: str
) -> None:
    url = f"/authz/afn/{name}/"
    response = principals.get(client, principal, url, fmt)
    expected = expected_status(name, principal, fmt)
    assert_outcome(response, expected, url)
    if expected == 200:
        assert response.json() == {"ok": True, "async": True}


def test_async_client_runs_async_views(principals: Principals) -> None:
    headers = principals.headers("token", "json")

    async def scenario() -> list[int]:
        client = AsyncClient()
        return [
            (await client.get("/authz/afn/perm/", headers=headers)).status_code,
            (await client.get("/authz/afn/admin/", headers=headers)).status_code,
            (await client.get("/authz/afn/group-any/", headers={"Accept": "application/json"}))
            .status_code,
        ]

    assert async_to_sync(scenario)() == [200, 403, 401]


def test_all_groups_needs_every_group(principals: Principals, client: Client) -> None:
    both = principals.kr.create_user(groups=("users", "editors", "writers"))
    headers = {"Authorization": f"Bearer {principals.kr.issue_token(both)}"}
    assert client.get("/authz/fn/group-all/", headers=headers).status_code == 200
    writer = principals.kr.create_user(groups=("users", "writers"))
    headers = {"Authorization": f"Bearer {principals.kr.issue_token(writer)}"}
    assert client.get("/authz/fn/group-any/", headers=headers).status_code == 200
    assert client.get("/authz/fn/group-all/", headers=headers).status_code == 403


def test_tenant_admin_passes_require_admin(principals: Principals, client: Client) -> None:
    kr = principals.kr
    kr.create_organization("Acme", "acme")
    tenant_admin = kr.create_user(namespace="acme", groups=("admin", "users"))
    token = kr.issue_token(tenant_admin)
    # A service for the acme tenant accepts acme tokens only.
    from django.conf import settings
    from django.test import override_settings

    with override_settings(KEYRUNES={**settings.KEYRUNES, "NAMESPACE": "acme"}):
        response = client.get("/authz/fn/admin/", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_sdk_substring_admin_rule_is_not_used(principals: Principals, client: Client) -> None:
    kr = principals.kr
    kr.create_group("admins")
    kr.create_group("team-admin")
    user = kr.create_user(groups=("users", "admins", "team-admin"))
    headers = {"Authorization": f"Bearer {kr.issue_token(user)}"}
    assert client.get("/authz/fn/admin/", headers=headers).status_code == 403


def test_group_removed_in_keyrunes_stops_working_on_next_login(
    principals: Principals, client: Client
) -> None:
    principals.login(client, principals.editor)
    assert client.get("/authz/fn/group-any/").status_code == 200
    principals.kr.remove_from_group(principals.editor, "editors")
    principals.login(client, principals.editor)
    assert client.get("/authz/fn/group-any/").status_code == 403


# ------------------------------------------------------------- object level


def test_object_level_resource_from_callable_and_template(
    principals: Principals, client: Client
) -> None:
    kr = principals.kr
    kr.create_policy("doc5", "doc5:exact", "read")  # unrelated
    kr.create_policy("docs_5_read", "docs:5", "read")
    reader = kr.create_user(groups=("users",))
    kr.attach_policy("docs_5_read", user=reader)
    headers = {"Authorization": f"Bearer {kr.issue_token(reader)}", "Accept": "application/json"}
    assert client.get("/authz/fn/doc/5/", headers=headers).status_code == 200
    assert client.get("/authz/fn/doc/6/", headers=headers).status_code == 403
    assert client.get("/authz/fn/doc-template/5/", headers=headers).status_code == 200
    assert client.get("/authz/fn/doc-template/6/", headers=headers).status_code == 403


def test_context_callable_and_mapping(principals: Principals, client: Client) -> None:
    kr = principals.kr
    kr.create_policy("acme_reports", "reports:acme", "read")
    reader = kr.create_user(groups=("users",))
    kr.attach_policy("acme_reports", user=reader)
    headers = {"Authorization": f"Bearer {kr.issue_token(reader)}"}
    assert client.get("/authz/fn/tenant/?tenant=acme", headers=headers).status_code == 200
    assert client.get("/authz/fn/tenant/?tenant=other", headers=headers).status_code == 403
    assert client.get("/authz/fn/static-context/", headers=headers).status_code == 200


def test_unfillable_template_denies(principals: Principals, client: Client) -> None:
    headers = principals.headers("superadmin", "json")
    assert client.get("/authz/fn/bad-template/", headers=headers).status_code == 403


# -------------------------------------------------- caching and fail-safe


def test_remote_check_is_cached(principals: Principals, client: Client) -> None:
    kr = principals.kr
    headers = principals.headers("token", "json")
    kr.reset_counters()
    for _ in range(3):
        assert client.get("/authz/fn/perm/", headers=headers).status_code == 200
    assert kr.requests_to("/api/check-permission") == 1
    for _ in range(2):
        assert client.get("/authz/fn/perm-write/", headers=headers).status_code == 403
    assert kr.requests_to("/api/check-permission") == 2


def test_outage_denies_and_logs(
    principals: Principals, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "keyrunes_django.authorization")
    headers = principals.headers("token", "json")
    principals.kr.faults.add(r"^/api/check-permission$", status=503)
    assert client.get("/authz/fn/perm/", headers=headers).status_code == 403
    assert "policy check failed" in caplog.text
    principals.kr.faults.clear()
    # errors are not cached: the next request asks again and is allowed
    assert client.get("/authz/fn/perm/", headers=headers).status_code == 200


def test_malformed_answer_denies(principals: Principals, client: Client) -> None:
    headers = principals.headers("token", "json")
    principals.kr.faults.add(r"^/api/check-permission$", malformed=True)
    assert client.get("/authz/fn/perm/", headers=headers).status_code == 403


# ---------------------------------------------------------- HTML vs API


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        ("/page/", {}, False),
        ("/page/", {"HTTP_ACCEPT": "text/html,application/xhtml+xml,*/*;q=0.8"}, False),
        ("/page/", {"HTTP_ACCEPT": "application/json"}, True),
        ("/page/", {"HTTP_ACCEPT": "application/problem+json"}, True),
        ("/page/", {"HTTP_ACCEPT": "text/html, application/json"}, False),
        ("/page/", {"HTTP_AUTHORIZATION": "Bearer x"}, True),
        ("/page/", {"HTTP_X_ORGANIZATION_KEY": "k"}, True),
        ("/page/", {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest"}, True),
        ("/api/things/", {}, True),
        ("/apis/", {}, False),
    ],
)
def test_is_api_request(path: str, headers: dict[str, str], expected: bool) -> None:
    assert is_api_request(RequestFactory().get(path, **headers)) is expected  # type: ignore[arg-type]


def test_api_prefix_gives_401_without_accept(principals: Principals, client: Client) -> None:
    response = client.get("/api/authz/fn/group-any/")
    assert response.status_code == 401
    assert response.json()["detail"]


def test_custom_api_prefixes(principals: Principals, client: Client) -> None:
    from django.conf import settings
    from django.test import override_settings

    with override_settings(KEYRUNES={**settings.KEYRUNES, "API_PATH_PREFIXES": "/authz/"}):
        assert client.get("/authz/fn/group-any/").status_code == 401


# ------------------------------------------------------------- misuse


def test_decorators_need_their_arguments() -> None:
    def view(request: Any) -> HttpResponse:
        return HttpResponse()

    with pytest.raises(TypeError, match="parentheses"):
        require_admin(view)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="parentheses"):
        require_group(view)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="at least one"):
        require_group()
    with pytest.raises(TypeError, match="strings"):
        require_group(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="parentheses"):
        require_permission("docs", view)  # type: ignore[arg-type]


def test_wrapped_view_keeps_its_name() -> None:
    def my_view(request: Any) -> HttpResponse:
        return HttpResponse()

    async def my_async_view(request: Any) -> HttpResponse:
        return HttpResponse()

    from asgiref.sync import iscoroutinefunction

    assert keyrunes_login_required(my_view).__name__ == "my_view"
    wrapped: Callable[..., Any] = require_admin()(my_async_view)
    assert wrapped.__name__ == "my_async_view"
    assert iscoroutinefunction(wrapped)
    assert not iscoroutinefunction(require_group("a")(my_view))
