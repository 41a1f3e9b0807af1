"""The user/group mapper: every mapping setting, group modes, flags, writes only on change."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import Group, User
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext

from keyrunes_django import signals
from keyrunes_django.exceptions import MirrorRefused
from keyrunes_django.identity import VerifiedIdentity
from keyrunes_django.mapping import MirrorResult, UserMapper, get_mapper, names
from keyrunes_django.models import KeyrunesIdentity, MirroredGroup

pytestmark = pytest.mark.django_db

WRITE_PREFIXES = ("INSERT", "UPDATE", "DELETE")


def make_identity(
    user_id: int = 7,
    username: str = "alice",
    email: str = "alice@example.com",
    *,
    namespace: str = "public",
    organization_id: int = 1,
    groups: tuple[str, ...] | None = ("users",),
    external_id: str | None = "9c1b7c62-0000-4000-8000-000000000007",
    **payload: Any,
) -> VerifiedIdentity:
    body: dict[str, object] = {
        "user_id": user_id,
        "username": username,
        "email": email,
        "namespace": namespace,
        "organization_id": organization_id,
        "external_id": external_id,
        **payload,
    }
    if groups is not None:
        body["groups"] = list(groups)
    return VerifiedIdentity(
        user_id=user_id,
        username=username,
        email=email,
        namespace=namespace,
        organization_id=organization_id,
        groups=groups,
        external_id=external_id,
        source="login",
        payload=body,
    )


def configure(settings: Any, **values: Any) -> None:
    settings.KEYRUNES = {**settings.KEYRUNES, **values}


def writes(ctx: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in ctx.captured_queries
        if q["sql"].lstrip().upper().startswith(WRITE_PREFIXES)
    ]


def group_names(user: Any) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


# ----------------------------------------------------------------- creation


def test_first_mirror_creates_user_identity_and_groups() -> None:
    result = get_mapper().mirror(make_identity(groups=("users", "editors")))

    assert isinstance(result, MirrorResult)
    assert result.created
    assert result.changed
    user = User.objects.get(pk=result.user.pk)
    assert (user.username, user.email) == ("alice", "alice@example.com")
    assert not user.has_usable_password()
    assert not user.is_staff
    assert not user.is_superuser
    record = KeyrunesIdentity.objects.get(user=user)
    assert (record.namespace, record.remote_user_id, record.organization_id) == ("public", 7, 1)
    assert record.external_id == "9c1b7c62-0000-4000-8000-000000000007"
    assert record.last_synced_at is not None
    assert record.payload["groups"] == ["users", "editors"]
    assert group_names(user) == {"users", "editors"}
    markers = MirroredGroup.objects.order_by("remote_name")
    assert [(m.group.name, m.remote_name, m.namespace, m.organization_id) for m in markers] == [
        ("editors", "editors", "public", 1),
        ("users", "users", "public", 1),
    ]


def test_unchanged_remirror_writes_nothing() -> None:
    identity = make_identity(groups=("users", "editors"))
    first = get_mapper().mirror(identity)

    with CaptureQueriesContext(connection) as ctx:
        again = get_mapper().mirror(identity)

    assert writes(ctx) == []
    assert len(ctx.captured_queries) <= 2  # the identity+user row, the memberships
    assert again.user.pk == first.user.pk
    assert not again.created
    assert not again.changed


def test_volatile_token_claims_do_not_cause_writes() -> None:
    get_mapper().mirror(make_identity(exp=1000, iat=900))
    with CaptureQueriesContext(connection) as ctx:
        result = get_mapper().mirror(make_identity(exp=2000, iat=1900))
    assert writes(ctx) == []
    assert not result.changed
    assert "exp" not in KeyrunesIdentity.objects.get().payload


def test_users_are_matched_on_namespace_and_remote_id_never_email() -> None:
    first = get_mapper().mirror(make_identity()).user
    # Renamed remotely (new username and email): still the same local user.
    renamed = get_mapper().mirror(make_identity(username="alice2", email="a2@example.com"))
    assert renamed.user.pk == first.pk
    assert renamed.changed
    user = User.objects.get(pk=first.pk)
    assert (user.username, user.email) == ("alice2", "a2@example.com")
    # Another remote user with the first user's old email is a different user.
    other = get_mapper().mirror(make_identity(user_id=8, username="bob", email="alice@example.com"))
    assert other.created
    assert other.user.pk != first.pk


def test_remote_changes_update_identity_record() -> None:
    get_mapper().mirror(make_identity())
    before = KeyrunesIdentity.objects.get().last_synced_at
    result = get_mapper().mirror(
        make_identity(organization_id=1, external_id="ffffffff-0000-4000-8000-000000000007")
    )
    record = KeyrunesIdentity.objects.get()
    assert result.changed
    assert record.external_id == "ffffffff-0000-4000-8000-000000000007"
    assert record.last_synced_at is not None
    assert before is not None
    assert record.last_synced_at >= before
    # A token identity carries no external id: the stored one is kept.
    get_mapper().mirror(make_identity(external_id=None))
    assert KeyrunesIdentity.objects.get().external_id == "ffffffff-0000-4000-8000-000000000007"


def test_organization_change_is_recorded(settings: Any) -> None:
    get_mapper().mirror(make_identity(organization_id=1))
    result = get_mapper().mirror(make_identity(organization_id=3))
    assert result.changed
    assert KeyrunesIdentity.objects.get().organization_id == 3


# ----------------------------------------------------------- USER_ATTR_MAP


def test_user_attr_map_reads_identity_attributes_and_payload(settings: Any) -> None:
    configure(
        settings,
        USER_ATTR_MAP={
            "username": "username",
            "email": "email",
            "first_name": "display_name",
            "last_name": "not_in_payload",
        },
    )
    mapper = get_mapper()
    identity = make_identity(display_name="Alice A.")
    assert mapper.user_fields(identity) == {
        "username": "alice",
        "email": "alice@example.com",
        "first_name": "Alice A.",
    }
    user = User.objects.get(pk=mapper.mirror(identity).user.pk)
    assert user.first_name == "Alice A."
    assert user.last_name == ""


def test_user_attr_map_can_use_another_remote_field_as_username(settings: Any) -> None:
    configure(settings, USER_ATTR_MAP={"username": "email"})
    user = get_mapper().mirror(make_identity()).user
    assert user.get_username() == "alice@example.com"
    assert User.objects.get(pk=user.pk).email == ""


def test_user_attr_map_naming_a_missing_local_field_is_an_error(settings: Any) -> None:
    configure(settings, USER_ATTR_MAP={"username": "username", "nickname": "username"})
    with pytest.raises(ImproperlyConfigured, match="nickname"):
        get_mapper().user_fields(make_identity())


def test_user_attr_map_without_username_value_is_an_error(settings: Any) -> None:
    configure(settings, USER_ATTR_MAP={"email": "email"})
    with pytest.raises(ImproperlyConfigured, match="USERNAME_FIELD"):
        get_mapper().mirror(make_identity())


@pytest.mark.parametrize("always_update", [True, False])
def test_always_update_user(settings: Any, always_update: bool) -> None:
    configure(settings, ALWAYS_UPDATE_USER=always_update)
    user = get_mapper().mirror(make_identity()).user
    get_mapper().mirror(make_identity(email="new@example.com", groups=("users", "admin")))
    user = User.objects.get(pk=user.pk)
    assert user.email == ("new@example.com" if always_update else "alice@example.com")
    # Flags follow the remote groups either way.
    assert user.is_staff


def test_local_password_is_made_unusable_again() -> None:
    user = get_mapper().mirror(make_identity()).user
    stored = User.objects.get(pk=user.pk)
    stored.set_password("local-secret")
    stored.save()
    result = get_mapper().mirror(make_identity())
    assert result.changed
    assert not User.objects.get(pk=user.pk).has_usable_password()


# --------------------------------------------------------------- groups


def test_group_map_renames_and_fans_out(settings: Any) -> None:
    configure(settings, GROUP_MAP={"editors": "Content editors", "ops": ["Operators", "Pager"]})
    mapper = get_mapper()
    identity = make_identity(groups=("users", "editors", "ops"))
    assert set(mapper.group_plan(identity) or {}) == {
        "users",
        "Content editors",
        "Operators",
        "Pager",
    }
    user = mapper.mirror(identity).user
    assert group_names(user) == {"users", "Content editors", "Operators", "Pager"}
    assert MirroredGroup.objects.get(group__name="Pager").remote_name == "ops"


def test_mirror_groups_false_leaves_memberships_alone(settings: Any) -> None:
    user = get_mapper().mirror(make_identity(groups=("users", "editors"))).user
    configure(settings, MIRROR_GROUPS=False, GROUP_MAP={"ops": "Operators"})
    mapper = get_mapper()
    identity = make_identity(groups=("ops",))
    assert mapper.group_plan(identity) is None
    with CaptureQueriesContext(connection) as ctx:
        mapper.mirror(identity)
    # Only the stored payload is updated; no membership and no group is written.
    assert all("keyrunes_django_keyrunesidentity" in sql for sql in writes(ctx))
    assert group_names(user) == {"users", "editors"}
    assert not Group.objects.filter(name="Operators").exists()


def test_mirror_groups_allow_list_and_group_map_keys(settings: Any) -> None:
    configure(settings, MIRROR_GROUPS=["editors"], GROUP_MAP={"ops": "Operators"})
    user = get_mapper().mirror(make_identity(groups=("users", "editors", "ops"))).user
    assert group_names(user) == {"editors", "Operators"}
    assert not Group.objects.filter(name="users").exists()


def test_mirror_groups_except(settings: Any) -> None:
    configure(settings, MIRROR_GROUPS_EXCEPT=["users", "ops"], GROUP_MAP={"ops": "Operators"})
    user = get_mapper().mirror(make_identity(groups=("users", "editors", "ops"))).user
    assert group_names(user) == {"editors"}


def test_left_groups_are_removed_but_local_only_ones_stay() -> None:
    user = get_mapper().mirror(make_identity(groups=("users", "editors"))).user
    local_only = Group.objects.create(name="local-team")
    user.groups.add(local_only)

    result = get_mapper().mirror(make_identity(groups=("users",)))

    assert result.changed
    assert group_names(user) == {"users", "local-team"}
    # The mirrored group itself is kept for its other members.
    assert Group.objects.filter(name="editors").exists()


def test_local_only_group_with_a_remote_name_is_not_adopted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    team = Group.objects.create(name="editors")
    local_member = User.objects.create_user("local-editor")
    local_member.groups.add(team)
    user = get_mapper().mirror(make_identity(groups=("users", "editors"))).user
    # Not joined, not marked: the remote group does not get the local group's permissions.
    assert group_names(user) == {"users"}
    assert not MirroredGroup.objects.filter(group=team).exists()
    assert "'editors' was not created by the mirror" in caplog.text
    # The local member keeps the group when a same-named remote user logs in.
    get_mapper().mirror(make_identity(user_id=8, username="local2", groups=("editors",)))
    assert group_names(local_member) == {"editors"}


def test_membership_in_unmarked_group_is_neither_adopted_nor_removed() -> None:
    user = get_mapper().mirror(make_identity(groups=("users",))).user
    team = Group.objects.create(name="editors")
    user.groups.add(team)
    get_mapper().mirror(make_identity(groups=("users", "editors")))
    assert not MirroredGroup.objects.filter(group=team).exists()
    get_mapper().mirror(make_identity(groups=("users",)))
    assert group_names(user) == {"users", "editors"}


def test_adopt_groups_allows_taking_over_a_named_local_group(settings: Any) -> None:
    configure(settings, ADOPT_GROUPS=["editors"])
    team = Group.objects.create(name="editors")
    other = Group.objects.create(name="ops")
    user = get_mapper().mirror(make_identity(groups=("editors", "ops"))).user
    assert group_names(user) == {"editors"}
    assert MirroredGroup.objects.get(group=team).remote_name == "editors"
    assert not MirroredGroup.objects.filter(group=other).exists()
    # Once adopted it is mirrored: leaving it remotely removes the membership.
    get_mapper().mirror(make_identity(groups=()))
    assert group_names(user) == set()


def test_payload_without_groups_changes_no_membership_or_flag() -> None:
    user = get_mapper().mirror(make_identity(groups=("users", "superadmin"))).user
    assert User.objects.get(pk=user.pk).is_superuser
    identity = make_identity(groups=None)
    mapper = get_mapper()
    assert mapper.group_plan(identity) is None
    assert mapper.flags(identity) == {}
    with CaptureQueriesContext(connection) as ctx:
        result = mapper.mirror(identity)
    assert writes(ctx) == []
    assert not result.changed
    assert group_names(user) == {"users", "superadmin"}
    assert User.objects.get(pk=user.pk).is_superuser
    assert not result.created


def test_concurrently_created_groups_are_shared() -> None:
    first = get_mapper().mirror(make_identity(groups=("team",))).user
    second = get_mapper().mirror(make_identity(user_id=8, username="bob", groups=("team",))).user
    assert Group.objects.filter(name="team").count() == 1
    assert MirroredGroup.objects.count() == 1
    assert group_names(first) == group_names(second) == {"team"}


# ----------------------------------------------------------------- flags


@pytest.mark.parametrize(
    ("groups", "staff", "superuser"),
    [
        (("users",), False, False),
        (("superadmin", "users"), True, True),
        (("admin", "users"), True, False),
        (("admins", "site-administrators"), False, False),  # never "contains admin"
    ],
)
def test_default_flags(groups: tuple[str, ...], staff: bool, superuser: bool) -> None:
    user = get_mapper().mirror(make_identity(groups=groups)).user
    user = User.objects.get(pk=user.pk)
    assert (user.is_staff, user.is_superuser) == (staff, superuser)


def test_superadmin_of_a_tenant_is_only_staff(settings: Any) -> None:
    configure(settings, NAMESPACE="acme")
    user = get_mapper().mirror(make_identity(namespace="acme", groups=("superadmin",))).user
    user = User.objects.get(pk=user.pk)
    assert (user.is_staff, user.is_superuser) == (True, False)


def test_demotion_removes_flags() -> None:
    user = get_mapper().mirror(make_identity(groups=("superadmin",))).user
    result = get_mapper().mirror(make_identity(groups=("users",)))
    assert result.changed
    user = User.objects.get(pk=user.pk)
    assert not user.is_staff
    assert not user.is_superuser


def test_flags_by_group_overrides_only_configured_flags(settings: Any) -> None:
    configure(
        settings,
        FLAGS_BY_GROUP={"is_staff": ["editors", "ops"], "is_active": "enabled"},
    )
    mapper = get_mapper()
    assert mapper.flags(make_identity(groups=("editors",))) == {
        "is_superuser": False,
        "is_staff": True,
        "is_active": False,
    }
    assert mapper.flags(make_identity(groups=("superadmin", "enabled"))) == {
        "is_superuser": True,  # default kept
        "is_staff": False,  # replaced: superadmin is not in the configured list
        "is_active": True,
    }
    user = mapper.mirror(make_identity(groups=("editors",))).user
    user = User.objects.get(pk=user.pk)
    assert user.is_staff
    assert not user.is_active


def test_flags_by_group_none_stops_managing_a_flag(settings: Any) -> None:
    configure(settings, FLAGS_BY_GROUP={"is_staff": None})
    user = get_mapper().mirror(make_identity(groups=("users",))).user
    User.objects.filter(pk=user.pk).update(is_staff=True)
    assert "is_staff" not in get_mapper().flags(make_identity(groups=("users",)))
    get_mapper().mirror(make_identity(groups=("users",)))
    assert User.objects.get(pk=user.pk).is_staff


def test_flags_by_group_rejects_unknown_flag(settings: Any) -> None:
    configure(settings, FLAGS_BY_GROUP={"is_admin": ["x"]})
    with pytest.raises(ImproperlyConfigured, match="is_admin"):
        get_mapper().flags(make_identity())


# ---------------------------------------------------- require / deny / tenants


@pytest.mark.parametrize("required", ["staff", ["staff", "ops"]])
def test_require_group(settings: Any, required: object) -> None:
    configure(settings, REQUIRE_GROUP=required)
    with pytest.raises(MirrorRefused) as info:
        get_mapper().mirror(make_identity(groups=("users",)))
    assert info.value.reason == "missing_required_group"
    assert not User.objects.exists()
    assert get_mapper().mirror(make_identity(groups=("users", "staff"))).created


@pytest.mark.parametrize("denied", ["banned", ["banned", "suspended"]])
def test_deny_group(settings: Any, denied: object) -> None:
    configure(settings, DENY_GROUP=denied)
    with pytest.raises(MirrorRefused) as info:
        get_mapper().mirror(make_identity(groups=("users", "banned")))
    assert info.value.reason == "denied_group"
    assert get_mapper().mirror(make_identity(groups=("users",))).created


def test_require_group_fails_closed_without_groups(settings: Any) -> None:
    configure(settings, REQUIRE_GROUP="staff")
    with pytest.raises(MirrorRefused) as info:
        get_mapper().mirror(make_identity(groups=None))
    assert info.value.reason == "groups_unknown"


def test_wrong_namespace_is_refused(settings: Any) -> None:
    with pytest.raises(MirrorRefused) as info:
        get_mapper().mirror(make_identity(namespace="acme"))
    assert info.value.reason == "wrong_namespace"
    assert not KeyrunesIdentity.objects.exists()


def test_organization_scope(settings: Any) -> None:
    configure(settings, ORGANIZATION_SCOPE=2)
    with pytest.raises(MirrorRefused) as info:
        get_mapper().mirror(make_identity(organization_id=1))
    assert info.value.reason == "wrong_organization"
    assert get_mapper().mirror(make_identity(organization_id=2)).created


def test_same_remote_id_in_another_namespace_is_another_user(settings: Any) -> None:
    public_user = get_mapper().mirror(make_identity()).user
    configure(settings, NAMESPACE="acme")
    tenant_user = (
        get_mapper()
        .mirror(make_identity(namespace="acme", username="alice-acme", organization_id=2))
        .user
    )
    assert tenant_user.pk != public_user.pk
    assert KeyrunesIdentity.objects.filter(remote_user_id=7).count() == 2


# ------------------------------------------------------- existing local users


def test_existing_local_user_is_not_taken_over() -> None:
    local = User.objects.create_user("alice", "alice@local", "pw-local")
    with pytest.raises(MirrorRefused) as info:
        get_mapper().mirror(make_identity())
    assert info.value.reason == "local_user_exists"
    assert "LINK_EXISTING_USERS" in str(info.value)
    local.refresh_from_db()
    assert local.check_password("pw-local")
    assert not KeyrunesIdentity.objects.exists()


def test_existing_local_user_is_linked_when_allowed(settings: Any) -> None:
    configure(settings, LINK_EXISTING_USERS=True)
    local = User.objects.create_user("alice", "alice@local", "pw-local")
    result = get_mapper().mirror(make_identity(groups=("users", "admin")))
    assert result.user.pk == local.pk
    assert not result.created
    assert result.changed
    local.refresh_from_db()
    assert not local.has_usable_password()
    assert local.is_staff
    assert local.email == "alice@example.com"
    assert KeyrunesIdentity.objects.get(user=local).remote_user_id == 7
    assert group_names(local) == {"users", "admin"}


def test_recreated_remote_user_displaces_the_old_local_user(
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = get_mapper().mirror(make_identity(user_id=7, groups=("users", "admins"))).user
    # The remote user was deleted and re-created under a new id with the same name.
    result = get_mapper().mirror(make_identity(user_id=99, groups=("users",)))
    assert result.created
    assert result.user.pk != old.pk
    assert result.user.get_username() == "alice"
    assert group_names(result.user) == {"users"}  # nothing inherited from the old row
    old.refresh_from_db()
    assert old.get_username() == "alice~7"
    assert old.keyrunes_identity.remote_user_id == 7  # history kept, still linked
    assert group_names(old) == {"users", "admins"}
    assert "renamed to 'alice~7'" in caplog.text
    # Both log in again without anything being stuck.
    assert get_mapper().mirror(make_identity(user_id=99)).user.pk == result.user.pk
    again = get_mapper().mirror(make_identity(user_id=7, username="alice-renamed"))
    assert again.user.pk == old.pk
    assert User.objects.get(pk=old.pk).get_username() == "alice-renamed"


def test_displaced_login_fits_the_column() -> None:
    from keyrunes_django.mapping import LocalHolder

    mapper = get_mapper()
    name = mapper.displaced_login("x" * 150, LocalHolder(1, "public", 123456))
    assert len(name) == 150
    assert name.endswith("~123456")


def test_username_held_by_a_user_of_another_namespace_is_refused() -> None:
    user = User.objects.create_user("alice")
    KeyrunesIdentity.objects.create(user=user, namespace="acme", remote_user_id=7)
    with pytest.raises(MirrorRefused) as info:
        get_mapper().mirror(make_identity(user_id=99))
    assert info.value.reason == "username_taken"


def test_rename_onto_an_existing_username_is_refused() -> None:
    get_mapper().mirror(make_identity(user_id=7, username="alice"))
    User.objects.create_user("bob")
    with pytest.raises(MirrorRefused) as info:
        get_mapper().mirror(make_identity(user_id=7, username="bob"))
    assert info.value.reason == "username_taken"


def test_username_conflict_inside_creation_is_refused() -> None:
    def grab_name(sender: Any, user: Any, created: bool, **kw: Any) -> None:
        # Something else takes the name between the check and the insert.
        if created:
            User.objects.create_user("alice")

    signals.populate_user.connect(grab_name)
    try:
        with pytest.raises(MirrorRefused) as info:
            get_mapper().mirror(make_identity())
    finally:
        signals.populate_user.disconnect(grab_name)
    assert info.value.reason == "username_taken"
    assert not User.objects.exists()


def test_lost_creation_race_uses_the_winner() -> None:
    """The identity row appears between our lookup and our insert: we adopt it."""
    winner = get_mapper().mirror(make_identity(username="alice")).user
    mapper = get_mapper()
    real_find = mapper._find_record
    calls = iter([None])
    with mock.patch.object(
        mapper, "_find_record", side_effect=lambda ident: next(calls, None) or real_find(ident)
    ):
        # Renamed remotely, so the username check finds no local user either.
        result = mapper.mirror(make_identity(username="alice-renamed"))
    assert result.user.pk == winner.pk
    assert not result.created
    assert User.objects.count() == 1
    assert User.objects.get().username == "alice-renamed"


def test_lost_race_seen_through_the_username_check() -> None:
    winner = get_mapper().mirror(make_identity()).user
    mapper = get_mapper()
    with mock.patch.object(mapper, "_find_record", return_value=None):
        result = mapper.mirror(make_identity())
    assert result.user.pk == winner.pk
    assert not result.created
    assert not result.changed


# ------------------------------------------------------------------ signals


def test_populate_user_edits_are_saved_and_user_mirrored_is_sent() -> None:
    seen: list[dict[str, Any]] = []

    def populate(
        sender: Any, user: Any, identity: VerifiedIdentity, created: bool, **kw: Any
    ) -> None:
        user.first_name = identity.username.title()

    def mirrored(sender: Any, **kw: Any) -> None:
        seen.append(kw)

    signals.populate_user.connect(populate)
    signals.user_mirrored.connect(mirrored)
    try:
        user = get_mapper().mirror(make_identity()).user
        assert User.objects.get(pk=user.pk).first_name == "Alice"
        # Unchanged re-login: the receiver sets the same value, so nothing is written.
        with CaptureQueriesContext(connection) as ctx:
            get_mapper().mirror(make_identity())
        assert writes(ctx) == []
        # A receiver that changes something on re-login gets it saved.
        User.objects.filter(pk=user.pk).update(first_name="Changed locally")
        get_mapper().mirror(make_identity())
        assert User.objects.get(pk=user.pk).first_name == "Alice"
    finally:
        signals.populate_user.disconnect(populate)
        signals.user_mirrored.disconnect(mirrored)

    assert [(s["created"], s["changed"]) for s in seen] == [
        (True, True),
        (False, False),
        (False, True),
    ]
    assert all(s["identity"].user_id == 7 and s["user"].pk == user.pk for s in seen)


# ------------------------------------------------------------ configuration


class TitleMapper(UserMapper):
    def user_fields(self, identity: VerifiedIdentity) -> dict[str, Any]:
        fields = super().user_fields(identity)
        fields["first_name"] = identity.username.upper()
        return fields


def test_user_mapper_setting_selects_the_class(settings: Any) -> None:
    configure(settings, USER_MAPPER="tests.test_mapping.TitleMapper")
    mapper = get_mapper()
    assert isinstance(mapper, TitleMapper)
    user = mapper.mirror(make_identity()).user
    assert User.objects.get(pk=user.pk).first_name == "ALICE"


def test_user_mapper_must_be_a_user_mapper(settings: Any) -> None:
    configure(settings, USER_MAPPER="collections.OrderedDict")
    with pytest.raises(ImproperlyConfigured, match="USER_MAPPER"):
        get_mapper()


def test_names_helper() -> None:
    assert names(None) == frozenset()
    assert names("a") == frozenset({"a"})
    assert names(["a", "b", "a"]) == frozenset({"a", "b"})
    with pytest.raises(ImproperlyConfigured):
        names(3)


def test_payloads_of_different_sources_are_merged() -> None:
    login = make_identity(first_login=False)
    token = VerifiedIdentity(
        user_id=7,
        username="alice",
        email="alice@example.com",
        namespace="public",
        organization_id=1,
        groups=("users",),
        source="token",
        payload={"sub": "7", "iss": "keyrunes", "groups": ["users"], "exp": 5, "iat": 1},
    )
    get_mapper().mirror(login)
    assert get_mapper().mirror(token).changed  # new keys arrive once
    payload = KeyrunesIdentity.objects.get().payload
    assert payload["sub"] == "7"
    assert payload["first_login"] is False
    assert "exp" not in payload
    # From now on, alternating sources writes nothing.
    for identity in (login, token, login):
        with CaptureQueriesContext(connection) as ctx:
            assert not get_mapper().mirror(identity).changed
        assert writes(ctx) == []


def test_concurrent_link_of_an_existing_user_uses_the_winner(settings: Any) -> None:
    configure(settings, LINK_EXISTING_USERS=True)
    local = User.objects.create_user("alice", password="pw-local")
    mapper = get_mapper()
    # What the other request committed between our check and our insert.
    winner = KeyrunesIdentity(user=local, namespace="public", remote_user_id=7, organization_id=1)
    lookups = iter([None, winner])

    with (
        mock.patch.object(mapper, "_new_record", side_effect=IntegrityError("duplicate key")),
        mock.patch.object(mapper, "_find_record", side_effect=lambda identity: next(lookups)),
        mock.patch.object(mapper, "_update_record", return_value=False),
    ):
        result = mapper.mirror(make_identity())
    assert result.user.pk == local.pk
    assert not result.created


def test_login_reactivates_a_user_that_a_sync_deactivated() -> None:
    from django.utils import timezone

    user = get_mapper().mirror(make_identity()).user
    record = KeyrunesIdentity.objects.get(user=user)
    User.objects.filter(pk=user.pk).update(is_active=False)
    KeyrunesIdentity.objects.filter(pk=record.pk).update(deactivated_at=timezone.now())

    result = get_mapper().mirror(make_identity())

    assert result.changed
    user.refresh_from_db()
    record.refresh_from_db()
    assert user.is_active
    assert record.deactivated_at is None


def test_login_leaves_a_user_deactivated_by_hand_inactive() -> None:
    user = get_mapper().mirror(make_identity()).user
    User.objects.filter(pk=user.pk).update(is_active=False)

    get_mapper().mirror(make_identity())

    user.refresh_from_db()
    assert not user.is_active


# ------------------------------------------- remote data that does not fit


def test_integer_on_a_text_field_is_not_rewritten_at_every_login(settings: Any) -> None:
    configure(
        settings,
        USER_ATTR_MAP={"username": "username", "email": "email", "last_name": "organization_id"},
    )
    user = get_mapper().mirror(make_identity(organization_id=1)).user
    assert User.objects.get(pk=user.pk).last_name == "1"
    with CaptureQueriesContext(connection) as ctx:
        result = get_mapper().mirror(make_identity(organization_id=1))
    assert not result.changed
    assert [sql for sql in writes(ctx) if sql.lstrip().upper().startswith("UPDATE")] == []


@pytest.mark.parametrize(
    ("identity", "reason"),
    [
        (make_identity(username=""), "no_username"),
        (make_identity(email="e" * 243 + "@example.com"), "value_too_long"),
        (make_identity(first_name="x" * 151), "value_too_long"),
    ],
)
def test_remote_values_that_do_not_fit_are_refused_with_a_reason(
    settings: Any, identity: VerifiedIdentity, reason: str
) -> None:
    configure(
        settings,
        USER_ATTR_MAP={"username": "username", "email": "email", "first_name": "first_name"},
    )
    with pytest.raises(MirrorRefused) as info:
        get_mapper().mirror(identity)
    assert info.value.reason == reason
    assert not User.objects.exists()


def test_value_of_the_wrong_kind_is_refused(settings: Any) -> None:
    configure(settings, USER_ATTR_MAP={"username": "username", "is_staff": "flag"})
    with pytest.raises(MirrorRefused) as info:
        get_mapper().mirror(make_identity(flag="not a boolean"))
    assert info.value.reason == "invalid_value"


def test_unfit_login_is_refused_with_an_audit_event(
    keyrunes: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from django.contrib.auth import authenticate

    member = keyrunes.create_user("frank")
    with keyrunes.state.lock:  # Keyrunes stores emails up to 255 characters
        record = keyrunes.state.namespace("public").users[member.user_id]
        record.email = "f" * 243 + "@example.com"
    failures: list[dict[str, Any]] = []

    def on_failed(sender: Any, **kwargs: Any) -> None:
        failures.append(kwargs)

    signals.login_failed.connect(on_failed)
    try:
        assert authenticate(username="frank", password=member.password) is None
    finally:
        signals.login_failed.disconnect(on_failed)
    assert [f["reason"] for f in failures] == ["value_too_long"]
    assert not User.objects.filter(username="frank").exists()


def test_missing_required_field_is_not_reported_as_username_taken() -> None:
    def drop(sender: Any, user: Any, created: bool, **kw: Any) -> None:
        user.last_name = None  # a receiver that found nothing to fill in

    signals.populate_user.connect(drop)
    try:
        with pytest.raises(MirrorRefused) as info:
            get_mapper().mirror(make_identity())
    finally:
        signals.populate_user.disconnect(drop)
    assert info.value.reason == "missing_field"
    assert "last_name" in info.value.message
    assert not User.objects.exists()


def test_custom_model_required_field_without_a_value_is_named() -> None:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.db import models

    class Member(AbstractBaseUser):
        login = models.CharField(max_length=40, unique=True)
        birthday = models.DateField()
        USERNAME_FIELD = "login"

        class Meta:
            app_label = "testapp"
            managed = False

    try:
        mapper = UserMapper()
        mapper.user_model = Member
        with pytest.raises(MirrorRefused) as info:
            mapper.new_user(make_identity(), {"login": "alice"}, {})
    finally:
        # Unregister the throwaway model so migration checks never see it.
        from django.apps import apps

        del apps.all_models["testapp"]["member"]
        apps.clear_cache()
    assert info.value.reason == "missing_field"
    assert "birthday" in info.value.message


@pytest.mark.parametrize("value", ["editors", ["editors", ""], [1], None])
def test_adopt_groups_setting_is_checked(settings: Any, value: Any) -> None:
    from keyrunes_django.checks import check_settings

    configure(settings, ADOPT_GROUPS=value)
    assert "keyrunes_django.E050" in {message.id for message in check_settings()}


def test_adopt_groups_default_and_list_pass_the_check(settings: Any) -> None:
    from keyrunes_django.checks import check_settings

    assert "keyrunes_django.E050" not in {message.id for message in check_settings()}
    configure(settings, ADOPT_GROUPS=("editors", "ops"))
    assert "keyrunes_django.E050" not in {message.id for message in check_settings()}
