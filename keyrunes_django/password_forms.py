"""Password forms that proxy change, forgot and reset to Keyrunes.

Keyrunes is the authority on remote users' passwords: these forms only check
what the browser can get wrong (two new passwords that differ, empty fields)
and show the server's own reasons ("Invalid current password", "password too
short") as form errors. An outage becomes a form error, never a 500.

Change and forgot are throttled (:mod:`keyrunes_django.throttling`): a change
checks the current password, so it shares the account's login budget; every
forgot request counts against the address and the client IP.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from keyrunes_django import throttling
from keyrunes_django.audit import client_ip
from keyrunes_django.backends import SERVICE_UNAVAILABLE_MESSAGE
from keyrunes_django.client import get_client
from keyrunes_django.exceptions import (
    AuthenticationFailed,
    KeyrunesError,
    KeyrunesHTTPError,
    ValidationFailed,
)
from keyrunes_django.schemas import ForgotPasswordResponse
from keyrunes_django.sessions import get_session_token, set_password_change_required

__all__ = [
    "KeyrunesPasswordChangeForm",
    "KeyrunesPasswordForgotForm",
    "KeyrunesPasswordResetForm",
]

SESSION_EXPIRED_MESSAGE = _("Your sign-in has expired. Please sign in again.")
MISMATCH_MESSAGE = _("The two password fields didn't match.")


class _NewPasswordMixin(forms.Form):
    new_password1 = forms.CharField(
        label=_("New password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    new_password2 = forms.CharField(
        label=_("New password confirmation"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean_new_password2(self) -> str:
        first = self.cleaned_data.get("new_password1")
        second: str = self.cleaned_data["new_password2"]
        if first and second and first != second:
            raise forms.ValidationError(MISMATCH_MESSAGE, code="password_mismatch")
        return second


class KeyrunesPasswordChangeForm(_NewPasswordMixin):
    """``POST /api/user/change-password`` with the session's Keyrunes token."""

    old_password = forms.CharField(
        label=_("Current password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password", "autofocus": True}),
    )
    field_order = ["old_password", "new_password1", "new_password2"]

    def __init__(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        self.request = request
        super().__init__(*args, **kwargs)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        token = get_session_token(self.request)
        if token is None:
            raise forms.ValidationError(SESSION_EXPIRED_MESSAGE, code="no_session_token")
        with self._acquire() as attempt:
            try:
                get_client().change_password(
                    token, cleaned["old_password"], cleaned["new_password1"]
                )
            except AuthenticationFailed as exc:
                attempt.not_a_failure()
                raise forms.ValidationError(
                    SESSION_EXPIRED_MESSAGE, code="session_expired"
                ) from exc
            except ValidationFailed as exc:
                self._add_refusal(attempt, exc.message or str(exc))
            except KeyrunesHTTPError as exc:
                raise forms.ValidationError(exc.message or str(exc), code="refused") from exc
            except KeyrunesError as exc:
                attempt.not_a_failure()
                # Unreachable, 5xx or a malformed answer: the service is not usable right now.
                raise forms.ValidationError(
                    gettext(SERVICE_UNAVAILABLE_MESSAGE), code="service_unavailable"
                ) from exc
            else:
                attempt.succeeded()
                set_password_change_required(self.request, False)
        return cleaned

    def _add_refusal(self, attempt: throttling.Attempt, message: str) -> None:
        if "current" in message.lower():
            self.add_error("old_password", message)  # a wrong guess: it stays counted
        else:
            # The new password was refused; that proves nothing about the current one.
            attempt.not_a_failure()
            self.add_error("new_password1", message)

    def _acquire(self) -> throttling.Attempt:
        """Count this change against the account's login budget (it tests the password)."""
        from keyrunes_django.models import KeyrunesIdentity

        user_pk = self.request.user.pk
        record = (
            KeyrunesIdentity.objects.filter(user__pk=user_pk)
            .values_list("namespace", "remote_user_id")
            .first()
            if user_pk is not None
            else None
        )
        if record is None:
            raise forms.ValidationError(SESSION_EXPIRED_MESSAGE, code="no_remote_identity")
        namespace, remote_user_id = record
        try:
            return throttling.acquire_password_change(
                namespace, remote_user_id, client_ip(self.request)
            )
        except throttling.Throttled as exc:
            raise forms.ValidationError(str(exc), code=exc.code) from exc


class KeyrunesPasswordForgotForm(forms.Form):
    """``POST /api/forgot-password`` in the configured namespace.

    The answer is the same whether or not the address is registered: the
    server's "email not found" is not passed on, so the form cannot be used to
    find out who has an account.
    """

    email = forms.EmailField(
        label=_("Email"),
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )

    def __init__(self, *args: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request = request
        self.response: ForgotPasswordResponse | None = None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        try:
            # Counted whether or not the address is known, so the throttle tells nothing.
            attempt = throttling.acquire_forgot_password(cleaned["email"], client_ip(self.request))
        except throttling.Throttled as exc:
            raise forms.ValidationError(str(exc), code=exc.code) from exc
        with attempt:  # every request stays counted, answered or not
            try:
                self.response = get_client().forgot_password(cleaned["email"])
            except KeyrunesHTTPError:
                # "email not found" and friends: answered like a success on purpose.
                self.response = None
            except KeyrunesError as exc:
                attempt.not_a_failure()
                # Unreachable, 5xx or a malformed answer: the service is not usable right now.
                raise forms.ValidationError(
                    gettext(SERVICE_UNAVAILABLE_MESSAGE), code="service_unavailable"
                ) from exc
        return cleaned

    @property
    def reset_token(self) -> str | None:
        """The token this server version leaks in its answer (never show it by default)."""
        return self.response.reset_token if self.response is not None else None


class KeyrunesPasswordResetForm(_NewPasswordMixin):
    """``POST /api/reset-password`` with the token from the reset link."""

    token = forms.CharField(widget=forms.HiddenInput, strip=True)
    field_order = ["token", "new_password1", "new_password2"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        try:
            get_client().reset_password(cleaned["token"], cleaned["new_password1"])
        except ValidationFailed as exc:
            message = exc.message or str(exc)
            if "token" in message.lower():
                raise forms.ValidationError(message, code="invalid_token") from exc
            self.add_error("new_password1", message)
        except KeyrunesHTTPError as exc:
            raise forms.ValidationError(exc.message or str(exc), code="refused") from exc
        except KeyrunesError as exc:
            # Unreachable, 5xx or a malformed answer: the service is not usable right now.
            raise forms.ValidationError(
                gettext(SERVICE_UNAVAILABLE_MESSAGE), code="service_unavailable"
            ) from exc
        return cleaned
