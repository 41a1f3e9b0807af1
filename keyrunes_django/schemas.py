"""Pydantic models of the Keyrunes JSON API, with the server's own field names.

Responses ignore fields they do not know (the server may add some); a body of
the wrong shape fails validation, which :mod:`keyrunes_django.client` turns
into :class:`~keyrunes_django.exceptions.KeyrunesProtocolError`. Secrets
(tokens, passwords, organization keys) are excluded from ``repr`` so they do
not end up in logs or tracebacks by accident.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator
from pydantic import ValidationError as PydanticValidationError

from keyrunes_django.exceptions import InvalidToken
from keyrunes_django.identity import (
    IdentitySource,
    VerifiedIdentity,
    common_groups,
    common_string,
)

__all__ = [
    "AdminCheckPermissionRequest",
    "AdminPermissionCheck",
    "AdminUser",
    "AuthResponse",
    "ChangePasswordRequest",
    "CheckPermissionRequest",
    "CreateGroupRequest",
    "CreateOrganizationRequest",
    "CreatePolicyRequest",
    "CreateUserRequest",
    "Dashboard",
    "DashboardAdmin",
    "DatabaseHealth",
    "ForgotPasswordRequest",
    "ForgotPasswordResponse",
    "Group",
    "HealthLive",
    "HealthReady",
    "HealthStatus",
    "LoginRequest",
    "MessageResponse",
    "OrgKeyVerification",
    "Organization",
    "OrganizationKey",
    "OrganizationSecret",
    "PermissionCheck",
    "Policy",
    "RefreshTokenRequest",
    "RegisterRequest",
    "RequestModel",
    "ResetPasswordRequest",
    "TemporaryPassword",
    "TokenClaims",
    "TokenResponse",
    "UpdateProfileRequest",
    "UpdateUserRequest",
    "User",
]

# datetime.fromtimestamp() cannot go past 9999-12-31.
_MAX_TIMESTAMP = 253_402_300_799
#: The server's ids are 64-bit signed integers, from 1 up: what does not fit
#: (and would not fit a BigIntegerField either) is refused as malformed.
MAX_REMOTE_ID = 2**63 - 1
RemoteId = Annotated[int, Field(ge=0, le=MAX_REMOTE_ID)]
StrictRemoteId = Annotated[StrictInt, Field(ge=0, le=MAX_REMOTE_ID)]

PolicyEffect = Literal["Allow", "Deny"]


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are a programming error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> dict[str, Any]:
        """The JSON body; ``None`` fields are left out so the server's defaults apply."""
        return self.model_dump(mode="json", exclude_none=True)


# --------------------------------------------------------------------------- users


class User(_Response):
    """``UserResponse``: /api/me, register/login, profile and admin create/update."""

    user_id: RemoteId
    external_id: str | None = None
    email: str
    username: str
    groups: list[str]
    first_login: bool = False
    organization_id: RemoteId
    namespace: str

    def to_identity(self, source: IdentitySource = "remote") -> VerifiedIdentity:
        return VerifiedIdentity(
            user_id=self.user_id,
            username=self.username,
            email=self.email,
            namespace=self.namespace,
            organization_id=self.organization_id,
            groups=tuple(self.groups),
            external_id=self.external_id,
            source=source,
            payload=self.model_dump(mode="json"),
        )


class AuthResponse(_Response):
    """Answer of /api/register and /api/login."""

    user: User
    token: str = Field(repr=False)
    requires_password_change: bool = False


class AdminUser(_Response):
    """An element of ``GET /api/admin/users`` (no namespace/organization: the caller knows them)."""

    user_id: RemoteId
    external_id: str | None = None
    email: str
    username: str
    first_login: bool = False
    groups: list[str]
    created_at: datetime | None = None

    def to_identity(
        self, namespace: str, organization_id: int, source: IdentitySource = "sync"
    ) -> VerifiedIdentity:
        return VerifiedIdentity(
            user_id=self.user_id,
            username=self.username,
            email=self.email,
            namespace=namespace,
            organization_id=organization_id,
            groups=tuple(self.groups),
            external_id=self.external_id,
            source=source,
            payload=self.model_dump(mode="json"),
        )


