"""keyrunes_django.users.StatelessUser: no row, no query, and the mirror's answers."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings
from django.views import View
from rest_framework.test import APIRequestFactory

from keyrunes_django import access
from keyrunes_django.decorators import (
    keyrunes_login_required,
    require_admin,
    require_group,
    require_permission,
)
from keyrunes_django.drf import permissions as kp
from keyrunes_django.identity import VerifiedIdentity
from keyrunes_django.mapping import get_mapper
from keyrunes_django.mixins import AdminRequiredMixin, GroupRequiredMixin, PermissionRequiredMixin
from keyrunes_django.templatetags.keyrunes import in_keyrunes_group, is_keyrunes_admin
from keyrunes_django.testing import KeyrunesEmulator
from keyrunes_django.users import StatelessUser


def identity(
    groups: tuple[str, ...] | None = ("users",),
    namespace: str = "public",
    user_id: int = 7,
    username: str = "alice",
) -> VerifiedIdentity:
    return VerifiedIdentity(
        user_id=user_id,
        username=username,
        email=f"{username}@example.com",
        namespace=namespace,
        organization_id=1,
        groups=groups,
    )


# ------------------------------------------------------------------ the object


def test_attributes() -> None:
    user = StatelessUser.from_identity(identity(("users", "editors")))
    assert (user.pk, user.id, user.username, user.email) == (7, 7, "alice", "alice@example.com")
    assert (user.namespace, user.organization_id) == ("public", 1)
    assert user.groups == ("users", "editors")
    assert user.is_authenticated
    assert not user.is_anonymous
    assert user.is_active
    assert not user.is_staff
    assert not user.is_superuser
    assert user.get_username() == "alice" == str(user)
    assert user.natural_key() == ("alice",)
    assert repr(user) == "<StatelessUser public:7>"
    assert StatelessUser(identity(None)).groups == ()


def test_equality_is_namespace_and_remote_id() -> None:
    a = StatelessUser(identity(user_id=7))
    assert a == StatelessUser(identity(("other",), user_id=7, username="renamed"))
    assert a != StatelessUser(identity(user_id=8))
    assert a != StatelessUser(identity(namespace="acme", user_id=7))
    assert a != 7
    assert len({a, StatelessUser(identity(user_id=7)), StatelessUser(identity(user_id=8))}) == 2


def test_only_an_identity_makes_one() -> None:
    with pytest.raises(TypeError, match="VerifiedIdentity"):
        StatelessUser({"user_id": 7})  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["save", "delete", "set_password", "check_password"])
def test_there_is_no_row_to_write(method: str) -> None:
    with pytest.raises(NotImplementedError, match="no database row"):
        getattr(StatelessUser(identity()), method)("x")


def test_django_permissions_superuser_only() -> None:
    plain = StatelessUser(identity(("users", "admin")))  # tenant admin: staff, not superuser
    assert plain.is_staff
    assert not plain.is_superuser
    assert not plain.has_perm("auth.view_user")
    assert not plain.has_perms(["auth.view_user"])
    assert not plain.has_module_perms("auth")
    root = StatelessUser(identity(("superadmin",)))
    assert root.is_staff
    assert root.is_superuser
    assert root.has_perm("auth.view_user")
    assert root.has_perms(["a.b", "c.d"])
    assert root.has_module_perms("auth")
    assert root.get_all_permissions() == set() == root.get_group_permissions()
    assert root.get_user_permissions() == set()


# --------------------------------------------- agreement with the mirrored user

IDENTITIES = [
    identity(("users",)),
    identity(("users", "editors")),
    identity(("superadmin",)),
    identity(("admin", "editors")),
    identity(("superadmin",), namespace="acme"),
    identity(("admin",), namespace="acme"),
    identity(("Admin", "administrators", "superadmins")),  # no substring admin rule
    identity(()),
    identity(None),
]
FLAG_RULES: list[Any] = [
    None,
    {"is_staff": ["editors"], "is_superuser": "admin"},
    {"is_staff": None, "is_superuser": ["nobody"]},
]
QUESTIONS = [("users",), ("editors",), ("admin",), ("superadmin",), ("users", "editors")]


@pytest.mark.django_db
@pytest.mark.parametrize("flags_by_group", FLAG_RULES)
@pytest.mark.parametrize("who", IDENTITIES, ids=lambda i: f"{i.namespace}:{i.groups}")
def test_group_and_admin_answers_agree_with_the_mirror(
    who: VerifiedIdentity, flags_by_group: Any
) -> None:
    keyrunes = {**settings.KEYRUNES, "NAMESPACE": who.namespace}
    keyrunes["FLAGS_BY_GROUP"] = flags_by_group
    with override_settings(KEYRUNES=keyrunes):
        mirrored = get_mapper().mirror(who).user
        mirrored = type(mirrored).objects.get(pk=mirrored.pk)  # as a later request loads it
        stateless = StatelessUser.from_identity(who)
        for user in (mirrored, stateless):
            assert access.is_authenticated(user)
        for names in QUESTIONS:
            assert access.has_group(stateless, *names) == access.has_group(mirrored, *names)
            assert access.has_group(stateless, *names, all_groups=True) == access.has_group(
                mirrored, *names, all_groups=True
            )
            assert in_keyrunes_group(stateless, names[0]) == in_keyrunes_group(mirrored, names[0])
        assert access.is_admin(stateless) == access.is_admin(mirrored)
        assert is_keyrunes_admin(stateless) == is_keyrunes_admin(mirrored)
        assert (stateless.is_staff, stateless.is_superuser) == (
            mirrored.is_staff,
            mirrored.is_superuser,
        )
        assert access.get_identity(stateless) == who


# ------------------------------------------------- no query anywhere it is used


def ok(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return HttpResponse("ok")


def stateless_request(groups: tuple[str, ...], factory: Any = None) -> Any:
    request = (factory or RequestFactory()).get("/page/", HTTP_ACCEPT="application/json")
    request.user = StatelessUser(identity(groups))
    return request


@pytest.mark.django_db
def test_questions_and_decorators_make_no_query(django_assert_num_queries: Any) -> None:
    editor = stateless_request(("users", "editors"))
    with django_assert_num_queries(0):
        assert access.has_group(editor, "editors")
        assert not access.is_admin(editor)
        assert keyrunes_login_required(ok)(editor).status_code == 200
        assert require_group("editors")(ok)(editor).status_code == 200
        with pytest.raises(PermissionDenied):
            require_admin()(ok)(editor)
        with pytest.raises(PermissionDenied):
            require_group("writers")(ok)(editor)


@pytest.mark.django_db
def test_mixins_make_no_query(django_assert_num_queries: Any) -> None:
    class Editors(GroupRequiredMixin, View):
        required_groups = ("editors",)

        def get(self, request: HttpRequest) -> HttpResponse:
            return HttpResponse("ok")

    class Admins(AdminRequiredMixin, View):
        def get(self, request: HttpRequest) -> HttpResponse:
            return HttpResponse("ok")

    with django_assert_num_queries(0):
        assert Editors.as_view()(stateless_request(("editors",))).status_code == 200
        assert Admins.as_view()(stateless_request(("superadmin",))).status_code == 200
        with pytest.raises(PermissionDenied):
            Admins.as_view()(stateless_request(("editors",)))


@pytest.mark.django_db
def test_drf_permissions_make_no_query(django_assert_num_queries: Any) -> None:
    class View_:
        kwargs: dict[str, Any] = {}

    editor = stateless_request(("editors",), APIRequestFactory())
    root = stateless_request(("superadmin",), APIRequestFactory())
    with django_assert_num_queries(0):
        assert kp.IsKeyrunesAuthenticated().has_permission(editor, View_())
        assert kp.HasGroup("editors")().has_permission(editor, View_())
        assert not kp.IsKeyrunesAdmin().has_permission(editor, View_())
        assert kp.IsKeyrunesAdmin().has_permission(root, View_())
        assert not kp.IsOrganization().has_permission(editor, View_())
        composed = (kp.HasGroup("editors") & ~kp.IsKeyrunesAdmin)()
        assert composed.has_permission(editor, View_())
        assert not composed.has_permission(root, View_())


@pytest.mark.django_db
def test_policy_checks_ask_keyrunes_without_a_query(
    keyrunes: KeyrunesEmulator, django_assert_num_queries: Any
) -> None:
    keyrunes.create_group("editors")
    keyrunes.create_policy("docs_read", "docs:*", "read")
    keyrunes.attach_policy("docs_read", group="editors")
    member = keyrunes.create_user(groups=("users", "editors"))
    caches["default"].clear()
    request = RequestFactory().get("/docs/3/", HTTP_ACCEPT="application/json")
    request.user = StatelessUser(identity(("users", "editors"), user_id=member.user_id))

    class Doc(PermissionRequiredMixin, View):
        required_permission = ("docs:{pk}", "write")

        def get(self, request: HttpRequest, pk: int) -> HttpResponse:
            return HttpResponse("ok")

    with django_assert_num_queries(0):
        assert require_permission("docs:{pk}", "read")(ok)(request, pk=3).status_code == 200
        assert kp.HasPermission("docs:*", "read")().has_permission(request, object())
        with pytest.raises(PermissionDenied):
            Doc.as_view()(request, pk=3)
    caches["default"].clear()
