"""The server's own end-to-end flows (hurl files, contract §9), replayed over raw HTTP."""

from __future__ import annotations

import re

from keyrunes_django.testing import (
    KeyrunesEmulator,
    organization_payload,
    register_payload,
    strong_password,
    unique_username,
    user_payload,
)
from tests.testing.conftest import Api, assert_plain


def test_user_lifecycle(api: Api) -> None:
    payload = register_payload()
    registered = api.post("/api/register", json=payload)
    assert registered.status_code == 201
    user_id = registered.json()["user"]["user_id"]
    token = api.login(payload["email"], payload["password"])
    me = api.get("/api/me", token=token).json()
    assert me["user_id"] == user_id
    assert me["username"] == payload["username"]


def test_group_management(api: Api, admin_token: str) -> None:
    member = register_payload()
    member_id = api.post("/api/register", json=member).json()["user"]["user_id"]
    group_name = unique_username("group")
    group = api.post(
        "/api/admin/groups", token=admin_token, json={"organization_id": 1, "name": group_name}
    )
    assert group.status_code == 201
    group_id = group.json()["group_id"]
    assigned = api.post(f"/api/admin/users/{member_id}/groups/{group_id}", token=admin_token)
    assert assigned.status_code == 200
    token = api.login(member["username"], member["password"])
    assert group_name in api.get("/api/me", token=token).json()["groups"]


def test_complete_org_flow(api: Api, admin_token: str) -> None:
    doomed = api.post("/api/admin/organizations", token=admin_token, json=organization_payload())
    assert doomed.status_code == 201
    deleted = api.delete(
        f"/api/admin/organizations/{doomed.json()['organization_id']}", token=admin_token
    )
    assert deleted.status_code == 204

    org = api.post("/api/admin/organizations", token=admin_token, json=organization_payload())
    org_id, namespace = org.json()["organization_id"], org.json()["namespace"]
    marketing = api.post(
        "/api/admin/groups",
        token=admin_token,
        json={"organization_id": org_id, "name": "marketing"},
    )
    assert marketing.status_code == 201

    first = register_payload(namespace=namespace, organization_id=org_id)
    registered = api.post("/api/register", json=first)
    assert registered.status_code == 201
    assert registered.json()["user"]["organization_id"] == org_id
    tenant_token = api.login(first["email"], first["password"], namespace)

    team = api.post(
        "/api/admin/groups", token=tenant_token, json={"organization_id": org_id, "name": "team"}
    )
    assert team.status_code == 201
    member = user_payload(organization_id=org_id, groups=["users"])
    created = api.post("/api/admin/user", token=tenant_token, json=member)
    assert created.status_code == 201
    assert "users" in created.json()["groups"]
    assigned = api.post(
        f"/api/admin/users/{created.json()['user_id']}/groups/{team.json()['group_id']}"
        f"?org_id={org_id}",
        token=tenant_token,
    )
    assert assigned.status_code == 200

    login = api.post(
        "/api/login",
        json={
            "identity": member["username"],
            "password": member["password"],
            "namespace": namespace,
        },
    )
    assert {"users", "team"} <= set(login.json()["user"]["groups"])
    me = api.get("/api/me", token=login.json()["token"]).json()
    assert me["user_id"] == created.json()["user_id"]
    assert me["username"] == member["username"]
    assert me["organization_id"] == org_id


def test_org_isolation(api: Api, keyrunes: KeyrunesEmulator, admin_token: str) -> None:
    org_a = api.post("/api/admin/organizations", token=admin_token, json=organization_payload())
    org_b = api.post("/api/admin/organizations", token=admin_token, json=organization_payload())
    users = {}
    for org in (org_a.json(), org_b.json()):
        created = api.post(
            "/api/admin/user",
            token=admin_token,
            json=user_payload(organization_id=org["organization_id"], first_login=False),
        )
        assert created.status_code == 201
        assert created.json()["organization_id"] == org["organization_id"]
        users[org["namespace"]] = created.json()
    # Both users have id 1 in their own namespace, and neither organization sees the other.
    assert {u["user_id"] for u in users.values()} == {1}
    for org, other in ((org_a.json(), org_b.json()), (org_b.json(), org_a.json())):
        listed = api.get(f"/api/admin/users?org_id={org['organization_id']}", token=admin_token)
        assert [u["email"] for u in listed.json()] == [users[org["namespace"]]["email"]]
        check = api.post(
            "/api/check-permission",
            headers={"X-Organization-Key": org["secret_key"]},
            json={"user_id": 1, "resource": "x", "action": "y"},
        )
        assert check.status_code == 200
        tenant = keyrunes.create_user(namespace=org["namespace"], groups=("admin",))
        denied = api.get(
            f"/api/admin/users?org_id={other['organization_id']}", token=api.login_user(tenant)
        )
        assert denied.json() == {"error": "Access denied"}


def test_org_key_management(api: Api, keyrunes: KeyrunesEmulator, admin_token: str) -> None:
    keyrunes.create_organization("Zulu", "zulu")
    listed = api.get("/api/admin/organizations", token=admin_token).json()
    first_id, old_key = listed[0]["organization_id"], listed[0]["secret_key"]
    rotated = api.post(f"/api/admin/organizations/{first_id}/rotate-key", token=admin_token)
    assert rotated.status_code == 200
    new_key = rotated.json()["secret_key"]
    assert new_key != old_key
    again = api.get("/api/admin/organizations", token=admin_token).json()
    assert again[0]["secret_key"] == new_key
    # Stricter than the hurl file: the old key is refused at once.
    old = api.get("/api/verify-org-key", headers={"X-Organization-Key": old_key})
    assert old.status_code == 401
    assert (
        api.get("/api/verify-org-key", headers={"X-Organization-Key": new_key}).status_code == 200
    )


