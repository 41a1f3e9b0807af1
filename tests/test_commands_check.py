"""keyrunes_check against the emulator."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.test import override_settings

from keyrunes_django.management.commands import keyrunes_check
from keyrunes_django.testing import KeyrunesEmulator

SERVICE = {"IDENTITY": "admin@example.com", "PASSWORD": "Admin123"}

# The check reads local groups (collisions with remote group names).
pytestmark = pytest.mark.django_db


@pytest.fixture
def kr(keyrunes: KeyrunesEmulator) -> Iterator[KeyrunesEmulator]:
    with override_settings(KEYRUNES={**settings.KEYRUNES, "SERVICE_ACCOUNT": SERVICE}):
        yield keyrunes


def check(*args: str, **options: Any) -> str:
    out = io.StringIO()
    call_command("keyrunes_check", *args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def failing(*args: str, **options: Any) -> tuple[str, str]:
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("keyrunes_check", *args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue(), str(info.value)


def with_keyrunes(**values: Any) -> Any:
    return override_settings(KEYRUNES={**settings.KEYRUNES, **values})


def test_everything_ok(kr: KeyrunesEmulator) -> None:
    out = check()
    assert "FAIL" not in out
    for topic in (
        "reachability",
        "health: /api/health: healthy",
        "/api/health/ready: ready",
        "clock",
        "jwt secret: JWT_SECRET verifies a freshly issued token",
        "org key: valid, organization 1",
        "admin API reachable",
    ):
        assert topic in out
    # No secret is printed.
    assert kr.jwt_secret not in out
    assert kr.organization_key(1) not in out
    assert "Admin123" not in out
    assert "0 failure(s)" in out


def test_verbosity_zero_is_silent(kr: KeyrunesEmulator) -> None:
    assert check(verbosity=0) == ""


def test_wrong_jwt_secret(kr: KeyrunesEmulator) -> None:
    with with_keyrunes(JWT_SECRET="another-secret-of-at-least-32-bytes!!"):
        out, error = failing()
    assert "FAIL jwt secret" in out
    assert "differs from the server's JWT_SECRET" in out
    assert "1 failure(s)" in error


def test_short_secret_is_a_warning(kr: KeyrunesEmulator) -> None:
    with with_keyrunes(JWT_SECRET="short"):
        out, _ = failing()  # it also fails to verify the server's token
    assert "WARN settings: JWT_SECRET is set, 5 bytes (shorter than 32 bytes)" in out


def test_unreachable_server(keyrunes: KeyrunesEmulator) -> None:
    with with_keyrunes(BASE_URL="http://127.0.0.1:9", TIMEOUT=0.5):
        out, _ = failing()
    assert "FAIL reachability" in out


def test_missing_base_url(keyrunes: KeyrunesEmulator) -> None:
    with with_keyrunes(BASE_URL=None):
        out, _ = failing()
    assert "FAIL settings: BASE_URL is not set" in out


def test_unknown_setting(keyrunes: KeyrunesEmulator) -> None:
    with with_keyrunes(ADMIN_KEY="x"):
        out, _ = failing()
    assert "FAIL settings: unknown keys: ADMIN_KEY" in out


def test_not_ready(kr: KeyrunesEmulator) -> None:
    kr.faults.add(r"^/api/health/ready", status=503, times=1)
    out, _ = failing()
    assert "FAIL health: /api/health/ready" in out


def test_unhealthy(kr: KeyrunesEmulator) -> None:
    kr.faults.add(r"^/api/health$", status=503, times=1)
    out, _ = failing()
    assert "FAIL" in out


def test_invalid_org_key(kr: KeyrunesEmulator) -> None:
    with with_keyrunes(ORGANIZATION_KEY="00000000-0000-4000-8000-000000000000"):
        out, _ = failing()
    assert "FAIL org key" in out


def test_org_key_of_other_scope(kr: KeyrunesEmulator) -> None:
    org = kr.create_organization("Acme", "acme")
    with with_keyrunes(ORGANIZATION_KEY=org.secret_key, ORGANIZATION_SCOPE=1):
        out, _ = failing()
    assert "FAIL org key" in out


def test_org_key_with_server_quirks(kr: KeyrunesEmulator) -> None:
    kr.server_quirks = True
    try:
        out = check()
    finally:
        kr.server_quirks = False
    assert "OK   org key: valid" in out


def test_org_key_in_both_server_modes(kr: KeyrunesEmulator) -> None:
    """verify-org-key answering 500 (server_quirks) still identifies the service's own key."""
    out = check()
    assert "OK   org key binding: organization keys of organization 1 only" in out
    assert "OK   org key: valid, organization 1" in out
    kr.server_quirks = True
    try:
        assert "OK   org key: valid, organization 1" in check()
    finally:
        kr.server_quirks = False


