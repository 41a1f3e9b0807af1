"""Login forms that tell "Keyrunes is down" apart from "wrong password".

Django's ``AuthenticationForm`` can only say "Please enter a correct username
and password" when ``authenticate()`` returns ``None``. The Keyrunes backend
records an outage (or a login throttle) on the request, and these forms show
that message instead::

    # urls.py
    from django.contrib import admin
    from django.contrib.auth.views import LoginView
    from keyrunes_django.forms import (
        KeyrunesAdminAuthenticationForm,
        KeyrunesAuthenticationForm,
    )

    admin.site.login_form = KeyrunesAdminAuthenticationForm  # opt-in for the admin
    urlpatterns = [
        path("login/", LoginView.as_view(authentication_form=KeyrunesAuthenticationForm)),
    ]

:class:`KeyrunesRegistrationForm` creates an account through Keyrunes
(``POST /api/register``) for :class:`keyrunes_django.views.RegistrationView`.
"""

from __future__ import annotations

import logging
from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from keyrunes_django import tenancy, throttling
from keyrunes_django.audit import client_ip
from keyrunes_django.backends import SERVICE_UNAVAILABLE_MESSAGE, login_error
from keyrunes_django.client import get_client
from keyrunes_django.exceptions import KeyrunesError, KeyrunesHTTPError
from keyrunes_django.schemas import AuthResponse

__all__ = [
    "KeyrunesAdminAuthenticationForm",
    "KeyrunesAuthenticationForm",
    "KeyrunesRegistrationForm",
]

logger = logging.getLogger(__name__)

#: Keyrunes' usernames are a VARCHAR(50); longer ones fail there with a database error.
MAX_USERNAME_LENGTH = 50
#: Longest reason from Keyrunes shown on the form.
MAX_REASON_LENGTH = 200


class KeyrunesAuthenticationForm(AuthenticationForm):
    """``AuthenticationForm`` that reports a Keyrunes outage or throttle as such."""

    def get_invalid_login_error(self) -> ValidationError:
        return login_error(self.request) or super().get_invalid_login_error()


class KeyrunesAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form with the same outage message."""

    def get_invalid_login_error(self) -> ValidationError:
        return login_error(self.request) or super().get_invalid_login_error()


class KeyrunesRegistrationForm(forms.Form):
    """Create a Keyrunes account (``POST /api/register``) in the configured namespace.

    Keyrunes decides: its reasons ("username taken", "email already
    registered", "password too short"...) become errors of the field they
    name, others non-field errors. Locally only what the browser can get
    wrong is checked (two passwords that differ, lengths), plus Django's
    ``AUTH_PASSWORD_VALIDATORS``. After a valid form, :attr:`auth_response`
    holds Keyrunes' answer (the new account's token), never shown or logged.
    """

    username = forms.CharField(
        label=_("Username"),
        max_length=MAX_USERNAME_LENGTH,
        widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True}),
    )
    email = forms.EmailField(
        label=_("Email"),
        # Django's email field holds 254 characters; a longer one could not be mirrored.
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )
    password1 = forms.CharField(
        label=_("Password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    password2 = forms.CharField(
        label=_("Password confirmation"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    #: Words in a Keyrunes reason -> the field it is shown on.
    reason_fields = (("email", "email"), ("username", "username"), ("password", "password1"))

    def __init__(self, *args: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request = request
        self.auth_response: AuthResponse | None = None

    def clean_password2(self) -> str:
        first = self.cleaned_data.get("password1")
        second: str = self.cleaned_data["password2"]
        if first and first != second:
            raise forms.ValidationError(
                _("The two password fields didn't match."), code="password_mismatch"
            )
        password_validation.validate_password(second)
        return second

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        try:
            attempt = throttling.acquire_registration(client_ip(self.request))
        except throttling.Throttled as exc:
            raise forms.ValidationError(str(exc), code=exc.code) from exc
        scope = tenancy.organization_scope()
        with attempt:  # every registration stays counted, accepted or not
            try:
                self.auth_response = get_client().register(
                    email=cleaned["email"],
                    username=cleaned["username"],
                    password=cleaned["password1"],
                    organization_id=int(scope) if scope is not None else None,
                )
            except KeyrunesHTTPError as exc:
                self._add_reason(exc)
            except KeyrunesError as exc:
                attempt.not_a_failure()
                logger.error("Keyrunes registration impossible: %s: %s", type(exc).__name__, exc)
                raise forms.ValidationError(
                    gettext(SERVICE_UNAVAILABLE_MESSAGE), code="service_unavailable"
                ) from exc
        return cleaned

    def _add_reason(self, exc: KeyrunesHTTPError) -> None:
        reason = (exc.message or str(exc))[:MAX_REASON_LENGTH]
        logger.info("Keyrunes refused a registration: %s", exc)
        lowered = reason.lower()
        for word, field in self.reason_fields:
            if word in lowered:
                self.add_error(field, forms.ValidationError(reason, code="refused"))
                return
        self.add_error(None, forms.ValidationError(reason, code="refused"))
