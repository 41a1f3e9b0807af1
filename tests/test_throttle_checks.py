"""System checks of the throttle and registration settings (E060-E062, W060)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from keyrunes_django.backends import KeyrunesBackend
from keyrunes_django.checks import check_settings

GOOD: dict[str, Any] = {"BASE_URL": "https://auth.example.com"}


class MyBackend(KeyrunesBackend):
    pass


def ids(**keyrunes: Any) -> list[str]:
    with override_settings(KEYRUNES={**GOOD, **keyrunes}):
        return [m.id or "" for m in check_settings()]


def test_defaults_pass() -> None:
    assert ids() == []
    assert ids(LOGIN_THROTTLE_FAILURES=0, LOGIN_THROTTLE_IP_FAILURES=0) == []
    assert ids(LOGIN_THROTTLE_IP_FAILURES=None, LOGIN_THROTTLE_WINDOW=1) == []
    assert ids(REGISTRATION_ENABLED=True) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("LOGIN_THROTTLE_FAILURES", -1),
        ("LOGIN_THROTTLE_FAILURES", "5"),
        ("LOGIN_THROTTLE_FAILURES", True),
        ("LOGIN_THROTTLE_FAILURES", 2.5),
        ("LOGIN_THROTTLE_FAILURES", None),
        ("LOGIN_THROTTLE_WINDOW", 0),
        ("LOGIN_THROTTLE_WINDOW", None),
        ("LOGIN_THROTTLE_IP_FAILURES", -3),
        ("LOGIN_THROTTLE_IP_FAILURES", "20"),
    ],
)
def test_bad_throttle_values(key: str, value: Any) -> None:
    assert ids(**{key: value}) == ["keyrunes_django.E060"]


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_registration_enabled_must_be_a_bool(value: Any) -> None:
    assert ids(REGISTRATION_ENABLED=value) == ["keyrunes_django.E061"]


def test_registration_needs_the_keyrunes_backend() -> None:
    with override_settings(
        AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.ModelBackend", "no.such.Backend"]
    ):
        assert ids(REGISTRATION_ENABLED=True) == ["keyrunes_django.E062"]
        assert ids(REGISTRATION_ENABLED=False) == []


def test_a_subclass_of_the_backend_counts() -> None:
    with override_settings(AUTHENTICATION_BACKENDS=["tests.test_throttle_checks.MyBackend"]):
        assert ids(REGISTRATION_ENABLED=True) == []


@pytest.mark.parametrize(
    "backend",
    [
        "django.core.cache.backends.dummy.DummyCache",
        "django.core.cache.backends.db.DatabaseCache",
        "django.core.cache.backends.filebased.FileBasedCache",
    ],
)
def test_caches_that_cannot_count_atomically_warn(backend: str) -> None:
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    caches["throttle"] = {"BACKEND": backend, "LOCATION": "/tmp/unused"}
    with override_settings(CACHES=caches):
        assert ids(CACHE_ALIAS="throttle") == ["keyrunes_django.W060"]
        # Nothing to warn about when throttling is off.
        assert ids(CACHE_ALIAS="throttle", LOGIN_THROTTLE_FAILURES=0) == []
        assert ids(
            CACHE_ALIAS="throttle", LOGIN_THROTTLE_FAILURES=0, LOGIN_THROTTLE_IP_FAILURES=9
        ) == ["keyrunes_django.W060"]
        assert ids() == []
