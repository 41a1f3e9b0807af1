"""Views for the login backend tests: LoginView with the Keyrunes form, an admin site
using the Keyrunes admin login form, and a page that needs a logged-in user."""

from __future__ import annotations

from django.contrib.admin import AdminSite
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, JsonResponse
from django.urls import URLPattern, URLResolver, path
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from keyrunes_django.forms import KeyrunesAdminAuthenticationForm, KeyrunesAuthenticationForm

backend_admin_site = AdminSite(name="backend_admin")
backend_admin_site.login_form = KeyrunesAdminAuthenticationForm


@login_required
def whoami(request: HttpRequest) -> JsonResponse:
    user = request.user
    return JsonResponse(
        {
            "username": user.get_username(),
            "groups": sorted(user.groups.values_list("name", flat=True)),  # type: ignore[union-attr]
        }
    )


class DrfWhoAmI(APIView):
    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({"username": request.user.get_username()})


class DrfBasicWhoAmI(APIView):
    """DRF Basic auth: authenticate() without login(); shows what the user object carries."""

    authentication_classes = [BasicAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        keyrunes_attributes = sorted(name for name in vars(request.user) if "keyrunes" in name)
        return Response(
            {"username": request.user.get_username(), "attributes": keyrunes_attributes}
        )


urlpatterns: list[URLPattern | URLResolver] = [
    path(
        "backend/login/",
        LoginView.as_view(
            template_name="testapp/backend_login.html",
            authentication_form=KeyrunesAuthenticationForm,
            next_page="/backend/whoami/",
        ),
        name="backend-login",
    ),
    path(
        "backend/plain-login/",
        LoginView.as_view(template_name="testapp/backend_login.html", next_page="/backend/whoami/"),
        name="backend-plain-login",
    ),
    path("backend/whoami/", whoami, name="backend-whoami"),
    path("backend/drf-whoami/", DrfWhoAmI.as_view(), name="backend-drf-whoami"),
    path("backend/drf-basic-whoami/", DrfBasicWhoAmI.as_view(), name="backend-drf-basic-whoami"),
    path("backend-admin/", backend_admin_site.urls),
]
