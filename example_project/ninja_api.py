"""The example API again, with django-ninja: auth classes, requirements and decorators.

Served under ``/ninja/``; its OpenAPI schema is ``/ninja/openapi.json`` and its
Swagger UI ``/ninja/docs``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import NinjaAPI, Router

from keyrunes_django.authorization import get_identity
from keyrunes_django.identity import OrganizationPrincipal, VerifiedIdentity
from keyrunes_django.ninja import (
    KeyrunesBearer,
    KeyrunesOrganizationKey,
    register_exception_handlers,
    require_group,
    require_permission,
)

api = register_exception_handlers(
    NinjaAPI(
        title="Keyrunes example API (django-ninja)",
        version="0.1.0",
        urls_namespace="example-ninja",
        auth=[KeyrunesBearer(), KeyrunesOrganizationKey()],
    )
)


def caller(request: HttpRequest) -> dict[str, Any]:
    principal = get_identity(request)
    if isinstance(principal, VerifiedIdentity):
        return {
            "kind": "user",
            "username": principal.username,
            "groups": sorted(principal.groups or ()),
            "is_admin": principal.is_admin,
        }
    if isinstance(principal, OrganizationPrincipal):
        return {"kind": "organization", "organization_id": principal.organization_id}
    return {"kind": "anonymous"}


@api.get("/me", summary="Any Keyrunes user or organization key")
def me(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


@api.get("/editors", auth=KeyrunesBearer(groups="editors"), summary="Group editors")
def editors(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


@api.get("/admin", auth=KeyrunesBearer(admin=True), summary="Keyrunes admins")
def admin(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


@api.get("/handbook/{section}", summary="Policy docs:{section} read")
@require_permission("docs:{section}", "read")
def handbook(request: HttpRequest, section: str) -> dict[str, Any]:
    return {"section": section, **caller(request)}


@api.get("/staff", summary="Groups users and editors (decorator)")
@require_group("users", "editors", all_groups=True)
def staff(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


@api.get("/organization", auth=KeyrunesOrganizationKey(), summary="X-Organization-Key only")
def organization(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


# A router whose every operation needs the policy docs:handbook write.
writers = Router(auth=KeyrunesBearer(permission=("docs:handbook", "write")), tags=["writers"])


@writers.get("/draft", summary="Policy docs:handbook write (router-wide)")
def draft(request: HttpRequest) -> dict[str, Any]:
    return caller(request)


api.add_router("/writers", writers)
