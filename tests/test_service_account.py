"""The service-account token: login once, keep in memory, refresh before expiry."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import responses
from django.test import override_settings

from keyrunes_django.client import reset_client
from keyrunes_django.conf import clock
from keyrunes_django.exceptions import (
    AuthenticationFailed,
    KeyrunesUnavailable,
    PermissionDenied,
    ServiceAccountError,
)
from keyrunes_django.service_account import (
    REFRESH_MARGIN,
    admin_call,
    clear_service_token,
    configured,
    get_service_token,
    organization_record,
    resolve_organization_id,
    service_account_problems,
)
from tests.factories import service_account as emulator_account
from tests.factories import tenant

BASE = "http://kr.test"
NOW = 1_800_000_000
USER = {
    "user_id": 1,
    "email": "svc@example.com",
    "username": "svc",
    "groups": ["superadmin"],
    "organization_id": 1,
    "namespace": "public",
}


def make_token(exp: int, n: int = 0) -> str:
    return jwt.encode(
        {"sub": "1", "exp": exp, "iat": exp - 3600, "n": n}, "s" * 32, algorithm="HS256"
    )


def settings_for(account: Any, **extra: Any) -> dict[str, Any]:
    return {"BASE_URL": BASE, "RETRIES": 0, "SERVICE_ACCOUNT": account, **extra}


ACCOUNT = {"IDENTITY": "svc@example.com", "PASSWORD": "svc-password"}


def set_now(monkeypatch: pytest.MonkeyPatch, value: float) -> None:
    """Move the package's one clock."""
    monkeypatch.setattr(clock, "now", lambda: float(value))


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    clear_service_token()
    reset_client()
    set_now(monkeypatch, NOW)
    yield
    clear_service_token()
    reset_client()


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def login_answer(token: str) -> dict[str, Any]:
    return {"user": USER, "token": token, "requires_password_change": False}


def test_logs_in_once_and_caches(rsps: responses.RequestsMock) -> None:
    token = make_token(NOW + 3600)
    rsps.post(BASE + "/api/login", json=login_answer(token))
    with override_settings(KEYRUNES=settings_for(ACCOUNT)):
        assert get_service_token() == token
        assert get_service_token() == token
    assert len(rsps.calls) == 1
    assert json.loads(rsps.calls[0].request.body) == {
        "identity": "svc@example.com",
        "password": "svc-password",
        "namespace": "public",
    }


def test_namespace_from_account_or_settings(rsps: responses.RequestsMock) -> None:
    rsps.post(BASE + "/api/login", json=login_answer(make_token(NOW + 3600)))
    with override_settings(KEYRUNES=settings_for({**ACCOUNT, "NAMESPACE": "company_x"})):
        get_service_token()
    with override_settings(KEYRUNES=settings_for(ACCOUNT, NAMESPACE="tenant_y")):
        get_service_token()
    assert json.loads(rsps.calls[0].request.body)["namespace"] == "company_x"
    assert json.loads(rsps.calls[1].request.body)["namespace"] == "tenant_y"


