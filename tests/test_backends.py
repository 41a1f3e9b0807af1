"""KeyrunesBackend against the emulator over real HTTP."""

from __future__ import annotations

import base64
import gc
import logging
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import authenticate, get_user
from django.contrib.auth.models import Group, User
from django.core.cache import caches
from django.db import close_old_connections, connection
from django.http import HttpRequest
from django.test import Client
from django.test.utils import CaptureQueriesContext

from keyrunes_django import signals
from keyrunes_django.backends import (
    SERVICE_UNAVAILABLE_MESSAGE,
    KeyrunesBackend,
    identity_from_login,
    login_error,
)
from keyrunes_django.exceptions import KeyrunesProtocolError
from keyrunes_django.models import KeyrunesIdentity
from keyrunes_django.schemas import AuthResponse
from keyrunes_django.sessions import (
    SESSION_TOKEN_KEY,
    get_session_token_expiry,
    password_change_required,
)
from keyrunes_django.testing import KeyrunesEmulator
from keyrunes_django.testing.emulator import EmulatedUser

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parent.parent
WRITE_PREFIXES = ("INSERT", "UPDATE", "DELETE")


@pytest.fixture(autouse=True)
def _clear_throttle() -> None:
    # Failed-login counters live in the cache and would leak between tests.
    caches["default"].clear()


def configure(settings: Any, **values: Any) -> None:
    settings.KEYRUNES = {**settings.KEYRUNES, **values}


