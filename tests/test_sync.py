"""Bulk mirroring (keyrunes_django.sync) against the login mapper's rules."""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from keyrunes_django import signals, sync
from keyrunes_django.exceptions import KeyrunesProtocolError
from keyrunes_django.mapping import get_mapper
from keyrunes_django.models import KeyrunesIdentity, MirroredGroup
from keyrunes_django.schemas import AdminUser
from keyrunes_django.schemas import Group as RemoteGroup

pytestmark = pytest.mark.django_db

BASE: dict[str, Any] = {"BASE_URL": "http://127.0.0.1:9", "NAMESPACE": "public"}


def remote(user_id: int, *groups: str, username: str | None = None, **extra: Any) -> AdminUser:
    name = f"user{user_id}" if username is None else username
    return AdminUser(
        user_id=user_id,
        external_id=extra.pop("external_id", f"ext-{user_id}"),
        email=extra.pop("email", f"{name}@example.com"),
        username=name,
        groups=list(groups or ("users",)),
        **extra,
    )


def run(users: list[AdminUser], **kwargs: Any) -> sync.UserSyncReport:
    return sync.sync_users(users, namespace="public", organization_id=1, **kwargs)


def groups_of(username: str) -> set[str]:
    return set(User.objects.get(username=username).groups.values_list("name", flat=True))


@override_settings(KEYRUNES=BASE)
def test_creates_users_identities_groups_and_memberships() -> None:
    report = run([remote(1, "users", "developers"), remote(2, "superadmin", "users")])
    assert (report.created, report.updated, report.unchanged) == (2, 0, 0)
    assert report.groups_created == 3
    assert report.memberships_added == 4
    alice = User.objects.get(username="user1")
    assert not alice.has_usable_password()
    assert alice.email == "user1@example.com"
    assert not alice.is_staff
    admin = User.objects.get(username="user2")
    assert admin.is_superuser
    assert admin.is_staff
    record = KeyrunesIdentity.objects.get(user=alice)
    assert (record.namespace, record.remote_user_id, record.organization_id) == ("public", 1, 1)
    assert record.external_id == "ext-1"
    assert record.last_synced_at is not None
    assert groups_of("user1") == {"users", "developers"}
    assert set(MirroredGroup.objects.values_list("remote_name", flat=True)) == {
        "users",
        "developers",
        "superadmin",
    }
    assert "create user1" in report.items
    assert "2 remote users: 2 created" in report.summary()


@override_settings(KEYRUNES=BASE)
def test_second_run_is_unchanged_then_updates_what_changed() -> None:
    run([remote(1, "users", "developers"), remote(2)])
    report = run([remote(1, "users", "developers"), remote(2)])
    assert (report.created, report.updated, report.unchanged) == (0, 0, 2)
    assert report.memberships_added == report.memberships_removed == 0

    report = run([remote(1, "users", email="new@example.com"), remote(2)])
    assert (report.created, report.updated, report.unchanged) == (0, 1, 1)
    assert report.memberships_removed == 1
    assert User.objects.get(username="user1").email == "new@example.com"
    assert groups_of("user1") == {"users"}
    assert KeyrunesIdentity.objects.get(remote_user_id=1).payload["email"] == "new@example.com"


@override_settings(KEYRUNES=BASE)
def test_sync_keeps_the_payload_keys_a_login_stored() -> None:
    # A login answer carries keys the admin listing lacks; both sources merge the
    # payload the same way, so alternating them settles instead of rewriting it.
    login = remote(1).to_identity("public", 1)
    login = dataclasses.replace(login, payload={**login.payload, "first_login": False, "exp": 1})
    get_mapper().mirror(login)
    report = run([remote(1)])
    assert (report.updated, report.unchanged) == (0, 1)
    payload = KeyrunesIdentity.objects.get(remote_user_id=1).payload
    assert payload["first_login"] is False
    assert "exp" not in payload
    assert not get_mapper().mirror(login).changed


