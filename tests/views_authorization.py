"""Views protected by every decorator, mixin and DRF permission class (authorization tests)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views import View
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from keyrunes_django.decorators import (
    keyrunes_login_required,
    require_admin,
    require_group,
    require_permission,
)
from keyrunes_django.drf import permissions as kp
from keyrunes_django.drf.authentication import (
    KeyrunesOrganizationKeyAuthentication,
    KeyrunesTokenAuthentication,
)
from keyrunes_django.mixins import (
    AdminRequiredMixin,
    GroupRequiredMixin,
    KeyrunesLoginRequiredMixin,
    PermissionRequiredMixin,
)


def ok(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return JsonResponse({"ok": True, "kwargs": {k: str(v) for k, v in kwargs.items()}})


async def aok(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return JsonResponse({"ok": True, "async": True})


def doc_resource(request: HttpRequest, pk: int) -> str:
    return f"docs:{pk}"


def tenant_context(request: HttpRequest) -> Mapping[str, Any]:
    return {"tenant": request.GET.get("tenant", "none")}


# Function views: (name, decorator) pairs, each mounted sync and async.
DECORATED: dict[str, Any] = {
    "login": keyrunes_login_required,
    "login-org": keyrunes_login_required(allow_organization=True),
    "login-raise": keyrunes_login_required(raise_exception=True),
    "group-any": require_group("editors", "writers"),
    "group-all": require_group("editors", "writers", all_groups=True),
    "group-raise": require_group("editors", raise_exception=True),
    "admin": require_admin(),
    "admin-raise": require_admin(raise_exception=True),
    "perm": require_permission("docs:*", "read"),
    "perm-write": require_permission("docs:*", "write"),
}


# --------------------------------------------------------------- class-based


class LoginView(KeyrunesLoginRequiredMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return ok(request)


class LoginOrgView(KeyrunesLoginRequiredMixin, View):
    allow_organization = True

    def get(self, request: HttpRequest) -> HttpResponse:
        return ok(request)


class GroupAnyView(GroupRequiredMixin, View):
    required_groups = ("editors", "writers")

    def get(self, request: HttpRequest) -> HttpResponse:
        return ok(request)


class GroupAllView(GroupRequiredMixin, View):
    required_groups = ("editors", "writers")
    all_groups = True

    def get(self, request: HttpRequest) -> HttpResponse:
        return ok(request)


class GroupRaiseView(GroupRequiredMixin, View):
    required_groups = "editors"
    raise_exception = True

    def get(self, request: HttpRequest) -> HttpResponse:
        return ok(request)


class AdminView(AdminRequiredMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return ok(request)


class PermView(PermissionRequiredMixin, View):
    required_permission = ("docs:*", "read")

    def get(self, request: HttpRequest) -> HttpResponse:
        return ok(request)


class PermWriteView(PermissionRequiredMixin, View):
    required_permission = ("docs:*", "write")

    def get(self, request: HttpRequest) -> HttpResponse:
        return ok(request)


class AsyncGroupAnyView(GroupRequiredMixin, View):
    required_groups = ("editors", "writers")

    async def get(self, request: HttpRequest) -> HttpResponse:
        return JsonResponse({"ok": True, "async": True})


class AsyncAdminView(AdminRequiredMixin, View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        return JsonResponse({"ok": True, "async": True})


class AsyncPermView(PermissionRequiredMixin, View):
    required_permission = ("docs:*", "read")

    async def get(self, request: HttpRequest) -> HttpResponse:
        return JsonResponse({"ok": True, "async": True})


class DocObjectView(PermissionRequiredMixin, View):
    """Object-level: the resource is built from the URL's document id."""

    required_permission = ("docs:{pk}", "read")

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        return ok(request, pk=pk)


class DocObjectOverrideView(PermissionRequiredMixin, View):
    required_permission = ("unused", "read")

    def get_permission_resource(self) -> str:
        return f"docs:{self.kwargs['pk']}"

    def get_permission_context(self) -> Mapping[str, Any] | None:
        return {"unused": True}

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        return ok(request, pk=pk)


