"""System checks of the request path's settings: scope, exempt paths, signing key, middleware."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks as django_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from keyrunes_django.checks import check_request_path
from keyrunes_django.tenancy import parse_organization_scope

GOOD: dict[str, Any] = {"BASE_URL": "https://auth.example.com", "ORGANIZATION_SCOPE": 1}
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "keyrunes_django.middleware.KeyrunesAuthenticationMiddleware",
    "keyrunes_django.middleware.KeyrunesSessionRefreshMiddleware",
]


def ids(settings_overrides: dict[str, Any] | None = None, **keyrunes: Any) -> list[str]:
    with override_settings(KEYRUNES={**GOOD, **keyrunes}, **(settings_overrides or {})):
        return [m.id or "" for m in check_request_path()]


def test_good_settings_pass() -> None:
    assert ids({"MIDDLEWARE": MIDDLEWARE}) == []


def test_registered_with_django() -> None:
    with override_settings(KEYRUNES={**GOOD, "ORGANIZATION_SCOPE": ""}):
        messages = django_checks.run_checks()
    assert "keyrunes_django.E030" in [m.id for m in messages]


@pytest.mark.parametrize("value", ["", 0, -3, True, "abc", "1.5", 2.0, "٣", [1]])
def test_bad_scope(value: Any) -> None:
    assert ids(ORGANIZATION_SCOPE=value) == ["keyrunes_django.E030"]
    with pytest.raises(ImproperlyConfigured):
        parse_organization_scope(value)


@pytest.mark.parametrize(("value", "parsed"), [(None, None), (7, 7), ("12", 12)])
def test_good_scope(value: Any, parsed: int | None) -> None:
    assert "keyrunes_django.E030" not in ids(ORGANIZATION_SCOPE=value)
    assert parse_organization_scope(value) == parsed


@pytest.mark.parametrize("value", ["^/health/$", ["(unclosed"], [3], None])
def test_bad_exempt_paths(value: Any) -> None:
    assert ids(EXEMPT_PATHS=value) == ["keyrunes_django.E031"]


def test_good_exempt_paths() -> None:
    assert ids(EXEMPT_PATHS=[r"^/health/$", r"^/login/"]) == []


@pytest.mark.parametrize("value", ["short", 12345, ""])
def test_bad_signing_key(value: Any) -> None:
    assert ids(CACHE_SIGNING_KEY=value) == ["keyrunes_django.E032"]


def test_good_signing_key() -> None:
    assert ids(CACHE_SIGNING_KEY="s" * 32) == []


def test_keyrunes_middleware_before_authentication_middleware() -> None:
    wrong = [MIDDLEWARE[0], MIDDLEWARE[2], MIDDLEWARE[1], MIDDLEWARE[3]]
    assert ids({"MIDDLEWARE": wrong}) == ["keyrunes_django.E033"]
    missing = [MIDDLEWARE[0], MIDDLEWARE[2]]
    assert ids({"MIDDLEWARE": missing}) == ["keyrunes_django.E033"]


def test_signed_cookie_sessions_warn() -> None:
    signed = {"SESSION_ENGINE": "django.contrib.sessions.backends.signed_cookies"}
    assert ids(signed) == ["keyrunes_django.W030"]
    other_backend = {
        **signed,
        "AUTHENTICATION_BACKENDS": ["django.contrib.auth.backends.ModelBackend"],
    }
    assert ids(other_backend) == []


def test_unbound_organization_keys_warn() -> None:
    with_middleware = {"MIDDLEWARE": MIDDLEWARE}
    assert ids(with_middleware, ORGANIZATION_SCOPE=None) == []  # bearer tokens only, maybe
    drf = {
        "MIDDLEWARE": [],
        "REST_FRAMEWORK": {
            "DEFAULT_AUTHENTICATION_CLASSES": [
                "keyrunes_django.drf.authentication.KeyrunesOrganizationKeyAuthentication"
            ]
        },
    }
    assert ids(drf, ORGANIZATION_SCOPE=None) == ["keyrunes_django.W031"]
    account = {"TOKEN_ENV": "KR_TOKEN"}
    assert ids(drf, ORGANIZATION_SCOPE=None, SERVICE_ACCOUNT=account) == []
    assert ids({"MIDDLEWARE": []}, ORGANIZATION_SCOPE=None) == []


def test_not_a_dict_is_left_to_check_settings() -> None:
    with override_settings(KEYRUNES="nope"):
        assert check_request_path() == []
