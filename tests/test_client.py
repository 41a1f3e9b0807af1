"""KeyrunesClient against canned answers (``responses``) for every route and error."""

from __future__ import annotations

import gzip
import io
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest
import requests
import responses
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from responses import matchers

from keyrunes_django import client as client_module
from keyrunes_django.breaker import get_breaker
from keyrunes_django.checks import check_client_limits
from keyrunes_django.client import (
    MAX_JSON_DEPTH,
    KeyrunesClient,
    VerifyOrgKeyDefect,
    get_client,
    load_json,
    reset_client,
    worst_case_seconds,
)
from keyrunes_django.exceptions import (
    AuthenticationFailed,
    CircuitOpen,
    KeyrunesError,
    KeyrunesHTTPError,
    KeyrunesProtocolError,
    KeyrunesUnavailable,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)

BASE = "http://kr.test"
TOKEN = "header.payload.signature"
ORG_KEY = "5b8c6f0e-6c2a-4a8e-9d6a-1f2e3d4c5b6a"

USER = {
    "user_id": 7,
    "external_id": "3f1c0000-0000-4000-8000-000000000007",
    "email": "alice@example.com",
    "username": "alice",
    "groups": ["users"],
    "first_login": False,
    "organization_id": 1,
    "namespace": "public",
}
AUTH = {"user": USER, "token": TOKEN, "requires_password_change": False}
GROUP = {
    "group_id": 3,
    "external_id": "g-3",
    "organization_id": 1,
    "name": "developers",
    "description": "Dev team",
    "created_at": "2026-01-02T10:00:00.123456Z",
    "updated_at": "2026-01-02T10:00:00.123456Z",
}
POLICY = {
    "policy_id": 4,
    "external_id": "p-4",
    "organization_id": 1,
    "name": "docs_read",
    "description": None,
    "resource": "docs:*",
    "action": "read",
    "effect": "Allow",
    "conditions": None,
    "created_at": "2026-01-02T10:00:00Z",
    "updated_at": "2026-01-02T10:00:00Z",
}
ORG = {
    "organization_id": 2,
    "external_id": "o-2",
    "name": "Company X",
    "description": None,
    "secret_key": ORG_KEY,
    "namespace": "company_x",
    "base_url": None,
    "created_at": "2026-01-02T10:00:00Z",
    "updated_at": "2026-01-02T10:00:00Z",
}


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def kr(sleeps: list[float]) -> KeyrunesClient:
    client = KeyrunesClient(
        BASE + "/",
        timeout=(0.5, 1.0),
        retries=2,
        backoff=0.1,
        organization_key=ORG_KEY,
        namespace="public",
    )
    client.sleep = sleeps.append
    return client


def body_of(call: Any) -> Any:
    return json.loads(call.request.body)


# ------------------------------------------------------------------ construction


def test_constructor_normalises_and_validates() -> None:
    client = KeyrunesClient("https://auth.example.com/", timeout=5)
    assert client.base_url == "https://auth.example.com"
    assert client.timeout == (5.0, 5.0)
    assert "kr.test" not in repr(client)
    assert "auth.example.com" in repr(client)
    client.close()


@pytest.mark.parametrize(
    "timeout", [None, 0, -1, (1, None), (1, 0), "3", True, (1, 2, 3), [1, "x"]]
)
def test_timeout_must_be_positive_numbers(timeout: Any) -> None:
    with pytest.raises(ImproperlyConfigured):
        KeyrunesClient(BASE, timeout=timeout)


def test_base_url_required() -> None:
    with pytest.raises(ImproperlyConfigured):
        KeyrunesClient("")


