"""Test support: an emulator of the Keyrunes HTTP API, pytest fixtures, factories.

Needs the ``testing`` extra (Werkzeug)::

    from keyrunes_django.testing import KeyrunesEmulator

    with KeyrunesEmulator(superadmin=("admin@example.com", "Admin123")) as kr:
        kr.base_url

Names are imported on first use, so that importing a submodule (such as the
pytest plugin) loads neither Werkzeug nor Django.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keyrunes_django.testing.emulator import (
        EmulatedGroup,
        EmulatedOrganization,
        EmulatedPolicy,
        EmulatedUser,
        KeyrunesEmulator,
        build_state,
    )
    from keyrunes_django.testing.factories import (
        group_payload,
        login_payload,
        organization_payload,
        policy_payload,
        register_payload,
        strong_password,
        unique_email,
        unique_namespace,
        unique_username,
        user_payload,
    )
    from keyrunes_django.testing.faults import Fault, FaultInjector
    from keyrunes_django.testing.state import EmulatorError

_HOMES = {
    "EmulatedGroup": "emulator",
    "EmulatedOrganization": "emulator",
    "EmulatedPolicy": "emulator",
    "EmulatedUser": "emulator",
    "KeyrunesEmulator": "emulator",
    "build_state": "emulator",
    "group_payload": "factories",
    "login_payload": "factories",
    "organization_payload": "factories",
    "policy_payload": "factories",
    "register_payload": "factories",
    "strong_password": "factories",
    "unique_email": "factories",
    "unique_namespace": "factories",
    "unique_username": "factories",
    "user_payload": "factories",
    "Fault": "faults",
    "FaultInjector": "faults",
    "EmulatorError": "state",
}

__all__ = [
    "EmulatedGroup",
    "EmulatedOrganization",
    "EmulatedPolicy",
    "EmulatedUser",
    "EmulatorError",
    "Fault",
    "FaultInjector",
    "KeyrunesEmulator",
    "build_state",
    "group_payload",
    "login_payload",
    "organization_payload",
    "policy_payload",
    "register_payload",
    "strong_password",
    "unique_email",
    "unique_namespace",
    "unique_username",
    "user_payload",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'keyrunes_django.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"keyrunes_django.testing.{home}"), name)
    globals()[name] = value
    return value
