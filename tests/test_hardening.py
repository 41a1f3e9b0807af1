"""Hardening (issue 11 items 1, 2, 4, 21, 23 and hostile tokens/keys), through real requests.

Each class states what must hold; each fails on the code before the
restructuring (commit 36f2bb9).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient, Client
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from keyrunes_django.cache import SharedCache, credential_hash, identity_to_dict
from keyrunes_django.drf.authentication import (
    KeyrunesOrganizationKeyAuthentication,
    KeyrunesTokenAuthentication,
)
from keyrunes_django.drf.permissions import IsOrganization
from keyrunes_django.identity import VerifiedIdentity
from keyrunes_django.middleware import keyrunes_exempt
from keyrunes_django.tokens import TokenAuthenticator, get_authenticator
from tests.factories import (
    UNKNOWN_KEY,
    b64,
    claims,
    make_token,
    raw_token,
    service_account,
    tenant,
)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.urls("tests.test_hardening"),
    pytest.mark.usefixtures("clean_caches"),
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "keyrunes_django.middleware.KeyrunesAuthenticationMiddleware",
]

JSON = {"HTTP_ACCEPT": "application/json"}


def _describe(request: HttpRequest) -> dict[str, Any]:
    user = request.user
    principal = getattr(request, "keyrunes", None)
    return {
        "authenticated": user.is_authenticated,
        "user": str(user) if user.is_authenticated else None,
        "superuser": bool(getattr(user, "is_superuser", False)),
        "kind": type(principal).__name__ if principal is not None else None,
        "organization_id": getattr(principal, "organization_id", None),
    }


def whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_describe(request))


@keyrunes_exempt
def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_describe(request))


def login_page(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_describe(request))


async def awhoami(request: HttpRequest) -> JsonResponse:
    user = await request.auser()  # type: ignore[attr-defined]
    leftovers = sorted(
        name for name in vars(request) if "keyrunes" in name.lower() and name != "keyrunes"
    )
    return JsonResponse({"user": str(user), "leftovers": leftovers})


class ReadmeOrder(APIView):
    """Both DRF classes in the README's order."""

    authentication_classes = [KeyrunesTokenAuthentication, KeyrunesOrganizationKeyAuthentication]
    permission_classes = [IsOrganization]

    def get(self, request: Request) -> Response:
        return Response({"organization_id": getattr(request.auth, "organization_id", None)})


urlpatterns = [
    path("whoami/", whoami),
    path("health/", health),
    path("login-page/", login_page),
    path("awhoami/", awhoami),
    path("api/org-only/", ReadmeOrder.as_view()),
]


@pytest.fixture
def kr(keyrunes: Any, settings: Any) -> Any:
    settings.MIDDLEWARE = MIDDLEWARE
    return keyrunes


@pytest.fixture
def remote(kr: Any, settings: Any) -> Any:
    settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": "remote"}
    return kr


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def get(client: Client, url: str, **headers: Any) -> Any:
    return client.get(url, **JSON, **headers)


# ----------------------------------------------------------------- item 1


@pytest.mark.parametrize("mode", ["local", "remote"])
class TestIssuerInBothModes:
    """A correctly signed token whose ``iss`` is not ``keyrunes`` is a 401 in both modes."""

    def test_foreign_issuer_is_401(
        self, kr: Any, client: Client, keyrunes_user: Any, settings: Any, mode: str
    ) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": mode}
        token = kr.issue_token(keyrunes_user, iss="someone-else")
        response = get(client, "/whoami/", **bearer(token))
        assert response.status_code == 401
        assert response.json()["reason"] == "wrong_issuer"
        assert kr.requests_to("/api/me") == 0

    def test_keyrunes_issuer_is_accepted(
        self, kr: Any, client: Client, keyrunes_user: Any, settings: Any, mode: str
    ) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": mode}
        response = get(client, "/whoami/", **bearer(kr.issue_token(keyrunes_user)))
        assert response.status_code == 200
        assert kr.requests_to("/api/me") == (1 if mode == "remote" else 0)