@override_settings(KEYRUNES=BASE)
def test_same_result_as_mirroring_one_by_one() -> None:
    listing = [
        remote(i, "users", *(["ops"] if i % 2 else []), "admin" if i == 3 else "users")
        for i in range(1, 6)
    ]
    run(listing)
    bulk = {
        u.username: (
            u.email,
            u.is_staff,
            u.is_superuser,
            frozenset(u.groups.values_list("name", flat=True)),
        )
        for u in User.objects.all()
    }
    User.objects.all().delete()
    Group.objects.all().delete()
    mapper = get_mapper()
    for item in listing:
        mapper.mirror(item.to_identity("public", 1))
    single = {
        u.username: (
            u.email,
            u.is_staff,
            u.is_superuser,
            frozenset(u.groups.values_list("name", flat=True)),
        )
        for u in User.objects.all()
    }
    assert bulk == single


@override_settings(KEYRUNES=BASE)
def test_local_only_groups_are_kept() -> None:
    run([remote(1, "users", "developers")])
    local = Group.objects.create(name="local-team")
    user = User.objects.get(username="user1")
    user.groups.add(local)
    run([remote(1, "users")])
    assert groups_of("user1") == {"users", "local-team"}
    assert not MirroredGroup.objects.filter(group=local).exists()


