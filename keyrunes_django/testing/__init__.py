"""Test support: an emulator of the Keyrunes HTTP API, pytest fixtures, factories.

Needs the ``testing`` extra (Werkzeug)::

    from keyrunes_django.testing import KeyrunesEmulator

    with KeyrunesEmulator(superadmin=("admin@example.com", "Admin123")) as kr:
        kr.base_url
"""

from __future__ import annotations

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