class TestRemoteClaimRules:
    """Remote mode refuses what the claims already rule out, without asking /api/me."""

    @pytest.mark.parametrize(
        ("overrides", "expected"),
        [
            ({"exp": int(time.time()) - 60, "iat": int(time.time()) - 3660}, "expired"),
            ({"namespace": "company_x"}, "wrong_namespace"),
            ({"organization_id": "1"}, "malformed"),
            ({"groups": "users"}, "malformed"),
            ({"exp": int(time.time()) + 60.5}, "malformed"),
            ({"iss": "keyrunes-staging"}, "wrong_issuer"),
        ],
        ids=["expired", "namespace", "org-type", "groups-type", "float-exp", "issuer"],
    )
    def test_refused_without_calling_me(
        self, remote: Any, client: Client, keyrunes_user: Any, overrides: Any, expected: str
    ) -> None:
        token = remote.issue_token(keyrunes_user, **overrides)
        response = get(client, "/whoami/", **bearer(token))
        assert response.status_code == 401
        assert response.json()["reason"] == expected
        assert remote.request_counts() == {}


# ----------------------------------------------------------------- item 2


@pytest.fixture
def two_tenants(kr: Any, settings: Any) -> tuple[Any, Any]:
    """A service of ``company_a`` (no ORGANIZATION_SCOPE), and organizations A and B."""
    a = tenant(kr, "company_a")
    b = tenant(kr, "company_b")
    settings.KEYRUNES = {**settings.KEYRUNES, "NAMESPACE": "company_a"}
    return a, b


def _with_service_account(settings: Any) -> None:
    settings.KEYRUNES = {**settings.KEYRUNES, "SERVICE_ACCOUNT": service_account()}


@pytest.mark.parametrize("quirks", [False, True], ids=["default", "server_quirks"])
class TestOrganizationKeysAreTenantBound:
    def test_own_key_works_other_tenant_refused(
        self, kr: Any, two_tenants: Any, settings: Any, client: Client, quirks: bool
    ) -> None:
        a, b = two_tenants
        _with_service_account(settings)
        kr.server_quirks = quirks  # verify-org-key answers 500: the listing decides
        own = get(client, "/whoami/", HTTP_X_ORGANIZATION_KEY=a.key)
        assert own.status_code == 200
        assert own.json()["organization_id"] == a.organization_id
        assert own.json()["user"] == f"organization:{a.organization_id}"
        foreign = get(client, "/whoami/", HTTP_X_ORGANIZATION_KEY=b.key)
        assert foreign.status_code == 401
        assert foreign.json()["reason"] == "scope_mismatch"
        assert foreign["WWW-Authenticate"].startswith("OrganizationKey ")

    def test_is_organization_admits_own_and_denies_other(
        self, kr: Any, two_tenants: Any, settings: Any, quirks: bool
    ) -> None:
        a, b = two_tenants
        _with_service_account(settings)
        kr.server_quirks = quirks
        api = APIClient()
        own = api.get("/api/org-only/", HTTP_X_ORGANIZATION_KEY=a.key)
        assert own.status_code == 200
        assert own.json() == {"organization_id": a.organization_id}
        foreign = api.get("/api/org-only/", HTTP_X_ORGANIZATION_KEY=b.key)
        assert foreign.status_code == 401

    def test_every_key_refused_without_service_account_or_scope(
        self, kr: Any, two_tenants: Any, client: Client, quirks: bool
    ) -> None:
        kr.server_quirks = quirks
        for org in two_tenants:
            response = get(client, "/whoami/", HTTP_X_ORGANIZATION_KEY=org.key)
            assert response.status_code == 401
            assert response.json()["reason"] == "organization_unknown"
        api = APIClient()
        assert api.get(
            "/api/org-only/", HTTP_X_ORGANIZATION_KEY=two_tenants[0].key
        ).status_code == (401)

    def test_tokens_of_the_other_tenant_stay_refused(
        self, kr: Any, two_tenants: Any, settings: Any, client: Client, quirks: bool
    ) -> None:
        a, b = two_tenants
        _with_service_account(settings)
        kr.server_quirks = quirks
        assert get(client, "/whoami/", **bearer(kr.issue_token(a.user))).status_code == 200
        refused = get(client, "/whoami/", **bearer(kr.issue_token(b.user)))
        assert refused.json()["reason"] == "wrong_namespace"


# ----------------------------------------------------------------- item 4


