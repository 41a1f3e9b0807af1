"""The pytest plugin's fixtures."""

from __future__ import annotations

import requests
from django.conf import settings

from keyrunes_django.testing import EmulatedUser, KeyrunesEmulator


def test_keyrunes_fixture_points_settings_at_the_emulator(keyrunes: KeyrunesEmulator) -> None:
    assert settings.KEYRUNES["BASE_URL"] == keyrunes.base_url
    assert settings.KEYRUNES["JWT_SECRET"] == keyrunes.jwt_secret
    assert settings.KEYRUNES["ORGANIZATION_KEY"] == keyrunes.organization_key(1)
    # Merged over the project's own settings, not replacing them.
    assert settings.KEYRUNES["RETRIES"] == 0


def test_keyrunes_user_can_log_in(keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser) -> None:
    response = requests.post(
        f"{keyrunes.base_url}/api/login",
        json={
            "identity": keyrunes_user.email,
            "password": keyrunes_user.password,
            "namespace": "public",
        },
        timeout=5,
    )
    assert response.status_code == 200
    assert response.json()["user"]["groups"] == ["users"]


def test_keyrunes_superadmin(keyrunes: KeyrunesEmulator, keyrunes_superadmin: EmulatedUser) -> None:
    assert keyrunes_superadmin.username == "admin"
    assert keyrunes_superadmin.groups == ("superadmin", "users")
    token = keyrunes.issue_token(keyrunes_superadmin)
    response = requests.get(
        f"{keyrunes.base_url}/api/admin/users",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert response.status_code == 200


def test_state_is_reset_between_tests_part_one(keyrunes: KeyrunesEmulator) -> None:
    keyrunes.create_user(username="leftover")
    keyrunes.faults.fail_next(5)
    keyrunes.server_quirks = True


def test_state_is_reset_between_tests_part_two(keyrunes: KeyrunesEmulator) -> None:
    assert keyrunes.state.namespace("public").user_by_username("leftover") is None
    assert keyrunes.faults.active == []
    assert keyrunes.server_quirks is False
    assert keyrunes.requests_to("/api/me") == 0


def test_keyrunes_quirks(keyrunes_quirks: KeyrunesEmulator) -> None:
    assert keyrunes_quirks.server_quirks is True
    response = requests.get(
        f"{keyrunes_quirks.base_url}/api/verify-org-key",
        headers={"X-Organization-Key": keyrunes_quirks.organization_key(1)},
        timeout=5,
    )
    assert response.status_code == 500
