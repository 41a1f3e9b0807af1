"""pytest fixtures backed by the Keyrunes emulator.

Enable with ``pytest_plugins = ["keyrunes_django.testing.pytest_plugin"]`` in a
``conftest.py``. Django is imported only inside fixtures, so enabling the
plugin never touches unconfigured settings.

Fixtures: ``keyrunes_emulator`` (one server per session), ``keyrunes`` (the same
server reset for each test, with ``settings.KEYRUNES`` pointing at it),
``keyrunes_quirks`` (``keyrunes`` reproducing server 0.2.0's defects),
``keyrunes_user`` (a fresh user in ``public``), ``keyrunes_superadmin``.
Every test also starts with the process-wide circuit breaker closed, so one
test's outage never refuses the next test's calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from keyrunes_django.testing.emulator import EmulatedUser, KeyrunesEmulator

__all__ = [
    "SUPERADMIN_EMAIL",
    "SUPERADMIN_PASSWORD",
    "SUPERADMIN_USERNAME",
    "TEST_JWT_SECRET",
    "keyrunes",
    "keyrunes_emulator",
    "keyrunes_quirks",
    "keyrunes_superadmin",
    "keyrunes_user",
]

TEST_JWT_SECRET = "keyrunes-emulator-test-secret-0123456789"
SUPERADMIN_EMAIL = "admin@example.com"
SUPERADMIN_USERNAME = "admin"
SUPERADMIN_PASSWORD = "Admin123"


@pytest.fixture(autouse=True)
def _keyrunes_breaker_closed() -> None:
    """Each test starts with the process-wide circuit breaker closed."""
    from keyrunes_django.breaker import reset_breaker

    reset_breaker()


@pytest.fixture(scope="session")
def keyrunes_emulator() -> Iterator[KeyrunesEmulator]:
    """One emulator for the whole session (seeded superadmin admin@example.com / Admin123)."""
    with KeyrunesEmulator(
        jwt_secret=TEST_JWT_SECRET,
        superadmin=(SUPERADMIN_EMAIL, SUPERADMIN_PASSWORD, SUPERADMIN_USERNAME),
    ) as emulator:
        yield emulator


@pytest.fixture
def keyrunes(keyrunes_emulator: KeyrunesEmulator) -> Iterator[KeyrunesEmulator]:
    """The session emulator, reset, with ``settings.KEYRUNES`` pointing at it.

    ``BASE_URL``, ``JWT_SECRET`` and ``ORGANIZATION_KEY`` (organization 1) are
    merged over the project's own ``KEYRUNES`` dict for the test's duration.
    """
    from django.conf import settings
    from django.test import override_settings

    keyrunes_emulator.reset()
    current: dict[str, Any] = dict(getattr(settings, "KEYRUNES", None) or {})
    current.update(
        BASE_URL=keyrunes_emulator.base_url,
        JWT_SECRET=keyrunes_emulator.jwt_secret,
        ORGANIZATION_KEY=keyrunes_emulator.organization_key(1),
    )
    with override_settings(KEYRUNES=current):
        yield keyrunes_emulator
    keyrunes_emulator.faults.clear()


@pytest.fixture
def keyrunes_quirks(keyrunes: KeyrunesEmulator) -> KeyrunesEmulator:
    """``keyrunes`` with ``server_quirks`` on (contract §10); reset after the test."""
    keyrunes.server_quirks = True
    return keyrunes


@pytest.fixture
def keyrunes_user(keyrunes: KeyrunesEmulator) -> EmulatedUser:
    """A fresh regular user (group ``users``) in organization 1 / ``public``."""
    return keyrunes.create_user()


@pytest.fixture
def keyrunes_superadmin(keyrunes: KeyrunesEmulator) -> EmulatedUser:
    """The seeded global superadmin, with its password."""
    with keyrunes.state.lock:
        ns = keyrunes.state.namespace("public")
        user = ns.user_by_email(SUPERADMIN_EMAIL)
        assert user is not None
        return EmulatedUser(
            user_id=user.user_id,
            username=user.username,
            email=user.email,
            password=SUPERADMIN_PASSWORD,
            namespace="public",
            organization_id=user.organization_id,
            groups=tuple(ns.group_names(user.user_id)),
            external_id=user.external_id,
        )
