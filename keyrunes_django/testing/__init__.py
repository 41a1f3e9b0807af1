"""Test support: an emulator of the Keyrunes HTTP API, pytest fixtures, factories.

Needs the ``testing`` extra (Werkzeug)::

    from keyrunes_django.testing import KeyrunesEmulator

    with KeyrunesEmulator(superadmin=("admin@example.com", "Admin123")) as kr:
        kr.base_url
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from keyrunes_django.testing.emulator import (
        EmulatedGroup,
        EmulatedOrganization,
        EmulatedPolicy,
        EmulatedUser,
        KeyrunesEmulator,
        build_state,
    )
    from keyrunes_django.testing.faults import Fault, FaultInjector
    from keyrunes_django.testing.state import EmulatorError

EXTRA_HINT = 'The Keyrunes emulator needs Werkzeug: pip install "keyrunes-django[testing]"'

#: Names served on first use, from the module that needs Werkzeug (or not).
_LAZY = {
    "EmulatedGroup": "emulator",
    "EmulatedOrganization": "emulator",
    "EmulatedPolicy": "emulator",
    "EmulatedUser": "emulator",
    "KeyrunesEmulator": "emulator",
    "build_state": "emulator",
    "Fault": "faults",
    "FaultInjector": "faults",
    "EmulatorError": "state",
}


def require_werkzeug() -> None:
    """Raise an ImportError naming the ``testing`` extra when Werkzeug is missing."""
    try:
        import werkzeug  # noqa: F401
    except ImportError:
        raise ImportError(EXTRA_HINT) from None


def __getattr__(name: str) -> Any:
    # Lazy, so that importing this package (e.g. for the pytest plugin or the
    # factories) works without the extra; the emulator itself names the extra.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keyrunes_django.testing' has no attribute {name!r}")
    if module == "emulator":
        require_werkzeug()
    from importlib import import_module

    return getattr(import_module(f"keyrunes_django.testing.{module}"), name)


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