def test_org_key_of_another_organization(kr: KeyrunesEmulator) -> None:
    other = kr.create_organization("Other", namespace="other_ns")
    with with_keyrunes(ORGANIZATION_KEY=kr.organization_key(other.organization_id)):
        out, _ = failing()
    assert "FAIL org key: ORGANIZATION_KEY is refused (scope_mismatch)" in out


def test_clock_skew(kr: KeyrunesEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    real = keyrunes_check._now
    monkeypatch.setattr(keyrunes_check, "_now", lambda: real() + 120)
    out, _ = failing()
    # iat has a 1 s resolution: the measured skew is 119 or 120 s.
    assert re.search(r"FAIL clock: server clock is -1(19|20) s from ours", out)
    monkeypatch.setattr(keyrunes_check, "_now", lambda: real() - 7)
    out = check()
    assert "WARN clock" in out
    _, error = failing("--fail-on-warn")
    assert "warning(s)" in error
    assert "OK   clock" in check("--max-skew", "60")


def test_without_service_account(keyrunes: KeyrunesEmulator) -> None:
    # Without SERVICE_ACCOUNT or ORGANIZATION_SCOPE no organization key can be bound.
    out, _ = failing()
    assert "SKIP clock" in out
    assert "SKIP jwt secret" in out
    assert "WARN org key binding: organization keys are refused: set ORGANIZATION_SCOPE" in out
    assert "FAIL org key: ORGANIZATION_KEY is refused (organization_unknown)" in out
    with with_keyrunes(ORGANIZATION_SCOPE=1):
        assert "OK   org key: valid, organization 1" in check()


def test_refused_service_account(keyrunes: KeyrunesEmulator) -> None:
    with with_keyrunes(SERVICE_ACCOUNT={**SERVICE, "PASSWORD": "nope-nope"}):
        out, _ = failing()
    assert "FAIL service account" in out
    assert 'KEYRUNES["SERVICE_ACCOUNT"]' in out


def test_malformed_service_account(keyrunes: KeyrunesEmulator) -> None:
    with with_keyrunes(SERVICE_ACCOUNT={"IDENTITY": "x"}):
        out, _ = failing()
    assert "FAIL settings" in out


def test_service_account_without_admin_rights(keyrunes: KeyrunesEmulator) -> None:
    keyrunes.create_user("plain", password="Plain-pass-123")
    account = {"IDENTITY": "plain", "PASSWORD": "Plain-pass-123"}
    with with_keyrunes(SERVICE_ACCOUNT=account, ORGANIZATION_SCOPE=1):
        out = check()
        assert "WARN service account: not in group admin or superadmin" in out
        failing("--fail-on-warn")


def test_token_env_account(keyrunes: KeyrunesEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = keyrunes.get_user(1)
    assert admin is not None
    monkeypatch.setenv("KR_SERVICE_TOKEN", keyrunes.issue_token(admin))
    with with_keyrunes(SERVICE_ACCOUNT={"TOKEN_ENV": "KR_SERVICE_TOKEN"}):
        out = check()
    assert "SERVICE_ACCOUNT token from $KR_SERVICE_TOKEN" in out
    assert "OK   jwt secret" in out


def test_remote_mode_without_secret(kr: KeyrunesEmulator) -> None:
    with with_keyrunes(JWT_SECRET=None):
        out = check()
    assert "JWT_SECRET not set: tokens are verified remotely" in out
    with with_keyrunes(JWT_SECRET=None, VERIFICATION_MODE="local"):
        out, _ = failing()
    assert "VERIFICATION_MODE is local but JWT_SECRET is not set" in out


def test_dry_run_contacts_nothing(kr: KeyrunesEmulator) -> None:
    kr.reset_counters()
    out = check("--dry-run")
    assert "Dry run: no server contacted." in out
    assert len(kr.request_log) == 0


def test_help_mentions_every_flag() -> None:
    parser = load_command_class("keyrunes_django", "keyrunes_check").create_parser(
        "manage.py", "keyrunes_check"
    )
    text = parser.format_help()
    for flag in ("--dry-run", "--fail-on-warn", "--max-skew", "--verbosity", "Exit status"):
        assert flag in text
