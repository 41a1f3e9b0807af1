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
"""

from __future__ import annotations

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from keyrunes_django.backends import login_error

__all__ = ["KeyrunesAdminAuthenticationForm", "KeyrunesAuthenticationForm"]


class KeyrunesAuthenticationForm(AuthenticationForm):
    """``AuthenticationForm`` that reports a Keyrunes outage or throttle as such."""

    def get_invalid_login_error(self) -> ValidationError:
        return login_error(self.request) or super().get_invalid_login_error()


class KeyrunesAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form with the same outage message."""

    def get_invalid_login_error(self) -> ValidationError:
        return login_error(self.request) or super().get_invalid_login_error()
