"""The example API: token and organization-key authentication, every permission class."""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, path
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from keyrunes_django.authorization import get_identity
from keyrunes_django.conf import on_settings_changed
from keyrunes_django.drf.authentication import (
    KeyrunesOrganizationKeyAuthentication,
    KeyrunesTokenAuthentication,
)
from keyrunes_django.drf.permissions import (
    HasAllGroups,
    HasGroup,
    HasPermission,
    IsKeyrunesAdmin,
    IsKeyrunesAuthenticated,
    IsOrganization,
)
from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity
from keyrunes_django.tokens import TokenAuthenticator


def describe(request: Request) -> dict[str, Any]:
    """Who is calling, as the permission classes see it."""
    principal = get_identity(request)
    if isinstance(principal, VerifiedIdentity):
        return {
            "kind": "user",
            "user_id": principal.user_id,
            "username": principal.username,
            "namespace": principal.namespace,
            "groups": sorted(principal.groups or ()),
            "is_admin": principal.is_admin,
        }
    if isinstance(principal, OrganizationPrincipal):
        return {"kind": "organization", "organization_id": principal.organization_id}
    return {"kind": "session", "username": request.user.get_username()}


class CallerSerializer(serializers.Serializer[dict[str, Any]]):
    """The answer of every example endpoint (for the OpenAPI schema)."""

    ok = serializers.BooleanField()
    note = serializers.CharField(help_text="The permission classes of this endpoint.")
    caller = serializers.DictField(help_text="Who is calling, as the permissions see it.")


class ExampleAPIView(APIView):
    serializer_class = CallerSerializer
    authentication_classes = [KeyrunesTokenAuthentication, KeyrunesOrganizationKeyAuthentication]
    permission_classes: Any = [IsKeyrunesAuthenticated]
    note = ""

    def get(self, request: Request) -> Response:
        return Response({"ok": True, "note": self.note, "caller": describe(request)})


def api_view(name: str, permission: type[BasePermission] | Any, note: str) -> URLPattern:
    # HasGroup.configure("editors") is HasGroup("editors") in a form type checkers follow.
    view: type[ExampleAPIView] = type(
        f"{name.title().replace('-', '')}API",
        (ExampleAPIView,),
        {"permission_classes": [permission], "note": note},
    )
    return path(f"{name}/", view.as_view(), name=f"api-{name}")


class StatelessAuthenticator(TokenAuthenticator):
    """The request path with one step changed: users are built from the token, no row."""

    def __init__(self) -> None:
        super().__init__()
        self.stateless = True


_stateless: StatelessAuthenticator | None = None


@on_settings_changed
def _forget_stateless() -> None:
    global _stateless
    _stateless = None


class StatelessTokenAuthentication(KeyrunesTokenAuthentication):
    """``KeyrunesTokenAuthentication`` over :class:`StatelessAuthenticator`.

    A whole project switches with ``KEYRUNES["STATELESS_USERS"] = True``; this
    endpoint shows it alone: ``request.user`` is a ``StatelessUser``, and no
    database query is made.
    """

    def get_authenticator(self) -> TokenAuthenticator:
        global _stateless
        if _stateless is None:
            _stateless = StatelessAuthenticator()
        return _stateless


class StatelessAPIView(ExampleAPIView):
    authentication_classes = [StatelessTokenAuthentication]
    permission_classes: Any = [HasGroup.configure("users")]
    note = "StatelessUser (no database row): HasGroup('users')"

    def get(self, request: Request) -> Response:
        answer = super().get(request).data
        answer["user_class"] = type(request.user).__name__
        return Response(answer)


urlpatterns: list[URLPattern] = [
    path("stateless/", StatelessAPIView.as_view(), name="api-stateless"),
    api_view("me", IsKeyrunesAuthenticated, "IsKeyrunesAuthenticated"),
    api_view("admin", IsKeyrunesAdmin, "IsKeyrunesAdmin"),
    api_view("editors", HasGroup.configure("editors"), 'HasGroup("editors")'),
    api_view(
        "staff", HasAllGroups.configure("users", "editors"), 'HasAllGroups("users", "editors")'
    ),
    api_view("docs", HasPermission.configure("docs:handbook", "read"), "docs:handbook read"),
    api_view(
        "docs-write", HasPermission.configure("docs:handbook", "write"), "docs:handbook write"
    ),
    api_view(
        "editors-or-admins",
        IsKeyrunesAuthenticated & (HasGroup.configure("editors") | IsKeyrunesAdmin),
        "IsKeyrunesAuthenticated & (HasGroup('editors') | IsKeyrunesAdmin)",
    ),
    api_view(
        "readers-only",
        IsKeyrunesAuthenticated & ~HasGroup.configure("editors"),
        "IsKeyrunesAuthenticated & ~HasGroup('editors')",
    ),
    api_view("organization", IsOrganization, "IsOrganization (X-Organization-Key)"),
    api_view(
        "me-or-organization",
        IsKeyrunesAuthenticated.configure(allow_organization=True),
        "IsKeyrunesAuthenticated(allow_organization=True)",
    ),
]
