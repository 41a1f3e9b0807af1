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

from keyrunes_django import access
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


@pytest.mark.parametrize("form", ["drf", "drf-sub"])  # call form, subclass form
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_permission_classes(
    principals: Principals, client: Client, name: str, principal: str, fmt: str, form: str
) -> None:
    response = principals.get(client, principal, f"/authz/{form}/{name}/", fmt)
    expected = EXPECTED[name][PRINCIPALS.index(principal)]
    assert response.status_code == expected, (name, principal, response.content[:200])
    if expected == 401:
        assert "WWW-Authenticate" in response
    if expected == 403 and name in MESSAGES and principal != "anonymous":
        assert response.json()["detail"] == MESSAGES[name]


@pytest.mark.parametrize("form", ["drf", "drf-sub"])
def test_object_level(principals: Principals, client: Client, form: str) -> None:
    kr = principals.kr
    kr.create_policy("docs_5_read", "docs:5", "read")
    reader = kr.create_user(groups=("users",))
    kr.attach_policy("docs_5_read", user=reader)
    headers = {"Authorization": f"Bearer {kr.issue_token(reader)}"}
    assert client.get(f"/authz/{form}/doc/5/", headers=headers).status_code == 200
    denied = client.get(f"/authz/{form}/doc/6/", headers=headers)
    assert denied.status_code == 403
    assert denied.json()["detail"] == "Permission 'read' on 'docs:{obj.pk}' is required."
    org = {"X-Organization-Key": kr.organization_key(1)}
    assert client.get(f"/authz/{form}/doc/5/", headers=org).status_code == 403
    assert client.get(f"/authz/{form}/doc/5/").status_code == 401


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

    monkeypatch.setattr(access, "has_permission", fake)
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


# --------------------------------------------------------- the subclass form


def test_subclass_form_is_validated_and_described() -> None:
    class Editors(kp.HasGroup):
        groups = ("editors",)

    assert Editors.message == "Membership in one of the groups editors is required."
    assert Editors().has_permission(drf_request(identity(("editors",))), View())
    assert not Editors().has_permission(drf_request(identity(("users",))), View())

    class Both(kp.HasAllGroups):
        groups = ["a", "b"]  # a list is accepted and stored as a tuple

    assert Both.groups == ("a", "b")
    assert Both.message == "Membership in all of the groups a, b is required."

    class Read(kp.HasPermission):
        resource = "docs:{pk}"
        action = "read"

    assert Read.message == "Permission 'read' on 'docs:{pk}' is required."

    class Org3(kp.IsOrganization):
        organization_id = 3

    assert Org3.message == "A valid key of organization 3 is required."

    class AnyOrganization(kp.IsOrganization):
        pass

    assert AnyOrganization.message == "A valid organization key is required."
    assert Org3().has_permission(drf_request(OrganizationPrincipal(organization_id=3)), View())
    assert not Org3().has_permission(drf_request(OrganizationPrincipal(organization_id=4)), View())


def test_written_messages_are_kept_and_derived_ones_follow() -> None:
    class Editors(kp.HasGroup):
        groups = ("editors",)
        message = "Editors only."

    class Writers(Editors):
        groups = ("writers",)

    # A text somebody wrote is kept by subclasses; the library's own follows the groups.
    assert Writers.message == "Editors only."

    class Base(kp.HasGroup("editors")):
        pass

    class Other(Base):
        groups = ("other",)

    assert Base.message == "Membership in one of the groups editors is required."
    assert Other.message == "Membership in one of the groups other is required."
    assert kp.HasGroup("x").message == "Membership in one of the groups x is required."
    assert kp.HasGroup.message == kp.KeyrunesPermission.message


def test_subclass_of_a_call_form_result() -> None:
    class Custom(kp.HasPermission("docs:{pk}", "read")):
        message = "No."

    assert issubclass(Custom, kp.HasPermission)
    assert (Custom.resource, Custom.action, Custom.message) == ("docs:{pk}", "read", "No.")


