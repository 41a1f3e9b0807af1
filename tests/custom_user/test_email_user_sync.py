"""The bulk sync with a custom user model whose USERNAME_FIELD is email."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from keyrunes_django import sync
from keyrunes_django.schemas import AdminUser
from tests.testapp.models import EmailUser

pytestmark = pytest.mark.django_db

BASE: dict[str, Any] = {
    "BASE_URL": "http://127.0.0.1:9",
    "NAMESPACE": "public",
    "USER_ATTR_MAP": {"email": "email", "full_name": "username"},
}


def remote(user_id: int, email: str, username: str = "someone") -> AdminUser:
    return AdminUser(user_id=user_id, email=email, username=username, groups=["users"])


def run(users: list[AdminUser], **kwargs: Any) -> sync.UserSyncReport:
    return sync.sync_users(users, namespace="public", organization_id=1, **kwargs)


@override_settings(KEYRUNES=BASE)
def test_sync_keys_users_on_email_and_refuses_what_does_not_fit() -> None:
    report = run(
        [
            remote(1, "a@example.com"),
            remote(2, "e" * 243 + "@example.com"),  # 255 characters: the model holds 254
            remote(3, "c@example.com", username="x" * 151),  # full_name holds 150
        ]
    )
    assert report.created == 1
    assert report.refused == {"value_too_long": 2}
    assert list(EmailUser.objects.values_list("email", flat=True)) == ["a@example.com"]


@override_settings(KEYRUNES=BASE)
def test_recreated_remote_user_displaces_the_old_row_by_email() -> None:
    run([remote(1, "a@example.com")])
    report = run([remote(2, "a@example.com")], max_shrink=None)
    assert (report.created, report.displaced) == (1, 1)
    old = EmailUser.objects.get(keyrunes_identity__remote_user_id=1)
    assert old.email == "a@example.com~1"
    assert EmailUser.objects.get(keyrunes_identity__remote_user_id=2).email == "a@example.com"
