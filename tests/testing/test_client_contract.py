"""The emulator driven through KeyrunesClient, one route at a time."""

from __future__ import annotations

import uuid

import pytest

from keyrunes_django.client import KeyrunesClient, VerifyOrgKeyDefect, get_client
from keyrunes_django.exceptions import (
    AuthenticationFailed,
    KeyrunesHTTPError,
    KeyrunesProtocolError,
    KeyrunesUnavailable,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from keyrunes_django.testing import (
    EmulatedUser,
    KeyrunesEmulator,
    strong_password,
    unique_email,
    unique_namespace,
    unique_username,
)


@pytest.fixture
def client(keyrunes: KeyrunesEmulator) -> KeyrunesClient:
    return get_client()


@pytest.fixture
def admin(client: KeyrunesClient, keyrunes_superadmin: EmulatedUser) -> str:
    assert keyrunes_superadmin.password is not None
    return client.login(keyrunes_superadmin.username, keyrunes_superadmin.password).token


def test_client_points_at_the_emulator(client: KeyrunesClient, keyrunes: KeyrunesEmulator) -> None:
    assert client.base_url.rstrip("/") == keyrunes.base_url


def test_health(client: KeyrunesClient) -> None:
    assert client.health().healthy
    assert client.health_ready().ready
    assert client.health_live().alive


def test_register_login_me_refresh(client: KeyrunesClient, keyrunes: KeyrunesEmulator) -> None:
    username, password = unique_username(), strong_password()
    registered = client.register(
        email=unique_email(), username=username, password=password, namespace="public"
    )
    assert registered.user.groups == ["users"]
    assert registered.requires_password_change is False
    login = client.login(username, password)
    assert login.user.user_id == registered.user.user_id
    me = client.me(login.token)
    assert me.username == username
    assert me.to_identity().user_id == registered.user.user_id
    refreshed = client.refresh_token(login.token)
    assert client.me(refreshed.token).user_id == me.user_id
    with pytest.raises(AuthenticationFailed) as excinfo:
        client.login(username, "wrong-password")
    assert excinfo.value.message == "invalid credentials"
    with pytest.raises(ValidationFailed, match="username taken"):
        client.register(
            email=unique_email(), username=username, password=password, namespace="public"
        )
    with pytest.raises(ValidationFailed, match="password too short"):
        client.register(
            email=unique_email(), username=unique_username(), password="short", namespace="public"
        )


def test_me_errors(
    client: KeyrunesClient, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    with pytest.raises(AuthenticationFailed, match="Invalid or expired token"):
        client.me("not.a.token")
    expired = keyrunes.expired_token(keyrunes_user)
    with pytest.raises(AuthenticationFailed):
        client.refresh_token(expired)
    keyrunes.server_quirks = True
    assert client.refresh_token(expired).token


def test_profile_and_passwords(client: KeyrunesClient, keyrunes_user: EmulatedUser) -> None:
    assert keyrunes_user.password is not None
    token = client.login(keyrunes_user.email, keyrunes_user.password).token
    new_name = unique_username()
    assert client.update_profile(token, username=new_name).username == new_name
    with pytest.raises(ValidationFailed, match="invalid email"):
        client.update_profile(token, email="broken")
    new_password = strong_password()
    client.change_password(token, keyrunes_user.password, new_password)
    with pytest.raises(ValidationFailed, match="Invalid current password"):
        client.change_password(token, keyrunes_user.password, strong_password())
    forgot = client.forgot_password(keyrunes_user.email)
    assert forgot.reset_token is not None
    final = strong_password()
    assert client.reset_password(forgot.reset_token, final).message == (
        "Password reset successfully"
    )
    assert client.login(new_name, final).user.user_id == keyrunes_user.user_id
    with pytest.raises(ValidationFailed, match="email not found"):
        client.forgot_password("nobody@example.com")


def test_org_secret(
    client: KeyrunesClient, keyrunes: KeyrunesEmulator, admin: str, keyrunes_user: EmulatedUser
) -> None:
    secret = client.org_secret(admin)
    assert (secret.organization_id, secret.secret_key) == (1, keyrunes.organization_key(1))
    rotated = client.rotate_org_secret(admin)
    assert rotated.secret_key == keyrunes.organization_key(1)
    assert keyrunes_user.password is not None
    user_token = client.login(keyrunes_user.email, keyrunes_user.password).token
    with pytest.raises(PermissionDenied):
        client.org_secret(user_token)


def test_verify_org_key_both_modes(client: KeyrunesClient, keyrunes: KeyrunesEmulator) -> None:
    verified = client.verify_org_key()
    assert verified.organization_id == 1
    with pytest.raises(AuthenticationFailed, match="Invalid API Key"):
        client.verify_org_key(str(uuid.uuid4()))
    keyrunes.server_quirks = True
    with pytest.raises(VerifyOrgKeyDefect):
        client.verify_org_key()


def test_check_permission(
    client: KeyrunesClient,
    keyrunes: KeyrunesEmulator,
    admin: str,
    keyrunes_user: EmulatedUser,
    keyrunes_superadmin: EmulatedUser,
) -> None:
    assert client.check_permission(keyrunes_user.user_id, "user:1", "read").allowed is True
    assert client.check_permission(keyrunes_user.user_id, "docs", "read").allowed is False
    assert client.check_permission(keyrunes_superadmin.user_id, "x", "y", token=admin).allowed
    with pytest.raises(NotFound, match="User not found"):
        client.check_permission(0, "x", "y")
    other = keyrunes.create_organization("Other", unique_namespace())
    foreign = keyrunes.create_user(organization_id=other.organization_id)
    with pytest.raises(PermissionDenied, match="does not belong"):
        client.check_permission(foreign.user_id, "x", "y")
    with pytest.raises(AuthenticationFailed):
        client.check_permission(keyrunes_user.user_id, "x", "y", org_key=str(uuid.uuid4()))
    checked = client.admin_check_permission(admin, keyrunes_user.user_id, "user:9", "read")
    assert checked.has_permission is True


def test_tenant_policy_check_quirks(client: KeyrunesClient, keyrunes: KeyrunesEmulator) -> None:
    org = keyrunes.create_organization("Acme", unique_namespace())
    member = keyrunes.create_user(namespace=org.namespace)
    assert (
        client.check_permission(member.user_id, "x", "y", org_key=org.secret_key).allowed is False
    )
    keyrunes.server_quirks = True
    with pytest.raises(KeyrunesUnavailable):
        client.check_permission(member.user_id, "x", "y", org_key=org.secret_key)


def test_admin_users(client: KeyrunesClient, keyrunes: KeyrunesEmulator, admin: str) -> None:
    created = client.create_user(
        admin,
        organization_id=1,
        email=unique_email(),
        username=unique_username(),
        password=strong_password(),
        groups=["users"],
        first_login=False,
    )
    assert created.groups == ["users"]
    assert created.user_id in {u.user_id for u in client.list_users(admin)}
    updated = client.update_user(admin, created.user_id, org_id=1, first_login=True)
    assert updated.first_login is True
    temporary = client.reset_user_password(admin, created.user_id, org_id=1)
    assert client.login(created.email, temporary.temporary_password).requires_password_change
    assert client.send_password_reset(admin, created.user_id).message == "Reset email sent"
    with pytest.raises(NotFound):
        client.send_password_reset(admin, 999)
    client.delete_user(admin, created.user_id)
    assert keyrunes.get_user(created.user_id) is None
    with pytest.raises(ValidationFailed, match="Cannot delete yourself"):
        client.delete_user(admin, 1)
    with pytest.raises(ValidationFailed, match="invalid email"):
        client.create_user(
            admin,
            organization_id=1,
            email="bad",
            username=unique_username(),
            password=strong_password(),
        )
    with pytest.raises(NotFound, match="Organization 77 not found"):
        client.list_users(admin, org_id=77)


def test_admin_groups_policies_membership(
    client: KeyrunesClient, keyrunes: KeyrunesEmulator, admin: str, keyrunes_user: EmulatedUser
) -> None:
    group = client.create_group(admin, organization_id=1, name="devs", description="Dev team")
    assert group.name in [g.name for g in client.list_groups(admin)]
    with pytest.raises(ValidationFailed, match="group name already exists"):
        client.create_group(admin, organization_id=1, name="devs")
    policy = client.create_policy(
        admin, organization_id=1, name="docs", resource="docs:*", action="read", effect="Deny"
    )
    assert policy.effect == "Deny"
    assert "docs" in [p.name for p in client.list_policies(admin, org_id=1)]
    client.add_user_to_group(admin, keyrunes_user.user_id, group.group_id)
    assert keyrunes.user_groups(keyrunes_user) == ("users", "devs")
    client.remove_user_from_group(admin, keyrunes_user.user_id, group.group_id, org_id=1)
    assert keyrunes.user_groups(keyrunes_user) == ("users",)


def test_admin_organizations_and_dashboard(
    client: KeyrunesClient, keyrunes: KeyrunesEmulator, admin: str
) -> None:
    namespace = unique_namespace()
    org = client.create_organization(admin, name="Acme", namespace=namespace)
    assert org.namespace == namespace
    assert [o.name for o in client.list_organizations(admin)] == ["Acme", "Default Organization"]
    key = client.rotate_organization_key(admin, org.organization_id)
    assert key.secret_key == keyrunes.organization_key(org.organization_id)
    client.delete_organization(admin, org.organization_id)
    assert keyrunes.get_organization(org.organization_id) is None
    dashboard = client.dashboard(admin)
    assert dashboard.total_policies == 3
    tenant_admin = keyrunes.create_user(namespace="public", groups=("users",))
    assert tenant_admin.password is not None
    user_token = client.login(tenant_admin.username, tenant_admin.password).token
    with pytest.raises(PermissionDenied, match="Superadmin or Admin access required"):
        client.dashboard(user_token)


def test_client_against_faults(
    client: KeyrunesClient, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    keyrunes.faults.add("/api/health/live", malformed=True, times=1)
    with pytest.raises(KeyrunesProtocolError):
        client.health_live()
    keyrunes.faults.add("/api/health/live", drop=True, times=1)
    with pytest.raises(KeyrunesUnavailable):
        client.health_live()
    keyrunes.faults.add("/api/login", status=418, times=1)
    with pytest.raises(KeyrunesHTTPError):
        client.login("x", "y")
    assert keyrunes.requests_to("/api/login", method="POST") == 1
