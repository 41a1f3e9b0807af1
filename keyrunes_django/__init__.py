"""Django and Django REST Framework integration for the Keyrunes authorization server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keyrunes_django.version import __version__

__all__ = ["__version__", "has_group", "has_permission", "is_admin"]

if TYPE_CHECKING:
    from keyrunes_django.authorization import has_group, has_permission, is_admin


def __getattr__(name: str) -> Any:
    # Imported on first use so that ``import keyrunes_django`` works before
    # Django is configured (e.g. in a settings module or a pytest plugin).
    if name in {"has_group", "has_permission", "is_admin"}:
        from keyrunes_django import authorization

        return getattr(authorization, name)
    raise AttributeError(f"module 'keyrunes_django' has no attribute {name!r}")
