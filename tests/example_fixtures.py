"""Fixtures running the example project against an emulator seeded from its seed.json."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches

from keyrunes_django.testing.emulator import KeyrunesEmulator

REPO = Path(__file__).resolve().parent.parent
SEED = REPO / "example_project" / "seed.json"
ADMIN = ("admin@example.com", "Admin-Pass-1", "admin")
ALICE = ("alice", "Alice-Pass-1")
BOB = ("bob", "Bob-Pass-1")


@pytest.fixture(scope="session")
def example_emulator() -> Iterator[KeyrunesEmulator]:
    with KeyrunesEmulator(
        jwt_secret="example-project-tests-secret-0123456789", superadmin=ADMIN, seed=SEED
    ) as emulator:
        yield emulator


@pytest.fixture
def example_site(example_emulator: KeyrunesEmulator, settings: Any) -> KeyrunesEmulator:
    """The example project's URLs, templates and middleware, pointed at the seeded emulator."""
    from example_project import settings as example

    example_emulator.reset()
    caches["default"].clear()
    settings.ROOT_URLCONF = "example_project.urls"
    settings.MIDDLEWARE = example.MIDDLEWARE
    settings.TEMPLATES = example.TEMPLATES
    settings.REST_FRAMEWORK = example.REST_FRAMEWORK
    settings.LOGIN_REDIRECT_URL = example.LOGIN_REDIRECT_URL
    settings.LOGOUT_REDIRECT_URL = example.LOGOUT_REDIRECT_URL
    settings.KEYRUNES = {
        **settings.KEYRUNES,
        "BASE_URL": example_emulator.base_url,
        "JWT_SECRET": example_emulator.jwt_secret,
        "ORGANIZATION_KEY": example_emulator.organization_key(1),
        "ORGANIZATION_SCOPE": 1,
        "SHOW_RESET_LINK": True,
        "REGISTRATION_ENABLED": example.KEYRUNES["REGISTRATION_ENABLED"],
    }
    return example_emulator
