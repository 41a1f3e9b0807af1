"""URLs of the example project."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.views import LoginView, LogoutView
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from example_project import api, ninja_api, views
from keyrunes_django.forms import KeyrunesAdminAuthenticationForm, KeyrunesAuthenticationForm

# The admin's login page tells an outage apart from a wrong password too.
admin.site.login_form = KeyrunesAdminAuthenticationForm

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.home, name="home"),
    path(
        "login/",
        LoginView.as_view(
            template_name="example/login.html",
            authentication_form=KeyrunesAuthenticationForm,
            redirect_authenticated_user=True,
        ),
        name="login",
    ),
    path("logout/", LogoutView.as_view(), name="logout"),
    path("account/", include("keyrunes_django.urls")),
    # Function views, one per decorator.
    path("members/", views.members, name="members"),
    path("editors/", views.editors, name="editors"),
    path("admin-area/", views.admin_area, name="admin-area"),
    path("docs/", views.docs_read, name="docs"),
    path("docs/edit/", views.docs_write, name="docs-edit"),
    # Class-based views, one per mixin.
    path("cbv/members/", views.MembersView.as_view(), name="cbv-members"),
    path("cbv/editors/", views.EditorsView.as_view(), name="cbv-editors"),
    path("cbv/admin-area/", views.AdminView.as_view(), name="cbv-admin-area"),
    path("cbv/docs/", views.DocsView.as_view(), name="cbv-docs"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "api/schema/swagger/",
        SpectacularSwaggerView.as_view(url_name="api-schema"),
        name="api-swagger",
    ),
    path("api/", include(api.urlpatterns)),
    path("ninja/", ninja_api.api.urls),
    # Container probes and Prometheus metrics.
    path("health/", include("keyrunes_django.health_urls")),
    path("admin/", admin.site.urls),
]
