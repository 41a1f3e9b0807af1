"""Contract tests over raw HTTP: organizations, org secrets, organization-key routes."""

from __future__ import annotations

import uuid

import pytest

from keyrunes_django.testing import EmulatedUser, KeyrunesEmulator, organization_payload
from tests.testing.conftest import Api, assert_plain, assert_shape_a

ORG_KEYS = {
    "organization_id",
    "external_id",
    "name",
    "description",
    "secret_key",
    "namespace",
    "base_url",
    "created_at",
    "updated_at",
}


def tenant_admin(keyrunes: KeyrunesEmulator, namespace: str = "acme") -> EmulatedUser:
    if keyrunes.state.organization_by_namespace(namespace) is None:
        keyrunes.create_organization(namespace.title(), namespace)
    return keyrunes.create_user(namespace=namespace, groups=("admin", "users"))


# -- organizations -----------------------------------------------------------


def test_create_and_list_organizations(api: Api, admin_token: str) -> None:
    created = api.post(
        "/api/admin/organizations",
        token=admin_token,
        json={"name": "Zeta", "namespace": "zeta", "description": "  ", "base_url": None},
    )
    assert created.status_code == 201
    body = created.json()
    assert set(body) == ORG_KEYS
    assert body["description"] is None
    assert uuid.UUID(body["secret_key"])
    api.post(
        "/api/admin/organizations", token=admin_token, json={"name": "Alpha", "namespace": "a"}
    )
    listed = api.get("/api/admin/organizations", token=admin_token).json()
    assert [o["name"] for o in listed] == ["Alpha", "Default Organization", "Zeta"]
    assert all("secret_key" in o for o in listed)
    groups = api.get(f"/api/admin/groups?org_id={body['organization_id']}", token=admin_token)
    assert [g["name"] for g in groups.json()] == ["admin", "users"]


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        ({"name": "Default Organization", "namespace": "x1"}, "organization already exists"),
        ({"name": "New", "namespace": "public"}, "organizations_namespace_key"),
        ({"name": "New", "namespace": "bad-name"}, "namespace must be alphanumeric"),
        ({"name": "New", "namespace": ""}, "zero-length delimited identifier"),
        ({"name": "New", "namespace": "n" * 64}, "character varying(63)"),
        ({"name": "N" * 101, "namespace": "ok"}, "character varying(100)"),
    ],
)
def test_create_organization_errors(
    api: Api, admin_token: str, payload: dict[str, str], text: str
) -> None:
    assert_plain(api.post("/api/admin/organizations", token=admin_token, json=payload), 400, text)


def test_organization_routes_need_global_superadmin(api: Api, keyrunes: KeyrunesEmulator) -> None:
    token = api.login_user(tenant_admin(keyrunes))
    create = api.post("/api/admin/organizations", token=token, json=organization_payload())
    assert_plain(create, 403, "Global Superadmin access required")
    delete = api.delete("/api/admin/organizations/1", token=token)
    assert_plain(delete, 403, "Global Superadmin access required")
    rotate = api.post("/api/admin/organizations/1/rotate-key", token=token)
    assert_plain(rotate, 403, "Superadmin access required")
    # A public user in a group named "admin" passes the gate but is no global superadmin.
    keyrunes.create_group("admin")
    public_admin = keyrunes.create_user(groups=("admin",))
    public_token = api.login_user(public_admin)
    assert_plain(
        api.post("/api/admin/organizations", token=public_token, json=organization_payload()),
        403,
        "Global Superadmin access required",
    )


def test_list_organizations_by_role(api: Api, keyrunes: KeyrunesEmulator, user_token: str) -> None:
    admin = tenant_admin(keyrunes)
    keyrunes.create_organization("Other", "other")
    own = api.get("/api/admin/organizations", token=api.login_user(admin))
    assert own.status_code == 200
    assert [o["namespace"] for o in own.json()] == ["acme"]
    denied = api.get("/api/admin/organizations", token=user_token)
    assert_plain(denied, 403, "Insufficient permissions")
    assert_shape_a(api.get("/api/admin/organizations"), 401, "Missing authorization header")
    keyrunes.delete_user(admin)
    gone = api.get("/api/admin/organizations", token=keyrunes.issue_token(admin))
    assert_plain(gone, 401, "User not found")


def test_delete_organization(api: Api, keyrunes: KeyrunesEmulator, admin_token: str) -> None:
    org = keyrunes.create_organization("Gone", "gone")
    member = keyrunes.create_user(namespace="gone")
    response = api.delete(f"/api/admin/organizations/{org.organization_id}", token=admin_token)
    assert response.status_code == 204
    assert keyrunes.get_organization(org.organization_id) is None
    login = api.post(
        "/api/login",
        json={"identity": member.email, "password": member.password, "namespace": "gone"},
    )
    assert login.status_code == 401
    assert api.delete("/api/admin/organizations/999", token=admin_token).status_code == 204
    assert_plain(api.delete("/api/admin/organizations/x", token=admin_token), 400, "Invalid URL")


