"""Admin integration: identity inline, read-only mirrored fields, resync action, group marks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib import admin as django_admin
from django.contrib.auth.models import Group, User
from django.test import Client, override_settings
from django.urls import reverse

from keyrunes_django import admin as kr_admin
from keyrunes_django.mapping import get_mapper
from keyrunes_django.models import KeyrunesIdentity, MirroredGroup
from keyrunes_django.testing import KeyrunesEmulator

pytestmark = pytest.mark.django_db

SERVICE = {"IDENTITY": "admin@example.com", "PASSWORD": "Admin123"}


@pytest.fixture
def kr(keyrunes: KeyrunesEmulator) -> Iterator[KeyrunesEmulator]:
    with override_settings(KEYRUNES={**settings.KEYRUNES, "SERVICE_ACCOUNT": SERVICE}):
        yield keyrunes


@pytest.fixture
def staff_client() -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client


def mirror(kr: KeyrunesEmulator, username: str, *groups: str) -> User:
    remote = kr.create_user(username, groups=groups or ("users",))
    user = kr.get_user(remote.user_id)
    assert user is not None
    identity = next(u for u in kr_admin_list(kr) if u.user_id == remote.user_id).to_identity(
        "public", 1
    )
    result = get_mapper().mirror(identity)
    assert isinstance(result.user, User)
    return result.user


def kr_admin_list(kr: KeyrunesEmulator) -> list[Any]:
    from keyrunes_django.client import get_client
    from keyrunes_django.service_account import get_service_token

    return get_client().list_users(get_service_token(), 1)


@pytest.fixture(autouse=True)
def _backends() -> Iterator[None]:
    backends = [*settings.AUTHENTICATION_BACKENDS, "django.contrib.auth.backends.ModelBackend"]
    with override_settings(AUTHENTICATION_BACKENDS=backends):
        yield


def test_admins_are_extended() -> None:
    user_admin = django_admin.site._registry[User]
    group_admin = django_admin.site._registry[Group]
    assert isinstance(user_admin, kr_admin.KeyrunesUserAdminMixin)
    assert isinstance(group_admin, kr_admin.KeyrunesGroupAdminMixin)
    assert "resync_from_keyrunes" in (user_admin.actions or ())
    # Extending twice is a no-op.
    kr_admin._extend(User, kr_admin.KeyrunesUserAdminMixin)
    assert django_admin.site._registry[User] is user_admin


def test_mirrored_user_change_page(kr: KeyrunesEmulator, staff_client: Client) -> None:
    user = mirror(kr, "alice")
    page = staff_client.get(reverse("admin:auth_user_change", args=[user.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Keyrunes identity (mirrored from Keyrunes, read-only)" in text
    assert "Mirrored from Keyrunes (read-only)" in text
    assert "Fields shown read-only are mirrored from Keyrunes" in text
    # Mirrored fields are not editable inputs.
    assert 'name="email"' not in text
    assert 'name="username"' not in text
    assert 'name="is_staff"' not in text
    assert 'name="first_name"' in text  # not mapped: still editable
    assert str(user.keyrunes_identity.remote_user_id) in text


def test_local_user_change_page_is_untouched(staff_client: Client) -> None:
    local = User.objects.create_user("local", "local@example.com")
    text = staff_client.get(reverse("admin:auth_user_change", args=[local.pk])).content.decode()
    assert 'name="email"' in text
    assert "mirrored from Keyrunes, read-only" not in text


def test_user_changelist_column(kr: KeyrunesEmulator, staff_client: Client) -> None:
    mirror(kr, "alice")
    page = staff_client.get(reverse("admin:auth_user_changelist"))
    assert page.status_code == 200
    assert "column-keyrunes_linked" in page.content.decode()


def test_resync_action(kr: KeyrunesEmulator, staff_client: Client) -> None:
    alice = mirror(kr, "alice")
    bob = mirror(kr, "bob")
    local = User.objects.create_user("local")
    # Remote changes: alice's email, bob deleted.
    with kr.state.lock:
        record = kr.state.namespace("public").users[alice.keyrunes_identity.remote_user_id]
        record.email = "alice@new.example.com"
    remote_bob = kr.get_user(bob.keyrunes_identity.remote_user_id)
    assert remote_bob is not None
    kr.delete_user(remote_bob)
    response = staff_client.post(
        reverse("admin:auth_user_changelist"),
        {"action": "resync_from_keyrunes", "_selected_action": [alice.pk, bob.pk, local.pk]},
        follow=True,
    )
    text = " | ".join(str(m) for m in response.context["messages"])
    assert "1 selected user(s) are local only" in text
    assert "bob: not found in Keyrunes" in text
    assert "Resynced from Keyrunes: 1 updated, 0 unchanged." in text
    alice.refresh_from_db()
    assert alice.email == "alice@new.example.com"
    assert User.objects.get(pk=bob.pk).is_active


def test_resync_listing_failure(kr: KeyrunesEmulator) -> None:
    alice = mirror(kr, "alice")
    kr.faults.add(r"^/api/admin/users", status=503, times=5)
    outcome = kr_admin.resync_users(User.objects.filter(pk=alice.pk))
    assert any("failed" in text and "Nothing changed" in text for _level, text in outcome)


def test_resync_without_service_account(kr: KeyrunesEmulator) -> None:
    alice = mirror(kr, "alice")
    with override_settings(KEYRUNES={**settings.KEYRUNES, "SERVICE_ACCOUNT": None}):
        outcome = kr_admin.resync_users(User.objects.filter(pk=alice.pk))
    assert any('KEYRUNES["SERVICE_ACCOUNT"]' in text for _level, text in outcome)


def test_resync_refused_by_mapper(kr: KeyrunesEmulator) -> None:
    alice = mirror(kr, "alice")
    with override_settings(KEYRUNES={**settings.KEYRUNES, "DENY_GROUP": "users"}):
        outcome = kr_admin.resync_users(User.objects.filter(pk=alice.pk))
    assert any("not mirrored (denied_group)" in text for _level, text in outcome)


def test_resync_unchanged(kr: KeyrunesEmulator) -> None:
    alice = mirror(kr, "alice")
    outcome = kr_admin.resync_users(User.objects.filter(pk=alice.pk))
    assert outcome[-1][1] == "Resynced from Keyrunes: 0 updated, 1 unchanged."


def test_group_admin_marks_mirrored_groups(kr: KeyrunesEmulator, staff_client: Client) -> None:
    mirror(kr, "alice", "users")
    local = Group.objects.create(name="local-team")
    mirrored = Group.objects.get(name="users")
    assert MirroredGroup.objects.filter(group=mirrored).exists()
    url = reverse("admin:auth_group_changelist")
    text = staff_client.get(url).content.decode()
    assert "column-keyrunes_mirrored" in text
    assert "public:users" in text
    only_mirrored = staff_client.get(url, {"keyrunes_mirrored": "yes"}).content.decode()
    assert "local-team" not in only_mirrored
    only_local = staff_client.get(url, {"keyrunes_mirrored": "no"}).content.decode()
    assert "local-team" in only_local
    assert "public:users" not in only_local
    change = staff_client.get(reverse("admin:auth_group_change", args=[mirrored.pk]))
    assert "Mirrored from Keyrunes group “users”" in change.content.decode()
    change = staff_client.get(reverse("admin:auth_group_change", args=[local.pk]))
    assert "Local group (never changed by Keyrunes)" in change.content.decode()


def test_identity_admin_is_read_only(kr: KeyrunesEmulator, staff_client: Client) -> None:
    alice = mirror(kr, "alice")
    record = KeyrunesIdentity.objects.get(user=alice)
    text = staff_client.get(reverse("admin:keyrunes_django_keyrunesidentity_changelist")).content
    assert b"alice" in text
    page = staff_client.get(
        reverse("admin:keyrunes_django_keyrunesidentity_change", args=[record.pk])
    )
    assert page.status_code == 200
    assert b"Remote data" in page.content
    assert (
        staff_client.get(reverse("admin:keyrunes_django_keyrunesidentity_add")).status_code == 403
    )


@override_settings(KEYRUNES={"FLAGS_BY_GROUP": {"is_active": ["users"], "is_superuser": None}})
def test_mirrored_fields_follow_flag_settings() -> None:
    fields = kr_admin.mirrored_user_fields()
    assert "is_active" in fields
    assert "is_superuser" not in fields
    assert "is_staff" in fields
    assert {"username", "email"} <= set(fields)
