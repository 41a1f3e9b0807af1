"""Password flows (keyrunes_django.views / password_forms) against the emulator."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django.test import Client

from keyrunes_django.backends import SERVICE_UNAVAILABLE_MESSAGE
from keyrunes_django.client import get_client
from keyrunes_django.sessions import SESSION_PASSWORD_CHANGE_KEY, SESSION_TOKEN_KEY
from keyrunes_django.testing.emulator import EmulatedUser, KeyrunesEmulator
from keyrunes_django.views import is_remote_user

pytestmark = pytest.mark.django_db

CHANGE = "/account/password/change/"
CHANGE_DONE = "/account/password/change/done/"
FORGOT = "/account/password/forgot/"
RESET = "/account/password/reset/"
RESET_DONE = "/account/password/reset/done/"


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    caches["default"].clear()


def configure(settings: Any, **values: Any) -> None:
    settings.KEYRUNES = {**settings.KEYRUNES, **values}


def logged_in(remote: EmulatedUser) -> Client:
    client = Client()
    assert client.login(username=remote.username, password=remote.password)
    return client


def can_log_in(remote: EmulatedUser, password: str) -> bool:
    try:
        get_client().login(remote.username, password)
    except Exception:
        return False
    return True


def change(client: Client, old: str, new: str, confirm: str | None = None) -> Any:
    return client.post(
        CHANGE,
        {"old_password": old, "new_password1": new, "new_password2": confirm or new},
    )


# ------------------------------------------------------------------ change


def test_change_requires_login() -> None:
    response = Client().get(CHANGE)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_change_form_renders_for_a_remote_user(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    response = logged_in(keyrunes_user).get(CHANGE)
    assert response.status_code == 200
    assert b"Change your password" in response.content
    assert b'name="old_password"' in response.content


def test_change_goes_to_keyrunes_with_the_session_token(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    client = logged_in(keyrunes_user)
    session = client.session
    session[SESSION_PASSWORD_CHANGE_KEY] = True
    session.save()

    response = change(client, keyrunes_user.password, "Brand-New-Pass-1")

    assert response.status_code == 302
    assert response["Location"] == CHANGE_DONE
    assert keyrunes.requests_to("/api/user/change-password", "POST") == 1
    assert can_log_in(keyrunes_user, "Brand-New-Pass-1")
    assert not can_log_in(keyrunes_user, keyrunes_user.password)
    # The local password stays unusable, the password-change flag is cleared.
    user = User.objects.get(username=keyrunes_user.username)
    assert not user.has_usable_password()
    assert SESSION_PASSWORD_CHANGE_KEY not in client.session
    assert client.get(CHANGE_DONE).status_code == 200


def test_change_shows_invalid_current_password(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    response = change(logged_in(keyrunes_user), "not-my-password", "Brand-New-Pass-1")
    assert response.status_code == 200
    assert "Invalid current password" in response.context["form"].errors["old_password"][0]
    assert can_log_in(keyrunes_user, keyrunes_user.password)


def test_change_shows_password_too_short(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    response = change(logged_in(keyrunes_user), keyrunes_user.password, "short")
    assert response.status_code == 200
    assert "too short" in response.context["form"].errors["new_password1"][0]


def test_change_mismatch_never_reaches_keyrunes(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    response = change(logged_in(keyrunes_user), keyrunes_user.password, "Aaaaaaaa1", "Bbbbbbbb1")
    assert response.status_code == 200
    assert response.context["form"].has_error("new_password2", "password_mismatch")
    assert keyrunes.requests_to("/api/user/change-password") == 0


def test_change_outage_is_a_form_error_not_a_500(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    client = logged_in(keyrunes_user)
    keyrunes.faults.add("/api/user/change-password", status=503)
    response = change(client, keyrunes_user.password, "Brand-New-Pass-1")
    assert response.status_code == 200
    assert SERVICE_UNAVAILABLE_MESSAGE in response.context["form"].non_field_errors()
    assert SERVICE_UNAVAILABLE_MESSAGE.encode() in response.content


def test_change_with_a_refused_token_asks_to_sign_in_again(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    client = logged_in(keyrunes_user)
    keyrunes.faults.add("/api/user/change-password", status=401, times=1)
    response = change(client, keyrunes_user.password, "Brand-New-Pass-1")
    assert response.context["form"].has_error("__all__", "session_expired")


def test_change_without_a_session_token(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    client = logged_in(keyrunes_user)
    session = client.session
    del session[SESSION_TOKEN_KEY]
    session.save()
    response = change(client, keyrunes_user.password, "Brand-New-Pass-1")
    assert response.context["form"].has_error("__all__", "no_session_token")
    assert keyrunes.requests_to("/api/user/change-password") == 0


def test_change_other_refusal_is_shown(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    client = logged_in(keyrunes_user)
    keyrunes.faults.add("/api/user/change-password", status=403, times=1)
    response = change(client, keyrunes_user.password, "Brand-New-Pass-1")
    assert response.context["form"].has_error("__all__", "refused")


def test_local_user_gets_djangos_own_change_view(keyrunes: KeyrunesEmulator, settings: Any) -> None:
    settings.AUTHENTICATION_BACKENDS = [
        "keyrunes_django.backends.KeyrunesBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
    user = User.objects.create_user("local", "local@example.com", "Local-Pass-1")
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    assert not is_remote_user(user)

    page = client.get(CHANGE)
    assert page.status_code == 200
    assert type(page.context["form"]).__name__ == "PasswordChangeForm"

    response = change(client, "Local-Pass-1", "Local-New-Pass-2")
    assert response.status_code == 302
    assert response["Location"] == CHANGE_DONE
    user.refresh_from_db()
    assert user.check_password("Local-New-Pass-2")
    assert keyrunes.requests_to("/api/user/change-password") == 0


def test_is_remote_user(keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser) -> None:
    logged_in(keyrunes_user)
    assert is_remote_user(User.objects.get(username=keyrunes_user.username))
    assert not is_remote_user(User(username="unsaved"))


# ------------------------------------------------------------------ forgot


def test_forgot_form_renders() -> None:
    response = Client().get(FORGOT)
    assert response.status_code == 200
    assert b'name="email"' in response.content


def test_forgot_never_shows_the_leaked_token_by_default(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    response = Client().post(FORGOT, {"email": keyrunes_user.email})
    assert response.status_code == 200
    assert keyrunes.requests_to("/api/forgot-password", "POST") == 1
    assert b"Check your email" in response.content
    assert b"forgot_password=" not in response.content
    assert b"Demo only" not in response.content
    assert response.context["demo_reset_url"] is None


def test_forgot_unknown_email_looks_like_success(keyrunes: KeyrunesEmulator) -> None:
    known = Client().post(FORGOT, {"email": "nobody@example.com"})
    assert known.status_code == 200
    assert b"Check your email" in known.content
    assert keyrunes.requests_to("/api/forgot-password", "POST") == 1


def test_forgot_outage_is_a_form_error(keyrunes: KeyrunesEmulator) -> None:
    keyrunes.faults.add("/api/forgot-password", status=503)
    response = Client().post(FORGOT, {"email": "someone@example.com"})
    assert response.status_code == 200
    assert SERVICE_UNAVAILABLE_MESSAGE in response.context["form"].non_field_errors()


def test_forgot_invalid_email_never_reaches_keyrunes(keyrunes: KeyrunesEmulator) -> None:
    response = Client().post(FORGOT, {"email": "not an email"})
    assert response.context["form"].errors["email"]
    assert keyrunes.requests_to("/api/forgot-password") == 0


def test_forgot_then_reset_end_to_end_with_the_demo_link(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, settings: Any
) -> None:
    configure(settings, SHOW_RESET_LINK=True)
    client = Client()
    response = client.post(FORGOT, {"email": keyrunes_user.email})
    link = response.context["demo_reset_url"]
    assert link.startswith(RESET + "?forgot_password=")
    assert b"Demo only" in response.content

    page = client.get(link)
    assert page.status_code == 200
    token = link.split("=", 1)[1]
    assert page.context["form"].initial["token"] == token

    done = client.post(
        RESET, {"token": token, "new_password1": "Reset-Pass-99", "new_password2": "Reset-Pass-99"}
    )
    assert done.status_code == 302
    assert done["Location"] == RESET_DONE
    assert client.get(RESET_DONE).status_code == 200
    assert can_log_in(keyrunes_user, "Reset-Pass-99")

    # The token is single-use.
    again = client.post(
        RESET, {"token": token, "new_password1": "Reset-Pass-77", "new_password2": "Reset-Pass-77"}
    )
    assert again.context["form"].has_error("__all__", "invalid_token")
    assert "invalid or expired reset token" in again.content.decode()


# ------------------------------------------------------------------ reset


def test_reset_without_a_token_explains() -> None:
    response = Client().get(RESET)
    assert response.status_code == 200
    assert response.context["missing_token"] is True


def test_reset_password_too_short(keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser) -> None:
    token = get_client().forgot_password(keyrunes_user.email).reset_token
    response = Client().post(RESET, {"token": token, "new_password1": "x", "new_password2": "x"})
    assert response.status_code == 200
    assert "too short" in response.context["form"].errors["new_password1"][0]


def test_reset_outage_is_a_form_error(keyrunes: KeyrunesEmulator) -> None:
    keyrunes.faults.add("/api/reset-password", status=503)
    response = Client().post(
        RESET, {"token": "t" * 64, "new_password1": "Aaaaaaaa1", "new_password2": "Aaaaaaaa1"}
    )
    assert response.status_code == 200
    assert SERVICE_UNAVAILABLE_MESSAGE in response.context["form"].non_field_errors()


def test_reset_other_refusal_is_shown(keyrunes: KeyrunesEmulator) -> None:
    keyrunes.faults.add("/api/reset-password", status=404, times=1)
    response = Client().post(
        RESET, {"token": "t" * 64, "new_password1": "Aaaaaaaa1", "new_password2": "Aaaaaaaa1"}
    )
    assert response.context["form"].has_error("__all__", "refused")


def test_reset_mismatch_and_missing_token(keyrunes: KeyrunesEmulator) -> None:
    response = Client().post(RESET, {"new_password1": "Aaaaaaaa1", "new_password2": "Bbbbbbbb1"})
    form = response.context["form"]
    assert form.has_error("token")
    assert form.has_error("new_password2", "password_mismatch")
    assert keyrunes.requests_to("/api/reset-password") == 0


def test_templates_can_be_overridden(
    keyrunes: KeyrunesEmulator, settings: Any, tmp_path: Any
) -> None:
    folder = tmp_path / "keyrunes_django"
    folder.mkdir()
    (folder / "password_forgot_form.html").write_text("custom forgot page {{ form.email }}")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [str(tmp_path)]}]
    response = Client().get(FORGOT)
    assert response.content.startswith(b"custom forgot page")


# ------------------------------------------------------------------ throttling


def test_forgot_password_posts_for_one_address_are_throttled(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    client = Client()
    responses = [
        client.post(FORGOT, {"email": email})
        for email in [keyrunes_user.email, keyrunes_user.email.upper()] * 15
    ]
    # LOGIN_THROTTLE_FAILURES (5) per address and window, whatever its case.
    assert keyrunes.requests_to("/api/forgot-password", "POST") == 5
    assert all(b"Check your email" in r.content for r in responses[:5])
    refused = responses[-1]
    assert refused.status_code == 200
    assert refused.context["form"].has_error("__all__", "throttled")
    assert b"Too many attempts" in refused.content


def test_forgot_password_throttle_tells_nothing_about_the_address(
    keyrunes: KeyrunesEmulator,
) -> None:
    client = Client()
    for _ in range(8):
        client.post(FORGOT, {"email": "nobody@example.com"})
    # An unknown address is counted exactly like a known one.
    assert keyrunes.requests_to("/api/forgot-password", "POST") == 5


def test_forgot_password_posts_from_one_ip_are_throttled(
    keyrunes: KeyrunesEmulator, settings: Any
) -> None:
    configure(settings, LOGIN_THROTTLE_IP_FAILURES=3)
    client = Client(REMOTE_ADDR="192.0.2.44")
    for i in range(10):
        client.post(FORGOT, {"email": f"person{i}@example.com"})
    assert keyrunes.requests_to("/api/forgot-password", "POST") == 3
    # Another address from another IP is not affected.
    Client(REMOTE_ADDR="192.0.2.45").post(FORGOT, {"email": "person0@example.com"})
    assert keyrunes.requests_to("/api/forgot-password", "POST") == 4


def test_forgot_password_outages_are_not_counted(
    keyrunes: KeyrunesEmulator, settings: Any
) -> None:
    # The circuit breaker stays out of it: this is about the throttle's counting.
    settings.KEYRUNES = {**settings.KEYRUNES, "BREAKER_FAILURES": 0}
    keyrunes.faults.add("/api/forgot-password", status=503, times=6)
    client = Client()
    for _ in range(6):
        client.post(FORGOT, {"email": "someone@example.com"})
    response = client.post(FORGOT, {"email": "someone@example.com"})
    assert b"Check your email" in response.content


def test_wrong_current_passwords_are_throttled_with_the_login_budget(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    client = logged_in(keyrunes_user)
    responses = [change(client, f"guess-{i}", "Brand-New-Pass-1") for i in range(30)]
    assert keyrunes.requests_to("/api/user/change-password") == 5
    refused = responses[-1].context["form"]
    assert refused.has_error("__all__", "login_throttled")
    # The account is out of attempts for logins too (the same password is being guessed).
    logins = keyrunes.requests_to("/api/login")
    assert not Client().login(username=keyrunes_user.username, password=keyrunes_user.password)
    assert keyrunes.requests_to("/api/login") == logins


def test_a_successful_change_clears_the_account_budget(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    client = logged_in(keyrunes_user)
    for i in range(4):
        change(client, f"guess-{i}", "Brand-New-Pass-1")
    assert change(client, keyrunes_user.password, "Brand-New-Pass-1").status_code == 302
    for i in range(4):
        change(client, f"guess-again-{i}", "Another-Pass-1")
    assert keyrunes.requests_to("/api/user/change-password") == 9


def test_a_refused_new_password_does_not_count(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    client = logged_in(keyrunes_user)
    for _ in range(8):
        response = change(client, keyrunes_user.password, "short")
        assert "too short" in response.context["form"].errors["new_password1"][0]
    assert keyrunes.requests_to("/api/user/change-password") == 8


def test_the_change_form_needs_a_mirrored_user(keyrunes: KeyrunesEmulator) -> None:
    from django.test import RequestFactory

    from keyrunes_django.password_forms import KeyrunesPasswordChangeForm

    request = RequestFactory().post(CHANGE)
    request.user = User.objects.create_user("local-only")
    request.session = {SESSION_TOKEN_KEY: "a-token"}  # type: ignore[assignment]
    form = KeyrunesPasswordChangeForm(
        request,
        data={"old_password": "x", "new_password1": "Aaaaaaaa1", "new_password2": "Aaaaaaaa1"},
    )
    assert not form.is_valid()
    assert form.has_error("__all__", "no_remote_identity")
    assert keyrunes.requests_to("/api/user/change-password") == 0