def test_rotate_organization_key(api: Api, keyrunes: KeyrunesEmulator, admin_token: str) -> None:
    old = keyrunes.organization_key(1)
    response = api.post("/api/admin/organizations/1/rotate-key", token=admin_token)
    assert response.status_code == 200
    body = response.json()
    assert body["organization_id"] == 1
    assert body["message"] == "Key rotated successfully"
    assert body["secret_key"] != old
    assert keyrunes.organization_key(1) == body["secret_key"]
    refused = api.get("/api/verify-org-key", headers={"X-Organization-Key": old})
    assert_shape_a(refused, 401, "Invalid API Key")
    # Unknown organization: 200 with a key stored nowhere (server behaviour).
    ghost = api.post("/api/admin/organizations/999/rotate-key", token=admin_token)
    assert ghost.status_code == 200
    assert ghost.json()["organization_id"] == 999


# -- org secret --------------------------------------------------------------


def test_org_secret(api: Api, keyrunes: KeyrunesEmulator, admin_token: str) -> None:
    admin = tenant_admin(keyrunes)
    org = keyrunes.state.organization_by_namespace("acme")
    assert org is not None
    old_key = org.secret_key
    token = api.login_user(admin)
    secret = api.get("/api/org/secret", token=token)
    assert secret.json() == {"organization_id": org.organization_id, "secret_key": old_key}
    rotated = api.post("/api/org/secret/rotate", token=token)
    assert rotated.status_code == 200
    assert rotated.json()["secret_key"] == keyrunes.organization_key(org.organization_id)
    assert rotated.json()["secret_key"] != old_key
    superadmin = api.get("/api/org/secret", token=admin_token).json()
    assert superadmin["organization_id"] == 1


def test_org_secret_errors(api: Api, keyrunes: KeyrunesEmulator, user_token: str) -> None:
    assert_shape_a(
        api.get("/api/org/secret", token=user_token),
        403,
        "Insufficient permissions to view Organization Secret",
    )
    assert_shape_a(
        api.post("/api/org/secret/rotate", token=user_token),
        403,
        "Insufficient permissions to rotate Organization Secret",
    )
    admin = tenant_admin(keyrunes)
    token = api.login_user(admin)
    keyrunes.delete_user(admin)
    assert_shape_a(api.get("/api/org/secret", token=token), 401, "User not found")
    orphan = keyrunes.create_user(groups=("superadmin",), organization_id=77)
    assert_shape_a(
        api.get("/api/org/secret", token=api.login_user(orphan)), 404, "Organization not found"
    )


# -- organization-key gate ---------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("not-a-uuid", "Invalid API Key format (must be UUID)"),
        (str(uuid.uuid4()), "Invalid API Key"),
        ("caf\u00e9", "Invalid API Key format"),
    ],
)
def test_orgkey_gate_rejects(api: Api, key: str, message: str) -> None:
    response = api.get("/api/verify-org-key", headers={"X-Organization-Key": key.encode("latin-1")})  # type: ignore[dict-item]
    assert_shape_a(response, 401, message)


def test_orgkey_gate_needs_key_or_superadmin(api: Api, user_token: str) -> None:
    message = "Missing X-Organization-Key header or valid Superadmin token"
    assert_shape_a(api.get("/api/verify-org-key"), 401, message)
    assert_shape_a(api.get("/api/verify-org-key", token=user_token), 401, message)
    assert_shape_a(api.post("/api/check-permission", token="bad", json={}), 401, message)


def test_orgkey_header_decides_alone(api: Api, admin_token: str) -> None:
    response = api.get(
        "/api/verify-org-key", token=admin_token, headers={"X-Organization-Key": str(uuid.uuid4())}
    )
    assert_shape_a(response, 401, "Invalid API Key")


def test_verify_org_key_default(api: Api, keyrunes: KeyrunesEmulator, admin_token: str) -> None:
    key = keyrunes.organization_key(1)
    for form in (key, key.replace("-", ""), "{" + key + "}", "urn:uuid:" + key, key.upper()):
        response = api.get("/api/verify-org-key", headers={"X-Organization-Key": form})
        assert response.status_code == 200, form
        assert response.json() == {
            "status": "success",
            "organization": "Default Organization",
            "organization_id": 1,
        }
    org = keyrunes.create_organization("Acme", "acme")
    tenant = api.get("/api/verify-org-key", headers={"X-Organization-Key": org.secret_key})
    assert tenant.json()["organization_id"] == org.organization_id
    by_token = api.get("/api/verify-org-key", token=admin_token)
    assert by_token.json()["organization_id"] == 1


