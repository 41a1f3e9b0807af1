"""KeyrunesAuthenticationMiddleware and KeyrunesSessionRefreshMiddleware, WSGI and ASGI."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth import get_user_model
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient, Client
from django.urls import path

from keyrunes_django import middleware, signals
from keyrunes_django.cache import credential_hash
from keyrunes_django.conf import clock
from keyrunes_django.sessions import (
    REFRESH_RETRY_INTERVAL,
    SESSION_TOKEN_EXPIRY_KEY,
    SESSION_TOKEN_KEY,
    get_session_token,
)
from keyrunes_django.tokens import TokenAuthenticator
from keyrunes_django.users import OrganizationUser
from tests.factories import UNKNOWN_KEY, service_account

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.urls("tests.test_middleware"),
    pytest.mark.usefixtures("clean_caches"),
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "keyrunes_django.middleware.KeyrunesAuthenticationMiddleware",
    "keyrunes_django.middleware.KeyrunesSessionRefreshMiddleware",
]


def _user_name(user: Any) -> str | None:
    if not user.is_authenticated:
        return None
    if isinstance(user, OrganizationUser):
        return str(user)  # "organization:<id>"
    return user.get_username()  # type: ignore[no-any-return]


def _describe(request: HttpRequest) -> dict[str, Any]:
    principal = request.keyrunes  # type: ignore[attr-defined]
    kind = type(principal).__name__ if principal is not None else None
    return {
        "user": _user_name(request.user),
        "kind": kind,
        "organization_id": getattr(principal, "organization_id", None),
    }


def whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_describe(request))


async def current_user(request: HttpRequest) -> Any:
    """``await request.auser()`` where Django sets it for every request (5.0+).

    Django 4.2 has ``auser`` only where our middleware set it; otherwise the
    lazy session user is resolved in a worker thread, as 4.2 requires.
    """
    auser = getattr(request, "auser", None)
    if auser is not None:
        return await auser()

    def resolved_user() -> Any:
        user = request.user
        _ = user.is_authenticated  # loads the lazy user here, off the event loop
        return user

    return await sync_to_async(resolved_user)()


async def awhoami(request: HttpRequest) -> JsonResponse:
    user = await current_user(request)
    data = {
        "user": _user_name(user),
        "kind": type(request.keyrunes).__name__  # type: ignore[attr-defined]
        if request.keyrunes is not None  # type: ignore[attr-defined]
        else None,
    }
    return JsonResponse(data)


urlpatterns = [path("whoami/", whoami), path("awhoami/", awhoami)]


@pytest.fixture
def kr(keyrunes: Any, settings: Any) -> Any:
    settings.MIDDLEWARE = MIDDLEWARE
    return keyrunes


@pytest.fixture
def remote(kr: Any, settings: Any) -> Any:
    settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": "remote"}
    return kr


@pytest.fixture
def svc(kr: Any, settings: Any) -> Any:
    """A service whose organization (1, ``public``) the service account establishes."""
    settings.KEYRUNES = {**settings.KEYRUNES, "SERVICE_ACCOUNT": service_account()}
    return kr


def run_async(func: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test body through asgiref, as an ASGI server would."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async_to_sync(func)(*args, **kwargs)

    return wrapper


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def _collect(signal: Any) -> Any:
    seen: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        seen.append(kwargs)

    signal.connect(receiver, weak=False)
    return seen, receiver


# -------------------------------------------------------------- bearer tokens


class TestBearer:
    def test_no_header_leaves_request_alone(self, kr: Any, client: Client) -> None:
        body = client.get("/whoami/").json()
        assert body == {"user": None, "kind": None, "organization_id": None}

    def test_session_user_untouched(self, kr: Any, client: Client) -> None:
        local = get_user_model().objects.create_user(username="local", password="x")
        client.force_login(local)
        assert client.get("/whoami/").json()["user"] == "local"

    def test_valid_token(self, kr: Any, client: Client, keyrunes_user: Any) -> None:
        response = client.get("/whoami/", **bearer(kr.issue_token(keyrunes_user)))
        assert response.status_code == 200
        assert response.json() == {
            "user": keyrunes_user.username,
            "kind": "VerifiedIdentity",
            "organization_id": 1,
        }

    def test_token_beats_session(self, kr: Any, client: Client, keyrunes_user: Any) -> None:
        local = get_user_model().objects.create_user(username="local", password="x")
        client.force_login(local)
        body = client.get("/whoami/", **bearer(kr.issue_token(keyrunes_user))).json()
        assert body["user"] == keyrunes_user.username

    def test_lowercase_scheme(self, kr: Any, client: Client, keyrunes_user: Any) -> None:
        token = kr.issue_token(keyrunes_user)
        response = client.get("/whoami/", HTTP_AUTHORIZATION=f"bearer  {token} ")
        assert response.json()["user"] == keyrunes_user.username

    def test_other_scheme_ignored(self, kr: Any, client: Client) -> None:
        response = client.get("/whoami/", HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz")
        assert response.status_code == 200
        assert response.json()["user"] is None

    def test_warm_request_no_db_no_network(
        self, remote: Any, client: Client, keyrunes_user: Any, django_assert_num_queries: Any
    ) -> None:
        token = remote.issue_token(keyrunes_user)
        assert client.get("/whoami/", **bearer(token)).status_code == 200
        with django_assert_num_queries(0):
            for _ in range(5):
                assert client.get("/whoami/", **bearer(token)).status_code == 200
        assert remote.requests_to("/api/me") == 1

    def test_csrf_not_required_for_bearer(self, kr: Any, keyrunes_user: Any) -> None:
        client = Client(enforce_csrf_checks=True)
        token = kr.issue_token(keyrunes_user)
        assert client.post("/whoami/", **bearer(token)).status_code == 200
        assert client.post("/whoami/").status_code == 403  # CSRF still guards the rest

    def test_mirror_refused_is_403(
        self, kr: Any, client: Client, keyrunes_user: Any, settings: Any
    ) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "REQUIRE_GROUP": "staff"}
        response = client.get(
            "/whoami/", HTTP_ACCEPT="application/json", **bearer(kr.issue_token(keyrunes_user))
        )
        assert response.status_code == 403
        assert response.json()["error"] == "forbidden"


class TestRefusals:
    def _assert_401(self, response: Any, reason: str) -> None:
        assert response.status_code == 401
        challenge = response["WWW-Authenticate"]
        assert challenge.startswith("Bearer ")
        assert 'error="invalid_token"' in challenge
        assert "error_description=" in challenge
        assert response.json()["reason"] == reason

    def test_expired(self, kr: Any, client: Client, keyrunes_user: Any) -> None:
        response = client.get(
            "/whoami/", HTTP_ACCEPT="application/json", **bearer(kr.expired_token(keyrunes_user))
        )
        self._assert_401(response, "expired")
        assert 'error_description="The token has expired."' in response["WWW-Authenticate"]

    def test_plain_text_without_json_accept(self, kr: Any, client: Client) -> None:
        response = client.get("/whoami/", HTTP_ACCEPT="text/html", **bearer("a.b.c"))
        assert response.status_code == 401
        assert response["Content-Type"].startswith("text/plain")
        assert "malformed" in response.content.decode() or "401" in response.content.decode()
        assert 'error="invalid_token"' in response["WWW-Authenticate"]

    @pytest.mark.parametrize(
        ("header", "reason"),
        [
            ("Bearer", "missing_token"),
            ("Bearer   ", "missing_token"),
            ("Bearer tökén", "malformed"),
            ("Bearer " + "a" * 16 * 1024, "header_too_large"),
            ("Bearer a b", "malformed"),
        ],
    )
    def test_bad_headers_never_reach_keyrunes(
        self, remote: Any, client: Client, header: str, reason: str
    ) -> None:
        seen, receiver = _collect(signals.credential_rejected)
        try:
            response = client.get(
                "/whoami/", HTTP_ACCEPT="application/json", HTTP_AUTHORIZATION=header
            )
        finally:
            signals.credential_rejected.disconnect(receiver)
        self._assert_401(response, reason)
        assert remote.requests_to("/api/me") == 0
        assert len(remote.request_log) == 0
        assert [s["reason"] for s in seen] == [reason]

    def test_wrong_signature(self, kr: Any, client: Client, keyrunes_user: Any) -> None:
        import jwt

        payload = jwt.decode(kr.issue_token(keyrunes_user), options={"verify_signature": False})
        forged = jwt.encode(payload, "not-the-secret-" * 3, algorithm="HS256")
        response = client.get("/whoami/", HTTP_ACCEPT="application/json", **bearer(forged))
        self._assert_401(response, "bad_signature")

    def test_wrong_namespace(self, kr: Any, client: Client) -> None:
        org = kr.create_organization("Company X", "company_x")
        user = kr.create_user(namespace="company_x", organization_id=org.organization_id)
        response = client.get(
            "/whoami/", HTTP_ACCEPT="application/json", **bearer(kr.issue_token(user))
        )
        self._assert_401(response, "wrong_namespace")

    def test_refusal_logged_without_token(
        self, kr: Any, client: Client, caplog: pytest.LogCaptureFixture
    ) -> None:
        token = "a.b.c"
        with caplog.at_level(logging.WARNING, logger="keyrunes_django.auth"):
            client.get("/whoami/", **bearer(token))
        records = [r for r in caplog.records if getattr(r, "event", "") == "credential_rejected"]
        assert records
        assert records[0].credential_hash == credential_hash(token)  # type: ignore[attr-defined]
        assert all(token not in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ outages


class TestOutage:
    def test_503_json(self, remote: Any, client: Client, keyrunes_user: Any) -> None:
        remote.faults.add(r"^/api/me$", status=503)
        seen, receiver = _collect(signals.auth_service_error)
        try:
            response = client.get(
                "/whoami/",
                HTTP_ACCEPT="application/json",
                **bearer(remote.issue_token(keyrunes_user)),
            )
        finally:
            signals.auth_service_error.disconnect(receiver)
        assert response.status_code == 503
        assert response.json()["error"] == "service_unavailable"
        assert response["Retry-After"]
        assert seen
        assert seen[0]["served_stale"] is False

    def test_503_plain(self, remote: Any, client: Client, keyrunes_user: Any) -> None:
        remote.faults.add(r"^/api/me$", drop=True)
        # A browser (Accept names HTML) gets text; a bare bearer call is an API client's.
        response = client.get(
            "/whoami/", HTTP_ACCEPT="text/html", **bearer(remote.issue_token(keyrunes_user))
        )
        assert response.status_code == 503
        assert response["Content-Type"].startswith("text/plain")

    def test_stale_if_error_then_503(
        self, remote: Any, client: Client, keyrunes_user: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        token = remote.issue_token(keyrunes_user)
        assert client.get("/whoami/", **bearer(token)).status_code == 200
        start = time.time()
        ttl = 300
        stale = 300  # defaults: CACHE_TTL and STALE_IF_ERROR
        remote.faults.add(r"^/api/me$", status=500)
        seen, receiver = _collect(signals.auth_service_error)
        try:
            monkeypatch.setattr(clock, "now", lambda: start + ttl + 10)
            response = client.get("/whoami/", **bearer(token))
            assert response.status_code == 200
            assert response.json()["user"] == keyrunes_user.username
            # The stale answer was served at once; its revalidation ran in the background.
            from keyrunes_django.tokens import get_authenticator

            get_authenticator().cache.wait_for_revalidations()
            assert seen[-1]["served_stale"] is True
            # The token itself expires after 3600 s; the stale window ends first.
            monkeypatch.setattr(clock, "now", lambda: start + ttl + stale + 10)
            response = client.get("/whoami/", **bearer(token))
            assert response.status_code == 503
            assert seen[-1]["served_stale"] is False
        finally:
            signals.auth_service_error.disconnect(receiver)

    def test_fail_open(
        self,
        remote: Any,
        client: Client,
        keyrunes_user: Any,
        settings: Any,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "FAIL_OPEN": True}
        remote.faults.add(r"^/api/me$", status=503)
        with caplog.at_level(logging.ERROR, logger="keyrunes_django.auth"):
            response = client.get("/whoami/", **bearer(remote.issue_token(keyrunes_user)))
        assert response.status_code == 200
        assert response.json()["user"] is None
        assert any("FAIL_OPEN" in r.getMessage() for r in caplog.records)

    def test_invalid_token_still_401_with_fail_open(
        self, remote: Any, client: Client, settings: Any
    ) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "FAIL_OPEN": True}
        assert client.get("/whoami/", **bearer("a.b.c")).status_code == 401


# --------------------------------------------------------------- organization keys


@pytest.mark.parametrize("quirks", [False, True], ids=["default", "server_quirks"])
class TestOrganizationKey:
    @pytest.fixture
    def org(self, svc: Any, quirks: bool) -> Any:
        svc.server_quirks = quirks
        return svc

    def test_valid_key(self, org: Any, client: Client, quirks: bool) -> None:
        key = org.organization_key(1)
        for _ in range(3):
            body = client.get("/whoami/", HTTP_X_ORGANIZATION_KEY=key).json()
            # An organization key makes request.user an authenticated OrganizationUser.
            assert body["user"] == "organization:1"
            assert body["kind"] == "OrganizationPrincipal"
            # Under quirks the organization comes from the admin listing's key.
            assert body["organization_id"] == 1
        assert org.requests_to("/api/verify-org-key") == 1
        assert org.requests_to("/api/check-permission") == (1 if quirks else 0)

    def test_invalid_key(self, org: Any, client: Client) -> None:
        response = client.get(
            "/whoami/", HTTP_ACCEPT="application/json", HTTP_X_ORGANIZATION_KEY=UNKNOWN_KEY
        )
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("OrganizationKey ")
        assert 'error="invalid_token"' in response["WWW-Authenticate"]
        assert response.json()["reason"] == "invalid_key"
        client.get("/whoami/", HTTP_X_ORGANIZATION_KEY=UNKNOWN_KEY)
        assert org.requests_to("/api/verify-org-key") == 1  # negative cache

    def test_malformed_key_no_network(self, org: Any, client: Client) -> None:
        response = client.get("/whoami/", HTTP_X_ORGANIZATION_KEY="not a key")
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("OrganizationKey ")
        assert len(org.request_log) == 0

    def test_scope(self, kr: Any, client: Client, settings: Any, quirks: bool) -> None:
        # ORGANIZATION_SCOPE alone (no service account) establishes the organization.
        kr.server_quirks = quirks
        other = kr.create_organization("Company X", "company_x")
        settings.KEYRUNES = {**settings.KEYRUNES, "ORGANIZATION_SCOPE": 1}
        own = client.get(
            "/whoami/",
            HTTP_ACCEPT="application/json",
            HTTP_X_ORGANIZATION_KEY=kr.organization_key(1),
        )
        foreign = client.get(
            "/whoami/",
            HTTP_ACCEPT="application/json",
            HTTP_X_ORGANIZATION_KEY=kr.organization_key(other.organization_id),
        )
        assert foreign.status_code == 401
        assert foreign.json()["reason"] == "scope_mismatch"
        if quirks:  # organization not named and no listing to compare with -> fail closed
            assert own.status_code == 401
            assert own.json()["reason"] == "scope_mismatch"
        else:
            assert own.status_code == 200

    def test_without_established_organization(self, kr: Any, client: Client, quirks: bool) -> None:
        kr.server_quirks = quirks
        response = client.get(
            "/whoami/",
            HTTP_ACCEPT="application/json",
            HTTP_X_ORGANIZATION_KEY=kr.organization_key(1),
        )
        assert response.status_code == 401
        assert response.json()["reason"] == "organization_unknown"
        assert response["WWW-Authenticate"].startswith("OrganizationKey ")

    def test_outage(self, org: Any, client: Client) -> None:
        org.faults.add(r"^/api/(verify-org-key|check-permission)$", status=503)
        response = client.get("/whoami/", HTTP_X_ORGANIZATION_KEY=org.organization_key(1))
        assert response.status_code == 503

    def test_bearer_takes_precedence(self, org: Any, client: Client, keyrunes_user: Any) -> None:
        body = client.get(
            "/whoami/",
            HTTP_X_ORGANIZATION_KEY="not a key",
            **bearer(org.issue_token(keyrunes_user)),
        ).json()
        assert body["kind"] == "VerifiedIdentity"


class TestOrgKeyProbeAnswers:
    """The check-permission probe's less common answers, with the verify route broken."""

    @pytest.fixture
    def quirky(self, svc: Any) -> Any:
        svc.server_quirks = True
        return svc

    @pytest.mark.parametrize(("status", "code"), [(403, 200), (401, 401), (404, 503), (400, 503)])
    def test_probe(self, quirky: Any, client: Client, status: int, code: int) -> None:
        quirky.faults.add(r"^/api/check-permission$", status=status)
        response = client.get("/whoami/", HTTP_X_ORGANIZATION_KEY=quirky.organization_key(1))
        assert response.status_code == code

    def test_probe_garbage(self, quirky: Any, client: Client) -> None:
        quirky.faults.add(r"^/api/check-permission$", malformed=True)
        response = client.get("/whoami/", HTTP_X_ORGANIZATION_KEY=quirky.organization_key(1))
        assert response.status_code in {200, 503}

    def test_stale_if_error(
        self, svc: Any, client: Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        key = svc.organization_key(1)
        assert client.get("/whoami/", HTTP_X_ORGANIZATION_KEY=key).status_code == 200
        svc.faults.add(r"^/api/verify-org-key$", status=503)
        start = time.time()
        monkeypatch.setattr(clock, "now", lambda: start + 310)
        assert client.get("/whoami/", HTTP_X_ORGANIZATION_KEY=key).status_code == 200
        monkeypatch.setattr(clock, "now", lambda: start + 610)
        assert client.get("/whoami/", HTTP_X_ORGANIZATION_KEY=key).status_code == 503

    def test_verify_unexpected_status(self, svc: Any, client: Client) -> None:
        svc.faults.add(r"^/api/verify-org-key$", status=404)
        response = client.get("/whoami/", HTTP_X_ORGANIZATION_KEY=svc.organization_key(1))
        assert response.status_code == 503


# --------------------------------------------------------------------- ASGI


class TestAsync:
    @run_async
    async def test_cold_then_warm(
        self, kr: Any, keyrunes_user: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        client = AsyncClient()
        token = kr.issue_token(keyrunes_user)
        response = await client.get("/awhoami/", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert response.json() == {"user": keyrunes_user.username, "kind": "VerifiedIdentity"}

        def boom(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("warm requests must not leave the event loop")

        for step in ("read_credential", "verify", "finish", "authenticate"):
            monkeypatch.setattr(TokenAuthenticator, step, boom)
        response = await client.get("/awhoami/", headers={"Authorization": f"Bearer {token}"})
        assert response.json()["user"] == keyrunes_user.username

    @run_async
    async def test_cold_request_does_not_block_the_event_loop(
        self, remote: Any, keyrunes_user: Any
    ) -> None:
        import asyncio

        remote.faults.add(r"^/api/me$", delay=0.3)
        token = remote.issue_token(keyrunes_user)
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.ensure_future(ticker())
        response = await AsyncClient().get(
            "/awhoami/", headers={"Authorization": f"Bearer {token}"}
        )
        done = True
        await task
        assert response.json()["user"] == keyrunes_user.username
        assert ticks >= 5  # the loop kept running during the 0.3 s /api/me call

    @run_async
    async def test_sync_view_under_asgi(self, kr: Any, keyrunes_user: Any) -> None:
        response = await AsyncClient().get(
            "/whoami/", headers={"Authorization": "Bearer " + kr.issue_token(keyrunes_user)}
        )
        assert response.json()["kind"] == "VerifiedIdentity"

    @run_async
    async def test_refusal_and_anonymous(self, kr: Any) -> None:
        client = AsyncClient()
        response = await client.get("/awhoami/", headers={"Authorization": "Bearer a.b.c"})
        assert response.status_code == 401
        response = await client.get("/awhoami/")
        assert response.json() == {"user": None, "kind": None}

    @run_async
    async def test_org_key(self, svc: Any) -> None:
        response = await AsyncClient().get(
            "/awhoami/", headers={"X-Organization-Key": svc.organization_key(1)}
        )
        assert response.json() == {"user": "organization:1", "kind": "OrganizationPrincipal"}

    @run_async
    async def test_outage(self, remote: Any, keyrunes_user: Any) -> None:
        remote.faults.add(r"^/api/me$", status=503)
        response = await AsyncClient().get(
            "/awhoami/", headers={"Authorization": "Bearer " + remote.issue_token(keyrunes_user)}
        )
        assert response.status_code == 503


def test_middleware_flags() -> None:
    async def get_response(request: HttpRequest) -> Any:
        return None

    from asgiref.sync import iscoroutinefunction

    for cls in (
        middleware.KeyrunesAuthenticationMiddleware,
        middleware.KeyrunesSessionRefreshMiddleware,
    ):
        assert cls.sync_capable
        assert cls.async_capable
        assert iscoroutinefunction(cls(get_response))
        assert not iscoroutinefunction(cls(lambda r: None))  # type: ignore[arg-type, return-value]


# ------------------------------------------------------------- session refresh


def _login_with_token(client: Client, kr: Any, user: Any, *, expires_in: int) -> str:
    import jwt

    from keyrunes_django.mapping import get_mapper
    from keyrunes_django.schemas import TokenClaims

    token = kr.issue_token(user, issued_at=int(time.time()) - 3600 + expires_in)
    payload = jwt.decode(token, options={"verify_signature": False})
    identity = TokenClaims.from_payload(payload).to_identity()
    local = get_mapper().mirror(identity).user
    client.force_login(local, backend="keyrunes_django.backends.KeyrunesBackend")
    session = client.session
    session[SESSION_TOKEN_KEY] = token
    session[SESSION_TOKEN_EXPIRY_KEY] = payload["exp"]
    session.save()
    return token


class TestSessionRefresh:
    def test_far_from_expiry_does_nothing(
        self, kr: Any, client: Client, keyrunes_user: Any
    ) -> None:
        token = _login_with_token(client, kr, keyrunes_user, expires_in=3000)
        assert client.get("/whoami/").json()["user"] == keyrunes_user.username
        assert kr.requests_to("/api/refresh-token") == 0
        assert client.session[SESSION_TOKEN_KEY] == token

    def test_refresh_and_remirror(self, kr: Any, client: Client, keyrunes_user: Any) -> None:
        token = _login_with_token(client, kr, keyrunes_user, expires_in=60)
        kr.create_group("developers")
        kr.add_to_group(keyrunes_user, "developers")
        assert client.get("/whoami/").json()["user"] == keyrunes_user.username
        assert kr.requests_to("/api/refresh-token") == 1
        assert kr.requests_to("/api/me") == 1
        new = client.session[SESSION_TOKEN_KEY]
        assert new != token
        assert client.session[SESSION_TOKEN_EXPIRY_KEY] > time.time() + 3000
        local = get_user_model().objects.get(username=keyrunes_user.username)
        assert local.groups.filter(name="developers").exists()
        client.get("/whoami/")
        assert kr.requests_to("/api/refresh-token") == 1  # fresh now

    def test_refused_logs_out(self, kr: Any, client: Client, keyrunes_user: Any) -> None:
        _login_with_token(client, kr, keyrunes_user, expires_in=60)
        kr.faults.add(r"^/api/refresh-token$", status=401)
        assert client.get("/whoami/").json()["user"] is None
        assert client.get("/whoami/").json()["user"] is None

    def test_deleted_user_logs_out(self, kr: Any, client: Client, keyrunes_user: Any) -> None:
        _login_with_token(client, kr, keyrunes_user, expires_in=60)
        kr.delete_user(keyrunes_user)
        assert client.get("/whoami/").json()["user"] is None

    def test_unreachable_keeps_session_and_backs_off(
        self, kr: Any, client: Client, keyrunes_user: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        token = _login_with_token(client, kr, keyrunes_user, expires_in=60)
        kr.faults.add(r"^/api/refresh-token$", status=503)
        assert client.get("/whoami/").json()["user"] == keyrunes_user.username
        assert client.get("/whoami/").json()["user"] == keyrunes_user.username
        attempts = kr.requests_to("/api/refresh-token")
        assert attempts >= 1
        assert client.session[SESSION_TOKEN_KEY] == token
        kr.faults.clear()
        later = time.time() + REFRESH_RETRY_INTERVAL + 1
        monkeypatch.setattr(clock, "now", lambda: later)
        client.get("/whoami/")
        assert client.session[SESSION_TOKEN_KEY] != token

    def test_me_unreachable_after_refresh(
        self, kr: Any, client: Client, keyrunes_user: Any
    ) -> None:
        token = _login_with_token(client, kr, keyrunes_user, expires_in=60)
        kr.faults.add(r"^/api/me$", status=503)
        assert client.get("/whoami/").json()["user"] == keyrunes_user.username
        assert client.session[SESSION_TOKEN_KEY] != token

    def test_mirror_refused_after_refresh_logs_out(
        self, kr: Any, client: Client, keyrunes_user: Any, settings: Any
    ) -> None:
        _login_with_token(client, kr, keyrunes_user, expires_in=60)
        settings.KEYRUNES = {**settings.KEYRUNES, "DENY_GROUP": "users"}
        assert client.get("/whoami/").json()["user"] is None

    def test_token_of_another_user_logs_out(
        self, kr: Any, client: Client, keyrunes_user: Any
    ) -> None:
        _login_with_token(client, kr, keyrunes_user, expires_in=60)
        other = get_user_model().objects.create_user(username="someone-else")
        session_token = client.session[SESSION_TOKEN_KEY]
        client.force_login(other, backend="keyrunes_django.backends.KeyrunesBackend")
        session = client.session
        session[SESSION_TOKEN_KEY] = session_token
        session[SESSION_TOKEN_EXPIRY_KEY] = int(time.time()) + 60
        session.save()
        assert client.get("/whoami/").json()["user"] is None

    def test_bearer_requests_skip_refresh(
        self, kr: Any, client: Client, keyrunes_user: Any
    ) -> None:
        _login_with_token(client, kr, keyrunes_user, expires_in=60)
        client.get("/whoami/", **bearer(kr.issue_token(keyrunes_user)))
        assert kr.requests_to("/api/refresh-token") == 0

    def test_organization_key_requests_skip_refresh(
        self, svc: Any, client: Client, keyrunes_user: Any
    ) -> None:
        # A browser session and an organization key on one request: the key's
        # OrganizationUser is not the session's user, and the session survives.
        _login_with_token(client, svc, keyrunes_user, expires_in=60)
        body = client.get("/whoami/", HTTP_X_ORGANIZATION_KEY=svc.organization_key(1)).json()
        assert body["user"] == "organization:1"
        assert svc.requests_to("/api/refresh-token") == 0
        assert client.get("/whoami/").json()["user"] == keyrunes_user.username

    def test_local_user_without_token(self, kr: Any, client: Client) -> None:
        client.force_login(get_user_model().objects.create_user(username="local"))
        client.get("/whoami/")
        assert kr.requests_to("/api/refresh-token") == 0
        assert get_session_token is not None

    @run_async
    async def test_async_refresh(self, kr: Any, keyrunes_user: Any) -> None:
        from asgiref.sync import sync_to_async

        client = AsyncClient()
        sync_client = Client()
        token = await sync_to_async(_login_with_token)(
            sync_client, kr, keyrunes_user, expires_in=60
        )
        client.cookies = sync_client.cookies
        response = await client.get("/awhoami/")
        assert response.json()["user"] == keyrunes_user.username
        assert kr.requests_to("/api/refresh-token") == 1
        assert token
