"""The shared command base: output levels, progress, scope resolution, service-account errors."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError, OutputWrapper
from django.test import override_settings

from keyrunes_django.management.commands import _common
from keyrunes_django.testing import KeyrunesEmulator

SERVICE = {"IDENTITY": "admin@example.com", "PASSWORD": "Admin123"}


@pytest.fixture
def kr(keyrunes: KeyrunesEmulator) -> Iterator[KeyrunesEmulator]:
    with override_settings(KEYRUNES={**settings.KEYRUNES, "SERVICE_ACCOUNT": SERVICE}):
        yield keyrunes


def command(verbosity: int = 1) -> tuple[_common.KeyrunesCommand, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    cmd = _common.KeyrunesCommand(stdout=out, stderr=err)
    cmd.setup({"verbosity": verbosity, "dry_run": False})
    return cmd, out, err


def test_output_levels() -> None:
    for verbosity, expected in (
        (0, []),
        (1, ["i", "w"]),
        (2, ["i", "d", "w"]),
        (3, ["i", "d", "g", "w"]),
    ):
        cmd, out, err = command(verbosity)
        cmd.info("i")
        cmd.detail("d")
        cmd.debug("g")
        cmd.warn("w")
        assert (out.getvalue() + err.getvalue()).split() == expected


def test_progress_without_tty_only_for_long_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    cmd, _out, err = command()
    cmd.progress("mapping", 10, 100)
    assert err.getvalue() == ""
    cmd.progress("mapping", 1, 5000)
    cmd.progress("mapping", 2, 5000)  # within 2 s of the previous line: skipped
    cmd.progress("mapping", 5000, 5000)  # the last one always shows
    assert err.getvalue().splitlines() == ["mapping: 1/5000 (0%)", "mapping: 5000/5000 (100%)"]
    quiet, _o, quiet_err = command(0)
    quiet.progress("mapping", 5000, 5000)
    assert quiet_err.getvalue() == ""


def test_stderr_tty_detection() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    cmd, _o, _e = command()
    cmd.stderr = OutputWrapper(Tty())
    assert cmd._stderr_is_tty()
    cmd.stderr = OutputWrapper(io.StringIO())
    assert not cmd._stderr_is_tty()


def test_unreadable_service_token_falls_back_to_the_listing(kr: KeyrunesEmulator) -> None:
    cmd, _o, _e = command()
    token = cmd.service_token()
    # Not a JWT: its organization cannot be read, so the listing names it (never a default).
    with mock.patch("keyrunes_django.service_account.unverified_claims", return_value={}):
        assert cmd.resolve_scope(token) == ("public", 1)


def test_resolve_scope_order(kr: KeyrunesEmulator) -> None:
    cmd, _o, _e = command()
    token = cmd.service_token()
    assert cmd.resolve_scope(token, 7) == ("public", 7)
    assert cmd.resolve_scope(token) == ("public", 1)
    with override_settings(KEYRUNES={**settings.KEYRUNES, "ORGANIZATION_SCOPE": "3"}):
        assert cmd.resolve_scope(token) == ("public", 3)
    kr.create_organization("Acme", "acme")
    with override_settings(KEYRUNES={**settings.KEYRUNES, "NAMESPACE": "acme"}):
        kr.faults.add(r"^/api/admin/organizations", status=503, times=5)
        with pytest.raises(CommandError, match="Listing organizations failed"):
            cmd.resolve_scope(token)


def test_service_account_outage(kr: KeyrunesEmulator) -> None:
    cmd, _o, _e = command()
    kr.faults.add(r"^/api/login", status=503, times=5)
    with pytest.raises(CommandError, match="Could not log the service account in"):
        cmd.service_token()


def test_service_token_refused(kr: KeyrunesEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from keyrunes_django import service_account
    from keyrunes_django.exceptions import AuthenticationFailed

    def refuse(**kwargs: Any) -> str:
        raise AuthenticationFailed("nope", status_code=401)

    monkeypatch.setattr(service_account, "get_service_token", refuse)
    cmd, _o, _e = command()
    with pytest.raises(CommandError, match=r'KEYRUNES\["SERVICE_ACCOUNT"\]'):
        cmd.service_token()


def test_rotate_with_failing_organization_listing(kr: KeyrunesEmulator) -> None:
    kr.faults.add(r"^/api/admin/organizations$", status=503, times=5)
    with pytest.raises(CommandError, match="Listing organizations failed"):
        call_command("keyrunes_rotate_org_key", "--organization-id=1", stdout=io.StringIO())


def test_sync_groups_prune_refused_on_empty_listing(
    kr: KeyrunesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keyrunes_django.client import KeyrunesClient

    monkeypatch.setattr(KeyrunesClient, "list_groups", lambda self, token, org_id=None: [])
    with pytest.raises(CommandError, match="refusing to prune"):
        call_command("keyrunes_sync_groups", "--prune", stdout=io.StringIO())