MIXIN_VIEWS: dict[str, type[View]] = {
    "login": LoginView,
    "login-org": LoginOrgView,
    "group-any": GroupAnyView,
    "group-all": GroupAllView,
    "group-raise": GroupRaiseView,
    "admin": AdminView,
    "perm": PermView,
    "perm-write": PermWriteView,
    "async-group-any": AsyncGroupAnyView,
    "async-admin": AsyncAdminView,
    "async-perm": AsyncPermView,
}


# ----------------------------------------------------------------------- DRF


AUTHENTICATION = [
    KeyrunesTokenAuthentication,
    KeyrunesOrganizationKeyAuthentication,
    SessionAuthentication,
]


def drf_view(permission: Any) -> Any:
    class _View(APIView):
        authentication_classes = AUTHENTICATION
        permission_classes = [permission]

        def get(self, request: Request, **kwargs: Any) -> Response:
            return Response({"ok": True})

    return _View.as_view()


class DocDetail(APIView):
    """Object-level DRF permissions: the object is looked up by ``pk``."""

    authentication_classes = AUTHENTICATION
    permission_classes = [kp.HasObjectPermission("docs:{obj.pk}", "read")]

    def get(self, request: Request, pk: int) -> Response:
        obj = type("Doc", (), {"pk": pk})()
        self.check_object_permissions(request, obj)
        return Response({"ok": True, "pk": pk})


DRF_PERMISSIONS: dict[str, Any] = {
    "authenticated": kp.IsKeyrunesAuthenticated,
    "authenticated-org": kp.IsKeyrunesAuthenticated(allow_organization=True),
    "admin": kp.IsKeyrunesAdmin,
    "group-any": kp.HasGroup("editors", "writers"),
    "group-all": kp.HasAllGroups("editors", "writers"),
    "perm": kp.HasPermission("docs:*", "read"),
    "perm-write": kp.HasPermission("docs:*", "write"),
    "organization": kp.IsOrganization,
    "organization-1": kp.IsOrganization(1),
    "organization-2": kp.IsOrganization(2),
    "and": kp.IsKeyrunesAuthenticated & kp.HasGroup("editors"),
    "or": kp.HasGroup("editors") | kp.IsKeyrunesAdmin,
    "not": ~kp.HasGroup("editors"),
    "not-admin-and-auth": kp.IsKeyrunesAuthenticated & ~kp.IsKeyrunesAdmin,
    "nested": (kp.HasGroup("editors") & kp.HasPermission("docs:*", "read"))
    | kp.IsOrganization(1),
}


urlpatterns = [
    *[path(f"authz/fn/{name}/", dec(ok)) for name, dec in DECORATED.items()],
    *[path(f"authz/afn/{name}/", dec(aok)) for name, dec in DECORATED.items()],
    path(
        "authz/fn/doc/<int:pk>/",
        require_permission(doc_resource, "read")(ok),
    ),
    path(
        "authz/fn/doc-template/<int:pk>/",
        require_permission("docs:{pk}", "read")(ok),
    ),
    path(
        "authz/fn/tenant/",
        require_permission("reports:{tenant}", "read", context=tenant_context)(ok),
    ),
    path(
        "authz/fn/static-context/",
        require_permission("reports:{tenant}", "read", context={"tenant": "acme"})(ok),
    ),
    path("authz/fn/bad-template/", require_permission("reports:{missing}", "read")(ok)),
    path("api/authz/fn/group-any/", require_group("editors", "writers")(ok)),
    *[path(f"authz/cbv/{name}/", view.as_view()) for name, view in MIXIN_VIEWS.items()],
    path("authz/cbv/doc/<int:pk>/", DocObjectView.as_view()),
    path("authz/cbv/doc-override/<int:pk>/", DocObjectOverrideView.as_view()),
    *[path(f"authz/drf/{name}/", drf_view(perm)) for name, perm in DRF_PERMISSIONS.items()],
    path("authz/drf/doc/<int:pk>/", DocDetail.as_view()),
]