def test_superadmin_bypass(api: Api, admin_token: str) -> None:
    me = api.get("/api/me", token=admin_token).json()
    response = api.post(
        "/api/check-permission",
        token=admin_token,
        json={"user_id": me["user_id"], "resource": "user:1", "action": "read"},
    )
    assert response.status_code == 200
    assert "allowed" in response.json()


def test_reproduce_visibility_issue(api: Api, admin_token: str) -> None:
    org = api.post(
        "/api/admin/organizations", token=admin_token, json=organization_payload()
    ).json()
    member = user_payload(organization_id=org["organization_id"], first_login=False)
    created = api.post("/api/admin/user", token=admin_token, json=member).json()
    groups = api.get(f"/api/admin/groups?org_id={org['organization_id']}", token=admin_token).json()
    admin_group = next(g for g in groups if g["name"] == "admin")
    api.post(
        f"/api/admin/users/{created['user_id']}/groups/{admin_group['group_id']}"
        f"?org_id={org['organization_id']}",
        token=admin_token,
    )
    token = api.login(member["email"], member["password"], org["namespace"])
    visible = api.get("/api/admin/organizations", token=token).json()
    assert [o["organization_id"] for o in visible] == [org["organization_id"]]


def test_security_restrictions(api: Api, keyrunes: KeyrunesEmulator, admin_token: str) -> None:
    org = api.post(
        "/api/admin/organizations", token=admin_token, json=organization_payload()
    ).json()
    tenant = keyrunes.create_user(namespace=org["namespace"], groups=("admin", "users"))
    regular = keyrunes.create_user(namespace=org["namespace"])
    tenant_token, regular_token = api.login_user(tenant), api.login_user(regular)
    create = api.post("/api/admin/organizations", token=tenant_token, json=organization_payload())
    assert_plain(create, 403, "Global Superadmin access required")
    delete = api.delete(f"/api/admin/organizations/{org['organization_id']}", token=tenant_token)
    assert_plain(delete, 403, "Global Superadmin access required")
    users = api.get(f"/api/admin/users?org_id={org['organization_id']}", token=regular_token)
    assert users.status_code == 403
    assert "Superadmin or Admin access required" in users.text


def test_user_management(api: Api, admin_token: str) -> None:
    payload = user_payload(organization_id=1, first_login=False)
    created = api.post("/api/admin/user", token=admin_token, json=payload)
    assert created.status_code == 201
    user_id = created.json()["user_id"]
    new_name = unique_username("renamed")
    patched = api.patch(
        f"/api/admin/users/{user_id}?org_id=1",
        token=admin_token,
        json={"first_login": True, "username": new_name},
    )
    assert patched.json()["first_login"] is True
    assert patched.json()["username"] == new_name
    temporary = api.post(
        f"/api/admin/users/{user_id}/reset-password?org_id=1", token=admin_token
    ).json()["temporary_password"]
    login = api.post(
        "/api/login", json={"identity": new_name, "password": temporary, "namespace": "public"}
    )
    assert login.json()["requires_password_change"] is True
    new_password = strong_password()
    changed = api.post(
        "/api/user/change-password",
        token=login.json()["token"],
        json={"current_password": temporary, "new_password": new_password},
    )
    assert changed.status_code == 200
    relogin = api.post(
        "/api/login", json={"identity": new_name, "password": new_password, "namespace": "public"}
    )
    assert relogin.json()["requires_password_change"] is False
    profile_name = unique_username("profile")
    profile = api.patch(
        "/api/user/profile", token=relogin.json()["token"], json={"username": profile_name}
    )
    assert profile.json()["username"] == profile_name
    sent = api.post(f"/api/admin/users/{user_id}/send-reset?org_id=1", token=admin_token)
    assert sent.json()["message"] == "Reset email sent"


def test_user_deletion(api: Api) -> None:
    payload = register_payload(username="todelete_global_v2")
    user_id = api.post("/api/register", json=payload).json()["user"]["user_id"]
    admin_token = api.login("admin", "Admin123")
    assert api.delete(f"/api/admin/users/{user_id}", token=admin_token).status_code == 204
    gone = api.post(
        "/api/login",
        json={
            "identity": payload["username"],
            "password": payload["password"],
            "namespace": "public",
        },
    )
    assert gone.status_code == 401
    me = api.get("/api/me", token=admin_token).json()
    myself = api.delete(f"/api/admin/users/{me['user_id']}", token=admin_token)
    assert myself.status_code == 400
    assert "Cannot delete yourself" in myself.text


def test_e2e_flow(api: Api) -> None:
    payload = register_payload(username="hurl_user_v7")
    api.post("/api/register", json=payload)
    token = api.login(payload["username"], payload["password"])
    api.patch(
        "/api/user/profile",
        token=token,
        json={"username": "hurl_user_v7b", "email": "v7b@example.com"},
    )
    me = api.get("/api/me", token=token).json()  # the original token
    assert (me["username"], me["email"]) == ("hurl_user_v7b", "v7b@example.com")
    rotate = api.post("/api/org/secret/rotate", token=token)
    assert rotate.status_code == 403
    assert "Insufficient permissions" in rotate.text
    forgot = api.post(
        "/api/forgot-password", json={"email": "v7b@example.com", "namespace": "public"}
    )
    match = re.search(r"forgot_password=([a-zA-Z0-9-]+)", forgot.json()["reset_url"])
    assert match is not None
    reset = api.post(
        "/api/reset-password",
        json={"token": match.group(1), "new_password": "Reset-Pass-9", "namespace": "public"},
    )
    assert reset.status_code == 200
    api.login("hurl_user_v7b", "Reset-Pass-9")
