"""The KeyrunesIdentity and MirroredGroup models."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.db import IntegrityError, transaction

from keyrunes_django.models import KeyrunesIdentity, MirroredGroup

pytestmark = pytest.mark.django_db


def test_identity_is_unique_per_namespace_and_remote_id() -> None:
    alice = User.objects.create_user("alice")
    bob = User.objects.create_user("bob")
    KeyrunesIdentity.objects.create(user=alice, namespace="public", remote_user_id=7)
    with pytest.raises(IntegrityError), transaction.atomic():
        KeyrunesIdentity.objects.create(user=bob, namespace="public", remote_user_id=7)
    # The same remote id in another namespace is another user.
    other = KeyrunesIdentity.objects.create(user=bob, namespace="acme", remote_user_id=7)
    assert str(other) == "acme:7"


def test_identity_is_one_to_one_and_cascades() -> None:
    alice = User.objects.create_user("alice")
    record = KeyrunesIdentity.objects.create(
        user=alice, namespace="public", remote_user_id=7, payload={"groups": ["users"]}
    )
    assert alice.keyrunes_identity == record
    assert record.payload == {"groups": ["users"]}
    assert record.external_id == ""
    assert record.organization_id is None
    with pytest.raises(IntegrityError), transaction.atomic():
        KeyrunesIdentity.objects.create(user=alice, namespace="public", remote_user_id=8)
    alice.delete()
    assert not KeyrunesIdentity.objects.exists()


def test_mirrored_group_marks_a_group() -> None:
    group = Group.objects.create(name="editors")
    marker = MirroredGroup.objects.create(group=group, remote_name="editors", namespace="public")
    assert group.keyrunes_mirror == marker
    assert str(marker) == "public:editors"
    local_only = Group.objects.create(name="local")
    assert not MirroredGroup.objects.filter(group=local_only).exists()
    group.delete()
    assert not MirroredGroup.objects.exists()
