"""Self-registration (RegistrationView / KeyrunesRegistrationForm) against the emulator."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import reverse

from keyrunes_django.audit import AUDIT_LOGGER_NAME
from keyrunes_django.backends import SERVICE_UNAVAILABLE_MESSAGE
from keyrunes_django.models import KeyrunesIdentity
from keyrunes_django.sessions import SESSION_TOKEN_KEY
from keyrunes_django.testing.emulator import KeyrunesEmulator
from keyrunes_django.views import REGISTERED_NOT_SIGNED_IN_MESSAGE

pytestmark = pytest.mark.django_db

REGISTER = "/account/register/"
PASSWORD = "Fresh-pass-123"


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    caches["default"].clear()


@pytest.fixture
def enabled(keyrunes: KeyrunesEmulator, settings: Any) -> KeyrunesEmulator:
    settings.KEYRUNES = {**settings.KEYRUNES, "REGISTRATION_ENABLED": True}
    return keyrunes


def configure(settings: Any, **values: Any) -> None:
    settings.KEYRUNES = {**settings.KEYRUNES, **values}


def form_data(**values: str) -> dict[str, str]:
    data = {
        "username": "newcomer",
        "email": "newcomer@example.com",
        "password1": PASSWORD,
        "password2": PASSWORD,
    }
    data.update(values)
    return data


def test_the_url_name() -> None:
    assert reverse("keyrunes_django:register") == REGISTER


def test_off_by_default_is_a_404(keyrunes: KeyrunesEmulator) -> None:
    client = Client()
    assert client.get(REGISTER).status_code == 404
    assert client.post(REGISTER, form_data()).status_code == 404
    assert keyrunes.requests_to("/api/register") == 0


def test_form_renders_with_a_csrf_token(enabled: KeyrunesEmulator) -> None:
    response = Client().get(REGISTER + "?next=/backend/whoami/")
    assert response.status_code == 200
    content = response.content.decode()
    assert "Create an account" in content
    assert 'name="csrfmiddlewaretoken"' in content
    for field in ("username", "email", "password1", "password2"):
        assert f'name="{field}"' in content
    assert 'name="next" value="/backend/whoami/"' in content


def test_posts_without_the_csrf_token_are_refused(enabled: KeyrunesEmulator) -> None:
    response = Client(enforce_csrf_checks=True).post(REGISTER, form_data())
    assert response.status_code == 403
    assert enabled.requests_to("/api/register") == 0


def test_registration_creates_mirrors_and_signs_in(
    enabled: KeyrunesEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client()
    with caplog.at_level(logging.INFO, logger=AUDIT_LOGGER_NAME):
        response = client.post(REGISTER, form_data())
    assert response.status_code == 302
    assert response["Location"] == "/accounts/profile/"  # LOGIN_REDIRECT_URL
    assert enabled.requests_to("/api/register", "POST") == 1
    assert enabled.requests_to("/api/login") == 0  # the registration answer is the login
    user = User.objects.get(username="newcomer")
    assert user.email == "newcomer@example.com"
    assert not user.has_usable_password()
    identity = KeyrunesIdentity.objects.get(user=user)
    assert identity.namespace == "public"
    # Signed in through the backend, with the Keyrunes token in the session.
    assert client.session["_auth_user_id"] == str(user.pk)
    assert client.session["_auth_user_backend"] == "keyrunes_django.backends.KeyrunesBackend"
    assert client.session[SESSION_TOKEN_KEY]
    assert client.get("/backend/whoami/").json()["username"] == "newcomer"
    events = [getattr(r, "event", None) for r in caplog.records if r.name == AUDIT_LOGGER_NAME]
    assert "registration_succeeded" in events
    assert "login_succeeded" in events
    assert PASSWORD not in caplog.text
    # The new account logs in at Keyrunes with the chosen password.
    assert Client().login(username="newcomer", password=PASSWORD)


def test_next_is_followed_on_this_host_only(enabled: KeyrunesEmulator) -> None:
    response = Client().post(REGISTER + "?next=/backend/whoami/", form_data())
    assert response["Location"] == "/backend/whoami/"
    response = Client().post(
        REGISTER,
        form_data(username="second", email="second@example.com", next="https://evil.example/"),
    )
    assert response["Location"] == "/accounts/profile/"


@pytest.mark.parametrize(
    ("values", "field", "reason"),
    [
        ({"username": "taken"}, "username", "username taken"),
        ({"email": "TAKEN@example.com"}, "email", "email already registered"),
        ({"password1": "short7!", "password2": "short7!"}, "password1", "password too short"),
    ],
)
def test_keyrunes_reasons_are_field_errors(
    enabled: KeyrunesEmulator, values: dict[str, str], field: str, reason: str
) -> None:
    enabled.create_user("taken", email="taken@example.com")
    response = Client().post(REGISTER, form_data(**values))
    assert response.status_code == 200
    form = response.context["form"]
    assert form.errors[field] == [reason]
    assert reason in response.content.decode()
    assert "_auth_user_id" not in response.wsgi_request.session
    assert not User.objects.filter(username=values.get("username", "newcomer")).exists()


def test_other_reasons_are_non_field_errors(enabled: KeyrunesEmulator) -> None:
    enabled.faults.add("/api/register", status=400, times=1)
    response = Client().post(REGISTER, form_data())
    form = response.context["form"]
    assert form.non_field_errors()
    assert not form.has_error("username")


def test_local_checks_never_reach_keyrunes(enabled: KeyrunesEmulator) -> None:
    response = Client().post(REGISTER, form_data(password2="Different-pass-1"))
    assert response.context["form"].has_error("password2", "password_mismatch")
    # Keyrunes' usernames hold 50 characters; Django's email field 254.
    response = Client().post(REGISTER, form_data(username="u" * 51))
    assert response.context["form"].has_error("username", "max_length")
    response = Client().post(REGISTER, form_data(email="a" * 250 + "@example.com"))
    assert response.context["form"].has_error("email")
    assert enabled.requests_to("/api/register") == 0


def test_password_validators_apply(enabled: KeyrunesEmulator, settings: Any) -> None:
    settings.AUTH_PASSWORD_VALIDATORS = [
        {
            "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
            "OPTIONS": {"min_length": 20},
        }
    ]
    response = Client().post(REGISTER, form_data())
    assert response.context["form"].has_error("password2", "password_too_short")
    assert enabled.requests_to("/api/register") == 0


def test_outage_is_a_form_error_and_not_counted(enabled: KeyrunesEmulator, settings: Any) -> None:
    configure(settings, LOGIN_THROTTLE_IP_FAILURES=1)
    enabled.faults.add("/api/register", status=503, times=3)
    client = Client()
    for _ in range(3):
        response = client.post(REGISTER, form_data())
        assert response.status_code == 200
        assert SERVICE_UNAVAILABLE_MESSAGE in response.context["form"].non_field_errors()
    assert client.post(REGISTER, form_data()).status_code == 302


def test_registrations_are_throttled_per_ip(enabled: KeyrunesEmulator, settings: Any) -> None:
    configure(settings, LOGIN_THROTTLE_IP_FAILURES=2)
    client = Client(REMOTE_ADDR="192.0.2.70")
    for i in range(5):
        response = client.post(REGISTER, form_data(username=f"u{i}", email=f"u{i}@example.com"))
    assert enabled.requests_to("/api/register") == 2
    assert response.context["form"].has_error("__all__", "throttled")
    assert b"Too many attempts" in response.content
    other = Client(REMOTE_ADDR="192.0.2.71").post(
        REGISTER, form_data(username="elsewhere", email="elsewhere@example.com")
    )
    assert other.status_code == 302


def test_created_but_refused_by_the_mapper(enabled: KeyrunesEmulator, settings: Any) -> None:
    configure(settings, DENY_GROUP="users")
    client = Client()
    response = client.post(REGISTER, form_data())
    assert response.status_code == 200
    assert REGISTERED_NOT_SIGNED_IN_MESSAGE in response.context["form"].non_field_errors()
    assert "_auth_user_id" not in client.session
    assert SESSION_TOKEN_KEY not in client.session


def test_a_tenant_registration_sends_the_organization(
    enabled: KeyrunesEmulator, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    org = enabled.create_organization("Tenant", "tenant_reg")
    configure(settings, NAMESPACE="tenant_reg", ORGANIZATION_SCOPE=org.organization_id)
    with caplog.at_level(logging.INFO, logger=AUDIT_LOGGER_NAME):
        response = Client().post(REGISTER, form_data())
    assert response.status_code == 302
    identity = KeyrunesIdentity.objects.get(user__username="newcomer")
    assert (identity.namespace, identity.organization_id) == ("tenant_reg", org.organization_id)
    # Keyrunes made the first registrant of the empty namespace its admin: flagged loudly.
    (record,) = [r for r in caplog.records if getattr(r, "event", "") == "registration_made_admin"]
    assert record.levelno == logging.ERROR


def test_without_a_keyrunes_backend_nothing_is_created(
    enabled: KeyrunesEmulator, settings: Any
) -> None:
    settings.AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
    with pytest.raises(ImproperlyConfigured):
        Client(raise_request_exception=True).post(REGISTER, form_data())
    assert enabled.requests_to("/api/register") == 0


def test_the_template_can_be_overridden(
    enabled: KeyrunesEmulator, settings: Any, tmp_path: Any
) -> None:
    folder = tmp_path / "keyrunes_django"
    folder.mkdir()
    (folder / "register_form.html").write_text("custom sign-up {{ form.username }}")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [str(tmp_path)]}]
    response = Client().get(REGISTER)
    assert response.content.startswith(b"custom sign-up")