class TestDrfReadmeOrderChallenge:
    """With [Token, OrganizationKey], a refused key gets an OrganizationKey challenge."""

    @pytest.mark.parametrize(
        "key", [UNKNOWN_KEY, "not-a-key", "foreign"], ids=["invalid", "malformed", "foreign"]
    )
    def test_refused_key_challenge(self, kr: Any, settings: Any, key: str) -> None:
        _with_service_account(settings)
        if key == "foreign":
            key = tenant(kr, "company_b").key
        response = APIClient().get("/api/org-only/", HTTP_X_ORGANIZATION_KEY=key)
        assert response.status_code == 401
        challenge = response["WWW-Authenticate"]
        assert challenge.startswith('OrganizationKey realm="keyrunes"')
        assert 'error="invalid_token"' in challenge
        assert "error_description=" in challenge

    def test_no_credential_gets_a_bare_bearer_challenge(self, kr: Any) -> None:
        response = APIClient().get("/api/org-only/")
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="keyrunes"'


# ----------------------------------------------------------------- item 21


def _planted_superuser(token: str, user_id: int) -> dict[str, Any]:
    identity = VerifiedIdentity(
        user_id=user_id,
        username="admin",
        email="admin@example.com",
        namespace="public",
        organization_id=1,
        groups=("superadmin", "users"),
        source="remote",
    )
    now = time.time()
    return {
        "v": 2,
        "stored_at": now,
        "fresh_until": now + 300,
        "stale_until": now + 600,
        "value": identity_to_dict(identity),
    }


