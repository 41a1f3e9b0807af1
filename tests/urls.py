"""URLs used by the test suite; each feature's tests add their own views here."""

from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern, URLResolver, path

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/", admin.site.urls),
]

# Authorization: decorators, mixins and DRF permission classes.
from tests import views_authorization  # noqa: E402

urlpatterns += views_authorization.urlpatterns

# Login backend: LoginView, an admin site with the Keyrunes login form, a protected page.
from tests import views_backend  # noqa: E402

urlpatterns += views_backend.urlpatterns

# Password flows (change, forgot, reset).
from django.urls import include  # noqa: E402

urlpatterns += [path("account/", include("keyrunes_django.urls"))]
