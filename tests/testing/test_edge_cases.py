"""Odd corners: tokens for vanished namespaces, malformed payloads, oversized values."""

from __future__ import annotations

import time

import jwt
import pytest

from keyrunes_django.testing import EmulatedUser, KeyrunesEmulator, register_payload
from tests.testing.conftest import Api, assert_plain, assert_shape_a


@pytest.fixture
def orphan(keyrunes: KeyrunesEmulator) -> tuple[EmulatedUser, str]:
    """A superadmin token naming a namespace that has no schema."""
    user = keyrunes.create_user(groups=("users",))
    token = keyrunes.issue_token(
        user, namespace="gone", organization_id=999, groups=["admin", "superadmin"]
    )
    return user, token


def test_routes_for_a_vanished_namespace(api: Api, orphan: tuple[EmulatedUser, str]) -> None:
    _user, token = orphan
    assert_shape_a(api.get("/api/me", token=token), 401, "user not found")
    assert_plain(api.delete("/api/admin/users/99", token=token), 500, 'relation "users"')
    check = {"user_id": 1, "group_name": "", "resource": "r", "action": "a"}
    assert_plain(api.post("/api/admin/check-permission", token=token, json=check), 500, "users")
    del check["group_name"]
    assert_plain(api.post("/api/check-permission", token=token, json=check), 500, "users")
    assert_plain(api.get("/api/verify-org-key", token=token), 500, "Missing request extension")
    profile = api.patch("/api/user/profile", token=token, json={"username": "x"})
    assert_plain(profile, 400, 'relation "users" does not exist')


def test_tenant_admin_whose_organization_row_is_missing(
    api: Api, keyrunes: KeyrunesEmulator
) -> None:
    keyrunes.create_organization("Acme", "acme")
    stray = keyrunes.create_user(namespace="acme", organization_id=77, groups=("admin",))
    response = api.get("/api/admin/organizations", token=keyrunes.issue_token(stray))
    assert_plain(response, 404, "Organization not found")


def test_malformed_token_payloads(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    as_list = jwt.api_jws.encode(b"[1, 2]", keyrunes.jwt_secret, algorithm="HS256")
    assert_shape_a(api.get("/api/me", token=as_list), 401, "Invalid or expired token")
    bad_groups = keyrunes.issue_token(keyrunes_user, groups=[1])
    assert_shape_a(api.get("/api/me", token=bad_groups), 401, "Invalid or expired token")
    int_sub = keyrunes.issue_token(keyrunes_user, sub=keyrunes_user.user_id)
    assert_shape_a(api.get("/api/me", token=int_sub), 401, "Invalid or expired token")
    text_sub = keyrunes.issue_token(keyrunes_user, sub="abc")
    # ``claims.sub.parse()?`` reports Rust's ParseIntError (src/services/user_service.rs:583).
    assert_shape_a(api.get("/api/me", token=text_sub), 401, "invalid digit found in string")
    # iss's value and a future iat are not checked by the server.
    odd = keyrunes.issue_token(keyrunes_user, iss="elsewhere", iat=int(time.time()) + 999)
    assert api.get("/api/me", token=odd).status_code == 200


def test_oversized_values(
    api: Api, admin_token: str, user_token: str, keyrunes: KeyrunesEmulator
) -> None:
    long_email = "a" * 251 + "@b.co"
    assert (
        "character varying(255)"
        in api.post("/api/register", json=register_payload(email=long_email)).json()["message"]
    )
    assert_plain(
        api.patch("/api/user/profile", token=user_token, json={"email": long_email}), 400, "(255)"
    )
    assert_plain(
        api.patch("/api/user/profile", token=user_token, json={"username": "u" * 51}), 400, "(50)"
    )
    policy = {
        "organization_id": 1,
        "name": "p",
        "resource": "r" * 256,
        "action": "a",
        "effect": "Allow",
    }
    assert_plain(api.post("/api/admin/policies", token=admin_token, json=policy), 400, "(255)")


def test_expired_reset_token(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    ns = keyrunes.state.namespace("public")
    token = keyrunes.state.create_reset_token(ns, keyrunes_user.user_id)
    for record in ns.reset_tokens.values():
        record.expires_at = record.expires_at.replace(year=2000)
    response = api.post(
        "/api/reset-password",
        json={"token": token, "new_password": "Long-Enough-1", "namespace": "public"},
    )
    assert_shape_a(response, 400, "invalid or expired reset token")