def test_timeout_and_headers_are_sent(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    seen: dict[str, Any] = {}

    def callback(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        seen["headers"] = dict(request.headers)
        return (200, {}, json.dumps(USER))

    rsps.add_callback(responses.GET, BASE + "/api/me", callback=callback)
    kr.me(TOKEN)
    assert seen["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert seen["headers"]["Accept"] == "application/json"
    assert seen["headers"]["User-Agent"].startswith("keyrunes-django/")
    assert "X-Organization-Key" not in seen["headers"]
    assert rsps.calls[0].request.req_kwargs["timeout"] == (0.5, 1.0)


# ------------------------------------------------------------------ health


def test_health_routes(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(
        BASE + "/api/health",
        json={
            "status": "healthy",
            "timestamp": "2026-01-02T10:00:00+00:00",
            "version": "0.1.0",
            "uptime_seconds": 12,
            "database": {"status": "healthy", "response_time_ms": 2, "active_connections": None},
            "services": {"jwt_service": "healthy", "password_hashing": "healthy"},
        },
    )
    rsps.get(
        BASE + "/api/health/ready",
        json={"status": "ready", "timestamp": "2026-01-02T10:00:00+00:00"},
    )
    rsps.get(
        BASE + "/api/health/live",
        json={"status": "alive", "timestamp": "2026-01-02T10:00:00+00:00", "version": "0.1.0"},
    )
    health = kr.health()
    assert health.healthy
    assert health.database is not None
    assert health.database.response_time_ms == 2
    assert health.timestamp == datetime(2026, 1, 2, 10, tzinfo=timezone.utc)
    assert kr.health_ready().ready
    live = kr.health_live()
    assert live.alive
    assert live.version == "0.1.0"


def test_unhealthy_503_is_an_answer_not_retried(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.get(
        BASE + "/api/health",
        status=503,
        json={"status": "unhealthy", "database": {"status": "unhealthy"}},
    )
    rsps.get(
        BASE + "/api/health/ready",
        status=503,
        json={"status": "not_ready", "error": "database_connection_failed"},
    )
    assert kr.health().healthy is False
    ready = kr.health_ready()
    assert not ready.ready
    assert ready.error == "database_connection_failed"
    assert len(rsps.calls) == 2


def test_health_503_without_json_is_unavailable(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.get(
        BASE + "/api/health/live", status=503, body="<html>down</html>", content_type="text/html"
    )
    with pytest.raises(KeyrunesUnavailable) as info:
        kr.health_live()
    assert info.value.status_code == 503


def test_health_200_html_is_protocol_error(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.get(BASE + "/api/health", body="<html>proxy</html>", content_type="text/html")
    with pytest.raises(KeyrunesProtocolError):
        kr.health()


# ------------------------------------------------------------------ public auth


def test_login_sends_identity_password_namespace(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.post(BASE + "/api/login", json=AUTH)
    answer = kr.login("alice", "s3cret-pass")
    assert answer.token == TOKEN
    assert answer.user.user_id == 7
    assert answer.user.groups == ["users"]
    assert body_of(rsps.calls[0]) == {
        "identity": "alice",
        "password": "s3cret-pass",
        "namespace": "public",
    }
    assert TOKEN not in repr(answer)
    kr.login("alice", "s3cret-pass", namespace="company_x")
    assert body_of(rsps.calls[1])["namespace"] == "company_x"


def test_login_401_is_authentication_failed_shape_a(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.post(
        BASE + "/api/login",
        status=401,
        json={"error": "Unauthorized", "message": "invalid credentials", "status_code": 401},
    )
    with pytest.raises(AuthenticationFailed) as info:
        kr.login("alice", "wrong")
    assert info.value.message == "invalid credentials"
    assert info.value.status_code == 401
    assert info.value.body["error"] == "Unauthorized"
    assert "wrong" not in str(info.value)


def test_login_500_is_not_retried(
    kr: KeyrunesClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.post(BASE + "/api/login", status=500, body="boom")
    with pytest.raises(KeyrunesUnavailable) as info:
        kr.login("alice", "pw")
    assert info.value.status_code == 500
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_login_connection_error_is_not_retried(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.post(BASE + "/api/login", body=requests.ConnectionError("refused"))
    with pytest.raises(KeyrunesUnavailable):
        kr.login("alice", "pw")
    assert len(rsps.calls) == 1


def test_register(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.post(BASE + "/api/register", json=AUTH, status=201)
    answer = kr.register(email="alice@example.com", username="alice", password="password1")
    assert answer.user.email == "alice@example.com"
    assert body_of(rsps.calls[0]) == {
        "email": "alice@example.com",
        "username": "alice",
        "password": "password1",
        "namespace": "public",
    }
    kr.register(
        email="b@example.com",
        username="b",
        password="password1",
        namespace="company_x",
        organization_id=2,
    )
    assert body_of(rsps.calls[1])["organization_id"] == 2
    assert body_of(rsps.calls[1])["namespace"] == "company_x"


def test_register_400_is_validation_failed(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.post(
        BASE + "/api/register",
        status=400,
        json={"error": "Bad Request", "message": "email already registered", "status_code": 400},
    )
    with pytest.raises(ValidationFailed, match="email already registered"):
        kr.register(email="a@example.com", username="a", password="password1")


def test_forgot_and_reset_password(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    token = "ab" * 32
    rsps.post(
        BASE + "/api/forgot-password",
        json={
            "message": "If the email is registered, you will receive a reset link.",
            "reset_url": f"?forgot_password={token}",
        },
    )
    rsps.post(BASE + "/api/reset-password", json={"message": "Password reset successfully"})
    forgot = kr.forgot_password("alice@example.com")
    assert forgot.reset_token == token
    assert token not in repr(forgot)
    assert body_of(rsps.calls[0]) == {"email": "alice@example.com", "namespace": "public"}
    done = kr.reset_password(token, "new-password", namespace="company_x")
    assert done.message == "Password reset successfully"
    assert body_of(rsps.calls[1]) == {
        "token": token,
        "new_password": "new-password",
        "namespace": "company_x",
    }


# ------------------------------------------------------------------ bearer routes


def test_me_and_identity(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/api/me", json={**USER, "unknown_extra": 1})
    user = kr.me(TOKEN)
    identity = user.to_identity()
    assert identity.user_id == 7
    assert identity.source == "remote"
    assert identity.groups == ("users",)
    assert identity.external_id == USER["external_id"]


def test_me_401_gate_message(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(
        BASE + "/api/me",
        status=401,
        json={"error": "Unauthorized", "message": "Invalid or expired token", "status_code": 401},
    )
    with pytest.raises(AuthenticationFailed, match="Invalid or expired token"):
        kr.me(TOKEN)
    assert len(rsps.calls) == 1  # 4xx is never retried


@pytest.mark.parametrize("bad", ["", "a b", "tok\r\nX-Injected: 1", "tök", 123])
def test_malformed_token_is_refused_locally(
    kr: KeyrunesClient, rsps: responses.RequestsMock, bad: Any
) -> None:
    with pytest.raises(AuthenticationFailed):
        kr.me(bad)
    assert len(rsps.calls) == 0


def test_refresh_token_sends_bearer_and_body(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.post(
        BASE + "/api/refresh-token",
        json={"token": "new.token.value"},
        match=[matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})],
    )
    assert kr.refresh_token(TOKEN).token == "new.token.value"
    assert body_of(rsps.calls[0]) == {"token": TOKEN}
    kr.refresh_token(TOKEN, body_token="other.token.x")
    assert body_of(rsps.calls[1]) == {"token": "other.token.x"}


def test_update_profile_and_change_password(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.patch(BASE + "/api/user/profile", json={**USER, "username": "alice2"})
    rsps.post(BASE + "/api/user/change-password", json={"message": "Password changed successfully"})
    assert kr.update_profile(TOKEN, username="alice2").username == "alice2"
    assert body_of(rsps.calls[0]) == {"username": "alice2"}
    assert kr.change_password(TOKEN, "old-pass", "new-pass1").message.startswith("Password changed")
    assert body_of(rsps.calls[1]) == {"current_password": "old-pass", "new_password": "new-pass1"}


def test_shape_b_plain_text_error(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.post(
        BASE + "/api/user/change-password",
        status=400,
        body="Invalid current password",
        content_type="text/plain; charset=utf-8",
    )
    with pytest.raises(ValidationFailed) as info:
        kr.change_password(TOKEN, "bad", "new-pass1")
    assert info.value.message == "Invalid current password"
    assert info.value.body == "Invalid current password"


def test_patch_is_not_retried(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.patch(BASE + "/api/user/profile", status=503)
    with pytest.raises(KeyrunesUnavailable):
        kr.update_profile(TOKEN, email="x@example.com")
    assert len(rsps.calls) == 1


def test_org_secret_and_rotate(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/api/org/secret", json={"organization_id": 2, "secret_key": ORG_KEY})
    rsps.post(BASE + "/api/org/secret/rotate", json={"organization_id": 2, "secret_key": "new-key"})
    secret = kr.org_secret(TOKEN)
    assert secret.secret_key == ORG_KEY
    assert ORG_KEY not in repr(secret)
    assert kr.rotate_org_secret(TOKEN).secret_key == "new-key"


def test_org_secret_403(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.post(
        BASE + "/api/org/secret/rotate",
        status=403,
        json={
            "error": "Forbidden",
            "message": "Insufficient permissions to rotate Organization Secret",
            "status_code": 403,
        },
    )
    with pytest.raises(PermissionDenied, match="Insufficient permissions"):
        kr.rotate_org_secret(TOKEN)


# ------------------------------------------------------------------ org-key routes


def test_verify_org_key_ok(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(
        BASE + "/api/verify-org-key",
        json={"status": "success", "organization": "Default", "organization_id": 1},
        match=[matchers.header_matcher({"X-Organization-Key": ORG_KEY})],
    )
    answer = kr.verify_org_key()
    assert answer.organization_id == 1
    assert answer.status == "success"
    assert "Authorization" not in rsps.calls[0].request.headers


def test_verify_org_key_explicit_key(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(
        BASE + "/api/verify-org-key",
        json={"status": "success", "organization": "X", "organization_id": 2},
        match=[matchers.header_matcher({"X-Organization-Key": "other-key"})],
    )
    assert kr.verify_org_key("other-key").organization == "X"


def test_verify_org_key_401(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(
        BASE + "/api/verify-org-key",
        status=401,
        json={"error": "Unauthorized", "message": "Invalid API Key", "status_code": 401},
    )
    with pytest.raises(AuthenticationFailed, match="Invalid API Key"):
        kr.verify_org_key()


def test_verify_org_key_500_is_distinct_and_not_retried(
    kr: KeyrunesClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        BASE + "/api/verify-org-key",
        status=500,
        body=(
            "Missing request extension: Extension of type "
            "`keyrunes::domain::organization::Organization` was not found."
        ),
        content_type="text/plain",
    )
    with pytest.raises(VerifyOrgKeyDefect) as info:
        kr.verify_org_key()
    assert isinstance(info.value, KeyrunesUnavailable)
    assert info.value.status_code == 500
    assert "Missing request extension" in info.value.message
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_verify_org_key_503_is_retried_and_plain_unavailable(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.get(BASE + "/api/verify-org-key", status=503)
    with pytest.raises(KeyrunesUnavailable) as info:
        kr.verify_org_key()
    assert not isinstance(info.value, VerifyOrgKeyDefect)
    assert len(rsps.calls) == 3


def test_org_key_required(rsps: responses.RequestsMock) -> None:
    client = KeyrunesClient(BASE)
    with pytest.raises(ImproperlyConfigured):
        client.verify_org_key()
    with pytest.raises(ImproperlyConfigured):
        client.check_permission(7, "docs", "read")
    with pytest.raises(AuthenticationFailed):
        client.verify_org_key("bad key\n")
    assert len(rsps.calls) == 0


def test_check_permission_with_org_key(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.post(
        BASE + "/api/check-permission",
        json={"allowed": True, "user_id": 7, "resource": "docs:1", "action": "read"},
    )
    answer = kr.check_permission(7, "docs:1", "read")
    assert answer.allowed is True
    call = rsps.calls[0]
    assert call.request.headers["X-Organization-Key"] == ORG_KEY
    assert "Authorization" not in call.request.headers
    assert body_of(call) == {"user_id": 7, "resource": "docs:1", "action": "read"}


def test_check_permission_with_token_only(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.post(BASE + "/api/check-permission", json={"allowed": False})
    assert kr.check_permission(7, "docs", "write", token=TOKEN).allowed is False
    headers = rsps.calls[0].request.headers
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert "X-Organization-Key" not in headers


def test_check_permission_explicit_key_wins_over_token(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.post(BASE + "/api/check-permission", json={"allowed": True})
    kr.check_permission(7, "docs", "read", org_key="k2", token=TOKEN)
    headers = rsps.calls[0].request.headers
    assert headers["X-Organization-Key"] == "k2"
    assert "Authorization" not in headers


def test_check_permission_404_and_wrong_types(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.post(
        BASE + "/api/check-permission", status=404, body="User not found", content_type="text/plain"
    )
    with pytest.raises(NotFound, match="User not found"):
        kr.check_permission(0, "x", "y")
    rsps.replace(responses.POST, BASE + "/api/check-permission", json={"allowed": "yes"})
    with pytest.raises(KeyrunesProtocolError, match="allowed"):
        kr.check_permission(7, "x", "y")


def test_check_permission_user_id_must_be_int(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        kr.check_permission("7", "x", "y")  # type: ignore[arg-type]
    assert len(rsps.calls) == 0


# ------------------------------------------------------------------ admin routes


def test_admin_check_permission(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.post(
        BASE + "/api/admin/check-permission",
        json={
            "user_id": 7,
            "group_name": "",
            "resource": "docs",
            "action": "read",
            "has_permission": True,
        },
    )
    assert kr.admin_check_permission(TOKEN, 7, "docs", "read").has_permission is True
    assert body_of(rsps.calls[0]) == {
        "user_id": 7,
        "group_name": "",
        "resource": "docs",
        "action": "read",
    }


def test_dashboard(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(
        BASE + "/api/admin/dashboard",
        json={
            "total_users": 10,
            "total_groups": 3,
            "total_policies": 3,
            "current_admin": {
                "user_id": 1,
                "username": "admin",
                "email": "admin@example.com",
                "groups": ["superadmin", "users"],
            },
        },
    )
    dash = kr.dashboard(TOKEN)
    assert dash.total_users == 10
    assert dash.current_admin is not None
    assert dash.current_admin.groups == ["superadmin", "users"]


def test_list_users(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    row = {
        k: USER[k] for k in ("user_id", "external_id", "email", "username", "first_login", "groups")
    }
    rsps.get(BASE + "/api/admin/users", json=[{**row, "created_at": "2026-01-02T10:00:00.5Z"}])
    users = kr.list_users(TOKEN)
    assert users[0].created_at == datetime(2026, 1, 2, 10, 0, 0, 500000, tzinfo=timezone.utc)
    identity = users[0].to_identity("company_x", 2)
    assert identity.namespace == "company_x"
    assert identity.organization_id == 2
    assert identity.source == "sync"
    kr.list_users(TOKEN, org_id=2)
    assert rsps.calls[0].request.url == BASE + "/api/admin/users"
    assert rsps.calls[1].request.url == BASE + "/api/admin/users?org_id=2"


def test_list_users_shape_c_errors(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/api/admin/users", status=404, json={"error": "Organization 9 not found"})
    with pytest.raises(NotFound) as info:
        kr.list_users(TOKEN, org_id=9)
    assert info.value.message == "Organization 9 not found"
    rsps.replace(
        responses.GET, BASE + "/api/admin/users", status=403, json={"error": "Access denied"}
    )
    with pytest.raises(PermissionDenied, match="Access denied"):
        kr.list_users(TOKEN, org_id=9)


def test_list_not_a_list_is_protocol_error(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.get(BASE + "/api/admin/groups", json={"groups": []})
    with pytest.raises(KeyrunesProtocolError, match="list of Group"):
        kr.list_groups(TOKEN)


def test_create_user(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.post(BASE + "/api/admin/user", status=201, json={**USER, "first_login": True})
    user = kr.create_user(
        TOKEN, organization_id=1, email="alice@example.com", username="alice", password="password1"
    )
    assert user.first_login is True
    assert body_of(rsps.calls[0]) == {
        "organization_id": 1,
        "email": "alice@example.com",
        "username": "alice",
        "password": "password1",
    }
    kr.create_user(
        TOKEN,
        organization_id=2,
        email="b@example.com",
        username="b",
        password="password1",
        groups=("users", "dev"),
        first_login=False,
    )
    assert body_of(rsps.calls[1])["groups"] == ["users", "dev"]
    assert body_of(rsps.calls[1])["first_login"] is False


def test_create_user_shape_d_422(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    text = (
        "Failed to deserialize the JSON body into the target type: "
        "email: invalid email at line 1 column 40"
    )
    rsps.post(
        BASE + "/api/admin/user", status=422, body=text, content_type="text/plain; charset=utf-8"
    )
    with pytest.raises(ValidationFailed) as info:
        kr.create_user(TOKEN, organization_id=1, email="nope", username="x", password="password1")
    assert info.value.status_code == 422
    assert "invalid email" in info.value.message


def test_update_and_delete_user(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.patch(BASE + "/api/admin/users/7", json={**USER, "first_login": True})
    rsps.delete(BASE + "/api/admin/users/7", status=204)
    user = kr.update_user(TOKEN, 7, org_id=1, first_login=True)
    assert user.first_login is True
    assert rsps.calls[0].request.url == BASE + "/api/admin/users/7?org_id=1"
    assert body_of(rsps.calls[0]) == {"first_login": True}
    assert kr.delete_user(TOKEN, 7) is None


def test_delete_user_400_plain(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.delete(BASE + "/api/admin/users/1", status=400, body="Cannot delete yourself")
    with pytest.raises(ValidationFailed, match="Cannot delete yourself"):
        kr.delete_user(TOKEN, 1)


def test_reset_and_send_reset(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.post(
        BASE + "/api/admin/users/7/reset-password", json={"temporary_password": "Tmp)(*&^%$#1"}
    )
    rsps.post(BASE + "/api/admin/users/7/send-reset", json={"message": "Reset email sent"})
    temp = kr.reset_user_password(TOKEN, 7, org_id=1)
    assert temp.temporary_password == "Tmp)(*&^%$#1"
    assert "Tmp)" not in repr(temp)
    assert rsps.calls[0].request.url.endswith("?org_id=1")
    assert kr.send_password_reset(TOKEN, 7).message == "Reset email sent"


def test_groups(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/api/admin/groups", json=[GROUP])
    rsps.post(BASE + "/api/admin/groups", status=201, json=GROUP)
    groups = kr.list_groups(TOKEN, org_id=1)
    assert groups[0].name == "developers"
    assert groups[0].created_at is not None
    group = kr.create_group(TOKEN, organization_id=1, name="developers", description="Dev team")
    assert group.group_id == 3
    assert body_of(rsps.calls[1]) == {
        "organization_id": 1,
        "name": "developers",
        "description": "Dev team",
    }


def test_group_membership(
    kr: KeyrunesClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.post(
        BASE + "/api/admin/users/7/groups/3",
        json={"message": "User assigned to group successfully"},
    )
    rsps.delete(
        BASE + "/api/admin/users/7/groups/3",
        json={"message": "User removed from group successfully"},
    )
    assert "assigned" in kr.add_user_to_group(TOKEN, 7, 3, org_id=2).message
    assert rsps.calls[0].request.url.endswith("/api/admin/users/7/groups/3?org_id=2")
    assert "removed" in kr.remove_user_from_group(TOKEN, 7, 3).message


def test_policies(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(
        BASE + "/api/admin/policies", json=[POLICY, {**POLICY, "policy_id": 5, "effect": "Deny"}]
    )
    rsps.post(BASE + "/api/admin/policies", status=201, json=POLICY)
    policies = kr.list_policies(TOKEN)
    assert [p.effect for p in policies] == ["Allow", "Deny"]
    kr.create_policy(TOKEN, organization_id=1, name="docs_read", resource="docs:*", action="read")
    assert body_of(rsps.calls[1]) == {
        "organization_id": 1,
        "name": "docs_read",
        "resource": "docs:*",
        "action": "read",
        "effect": "Allow",
    }
    kr.create_policy(
        TOKEN,
        organization_id=1,
        name="n",
        resource="r",
        action="a",
        effect="Deny",
        description="d",
        conditions={"ip": "x"},
    )
    assert body_of(rsps.calls[2])["conditions"] == {"ip": "x"}
    assert body_of(rsps.calls[2])["effect"] == "Deny"


def test_policy_effect_wrong_case_is_protocol_error(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.get(BASE + "/api/admin/policies", json=[{**POLICY, "effect": "ALLOW"}])
    with pytest.raises(KeyrunesProtocolError):
        kr.list_policies(TOKEN)


def test_organizations(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/api/admin/organizations", json=[ORG])
    rsps.post(BASE + "/api/admin/organizations", status=201, json=ORG)
    rsps.delete(BASE + "/api/admin/organizations/2", status=204)
    rsps.post(
        BASE + "/api/admin/organizations/2/rotate-key",
        json={"organization_id": 2, "secret_key": "new-key", "message": "Key rotated successfully"},
    )
    orgs = kr.list_organizations(TOKEN)
    assert orgs[0].namespace == "company_x"
    assert ORG_KEY not in repr(orgs[0])
    org = kr.create_organization(TOKEN, name="Company X", namespace="company_x", description="d")
    assert org.secret_key == ORG_KEY
    assert body_of(rsps.calls[1]) == {
        "name": "Company X",
        "namespace": "company_x",
        "description": "d",
    }
    assert kr.delete_organization(TOKEN, 2) is None
    key = kr.rotate_organization_key(TOKEN, 2)
    assert key.secret_key == "new-key"
    assert key.message == "Key rotated successfully"


def test_create_organization_403_plain(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.post(
        BASE + "/api/admin/organizations", status=403, body="Global Superadmin access required"
    )
    with pytest.raises(PermissionDenied, match="Global Superadmin"):
        kr.create_organization(TOKEN, name="x", namespace="x")


# ------------------------------------------------------------------ retries and faults


def test_get_500_then_200_is_retried(
    kr: KeyrunesClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(BASE + "/api/me", status=500, body="oops")
    rsps.get(BASE + "/api/me", json=USER)
    assert kr.me(TOKEN).user_id == 7
    assert len(rsps.calls) == 2
    assert sleeps == [pytest.approx(0.1)]


def test_get_5xx_exhausts_retries_with_backoff(
    kr: KeyrunesClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(BASE + "/api/me", status=502, body="bad gateway")
    with pytest.raises(KeyrunesUnavailable) as info:
        kr.me(TOKEN)
    assert info.value.status_code == 502
    assert info.value.message == "bad gateway"
    assert len(rsps.calls) == 3
    assert sleeps == [pytest.approx(0.1), pytest.approx(0.2)]


def test_connection_refused_retried_then_unavailable(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.get(BASE + "/api/me", body=requests.ConnectionError("Connection refused"))
    with pytest.raises(KeyrunesUnavailable, match="unreachable"):
        kr.me(TOKEN)
    assert len(rsps.calls) == 3


def test_timeout_retried_then_unavailable(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/api/admin/users", body=requests.ReadTimeout("read timed out"))
    with pytest.raises(KeyrunesUnavailable, match="timed out"):
        kr.list_users(TOKEN)
    assert len(rsps.calls) == 3


def test_timeout_then_success(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/api/me", body=requests.ConnectTimeout("connect timed out"))
    rsps.get(BASE + "/api/me", json=USER)
    assert kr.me(TOKEN).username == "alice"


def test_post_timeout_not_retried(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.post(BASE + "/api/admin/groups", body=requests.ReadTimeout("slow"))
    with pytest.raises(KeyrunesUnavailable):
        kr.create_group(TOKEN, organization_id=1, name="x")
    assert len(rsps.calls) == 1


def test_delete_is_retried(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.delete(BASE + "/api/admin/users/7", status=503)
    rsps.delete(BASE + "/api/admin/users/7", status=204)
    kr.delete_user(TOKEN, 7)
    assert len(rsps.calls) == 2


def test_429_retry_after_seconds_is_respected(
    kr: KeyrunesClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(BASE + "/api/me", status=429, headers={"Retry-After": "2"})
    rsps.get(BASE + "/api/me", json=USER)
    kr.me(TOKEN)
    assert sleeps == [2.0]


def test_retry_after_is_capped(
    kr: KeyrunesClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    kr.deadline = 30.0
    rsps.get(BASE + "/api/me", status=429, headers={"Retry-After": "3600"})
    rsps.get(BASE + "/api/me", json=USER)
    kr.me(TOKEN)
    assert sleeps == [kr.max_retry_after]


def test_retry_after_never_pushes_a_retry_past_the_deadline(
    kr: KeyrunesClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    kr.deadline = 1.0
    rsps.get(BASE + "/api/me", status=503, headers={"Retry-After": "3"})
    rsps.get(BASE + "/api/me", json=USER)
    with pytest.raises(KeyrunesUnavailable) as info:
        kr.me(TOKEN)
    assert sleeps == []  # the wait would end after the deadline: no retry at all
    assert len(rsps.calls) == 1
    assert info.value.status_code == 503
    assert info.value.retry_after == 3.0  # passed on for the caller's own Retry-After


def test_retry_after_http_date(
    kr: KeyrunesClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=3)
    rsps.get(
        BASE + "/api/me", status=503, headers={"Retry-After": format_datetime(when, usegmt=True)}
    )
    rsps.get(BASE + "/api/me", status=503, headers={"Retry-After": "not a date"})
    rsps.get(BASE + "/api/me", json=USER)
    kr.me(TOKEN)
    assert 1.0 < sleeps[0] <= 3.0
    assert sleeps[1] == pytest.approx(0.2)  # unparsable hint: plain backoff


def test_429_exhausted_is_unavailable(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/api/me", status=429, body="slow down")
    with pytest.raises(KeyrunesUnavailable) as info:
        kr.me(TOKEN)
    assert info.value.status_code == 429


def test_429_on_post_not_retried(
    kr: KeyrunesClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.post(BASE + "/api/login", status=429, headers={"Retry-After": "1"})
    with pytest.raises(KeyrunesUnavailable):
        kr.login("a", "b")
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_retries_zero_means_one_attempt(rsps: responses.RequestsMock) -> None:
    client = KeyrunesClient(BASE, retries=0)
    rsps.get(BASE + "/api/me", status=500)
    with pytest.raises(KeyrunesUnavailable):
        client.me(TOKEN)
    assert len(rsps.calls) == 1


def test_real_connection_refused() -> None:
    # Port 9 (discard) on loopback: nothing listens in the test environment.
    client = KeyrunesClient("http://127.0.0.1:9", retries=0, timeout=0.5)
    with pytest.raises(KeyrunesUnavailable):
        client.health_live()


# ------------------------------------------------------------------ wrong-shaped bodies


def test_html_body_is_protocol_error(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/api/me", body="<!doctype html><html>login</html>", content_type="text/html")
    with pytest.raises(KeyrunesProtocolError, match="not JSON") as info:
        kr.me(TOKEN)
    assert info.value.status_code == 200


def test_truncated_json_is_protocol_error(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.post(
        BASE + "/api/login", body='{"user": {"user_id": 7, "ema', content_type="application/json"
    )
    with pytest.raises(KeyrunesProtocolError):
        kr.login("a", "b")


def test_wrong_types_are_protocol_error(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/api/me", json={**USER, "user_id": "seven", "groups": "users"})
    with pytest.raises(KeyrunesProtocolError) as info:
        kr.me(TOKEN)
    assert "user_id" in info.value.message
    assert "groups" in info.value.message
    assert "seven" not in info.value.message  # inputs are never echoed


def test_missing_field_is_protocol_error(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.post(BASE + "/api/login", json={"user": USER})
    with pytest.raises(KeyrunesProtocolError, match="token"):
        kr.login("a", "b")


def test_json_array_instead_of_object(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/api/me", json=[USER])
    with pytest.raises(KeyrunesProtocolError):
        kr.me(TOKEN)


def test_redirect_is_protocol_error(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/api/me", status=307, headers={"Location": "/login"})
    with pytest.raises(KeyrunesProtocolError, match="redirect"):
        kr.me(TOKEN)
    assert len(rsps.calls) == 1


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (401, AuthenticationFailed),
        (403, PermissionDenied),
        (404, NotFound),
        (400, ValidationFailed),
        (422, ValidationFailed),
        (405, KeyrunesHTTPError),
        (413, KeyrunesHTTPError),
        (415, KeyrunesHTTPError),
    ],
)
def test_status_mapping(
    kr: KeyrunesClient, rsps: responses.RequestsMock, status: int, exc: type[KeyrunesError]
) -> None:
    rsps.get(BASE + "/api/me", status=status, body="")
    with pytest.raises(exc) as info:
        kr.me(TOKEN)
    assert type(info.value) is exc
    assert info.value.status_code == status
    assert info.value.message  # empty body (shape E): the reason phrase
    assert len(rsps.calls) == 1


def test_shape_a_message_preferred_over_error(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.get(
        BASE + "/api/nope-a",
        status=404,
        json={
            "error": "Not Found",
            "message": "The requested resource was not found",
            "status_code": 404,
        },
    )
    rsps.get(BASE + "/api/nope-b", status=404, json={"error": "Not Found", "message": ""})
    rsps.get(BASE + "/api/nope-c", status=404, json={"detail": 1})
    with pytest.raises(NotFound, match="requested resource"):
        kr.request("GET", "/api/nope-a")
    with pytest.raises(NotFound) as info:
        kr.request("GET", "/api/nope-b")
    assert info.value.message == "Not Found"
    with pytest.raises(NotFound) as info:
        kr.request("GET", "/api/nope-c")
    assert info.value.message == '{"detail": 1}'


def test_long_error_text_is_truncated(kr: KeyrunesClient, rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/api/me", status=400, body="x" * 5000)
    with pytest.raises(ValidationFailed) as info:
        kr.me(TOKEN)
    assert len(info.value.message) == 500


def test_other_request_exception_is_protocol_error(
    kr: KeyrunesClient, rsps: responses.RequestsMock
) -> None:
    rsps.get(BASE + "/api/me", body=requests.exceptions.InvalidURL("bad"))
    with pytest.raises(KeyrunesProtocolError):
        kr.me(TOKEN)


def test_1xx_status_is_protocol_error() -> None:
    response = requests.Response()
    response.status_code = 199
    response._content = b""
    with pytest.raises(KeyrunesProtocolError):
        raise KeyrunesClient._error_for(response)


def test_secrets_never_logged(
    kr: KeyrunesClient, rsps: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="keyrunes_django")
    rsps.get(BASE + "/api/me", status=500)
    rsps.get(BASE + "/api/me", json=USER)
    rsps.post(BASE + "/api/login", json=AUTH)
    rsps.get(BASE + "/api/verify-org-key", body=requests.ConnectionError("x"))
    kr.me(TOKEN)
    kr.login("alice", "hunter2-password")
    with pytest.raises(KeyrunesUnavailable):
        kr.verify_org_key()
    text = caplog.text
    assert "/api/me" in text  # something was logged
    for secret in (TOKEN, "hunter2-password", ORG_KEY):
        assert secret not in text


# ------------------------------------------------------------------ get_client


@pytest.fixture
def fresh() -> Iterator[None]:
    reset_client()
    yield
    reset_client()


def test_get_client_from_settings(fresh: None) -> None:
    with override_settings(
        KEYRUNES={
            "BASE_URL": "https://auth.example.com/",
            "TIMEOUT": 4,
            "RETRIES": 1,
            "BACKOFF": 0.5,
            "ORGANIZATION_KEY": "k",
            "NAMESPACE": "company_x",
            "VERIFY_SSL": False,
        }
    ):
        client = get_client()
        assert client is get_client()
        assert client.base_url == "https://auth.example.com"
        assert client.timeout == (4.0, 4.0)
        assert (client.retries, client.backoff) == (1, 0.5)
        assert client.organization_key == "k"
        assert client.namespace == "company_x"
        assert client.verify_ssl is False


def test_get_client_rebuilt_when_settings_change(fresh: None) -> None:
    with override_settings(KEYRUNES={"BASE_URL": "https://a.example.com"}):
        first = get_client()
    with override_settings(KEYRUNES={"BASE_URL": "https://b.example.com"}):
        second = get_client()
        assert second is not first
        assert second.base_url == "https://b.example.com"


def test_get_client_rebuilt_without_signal(fresh: None) -> None:
    # Settings mutated in place (no setting_changed signal): the fingerprint notices.
    from django.conf import settings

    with override_settings(KEYRUNES={"BASE_URL": "https://a.example.com"}):
        first = get_client()
        settings.KEYRUNES["BASE_URL"] = "https://c.example.com"
        second = get_client()
        assert second is not first
        assert second.base_url == "https://c.example.com"
        assert get_client() is second


def test_setting_changed_resets(fresh: None) -> None:
    with override_settings(KEYRUNES={"BASE_URL": "https://a.example.com"}):
        get_client()
        assert client_module._client is not None
    assert client_module._client is None
    with override_settings(OTHER_SETTING=1):
        pass


def test_get_client_requires_base_url(fresh: None) -> None:
    with override_settings(KEYRUNES={}), pytest.raises(ImproperlyConfigured, match="BASE_URL"):
        get_client()


# ------------------------------------------------------------------ against the emulator


def test_every_route_against_the_emulator(keyrunes: Any, fresh: None) -> None:
    """The schemas accept what a server speaking the contract really sends."""
    kr = get_client()
    assert kr.health().healthy
    assert kr.health_ready().ready
    assert kr.health_live().alive

    admin = kr.login("admin@example.com", "Admin123")
    token = admin.token
    assert "superadmin" in admin.user.groups
    assert kr.me(token).user_id == admin.user.user_id
    assert kr.refresh_token(token).token

    reg = kr.register(email="bob@example.com", username="bob", password="password1")
    assert reg.user.groups == ["users"]
    bob = reg.user.user_id
    assert kr.update_profile(reg.token, username="bobby").username == "bobby"
    assert kr.change_password(reg.token, "password1", "password2").message
    forgot = kr.forgot_password("bob@example.com")
    assert forgot.reset_token
    assert kr.reset_password(forgot.reset_token, "password3").message
    assert kr.login("bobby", "password3").user.user_id == bob

    assert kr.org_secret(token).organization_id == 1
    assert kr.verify_org_key().organization_id == 1
    assert isinstance(kr.check_permission(bob, "user:1", "read").allowed, bool)
    assert isinstance(kr.admin_check_permission(token, bob, "docs", "read").has_permission, bool)
    assert kr.dashboard(token).total_users >= 2
    assert any(u.user_id == bob for u in kr.list_users(token, org_id=1))

    group = kr.create_group(token, organization_id=1, name="devs", description="d")
    assert group.name in [g.name for g in kr.list_groups(token, org_id=1)]
    kr.add_user_to_group(token, bob, group.group_id, org_id=1)
    assert "devs" in kr.me(kr.login("bobby", "password3").token).groups
    kr.remove_user_from_group(token, bob, group.group_id, org_id=1)

    policy = kr.create_policy(
        token,
        organization_id=1,
        name="docs_write",
        resource="docs:*",
        action="write",
        effect="Deny",
    )
    assert policy.effect == "Deny"
    assert "docs_write" in [p.name for p in kr.list_policies(token, org_id=1)]

    carol = kr.create_user(
        token, organization_id=1, email="carol@example.com", username="carol", password="password1"
    )
    assert kr.update_user(token, carol.user_id, org_id=1, first_login=False).first_login is False
    assert kr.reset_user_password(token, carol.user_id, org_id=1).temporary_password
    assert kr.send_password_reset(token, carol.user_id, org_id=1).message
    kr.delete_user(token, carol.user_id)

    org = kr.create_organization(token, name="Company X", namespace="company_x")
    assert org.namespace == "company_x"
    assert "company_x" in [o.namespace for o in kr.list_organizations(token)]
    assert kr.rotate_organization_key(token, org.organization_id).secret_key
    assert kr.rotate_org_secret(token).secret_key
    kr.delete_organization(token, org.organization_id)

    with pytest.raises(AuthenticationFailed):
        kr.login("admin@example.com", "wrong-password")
    with pytest.raises(ValidationFailed):
        kr.register(email="bob@example.com", username="bob2", password="password1")


def test_verify_org_key_defect_against_quirky_emulator() -> None:
    from keyrunes_django.testing import KeyrunesEmulator

    with KeyrunesEmulator(jwt_secret="q" * 32, server_quirks=True) as quirky:
        client = KeyrunesClient(quirky.base_url, retries=2, backoff=0.0)
        with pytest.raises(VerifyOrgKeyDefect):
            client.verify_org_key(quirky.organization_key(1))
        assert quirky.requests_to("/api/verify-org-key") == 1
        with pytest.raises(AuthenticationFailed):
            client.verify_org_key("00000000-0000-4000-8000-000000000000")
        client.close()


def test_get_client_bad_timeout_is_improperly_configured(fresh: None) -> None:
    with (
        override_settings(KEYRUNES={"BASE_URL": "https://a.example.com", "TIMEOUT": None}),
        pytest.raises(ImproperlyConfigured, match="timeout"),
    ):
        get_client()


# ------------------------------------------------------------------ a hostile network
#
# These run against a real server on a loopback socket: the deadline lives in
# the socket reads, which canned answers never reach.

MIB = 1024 * 1024


class Loopback:
    """A tiny threaded HTTP server on 127.0.0.1; ``answer(conn)`` writes each reply."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.requests = 0
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Loopback:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            try:
                while not self._stop.is_set():
                    length = 0
                    line = reader.readline()
                    if not line:
                        return
                    while line not in (b"\r\n", b"\n", b""):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                        line = reader.readline()
                    reader.read(length)
                    self.requests += 1
                    self.answer(self, conn)
            except OSError:
                return

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)


def head(body_length: int | None, *extra: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", *extra]
    if body_length is None:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {body_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def drip(server: Loopback, conn: socket.socket, data: bytes, pause: float) -> None:
    for byte in data:
        if server._stop.is_set():
            return
        server.send(conn, bytes([byte]))
        time.sleep(pause)


def real_client(url: str, **kwargs: Any) -> KeyrunesClient:
    options: dict[str, Any] = {"timeout": (0.5, 1.0), "retries": 2, "backoff": 0.05}
    options.update(kwargs)
    return KeyrunesClient(url, **options)


def test_dripped_body_is_cut_off_at_the_deadline() -> None:
    body = json.dumps(USER).encode()  # ~230 bytes at 20 ms each: ~5 s in all

    def answer(server: Loopback, conn: socket.socket) -> None:
        server.send(conn, head(len(body)))
        drip(server, conn, body, 0.02)

    with Loopback(answer) as server:
        client = real_client(server.url, deadline=1.0)
        started = time.monotonic()
        with pytest.raises(KeyrunesUnavailable, match="deadline"):
            client.me(TOKEN)
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 1.7
    assert server.requests == 1  # no time was left to retry
    # A call that used up its whole deadline opens the breaker at once: waiting
    # for several such calls would hold every worker for the whole time.
    assert get_breaker().state == "open"
    with pytest.raises(CircuitOpen):
        client.me(TOKEN)
    assert server.requests == 1


def test_dripped_headers_are_cut_off_at_the_deadline() -> None:
    body = json.dumps(USER).encode()

    def answer(server: Loopback, conn: socket.socket) -> None:
        drip(server, conn, head(len(body)) + body, 0.02)

    with Loopback(answer) as server:
        client = real_client(server.url, deadline=0.8)
        started = time.monotonic()
        with pytest.raises(KeyrunesUnavailable, match="deadline"):
            client.me(TOKEN)
        elapsed = time.monotonic() - started
    assert elapsed < 1.5


def test_retries_and_backoff_stay_inside_the_deadline() -> None:
    def answer(server: Loopback, conn: socket.socket) -> None:
        time.sleep(5)  # never answers in time

    with Loopback(answer) as server:
        client = real_client(server.url, timeout=(0.5, 0.4), retries=5, deadline=1.0)
        started = time.monotonic()
        with pytest.raises(KeyrunesUnavailable):
            client.me(TOKEN)
        elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert 2 <= server.requests <= 3  # 0.4 s reads: the sixth attempt never starts


def test_answer_inside_the_deadline_and_keep_alive_still_work() -> None:
    body = json.dumps(USER).encode()

    def answer(server: Loopback, conn: socket.socket) -> None:
        server.send(conn, head(len(body)))
        drip(server, conn, body[:20], 0.005)
        server.send(conn, body[20:])

    with Loopback(answer) as server:
        client = real_client(server.url, deadline=2.0)
        for _ in range(3):
            assert client.me(TOKEN).username == "alice"
    assert server.connections == 1  # one pooled connection served every call


def test_deadline_setting_reaches_the_client(fresh: None) -> None:
    with override_settings(KEYRUNES={"BASE_URL": BASE, "DEADLINE": 2.5}):
        assert get_client().deadline == 2.5
    with override_settings(KEYRUNES={"BASE_URL": BASE, "MAX_RESPONSE_BYTES": 10}):
        assert get_client().max_response_bytes == 10


@pytest.mark.parametrize("value", [0, -1, "5", None, True, float("inf"), float("nan")])
def test_deadline_must_be_positive(value: Any) -> None:
    with pytest.raises(ImproperlyConfigured):
        KeyrunesClient(BASE, deadline=value)


@pytest.mark.parametrize("value", [0, -1, 1.5, "1", True])
def test_max_response_bytes_must_be_a_positive_int(value: Any) -> None:
    with pytest.raises(ImproperlyConfigured):
        KeyrunesClient(BASE, max_response_bytes=value)


def test_deadline_already_spent_sends_nothing(kr: KeyrunesClient, rsps: Any) -> None:
    rsps.get(BASE + "/api/me", status=503)
    kr.sleep = lambda seconds: time.sleep(0.06)
    kr.deadline = 0.05
    kr.backoff = 0.0
    with pytest.raises(KeyrunesUnavailable):
        kr.me(TOKEN)
    assert len(rsps.calls) == 1


class SlowBody(io.RawIOBase):
    """A body whose second read comes late (a session without the client's adapter)."""

    def __init__(self) -> None:
        self.parts = [b'{"user_id": 7,', b'"username": "alice"}']

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.parts:
            return 0
        if len(self.parts) == 1:
            time.sleep(0.15)
        part = self.parts.pop(0)
        buffer[: len(part)] = part
        return len(part)


def test_deadline_checked_between_body_chunks(kr: KeyrunesClient, rsps: Any) -> None:
    rsps.get(BASE + "/api/me", body=io.BufferedReader(SlowBody(), buffer_size=16))
    kr.deadline = 0.1
    with pytest.raises(KeyrunesUnavailable, match="deadline"):
        kr.me(TOKEN)


# ------------------------------------------------------------------ body size


def peak_bytes(run: Any) -> int:
    tracemalloc.start()
    try:
        run()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def big_username_body(size: int) -> bytes:
    return json.dumps({**USER, "username": "a" * size}).encode()


def test_huge_declared_body_is_refused_before_reading() -> None:
    def answer(server: Loopback, conn: socket.socket) -> None:
        server.send(conn, head(48 * MIB))
        for _ in range(48):
            server.send(conn, b"a" * MIB)

    with Loopback(answer) as server:
        client = real_client(server.url)
        with pytest.raises(KeyrunesProtocolError, match="larger than 1048576 bytes"):
            client.me(TOKEN)
    assert server.sent < 8 * MIB


def test_huge_chunked_body_is_read_only_up_to_the_limit() -> None:
    body = big_username_body(48 * MIB)  # valid JSON a server could send

    def answer(server: Loopback, conn: socket.socket) -> None:
        server.send(conn, head(None))
        view = memoryview(body)
        for start in range(0, len(body), 256 * 1024):
            piece = view[start : start + 256 * 1024]
            server.send(conn, b"%x\r\n" % len(piece) + piece + b"\r\n")
        server.send(conn, b"0\r\n\r\n")

    with Loopback(answer) as server:
        client = real_client(server.url, deadline=3.0)

        def call() -> None:
            with pytest.raises(KeyrunesProtocolError, match="larger than"):
                client.me(TOKEN)

        peak = peak_bytes(call)
    assert peak < 4 * MIB
    assert server.sent < 16 * MIB


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    # Gzip members may be concatenated: 160 members of 1 MiB of spaces, inside
    # "[" and "]", make a valid JSON list of 160 MiB from about 160 KiB.
    spaces = gzip.compress(b" " * MIB, compresslevel=9)
    return gzip.compress(b"[") + spaces * 160 + gzip.compress(b"]")


def test_gzip_bomb_is_refused_without_inflating_it(gzip_bomb: bytes) -> None:
    assert len(gzip_bomb) < 200 * 1024

    def answer(server: Loopback, conn: socket.socket) -> None:
        server.send(conn, head(len(gzip_bomb), "Content-Encoding: gzip") + gzip_bomb)

    with Loopback(answer) as server:
        client = real_client(server.url)

        def call() -> None:
            with pytest.raises(KeyrunesProtocolError, match="larger than"):
                client.list_users(TOKEN)

        peak = peak_bytes(call)
    assert peak < 4 * MIB


def test_small_gzip_body_is_decoded(kr: KeyrunesClient, rsps: Any) -> None:
    rsps.get(
        BASE + "/api/me",
        body=gzip.compress(json.dumps(USER).encode()),
        headers={"Content-Encoding": "gzip"},
    )
    assert kr.me(TOKEN).username == "alice"


def test_corrupt_gzip_is_protocol_error(kr: KeyrunesClient, rsps: Any) -> None:
    rsps.get(BASE + "/api/me", body=b"not gzip at all", headers={"Content-Encoding": "gzip"})
    with pytest.raises(KeyrunesProtocolError, match="decompress"):
        kr.me(TOKEN)


def test_limit_counts_decompressed_bytes(kr: KeyrunesClient, rsps: Any) -> None:
    kr.max_response_bytes = 10_000
    body = big_username_body(20_000)
    rsps.get(BASE + "/api/me", body=gzip.compress(body), headers={"Content-Encoding": "gzip"})
    with pytest.raises(KeyrunesProtocolError, match="larger than 10000 bytes"):
        kr.me(TOKEN)


def test_per_call_max_bytes(kr: KeyrunesClient, rsps: Any) -> None:
    kr.max_response_bytes = 1000
    listing = json.dumps([{**USER, "user_id": n} for n in range(50)]).encode()
    rsps.get(BASE + "/api/admin/users", body=listing)
    with pytest.raises(KeyrunesProtocolError):
        kr.request("GET", "/api/admin/users")
    response = kr.request("GET", "/api/admin/users", max_bytes=len(listing))
    assert json.loads(response.content)[49]["user_id"] == 49


def test_oversized_error_body_is_refused(kr: KeyrunesClient, rsps: Any) -> None:
    kr.max_response_bytes = 100
    rsps.get(BASE + "/api/me", status=401, body="x" * 1000)
    with pytest.raises(KeyrunesProtocolError):
        kr.me(TOKEN)


# ------------------------------------------------------------------ streaming


def test_streamed_response_is_read_incrementally(kr: KeyrunesClient, rsps: Any) -> None:
    listing = json.dumps([{**USER, "user_id": n} for n in range(2000)]).encode()
    kr.max_response_bytes = 1000  # applies to whole bodies, not to a stream
    rsps.get(BASE + "/api/admin/users", body=listing)
    response = kr.request("GET", "/api/admin/users", stream=True)
    with response:
        chunks = list(kr.iter_body(response))
    assert len(chunks) > 1
    assert b"".join(chunks) == listing


def test_streamed_response_limit_and_errors(kr: KeyrunesClient, rsps: Any) -> None:
    rsps.get(BASE + "/api/admin/users", body=b"[" + b" " * 300_000 + b"]")
    rsps.get(BASE + "/api/admin/groups", status=500, body="boom")
    response = kr.request("GET", "/api/admin/users", stream=True)
    with response, pytest.raises(KeyrunesProtocolError, match="larger than 100000"):
        list(kr.iter_body(response, max_bytes=100_000))
    kr.retries = 0
    with pytest.raises(KeyrunesUnavailable, match="boom"):  # errors are read and raised
        kr.request("GET", "/api/admin/groups", stream=True)


def test_streamed_body_stays_under_the_call_deadline() -> None:
    rows = b"[" + b",".join(b"%d" % n for n in range(200)) + b"]"

    def answer(server: Loopback, conn: socket.socket) -> None:
        server.send(conn, head(len(rows)))
        drip(server, conn, rows, 0.01)

    with Loopback(answer) as server:
        client = real_client(server.url)
        response = client.request("GET", "/api/admin/users", stream=True, deadline=0.5)
        started = time.monotonic()
        with response, pytest.raises(KeyrunesUnavailable, match=r"0\.5 s deadline"):
            for _ in client.iter_body(response):
                pass
    assert time.monotonic() - started < 1.2


# ------------------------------------------------------------------ nested JSON


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
def test_deeply_nested_me_is_protocol_error(kr: KeyrunesClient, rsps: Any, depth: int) -> None:
    rsps.get(BASE + "/api/me", body='{"user_id": 7, "x": ' + nested(depth) + "}")
    with pytest.raises(KeyrunesProtocolError, match="nested"):
        kr.me(TOKEN)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
def test_deeply_nested_login_is_protocol_error(kr: KeyrunesClient, rsps: Any, depth: int) -> None:
    rsps.post(BASE + "/api/login", body=nested(depth))
    with pytest.raises(KeyrunesProtocolError, match="nested"):
        kr.login("alice", "pw")


@pytest.mark.parametrize("status", [400, 401, 500])
def test_deeply_nested_error_body_is_protocol_error(
    kr: KeyrunesClient, rsps: Any, status: int
) -> None:
    rsps.post(BASE + "/api/login", status=status, body='{"error": ' + nested(100_000) + "}")
    with pytest.raises(KeyrunesProtocolError, match="nested too deeply") as info:
        kr.login("alice", "pw")
    assert info.value.status_code == status


def test_deeply_nested_listing_is_protocol_error(kr: KeyrunesClient, rsps: Any) -> None:
    rsps.get(BASE + "/api/admin/users", body=nested(100_000))
    with pytest.raises(KeyrunesProtocolError):
        kr.list_users(TOKEN)


def test_nesting_up_to_the_limit_is_fine() -> None:
    assert load_json(nested(MAX_JSON_DEPTH)) is not None
    assert load_json(b'{"a": {"b": [1, {"c": null}]}}') == {"a": {"b": [1, {"c": None}]}}
    with pytest.raises(ValueError, match="deeper than"):
        load_json(nested(MAX_JSON_DEPTH + 1))
    with pytest.raises(ValueError):
        load_json(b"{")


def test_unknown_charset_in_error_body(kr: KeyrunesClient, rsps: Any) -> None:
    rsps.get(
        BASE + "/api/me",
        status=401,
        body=b"no such token",
        headers={"Content-Type": "text/plain; charset=x-made-up"},
    )
    with pytest.raises(AuthenticationFailed, match="no such token"):
        kr.me(TOKEN)


# ------------------------------------------------------------------ worst case


def test_worst_case_seconds() -> None:
    # 3 attempts x 13.05 s + 0.25 + 0.5 s of back-off, capped by the deadline.
    assert worst_case_seconds((3.05, 10.0), 2, 0.25, 100.0) == pytest.approx(39.9)
    assert worst_case_seconds((3.05, 10.0), 2, 0.25, 5.0) == 5.0
    assert worst_case_seconds(1, 0, 0.0, 60.0) == 2.0
    assert worst_case_seconds(1, 10**9, 1.0, 30.0) == 30.0  # stops adding at the cap


def limit_ids(**keyrunes: Any) -> list[str]:
    with override_settings(KEYRUNES={"BASE_URL": BASE, **keyrunes}):
        return [m.id or "" for m in check_client_limits()]


def test_client_limit_checks() -> None:
    assert limit_ids() == []
    for bad in (0, -1, "5", None, float("inf")):
        assert limit_ids(DEADLINE=bad) == ["keyrunes_django.E040"]
    for bad in (0, 1.5, "1"):
        assert limit_ids(MAX_RESPONSE_BYTES=bad) == ["keyrunes_django.E041"]
    assert limit_ids(DEADLINE=0, MAX_RESPONSE_BYTES=0, BREAKER_FAILURES=-1) == [
        "keyrunes_django.E040",
        "keyrunes_django.E041",
        "keyrunes_django.E042",
    ]


def test_w040_worst_case_over_25_seconds() -> None:
    # Today's defaults without a deadline: 3 x 13.05 s + back-off = 39.9 s.
    assert limit_ids(DEADLINE=60) == ["keyrunes_django.W040"]
    with override_settings(KEYRUNES={"BASE_URL": BASE, "DEADLINE": 60}):
        (warning,) = check_client_limits()
    assert "39.9 s" in warning.msg
    assert limit_ids(DEADLINE=25) == []  # the deadline caps it
    assert limit_ids(DEADLINE=60, TIMEOUT=2, RETRIES=1) == []  # 8.25 s
    assert limit_ids(DEADLINE=60, RETRIES=0) == []  # 13.05 s
    assert limit_ids(DEADLINE=60, TIMEOUT=None) == []  # E003 reports it
    assert limit_ids(DEADLINE=60, RETRIES="x") == []  # E008 reports it


def test_client_limit_checks_skip_a_non_dict() -> None:
    with override_settings(KEYRUNES=["BASE_URL"]):
        assert check_client_limits() == []


def test_adapter_reads_under_the_deadline_through_a_proxy_too() -> None:
    adapter = client_module.DeadlineAdapter()
    manager = adapter.proxy_manager_for("http://proxy.example:3128")
    assert manager.pool_classes_by_scheme["https"] is client_module._HTTPSConnectionPool
    assert adapter.poolmanager.pool_classes_by_scheme["http"] is client_module._HTTPConnectionPool


def test_deadline_reader_passes_fileno_and_close_through() -> None:
    left, right = socket.socketpair()
    with left, right:
        budget = client_module._Budget(time.monotonic() + 5, 1.0)
        reader = client_module._DeadlineReader(left, left.makefile("rb", buffering=0), budget)
        assert reader.fileno() == left.fileno()
        right.sendall(b"ok")
        assert reader.read(2) == b"ok"
        reader.close()
        reader.close()
        assert reader.closed
        expired = client_module._Budget(time.monotonic() - 1, 1.0)
        late = client_module._DeadlineReader(left, left.makefile("rb", buffering=0), expired)
        with pytest.raises(TimeoutError):
            late.read(1)
        late.close()
