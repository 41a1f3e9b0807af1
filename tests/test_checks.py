"""System checks on settings.KEYRUNES: each problem has a stable id."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks as django_checks
from django.test import override_settings

from keyrunes_django.checks import check_settings

GOOD: dict[str, Any] = {"BASE_URL": "https://auth.example.com"}


def ids(**keyrunes: Any) -> list[str]:
    with override_settings(KEYRUNES={**GOOD, **keyrunes}):
        return [m.id or "" for m in check_settings()]


def test_good_settings_pass() -> None:
    assert ids() == []
    assert ids(JWT_SECRET="x" * 32, VERIFICATION_MODE="local", TIMEOUT=(1, 2.5)) == []


def test_registered_with_django() -> None:
    with override_settings(KEYRUNES={"BASE_URL": "ftp://x"}):
        messages = django_checks.run_checks()
    assert "keyrunes_django.E002" in [m.id for m in messages]


def test_settings_missing_entirely() -> None:
    with override_settings():
        from django.conf import settings

        del settings.KEYRUNES
        assert [m.id for m in check_settings()] == ["keyrunes_django.E001"]


def test_not_a_dict() -> None:
    with override_settings(KEYRUNES=["BASE_URL"]):
        assert [m.id for m in check_settings()] == ["keyrunes_django.E012"]


@pytest.mark.parametrize("value", [None, ""])
def test_e001_base_url_missing(value: Any) -> None:
    assert ids(BASE_URL=value) == ["keyrunes_django.E001"]


@pytest.mark.parametrize(
    "value", ["auth.example.com", "ftp://auth.example.com", "https://", "http://host:notaport", 42]
)
def test_e002_base_url_invalid(value: Any) -> None:
    assert ids(BASE_URL=value) == ["keyrunes_django.E002"]


def test_w001_plain_http_outside_debug() -> None:
    with override_settings(DEBUG=False):
        result = ids(BASE_URL="http://auth.example.com")
    assert result == ["keyrunes_django.W001"]
    with override_settings(KEYRUNES={"BASE_URL": "http://auth.example.com"}, DEBUG=False):
        (message,) = check_settings()
    assert isinstance(message, django_checks.Warning)


@pytest.mark.parametrize(
    "url",
    ["http://localhost:3000", "http://127.0.0.1:3000", "http://[::1]:3000", "http://app.localhost"],
)
def test_w001_not_for_loopback(url: str) -> None:
    with override_settings(DEBUG=False):
        assert ids(BASE_URL=url) == []


def test_w001_not_in_debug() -> None:
    with override_settings(DEBUG=True):
        assert ids(BASE_URL="http://auth.example.com") == []


@pytest.mark.parametrize(
    "value", [None, 0, -1, "5", True, (1,), (1, 2, 3), (0, 5), (5, None), [1, "2"], {"connect": 1}]
)
def test_e003_timeout(value: Any) -> None:
    assert ids(TIMEOUT=value) == ["keyrunes_django.E003"]


@pytest.mark.parametrize("value", [5, 0.5, (1, 2), [3.05, 10]])
def test_e003_accepts_numbers_and_pairs(value: Any) -> None:
    assert ids(TIMEOUT=value) == []


@pytest.mark.parametrize("value", ["short", "x" * 31, b"x" * 40, 12345])
def test_e004_short_secret(value: Any) -> None:
    assert ids(JWT_SECRET=value) == ["keyrunes_django.E004"]


def test_e004_counts_bytes_not_characters() -> None:
    assert ids(JWT_SECRET="é" * 16) == []  # 32 bytes in UTF-8
    assert ids(JWT_SECRET="é" * 15) == ["keyrunes_django.E004"]


@pytest.mark.parametrize("value", ["no.such.module.Mapper", "keyrunes_django.conf.NoSuchThing", 42])
def test_e005_bad_import_string(value: Any) -> None:
    with override_settings(KEYRUNES={**GOOD, "USER_MAPPER": value}):
        messages = check_settings()
    assert [m.id for m in messages] == ["keyrunes_django.E005"]
    assert "USER_MAPPER" in messages[0].msg


def test_e005_accepts_class_or_path() -> None:
    assert ids(USER_MAPPER="collections.OrderedDict") == []
    assert ids(USER_MAPPER=dict) == []


def test_e006_unknown_keys_named_with_hint() -> None:
    with override_settings(KEYRUNES={**GOOD, "ADMIN_KEY": "x", "BASE_URLS": "y"}):
        messages = check_settings()
    assert [m.id for m in messages] == ["keyrunes_django.E006"]
    assert "ADMIN_KEY" in messages[0].msg
    assert "BASE_URLS" in messages[0].msg
    assert "SERVICE_ACCOUNT" in (messages[0].hint or "")


def test_e006_plain_unknown_key_hint() -> None:
    with override_settings(KEYRUNES={**GOOD, "TYPO": 1}):
        (message,) = check_settings()
    assert "spelling" in (message.hint or "")


def test_e007_verification_mode() -> None:
    assert ids(VERIFICATION_MODE="sometimes") == ["keyrunes_django.E007"]
    assert ids(VERIFICATION_MODE="local") == ["keyrunes_django.E007"]
    assert ids(VERIFICATION_MODE="remote") == []
    assert ids(VERIFICATION_MODE="auto") == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("RETRIES", -1),
        ("RETRIES", 1.5),
        ("RETRIES", "2"),
        ("RETRIES", True),
        ("BACKOFF", -0.1),
        ("BACKOFF", None),
        ("CACHE_TTL", -1),
        ("NEGATIVE_CACHE_TTL", "30"),
        ("PERMISSION_CACHE_TTL", -5),
        ("STALE_IF_ERROR", None),
        ("JWT_LEEWAY", -1),
        ("LOCAL_CACHE_SIZE", 1.5),
    ],
)
def test_e008_numbers(key: str, value: Any) -> None:
    assert ids(**{key: value}) == ["keyrunes_django.E008"]


def test_e008_zero_is_fine() -> None:
    assert ids(RETRIES=0, BACKOFF=0, CACHE_TTL=0, STALE_IF_ERROR=0.0) == []


def test_e009_cache_alias() -> None:
    assert ids(CACHE_ALIAS="nope") == ["keyrunes_django.E009"]
    assert ids(CACHE_ALIAS="default") == []


@pytest.mark.parametrize(
    "value",
    ["user:pw", {"IDENTITY": "svc"}, {"TOKEN_ENV": ""}, {"IDENTITY": "a", "PASSWORD": "b", "X": 1}],
)
def test_e010_service_account(value: Any) -> None:
    result = ids(SERVICE_ACCOUNT=value)
    assert result
    assert set(result) == {"keyrunes_django.E010"}


def test_e010_valid_service_accounts() -> None:
    assert ids(SERVICE_ACCOUNT={"IDENTITY": "svc", "PASSWORD": "pw", "NAMESPACE": "public"}) == []
    assert ids(SERVICE_ACCOUNT={"TOKEN_ENV": "SVC_TOKEN"}) == []


@pytest.mark.parametrize("value", ["", "  ", None, 3])
def test_e011_namespace(value: Any) -> None:
    assert ids(NAMESPACE=value) == ["keyrunes_django.E011"]


def test_all_problems_reported_together() -> None:
    result = ids(BASE_URL=None, TIMEOUT=None, JWT_SECRET="x", BOGUS=1, NAMESPACE="")
    assert sorted(result) == [
        "keyrunes_django.E001",
        "keyrunes_django.E003",
        "keyrunes_django.E004",
        "keyrunes_django.E006",
        "keyrunes_django.E011",
    ]
