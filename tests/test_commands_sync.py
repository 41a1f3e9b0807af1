"""keyrunes_sync_users / keyrunes_sync_groups against the emulator."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import CommandError
from django.test import override_settings

from keyrunes_django.models import KeyrunesIdentity, MirroredGroup
from keyrunes_django.testing import KeyrunesEmulator
from tests.factories import run_command

pytestmark = pytest.mark.django_db

SERVICE = {"IDENTITY": "admin@example.com", "PASSWORD": "Admin123"}


@pytest.fixture
def kr(keyrunes: KeyrunesEmulator) -> Iterator[KeyrunesEmulator]:
    """The emulator, with the seeded superadmin as service account."""
    with override_settings(KEYRUNES={**settings.KEYRUNES, "SERVICE_ACCOUNT": SERVICE}):
        yield keyrunes


run = run_command


def snapshot() -> tuple[list[Any], list[Any], list[Any]]:
    return (
        list(User.objects.order_by("pk").values_list("username", "email", "is_active")),
        list(Group.objects.order_by("name").values_list("name", flat=True)),
        list(KeyrunesIdentity.objects.order_by("pk").values_list("remote_user_id", "payload")),
    )


# ------------------------------------------------------------------ users


def test_sync_users_mirrors_everyone(kr: KeyrunesEmulator) -> None:
    kr.create_group("developers")
    alice = kr.create_user("alice", groups=("users", "developers"))
    kr.create_user("bob")
    out, _err = run("keyrunes_sync_users")
    assert "3 remote users: 3 created" in out  # the superadmin too
    user = User.objects.get(username="alice")
    assert user.keyrunes_identity.remote_user_id == alice.user_id
    assert set(user.groups.values_list("name", flat=True)) == {"users", "developers"}
    assert User.objects.get(username="admin").is_superuser


def test_sync_users_verbosity_levels(kr: KeyrunesEmulator) -> None:
    kr.create_user("alice")
    out, _ = run("keyrunes_sync_users", verbosity=0)
    assert out == ""
    kr.create_user("bob")
    out, _ = run("keyrunes_sync_users", verbosity=2)
    assert "create bob" in out
    assert "Keyrunes listed 3 users" in out
    out, _ = run("keyrunes_sync_users", verbosity=3)
    assert "namespace 'public', organization 1" in out


def test_sync_users_dry_run_writes_nothing(kr: KeyrunesEmulator) -> None:
    kr.create_user("alice")
    out, _ = run("keyrunes_sync_users", "--dry-run", verbosity=2)
    assert "Dry run" in out
    assert "would create alice" in out
    assert not User.objects.exists()
    assert not Group.objects.exists()


@pytest.mark.parametrize("status", [500, 503, 403, 401])
def test_sync_users_failed_listing_changes_nothing(kr: KeyrunesEmulator, status: int) -> None:
    kr.create_user("alice")
    run("keyrunes_sync_users")
    kr.create_user("bob")
    before = snapshot()
    kr.faults.add(r"^/api/admin/users", status=status, times=5)
    with pytest.raises(CommandError, match="Listing users") as info:
        run("keyrunes_sync_users", "--deactivate-missing")
    if status in (401, 403):
        assert 'KEYRUNES["SERVICE_ACCOUNT"]' in str(info.value)
    assert snapshot() == before


def test_sync_users_malformed_listing_changes_nothing(kr: KeyrunesEmulator) -> None:
    kr.create_user("alice")
    run("keyrunes_sync_users")
    before = snapshot()
    kr.faults.add(r"^/api/admin/users", malformed=True, times=5)
    with pytest.raises(CommandError, match="nothing was changed"):
        run("keyrunes_sync_users", "--deactivate-missing")
    assert snapshot() == before


def test_sync_users_deactivate_missing(kr: KeyrunesEmulator) -> None:
    users = [kr.create_user(f"user{i}") for i in range(10)]
    run("keyrunes_sync_users")
    kr.delete_user(users[0])
    out, _ = run("keyrunes_sync_users")
    assert "0 deactivated" in out
    assert User.objects.get(username="user0").is_active
    out, _ = run("keyrunes_sync_users", "--deactivate-missing", "--dry-run")
    assert "1 deactivated" in out
    assert User.objects.get(username="user0").is_active
    out, _ = run("keyrunes_sync_users", "--deactivate-missing")
    assert "1 deactivated" in out
    assert not User.objects.get(username="user0").is_active
    assert User.objects.filter(username="user0").exists()


def test_sync_users_max_shrink_abort(kr: KeyrunesEmulator) -> None:
    users = [kr.create_user(f"user{i}") for i in range(9)]
    run("keyrunes_sync_users")  # 10 active mirrored users with the superadmin
    for user in users[:2]:
        kr.delete_user(user)  # -20 %
    before = snapshot()
    with pytest.raises(CommandError, match="more than the 10% allowed"):
        run("keyrunes_sync_users", "--deactivate-missing")
    assert snapshot() == before
    out, _ = run("keyrunes_sync_users", "--deactivate-missing", "--max-shrink", "25")
    assert "2 deactivated" in out
    # 100 disables the check.
    kr.reset()
    run("keyrunes_sync_users", "--max-shrink", "100")


def test_sync_users_rejects_bad_max_shrink(kr: KeyrunesEmulator) -> None:
    with pytest.raises(CommandError, match="between 0 and 100"):
        run("keyrunes_sync_users", "--max-shrink", "150")
    with pytest.raises(CommandError, match="not a number"):
        run("keyrunes_sync_users", "--max-shrink", "lots")


def test_sync_users_without_service_account(keyrunes: KeyrunesEmulator) -> None:
    with pytest.raises(CommandError, match=r'KEYRUNES\["SERVICE_ACCOUNT"\]'):
        run("keyrunes_sync_users")


def test_sync_users_refused_service_account(keyrunes: KeyrunesEmulator) -> None:
    bad = {**settings.KEYRUNES, "SERVICE_ACCOUNT": {**SERVICE, "PASSWORD": "wrong-password"}}
    with (
        override_settings(KEYRUNES=bad),
        pytest.raises(CommandError, match=r'KEYRUNES\["SERVICE_ACCOUNT"\]'),
    ):
        run("keyrunes_sync_users")


def test_sync_users_service_account_without_admin_rights(keyrunes: KeyrunesEmulator) -> None:
    plain = keyrunes.create_user("plain", password="Plain-pass-123")
    account = {"IDENTITY": plain.username, "PASSWORD": "Plain-pass-123"}
    with (
        override_settings(KEYRUNES={**settings.KEYRUNES, "SERVICE_ACCOUNT": account}),
        pytest.raises(CommandError, match="admin"),
    ):
        run("keyrunes_sync_users")


def test_sync_users_tenant_organization(kr: KeyrunesEmulator) -> None:
    org = kr.create_organization("Acme", "acme")
    kr.create_user("tenant-user", namespace="acme", organization_id=org.organization_id)
    tenant = {
        **settings.KEYRUNES,
        "NAMESPACE": "acme",
        "SERVICE_ACCOUNT": {**SERVICE, "NAMESPACE": "public"},
    }
    with override_settings(KEYRUNES=tenant):
        out, _ = run("keyrunes_sync_users")
    record = KeyrunesIdentity.objects.get(user__username="tenant-user")
    assert (record.namespace, record.organization_id) == ("acme", org.organization_id)
    assert "1 created" in out
    with (
        override_settings(KEYRUNES={**tenant, "NAMESPACE": "nowhere"}),
        pytest.raises(CommandError, match="No organization has namespace 'nowhere'"),
    ):
        run("keyrunes_sync_users")


def test_sync_users_progress_on_tty(kr: KeyrunesEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from keyrunes_django.management.commands import _common

    monkeypatch.setattr(_common.KeyrunesCommand, "_stderr_is_tty", lambda self: True)
    kr.create_user("alice")
    _out, err = run("keyrunes_sync_users")
    assert "mapping: 2/2 (100%)" in err
    _out, err = run("keyrunes_sync_users", verbosity=0)
    assert err == ""


# ------------------------------------------------------------------ groups


def test_sync_groups_creates_marks_and_prunes(kr: KeyrunesEmulator) -> None:
    kr.create_group("developers")
    kr.create_group("ops")
    Group.objects.create(name="local-only")
    out, _ = run("keyrunes_sync_groups", verbosity=2)
    assert "create developers" in out
    names = set(MirroredGroup.objects.values_list("group__name", flat=True))
    assert {"developers", "ops", "users", "superadmin"} <= names
    assert "local-only" not in names

    # "ops" disappears remotely (the emulator has no delete route: drop it from state).
    with kr.state.lock:
        ns = kr.state.namespace("public")
        group = ns.group_by_name("ops")
        assert group is not None
        del ns.groups[group.group_id]
    out, _ = run("keyrunes_sync_groups")
    assert "0 pruned" in out
    assert Group.objects.filter(name="ops").exists()
    out, _ = run("keyrunes_sync_groups", "--prune", "--dry-run", verbosity=2)
    assert "would prune ops" in out
    assert Group.objects.filter(name="ops").exists()
    out, _ = run("keyrunes_sync_groups", "--prune")
    assert "1 pruned" in out
    assert not Group.objects.filter(name="ops").exists()
    assert Group.objects.filter(name="local-only").exists()


def test_sync_groups_dry_run_writes_nothing(kr: KeyrunesEmulator) -> None:
    out, _ = run("keyrunes_sync_groups", "--dry-run")
    assert out.startswith("Dry run")
    assert not Group.objects.exists()
    assert not MirroredGroup.objects.exists()


def test_sync_groups_refuses_an_id_past_64_bits(kr: KeyrunesEmulator) -> None:
    """A group id no BigIntegerField holds is refused with a reason; nothing is written."""
    import itertools

    run("keyrunes_sync_groups")
    before = snapshot()
    with kr.state.lock:
        kr.state.namespace("public").group_seq = itertools.count(2**63)
    kr.create_group("too-far")
    with pytest.raises(CommandError, match="group_id"):
        run("keyrunes_sync_groups", "--prune")
    assert snapshot() == before
    assert not Group.objects.filter(name="too-far").exists()


def test_sync_groups_failed_listing(kr: KeyrunesEmulator) -> None:
    run("keyrunes_sync_groups")
    before = snapshot()
    kr.faults.add(r"^/api/admin/groups", status=503, times=5)
    with pytest.raises(CommandError, match="Listing groups"):
        run("keyrunes_sync_groups", "--prune")
    assert snapshot() == before


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        (
            "keyrunes_sync_users",
            [
                "--dry-run",
                "--deactivate-missing",
                "--max-shrink",
                "--organization-id",
                "--verbosity",
            ],
        ),
        ("keyrunes_sync_groups", ["--dry-run", "--prune", "--organization-id", "--verbosity"]),
    ],
)
def test_help_mentions_every_flag(command: str, flags: list[str]) -> None:
    from django.core.management import load_command_class

    parser = load_command_class("keyrunes_django", command).create_parser("manage.py", command)
    text = parser.format_help()
    for flag in flags:
        assert flag in text
    assert "Exit status" in text


# ------------------------------------------------ streamed listing, guards


def test_sync_users_reads_the_listing_once_as_a_stream(kr: KeyrunesEmulator) -> None:
    for i in range(30):
        kr.create_user(f"member{i}")
    kr.reset_counters()
    out, _ = run("keyrunes_sync_users", verbosity=2)
    assert "31 remote users: 31 created" in out
    assert "Keyrunes listed 31 users" in out
    assert kr.requests_to("/api/admin/users", "GET") == 1


def test_sync_users_refuses_a_listing_with_duplicate_ids(
    kr: KeyrunesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keyrunes_django.client import KeyrunesClient

    for i in range(5):
        kr.create_user(f"member{i}")
    run("keyrunes_sync_users")
    before = snapshot()
    real = KeyrunesClient.iter_users

    def repeated(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        users = list(real(self, *args, **kwargs))
        return iter(users[:2] * 10)

    monkeypatch.setattr(KeyrunesClient, "iter_users", repeated)
    with pytest.raises(CommandError, match="twice"):
        run("keyrunes_sync_users", "--deactivate-missing")
    assert snapshot() == before


def test_sync_groups_prune_has_a_shrink_guard(kr: KeyrunesEmulator) -> None:
    for i in range(8):
        kr.create_group(f"team{i}")
    run("keyrunes_sync_groups")
    with kr.state.lock:
        ns = kr.state.namespace("public")
        for i in range(8):
            group = ns.group_by_name(f"team{i}")
            assert group is not None
            del ns.groups[group.group_id]
    with pytest.raises(CommandError, match="--max-shrink"):
        run("keyrunes_sync_groups", "--prune")
    assert Group.objects.filter(name__startswith="team").count() == 8
    out, _ = run("keyrunes_sync_groups", "--prune", "--max-shrink", "100")
    assert "8 pruned" in out


def test_sync_groups_reports_collisions(kr: KeyrunesEmulator) -> None:
    kr.create_group("editors")
    Group.objects.create(name="editors")
    out, _ = run("keyrunes_sync_groups")
    assert "Not mirrored onto local-only groups: editors." in out
    assert not MirroredGroup.objects.filter(group__name="editors").exists()


# --------------------------------------------- the client's streamed listing


def listing_client(body: bytes, monkeypatch: pytest.MonkeyPatch) -> Any:
    import requests

    from keyrunes_django.client import KeyrunesClient

    client = KeyrunesClient("http://127.0.0.1:9")

    def answer(*args: Any, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = 200
        response.raw = io.BytesIO(body)  # read as a stream, chunk by chunk
        response.request = requests.Request("GET", "http://127.0.0.1:9/api/admin/users").prepare()
        assert kwargs["stream"] is True  # never held whole in memory
        return response

    monkeypatch.setattr(client, "request", answer)
    return client


def user_json(user_id: int) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "external_id": f"ext-{user_id}",
        "email": f"u{user_id}@example.com",
        "username": f"u{user_id}",
        "first_login": False,
        "groups": ["users"],
        "created_at": "2026-01-01T00:00:00Z",
    }


def test_iter_users_parses_a_large_body_incrementally(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    body = json.dumps([user_json(i) for i in range(2000)]).encode()
    assert len(body) > 4 * 64 * 1024  # several chunks
    users = listing_client(body, monkeypatch).iter_users("token", 1)
    first = next(users)
    assert first.user_id == 0
    assert [u.user_id for u in users] == list(range(1, 2000))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"users": []}', "not a JSON array"),
        (b'   \n {"users": []}', "not a JSON array"),
        (b'[{"user_id": 1, ', "not valid JSON"),
        (b"", "not valid JSON"),
        (b'[{"user_id": "x"}]', "Unexpected AdminUser"),
    ],
)
def test_iter_users_refuses_bad_bodies(
    body: bytes, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keyrunes_django.exceptions import KeyrunesProtocolError

    users = listing_client(body, monkeypatch).iter_users("token")
    with pytest.raises(KeyrunesProtocolError, match=message):
        list(users)


def test_iter_users_has_a_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from keyrunes_django.exceptions import KeyrunesProtocolError

    body = json.dumps([user_json(i) for i in range(100)]).encode()
    client = listing_client(body, monkeypatch)
    assert len(list(client.iter_users("token", max_bytes=len(body)))) == 100
    with pytest.raises(KeyrunesProtocolError, match="larger than"):
        list(client.iter_users("token", max_bytes=len(body) - 1))


def test_keyrunes_check_reports_group_collisions(kr: KeyrunesEmulator) -> None:
    out, _ = run("keyrunes_check")
    assert "groups: no remote group collides with a local-only group" in out
    kr.create_group("editors")
    Group.objects.create(name="editors")
    with pytest.raises(CommandError):
        run("keyrunes_check", "--fail-on-warn")
    out, _ = run("keyrunes_check")
    assert (
        "local-only groups named like remote groups are not mirrored: editors (from editors)" in out
    )
    with override_settings(KEYRUNES={**settings.KEYRUNES, "ADOPT_GROUPS": ["editors"]}):
        out, _ = run("keyrunes_check")
    assert "no remote group collides" in out


def test_keyrunes_check_skips_collisions_without_a_database(
    kr: KeyrunesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import OperationalError

    from keyrunes_django import sync

    def broken(*args: Any, **kwargs: Any) -> dict[str, str]:
        raise OperationalError("no such table: auth_group")

    monkeypatch.setattr(sync, "group_collisions", broken)
    out, _ = run("keyrunes_check")
    assert "SKIP groups: local groups not readable (OperationalError)" in out