def test_refreshes_near_expiry(
    rsps: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make_token(NOW + 3600)
    new = make_token(NOW + 7200, 1)
    rsps.post(BASE + "/api/login", json=login_answer(old))
    rsps.post(BASE + "/api/refresh-token", json={"token": new})
    with override_settings(KEYRUNES=settings_for(ACCOUNT)):
        assert get_service_token() == old
        set_now(monkeypatch, NOW + 3600 - REFRESH_MARGIN)
        assert get_service_token() == new
        assert get_service_token() == new
    refresh = rsps.calls[1].request
    assert refresh.headers["Authorization"] == f"Bearer {old}"
    assert json.loads(refresh.body) == {"token": old}
    assert len(rsps.calls) == 2


def test_relogs_when_refresh_refused(
    rsps: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_token(NOW + 3600)
    second = make_token(NOW + 7200, 2)
    rsps.post(BASE + "/api/login", json=login_answer(first))
    with override_settings(KEYRUNES=settings_for(ACCOUNT)):
        assert get_service_token() == first
        set_now(monkeypatch, NOW + 3600 - 10)
        rsps.post(
            BASE + "/api/refresh-token", status=401, json={"message": "Invalid or expired token"}
        )
        rsps.replace(responses.POST, BASE + "/api/login", json=login_answer(second))
        assert get_service_token() == second
    assert [c.request.path_url for c in rsps.calls] == [
        "/api/login",
        "/api/refresh-token",
        "/api/login",
    ]


def test_expired_token_logs_in_again(
    rsps: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_token(NOW + 3600)
    rsps.post(BASE + "/api/login", json=login_answer(first))
    with override_settings(KEYRUNES=settings_for(ACCOUNT)):
        get_service_token()
        set_now(monkeypatch, NOW + 4000)
        get_service_token()
    assert [c.request.path_url for c in rsps.calls] == ["/api/login", "/api/login"]


def test_force_refresh_logs_in(rsps: responses.RequestsMock) -> None:
    rsps.post(BASE + "/api/login", json=login_answer(make_token(NOW + 3600)))
    with override_settings(KEYRUNES=settings_for(ACCOUNT)):
        get_service_token()
        get_service_token(force_refresh=True)
    assert len(rsps.calls) == 2


def test_unreadable_exp_assumes_server_lifetime(
    rsps: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    rsps.post(BASE + "/api/login", json=login_answer("opaque-token"))
    with override_settings(KEYRUNES=settings_for(ACCOUNT)):
        assert get_service_token() == "opaque-token"
        assert get_service_token() == "opaque-token"
        assert len(rsps.calls) == 1
        set_now(monkeypatch, NOW + 2800)
        rsps.post(BASE + "/api/refresh-token", json={"token": make_token(NOW + 9000)})
        assert get_service_token() != "opaque-token"


def test_refused_login_names_the_setting(rsps: responses.RequestsMock) -> None:
    rsps.post(
        BASE + "/api/login",
        status=401,
        json={"error": "Unauthorized", "message": "invalid credentials"},
    )
    with (
        override_settings(KEYRUNES=settings_for(ACCOUNT)),
        pytest.raises(ServiceAccountError) as info,
    ):
        get_service_token()
    assert "SERVICE_ACCOUNT" in str(info.value)
    assert "invalid credentials" in str(info.value)
    assert "svc-password" not in str(info.value)
    assert info.value.status_code == 401


def test_outage_is_not_a_config_error(rsps: responses.RequestsMock) -> None:
    rsps.post(BASE + "/api/login", status=503)
    with (
        override_settings(KEYRUNES=settings_for(ACCOUNT)),
        pytest.raises(KeyrunesUnavailable) as info,
    ):
        get_service_token()
    assert not isinstance(info.value, ServiceAccountError)


@pytest.mark.parametrize(
    "account",
    [
        None,
        "svc:pw",
        {"IDENTITY": "svc"},
        {"IDENTITY": "", "PASSWORD": "pw"},
        {"IDENTITY": "svc", "PASSWORD": "pw", "NAMESPACE": ""},
        {"IDENTITY": "svc", "PASSWORD": "pw", "ROLE": "x"},
        {"TOKEN_ENV": ""},
        {"TOKEN_ENV": "X", "PASSWORD": "pw"},
    ],
)
def test_missing_or_malformed(account: Any, rsps: responses.RequestsMock) -> None:
    with (
        override_settings(KEYRUNES=settings_for(account)),
        pytest.raises(ServiceAccountError) as info,
    ):
        get_service_token()
    assert "KEYRUNES['SERVICE_ACCOUNT']" in str(info.value)
    assert len(rsps.calls) == 0


def test_problems_helper() -> None:
    assert service_account_problems(None) == []
    assert service_account_problems(ACCOUNT) == []
    assert service_account_problems({"TOKEN_ENV": "VAR"}) == []
    assert len(service_account_problems({"TOKEN_ENV": 3, "X": 1})) == 2


def test_token_from_env(rsps: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch) -> None:
    token = make_token(NOW + 3600)
    monkeypatch.setenv("KR_SVC_TOKEN", token)
    with override_settings(KEYRUNES=settings_for({"TOKEN_ENV": "KR_SVC_TOKEN"})):
        assert get_service_token() == token
        other = make_token(NOW + 3000, 9)
        monkeypatch.setenv("KR_SVC_TOKEN", other)  # rotated outside: picked up at once
        assert get_service_token() == other
    assert len(rsps.calls) == 0


def test_token_from_env_refreshed_near_expiry(
    rsps: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = make_token(NOW + 60)
    new = make_token(NOW + 3600, 1)
    monkeypatch.setenv("KR_SVC_TOKEN", token)
    rsps.post(BASE + "/api/refresh-token", json={"token": new})
    with override_settings(KEYRUNES=settings_for({"TOKEN_ENV": "KR_SVC_TOKEN"})):
        assert get_service_token() == new
        assert get_service_token() == new
    assert len(rsps.calls) == 1
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {token}"


def test_token_from_env_refresh_refused(
    rsps: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KR_SVC_TOKEN", make_token(NOW + 60))
    rsps.post(BASE + "/api/refresh-token", status=401, json={"message": "Invalid or expired token"})
    env_account = settings_for({"TOKEN_ENV": "KR_SVC_TOKEN"})
    with override_settings(KEYRUNES=env_account), pytest.raises(ServiceAccountError, match="refr"):
        get_service_token()


def test_token_env_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KR_SVC_TOKEN", raising=False)
    env_account = settings_for({"TOKEN_ENV": "KR_SVC_TOKEN"})
    with override_settings(KEYRUNES=env_account), pytest.raises(ServiceAccountError, match="KR_"):
        get_service_token()


def test_settings_change_drops_cached_token(rsps: responses.RequestsMock) -> None:
    rsps.post(BASE + "/api/login", json=login_answer(make_token(NOW + 3600)))
    with override_settings(KEYRUNES=settings_for(ACCOUNT)):
        get_service_token()
    # The same settings again: the change in between forgot the token.
    with override_settings(KEYRUNES=settings_for(ACCOUNT)):
        get_service_token()
    assert len(rsps.calls) == 2
    with override_settings(KEYRUNES=settings_for({**ACCOUNT, "PASSWORD": "other-password"})):
        get_service_token()
    assert len(rsps.calls) == 3


def test_concurrent_callers_log_in_once(rsps: responses.RequestsMock) -> None:
    token = make_token(NOW + 3600)
    rsps.post(BASE + "/api/login", json=login_answer(token))
    results: list[str] = []
    with override_settings(KEYRUNES=settings_for(ACCOUNT)):
        threads = [
            threading.Thread(target=lambda: results.append(get_service_token())) for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [token] * 8
    assert len(rsps.calls) == 1


def test_admin_call_retries_once_on_401(rsps: responses.RequestsMock) -> None:
    first = make_token(NOW + 3600)
    second = make_token(NOW + 3600, 2)
    rsps.post(BASE + "/api/login", json=login_answer(first))
    rsps.post(BASE + "/api/login", json=login_answer(second))
    seen: list[str] = []

    def call(token: str) -> str:
        seen.append(token)
        if token == first:
            raise AuthenticationFailed("Invalid or expired token", status_code=401)
        return "ok"

    with override_settings(KEYRUNES=settings_for(ACCOUNT)):
        assert admin_call(call) == "ok"
    assert seen == [first, second]


def test_admin_call_uses_token_replaced_by_another_thread(rsps: responses.RequestsMock) -> None:
    first = make_token(NOW + 3600)
    second = make_token(NOW + 3600, 2)
    rsps.post(BASE + "/api/login", json=login_answer(first))
    rsps.post(BASE + "/api/login", json=login_answer(second))
    seen: list[str] = []

    def call(token: str) -> str:
        seen.append(token)
        if token == first:
            get_service_token(force_refresh=True)  # another caller renewed meanwhile
            raise AuthenticationFailed("Invalid or expired token", status_code=401)
        return "ok"

    with override_settings(KEYRUNES=settings_for(ACCOUNT)):
        assert admin_call(call) == "ok"
    assert seen == [first, second]
    assert len(rsps.calls) == 2


def test_admin_call_second_401_is_service_account_error(rsps: responses.RequestsMock) -> None:
    rsps.post(BASE + "/api/login", json=login_answer(make_token(NOW + 3600)))

    def call(token: str) -> None:
        raise AuthenticationFailed("Invalid or expired token", status_code=401)

    with override_settings(KEYRUNES=settings_for(ACCOUNT)), pytest.raises(ServiceAccountError):
        admin_call(call)


def test_admin_call_other_errors_propagate(rsps: responses.RequestsMock) -> None:
    rsps.post(BASE + "/api/login", json=login_answer(make_token(NOW + 3600)))

    def call(token: str) -> None:
        raise PermissionDenied("Superadmin access required", status_code=403)

    with override_settings(KEYRUNES=settings_for(ACCOUNT)), pytest.raises(PermissionDenied):
        admin_call(call)
    assert len(rsps.calls) == 1


# ------------------------------------------------------- which organization


def test_configured(settings: Any) -> None:
    settings.KEYRUNES = settings_for(None)
    assert not configured()
    settings.KEYRUNES = settings_for(ACCOUNT)
    assert configured()


class TestWhichOrganization:
    """resolve_organization_id: explicit, scope, the token's own, the listing; no default."""

    @pytest.fixture
    def svc(self, keyrunes: Any, settings: Any) -> Any:
        clear_service_token()
        reset_client()
        settings.KEYRUNES = {**settings.KEYRUNES, "SERVICE_ACCOUNT": emulator_account()}
        return keyrunes

    @pytest.fixture(autouse=True)
    def _real_clock(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.undo()  # the emulator's tokens are checked against the real time

    def test_explicit_then_scope(self, svc: Any) -> None:
        token = get_service_token()
        assert resolve_organization_id(token, "public", 5, scope=3) == 5
        assert resolve_organization_id(token, "public", None, scope=3) == 3
        assert svc.requests_to("/api/admin/organizations") == 0

    def test_token_of_the_namespace(self, svc: Any) -> None:
        assert resolve_organization_id(get_service_token(), "public") == 1
        assert svc.requests_to("/api/admin/organizations") == 0

    def test_listing_for_another_namespace(self, svc: Any) -> None:
        b = tenant(svc, "company_b")
        assert resolve_organization_id(get_service_token(), "company_b") == b.organization_id
        assert svc.requests_to("/api/admin/organizations") == 1

    def test_no_silent_default(self, svc: Any) -> None:
        with pytest.raises(ServiceAccountError, match="ORGANIZATION_SCOPE"):
            resolve_organization_id(get_service_token(), "nowhere")

    def test_organization_record(self, svc: Any) -> None:
        b = tenant(svc, "company_b")
        record = organization_record("company_b")
        assert record.organization_id == b.organization_id
        assert record.secret_key == b.key
        assert organization_record("anything", b.organization_id).namespace == "company_b"
        with pytest.raises(ServiceAccountError):
            organization_record("public", 999)