class TokenResponse(_Response):
    """Answer of /api/refresh-token."""

    token: str = Field(repr=False)


class MessageResponse(_Response):
    message: str


class ForgotPasswordResponse(_Response):
    """Answer of /api/forgot-password; this server version leaks the token in ``reset_url``."""

    message: str
    reset_url: str | None = Field(default=None, repr=False)

    @property
    def reset_token(self) -> str | None:
        """The ``forgot_password`` query parameter of ``reset_url``, if any."""
        if not self.reset_url:
            return None
        values = parse_qs(urlsplit(self.reset_url).query).get("forgot_password")
        return values[0] if values else None


class TemporaryPassword(_Response):
    temporary_password: str = Field(repr=False)


# ------------------------------------------------------------- groups, policies, orgs


class Group(_Response):
    group_id: RemoteId
    external_id: str | None = None
    organization_id: RemoteId
    name: str
    description: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Policy(_Response):
    policy_id: RemoteId
    external_id: str | None = None
    organization_id: RemoteId
    name: str
    description: str | None = None
    resource: str
    action: str
    effect: PolicyEffect
    conditions: Any = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Organization(_Response):
    organization_id: RemoteId
    external_id: str | None = None
    name: str
    description: str | None = None
    secret_key: str | None = Field(default=None, repr=False)
    namespace: str
    base_url: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class OrganizationSecret(_Response):
    """Answer of ``GET /api/org/secret`` and ``POST /api/org/secret/rotate``."""

    organization_id: RemoteId
    secret_key: str = Field(repr=False)


class OrganizationKey(_Response):
    """Answer of ``POST /api/admin/organizations/{id}/rotate-key``."""

    organization_id: RemoteId
    secret_key: str = Field(repr=False)
    message: str | None = None


# ------------------------------------------------------------------- permissions


class PermissionCheck(_Response):
    """Answer of ``POST /api/check-permission`` (organization key or superadmin token)."""

    allowed: StrictBool
    user_id: RemoteId | None = None
    resource: str | None = None
    action: str | None = None


class AdminPermissionCheck(_Response):
    """Answer of ``POST /api/admin/check-permission``."""

    has_permission: StrictBool
    user_id: RemoteId | None = None
    group_name: str | None = None
    resource: str | None = None
    action: str | None = None


class OrgKeyVerification(_Response):
    """What ``GET /api/verify-org-key`` is meant to answer (it answers 500 on this server)."""

    status: str
    organization: str | None = None
    organization_id: RemoteId | None = None


# ------------------------------------------------------------------------ health


class DatabaseHealth(_Response):
    status: str
    response_time_ms: int | None = None
    active_connections: int | None = None


class HealthStatus(_Response):
    """``GET /api/health`` (200 healthy, 503 unhealthy, same body)."""

    status: str
    timestamp: datetime | None = None
    version: str | None = None
    uptime_seconds: int | None = None
    database: DatabaseHealth | None = None
    services: dict[str, str] = Field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"


class HealthReady(_Response):
    status: str
    timestamp: datetime | None = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"


class HealthLive(_Response):
    status: str
    timestamp: datetime | None = None
    version: str | None = None

    @property
    def alive(self) -> bool:
        return self.status == "alive"


class DashboardAdmin(_Response):
    user_id: RemoteId
    username: str
    email: str
    groups: list[str] = Field(default_factory=list)


class Dashboard(_Response):
    total_users: int
    total_groups: int
    total_policies: int
    current_admin: DashboardAdmin | None = None


# ---------------------------------------------------------------------- requests


class RegisterRequest(RequestModel):
    email: str
    username: str
    password: str = Field(repr=False)
    namespace: str
    organization_id: int | None = None


class LoginRequest(RequestModel):
    identity: str
    password: str = Field(repr=False)
    namespace: str


class RefreshTokenRequest(RequestModel):
    token: str = Field(repr=False)


class UpdateProfileRequest(RequestModel):
    email: str | None = None
    username: str | None = None


class ChangePasswordRequest(RequestModel):
    current_password: str = Field(repr=False)
    new_password: str = Field(repr=False)


