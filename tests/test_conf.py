"""The lazily read KEYRUNES settings dict."""

from __future__ import annotations

import collections

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from keyrunes_django.conf import DEFAULTS, KeyrunesSettings, keyrunes_settings


def test_defaults_apply() -> None:
    with override_settings(KEYRUNES={"BASE_URL": "https://a.example.com"}):
        assert keyrunes_settings.NAMESPACE == "public"
        assert keyrunes_settings.JWT_ISSUER == "keyrunes"
        assert keyrunes_settings.FAIL_OPEN is False
        assert keyrunes_settings.TIMEOUT == (3.05, 10.0)
        assert DEFAULTS["RETRIES"] == keyrunes_settings.RETRIES


def test_values_are_read_on_access() -> None:
    with override_settings(KEYRUNES={"BASE_URL": "https://a.example.com"}):
        assert keyrunes_settings.BASE_URL == "https://a.example.com"
        with override_settings(KEYRUNES={"BASE_URL": "https://b.example.com", "NAMESPACE": "x"}):
            assert keyrunes_settings.BASE_URL == "https://b.example.com"
            assert keyrunes_settings.NAMESPACE == "x"
        assert keyrunes_settings.NAMESPACE == "public"


def test_missing_keyrunes_setting_means_defaults() -> None:
    with override_settings():
        from django.conf import settings

        del settings.KEYRUNES
        assert keyrunes_settings.BASE_URL is None
        assert keyrunes_settings.unknown_keys() == []


def test_not_a_dict_is_an_error() -> None:
    with override_settings(KEYRUNES="https://a.example.com"), pytest.raises(ImproperlyConfigured):
        keyrunes_settings.BASE_URL  # noqa: B018


def test_unknown_key_error_names_the_key() -> None:
    with override_settings(KEYRUNES={"BASE_URL": "x", "BASEURL": "y"}):
        assert keyrunes_settings.unknown_keys() == ["BASEURL"]
        with pytest.raises(ImproperlyConfigured, match="BASEURL"):
            keyrunes_settings.NAMESPACE  # noqa: B018


def test_removed_key_error_has_hint() -> None:
    with (
        override_settings(KEYRUNES={"API_KEY": "k"}),
        pytest.raises(ImproperlyConfigured, match="ORGANIZATION_KEY"),
    ):
        keyrunes_settings.BASE_URL  # noqa: B018


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError):
        keyrunes_settings.NOT_A_SETTING  # noqa: B018
    with pytest.raises(AttributeError):
        keyrunes_settings._private  # noqa: B018


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, (5.0, 5.0)), (2.5, (2.5, 2.5)), ((1, 4), (1.0, 4.0)), ([0.5, 3], (0.5, 3.0))],
)
def test_timeout_forms(value: object, expected: tuple[float, float]) -> None:
    # TIMEOUT is interpreted by the client alone.
    from keyrunes_django.client import KeyrunesClient

    with override_settings(KEYRUNES={"TIMEOUT": value, "BASE_URL": "https://a.example.com"}):
        assert KeyrunesClient.from_settings().timeout == expected


def test_import_strings_resolved() -> None:
    with override_settings(KEYRUNES={"USER_MAPPER": "collections.OrderedDict"}):
        assert keyrunes_settings.USER_MAPPER is collections.OrderedDict
        assert keyrunes_settings.raw("USER_MAPPER") == "collections.OrderedDict"
    with override_settings(KEYRUNES={"USER_MAPPER": dict}):
        assert keyrunes_settings.USER_MAPPER is dict


def test_bad_import_string() -> None:
    with (
        override_settings(KEYRUNES={"USER_MAPPER": "no.such.Thing"}),
        pytest.raises(ImproperlyConfigured, match="USER_MAPPER"),
    ):
        keyrunes_settings.USER_MAPPER  # noqa: B018


@pytest.mark.parametrize(
    ("settings", "mode"),
    [
        ({}, "remote"),
        ({"JWT_SECRET": "x" * 32}, "local"),
        ({"VERIFICATION_MODE": "remote", "JWT_SECRET": "x" * 32}, "remote"),
        ({"VERIFICATION_MODE": "local", "JWT_SECRET": "x" * 32}, "local"),
    ],
)
def test_verification_mode(settings: dict[str, object], mode: str) -> None:
    with override_settings(KEYRUNES=settings):
        assert keyrunes_settings.verification_mode == mode


def test_separate_instances_are_independent() -> None:
    other = KeyrunesSettings()
    with override_settings(KEYRUNES={"NAMESPACE": "tenant"}):
        assert other.NAMESPACE == "tenant"
        assert keyrunes_settings.NAMESPACE == "tenant"
