"""keyrunes_create_user, keyrunes_rotate_org_key and keyrunes_push_policies against the emulator."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.core.management import load_command_class
from django.core.management.base import CommandError
from django.test import override_settings

from keyrunes_django.testing import KeyrunesEmulator
from tests.factories import run_command

SERVICE = {"IDENTITY": "admin@example.com", "PASSWORD": "Admin123"}


@pytest.fixture
def kr(keyrunes: KeyrunesEmulator) -> Iterator[KeyrunesEmulator]:
    with override_settings(KEYRUNES={**settings.KEYRUNES, "SERVICE_ACCOUNT": SERVICE}):
        yield keyrunes


run = run_command


def with_keyrunes(**values: Any) -> Any:
    return override_settings(KEYRUNES={**settings.KEYRUNES, **values})


def help_text(command: str) -> str:
    parser = load_command_class("keyrunes_django", command).create_parser("manage.py", command)
    return parser.format_help()


# ---------------------------------------------------------------- create_user


def test_create_user(kr: KeyrunesEmulator) -> None:
    kr.create_group("developers")
    out, _ = run(
        "keyrunes_create_user",
        "--email=new@example.com",
        "--username=newbie",
        "--password=Secret-pass-1",
        "--group=users",
        "--group=developers",
        "--no-first-login",
    )
    assert "Created user newbie" in out
    assert "groups: users, developers" in out or "groups: developers, users" in out
    assert "Secret-pass-1" not in out
    created = [u for u in kr.state.namespace("public").users.values() if u.username == "newbie"]
    assert len(created) == 1
    assert created[0].first_login is False


def test_create_user_password_stdin(kr: KeyrunesEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("Piped-pass-123\n"))
    out, _ = run(
        "keyrunes_create_user", "--email=p@example.com", "--username=piped", "--password-stdin"
    )
    assert "Created user piped" in out
    assert "first_login: True" in out


def test_create_user_prompt(kr: KeyrunesEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from keyrunes_django.management.commands import keyrunes_create_user as module

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Tty())
    answers = iter(["Prompted-pass-1", "Prompted-pass-1", "one", "two"])
    monkeypatch.setattr(module.getpass, "getpass", lambda prompt="": next(answers))
    out, _ = run("keyrunes_create_user", "--email=q@example.com", "--username=prompted")
    assert "Created user prompted" in out
    with pytest.raises(CommandError, match="do not match"):
        run("keyrunes_create_user", "--email=r@example.com", "--username=other")


def test_create_user_no_password_source(
    kr: KeyrunesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(CommandError, match="No password"):
        run("keyrunes_create_user", "--email=x@example.com", "--username=x")
    with pytest.raises(CommandError, match="at least 8 bytes"):
        run("keyrunes_create_user", "--email=x@example.com", "--username=x", "--password=short")


def test_create_user_dry_run(kr: KeyrunesEmulator) -> None:
    before = len(kr.state.namespace("public").users)
    out, _ = run(
        "keyrunes_create_user",
        "--email=d@example.com",
        "--username=dry",
        "--password=Dry-run-123",
        "--dry-run",
    )
    assert "Would create dry <d@example.com> in organization 1" in out
    assert len(kr.state.namespace("public").users) == before
    assert kr.requests_to("/api/admin/user", "POST") == 0


def test_create_user_refused(kr: KeyrunesEmulator) -> None:
    with pytest.raises(CommandError, match="Creating the user failed"):
        run(
            "keyrunes_create_user",
            "--email=admin@example.com",
            "--username=dup",
            "--password=Dup-pass-123",
        )
    kr.faults.add(r"^/api/admin/user$", status=503, times=5)
    with pytest.raises(CommandError, match="Creating the user failed"):
        run(
            "keyrunes_create_user",
            "--email=z@example.com",
            "--username=z",
            "--password=Zzz-pass-123",
        )


def test_create_user_in_other_organization(kr: KeyrunesEmulator) -> None:
    org = kr.create_organization("Acme", "acme")
    out, _ = run(
        "keyrunes_create_user",
        "--email=t@acme.com",
        "--username=tenant",
        "--password=Tenant-pass-1",
        f"--organization-id={org.organization_id}",
    )
    assert "namespace acme" in out


def test_create_user_without_service_account(keyrunes: KeyrunesEmulator) -> None:
    with pytest.raises(CommandError, match=r'KEYRUNES\["SERVICE_ACCOUNT"\]'):
        run(
            "keyrunes_create_user",
            "--email=n@example.com",
            "--username=n",
            "--password=None-pass-1",
        )


def test_create_user_help() -> None:
    text = help_text("keyrunes_create_user")
    for flag in (
        "--email",
        "--username",
        "--password",
        "--password-stdin",
        "--group",
        "--organization-id",
        "--first-login",
        "--no-first-login",
        "--dry-run",
        "--verbosity",
        "Exit status",
    ):
        assert flag in text


# ----------------------------------------------------------- rotate_org_key


def test_rotate_org_key_prints_fingerprint(kr: KeyrunesEmulator) -> None:
    org = kr.create_organization("Acme", "acme")
    out, err = run("keyrunes_rotate_org_key", f"--organization-id={org.organization_id}")
    new_key = kr.organization_key(org.organization_id)
    assert new_key != org.secret_key
    assert new_key not in out
    assert "sha256:" + hashlib.sha256(new_key.encode()).hexdigest() in out
    assert "--show-key" in out
    assert err == ""


def test_rotate_org_key_show_key_and_configured_key_warning(kr: KeyrunesEmulator) -> None:
    out, err = run("keyrunes_rotate_org_key", "--organization-id=1", "--show-key")
    new_key = kr.organization_key(1)
    assert f"New key: {new_key}" in out
    # The fixture's ORGANIZATION_KEY was organization 1's old key.
    assert "KEYRUNES['ORGANIZATION_KEY'] is now refused" in err


def test_rotate_org_key_dry_run_and_unknown_org(kr: KeyrunesEmulator) -> None:
    old = kr.organization_key(1)
    out, _ = run("keyrunes_rotate_org_key", "--organization-id=1", "--dry-run")
    assert "Would rotate" in out
    assert kr.organization_key(1) == old
    with pytest.raises(CommandError, match="Organization 999 does not exist"):
        run("keyrunes_rotate_org_key", "--organization-id=999")


def test_rotate_org_key_failure(kr: KeyrunesEmulator) -> None:
    kr.faults.add(r"/rotate-key$", status=500, times=5)
    with pytest.raises(CommandError, match="Rotating the key failed"):
        run("keyrunes_rotate_org_key", "--organization-id=1")


def test_rotate_org_key_tenant_admin(kr: KeyrunesEmulator) -> None:
    org = kr.create_organization("Acme", "acme")
    kr.create_user(
        "boss",
        password="Boss-pass-123",
        namespace="acme",
        organization_id=org.organization_id,
        groups=("admin", "users"),
    )
    account = {"IDENTITY": "boss", "PASSWORD": "Boss-pass-123", "NAMESPACE": "acme"}
    with (
        with_keyrunes(SERVICE_ACCOUNT=account, NAMESPACE="acme"),
        pytest.raises(CommandError, match=r"lacks admin rights|Superadmin"),
    ):
        run("keyrunes_rotate_org_key")


def test_rotate_org_key_help() -> None:
    text = help_text("keyrunes_rotate_org_key")
    for flag in ("--organization-id", "--show-key", "--dry-run", "--verbosity", "Exit status"):
        assert flag in text


# ----------------------------------------------------------- push_policies


DECLARED = {
    "GROUPS": ["editors"],
    "POLICIES": [{"name": "docs_read", "resource": "docs:*", "action": "read"}],
}


def test_push_policies_dry_run_then_apply(kr: KeyrunesEmulator) -> None:
    with with_keyrunes(**DECLARED):
        out, _ = run("keyrunes_push_policies", "--dry-run")
        assert "Dry run: 2 item(s) would be created." in out
        assert kr.requests_to("/api/admin/groups", "POST") == 0
        out, _ = run("keyrunes_push_policies")
        assert "2 created, 0 failed" in out
        assert kr.requests_to("/api/admin/groups", "POST") == 1
        assert kr.requests_to("/api/admin/policies", "POST") == 1
        out, _ = run("keyrunes_push_policies", verbosity=2)
        assert "matches the declaration" in out


def test_push_policies_changed_item_exits_non_zero(kr: KeyrunesEmulator) -> None:
    kr.create_policy("docs_read", "docs:*", "write")
    with with_keyrunes(**DECLARED), pytest.raises(CommandError, match="cannot be updated"):
        run("keyrunes_push_policies")
    with with_keyrunes(**DECLARED), pytest.raises(CommandError, match="cannot be updated"):
        run("keyrunes_push_policies", "--dry-run")


def test_push_policies_undeclared(kr: KeyrunesEmulator) -> None:
    with with_keyrunes(GROUPS=[], POLICIES=[]):
        out, _ = run("keyrunes_push_policies")  # the seed policies are only reported
        assert "undeclared" in out
        with pytest.raises(CommandError, match="not declared"):
            run("keyrunes_push_policies", "--fail-on-undeclared")


def test_push_policies_creation_fails(kr: KeyrunesEmulator) -> None:
    kr.faults.add(r"^/api/admin/policies$", status=400, times=5, method="POST")
    with with_keyrunes(**DECLARED), pytest.raises(CommandError, match="could not be created"):
        run("keyrunes_push_policies")


def test_push_policies_listing_fails(kr: KeyrunesEmulator) -> None:
    kr.faults.add(r"^/api/admin/policies", status=503, times=5)
    with with_keyrunes(**DECLARED), pytest.raises(CommandError, match="Reading groups"):
        run("keyrunes_push_policies")
    assert kr.requests_to("/api/admin/groups", "POST") == 0


def test_push_policies_bad_declaration(kr: KeyrunesEmulator) -> None:
    with with_keyrunes(POLICIES=[{"name": "x"}]), pytest.raises(CommandError):
        run("keyrunes_push_policies")


def test_push_policies_help() -> None:
    text = help_text("keyrunes_push_policies")
    for flag in ("--dry-run", "--organization-id", "--fail-on-undeclared", "--verbosity"):
        assert flag in text