@override_settings(KEYRUNES=BASE)
def test_query_count_does_not_grow_with_users() -> None:
    def queries(count: int, offset: int) -> int:
        listing = [remote(offset + i, "users", f"team{offset}-{i % 20}") for i in range(count)]
        with CaptureQueriesContext(connection) as ctx:
            report = run(listing, max_shrink=None)
        assert report.created == count
        return len(ctx.captured_queries)

    small = queries(50, 0)
    large = queries(500, 1000)
    assert small == large
    assert large < 25

    # A re-sync that changes every user is bounded too.
    def resync(count: int, offset: int) -> int:
        listing = [
            remote(offset + i, "users", email=f"changed{offset + i}@example.com")
            for i in range(count)
        ]
        with CaptureQueriesContext(connection) as ctx:
            report = run(listing, max_shrink=None)
        assert report.updated == count
        return len(ctx.captured_queries)

    large_update = rows_in_one_bulk_update()
    assert resync(max(5, large_update // 10), 0) == resync(large_update, 1000)


#: An upper bound on the parameters one user takes in a bulk UPDATE (pk twice, then
#: one value per changed field).
PARAMETERS_PER_UPDATED_ROW = 12


def rows_in_one_bulk_update() -> int:
    """Users whose changes fit in one bulk UPDATE on this connection (at most 500).

    The query count is constant only until a statement reaches the database's
    parameter limit and Django splits it. SQLite allows 32766 variables (250000 in
    Debian's build), but Python < 3.11 cannot ask, so Django then assumes the
    historical 999 and splits a bulk update of a few hundred users; the 10x growth
    between the two runs stays, at a smaller size.
    """
    connection.ensure_connection()
    getlimit = getattr(connection.connection, "getlimit", None)
    if connection.vendor == "sqlite" and getlimit is not None:
        limit: int | None = getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    else:
        limit = connection.features.max_query_params
    if limit is None:
        return 500
    return min(500, limit // PARAMETERS_PER_UPDATED_ROW)


@override_settings(KEYRUNES=BASE)
def test_missing_users_deactivated_only_on_request_never_deleted() -> None:
    run([remote(i) for i in range(1, 21)])
    listing = [remote(i) for i in range(1, 20)]
    report = run(listing)
    assert report.deactivated == 0
    assert User.objects.get(username="user20").is_active
    report = run(listing, deactivate_missing=True)
    assert report.deactivated == 1
    assert "deactivate user20" in report.items
    assert User.objects.filter(username="user20", is_active=False).exists()
    assert KeyrunesIdentity.objects.filter(remote_user_id=20).exists()
    # Already inactive: not counted again.
    assert run(listing, deactivate_missing=True).deactivated == 0


@override_settings(KEYRUNES=BASE)
def test_users_listed_again_are_reactivated_but_not_those_deactivated_by_hand() -> None:
    run([remote(1), remote(2), remote(3)])
    run([remote(1), remote(2)], deactivate_missing=True, max_shrink=50)
    record = KeyrunesIdentity.objects.get(remote_user_id=3)
    assert record.deactivated_at is not None
    assert not record.user.is_active
    User.objects.filter(username="user2").update(is_active=False)  # by an operator

    report = run([remote(1), remote(2), remote(3)])

    assert "reactivate user3" in report.items
    record.refresh_from_db()
    assert record.deactivated_at is None
    assert User.objects.get(username="user3").is_active
    assert not User.objects.get(username="user2").is_active


@override_settings(KEYRUNES=BASE)
def test_shrinking_listing_aborts_without_changes() -> None:
    run([remote(i) for i in range(1, 21)])
    before = list(User.objects.order_by("pk").values_list("username", "email", "is_active"))
    shrunk = [remote(i, email=f"x{i}@example.com") for i in range(1, 17)]  # -20%
    with pytest.raises(sync.SyncAborted, match=r"shrank by 20\.0%"):
        run(shrunk, deactivate_missing=True)
    assert list(User.objects.order_by("pk").values_list("username", "email", "is_active")) == before
    # A larger allowance lets it through.
    report = run(shrunk, deactivate_missing=True, max_shrink=25)
    assert report.deactivated == 4
    # An empty listing is the worst shrink of all.
    with pytest.raises(sync.SyncAborted):
        run([], deactivate_missing=True)


@override_settings(KEYRUNES=BASE)
def test_dry_run_writes_nothing_and_predicts_counts() -> None:
    run([remote(1, "users", "developers")])
    User.objects.create(username="local")
    listing = [remote(1, "users", "ops"), remote(2, "users", "ops"), remote(3, username="local")]
    with CaptureQueriesContext(connection) as ctx:
        predicted = run(listing, dry_run=True, deactivate_missing=True)
    assert not any(
        q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
        for q in ctx.captured_queries
    )
    assert predicted.dry_run
    assert predicted.summary().startswith("Dry run")
    assert not User.objects.filter(username="user2").exists()
    assert not Group.objects.filter(name="ops").exists()
    actual = run(listing, deactivate_missing=True)
    for name in (
        "created",
        "updated",
        "unchanged",
        "deactivated",
        "groups_created",
        "groups_marked",
        "memberships_added",
        "memberships_removed",
        "refused",
    ):
        assert getattr(predicted, name) == getattr(actual, name), name
    assert actual.refused == {"local_user_exists": 1}


@override_settings(KEYRUNES={**BASE, "LINK_EXISTING_USERS": True})
def test_link_existing_local_user() -> None:
    local = User.objects.create_user(username="bob", password="local-pass", email="old@x.org")
    report = run([remote(5, username="bob")])
    assert report.linked == 1
    assert report.created == 0
    local.refresh_from_db()
    assert local.keyrunes_identity.remote_user_id == 5
    assert local.email == "bob@example.com"
    assert not local.has_usable_password()


@override_settings(KEYRUNES=BASE)
def test_username_taken_by_other_identity_is_refused() -> None:
    run([remote(1, username="carol")])
    report = sync.sync_users([remote(1, username="carol")], namespace="public", organization_id=1)
    assert report.unchanged == 1
    # Another remote id claiming the same username in this namespace.
    report = run([remote(1, username="carol"), remote(2, username="carol2")])
    assert report.created == 1
    report = run([remote(1, username="carol2"), remote(2, username="carol2")])
    assert report.refused["username_taken"] == 1


@override_settings(KEYRUNES={**BASE, "DENY_GROUP": "banned"})
def test_mapper_refusals_are_counted() -> None:
    report = run([remote(1, "users"), remote(2, "users", "banned")])
    assert report.created == 1
    assert report.refused == {"denied_group": 1}
    assert "refuse user2 (denied_group)" in report.items


@override_settings(
    KEYRUNES={**BASE, "GROUP_MAP": {"developers": "Dev Team"}, "MIRROR_GROUPS": ["developers"]}
)
def test_group_map_and_allow_list() -> None:
    run([remote(1, "users", "developers")])
    assert groups_of("user1") == {"Dev Team"}
    assert MirroredGroup.objects.get(group__name="Dev Team").remote_name == "developers"


@override_settings(KEYRUNES={**BASE, "MIRROR_GROUPS": False})
def test_mirror_groups_off_leaves_memberships_alone() -> None:
    local = Group.objects.create(name="users")
    User.objects.create(username="x")
    run([remote(1, "users")])
    assert groups_of("user1") == set()
    assert not MirroredGroup.objects.filter(group=local).exists()


@override_settings(KEYRUNES=BASE)
def test_user_mirrored_signal_sent_for_changes() -> None:
    seen: list[tuple[str, bool]] = []

    def receiver(sender: Any, user: Any, created: bool, **kwargs: Any) -> None:
        seen.append((user.username, created))

    signals.user_mirrored.connect(receiver)
    try:
        run([remote(1)])
        run([remote(1, email="changed@example.com"), remote(2)])
    finally:
        signals.user_mirrored.disconnect(receiver)
    assert seen == [("user1", True), ("user2", True), ("user1", False)]


@override_settings(KEYRUNES=BASE)
def test_populate_user_receiver_changes_are_saved() -> None:
    def receiver(sender: Any, user: Any, **kwargs: Any) -> None:
        user.first_name = "Populated"

    run([remote(1)])
    signals.populate_user.connect(receiver)
    try:
        report = run([remote(1), remote(2)])
    finally:
        signals.populate_user.disconnect(receiver)
    assert report.updated == 1
    assert set(User.objects.values_list("first_name", flat=True)) == {"Populated"}


@override_settings(KEYRUNES=BASE)
def test_progress_callback() -> None:
    calls: list[tuple[str, int, int]] = []
    run([remote(i) for i in range(1, 4)], progress=lambda *a: calls.append(a))
    assert ("mapping", 3, 3) in calls
    assert calls[-1] == ("writing", 1, 1)


# ------------------------------------------------------------------ groups


def rg(name: str, group_id: int = 1) -> RemoteGroup:
    return RemoteGroup(group_id=group_id, organization_id=1, name=name)


def run_groups(names: list[str], **kwargs: Any) -> sync.GroupSyncReport:
    return sync.sync_groups(
        [rg(n, i) for i, n in enumerate(names)], namespace="public", organization_id=1, **kwargs
    )


@override_settings(KEYRUNES=BASE)
def test_sync_groups_creates_and_marks() -> None:
    report = run_groups(["users", "developers"])
    assert (report.created, report.marked, report.unchanged) == (2, 0, 0)
    assert set(MirroredGroup.objects.values_list("group__name", flat=True)) == {
        "users",
        "developers",
    }
    report = run_groups(["users", "developers"])
    assert (report.created, report.marked, report.unchanged) == (0, 0, 2)


@override_settings(KEYRUNES=BASE)
def test_sync_groups_reports_local_only_collisions() -> None:
    local = Group.objects.create(name="developers")
    report = run_groups(["users", "developers"])
    assert (report.created, report.marked, report.unchanged) == (1, 0, 0)
    assert report.collisions == {"developers"}
    assert "collision: developers is a local-only group; not mirrored" in report.items
    assert "Not mirrored onto local-only groups: developers." in report.summary()
    assert not MirroredGroup.objects.filter(group=local).exists()
    # --prune never deletes it: it was never mirrored.
    run_groups(["users"], prune=True)
    assert Group.objects.filter(pk=local.pk).exists()


@override_settings(KEYRUNES={**BASE, "ADOPT_GROUPS": ["developers"]})
def test_sync_groups_adopts_groups_named_in_adopt_groups() -> None:
    Group.objects.create(name="developers")
    report = run_groups(["users", "developers"])
    assert (report.created, report.marked, report.collisions) == (1, 1, set())
    assert MirroredGroup.objects.filter(group__name="developers").exists()


@override_settings(KEYRUNES=BASE)
def test_prune_has_a_shrink_guard() -> None:
    names = [f"team{i}" for i in range(10)]
    run_groups(names)
    with pytest.raises(sync.SyncAborted, match=r"shrank by 90\.0%"):
        run_groups(names[:1], prune=True)
    assert Group.objects.count() == 10
    report = run_groups(names[:1], prune=True, max_shrink=None)
    assert report.pruned == 9


@override_settings(KEYRUNES=BASE)
def test_prune_only_mirrored_groups_gone_remotely() -> None:
    run_groups(["users", "developers", "ops"])
    Group.objects.create(name="local-only")
    other = Group.objects.create(name="tenant-group")
    MirroredGroup.objects.create(group=other, remote_name="tenant-group", namespace="acme")
    report = run_groups(["users", "developers"])
    assert report.pruned == 0
    assert Group.objects.filter(name="ops").exists()
    report = run_groups(["users", "developers"], prune=True, dry_run=True)
    assert report.pruned == 1
    assert Group.objects.filter(name="ops").exists()
    report = run_groups(["users", "developers"], prune=True)
    assert report.pruned == 1
    assert "prune ops (remote ops is gone)" in report.items
    assert set(Group.objects.values_list("name", flat=True)) == {
        "users",
        "developers",
        "local-only",
        "tenant-group",
    }
    with pytest.raises(sync.SyncAborted, match="empty"):
        run_groups([], prune=True)


@override_settings(
    KEYRUNES={
        **BASE,
        "GROUP_MAP": {"developers": ["Dev", "Engineering"]},
        "MIRROR_GROUPS": ["developers"],
    }
)
def test_sync_groups_uses_group_map_and_skips_unmirrored() -> None:
    report = run_groups(["users", "developers"], dry_run=True)
    assert report.created == 2
    assert report.skipped == 1
    assert not Group.objects.exists()
    report = run_groups(["users", "developers"])
    assert set(Group.objects.values_list("name", flat=True)) == {"Dev", "Engineering"}
    assert "skip users (not mirrored by MIRROR_GROUPS/GROUP_MAP)" in report.items
    assert "1 not mirrored" in report.summary()


# ------------------------------------------------ hostile or odd listings


def writes_in(ctx: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in ctx.captured_queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]


@override_settings(KEYRUNES=BASE)
def test_duplicate_remote_ids_are_a_protocol_error_and_nothing_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run([remote(i) for i in range(1, 21)])
    before = list(User.objects.order_by("pk").values_list("username", "email", "is_active"))
    # Two users repeated 20 times: 40 rows, 2 distinct ids. Small chunks, so the
    # first chunks are written before the repetition shows.
    monkeypatch.setattr(sync, "CHUNK_SIZE", 3)
    listing = [remote(1 + i % 2, email=f"new{i % 2}@example.com") for i in range(40)]
    with pytest.raises(KeyrunesProtocolError, match="twice"):
        run(listing, deactivate_missing=True, max_shrink=10)
    assert list(User.objects.order_by("pk").values_list("username", "email", "is_active")) == before


@override_settings(KEYRUNES=BASE)
def test_shrink_guard_counts_distinct_ids_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    run([remote(i) for i in range(1, 21)])
    monkeypatch.setattr(sync, "CHUNK_SIZE", 4)
    with pytest.raises(sync.SyncAborted, match=r"17 listed against 20"):
        run([remote(i) for i in range(1, 18)], deactivate_missing=True)
    assert User.objects.filter(is_active=True).count() == 20


@override_settings(
    KEYRUNES={
        **BASE,
        "USER_ATTR_MAP": {"username": "username", "email": "email", "first_name": "external_id"},
    }
)
def test_remote_values_that_do_not_fit_are_skipped_and_the_rest_synced() -> None:
    # Each of these fails in SQL on PostgreSQL (and crashed the whole sync there).
    listing = [
        remote(1),
        remote(2, username=""),  # Keyrunes allows an empty username
        remote(3, email="e" * 243 + "@example.com"),  # 255 characters; EmailField holds 254
        remote(4, external_id="x" * 151),  # first_name holds 150
        remote(5),
    ]
    assert len(listing[2].email) == 255
    report = run(listing)
    assert report.created == 2
    assert report.refused == {"no_username": 1, "value_too_long": 2}
    assert "refuse user3 (value_too_long)" in report.items
    assert set(User.objects.values_list("username", flat=True)) == {"user1", "user5"}
    # An existing user whose remote data stops fitting keeps its row, unchanged.
    report = run([remote(1, email="f" * 243 + "@example.com"), remote(5)])
    assert report.refused == {"value_too_long": 1}
    assert User.objects.get(username="user1").email == "user1@example.com"


@override_settings(
    KEYRUNES={
        **BASE,
        "USER_ATTR_MAP": {"username": "username", "email": "email", "last_name": "organization_id"},
    }
)
def test_non_string_values_on_text_fields_are_not_rewritten() -> None:
    run([remote(1), remote(2)])
    assert User.objects.get(username="user1").last_name == "1"
    with CaptureQueriesContext(connection) as ctx:
        report = run([remote(1), remote(2)])
    assert (report.updated, report.unchanged) == (0, 2)
    assert writes_in(ctx) == []


@override_settings(KEYRUNES=BASE)
def test_missing_required_field_is_reported_as_such() -> None:
    def drop_last_name(sender: Any, user: Any, created: bool, **kwargs: Any) -> None:
        if created and user.username == "user2":
            user.last_name = None  # a receiver that found nothing to fill in

    signals.populate_user.connect(drop_last_name)
    try:
        report = run([remote(1), remote(2)])
    finally:
        signals.populate_user.disconnect(drop_last_name)
    assert report.created == 1
    assert report.refused == {"missing_field": 1}
    assert "refuse user2 (missing_field)" in report.items


@override_settings(KEYRUNES=BASE)
def test_recreated_remote_user_displaces_the_old_row() -> None:
    run([remote(1, "users", "ops", username="carol")])
    old = User.objects.get(username="carol")
    # carol was deleted in Keyrunes and created again: new id, same name.
    report = run([remote(2, username="carol")], max_shrink=None, deactivate_missing=True)
    assert (report.created, report.displaced, report.deactivated) == (1, 1, 1)
    assert "displace carol (now carol~1; Keyrunes user 2 has its name)" in report.items
    old.refresh_from_db()
    assert (old.username, old.is_active) == ("carol~1", False)
    assert old.keyrunes_identity.remote_user_id == 1
    assert groups_of("carol~1") == {"users", "ops"}  # history kept on the old row
    new = User.objects.get(username="carol")
    assert new.keyrunes_identity.remote_user_id == 2
    assert groups_of("carol") == {"users"}
    assert run([remote(2, username="carol")]).unchanged == 1


@override_settings(KEYRUNES=BASE)
def test_rename_and_recreate_in_one_listing() -> None:
    run([remote(1, username="dave")])
    # Remote 1 was renamed and a new remote user took its old name.
    report = run([remote(1, username="dave-old"), remote(2, username="dave")])
    assert (report.created, report.updated, report.displaced) == (1, 1, 0)
    assert User.objects.get(username="dave-old").keyrunes_identity.remote_user_id == 1
    assert User.objects.get(username="dave").keyrunes_identity.remote_user_id == 2


@override_settings(KEYRUNES=BASE)
def test_two_new_remote_users_with_one_name_in_a_listing() -> None:
    report = run([remote(1, username="erin"), remote(2, username="erin")])
    assert report.created == 1
    assert report.refused == {"username_taken": 1}


@override_settings(KEYRUNES=BASE)
def test_local_only_group_with_a_remote_name_is_not_adopted_by_sync() -> None:
    local = Group.objects.create(name="developers")
    member = User.objects.create(username="local-dev")
    member.groups.add(local)
    report = run([remote(1, "users", "developers")])
    assert report.collisions == {"developers"}
    assert "collision: developers is a local-only group; not mirrored" in report.items
    assert "Not mirrored onto local-only groups: developers." in report.summary()
    assert groups_of("user1") == {"users"}
    assert groups_of("local-dev") == {"developers"}
    assert not MirroredGroup.objects.filter(group=local).exists()
    # Dry run predicts the same.
    assert run([remote(1, "users", "developers")], dry_run=True).collisions == {"developers"}


@override_settings(KEYRUNES={**BASE, "ADOPT_GROUPS": ["developers"]})
def test_adopt_groups_lets_the_sync_take_over_a_named_group() -> None:
    local = Group.objects.create(name="developers")
    report = run([remote(1, "users", "developers")])
    assert report.collisions == set()
    assert groups_of("user1") == {"users", "developers"}
    assert MirroredGroup.objects.get(group=local).remote_name == "developers"


# ------------------------------------------------------------ streaming


@override_settings(KEYRUNES=BASE)
def test_listing_is_consumed_lazily_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync, "CHUNK_SIZE", 5)
    pulled: list[int] = []

    def stream() -> Any:
        for i in range(1, 13):
            pulled.append(i)
            yield remote(i)

    chunks: list[int] = []
    report = run(stream(), progress=lambda label, done, total: chunks.append(done))
    assert report.created == report.remote == 12
    assert chunks[:3] == [5, 10, 12]


@override_settings(KEYRUNES=BASE)
def test_a_listing_failing_midway_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync, "CHUNK_SIZE", 2)

    def stream() -> Any:
        yield from (remote(i) for i in range(1, 6))
        raise KeyrunesProtocolError("truncated")

    with pytest.raises(KeyrunesProtocolError):
        run(stream())
    assert not User.objects.exists()


@override_settings(KEYRUNES=BASE)
def test_queries_grow_by_a_fixed_amount_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync, "CHUNK_SIZE", 10)

    def queries(chunks: int, offset: int) -> int:
        # Fresh group names per run: the first chunk creates them, later chunks reuse them.
        listing = [remote(offset + i, f"t{offset}-{i % 3}") for i in range(10 * chunks)]
        with CaptureQueriesContext(connection) as ctx:
            run(listing, max_shrink=None)
        return len(ctx.captured_queries)

    two, three, five = queries(2, 0), queries(3, 100), queries(5, 200)
    per_chunk = three - two
    assert five - three == 2 * per_chunk
    assert per_chunk <= 10