class SignalRecorder:
    def __init__(self, signal: Any) -> None:
        self.signal = signal
        self.calls: list[dict[str, Any]] = []

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        self.calls.append(kwargs)

    def __enter__(self) -> SignalRecorder:
        self.signal.connect(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.signal.disconnect(self)


def session_user(client: Client) -> Any:
    request = HttpRequest()
    request.session = client.session
    return get_user(request)


# ------------------------------------------------------------------ Client.login


def test_client_login_mirrors_the_user_and_keeps_the_token_in_the_session(
    keyrunes: KeyrunesEmulator,
) -> None:
    keyrunes.create_group("editors")
    remote = keyrunes.create_user("carol", groups=("users", "editors"))
    client = Client()

    assert client.login(username="carol", password=remote.password)

    user = User.objects.get(username="carol")
    assert user.email == remote.email
    assert not user.has_usable_password()
    assert set(user.groups.values_list("name", flat=True)) == {"users", "editors"}
    record = KeyrunesIdentity.objects.get(user=user)
    assert (record.namespace, record.remote_user_id) == ("public", remote.user_id)
    assert record.external_id == remote.external_id
    assert session_user(client).pk == user.pk

    token = client.session[SESSION_TOKEN_KEY]
    claims = jwt.decode(token, keyrunes.jwt_secret, algorithms=["HS256"])
    assert claims["sub"] == str(remote.user_id)
    request = HttpRequest()
    request.session = client.session
    expiry = get_session_token_expiry(request)
    assert expiry is not None
    assert int(expiry.timestamp()) == claims["exp"]
    assert not password_change_required(request)
    # The token is nowhere in the user's stored fields.
    stored = User.objects.filter(pk=user.pk).values()[0]
    assert token not in repr(stored)
    assert token not in repr(record.payload)
    assert keyrunes.requests_to("/api/login", "POST") == 1


def test_login_by_email(keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser) -> None:
    assert Client().login(username=keyrunes_user.email.upper(), password=keyrunes_user.password)
    assert User.objects.filter(username=keyrunes_user.username).exists()


def test_email_keyword_is_accepted(keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser) -> None:
    user = authenticate(email=keyrunes_user.email, password=keyrunes_user.password)
    assert user is not None
    assert user.get_username() == keyrunes_user.username


def test_requires_password_change_is_kept_in_the_session(keyrunes: KeyrunesEmulator) -> None:
    remote = keyrunes.create_user(first_login=True)
    client = Client()
    assert client.login(username=remote.username, password=remote.password)
    request = HttpRequest()
    request.session = client.session
    assert password_change_required(request)


def test_wrong_password_returns_none_logs_reason_and_signals(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="keyrunes_django")
    with SignalRecorder(signals.login_failed) as failed:
        assert not Client().login(username=keyrunes_user.username, password="wrong-password-1")
    assert not User.objects.exists()
    assert [(c["reason"], c["identity"], c["namespace"]) for c in failed.calls] == [
        ("invalid_credentials", keyrunes_user.username, "public")
    ]
    assert "reason=invalid_credentials" in caplog.text
    assert "wrong-password-1" not in caplog.text


def test_unrelated_credentials_are_ignored(keyrunes: KeyrunesEmulator) -> None:
    backend = KeyrunesBackend()
    assert backend.authenticate(None, token="abc") is None
    assert backend.authenticate(None, username="alice") is None
    assert backend.authenticate(None, username="alice", password="") is None
    assert keyrunes.requests_to("/api/login") == 0


def test_no_local_password_check_for_local_users(keyrunes: KeyrunesEmulator) -> None:
    User.objects.create_user("localonly", password="local-pass-123")
    assert authenticate(username="localonly", password="local-pass-123") is None
    assert keyrunes.requests_to("/api/login") == 1


def test_inactive_local_user_cannot_log_in(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    assert Client().login(username=keyrunes_user.username, password=keyrunes_user.password)
    User.objects.filter(username=keyrunes_user.username).update(is_active=False)
    with SignalRecorder(signals.login_failed) as failed:
        assert (
            authenticate(username=keyrunes_user.username, password=keyrunes_user.password) is None
        )
    assert failed.calls[0]["reason"] == "inactive"


def test_login_succeeded_signal(keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser) -> None:
    with SignalRecorder(signals.login_succeeded) as succeeded:
        user = authenticate(username=keyrunes_user.username, password=keyrunes_user.password)
    assert user is not None
    (call,) = succeeded.calls
    assert call["user"].pk == user.pk
    assert call["identity"].source == "login"
    assert call["identity"].user_id == keyrunes_user.user_id
    assert call["identity"].expires_at is not None


def test_tokens_are_never_logged(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = Client()
    assert client.login(username=keyrunes_user.username, password=keyrunes_user.password)
    token = client.session[SESSION_TOKEN_KEY]
    assert token not in caplog.text
    assert keyrunes_user.password not in caplog.text


def test_unchanged_relogin_performs_no_writes(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    first = authenticate(username=keyrunes_user.username, password=keyrunes_user.password)
    assert first is not None
    with CaptureQueriesContext(connection) as ctx:
        again = authenticate(username=keyrunes_user.username, password=keyrunes_user.password)
    assert again is not None
    assert again.pk == first.pk
    written = [
        q["sql"] for q in ctx.captured_queries if q["sql"].upper().startswith(WRITE_PREFIXES)
    ]
    assert written == []
    # The throttle's account lookup, the identity with its user, the groups.
    assert len(ctx.captured_queries) <= 3


def test_remote_group_changes_follow_at_next_login(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    keyrunes.create_group("editors")
    local_only = Group.objects.create(name="local-team")
    user = authenticate(username=keyrunes_user.username, password=keyrunes_user.password)
    assert user is not None
    user.groups.add(local_only)  # type: ignore[attr-defined]
    keyrunes.add_to_group(keyrunes_user, "editors")
    keyrunes.remove_from_group(keyrunes_user, "users")

    authenticate(username=keyrunes_user.username, password=keyrunes_user.password)

    assert set(user.groups.values_list("name", flat=True)) == {"editors", "local-team"}  # type: ignore[attr-defined]


# ------------------------------------------------------------ refusals by the mapper


def test_require_group_refuses_login(
    keyrunes: KeyrunesEmulator,
    keyrunes_user: EmulatedUser,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure(settings, REQUIRE_GROUP="staff")
    caplog.set_level(logging.INFO, logger="keyrunes_django")
    with SignalRecorder(signals.login_failed) as failed:
        assert (
            authenticate(username=keyrunes_user.username, password=keyrunes_user.password) is None
        )
    assert failed.calls[0]["reason"] == "missing_required_group"
    assert "missing_required_group" in caplog.text
    assert not User.objects.exists()


def test_deny_group_refuses_login(keyrunes: KeyrunesEmulator, settings: Any) -> None:
    keyrunes.create_group("banned")
    remote = keyrunes.create_user(groups=("users", "banned"))
    configure(settings, DENY_GROUP=["banned"])
    assert authenticate(username=remote.username, password=remote.password) is None
    assert not User.objects.exists()


def test_takeover_of_local_user_is_refused(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    User.objects.create_user(keyrunes_user.username, password="local-pass-123")
    with SignalRecorder(signals.login_failed) as failed:
        assert (
            authenticate(username=keyrunes_user.username, password=keyrunes_user.password) is None
        )
    assert failed.calls[0]["reason"] == "local_user_exists"
    assert User.objects.get(username=keyrunes_user.username).has_usable_password()


def test_namespace_argument_and_tenant_rule(keyrunes: KeyrunesEmulator, settings: Any) -> None:
    org = keyrunes.create_organization("Acme", "acme")
    remote = keyrunes.create_user(namespace="acme", groups=("admin", "users"))
    with SignalRecorder(signals.login_failed) as failed:
        assert (
            authenticate(username=remote.username, password=remote.password, namespace="acme")
            is None
        )
    assert failed.calls[0]["reason"] == "wrong_namespace"

    configure(settings, NAMESPACE="acme")
    user = authenticate(username=remote.username, password=remote.password)
    assert user is not None
    assert user.is_staff
    assert not user.is_superuser
    record = KeyrunesIdentity.objects.get(user=user)
    assert (record.namespace, record.organization_id) == ("acme", org.organization_id)


# ------------------------------------------------------------------------ outages


def test_keyrunes_unreachable_returns_none_and_records_the_error(settings: Any) -> None:
    # tests.settings points BASE_URL at a closed loopback port.
    request = HttpRequest()
    with SignalRecorder(signals.auth_service_error) as errors:
        assert (
            KeyrunesBackend().authenticate(request, username="alice", password="secret-123") is None
        )
    error = login_error(request)
    assert error is not None
    assert error.messages == [SERVICE_UNAVAILABLE_MESSAGE]
    assert errors.calls[0]["operation"] == "login"
    assert errors.calls[0]["request"] is request


def test_a_later_success_clears_the_recorded_error(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    request = HttpRequest()
    keyrunes.faults.add("/api/login", status=503, times=1)
    backend = KeyrunesBackend()
    assert (
        backend.authenticate(
            request, username=keyrunes_user.username, password=keyrunes_user.password
        )
        is None
    )
    assert login_error(request) is not None
    assert (
        backend.authenticate(
            request, username=keyrunes_user.username, password=keyrunes_user.password
        )
        is not None
    )
    assert login_error(request) is None
    assert login_error(None) is None


def test_rejected_login_request_is_a_failure_not_an_outage(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    keyrunes.faults.add("/api/login", status=422)
    request = HttpRequest()
    with SignalRecorder(signals.login_failed) as failed:
        assert KeyrunesBackend().authenticate(request, username="x", password="y") is None
    assert failed.calls[0]["reason"] == "rejected_422"
    assert login_error(request) is None


@pytest.mark.parametrize("fault", [{"status": 503}, {"malformed": True}, {"drop": True}])
def test_login_view_shows_the_outage(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, fault: dict[str, Any]
) -> None:
    keyrunes.faults.add("/api/login", **fault)
    response = Client().post(
        "/backend/login/",
        {"username": keyrunes_user.username, "password": keyrunes_user.password},
    )
    assert response.status_code == 200
    assert SERVICE_UNAVAILABLE_MESSAGE in response.content.decode()
    assert "Please enter a correct" not in response.content.decode()


def test_plain_login_view_degrades_to_the_generic_error(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    keyrunes.faults.add("/api/login", status=503)
    response = Client().post(
        "/backend/plain-login/",
        {"username": keyrunes_user.username, "password": keyrunes_user.password},
    )
    assert response.status_code == 200
    assert "Please enter a correct" in response.content.decode()


def test_malformed_login_token_is_a_protocol_error(keyrunes_user: EmulatedUser) -> None:
    user = {
        "user_id": 7,
        "email": "a@example.com",
        "username": "a",
        "groups": ["users"],
        "organization_id": 1,
        "namespace": "public",
    }
    with pytest.raises(KeyrunesProtocolError):
        identity_from_login(AuthResponse.model_validate({"user": user, "token": "not-a-jwt"}))
    other = jwt.encode(
        {
            "sub": "8",
            "email": "b@example.com",
            "username": "b",
            "groups": [],
            "namespace": "public",
            "organization_id": 1,
            "exp": 2_000_000_000,
            "iat": 1_900_000_000,
            "iss": "keyrunes",
        },
        "k" * 32,
        algorithm="HS256",
    )
    with pytest.raises(KeyrunesProtocolError, match="another user"):
        identity_from_login(AuthResponse.model_validate({"user": user, "token": other}))


# ------------------------------------------------------------------ LoginView, pages


def test_login_view_logs_in_and_pages_see_the_groups(keyrunes: KeyrunesEmulator) -> None:
    keyrunes.create_group("editors")
    remote = keyrunes.create_user(groups=("users", "editors"))
    client = Client()
    response = client.post(
        "/backend/login/", {"username": remote.username, "password": remote.password}
    )
    assert response.status_code == 302
    assert response["Location"] == "/backend/whoami/"
    page = client.get("/backend/whoami/")
    assert page.status_code == 200
    assert page.json() == {"username": remote.username, "groups": ["editors", "users"]}
    assert SESSION_TOKEN_KEY in client.session


def test_login_view_wrong_password(keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser) -> None:
    response = Client().post(
        "/backend/login/", {"username": keyrunes_user.username, "password": "nope-nope-1"}
    )
    assert response.status_code == 200
    assert "Please enter a correct" in response.content.decode()


def test_login_view_shows_the_throttle(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, settings: Any
) -> None:
    configure(settings, LOGIN_THROTTLE_FAILURES=2)
    client = Client()
    for _ in range(2):
        client.post(
            "/backend/login/", {"username": keyrunes_user.username, "password": "bad-pass-1"}
        )
    calls = keyrunes.requests_to("/api/login")
    response = client.post(
        "/backend/login/",
        {"username": keyrunes_user.username, "password": keyrunes_user.password},
    )
    assert "Too many failed login attempts" in response.content.decode()
    assert keyrunes.requests_to("/api/login") == calls  # Keyrunes was not asked


# ---------------------------------------------------------------------------- admin


def test_superadmin_logs_into_the_admin(
    keyrunes: KeyrunesEmulator, keyrunes_superadmin: EmulatedUser
) -> None:
    client = Client()
    response = client.post(
        "/admin/login/?next=/admin/",
        {
            "username": keyrunes_superadmin.email,
            "password": keyrunes_superadmin.password,
            "next": "/admin/",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    user = User.objects.get(username=keyrunes_superadmin.username)
    assert user.is_superuser
    assert user.is_staff
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/auth/group/").status_code == 200


def test_regular_user_cannot_enter_the_admin(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    client = Client()
    response = client.post(
        "/admin/login/",
        {"username": keyrunes_user.username, "password": keyrunes_user.password},
    )
    assert response.status_code == 200
    assert "staff account" in response.content.decode()


def test_tenant_admin_mapped_to_staff_uses_model_permissions(
    keyrunes: KeyrunesEmulator, settings: Any
) -> None:
    keyrunes.create_group("editors")
    remote = keyrunes.create_user(groups=("users", "editors"))
    configure(settings, FLAGS_BY_GROUP={"is_staff": ["editors"]})
    client = Client()
    response = client.post(
        "/admin/login/", {"username": remote.username, "password": remote.password}
    )
    assert response.status_code == 302
    # Staff without permissions: the admin index opens, group admin is forbidden.
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/auth/group/").status_code == 403


def test_admin_with_keyrunes_form_shows_the_outage(
    keyrunes: KeyrunesEmulator, keyrunes_superadmin: EmulatedUser
) -> None:
    keyrunes.faults.add("/api/login", status=503)
    response = Client().post(
        "/backend-admin/login/",
        {"username": keyrunes_superadmin.username, "password": keyrunes_superadmin.password},
    )
    assert response.status_code == 200
    assert SERVICE_UNAVAILABLE_MESSAGE in response.content.decode()


# ---------------------------------------------------------------------------- async


def test_aauthenticate_and_the_inherited_get_user(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    backend = KeyrunesBackend()
    user = async_to_sync(backend.aauthenticate)(
        None, username=keyrunes_user.username, password=keyrunes_user.password
    )
    assert user is not None
    assert user.get_username() == keyrunes_user.username
    # get_user is ModelBackend's own: no pass-through override.
    assert "get_user" not in vars(KeyrunesBackend)
    assert "aget_user" not in vars(KeyrunesBackend)
    again = backend.get_user(user.pk)
    assert again is not None
    assert again.pk == user.pk
    assert backend.get_user(10_000) is None


def django_authenticate_entry_points() -> list[Callable[..., Any]]:
    """Django's own ``authenticate``, and its async twin where Django has one (5.0+)."""
    from django.contrib import auth

    entry_points: list[Callable[..., Any]] = [auth.authenticate]
    aauthenticate = getattr(auth, "aauthenticate", None)
    if aauthenticate is not None:
        entry_points.append(async_to_sync(aauthenticate))
    return entry_points


def test_django_authenticate_never_checks_a_local_password(keyrunes: KeyrunesEmulator) -> None:
    User.objects.create_user("localonly", password="local-pass-123")
    entry_points = django_authenticate_entry_points()
    for authenticate_with in entry_points:
        user = authenticate_with(username="localonly", password="local-pass-123")
        assert user is None
    # Each entry point asked Keyrunes (and only Keyrunes) once.
    assert keyrunes.requests_to("/api/login") == len(entry_points)


# ------------------------------------------------------------------ concurrency


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_first_logins_create_one_user(keyrunes: KeyrunesEmulator) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locking; runs in the PostgreSQL pass of the suite")
    keyrunes.create_group("editors")
    remote = keyrunes.create_user(groups=("users", "editors"))
    threads_count = 6
    barrier = threading.Barrier(threads_count)
    results: list[Any] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(
                KeyrunesBackend().authenticate(
                    None, username=remote.username, password=remote.password
                )
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert len(results) == threads_count
    assert all(user is not None for user in results)
    assert len({user.pk for user in results}) == 1
    assert User.objects.filter(username=remote.username).count() == 1
    assert KeyrunesIdentity.objects.count() == 1
    assert Group.objects.filter(name="editors").count() == 1
    user = User.objects.get(username=remote.username)
    assert set(user.groups.values_list("name", flat=True)) == {"users", "editors"}


# --------------------------------------------------------------- custom user model


def test_custom_user_model_suite() -> None:
    """Runs tests/custom_user with AUTH_USER_MODEL = testapp.EmailUser in a subprocess."""
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/custom_user",
            "--ds=tests.settings_email_user",
            "-p",
            "no:cacheprovider",
            "-q",
            "--no-cov",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert " passed" in output
    assert "skipped" not in output


def _session_token_after_login(user: Any) -> str:
    from django.contrib.auth import login
    from django.contrib.sessions.backends.db import SessionStore

    request = HttpRequest()
    request.session = SessionStore()
    login(request, user)
    token = request.session[SESSION_TOKEN_KEY]
    assert isinstance(token, str)
    return token


def test_authenticate_leaves_no_token_on_the_user(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    user = authenticate(username=keyrunes_user.username, password=keyrunes_user.password)
    assert user is not None
    pickled = pickle.dumps(user)
    attributes = repr(vars(user))
    # login() still gets the token into the session.
    token = _session_token_after_login(user)
    assert token.encode() not in pickled
    assert token not in attributes
    assert token not in repr(vars(user))
    # Handed over once: a second login() of the same object has no token to give.
    from django.contrib.auth import login
    from django.contrib.sessions.backends.db import SessionStore

    request = HttpRequest()
    request.session = SessionStore()
    login(request, user)
    assert SESSION_TOKEN_KEY not in request.session


def test_a_token_never_logged_in_is_dropped_with_the_user(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    from keyrunes_django import backends

    gc.collect()
    before = len(backends._pending_tokens)
    user = authenticate(username=keyrunes_user.username, password=keyrunes_user.password)
    assert user is not None
    assert len(backends._pending_tokens) == before + 1
    del user
    gc.collect()
    assert len(backends._pending_tokens) == before


def test_drf_basic_authentication_leaves_no_token_behind(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    from keyrunes_django import backends

    gc.collect()
    before = len(backends._pending_tokens)
    credentials = f"{keyrunes_user.username}:{keyrunes_user.password}".encode()
    header = "Basic " + base64.b64encode(credentials).decode()
    response = Client().get("/backend/drf-basic-whoami/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == keyrunes_user.username
    # The user DRF got carried no token, and none waits once the request is over
    # (the test client keeps the request, and so the user, on the response).
    assert body["attributes"] == []
    del response
    gc.collect()
    assert len(backends._pending_tokens) == before
    assert keyrunes.requests_to("/api/login") == 1


def test_logins_by_other_means_store_no_token(keyrunes: KeyrunesEmulator) -> None:
    client = Client()
    client.force_login(User.objects.create_user("localonly"), backend=None)
    assert SESSION_TOKEN_KEY not in client.session


def test_drf_session_authentication_sees_the_login(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    client = Client()
    assert client.get("/backend/drf-whoami/").status_code == 403
    assert client.login(username=keyrunes_user.username, password=keyrunes_user.password)
    response = client.get("/backend/drf-whoami/")
    assert response.status_code == 200
    assert response.json() == {"username": keyrunes_user.username}


def test_mapping_settings_over_http(keyrunes: KeyrunesEmulator, settings: Any) -> None:
    for name in ("editors", "ops", "noise"):
        keyrunes.create_group(name)
    remote = keyrunes.create_user("dora", groups=("users", "editors", "ops", "noise"))
    User.objects.create_user("dora", email="old@local", password="local-pass-123")
    configure(
        settings,
        USER_ATTR_MAP={"username": "username", "email": "email", "last_name": "external_id"},
        GROUP_MAP={"editors": ["Editors", "Writers"]},
        MIRROR_GROUPS=["users", "ops", "noise"],
        MIRROR_GROUPS_EXCEPT=["noise"],
        FLAGS_BY_GROUP={"is_staff": "ops"},
        ALWAYS_UPDATE_USER=False,
        LINK_EXISTING_USERS=True,
    )

    user = authenticate(username=remote.username, password=remote.password)

    assert user is not None
    user = User.objects.get(pk=user.pk)
    assert not user.has_usable_password()
    assert user.is_staff
    assert not user.is_superuser
    # Linked, not created: with ALWAYS_UPDATE_USER off the mapped fields stay local.
    assert user.email == "old@local"
    assert user.last_name == ""
    assert set(user.groups.values_list("name", flat=True)) == {"users", "ops", "Editors", "Writers"}

    configure(settings, ALWAYS_UPDATE_USER=True)
    authenticate(username=remote.username, password=remote.password)
    user = User.objects.get(pk=user.pk)
    assert user.email == remote.email
    assert user.last_name == remote.external_id


def test_a_login_answer_with_a_token_that_is_not_a_jwt_is_an_outage(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    answer = get_client_login(keyrunes_user)
    broken = answer.model_copy(update={"token": "not-a-jwt"})
    request = HttpRequest()
    assert KeyrunesBackend().user_from_auth_response(request, broken, login_name="x") is None
    error = login_error(request)
    assert error is not None
    assert error.code == "service_unavailable"
    assert not User.objects.filter(username=keyrunes_user.username).exists()


def get_client_login(remote: EmulatedUser) -> AuthResponse:
    from keyrunes_django.client import get_client

    return get_client().login(remote.username, remote.password)
