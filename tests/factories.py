"""Test data shared by the token, cache, middleware and DRF tests.

* :func:`claims` / :func:`make_token`: a Keyrunes-shaped payload and an HS256
  token signed with :data:`SECRET`, any claim overridden or removed
  (:data:`REMOVE`);
* :func:`raw_token`: a token whose header and payload are given as JSON text,
  signed correctly, for JSON a dict cannot express (duplicate members, deep
  nesting);
* :func:`local_settings` / :func:`service_account`: ``KEYRUNES`` values;
* :func:`tenant`: an organization, in the emulator, with a user of its namespace.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt

from keyrunes_django.testing import EmulatedOrganization, EmulatedUser, KeyrunesEmulator

#: The HS256 secret of tokens made without the emulator.
SECRET = "k" * 32

#: A claim override that removes the claim.
REMOVE: Any = object()

#: A well-formed organization key that no organization has.
UNKNOWN_KEY = "00000000-0000-4000-8000-000000000000"


def claims(**overrides: Any) -> dict[str, Any]:
    """The payload Keyrunes signs for user 7 (alice, ``public``, organization 1)."""
    now = int(time.time())
    data: dict[str, Any] = {
        "sub": "7",
        "email": "alice@example.com",
        "username": "alice",
        "groups": ["users"],
        "namespace": "public",
        "organization_id": 1,
        "exp": now + 3600,
        "iat": now,
        "iss": "keyrunes",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not REMOVE}


def make_token(
    secret: str = SECRET,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:
    """A token of :func:`claims` with ``overrides``."""
    return jwt.encode(claims(**overrides), secret, algorithm=algorithm, headers=headers)


def b64(data: bytes | str | dict[str, Any]) -> str:
    """base64url without padding, of bytes, text, or a dict as JSON."""
    if isinstance(data, dict):
        data = json.dumps(data)
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: str, payload: str, secret: str = SECRET) -> str:
    """A token of literal JSON texts, with a correct HS256 signature."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def forged(header: dict[str, Any], signature: str = "c2ln") -> str:
    """A token with ``header``, :func:`claims` and a made-up signature."""
    return f"{b64(header)}.{b64(claims())}.{signature}"


def local_settings(**extra: Any) -> dict[str, Any]:
    """``KEYRUNES`` for local verification with :data:`SECRET` and no server."""
    return {
        "BASE_URL": "http://127.0.0.1:9",
        "JWT_SECRET": SECRET,
        "VERIFICATION_MODE": "local",
        "RETRIES": 0,
        **extra,
    }


def service_account() -> dict[str, str]:
    """``SERVICE_ACCOUNT`` for the emulator's seeded superadmin (of ``public``)."""
    # Imported here: the pytest plugin must not be imported before pytest loads it.
    from keyrunes_django.testing.pytest_plugin import SUPERADMIN_EMAIL, SUPERADMIN_PASSWORD

    return {"IDENTITY": SUPERADMIN_EMAIL, "PASSWORD": SUPERADMIN_PASSWORD, "NAMESPACE": "public"}


@dataclass(frozen=True)
class Tenant:
    """An emulated organization, its current key and one user of its namespace."""

    organization: EmulatedOrganization
    key: str
    user: EmulatedUser

    @property
    def organization_id(self) -> int:
        return self.organization.organization_id

    @property
    def namespace(self) -> str:
        return self.organization.namespace


def tenant(kr: KeyrunesEmulator, namespace: str, *, groups: tuple[str, ...] = ("users",)) -> Tenant:
    """Create organization ``namespace`` in the emulator, with one user."""
    org = kr.create_organization(f"Company {namespace}", namespace)
    user = kr.create_user(namespace=namespace, organization_id=org.organization_id, groups=groups)
    return Tenant(org, kr.organization_key(org.organization_id), user)


def run_command(name: str, *args: str, **options: Any) -> tuple[str, str]:
    """``call_command`` with stdout and stderr captured: (out, err)."""
    import io

    from django.core.management import call_command

    out, err = io.StringIO(), io.StringIO()
    call_command(name, *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()
