"""pytest fixtures backed by the Keyrunes emulator.

Enable with ``pytest_plugins = ["keyrunes_django.testing.pytest_plugin"]`` in a
``conftest.py`` (or through the package's ``pytest11`` entry point). Importing
this module imports only pytest: the emulator (Werkzeug) is loaded by the first
fixture that needs it, and Django only when its settings are configured, so
the plugin is safe to load in every pytest run.

Fixtures: ``keyrunes_emulator`` (one server per session), ``keyrunes`` (the same
server reset for each test; in a Django project with configured settings it
also points ``settings.KEYRUNES`` at it), ``keyrunes_quirks`` (``keyrunes``
reproducing server 0.2.0's defects), ``keyrunes_user`` (a fresh user in
``public``), ``keyrunes_superadmin``. Plain pytest projects without Django can
use all of them; they need the ``testing`` extra (Werkzeug).
Every test also starts with the process-wide circuit breaker closed, so one
test's outage never refuses the next test's calls.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
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
MISSING_EXTRA = (
    "the keyrunes pytest fixtures need Werkzeug: install the testing extra "
    "(pip install 'keyrunes-django[testing]')"
)


def _emulator_class() -> type[KeyrunesEmulator]:
    try:
        from keyrunes_django.testing.emulator import KeyrunesEmulator
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "werkzeug":
            pytest.fail(MISSING_EXTRA, pytrace=False)
        raise
    return KeyrunesEmulator


def _django_settings_configured() -> bool:
    """True when Django is importable and its settings are (or can be) loaded."""
    if "django" not in sys.modules and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return False
    try:
        from django.conf import settings
    except ImportError:
        return False
    return bool(settings.configured)


def _pointing_settings_at(emulator: KeyrunesEmulator) -> AbstractContextManager[Any]:
    """``override_settings`` of ``KEYRUNES`` when Django is set up, else nothing."""
    if not _django_settings_configured():
        return nullcontext()
    from django.conf import settings
    from django.test import override_settings

    current: dict[str, Any] = dict(getattr(settings, "KEYRUNES", None) or {})
    current.update(
        BASE_URL=emulator.base_url,
        JWT_SECRET=emulator.jwt_secret,
        ORGANIZATION_KEY=emulator.organization_key(1),
    )
    return override_settings(KEYRUNES=current)


@pytest.fixture(autouse=True)
def _keyrunes_breaker_closed() -> None:
    """Each test starts with the process-wide circuit breaker closed."""
    # Only where the app is in use: the plugin loads in every pytest run.
    breaker = sys.modules.get("keyrunes_django.breaker")
    if breaker is not None:
        breaker.reset_breaker()


@pytest.fixture(scope="session")
def keyrunes_emulator() -> Iterator[KeyrunesEmulator]:
    """One emulator for the whole session (seeded superadmin admin@example.com / Admin123)."""
    with _emulator_class()(
        jwt_secret=TEST_JWT_SECRET,
        superadmin=(SUPERADMIN_EMAIL, SUPERADMIN_PASSWORD, SUPERADMIN_USERNAME),
    ) as emulator:
        yield emulator


@pytest.fixture
def keyrunes(keyrunes_emulator: KeyrunesEmulator) -> Iterator[KeyrunesEmulator]:
    """The session emulator, reset; in a configured Django project also ``settings.KEYRUNES``.

    ``BASE_URL``, ``JWT_SECRET`` and ``ORGANIZATION_KEY`` (organization 1) are
    merged over the project's own ``KEYRUNES`` dict for the test's duration.
    Without Django settings the emulator is yielded as is (use ``base_url``).
    """
    keyrunes_emulator.reset()
    with _pointing_settings_at(keyrunes_emulator):
        yield keyrunes_emulator
    keyrunes_emulator.faults.clear()


@pytest.fixture
def keyrunes_quirks(keyrunes: KeyrunesEmulator) -> KeyrunesEmulator:
    """``keyrunes`` with ``server_quirks`` on; reset after the test."""
    keyrunes.server_quirks = True
    return keyrunes


@pytest.fixture
def keyrunes_user(keyrunes: KeyrunesEmulator) -> EmulatedUser:
    """A fresh regular user (group ``users``) in organization 1 / ``public``."""
    return keyrunes.create_user()


@pytest.fixture
def keyrunes_superadmin(keyrunes: KeyrunesEmulator) -> EmulatedUser:
    """The seeded global superadmin, with its password."""
    from keyrunes_django.testing.emulator import EmulatedUser

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
