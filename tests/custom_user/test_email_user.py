"""The login backend and mapper with a custom user model whose USERNAME_FIELD is email."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.test import Client

from keyrunes_django.exceptions import MirrorRefused
from keyrunes_django.mapping import get_mapper
from keyrunes_django.models import KeyrunesIdentity
from keyrunes_django.testing import KeyrunesEmulator
from keyrunes_django.testing.emulator import EmulatedUser
from tests.testapp.models import EmailUser

pytestmark = pytest.mark.django_db


def test_the_custom_model_is_active() -> None:
    assert get_user_model() is EmailUser
    assert EmailUser.USERNAME_FIELD == "email"


def test_default_attr_map_skips_the_missing_username_field(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    user = authenticate(email=keyrunes_user.email, password=keyrunes_user.password)
    assert isinstance(user, EmailUser)
    assert user.email == keyrunes_user.email
    assert not user.has_usable_password()
    assert KeyrunesIdentity.objects.get(user=user).remote_user_id == keyrunes_user.user_id
    assert list(user.groups.values_list("name", flat=True)) == ["users"]


def test_client_login_with_username_kwarg(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    client = Client()
    assert client.login(username=keyrunes_user.username, password=keyrunes_user.password)
    assert EmailUser.objects.get().email == keyrunes_user.email


def test_superadmin_logs_into_the_admin(
    keyrunes: KeyrunesEmulator, keyrunes_superadmin: EmulatedUser
) -> None:
    client = Client()
    response = client.post(
        "/admin/login/",
        {"username": keyrunes_superadmin.email, "password": keyrunes_superadmin.password},
    )
    assert response.status_code == 302
    user = EmailUser.objects.get(email=keyrunes_superadmin.email)
    assert user.is_superuser
    assert user.is_staff
    assert client.get("/admin/").status_code == 200


def test_login_view_post(keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser) -> None:
    client = Client()
    response = client.post(
        "/backend/login/",
        {"username": keyrunes_user.email, "password": keyrunes_user.password},
    )
    assert response.status_code == 302
    page = client.get("/backend/whoami/")
    assert page.json() == {"username": keyrunes_user.email, "groups": ["users"]}


def test_attr_map_with_custom_fields(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, settings: Any
) -> None:
    settings.KEYRUNES = {
        **settings.KEYRUNES,
        "USER_ATTR_MAP": {"email": "email", "full_name": "username"},
    }
    user = authenticate(username=keyrunes_user.email, password=keyrunes_user.password)
    assert isinstance(user, EmailUser)
    assert user.full_name == keyrunes_user.username


def test_existing_local_email_user_is_not_taken_over(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    EmailUser.objects.create_user(keyrunes_user.email, password="local-pass-123")
    identity = _identity(keyrunes_user)
    with pytest.raises(MirrorRefused) as info:
        get_mapper().mirror(identity)
    assert info.value.reason == "local_user_exists"


def _identity(remote: EmulatedUser) -> Any:
    from keyrunes_django.identity import VerifiedIdentity

    return VerifiedIdentity(
        user_id=remote.user_id,
        username=remote.username,
        email=remote.email,
        namespace=remote.namespace,
        organization_id=remote.organization_id,
        groups=remote.groups,
        source="sync",
    )
