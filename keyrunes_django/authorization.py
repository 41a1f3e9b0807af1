"""Who is asking, and may they? Group, admin and policy checks.

The programmatic API mirrors the official SDK's vocabulary (``has_group``,
``is_admin``, ``has_permission``) but follows the server's rules, not the
SDK's: admin status comes from the exact group names ``superadmin`` (global
only in the ``public`` namespace) and ``admin`` (own namespace), never from
"any group name containing admin".

Every function accepts a request (Django or DRF) or a user. They are defined
in :mod:`keyrunes_django.access`, next to the checks the decorators, mixins,
DRF permissions and template tags build on them; this module is their
long-standing public address.
"""

from __future__ import annotations

from keyrunes_django.access import (
    Principal,
    get_identity,
    get_user,
    has_group,
    has_permission,
    is_admin,
    is_authenticated,
    permission_cache_key,
    resolve_resource,
)

__all__ = [
    "Principal",
    "get_identity",
    "get_user",
    "has_group",
    "has_permission",
    "is_admin",
    "is_authenticated",
    "permission_cache_key",
    "resolve_resource",
]