@override_settings(KEYRUNES=BASE)
def test_item_lines_can_stream_out_instead_of_being_kept() -> None:
    lines: list[str] = []
    report = run([remote(1), remote(2)], on_item=lines.append)
    assert lines == ["create user1", "create user2"]
    assert report.items == []


@override_settings(KEYRUNES=BASE)
def test_renames_inside_one_chunk() -> None:
    run([remote(1, username="ann"), remote(2, username="ben"), remote(3, username="cat")])
    # ann and ben swap names; cat wants a name nobody gives up.
    User.objects.create(username="local-dan")
    report = run(
        [remote(1, username="ben"), remote(2, username="ann"), remote(3, username="local-dan")]
    )
    assert report.updated == 2
    assert report.refused == {"username_taken": 1}
    assert "refuse update of local-dan (username_taken)" in report.items  # the remote name
    names = dict(KeyrunesIdentity.objects.values_list("remote_user_id", "user__username"))
    assert names == {1: "ben", 2: "ann", 3: "cat"}
    # Two remote users renamed onto one name: the second is refused.
    report = run([remote(1, username="eve"), remote(2, username="eve"), remote(3, username="cat")])
    assert report.refused == {"username_taken": 1}
    names = dict(KeyrunesIdentity.objects.values_list("remote_user_id", "user__username"))
    assert names == {1: "eve", 2: "ann", 3: "cat"}


@override_settings(KEYRUNES=BASE)
def test_new_remote_user_named_like_a_listed_one_is_refused_not_displacing() -> None:
    run([remote(1, username="gus")])
    report = run([remote(1, username="gus"), remote(2, username="gus")])
    assert report.refused == {"username_taken": 1}
    assert report.displaced == 0
    assert User.objects.get(username="gus").keyrunes_identity.remote_user_id == 1


@override_settings(KEYRUNES={**BASE, "USER_ATTR_MAP": {"username": "nickname", "email": "email"}})
def test_identities_are_accepted_and_a_missing_login_is_refused() -> None:
    named = dataclasses.replace(
        remote(1).to_identity("public", 1), payload={"nickname": "hal", "email": "h@example.com"}
    )
    report = run([named, remote(2)])  # remote(2) has no "nickname"
    assert report.created == 1
    assert report.refused == {"no_username": 1}
    assert User.objects.get().username == "hal"
