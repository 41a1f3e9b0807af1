"""URLs of the password flows, signing out everywhere, and registration.

Include them with ``path("account/", include("keyrunes_django.urls"))``.

Names are in the ``keyrunes_django`` namespace, e.g.
``reverse("keyrunes_django:password_change")``.
"""

from __future__ import annotations

from django.urls import URLPattern, path

from keyrunes_django import views

app_name = "keyrunes_django"

urlpatterns: list[URLPattern] = [
    path("password/change/", views.PasswordChangeView.as_view(), name="password_change"),
    path(
        "password/change/done/",
        views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("password/forgot/", views.PasswordForgotView.as_view(), name="password_forgot"),
    path("password/reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path(
        "password/reset/done/",
        views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path(
        "sign-out-everywhere/",
        views.SignOutEverywhereView.as_view(),
        name="sign_out_everywhere",
    ),
    # 404 unless KEYRUNES["REGISTRATION_ENABLED"] is True.
    path("register/", views.RegistrationView.as_view(), name="register"),
]