def test_verify_org_key_quirks(api: Api, keyrunes: KeyrunesEmulator) -> None:
    keyrunes.server_quirks = True
    response = api.get(
        "/api/verify-org-key", headers={"X-Organization-Key": keyrunes.organization_key(1)}
    )
    assert_plain(response, 500, "Missing request extension")
    invalid = api.get("/api/verify-org-key", headers={"X-Organization-Key": str(uuid.uuid4())})
    assert_shape_a(invalid, 401, "Invalid API Key")


# -- /api/check-permission ---------------------------------------------------


def test_check_permission_with_org_key(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    headers = {"X-Organization-Key": keyrunes.organization_key(1)}
    response = api.post(
        "/api/check-permission",
        headers=headers,
        json={"user_id": keyrunes_user.user_id, "resource": "user:7", "action": "read"},
    )
    assert response.status_code == 200
    assert response.json() == {
        "allowed": True,
        "user_id": keyrunes_user.user_id,
        "resource": "user:7",
        "action": "read",
    }
    denied = api.post(
        "/api/check-permission",
        headers=headers,
        json={"user_id": keyrunes_user.user_id, "resource": "docs", "action": "read"},
    )
    assert denied.json()["allowed"] is False
    unknown = api.post(
        "/api/check-permission",
        headers=headers,
        json={"user_id": 0, "resource": "r", "action": "a"},
    )
    assert_plain(unknown, 404, "User not found")
    strict = api.post(
        "/api/check-permission",
        headers=headers,
        json={"user_id": str(keyrunes_user.user_id), "resource": "r", "action": "a"},
    )
    assert_plain(strict, 422, "expected i64")


def test_check_permission_cross_organization(api: Api, keyrunes: KeyrunesEmulator) -> None:
    other = keyrunes.create_organization("Other", "other")
    # A public-namespace row that belongs to another organization.
    foreign = keyrunes.create_user(organization_id=other.organization_id)
    response = api.post(
        "/api/check-permission",
        headers={"X-Organization-Key": keyrunes.organization_key(1)},
        json={"user_id": foreign.user_id, "resource": "r", "action": "a"},
    )
    assert_plain(response, 403, "User does not belong to this organization")


def test_check_permission_uses_the_keys_namespace(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    org = keyrunes.create_organization("Acme", "acme")
    # No user 2 in acme: ids are per namespace.
    response = api.post(
        "/api/check-permission",
        headers={"X-Organization-Key": org.secret_key},
        json={"user_id": keyrunes_user.user_id, "resource": "r", "action": "a"},
    )
    assert_plain(response, 404, "User not found")


def test_check_permission_in_tenant_default_vs_quirks(api: Api, keyrunes: KeyrunesEmulator) -> None:
    org = keyrunes.create_organization("Acme", "acme")
    member = keyrunes.create_user(namespace="acme")
    keyrunes.create_policy("docs", "docs:*", "read", namespace="acme")
    keyrunes.attach_policy("docs", group="users", namespace="acme")
    body = {"user_id": member.user_id, "resource": "docs:1", "action": "read"}
    headers = {"X-Organization-Key": org.secret_key}
    assert api.post("/api/check-permission", headers=headers, json=body).json()["allowed"] is True
    keyrunes.server_quirks = True
    quirky = api.post("/api/check-permission", headers=headers, json=body)
    assert_plain(quirky, 500, 'relation "user_policies" does not exist')
    # The §12.4 probe still tells a valid key (404) from an invalid one (401).
    probe = api.post(
        "/api/check-permission",
        headers=headers,
        json={"user_id": 0, "resource": "r", "action": "a"},
    )
    assert probe.status_code == 404


def test_check_permission_superadmin_bypass(
    api: Api, keyrunes_superadmin: EmulatedUser, admin_token: str
) -> None:
    response = api.post(
        "/api/check-permission",
        token=admin_token,
        json={"user_id": keyrunes_superadmin.user_id, "resource": "x", "action": "y"},
    )
    assert response.status_code == 200
    assert response.json()["allowed"] is True


def test_expired_superadmin_token_on_orgkey_gate(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_superadmin: EmulatedUser
) -> None:
    expired = keyrunes.expired_token(keyrunes_superadmin)
    body = {"user_id": keyrunes_superadmin.user_id, "resource": "x", "action": "y"}
    assert api.post("/api/check-permission", token=expired, json=body).status_code == 401
    keyrunes.server_quirks = True
    assert api.post("/api/check-permission", token=expired, json=body).status_code == 200