class TestSharedCacheRecords:
    """Shared records are authenticated and bound to their key and to the service."""

    @pytest.mark.parametrize("form", ["plain_dict", "sealed_with_another_key", "bad_mac"])
    def test_planted_record_never_makes_a_superuser(
        self, remote: Any, client: Client, keyrunes_superadmin: Any, form: str
    ) -> None:
        made_up = make_token(
            secret="attacker-secret-" * 2,
            sub=str(keyrunes_superadmin.user_id),
            username="admin",
            email="admin@example.com",
            groups=["superadmin", "users"],
        )
        key = get_authenticator().cache.shared.key("token", credential_hash(made_up))
        record = _planted_superuser(made_up, keyrunes_superadmin.user_id)
        planted: Any = {
            "plain_dict": record,
            "sealed_with_another_key": SharedCache("default", "x", b"guess" * 8).seal(key, record),
            "bad_mac": "0" * 64 + "." + json.dumps(record),
        }[form]
        caches["default"].set(key, planted)
        response = get(client, "/whoami/", **bearer(made_up))
        assert response.status_code == 401
        assert response.json()["reason"] == "rejected"
        assert remote.requests_to("/api/me") == 1  # Keyrunes was asked
        assert not get_user_model().objects.filter(is_superuser=True).exists()

    def test_valid_record_copied_under_another_token_is_ignored(
        self, remote: Any, client: Client, keyrunes_user: Any
    ) -> None:
        admin_like = remote.create_user(groups=("users", "superadmin"))
        their_token = remote.issue_token(admin_like)
        my_token = remote.issue_token(keyrunes_user)
        assert get(client, "/whoami/", **bearer(their_token)).status_code == 200
        shared = get_authenticator().cache.shared
        theirs = caches["default"].get(shared.key("token", credential_hash(their_token)))
        caches["default"].set(shared.key("token", credential_hash(my_token)), theirs)
        body = get(client, "/whoami/", **bearer(my_token)).json()
        assert body["user"] == keyrunes_user.username
        assert remote.requests_to("/api/me") == 2

    def test_services_of_two_namespaces_never_read_each_other(
        self,
        remote: Any,
        client: Client,
        keyrunes_user: Any,
        settings: Any,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        backend = caches["default"]
        read: list[str] = []
        real_get = backend.get

        def recording_get(key: str, default: Any = None, version: Any = None) -> Any:
            read.append(key)
            return real_get(key, default, version)

        monkeypatch.setattr(backend, "get", recording_get)
        public_token = remote.issue_token(keyrunes_user)
        assert get(client, "/whoami/", **bearer(public_token)).status_code == 200
        public_reads = set(read)
        b = tenant(remote, "company_b")
        settings.KEYRUNES = {**settings.KEYRUNES, "NAMESPACE": "company_b"}
        read.clear()
        assert get(client, "/whoami/", **bearer(remote.issue_token(b.user))).status_code == 200
        assert get(client, "/whoami/", **bearer(public_token)).status_code == 401
        b_reads = set(read)
        assert b_reads
        assert public_reads.isdisjoint(b_reads)
        credential_reads = {key for key in public_reads | b_reads if ":token:" in key}
        prefixes = {key.rsplit(":", 2)[0] for key in credential_reads}
        assert len(prefixes) == 2


# ----------------------------------------------------------------- item 23


class TestExemptPaths:
    @pytest.fixture
    def exempting(self, remote: Any, settings: Any) -> Any:
        settings.KEYRUNES = {**settings.KEYRUNES, "EXEMPT_PATHS": [r"^/login-page/$"]}
        return remote

    @pytest.mark.parametrize("url", ["/health/", "/login-page/"])
    def test_stale_or_garbage_token_proceeds_anonymous(
        self, exempting: Any, client: Client, keyrunes_user: Any, url: str
    ) -> None:
        for token in (exempting.expired_token(keyrunes_user), "a.b.c", "garbage"):
            response = get(client, url, **bearer(token))
            assert response.status_code == 200
            assert response.json()["authenticated"] is False
        response = get(client, url, HTTP_AUTHORIZATION="Bearer a b")
        assert response.status_code == 200
        response = get(client, url, HTTP_X_ORGANIZATION_KEY="not-a-key")
        assert response.status_code == 200

    @pytest.mark.parametrize("url", ["/health/", "/login-page/"])
    def test_outage_is_not_503_there(
        self, exempting: Any, client: Client, keyrunes_user: Any, url: str
    ) -> None:
        exempting.faults.add(r"^/api/me$", status=503)
        response = get(client, url, **bearer(exempting.issue_token(keyrunes_user)))
        assert response.status_code == 200
        assert response.json()["authenticated"] is False

    def test_refused_token_never_falls_back_to_the_session_user(
        self, exempting: Any, client: Client
    ) -> None:
        # "Proceeds unauthenticated" holds with a session cookie too: the request
        # presented a credential that was refused, so it is nobody.
        client.force_login(get_user_model().objects.create_user(username="session-user"))
        assert get(client, "/health/").json()["user"] == "session-user"
        response = get(client, "/health/", **bearer("a.b.c"))
        assert response.status_code == 200
        assert response.json()["authenticated"] is False

    def test_valid_token_still_authenticates_there(
        self, exempting: Any, client: Client, keyrunes_user: Any
    ) -> None:
        response = get(client, "/health/", **bearer(exempting.issue_token(keyrunes_user)))
        assert response.json()["user"] == keyrunes_user.username

    def test_other_paths_still_refuse(
        self, exempting: Any, client: Client, keyrunes_user: Any
    ) -> None:
        assert get(client, "/whoami/", **bearer("a.b.c")).status_code == 401
        # A pattern is matched from the start of the path, not anywhere in it.
        assert get(client, "/whoami/login-page/", **bearer("a.b.c")).status_code in {401, 404}
        exempting.faults.add(r"^/api/me$", status=503)
        token = exempting.issue_token(keyrunes_user)
        assert get(client, "/whoami/", **bearer(token)).status_code == 503


# ------------------------------------------------------- hostile tokens and keys


class TestHostileTokens:
    """Odd JSON is malformed (401), never a 500; a crit header is refused."""

    HEADER = '{"alg":"HS256","typ":"JWT"}'

    @pytest.mark.parametrize(
        ("header", "payload"),
        [
            ('{"alg":"HS256","alg":"none"}', None),
            (None, "dup-sub"),
            (None, "dup-groups"),
        ],
        ids=["header", "payload-sub", "payload-groups"],
    )
    @pytest.mark.parametrize("mode", ["local", "remote"])
    def test_duplicate_members(
        self, kr: Any, client: Client, settings: Any, header: Any, payload: Any, mode: str
    ) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": mode}
        body = json.dumps(claims())
        if payload == "dup-sub":
            body = body[:-1] + ', "sub": "1"}'
        elif payload == "dup-groups":
            body = body[:-1] + ', "groups": ["superadmin"]}'
        token = raw_token(header or self.HEADER, body, kr.jwt_secret)
        response = get(client, "/whoami/", **bearer(token))
        assert response.status_code == 401
        assert response.json()["reason"] == "malformed"
        assert kr.requests_to("/api/me") == 0

    @pytest.mark.parametrize("mode", ["local", "remote"])
    def test_deeply_nested_payload(self, kr: Any, client: Client, settings: Any, mode: str) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": mode}
        body = json.dumps(claims())[:-1] + ', "x": ' + "[" * 2500 + "]" * 2500 + "}"
        token = raw_token(self.HEADER, body, kr.jwt_secret)
        assert len(token) < 8192  # under the header limit: the JSON reader sees it
        response = get(client, "/whoami/", **bearer(token))
        assert response.status_code == 401
        assert response.json()["reason"] == "malformed"

    @pytest.mark.parametrize("mode", ["local", "remote"])
    def test_crit_header(
        self, kr: Any, client: Client, keyrunes_user: Any, mode: str, settings: Any
    ) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": mode}
        header = json.dumps({"alg": "HS256", "typ": "JWT", "crit": ["exp"]})
        body = json.dumps(
            claims(
                sub=str(keyrunes_user.user_id),
                username=keyrunes_user.username,
                email=keyrunes_user.email,
            )
        )
        response = get(client, "/whoami/", **bearer(raw_token(header, body, kr.jwt_secret)))
        assert response.status_code == 401
        assert response.json()["reason"] == "unsupported_header"
        assert kr.requests_to("/api/me") == 0

    @pytest.mark.parametrize("sub", [str(2**63), "9" * 400, "07"])
    @pytest.mark.parametrize("mode", ["local", "remote"])
    def test_signed_ids_no_server_has(
        self, kr: Any, client: Client, settings: Any, sub: str, mode: str
    ) -> None:
        """Past a 64-bit id (which no column holds) or a second spelling: 401, never a 500."""
        settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": mode}
        token = raw_token(self.HEADER, json.dumps(claims(sub=sub)), kr.jwt_secret)
        response = get(client, "/whoami/", **bearer(token))
        assert response.status_code == 401
        assert response.json()["reason"] == "malformed"
        assert kr.requests_to("/api/me") == 0

    def test_unpadded_base64_only(self, kr: Any, client: Client) -> None:
        token = f"{b64(self.HEADER)}.{b64(json.dumps(claims()))}=.c2ln"
        assert get(client, "/whoami/", **bearer(token)).status_code == 401


class TestOrganizationKeyForms:
    KEY_FORMS = {
        "hyphenated": lambda k: k,
        "upper": lambda k: k.upper(),
        "simple": lambda k: k.replace("-", ""),
        "braced": lambda k: "{" + k + "}",
        "urn": lambda k: "urn:uuid:" + k,
    }

    def test_accepted_forms_share_one_cache_entry(
        self, kr: Any, settings: Any, client: Client
    ) -> None:
        _with_service_account(settings)
        key = kr.organization_key(1)
        for form in self.KEY_FORMS.values():
            response = get(client, "/whoami/", HTTP_X_ORGANIZATION_KEY=form(key))
            assert response.status_code == 200
            assert response.json()["organization_id"] == 1
        assert kr.requests_to("/api/verify-org-key") == 1
        shared = get_authenticator().cache.shared
        assert caches["default"].get(shared.key("orgkey", credential_hash(key))) is not None

    @pytest.mark.parametrize(
        "mangle",
        [
            lambda k: "uuid:" + k,
            lambda k: "{" + k,
            lambda k: k + "}",
            lambda k: k[:8] + k[9] + "-" + k[10:],
            lambda k: k.replace("-", "", 1),
            lambda k: "urn:uuid:{" + k + "}",
        ],
        ids=["uuid-prefix", "open-brace", "close-brace", "moved-hyphen", "one-hyphen", "urn-brace"],
    )
    def test_refused_forms_never_reach_keyrunes(
        self, kr: Any, settings: Any, client: Client, mangle: Callable[[str], str]
    ) -> None:
        _with_service_account(settings)
        response = get(client, "/whoami/", HTTP_X_ORGANIZATION_KEY=mangle(kr.organization_key(1)))
        assert response.status_code == 401
        assert response.json()["reason"] == "malformed"
        assert response["WWW-Authenticate"].startswith("OrganizationKey ")
        assert len(kr.request_log) == 0


# ----------------------------------------------------------------- ASGI


def run_async(func: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test body through asgiref, as an ASGI server would."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async_to_sync(func)(*args, **kwargs)

    return wrapper


class TestAsgiPath:
    @pytest.fixture
    def threads(self, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        seen: dict[str, Any] = {"sync_thread": threading.get_ident()}
        real_verify = TokenAuthenticator.verify
        real_finish = TokenAuthenticator.finish

        def verify(self: TokenAuthenticator, credential: Any, request: Any = None) -> Any:
            seen["verify"] = threading.get_ident()
            seen["marker_during_verify"] = getattr(request, "keyrunes", "absent")
            return real_verify(self, credential, request)

        def finish(self: TokenAuthenticator, verified: Any, request: Any = None) -> Any:
            seen["finish"] = threading.get_ident()
            return real_finish(self, verified, request)

        monkeypatch.setattr(TokenAuthenticator, "verify", verify)
        monkeypatch.setattr(TokenAuthenticator, "finish", finish)
        return seen

    @run_async
    async def test_cold_request_threads_and_no_marker(
        self, kr: Any, keyrunes_user: Any, threads: dict[str, Any]
    ) -> None:
        loop_thread = threading.get_ident()
        token = kr.issue_token(keyrunes_user)
        response = await AsyncClient().get(
            "/awhoami/", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.json() == {"user": keyrunes_user.username, "leftovers": []}
        # Network in a worker thread of its own, never on the loop nor in the
        # thread-sensitive executor; the mirror (ORM) in the thread-sensitive one.
        assert threads["verify"] not in {loop_thread, threads["sync_thread"]}
        assert threads["finish"] == threads["sync_thread"]
        assert threads["marker_during_verify"] is None

    @run_async
    async def test_warm_request_does_no_io(
        self, kr: Any, keyrunes_user: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        token = kr.issue_token(keyrunes_user)
        client = AsyncClient()
        await client.get("/awhoami/", headers={"Authorization": f"Bearer {token}"})

        def no_io(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a warm request must not leave the event loop")

        # The steps aauthenticate would run in threads: none may be reached.
        for step in ("read_credential", "verify", "finish"):
            monkeypatch.setattr(TokenAuthenticator, step, no_io)
        kr.reset_counters()
        for _ in range(3):
            response = await client.get("/awhoami/", headers={"Authorization": f"Bearer {token}"})
            assert response.json()["user"] == keyrunes_user.username
        assert len(kr.request_log) == 0


# ----------------------------------------------------------------- the log


class TestOneLogRecordPerRefusal:
    @pytest.mark.parametrize(
        "headers",
        [bearer("a.b.c"), {"HTTP_AUTHORIZATION": "Bearer a b"}, {"HTTP_X_ORGANIZATION_KEY": "x"}],
        ids=["bad-token", "bad-header", "bad-key"],
    )
    def test_refusal_logged_once(
        self, kr: Any, client: Client, headers: dict[str, str], caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING):
            assert client.get("/whoami/", **headers).status_code == 401
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [r.name for r in warnings if r.name == "django.request"] == []
        # keyrunes_django.audit keeps its own trail; the operational log has one record.
        ours = [r for r in warnings if r.name == "keyrunes_django.auth"]
        assert [getattr(r, "event", "") for r in ours] == ["credential_rejected"]

    def test_outage_logged_once(
        self, remote: Any, client: Client, keyrunes_user: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        remote.faults.add(r"^/api/me$", status=503)
        with caplog.at_level(logging.WARNING):
            response = client.get("/whoami/", **bearer(remote.issue_token(keyrunes_user)))
        assert response.status_code == 503
        assert not [r for r in caplog.records if r.name == "django.request"]
        # keyrunes_django.audit keeps its own trail; the operational log has one record.
        ours = [r for r in caplog.records if r.name == "keyrunes_django.auth"]
        assert [getattr(r, "event", "") for r in ours] == ["auth_service_error"]
