"""Password change, forgot and reset views, and self-registration, for Keyrunes users.

Include them with ``path("account/", include("keyrunes_django.urls"))``. A
signed-in user mirrored from Keyrunes changes their password through Keyrunes
(with the session's token); a local Django user gets Django's own
``PasswordChangeView``. Templates live under ``keyrunes_django/`` and can be
overridden by a project template of the same name.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ImproperlyConfigured
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
)
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.module_loading import import_string
from django.utils.translation import gettext, gettext_noop
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from keyrunes_django.audit import audit_event
from keyrunes_django.backends import keyrunes_backend_path, login_error
from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.forms import KeyrunesRegistrationForm
from keyrunes_django.password_forms import (
    KeyrunesPasswordChangeForm,
    KeyrunesPasswordForgotForm,
    KeyrunesPasswordResetForm,
)
from keyrunes_django.revocation import (
    end_other_sessions,
    end_sessions_after_reset,
    remember_reset_request,
)

__all__ = [
    "PasswordChangeDoneView",
    "PasswordChangeView",
    "PasswordForgotView",
    "PasswordResetCompleteView",
    "PasswordResetView",
    "RegistrationView",
    "is_remote_user",
]

logger = logging.getLogger(__name__)

#: Shown when Keyrunes created the account but this site would not sign it in.
REGISTERED_NOT_SIGNED_IN_MESSAGE = gettext_noop(
    "Your account was created, but you could not be signed in here. Please try to sign in."
)

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
            end_other_sessions(request, request.user, reason="password_change")
            return HttpResponseRedirect(self.success_url())
        return self.render(request, form)

    def render(self, request: HttpRequest, form: KeyrunesPasswordChangeForm) -> HttpResponse:
        return render(
            request, self.template_name, {"form": form, "title": gettext("Password change")}
        )


@method_decorator(login_required, name="dispatch")
class PasswordChangeDoneView(View):
    template_name = "keyrunes_django/password_change_done.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, self.template_name, {"title": gettext("Password changed")})


@method_decorator([login_required, csrf_protect, never_cache], name="dispatch")
class SignOutEverywhereView(View):
    """POST: end every session and token of the signed-in user, this one included.

    Keyrunes' tokens issued before now are refused on every path and instance
    (:func:`keyrunes_django.revocation.revoke_user_tokens`), the user's other
    Django sessions end, and this one is logged out. Redirects to
    ``LOGOUT_REDIRECT_URL`` (or ``next`` when it is a safe URL).
    """

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        from django.contrib.auth import logout

        end_other_sessions(None, request.user, reason="sign_out_everywhere")
        logout(request)
        target = request.POST.get("next") or ""
        if not url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            target = resolve_url(settings.LOGOUT_REDIRECT_URL or "/")
        return HttpResponseRedirect(target)


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
        form = self.form_class(data=request.POST, request=request)
        if not form.is_valid():
            return render(request, self.template_name, {"form": form, "title": "Forgot"})
        demo_reset_url = None
        token = form.reset_token
        remember_reset_request(request, form.cleaned_data["email"], token)
        if token and keyrunes_settings.SHOW_RESET_LINK:
            demo_reset_url = (
                reverse("keyrunes_django:password_reset") + f"?{RESET_TOKEN_PARAM}={token}"
            )
        return render(
            request,
            self.done_template_name,
            {"title": gettext("Check your email"), "demo_reset_url": demo_reset_url},
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
            end_sessions_after_reset(request, form.cleaned_data["token"])
            return HttpResponseRedirect(reverse("keyrunes_django:password_reset_complete"))
        return self.render(request, form, missing_token=False)

    def render(
        self, request: HttpRequest, form: KeyrunesPasswordResetForm, *, missing_token: bool
    ) -> HttpResponse:
        context = {"form": form, "title": gettext("Reset password"), "missing_token": missing_token}
        return render(request, self.template_name, context)


class PasswordResetCompleteView(View):
    template_name = "keyrunes_django/password_reset_complete.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, self.template_name, {"title": gettext("Password reset")})


@_sensitive
class RegistrationView(View):
    """Create a Keyrunes account, mirror it and sign it in (``REGISTRATION_ENABLED``).

    404 while registration is off. The new user is signed in through the
    configured :class:`KeyrunesBackend`, like a login (mirror, signals,
    session token), then sent to ``?next=`` (same host only) or
    ``LOGIN_REDIRECT_URL``.
    """

    template_name = "keyrunes_django/register_form.html"
    form_class = KeyrunesRegistrationForm

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not keyrunes_settings.REGISTRATION_ENABLED:
            raise Http404(gettext("Registration is off."))
        return super().dispatch(request, *args, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.render(request, self.form_class(request=request))

    def post(self, request: HttpRequest) -> HttpResponse:
        backend_path = keyrunes_backend_path()
        if backend_path is None:
            # Checked before anything is created remotely (system check E062 says so too).
            raise ImproperlyConfigured(
                "Registration signs users in through KeyrunesBackend: "
                "add it to AUTHENTICATION_BACKENDS."
            )
        form = self.form_class(data=request.POST, request=request)
        if not form.is_valid() or form.auth_response is None:
            return self.render(request, form)
        response = form.auth_response
        audit_event(
            "registration_succeeded",
            request=request,
            user_id=response.user.user_id,
            username=response.user.username,
            namespace=response.user.namespace,
        )
        if response.user.to_identity(source="login").is_admin:
            # Keyrunes makes the first registrant of an empty namespace its admin.
            audit_event(
                "registration_made_admin",
                level=logging.ERROR,
                request=request,
                user_id=response.user.user_id,
                namespace=response.user.namespace,
            )
        backend = import_string(backend_path)()
        user = backend.user_from_auth_response(
            request, response, login_name=form.cleaned_data["email"]
        )
        if user is None:
            error = login_error(request)
            form.add_error(None, error or gettext(REGISTERED_NOT_SIGNED_IN_MESSAGE))
            return self.render(request, form)
        login(request, user, backend=backend_path)
        return HttpResponseRedirect(self.success_url(request))

    def success_url(self, request: HttpRequest) -> str:
        target = request.POST.get("next") or request.GET.get("next") or ""
        if target and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return target
        return resolve_url(settings.LOGIN_REDIRECT_URL)

    def render(self, request: HttpRequest, form: KeyrunesRegistrationForm) -> HttpResponse:
        context = {
            "form": form,
            "title": gettext("Create an account"),
            "next": request.POST.get("next") or request.GET.get("next") or "",
        }
        return render(request, self.template_name, context)
