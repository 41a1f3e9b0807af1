"""The pydantic models: real field names, extra fields ignored, strict JWT claims."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from keyrunes_django.exceptions import InvalidToken
from keyrunes_django.schemas import (
    AdminCheckPermissionRequest,
    AdminUser,
    AuthResponse,
    CheckPermissionRequest,
    CreatePolicyRequest,
    CreateUserRequest,
    ForgotPasswordResponse,
    LoginRequest,
    Organization,
    Policy,
    RegisterRequest,
    TokenClaims,
    User,
)

CLAIMS: dict[str, Any] = {
    "sub": "7",
    "email": "alice@example.com",
    "username": "alice",
    "groups": ["users", "admin"],
    "namespace": "company_x",
    "organization_id": 2,
    "exp": 1767373200,
    "iat": 1767369600,
    "iss": "keyrunes",
}
USER = {
    "user_id": 7,
    "external_id": "u-7",
    "email": "alice@example.com",
    "username": "alice",
    "groups": ["users"],
    "first_login": True,
    "organization_id": 1,
    "namespace": "public",
}


def test_token_claims_to_identity() -> None:
    claims = TokenClaims.model_validate({**CLAIMS, "extra": "ignored"})
    assert claims.user_id == 7
    identity = claims.to_identity()
    assert identity.user_id == 7
    assert identity.namespace == "company_x"
    assert identity.organization_id == 2
    assert identity.groups == ("users", "admin")
    assert identity.source == "token"
    assert identity.expires_at == datetime(2026, 1, 2, 17, 0, tzinfo=timezone.utc)
    assert identity.issued_at == datetime(2026, 1, 2, 16, 0, tzinfo=timezone.utc)
    assert identity.expires_at.tzinfo is not None
    assert identity.is_tenant_admin
    assert not identity.is_global_superadmin
    assert identity.payload["sub"] == "7"
    assert claims.to_identity(source="remote").source == "remote"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sub", 7),  # the server writes sub as a string
        ("sub", "abc"),
        ("sub", "-1"),
        ("sub", "٣"),  # non-ASCII digit
        ("organization_id", "2"),
        ("organization_id", 2.0),
        ("exp", 1.7e9),
        ("exp", "1767373200"),
        ("iat", True),
        ("exp", -5),
        ("exp", 10**13),
        ("groups", "users"),
        ("groups", [1]),
        ("email", None),
        ("iss", 1),
    ],
)
def test_token_claims_are_strict(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        TokenClaims.model_validate({**CLAIMS, field: value})
    with pytest.raises(InvalidToken) as info:
        TokenClaims.from_payload({**CLAIMS, field: value})
    assert info.value.reason == "malformed"


@pytest.mark.parametrize(
    "missing",
    ["sub", "email", "username", "groups", "namespace", "organization_id", "exp", "iat", "iss"],
)
def test_token_claims_require_every_claim(missing: str) -> None:
    payload = {k: v for k, v in CLAIMS.items() if k != missing}
    with pytest.raises(InvalidToken):
        TokenClaims.from_payload(payload)


def test_from_payload_accepts_valid() -> None:
    assert TokenClaims.from_payload(CLAIMS).organization_id == 2


def test_user_to_identity() -> None:
    identity = User.model_validate(USER).to_identity()
    assert identity.source == "remote"
    assert identity.external_id == "u-7"
    assert identity.groups == ("users",)
    assert identity.expires_at is None
    assert User.model_validate(USER).to_identity(source="login").source == "login"


def test_admin_user_to_identity() -> None:
    row = {k: v for k, v in USER.items() if k not in ("organization_id", "namespace")}
    admin_user = AdminUser.model_validate({**row, "created_at": "2026-01-02T10:00:00.123456Z"})
    identity = admin_user.to_identity("company_x", 2)
    assert (identity.namespace, identity.organization_id, identity.source) == (
        "company_x",
        2,
        "sync",
    )
    assert admin_user.created_at == datetime(2026, 1, 2, 10, 0, 0, 123456, tzinfo=timezone.utc)


def test_user_requires_core_fields() -> None:
    with pytest.raises(ValidationError):
        User.model_validate({k: v for k, v in USER.items() if k != "groups"})


def test_auth_response_hides_token_in_repr() -> None:
    answer = AuthResponse.model_validate({"user": USER, "token": "secret.jwt.value"})
    assert answer.requires_password_change is False
    assert "secret.jwt.value" not in repr(answer)


@pytest.mark.parametrize(
    ("url", "token"),
    [
        ("?forgot_password=abc123", "abc123"),
        ("https://app.example.com/reset-password?forgot_password=ff00&x=1", "ff00"),
        ("https://app.example.com/reset-password", None),
        (None, None),
        ("", None),
    ],
)
def test_forgot_password_reset_token(url: str | None, token: str | None) -> None:
    assert ForgotPasswordResponse(message="m", reset_url=url).reset_token == token


def test_policy_effect_is_exact() -> None:
    base = {
        "policy_id": 1,
        "organization_id": 1,
        "name": "n",
        "resource": "r",
        "action": "a",
    }
    assert Policy.model_validate({**base, "effect": "Deny"}).effect == "Deny"
    with pytest.raises(ValidationError):
        Policy.model_validate({**base, "effect": "DENY"})
    with pytest.raises(ValidationError):
        CreatePolicyRequest(organization_id=1, name="n", resource="r", action="a", effect="ALLOW")  # type: ignore[arg-type]


def test_organization_hides_secret() -> None:
    org = Organization.model_validate(
        {"organization_id": 2, "name": "X", "namespace": "x", "secret_key": "the-key"}
    )
    assert org.secret_key == "the-key"
    assert "the-key" not in repr(org)


def test_request_bodies() -> None:
    assert RegisterRequest(email="e", username="u", password="p", namespace="n").to_json() == {
        "email": "e",
        "username": "u",
        "password": "p",
        "namespace": "n",
    }
    login = LoginRequest(identity="u", password="pw-secret", namespace="public")
    assert "pw-secret" not in repr(login)
    body = CreateUserRequest(
        organization_id=1, email="e", username="u", password="p", first_login=False
    )
    assert body.to_json() == {
        "organization_id": 1,
        "email": "e",
        "username": "u",
        "password": "p",
        "first_login": False,
    }
    assert (
        AdminCheckPermissionRequest(user_id=1, resource="r", action="a").to_json()["group_name"]
        == ""
    )
    with pytest.raises(ValidationError):
        CheckPermissionRequest(user_id="1", resource="r", action="a")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        LoginRequest(identity="u", password="p", namespace="n", admin_key="x")  # type: ignore[call-arg]


def _remote_id_fields() -> list[tuple[str, str, Any]]:
    """Every ``*_id`` field of Keyrunes' answers that holds a number, with its validator."""
    from typing import Annotated

    from pydantic import BaseModel, TypeAdapter

    from keyrunes_django import schemas

    found = []
    for name in dir(schemas):
        model = getattr(schemas, name)
        if not (
            isinstance(model, type)
            and issubclass(model, BaseModel)
            and issubclass(model, schemas._Response)
        ):
            continue
        for field_name, field in model.model_fields.items():
            if not field_name.endswith("_id") or "int" not in repr(field.annotation):
                continue
            annotation = (
                Annotated[(field.annotation, *field.metadata)]
                if field.metadata
                else field.annotation
            )
            found.append((name, field_name, TypeAdapter(annotation)))
    return found


REMOTE_ID_FIELDS = _remote_id_fields()


def test_every_remote_id_field_is_found() -> None:
    names = {(model, field) for model, field, _ in REMOTE_ID_FIELDS}
    assert {("Group", "group_id"), ("Policy", "policy_id"), ("User", "user_id")} <= names
    assert ("OrgKeyVerification", "organization_id") in names


@pytest.mark.parametrize(
    ("model", "field", "adapter"),
    REMOTE_ID_FIELDS,
    ids=[f"{m}.{f}" for m, f, _ in REMOTE_ID_FIELDS],
)
def test_ids_past_64_bits_are_refused_in_every_answer(model: str, field: str, adapter: Any) -> None:
    """The server's ids are signed 64-bit: a larger one would not fit the mirror's columns."""
    assert adapter.validate_python(2**63 - 1) == 2**63 - 1
    for value in (2**63, 2**64 + 5, -1):
        with pytest.raises(ValidationError):
            adapter.validate_python(value)
