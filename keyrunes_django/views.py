"""Password change, forgot and reset views for Keyrunes users.

Include them with ``path("account/", include("keyrunes_django.urls"))``. A
signed-in user mirrored from Keyrunes changes their password through Keyrunes
(with the session's token); a local Django user gets Django's own
``PasswordChangeView``. Templates live under ``keyrunes_django/`` and can be
overridden by a project template of the same name.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.password_forms import (
    KeyrunesPasswordChangeForm,
    KeyrunesPasswordForgotForm,
    KeyrunesPasswordResetForm,
)

__all__ = [
    "PasswordChangeDoneView",
    "PasswordChangeView",
    "PasswordForgotView",
    "PasswordResetCompleteView",
    "PasswordResetView",
    "is_remote_user",
]

#: The query parameter of this server version's reset links (``?forgot_password=<token>``).
RESET_TOKEN_PARAM = "forgot_password"


def is_remote_user(user: Any) -> bool:
    """True for a user mirrored from Keyrunes (one with a ``KeyrunesIdentity``)."""
    if not getattr(user, "is_authenticated", False) or getattr(user, "pk", None) is None:
        return False
    from keyrunes_django.models import KeyrunesIdentity

    return KeyrunesIdentity.objects.filter(user_id=user.pk).exists()


_sensitive = method_decorator(
    [sensitive_post_parameters(), csrf_protect, never_cache], name="dispatch"
)


@_sensitive
@method_decorator(login_required, name="dispatch")
class PasswordChangeView(View):
    """Change the signed-in user's password (Keyrunes for remote users, Django for local)."""

    template_name = "keyrunes_django/password_change_form.html"
    form_class = KeyrunesPasswordChangeForm

    def success_url(self) -> str:
        return reverse("keyrunes_django:password_change_done")

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not is_remote_user(request.user):
            # Django's own view: it checks and sets the local password.
            local = auth_views.PasswordChangeView.as_view(
                template_name=self.template_name, success_url=self.success_url()
            )
            return local(request, *args, **kwargs)
        return super().dispatch(request, *args, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.render(request, self.form_class(request))

    def post(self, request: HttpRequest) -> HttpResponse:
        form = self.form_class(request, data=request.POST)
        if form.is_valid():
            return HttpResponseRedirect(self.success_url())
        return self.render(request, form)

    def render(self, request: HttpRequest, form: KeyrunesPasswordChangeForm) -> HttpResponse:
        return render(request, self.template_name, {"form": form, "title": "Password change"})


@method_decorator(login_required, name="dispatch")
class PasswordChangeDoneView(View):
    template_name = "keyrunes_django/password_change_done.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, self.template_name, {"title": "Password changed"})


@_sensitive
class PasswordForgotView(View):
    """Ask Keyrunes to send a reset link.

    This server version also returns the reset token in its answer when mail
    is off. Showing it would let anyone reset any account, so it is shown only
    with ``KEYRUNES["SHOW_RESET_LINK"] = True`` (demos), labelled as such.
    """

    template_name = "keyrunes_django/password_forgot_form.html"
    done_template_name = "keyrunes_django/password_forgot_done.html"
    form_class = KeyrunesPasswordForgotForm

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, self.template_name, {"form": self.form_class(), "title": "Forgot"})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = self.form_class(data=request.POST)
        if not form.is_valid():
            return render(request, self.template_name, {"form": form, "title": "Forgot"})
        demo_reset_url = None
        token = form.reset_token
        if token and keyrunes_settings.SHOW_RESET_LINK:
            demo_reset_url = (
                reverse("keyrunes_django:password_reset") + f"?{RESET_TOKEN_PARAM}={token}"
            )
        return render(
            request,
            self.done_template_name,
            {"title": "Check your email", "demo_reset_url": demo_reset_url},
        )


@_sensitive
class PasswordResetView(View):
    """Set a new password with the token of a reset link (``?forgot_password=<token>``)."""

    template_name = "keyrunes_django/password_reset_form.html"
    form_class = KeyrunesPasswordResetForm

    def get(self, request: HttpRequest) -> HttpResponse:
        token = request.GET.get(RESET_TOKEN_PARAM) or request.GET.get("token") or ""
        form = self.form_class(initial={"token": token})
        return self.render(request, form, missing_token=not token)

    def post(self, request: HttpRequest) -> HttpResponse:
        form = self.form_class(data=request.POST)
        if form.is_valid():
            return HttpResponseRedirect(reverse("keyrunes_django:password_reset_complete"))
        return self.render(request, form, missing_token=False)

    def render(
        self, request: HttpRequest, form: KeyrunesPasswordResetForm, *, missing_token: bool
    ) -> HttpResponse:
        context = {"form": form, "title": "Reset password", "missing_token": missing_token}
        return render(request, self.template_name, context)


class PasswordResetCompleteView(View):
    template_name = "keyrunes_django/password_reset_complete.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, self.template_name, {"title": "Password reset"})
