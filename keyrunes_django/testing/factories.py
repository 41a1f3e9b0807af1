"""Payload factories for Keyrunes tests: unique names, random strong passwords."""

from __future__ import annotations

import itertools
import secrets
import string
from typing import Any

__all__ = [
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

_counter = itertools.count(1)


def _suffix() -> str:
    return f"{next(_counter)}{secrets.token_hex(3)}"


def unique_username(prefix: str = "user") -> str:
    """A username no other call returns (well under the server's 50 characters)."""
    return f"{prefix}_{_suffix()}"


def unique_email(local_part: str | None = None, domain: str = "example.com") -> str:
    return f"{local_part or unique_username()}@{domain}"


def unique_namespace(prefix: str = "tenant") -> str:
    """Alphanumerics and underscores only, as organization namespaces require."""
    return f"{prefix}_{_suffix()}"


def strong_password(length: int = 16) -> str:
    """Random, with at least one lower, upper, digit and symbol."""
    if length < 4:
        raise ValueError("length must be at least 4")
    pools = (string.ascii_lowercase, string.ascii_uppercase, string.digits, "!#%&*+-=?@^_")
    chars = [secrets.choice(pool) for pool in pools]
    alphabet = "".join(pools)
    chars += [secrets.choice(alphabet) for _ in range(length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def user_payload(**overrides: Any) -> dict[str, Any]:
    """``email``, ``username``, ``password`` (unique), merged with ``overrides``."""
    username = overrides.pop("username", None) or unique_username()
    payload: dict[str, Any] = {
        "email": unique_email(),
        "username": username,
        "password": strong_password(),
    }
    payload.update(overrides)
    return payload


def register_payload(namespace: str = "public", **overrides: Any) -> dict[str, Any]:
    """A body for ``POST /api/register``."""
    return user_payload(namespace=namespace, **overrides)


def login_payload(identity: str, password: str, namespace: str = "public") -> dict[str, Any]:
    return {"identity": identity, "password": password, "namespace": namespace}


def organization_payload(**overrides: Any) -> dict[str, Any]:
    """A body for ``POST /api/admin/organizations``."""
    namespace = unique_namespace()
    payload: dict[str, Any] = {"name": f"Org {namespace}", "namespace": namespace}
    payload.update(overrides)
    return payload


def group_payload(organization_id: int = 1, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"organization_id": organization_id, "name": unique_username("group")}
    payload.update(overrides)
    return payload


def policy_payload(organization_id: int = 1, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "organization_id": organization_id,
        "name": unique_username("policy"),
        "resource": "docs:*",
        "action": "read",
        "effect": "Allow",
    }
    payload.update(overrides)
    return payload
