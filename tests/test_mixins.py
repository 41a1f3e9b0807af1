"""keyrunes_django.mixins: the decorators' semantics on class-based views (sync and async)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, RequestFactory
from django.views import View

from keyrunes_django.mixins import GroupRequiredMixin, PermissionRequiredMixin
from tests.test_decorators import (
    FORMATS,
    PRINCIPALS,
    Principals,
    _keyrunes_middleware,
    assert_outcome,
    principals,
)

__all__ = ["_keyrunes_middleware", "principals"]  # fixtures used here

EXPECTED: dict[str, tuple[tuple[int, int, int, int], bool]] = {
    # name: ((session, token, org, superadmin), raises_for_anonymous)
    "login": ((200, 200, 403, 200), False),
    "login-org": ((200, 200, 200, 200), False),
    "group-any": ((200, 200, 403, 403), False),
    "group-all": ((403, 403, 403, 403), False),
    "group-raise": ((200, 200, 403, 403), True),
    "admin": ((403, 403, 403, 200), False),
    "perm": ((200, 200, 403, 200), False),
    "perm-write": ((403, 403, 403, 200), False),
    "async-group-any": ((200, 200, 403, 403), False),
    "async-admin": ((403, 403, 403, 200), False),
    "async-perm": ((200, 200, 403, 200), False),
}


def expected_status(name: str, principal: str, fmt: str) -> int:
    codes, raises = EXPECTED[name]
    if principal == "anonymous":
        if raises:
            return 403
        return 302 if fmt == "html" else 401
    return codes[PRINCIPALS.index(principal) - 1]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_mixins(
    principals: Principals, client: Client, name: str, principal: str, fmt: str
) -> None:
    url = f"/authz/cbv/{name}/"
    response = principals.get(client, principal, url, fmt)
    expected = expected_status(name, principal, fmt)
    assert_outcome(response, expected, url)
    if expected == 200 and name.startswith("async-"):
        assert response.json() == {"ok": True, "async": True}


@pytest.mark.parametrize("url", ["/authz/cbv/doc/{}/", "/authz/cbv/doc-override/{}/"])
def test_object_level_permission(principals: Principals, client: Client, url: str) -> None:
    kr = principals.kr
    kr.create_policy("docs_5_read", "docs:5", "read")
    reader = kr.create_user(groups=("users",))
    kr.attach_policy("docs_5_read", user=reader)
    headers = {"Authorization": f"Bearer {kr.issue_token(reader)}"}
    assert client.get(url.format(5), headers=headers).status_code == 200
    assert client.get(url.format(6), headers=headers).status_code == 403
    assert client.get(url.format(5)).status_code == 302


def test_custom_login_url() -> None:
    from tests.views_authorization import AdminView

    request: Any = RequestFactory().get("/x/")
    request.user = AnonymousUser()
    response = AdminView.as_view(login_url="/elsewhere/")(request)
    assert response.status_code == 302
    assert response["Location"].startswith("/elsewhere/?next=/x/")


def test_misconfigured_mixins_say_what_is_missing() -> None:
    class NoGroups(GroupRequiredMixin, View):
        pass

    class NoPermission(PermissionRequiredMixin, View):
        pass

    request: Any = RequestFactory().get("/")
    request.user = AnonymousUser()
    request.keyrunes = None
    with pytest.raises(ImproperlyConfigured, match="required_groups"):
        NoGroups.as_view()(request)
    token_identity = principals_identity()
    request.keyrunes = token_identity
    with pytest.raises(ImproperlyConfigured, match="required_permission"):
        NoPermission.as_view()(request)


def principals_identity() -> Any:
    from keyrunes_django.identity import VerifiedIdentity

    return VerifiedIdentity(
        user_id=1, username="u", email="u@example.com", namespace="public", organization_id=1,
        groups=("users",),
    )


def test_permission_denied_message_overrides_the_refusal() -> None:
    from django.core.exceptions import PermissionDenied

    from tests.views_authorization import AdminView

    class Custom(AdminView):
        permission_denied_message = "Admins only, sorry."

    request: Any = RequestFactory().get("/")
    request.user = AnonymousUser()
    request.keyrunes = principals_identity()
    with pytest.raises(PermissionDenied, match="Admins only, sorry"):
        Custom.as_view()(request)
    with pytest.raises(PermissionDenied, match="administrator access"):
        AdminView.as_view()(request)