class ForgotPasswordRequest(RequestModel):
    email: str
    namespace: str


class ResetPasswordRequest(RequestModel):
    token: str = Field(repr=False)
    new_password: str = Field(repr=False)
    namespace: str


class CheckPermissionRequest(RequestModel):
    # The server wants a JSON integer here, not a numeric string.
    user_id: StrictInt
    resource: str
    action: str


class AdminCheckPermissionRequest(RequestModel):
    user_id: int
    group_name: str = ""  # required by the server, never used by it
    resource: str
    action: str

    def to_json(self) -> dict[str, Any]:
        # group_name must be sent even when empty.
        return self.model_dump(mode="json")


class CreateUserRequest(RequestModel):
    organization_id: int
    email: str
    username: str
    password: str = Field(repr=False)
    groups: list[str] | None = None
    first_login: bool | None = None


class UpdateUserRequest(RequestModel):
    email: str | None = None
    username: str | None = None
    first_login: bool | None = None


class CreateGroupRequest(RequestModel):
    organization_id: int
    name: str
    description: str | None = None


class CreatePolicyRequest(RequestModel):
    organization_id: StrictInt
    name: str
    description: str | None = None
    resource: str
    action: str
    effect: PolicyEffect = "Allow"
    conditions: Any = None


class CreateOrganizationRequest(RequestModel):
    name: str
    namespace: str
    description: str | None = None
    base_url: str | None = None


# ------------------------------------------------------------------------- JWT


class TokenClaims(_Response):
    """The claims of a Keyrunes JWT, typed as strictly as the server checks them."""

    sub: StrictStr
    email: StrictStr
    username: StrictStr
    groups: list[StrictStr]
    namespace: StrictStr
    organization_id: StrictRemoteId
    exp: StrictInt
    iat: StrictInt
    iss: StrictStr

    @field_validator("sub")
    @classmethod
    def _sub_is_decimal(cls, value: str) -> str:
        # One spelling per id ("5", never "05"), and an id the server can hold.
        if not value.isascii() or not value.isdigit():
            raise ValueError("sub must be a decimal user id")
        if len(value) > len(str(MAX_REMOTE_ID)) or int(value) > MAX_REMOTE_ID:
            raise ValueError("sub is out of range")
        if str(int(value)) != value:
            raise ValueError("sub must be written without leading zeros")
        return value

    @field_validator("exp", "iat")
    @classmethod
    def _timestamp_in_range(cls, value: int) -> int:
        if not 0 <= value <= _MAX_TIMESTAMP:
            raise ValueError("timestamp out of range")
        return value

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> TokenClaims:
        """Validate a decoded payload, raising ``InvalidToken(reason="malformed")`` if invalid."""
        try:
            return cls.model_validate(dict(payload))
        except (PydanticValidationError, TypeError, ValueError) as exc:
            raise InvalidToken("The token's claims are malformed.", reason="malformed") from exc

    @property
    def user_id(self) -> int:
        return int(self.sub)

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.exp, tz=timezone.utc)

    @property
    def issued_at(self) -> datetime:
        return datetime.fromtimestamp(self.iat, tz=timezone.utc)

    def to_identity(self, source: IdentitySource = "token") -> VerifiedIdentity:
        # The payload holds the same string objects as the identity's fields, and
        # values many tokens repeat (namespace, groups, issuer) are shared: a
        # process may remember many thousands of identities.
        groups = [common_string(g) for g in self.groups]
        namespace = common_string(self.namespace)
        payload: dict[str, object] = {
            "sub": self.sub,
            "email": self.email,
            "username": self.username,
            "groups": groups,
            "namespace": namespace,
            "organization_id": self.organization_id,
            "exp": self.exp,
            "iat": self.iat,
            "iss": common_string(self.iss),
        }
        return VerifiedIdentity(
            user_id=self.user_id,
            username=self.username,
            email=self.email,
            namespace=namespace,
            organization_id=self.organization_id,
            groups=common_groups(groups),
            expires_at=self.expires_at,
            issued_at=self.issued_at,
            external_id=None,
            source=source,
            payload=payload,
        )