def test_context_function_in_a_class_body_is_not_a_method(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []

    def fake(request: Any, resource: str, action: str, context: Any = None) -> bool:
        asked.append(access.resolve_resource(resource, context))
        return True

    monkeypatch.setattr(access, "has_permission", fake)

    class TenantReports(kp.HasPermission):
        resource = "reports:{tenant}:{pk}"
        action = "read"

        def context(request: Any) -> dict[str, str]:  # type: ignore[misc]
            return {"tenant": "acme"}

    assert TenantReports().has_permission(drf_request(identity()), View())
    assert asked == ["reports:acme:3"]


@pytest.mark.parametrize(
    "body",
    [
        {"groups": "editors"},  # ("editors") without the comma
        {"groups": ("editors", 3)},
        {"groups": ("",)},
        {"all_groups": "yes"},
    ],
)
def test_bad_group_class_attributes(body: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        type(kp.HasGroup)("Bad", (kp.HasGroup,), dict(body))


@pytest.mark.parametrize(
    ("base", "body"),
    [
        (kp.HasPermission, {"resource": "docs:*"}),
        (kp.HasPermission, {"action": "read"}),
        (kp.HasPermission, {"resource": 1, "action": "read"}),
        (kp.HasPermission, {"resource": "r", "action": "a", "object_level": 1}),
        (kp.HasPermission, {"resource": "r", "action": "a", "context": 5}),
        (kp.IsOrganization, {"organization_id": "2"}),
        (kp.IsOrganization, {"organization_id": True}),
        (kp.IsKeyrunesAuthenticated, {"allow_organization": "yes"}),
    ],
)
def test_bad_class_attributes(base: type, body: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        type(base)("Bad", (base,), dict(body))


def test_call_form_none_organization_is_refused() -> None:
    with pytest.raises(TypeError):
        kp.IsOrganization(None)
    with pytest.raises(TypeError):
        kp.IsKeyrunesAuthenticated(allow_organization=1)


# ------------------------------------------- every operand x every operator

class EditorsSub(kp.HasGroup):
    groups = ("editors",)


class NotSuperadmin(BasePermission):
    """A plain DRF permission class (no Keyrunes base)."""

    def has_permission(self, request: Any, view: Any) -> bool:
        groups = getattr(request.keyrunes, "groups", None) or ()
        return "superadmin" not in groups


# Each operand with its decision for (editor, superadmin, organization, anonymous).
OPERANDS: dict[str, tuple[Any, tuple[bool, bool, bool, bool]]] = {
    "bare": (kp.IsKeyrunesAdmin, (False, True, False, False)),
    "call": (kp.HasGroup("editors"), (True, False, False, False)),
    "subclass": (EditorsSub, (True, False, False, False)),
    "call-org": (kp.IsOrganization(1), (False, False, True, False)),
    "drf": (NotSuperadmin, (True, False, True, True)),
    "holder": (kp.HasGroup("editors") | kp.IsOrganization, (True, False, True, False)),
}


def callers() -> list[Any]:
    return [
        drf_request(identity(("editors",))),
        drf_request(identity(("superadmin",))),
        drf_request(OrganizationPrincipal(organization_id=1)),
        drf_request(None),
    ]


def decisions(permission_class: Any) -> tuple[bool, ...]:
    permission = permission_class()
    return tuple(bool(permission.has_permission(r, View())) for r in callers())


@pytest.mark.parametrize("left", sorted(OPERANDS))
@pytest.mark.parametrize("right", sorted(OPERANDS))
def test_every_combination(left: str, right: str) -> None:
    a, a_says = OPERANDS[left]
    b, b_says = OPERANDS[right]
    assert decisions(a) == a_says
    assert decisions(a & b) == tuple(x and y for x, y in zip(a_says, b_says, strict=True))
    assert decisions(a | b) == tuple(x or y for x, y in zip(a_says, b_says, strict=True))
    assert decisions(~a) == tuple(not x for x in a_says)
    assert decisions(~a & b) == tuple((not x) and y for x, y in zip(a_says, b_says, strict=True))
    assert decisions(a | ~b) == tuple(x or not y for x, y in zip(a_says, b_says, strict=True))


def test_defaults_by_dotted_path_in_a_fresh_interpreter() -> None:
    """Call form, subclass form and a composition as DEFAULT_PERMISSION_CLASSES."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent(
        """
        import django
        from django.conf import settings

        settings.configure(
            INSTALLED_APPS=[
                "django.contrib.auth",
                "django.contrib.contenttypes",
                "rest_framework",
                "keyrunes_django",
            ],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            KEYRUNES={"BASE_URL": "http://127.0.0.1:9"},
            REST_FRAMEWORK={
                "DEFAULT_PERMISSION_CLASSES": [
                    "tests.drf_default_permissions.EditorsByCall",
                    "tests.drf_default_permissions.Editors",
                    "tests.drf_default_permissions.EditorsOrAdmin",
                ],
            },
        )
        django.setup()
        from django.contrib.auth.models import AnonymousUser
        from django.test import RequestFactory
        from rest_framework.views import APIView

        from keyrunes_django.identity import VerifiedIdentity

        def request(groups):
            r = RequestFactory().get("/")
            r.user = AnonymousUser()
            r.keyrunes = VerifiedIdentity(
                user_id=1, username="u", email="", namespace="public",
                organization_id=1, groups=groups,
            )
            return r

        view = APIView()
        for groups in (("editors",), ("users",)):
            print([p.has_permission(request(groups), view) for p in view.get_permissions()])
        """
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[True, True, True]", "[False, False, False]"]
