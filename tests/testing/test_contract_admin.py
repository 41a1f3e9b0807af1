"""Contract tests over raw HTTP: the admin API (users, groups, policies, checks, dashboard)."""

from __future__ import annotations

import pytest

from keyrunes_django.testing import (
    EmulatedUser,
    KeyrunesEmulator,
    group_payload,
    policy_payload,
    user_payload,
)
from tests.testing.conftest import Api, assert_plain, assert_shape_a

ADMIN_ROUTES = [
    ("GET", "/api/admin/users"),
    ("POST", "/api/admin/user"),
    ("PATCH", "/api/admin/users/1"),
    ("DELETE", "/api/admin/users/1"),
    ("POST", "/api/admin/users/1/reset-password"),
    ("POST", "/api/admin/users/1/send-reset"),
    ("GET", "/api/admin/groups"),
    ("POST", "/api/admin/groups"),
    ("GET", "/api/admin/policies"),
    ("POST", "/api/admin/policies"),
    ("POST", "/api/admin/users/1/groups/1"),
    ("DELETE", "/api/admin/users/1/groups/1"),
    ("POST", "/api/admin/check-permission"),
    ("GET", "/api/admin/dashboard"),
    ("POST", "/api/admin/organizations"),
    ("DELETE", "/api/admin/organizations/1"),
    ("POST", "/api/admin/organizations/1/rotate-key"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_gate(api: Api, user_token: str, method: str, path: str) -> None:
    assert_shape_a(api.call(method, path), 401, "Missing authorization header")
    assert_shape_a(api.call(method, path, token="x.y.z"), 401, "Invalid or expired token")
    assert_shape_a(
        api.call(method, path, token=user_token, json={}),
        403,
        "Superadmin or Admin access required",
    )


# -- users -------------------------------------------------------------------


def test_list_users(api: Api, keyrunes: KeyrunesEmulator, admin_token: str) -> None:
    first = keyrunes.create_user()
    second = keyrunes.create_user()
    response = api.get("/api/admin/users", token=admin_token)
    assert response.status_code == 200
    users = response.json()
    assert [u["user_id"] for u in users[:2]] == [second.user_id, first.user_id]  # newest first
    assert set(users[0]) == {
        "user_id",
        "external_id",
        "email",
        "username",
        "first_login",
        "groups",
        "created_at",
    }
    assert users[0]["created_at"].endswith("Z")
    assert api.get("/api/admin/users?org_id=1", token=admin_token).json() == users


def test_scope_errors_are_shape_c(api: Api, keyrunes: KeyrunesEmulator, admin_token: str) -> None:
    unknown = api.get("/api/admin/users?org_id=99", token=admin_token)
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Organization 99 not found"}
    bad_query = api.get("/api/admin/users?org_id=abc", token=admin_token)
    assert_plain(bad_query, 400, "Failed to deserialize query string")
    acme = keyrunes.create_organization("Acme", "acme")
    beta = keyrunes.create_organization("Beta", "beta")
    tenant_admin = keyrunes.create_user(namespace="acme", groups=("admin", "users"))
    token = api.login_user(tenant_admin)
    denied = api.get(f"/api/admin/users?org_id={beta.organization_id}", token=token)
    assert denied.status_code == 403
    assert denied.json() == {"error": "Access denied"}
    denied_public = api.get("/api/admin/groups", token=token)  # default org 1
    assert denied_public.json() == {"error": "Access denied"}
    own = api.get(f"/api/admin/users?org_id={acme.organization_id}", token=token)
    assert [u["user_id"] for u in own.json()] == [tenant_admin.user_id]


def test_create_user(api: Api, keyrunes: KeyrunesEmulator, admin_token: str) -> None:
    payload = user_payload(organization_id=1)
    response = api.post("/api/admin/user", token=admin_token, json=payload)
    assert response.status_code == 201
    body = response.json()
    assert body["groups"] == ["users"]
    assert body["first_login"] is True
    assert body["namespace"] == "public"
    login = api.post(
        "/api/login",
        json={"identity": payload["email"], "password": payload["password"], "namespace": "public"},
    )
    assert login.json()["requires_password_change"] is True
    explicit = api.post(
        "/api/admin/user",
        token=admin_token,
        json=user_payload(organization_id="1", groups=["superadmin"], first_login=False),
    )
    assert explicit.status_code == 201
    assert explicit.json()["groups"] == ["superadmin"]
    assert explicit.json()["first_login"] is False


def test_create_user_errors(api: Api, keyrunes_user: EmulatedUser, admin_token: str) -> None:
    bad_email = api.post(
        "/api/admin/user", token=admin_token, json=user_payload(organization_id=1, email="nope")
    )
    assert_plain(bad_email, 422, "invalid email")
    short = api.post(
        "/api/admin/user", token=admin_token, json=user_payload(organization_id=1, password="abc")
    )
    assert_plain(short, 422, "password too short")
    missing_org = api.post("/api/admin/user", token=admin_token, json=user_payload())
    assert_plain(missing_org, 422, "missing field `organization_id`")
    string_bool = api.post(
        "/api/admin/user",
        token=admin_token,
        json=user_payload(organization_id=1, first_login="true"),
    )
    assert string_bool.status_code == 422
    duplicate = api.post(
        "/api/admin/user",
        token=admin_token,
        json=user_payload(organization_id=1, email=keyrunes_user.email),
    )
    assert_plain(duplicate, 400, "email already registered")
    taken = api.post(
        "/api/admin/user",
        token=admin_token,
        json=user_payload(organization_id=1, username=keyrunes_user.username),
    )
    assert_plain(taken, 400, "username taken")
    bad_group = api.post(
        "/api/admin/user", token=admin_token, json=user_payload(organization_id=1, groups=["x"])
    )
    assert_plain(bad_group, 400, "invalid group specified: `x`")
    no_org = api.post("/api/admin/user", token=admin_token, json=user_payload(organization_id=42))
    assert no_org.json() == {"error": "Organization 42 not found"}


def test_update_user(api: Api, keyrunes_user: EmulatedUser, admin_token: str) -> None:
    path = f"/api/admin/users/{keyrunes_user.user_id}?org_id=1"
    response = api.patch(path, token=admin_token, json={"first_login": True, "username": "newname"})
    assert response.status_code == 200
    assert response.json()["first_login"] is True
    assert response.json()["username"] == "newname"
    assert_plain(api.patch(path, token=admin_token, json={"email": "bad"}), 400, "invalid email")
    assert_plain(
        api.patch("/api/admin/users/999", token=admin_token, json={}), 400, "User not found"
    )
    assert_plain(
        api.patch("/api/admin/users/abc", token=admin_token, json={}),
        400,
        "Invalid URL: Cannot parse `abc` to a `i64`",
    )
    assert api.patch(path, token=admin_token, json={"first_login": "yes"}).status_code == 422


def test_delete_user(
    api: Api,
    keyrunes: KeyrunesEmulator,
    keyrunes_user: EmulatedUser,
    keyrunes_superadmin: EmulatedUser,
    admin_token: str,
) -> None:
    response = api.delete(f"/api/admin/users/{keyrunes_user.user_id}", token=admin_token)
    assert response.status_code == 204
    assert response.content == b""
    assert keyrunes.get_user(keyrunes_user.user_id) is None
    # Unknown ids answer 204 too (server behaviour).
    assert api.delete("/api/admin/users/999", token=admin_token).status_code == 204
    myself = api.delete(f"/api/admin/users/{keyrunes_superadmin.user_id}", token=admin_token)
    assert_plain(myself, 400, "Cannot delete yourself")


def test_delete_user_acts_in_callers_namespace(api: Api, keyrunes: KeyrunesEmulator) -> None:
    keyrunes.create_organization("Acme", "acme")
    tenant_admin = keyrunes.create_user(namespace="acme", groups=("admin", "users"))
    victim = keyrunes.create_user(namespace="acme")
    public_user = keyrunes.get_user(victim.user_id, "public")
    token = api.login_user(tenant_admin)
    # org_id is ignored; the tenant admin's namespace decides.
    response = api.delete(f"/api/admin/users/{victim.user_id}?org_id=1", token=token)
    assert response.status_code == 204
    assert keyrunes.get_user(victim.user_id, "acme") is None
    assert keyrunes.get_user(victim.user_id, "public") == public_user


def test_admin_reset_password_and_send_reset(
    api: Api, keyrunes_user: EmulatedUser, admin_token: str
) -> None:
    reset = api.post(
        f"/api/admin/users/{keyrunes_user.user_id}/reset-password?org_id=1", token=admin_token
    )
    assert reset.status_code == 200
    temporary = reset.json()["temporary_password"]
    assert len(temporary) == 12
    login = api.post(
        "/api/login",
        json={"identity": keyrunes_user.email, "password": temporary, "namespace": "public"},
    )
    assert login.json()["requires_password_change"] is True
    unknown = api.post("/api/admin/users/999/reset-password", token=admin_token)
    assert unknown.status_code == 200
    sent = api.post(f"/api/admin/users/{keyrunes_user.user_id}/send-reset", token=admin_token)
    assert sent.json() == {"message": "Reset email sent"}
    assert_plain(
        api.post("/api/admin/users/999/send-reset", token=admin_token), 404, "User not found"
    )


# -- groups ------------------------------------------------------------------


def test_groups(api: Api, keyrunes: KeyrunesEmulator, admin_token: str) -> None:
    listed = api.get("/api/admin/groups", token=admin_token).json()
    assert [g["name"] for g in listed] == ["superadmin", "users"]
    assert set(listed[0]) == {
        "group_id",
        "external_id",
        "organization_id",
        "name",
        "description",
        "created_at",
        "updated_at",
    }
    created = api.post(
        "/api/admin/groups",
        token=admin_token,
        json={"organization_id": "1", "name": "developers", "description": "Dev team"},
    )
    assert created.status_code == 201
    assert created.json()["group_id"] == 3
    assert created.json()["description"] == "Dev team"
    names = [g["name"] for g in api.get("/api/admin/groups?org_id=1", token=admin_token).json()]
    assert names == ["developers", "superadmin", "users"]
    duplicate = api.post(
        "/api/admin/groups", token=admin_token, json={"organization_id": 1, "name": "developers"}
    )
    assert_plain(duplicate, 400, "group name already exists")
    missing = api.post("/api/admin/groups", token=admin_token, json={"organization_id": 1})
    assert missing.status_code == 422
    too_long = api.post(
        "/api/admin/groups", token=admin_token, json={"organization_id": 1, "name": "g" * 101}
    )
    assert_plain(too_long, 400, "character varying(100)")


def test_tenant_groups(api: Api, keyrunes: KeyrunesEmulator, admin_token: str) -> None:
    org = keyrunes.create_organization("Acme", "acme")
    groups = api.get(f"/api/admin/groups?org_id={org.organization_id}", token=admin_token).json()
    assert [(g["group_id"], g["name"]) for g in groups] == [(1, "admin"), (2, "users")]
    created = api.post(
        "/api/admin/groups", token=admin_token, json=group_payload(org.organization_id)
    )
    assert created.json()["organization_id"] == org.organization_id
    assert created.json()["group_id"] == 3


def test_membership_routes(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, admin_token: str
) -> None:
    group = keyrunes.create_group("developers")
    path = f"/api/admin/users/{keyrunes_user.user_id}/groups/{group.group_id}"
    for _ in range(2):  # idempotent
        added = api.post(path, token=admin_token)
        assert added.status_code == 200
        assert added.json() == {"message": "User assigned to group successfully"}
    assert keyrunes.user_groups(keyrunes_user) == ("users", "developers")
    for _ in range(2):
        removed = api.delete(path + "?org_id=1", token=admin_token)
        assert removed.json() == {"message": "User removed from group successfully"}
    assert keyrunes.user_groups(keyrunes_user) == ("users",)
    no_group = api.post(f"/api/admin/users/{keyrunes_user.user_id}/groups/99", token=admin_token)
    assert_plain(no_group, 400, "group not found")
    no_user = api.post(f"/api/admin/users/999/groups/{group.group_id}", token=admin_token)
    assert_plain(no_user, 400, "foreign key constraint")


# -- policies ----------------------------------------------------------------


def test_policies(api: Api, admin_token: str) -> None:
    seeded = api.get("/api/admin/policies", token=admin_token).json()
    assert [p["name"] for p in seeded] == ["full_access", "read_only", "user_self_manage"]
    assert seeded[0]["resource"] == "*"
    assert seeded[0]["effect"] == "Allow"
    created = api.post(
        "/api/admin/policies",
        token=admin_token,
        json=policy_payload(name="docs_deny", effect="Deny", conditions={"ip": "10/8"}),
    )
    assert created.status_code == 201
    body = created.json()
    assert body["effect"] == "Deny"
    assert body["conditions"] == {"ip": "10/8"}
    assert body["policy_id"] == 4


@pytest.mark.parametrize(
    ("override", "status", "text"),
    [
        ({"effect": "ALLOW"}, 422, "unknown variant `ALLOW`"),
        ({"effect": 1}, 400, "effect: expected value at line 1 column"),
        ({"organization_id": "1"}, 422, "expected i64"),
        ({"resource": ""}, 400, "resource cannot be empty"),
        ({"action": ""}, 400, "action cannot be empty"),
        ({"name": "full_access"}, 400, "policy name already exists"),
    ],
)
def test_policy_errors(
    api: Api, admin_token: str, override: dict[str, object], status: int, text: str
) -> None:
    response = api.post("/api/admin/policies", token=admin_token, json=policy_payload(**override))
    assert_plain(response, status, text)


# -- admin check-permission --------------------------------------------------


def test_admin_check_permission(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, admin_token: str
) -> None:
    def check(resource: str, action: str, user_id: object = keyrunes_user.user_id) -> bool:
        response = api.post(
            "/api/admin/check-permission",
            token=admin_token,
            json={
                "user_id": user_id,
                "group_name": "ignored",
                "resource": resource,
                "action": action,
            },
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["group_name"] == "ignored"
        assert body["resource"] == resource
        result: bool = body["has_permission"]
        return result

    assert check("user:42", "read") is True  # read_only via users
    assert check("user:42", "write") is False
    assert check("user:self", "delete", str(keyrunes_user.user_id)) is True
    keyrunes.create_policy("deny_self_delete", "user:self", "delete", "Deny")
    keyrunes.attach_policy("deny_self_delete", user=keyrunes_user)
    assert check("user:self", "delete") is False
    assert check("anything", "at-all", 1) is True  # superadmin's full_access
    assert check("anything", "read", 999) is False
    missing = api.post(
        "/api/admin/check-permission",
        token=admin_token,
        json={"user_id": 1, "resource": "r", "action": "a"},
    )
    assert_plain(missing, 422, "missing field `group_name`")


def test_tenant_admin_check_permission_default_vs_quirks(
    api: Api, keyrunes: KeyrunesEmulator
) -> None:
    keyrunes.create_organization("Acme", "acme")
    tenant_admin = keyrunes.create_user(namespace="acme", groups=("admin", "users"))
    keyrunes.create_policy("docs", "docs:*", "read", namespace="acme")
    keyrunes.attach_policy("docs", group="users", namespace="acme")
    token = api.login_user(tenant_admin)
    body = {
        "user_id": tenant_admin.user_id,
        "group_name": "",
        "resource": "docs:1",
        "action": "read",
    }
    response = api.post("/api/admin/check-permission", token=token, json=body)
    assert response.json()["has_permission"] is True
    keyrunes.server_quirks = True
    quirky = api.post("/api/admin/check-permission", token=token, json=body)
    assert_plain(quirky, 500, 'relation "user_policies" does not exist')


# -- dashboard ---------------------------------------------------------------


def test_dashboard(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_superadmin: EmulatedUser, admin_token: str
) -> None:
    keyrunes.create_user()
    keyrunes.create_organization("Acme", "acme")
    keyrunes.create_user(namespace="acme")  # tenants are not counted
    body = api.get("/api/admin/dashboard", token=admin_token).json()
    assert body["total_users"] == 2
    assert body["total_groups"] == 2
    assert body["total_policies"] == 3
    assert body["current_admin"] == {
        "user_id": keyrunes_superadmin.user_id,
        "username": "admin",
        "email": "admin@example.com",
        "groups": ["superadmin", "users"],
    }
    tenant_admin = keyrunes.create_user(namespace="acme", groups=("admin",))
    denied = api.get("/api/admin/dashboard", token=api.login_user(tenant_admin))
    assert_plain(denied, 403, "Superadmin access required")
