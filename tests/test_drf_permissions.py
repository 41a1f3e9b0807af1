"""keyrunes_django.drf.permissions: each class and composition x principal, plus object level."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from rest_framework.permissions import (
    AND,
    NOT,
    OR,
    BasePermission,
    IsAuthenticated,
    OperandHolder,
    SingleOperandHolder,
)
from rest_framework.test import APIRequestFactory

from keyrunes_django.drf import permissions as kp
from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity
from tests.test_decorators import (
    FORMATS,
    PRINCIPALS,
    Principals,
    _keyrunes_middleware,
    principals,
)

__all__ = ["_keyrunes_middleware", "principals"]  # fixtures used here

# (anonymous, session, token, org, superadmin)
EXPECTED: dict[str, tuple[int, int, int, int, int]] = {
    "authenticated": (401, 200, 200, 403, 200),
    "authenticated-org": (401, 200, 200, 200, 200),
    "admin": (401, 403, 403, 403, 200),
    "group-any": (401, 200, 200, 403, 403),
    "group-all": (401, 403, 403, 403, 403),
    "perm": (401, 200, 200, 403, 200),
    "perm-write": (401, 403, 403, 403, 200),
    "organization": (401, 403, 403, 200, 403),
    "organization-1": (401, 403, 403, 200, 403),
    "organization-2": (401, 403, 403, 403, 403),
    "and": (401, 200, 200, 403, 403),
    "or": (401, 200, 200, 403, 200),
    # DRF's NOT: an anonymous caller is "not an editor", so it passes.
    "not": (200, 403, 403, 200, 200),
    "not-admin-and-auth": (401, 200, 200, 403, 403),
    "nested": (401, 200, 200, 200, 403),
}

MESSAGES = {
    "authenticated": "Authentication as a Keyrunes user is required.",
    "admin": "Keyrunes administrator access is required.",
    "group-any": "Membership in one of the groups editors, writers is required.",
    "group-all": "Membership in all of the groups editors, writers is required.",
    "perm-write": "Permission 'write' on 'docs:*' is required.",
    "organization": "A valid organization key is required.",
    "organization-2": "A valid key of organization 2 is required.",
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_permission_classes(
    principals: Principals, client: Client, name: str, principal: str, fmt: str
) -> None:
    response = principals.get(client, principal, f"/authz/drf/{name}/", fmt)
    expected = EXPECTED[name][PRINCIPALS.index(principal)]
    assert response.status_code == expected, (name, principal, response.content[:200])
    if expected == 401:
        assert "WWW-Authenticate" in response
    if expected == 403 and name in MESSAGES and principal != "anonymous":
        assert response.json()["detail"] == MESSAGES[name]


def test_object_level(principals: Principals, client: Client) -> None:
    kr = principals.kr
    kr.create_policy("docs_5_read", "docs:5", "read")
    reader = kr.create_user(groups=("users",))
    kr.attach_policy("docs_5_read", user=reader)
    headers = {"Authorization": f"Bearer {kr.issue_token(reader)}"}
    assert client.get("/authz/drf/doc/5/", headers=headers).status_code == 200
    denied = client.get("/authz/drf/doc/6/", headers=headers)
    assert denied.status_code == 403
    assert denied.json()["detail"] == "Permission 'read' on 'docs:{obj.pk}' is required."
    org = {"X-Organization-Key": kr.organization_key(1)}
    assert client.get("/authz/drf/doc/5/", headers=org).status_code == 403
    assert client.get("/authz/drf/doc/5/").status_code == 401


# ------------------------------------------------------------ class mechanics


def identity(groups: tuple[str, ...] = ("editors",)) -> VerifiedIdentity:
    return VerifiedIdentity(
        user_id=7, username="a", email="a@example.com", namespace="public", organization_id=1,
        groups=groups,
    )


def drf_request(principal: Any = None) -> Any:
    request: Any = APIRequestFactory().get("/")
    from django.contrib.auth.models import AnonymousUser

    request.user = AnonymousUser()
    request.keyrunes = principal
    return request


class View:
    kwargs: dict[str, Any] = {"pk": 3}


def test_configured_classes_are_permission_classes() -> None:
    cls = kp.HasGroup("a", "b")
    assert isinstance(cls, type)
    assert issubclass(cls, BasePermission)
    assert issubclass(cls, kp.HasGroup)
    assert cls.__name__ == "HasGroup('a', 'b')"
    assert cls.groups == ("a", "b")
    instance = cls()
    assert isinstance(instance, kp.HasGroup)
    # the bare class is untouched
    assert kp.HasGroup.groups == ()
    assert kp.HasAllGroups("x").all_groups is True


@pytest.mark.parametrize(
    ("expression", "operator", "holder"),
    [
        (lambda: kp.HasGroup("a") & kp.IsKeyrunesAdmin, AND, OperandHolder),
        (lambda: kp.IsKeyrunesAdmin & kp.HasGroup("a"), AND, OperandHolder),
        (lambda: kp.HasGroup("a") | kp.HasPermission("r", "x"), OR, OperandHolder),
        (lambda: IsAuthenticated | kp.HasAllGroups("a", "b"), OR, OperandHolder),
        (lambda: ~kp.HasGroup("a"), NOT, SingleOperandHolder),
        (lambda: ~kp.IsOrganization(1), NOT, SingleOperandHolder),
        (lambda: (kp.HasGroup("a") & ~kp.IsKeyrunesAdmin) | kp.IsOrganization, OR, OperandHolder),
    ],
)
def test_operators(expression: Any, operator: type, holder: type) -> None:
    composed = expression()
    assert isinstance(composed, holder)
    assert isinstance(composed(), operator)


def test_composition_decisions() -> None:
    editor = drf_request(identity(("editors",)))
    admin = drf_request(identity(("superadmin",)))
    org = drf_request(OrganizationPrincipal(organization_id=1))
    cases = [
        (kp.HasGroup("editors") & kp.IsKeyrunesAdmin, (False, False, False)),
        (kp.HasGroup("editors") | kp.IsKeyrunesAdmin, (True, True, False)),
        (~kp.HasGroup("editors"), (False, True, True)),
        (~kp.IsKeyrunesAdmin & kp.IsKeyrunesAuthenticated, (True, False, False)),
        (kp.IsOrganization(1) | kp.HasGroup("editors"), (True, False, True)),
    ]
    for composed, expected in cases:
        permission = composed()
        got = tuple(permission.has_permission(r, View()) for r in (editor, admin, org))
        assert got == expected, composed


def test_has_permission_formats_from_view_kwargs_and_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str, str]] = []

    def fake(request: Any, resource: str, action: str, context: Any = None) -> bool:
        from keyrunes_django.authorization import resolve_resource

        asked.append((resolve_resource(resource, context), action))
        return True

    monkeypatch.setattr(kp, "has_permission", fake)
    request = drf_request(identity())
    assert kp.HasPermission("docs:{pk}", "read")().has_permission(request, View())
    ctx = kp.HasPermission("t:{tenant}", "read", context=lambda r: {"tenant": "acme"})()
    assert ctx.has_permission(request, View())
    static = kp.HasPermission("t:{tenant}", action="read", context={"tenant": "x"})()
    assert static.has_permission(request, View())
    obj = type("Doc", (), {"pk": 9})()
    object_level = kp.HasPermission("docs:{obj.pk}", "read", object_level=True)()
    assert object_level.has_permission(request, View())  # a Keyrunes user: defer to the object
    assert object_level.has_object_permission(request, View(), obj)
    assert kp.HasPermission("docs:*", "read")().has_object_permission(request, View(), obj)
    assert asked == [("docs:3", "read"), ("t:acme", "read"), ("t:x", "read"), ("docs:9", "read")]
    # object-level classes refuse non-users up front
    assert not object_level.has_permission(drf_request(None), View())
    org = drf_request(OrganizationPrincipal(organization_id=1))
    assert not kp.HasObjectPermission("docs:{obj.pk}", "read")().has_permission(org, View())


def test_is_organization_pins_the_id() -> None:
    org2 = drf_request(OrganizationPrincipal(organization_id=2))
    assert kp.IsOrganization().has_permission(org2, View())
    assert kp.IsOrganization(organization_id=2)().has_permission(org2, View())
    assert not kp.IsOrganization(1)().has_permission(org2, View())
    assert not kp.IsOrganization().has_permission(drf_request(identity()), View())


@pytest.mark.parametrize(
    "call",
    [
        lambda: kp.IsKeyrunesAdmin("x"),
        lambda: kp.HasGroup(3),
        lambda: kp.HasGroup(""),
        lambda: kp.HasGroup(name="a"),
        lambda: kp.HasPermission("r"),
        lambda: kp.HasPermission("", "read"),
        lambda: kp.HasPermission("r", "a", "b", "c", "d"),
        lambda: kp.HasPermission("r", "a", extra=1),
        lambda: kp.IsOrganization("2"),
        lambda: kp.IsOrganization(True),
        lambda: kp.IsOrganization(1, organization_id=2),
        lambda: kp.IsKeyrunesAuthenticated(True),
    ],
)
def test_bad_arguments_raise_type_error(call: Any) -> None:
    with pytest.raises(TypeError):
        call()


def test_bare_classes_that_need_arguments_say_so() -> None:
    request = drf_request(identity())
    with pytest.raises(ImproperlyConfigured, match="group names"):
        kp.HasGroup().has_permission(request, View())
    with pytest.raises(ImproperlyConfigured, match="resource"):
        kp.HasPermission().has_permission(request, View())
    with pytest.raises(ImproperlyConfigured, match="resource"):
        kp.HasObjectPermission().has_object_permission(request, View(), object())
