"""keyrunes_django.authorization: principals, groups, admin status, remote policy checks."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group
from django.core.cache import caches
from django.test import RequestFactory, override_settings

import keyrunes_django
from keyrunes_django import authorization
from keyrunes_django.authorization import (
    get_identity,
    has_group,
    has_permission,
    is_admin,
    is_authenticated,
    permission_cache_key,
    resolve_resource,
)
from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity
from keyrunes_django.models import KeyrunesIdentity, MirroredGroup

LOGGER = "keyrunes_django.authorization"


def identity(
    groups: tuple[str, ...] = ("users",), namespace: str = "public", user_id: int = 7
) -> VerifiedIdentity:
    return VerifiedIdentity(
        user_id=user_id,
        username="alice",
        email="alice@example.com",
        namespace=namespace,
        organization_id=1,
        groups=groups,
    )


def make_user(username: str = "alice", **flags: Any) -> Any:
    return get_user_model().objects.create_user(username=username, **flags)


def link(
    user: Any, *, groups: Any = ("users",), namespace: str = "public", remote_id: int = 7
) -> None:
    payload: dict[str, Any] = {"username": user.get_username(), "email": "a@example.com"}
    if groups is not None:
        payload["groups"] = list(groups)
    KeyrunesIdentity.objects.create(
        user=user,
        namespace=namespace,
        remote_user_id=remote_id,
        organization_id=1,
        external_id="ext-1",
        payload=payload,
    )


@pytest.fixture
def rf() -> RequestFactory:
    return RequestFactory()


@pytest.fixture(autouse=True)
def _clear_cache() -> Any:
    caches["default"].clear()
    yield
    caches["default"].clear()


# ------------------------------------------------------------------ get_identity


class TestGetIdentity:
    def test_none_and_anonymous(self, rf: RequestFactory) -> None:
        assert get_identity(None) is None
        request = rf.get("/")
        request.user = AnonymousUser()
        assert get_identity(request) is None
        assert get_identity(AnonymousUser()) is None

    def test_principal_passes_through(self) -> None:
        ident = identity()
        org = OrganizationPrincipal(organization_id=3)
        assert get_identity(ident) is ident
        assert get_identity(org) is org

    def test_request_keyrunes_wins(self, rf: RequestFactory) -> None:
        request = rf.get("/")
        request.user = AnonymousUser()
        ident = identity(("editors",))
        request.keyrunes = ident  # type: ignore[attr-defined]
        assert get_identity(request) is ident

    def test_drf_style_auth_attribute(self, rf: RequestFactory) -> None:
        request = rf.get("/")
        request.user = AnonymousUser()
        org = OrganizationPrincipal(organization_id=2)
        request.auth = org  # type: ignore[attr-defined]
        assert get_identity(request) is org

    def test_organization_user_carries_principal(self) -> None:
        from keyrunes_django.drf.authentication import OrganizationUser

        org = OrganizationPrincipal(organization_id=2)
        assert get_identity(OrganizationUser(org)) is org
        assert not is_admin(OrganizationUser(org))
        assert not has_group(OrganizationUser(org), "users")

    @pytest.mark.django_db
    def test_session_user_from_mirror_payload(self, rf: RequestFactory) -> None:
        user = make_user()
        link(user, groups=("users", "editors"), namespace="public", remote_id=42)
        request = rf.get("/")
        request.user = get_user_model().objects.get(pk=user.pk)
        found = get_identity(request)
        assert isinstance(found, VerifiedIdentity)
        assert found.user_id == 42
        assert found.namespace == "public"
        assert found.groups == ("users", "editors")
        assert found.external_id == "ext-1"
        # memoised on the user object: no second query
        assert get_identity(request.user) is found

    @pytest.mark.django_db
    def test_session_user_without_payload_groups_uses_mirrored_groups(self) -> None:
        user = make_user()
        link(user, groups=None)
        local = Group.objects.create(name="kr-editors")
        MirroredGroup.objects.create(group=local, remote_name="editors", namespace="public")
        Group.objects.create(name="local-only")
        user.groups.add(local, Group.objects.get(name="local-only"))
        found = get_identity(get_user_model().objects.get(pk=user.pk))
        assert isinstance(found, VerifiedIdentity)
        assert found.groups == ("editors",)

    @pytest.mark.django_db
    def test_local_only_user_has_no_identity(self) -> None:
        user = make_user()
        assert get_identity(user) is None
        assert is_authenticated(user)
        assert not has_group(user, "users")


# -------------------------------------------------------------- groups, admin


class TestGroups:
    def test_any_and_all(self) -> None:
        ident = identity(("users", "editors"))
        assert has_group(ident, "editors", "writers")
        assert not has_group(ident, "editors", "writers", all_groups=True)
        assert has_group(ident, "editors", "users", all_groups=True)
        assert not has_group(ident, "writers")

    def test_names_are_exact(self) -> None:
        ident = identity(("Editors",))
        assert not has_group(ident, "editors")

    def test_organization_and_anonymous_have_no_groups(self) -> None:
        assert not has_group(OrganizationPrincipal(organization_id=1), "users")
        assert not has_group(None, "users")
        assert not has_group(AnonymousUser(), "users")

    def test_needs_a_name(self) -> None:
        with pytest.raises(ValueError, match="at least one"):
            has_group(identity())

    def test_lazy_package_exports(self) -> None:
        assert keyrunes_django.has_group is has_group
        assert keyrunes_django.is_admin is is_admin
        assert keyrunes_django.has_permission is has_permission
        with pytest.raises(AttributeError):
            keyrunes_django.nothing_here  # noqa: B018


class TestIsAdmin:
    @pytest.mark.parametrize(
        ("groups", "namespace", "expected"),
        [
            (("superadmin",), "public", True),  # global superadmin
            (("admin",), "acme", True),  # tenant admin
            (("admin",), "public", True),
            (("superadmin",), "acme", True),  # a tenant's own superadmin group: its admin
            (("users",), "public", False),
            (("admins",), "public", False),  # the SDK's "admins" means nothing
            (("team-admin", "Administrators"), "public", False),  # never a substring rule
            (("Admin", "SUPERADMIN"), "public", False),  # case-sensitive
            ((), "public", False),
        ],
    )
    def test_exact_names(self, groups: tuple[str, ...], namespace: str, expected: bool) -> None:
        assert is_admin(identity(groups, namespace)) is expected

    def test_organization_is_never_admin(self) -> None:
        assert not is_admin(OrganizationPrincipal(organization_id=1))
        assert not is_admin(None)

    @pytest.mark.django_db
    def test_django_superuser_flag(self) -> None:
        assert is_admin(make_user("root", is_superuser=True))
        assert not is_admin(make_user("staff", is_staff=True))
        assert not is_admin(make_user("gone", is_superuser=True, is_active=False))

    @pytest.mark.django_db
    def test_mirrored_admin(self) -> None:
        user = make_user()
        link(user, groups=("admin", "users"), namespace="acme")
        assert is_admin(user)


# ---------------------------------------------------------------- pure helpers


def test_resolve_resource() -> None:
    assert resolve_resource("docs:*", None) == "docs:*"
    assert resolve_resource("docs:{pk}", {"pk": 5}) == "docs:5"
    assert resolve_resource("docs:{obj.pk}", {"obj": type("O", (), {"pk": 9})()}) == "docs:9"
    assert resolve_resource("plain", {"pk": 5}) == "plain"
    assert resolve_resource("set:{{a}}", None) == "set:{a}"
    with pytest.raises(KeyError):
        resolve_resource("docs:{pk}", None)
    with pytest.raises(KeyError):
        resolve_resource("docs:{pk}", {"other": 1})


def test_permission_cache_key_is_hashed_and_distinct() -> None:
    key = permission_cache_key("public", 7, "docs:a b", "read")
    assert key.startswith("keyrunes:perm:")
    assert " " not in key
    assert len(key) < 100
    assert key != permission_cache_key("acme", 7, "docs:a b", "read")
    assert key != permission_cache_key("public", 8, "docs:a b", "read")
    assert key != permission_cache_key("public", 7, "docs:a b", "write")


# --------------------------------------------------------- has_permission local


class TestHasPermissionWithoutServer:
    def test_anonymous_and_organization_are_denied(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, LOGGER)
        assert not has_permission(None, "docs:*", "read")
        assert not has_permission(OrganizationPrincipal(organization_id=1), "docs:*", "read")
        assert "organization keys" in caplog.text

    def test_other_namespace_is_denied(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, LOGGER)
        assert not has_permission(identity(namespace="acme"), "docs:*", "read")
        assert "namespace 'acme'" in caplog.text

    def test_unfillable_resource_is_denied(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, LOGGER)
        assert not has_permission(identity(), "docs:{pk}", "read", {"id": 1})
        assert "cannot be filled" in caplog.text

    def test_unreachable_server_denies(self, caplog: pytest.LogCaptureFixture) -> None:
        # tests/settings.py points BASE_URL at a closed port.
        caplog.set_level(logging.INFO, LOGGER)
        with override_settings(
            KEYRUNES={"BASE_URL": "http://127.0.0.1:9", "ORGANIZATION_KEY": "k", "RETRIES": 0}
        ):
            assert not has_permission(identity(), "docs:*", "read")
        assert "policy check failed" in caplog.text

    def test_no_org_key_and_no_service_account_denies(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, LOGGER)
        assert not has_permission(identity(), "docs:*", "read")
        assert "ServiceAccountError" in caplog.text

    def test_broken_cache_is_a_miss(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Broken:
            def get(self, *a: Any) -> Any:
                raise ConnectionError("cache down")

            def set(self, *a: Any) -> Any:
                raise ConnectionError("cache down")

        monkeypatch.setattr(authorization, "caches", {"default": Broken()})
        monkeypatch.setattr(authorization, "_ask_server", lambda *a: True)
        caplog.set_level(logging.INFO, LOGGER)
        assert has_permission(identity(), "docs:*", "read")
        assert "permission cache unavailable" in caplog.text

    def test_non_boolean_cache_entry_is_ignored(self, monkeypatch: pytest.MonkeyPatch) -> None:
        key = permission_cache_key("public", 7, "docs:*", "read")
        caches["default"].set(key, "yes", 60)
        monkeypatch.setattr(authorization, "_ask_server", lambda *a: False)
        assert not has_permission(identity(), "docs:*", "read")
        assert caches["default"].get(key) is False


# ------------------------------------------------ has_permission, remote variants


@pytest.mark.django_db
class TestRemoteVariants:
    @pytest.fixture
    def editor(self, keyrunes: Any) -> Any:
        keyrunes.create_group("editors")
        keyrunes.create_policy("docs_read", "docs:*", "read")
        keyrunes.attach_policy("docs_read", group="editors")
        user = keyrunes.create_user(groups=("users", "editors"))
        return VerifiedIdentity(
            user_id=user.user_id,
            username=user.username,
            email=user.email,
            namespace="public",
            organization_id=1,
            groups=("users", "editors"),
        )

    @staticmethod
    def settings_for(kr: Any, **extra: Any) -> dict[str, Any]:
        return {
            "BASE_URL": kr.base_url,
            "JWT_SECRET": kr.jwt_secret,
            "RETRIES": 0,
            "SERVICE_ACCOUNT": {"IDENTITY": "admin@example.com", "PASSWORD": "Admin123"},
            **extra,
        }

    def test_organization_key_route(self, keyrunes: Any, editor: VerifiedIdentity) -> None:
        keyrunes.reset_counters()
        assert has_permission(editor, "docs:1", "read")
        assert has_permission(editor, "docs:1", "read")
        assert not has_permission(editor, "docs:1", "write")
        assert keyrunes.requests_to("/api/check-permission") == 2
        assert keyrunes.requests_to("/api/admin/check-permission") == 0

    def test_admin_route_without_organization_key(
        self, keyrunes: Any, editor: VerifiedIdentity
    ) -> None:
        with override_settings(KEYRUNES=self.settings_for(keyrunes)):
            keyrunes.reset_counters()
            assert has_permission(editor, "docs:1", "read")
            assert has_permission(editor, "docs:1", "read")
            assert not has_permission(editor, "other", "read")
        assert keyrunes.requests_to("/api/admin/check-permission") == 2
        assert keyrunes.requests_to("/api/check-permission") == 0

    def test_admin_route_refuses_another_namespace(
        self, keyrunes: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        keyrunes.create_organization("Acme", "acme")
        member = keyrunes.create_user(namespace="acme", groups=("users",))
        tenant_identity = identity(namespace="acme", user_id=member.user_id)
        caplog.set_level(logging.INFO, LOGGER)
        # The service account logs into public, where the admin route would answer
        # about public's user with the same id: refused before asking.
        settings_value = self.settings_for(keyrunes, NAMESPACE="acme")
        settings_value["SERVICE_ACCOUNT"] = {
            **settings_value["SERVICE_ACCOUNT"],
            "NAMESPACE": "public",
        }
        with override_settings(KEYRUNES=settings_value):
            keyrunes.reset_counters()
            assert not has_permission(tenant_identity, "docs:1", "read")
        assert "service account's namespace 'public'" in caplog.text
        assert keyrunes.requests_to("/api/admin/check-permission") == 0

    def test_cache_ttl_zero_asks_every_time(
        self, keyrunes: Any, editor: VerifiedIdentity
    ) -> None:
        from django.conf import settings

        with override_settings(KEYRUNES={**settings.KEYRUNES, "PERMISSION_CACHE_TTL": 0}):
            keyrunes.reset_counters()
            assert has_permission(editor, "docs:1", "read")
            assert has_permission(editor, "docs:1", "read")
        assert keyrunes.requests_to("/api/check-permission") == 2

    def test_answer_is_cached_for_the_ttl(
        self, keyrunes: Any, editor: VerifiedIdentity, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        stored: list[tuple[str, Any, int]] = []
        cache = caches["default"]
        real_set = cache.set

        def spy(key: str, value: Any, timeout: Any = None) -> None:
            stored.append((key, value, timeout))
            real_set(key, value, timeout)

        monkeypatch.setattr(cache, "set", spy)
        assert has_permission(editor, "docs:1", "read")
        key = permission_cache_key("public", editor.user_id, "docs:1", "read")
        assert stored == [(key, True, 60)]

    def test_user_not_in_the_organization_is_denied(self, keyrunes: Any) -> None:
        # user id 999 does not exist on the server: 404 -> deny
        assert not has_permission(identity(user_id=999), "docs:1", "read")

    def test_non_boolean_answer_denies(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Answer:
            allowed = "yes"

        class FakeClient:
            def check_permission(self, *args: Any, **kwargs: Any) -> Answer:
                return Answer()

        import keyrunes_django.client as client_module

        monkeypatch.setattr(client_module, "get_client", lambda: FakeClient())
        caplog.set_level(logging.INFO, LOGGER)
        with override_settings(
            KEYRUNES={"BASE_URL": "http://127.0.0.1:9", "ORGANIZATION_KEY": "k"}
        ):
            assert not has_permission(identity(), "docs:1", "read")
        assert "non-boolean" in caplog.text


def test_token_namespace_of_garbage_is_unknown() -> None:
    assert authorization._token_namespace("not-a-jwt") is None


@pytest.mark.django_db
def test_mirror_without_organization_id(rf: RequestFactory) -> None:
    user = make_user()
    KeyrunesIdentity.objects.create(
        user=user, namespace="public", remote_user_id=3, organization_id=None,
        payload={"organization_id": 4, "groups": ["users"]},
    )
    found = get_identity(get_user_model().objects.get(pk=user.pk))
    assert isinstance(found, VerifiedIdentity)
    assert found.organization_id == 4
    other = make_user("bob")
    KeyrunesIdentity.objects.create(
        user=other, namespace="public", remote_user_id=5, organization_id=None, payload=[]
    )
    found = get_identity(get_user_model().objects.get(pk=other.pk))
    assert isinstance(found, VerifiedIdentity)
    assert found.organization_id == 0
    assert found.groups == ()


def test_request_whose_user_is_an_organization(rf: RequestFactory) -> None:
    request = rf.get("/")
    org = OrganizationPrincipal(organization_id=5)
    request.user = org  # type: ignore[assignment]
    assert get_identity(request) is org
    assert is_authenticated(request, allow_organization=True)
    assert not is_authenticated(request)


@pytest.mark.django_db
def test_tenant_policy_check_works_unless_the_server_quirk_answers_500(
    keyrunes: Any, caplog: pytest.LogCaptureFixture
) -> None:
    acme = keyrunes.create_organization("Acme", "acme")
    keyrunes.create_policy("acme_docs", "docs:*", "read", namespace="acme")
    member = keyrunes.create_user(
        namespace="acme", organization_id=acme.organization_id, groups=("users",)
    )
    keyrunes.attach_policy("acme_docs", user=member)
    tenant_user = VerifiedIdentity(
        user_id=member.user_id,
        username=member.username,
        email=member.email,
        namespace="acme",
        organization_id=acme.organization_id,
        groups=("users",),
    )
    tenant_settings = {
        "BASE_URL": keyrunes.base_url,
        "NAMESPACE": "acme",
        "ORGANIZATION_KEY": keyrunes.organization_key(acme.organization_id),
        "RETRIES": 0,
    }
    caplog.set_level(logging.INFO, LOGGER)
    with override_settings(KEYRUNES=tenant_settings):
        assert has_permission(tenant_user, "docs:1", "read")
        caches["default"].clear()
        keyrunes.server_quirks = True
        try:
            assert not has_permission(tenant_user, "docs:1", "read")
        finally:
            keyrunes.server_quirks = False
    assert "policy check failed" in caplog.text


def test_user_model_without_groups_has_no_mirrored_groups() -> None:
    assert authorization._mirrored_group_names(object()) == ()
