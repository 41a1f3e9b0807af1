"""Pages of the example site, one behind each decorator and mixin."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.generic import TemplateView

from keyrunes_django.authorization import get_identity
from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.decorators import (
    keyrunes_login_required,
    require_admin,
    require_group,
    require_permission,
)
from keyrunes_django.mixins import (
    AdminRequiredMixin,
    GroupRequiredMixin,
    KeyrunesLoginRequiredMixin,
    PermissionRequiredMixin,
)
from keyrunes_django.sessions import get_session_token

PAGE = "example/page.html"


def _page(request: HttpRequest, heading: str, guard: str) -> HttpResponse:
    return render(request, PAGE, {"heading": heading, "guard": guard})


def api_demo(request: HttpRequest) -> dict[str, str] | None:
    """For the demo's home page: a curl line with the signed-in user's own token.

    Only with ``DEBUG`` and ``EXAMPLE_SHOW_API_TOKEN`` (scripts/demo.sh sets
    both): a token on a page is for a demo on one's own machine, never for a
    deployed site.
    """
    if not (settings.DEBUG and getattr(settings, "EXAMPLE_SHOW_API_TOKEN", False)):
        return None
    token = get_session_token(request)
    if token is None:
        return None
    api_url = request.build_absolute_uri(reverse("api-me"))
    return {
        "curl": f"curl -H 'Authorization: Bearer {token}' {api_url}",
        "ninja_curl": f"curl -H 'Authorization: Bearer {token}' "
        + request.build_absolute_uri("/ninja/me"),
        "keyrunes_url": str(keyrunes_settings.BASE_URL),
    }


def home(request: HttpRequest) -> HttpResponse:
    context = {"identity": get_identity(request), "api_demo": api_demo(request)}
    return render(request, "example/home.html", context)


@keyrunes_login_required
def members(request: HttpRequest) -> HttpResponse:
    return _page(request, "Members area", "@keyrunes_login_required")


@require_group("editors")
def editors(request: HttpRequest) -> HttpResponse:
    return _page(request, "Editors' room", '@require_group("editors")')


@require_admin()
def admin_area(request: HttpRequest) -> HttpResponse:
    return _page(request, "Administration", "@require_admin()")


@require_permission("docs:handbook", "read")
def docs_read(request: HttpRequest) -> HttpResponse:
    return _page(request, "The handbook", '@require_permission("docs:handbook", "read")')


@require_permission("docs:handbook", "write")
def docs_write(request: HttpRequest) -> HttpResponse:
    return _page(request, "Edit the handbook", '@require_permission("docs:handbook", "write")')


class _Page(TemplateView):
    template_name = PAGE
    heading = ""
    guard = ""

    def get_context_data(self, **kwargs: object) -> dict[str, object]:
        context = super().get_context_data(**kwargs)
        context.update(heading=self.heading, guard=self.guard)
        return context


class MembersView(KeyrunesLoginRequiredMixin, _Page):
    heading = "Members area (class-based)"
    guard = "KeyrunesLoginRequiredMixin"


class EditorsView(GroupRequiredMixin, _Page):
    required_groups = ("editors",)
    heading = "Editors' room (class-based)"
    guard = "GroupRequiredMixin"


class AdminView(AdminRequiredMixin, _Page):
    heading = "Administration (class-based)"
    guard = "AdminRequiredMixin"


class DocsView(PermissionRequiredMixin, _Page):
    required_permission = ("docs:handbook", "read")
    heading = "The handbook (class-based)"
    guard = "PermissionRequiredMixin"
