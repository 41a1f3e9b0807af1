"""Audit log records and the secret-free signal senders."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest
from django.test import RequestFactory, override_settings
from django.utils.crypto import salted_hmac

from keyrunes_django import audit, signals
from keyrunes_django.exceptions import KeyrunesUnavailable
from keyrunes_django.identity import VerifiedIdentity

IDENTITY = VerifiedIdentity(
    user_id=7,
    username="alice",
    email="alice@example.com",
    namespace="public",
    organization_id=1,
    groups=("users",),
    source="login",
)


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == audit.AUDIT_LOGGER_NAME]


@pytest.fixture
def request_() -> Any:
    return RequestFactory().post("/login/", REMOTE_ADDR="203.0.113.9")


def test_hash_value_is_keyed_with_the_secret_key() -> None:
    # A plain sha256 of a typed password is reversed by guessing; an HMAC needs the key.
    assert audit.hash_value("abc") != hashlib.sha256(b"abc").hexdigest()
    expected = salted_hmac("keyrunes_django.audit", b"abc", algorithm="sha256").hexdigest()
    assert audit.hash_value("abc") == expected
    assert audit.hash_value(b"abc") == expected
    assert len(expected) == 64
    with override_settings(SECRET_KEY="another-secret-key-for-this-test"):
        assert audit.hash_value("abc") != expected
    # Another purpose gives an unrelated digest of the same value.
    assert audit.keyed_hash("abc", "keyrunes_django.throttling") != expected


def test_login_name_hash_ignores_case_and_spaces() -> None:
    assert audit.login_name_hash(" Alice@Example.com ") == audit.hash_value("alice@example.com")


def test_senders_only_tests_used_are_gone() -> None:
    # The app sends its signals itself; helpers nothing in the app called are removed.
    for name in (
        "send_login_succeeded",
        "send_login_failed",
        "send_credential_rejected",
        "send_service_error",
    ):
        assert not hasattr(audit, name)


def test_client_ip_ignores_forwarded_headers(request_: Any) -> None:
    request_.META["HTTP_X_FORWARDED_FOR"] = "198.51.100.1"
    assert audit.client_ip(request_) == "203.0.113.9"
    assert audit.client_ip(None) is None
    request_.META.pop("REMOTE_ADDR")
    assert audit.client_ip(request_) is None


def test_audit_event_hashes_secret_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=audit.AUDIT_LOGGER_NAME):
        audit.audit_event(
            "custom", token="raw-token-value", password="hunter22", name="x", key=None
        )
    (record,) = _records(caplog)
    assert record.event == "custom"  # type: ignore[attr-defined]
    assert record.token_hash == audit.hash_value("raw-token-value")  # type: ignore[attr-defined]
    assert record.password_hash == audit.hash_value("hunter22")  # type: ignore[attr-defined]
    # A field named like a LogRecord attribute is renamed instead of crashing logging.
    assert record.kr_name == "x"  # type: ignore[attr-defined]
    assert not hasattr(record, "key_hash")
    text = record.getMessage()
    assert "raw-token-value" not in text
    assert "hunter22" not in text


def test_login_succeeded_record(caplog: pytest.LogCaptureFixture, request_: Any) -> None:
    user = type("U", (), {"pk": 42})()
    with caplog.at_level(logging.INFO, logger=audit.AUDIT_LOGGER_NAME):
        signals.login_succeeded.send(sender=None, user=user, identity=IDENTITY, request=request_)
    (record,) = _records(caplog)
    assert record.event == "login_succeeded"  # type: ignore[attr-defined]
    assert record.user_id == 7  # type: ignore[attr-defined]
    assert record.local_user_pk == 42  # type: ignore[attr-defined]
    assert record.client_ip == "203.0.113.9"  # type: ignore[attr-defined]
    assert record.path == "/login/"  # type: ignore[attr-defined]
    assert record.levelno == logging.INFO


def test_login_failed_logs_only_a_hash_of_the_login_name(
    caplog: pytest.LogCaptureFixture, request_: Any
) -> None:
    received: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        received.append(kwargs)

    signals.login_failed.connect(receiver)
    try:
        with caplog.at_level(logging.INFO, logger=audit.AUDIT_LOGGER_NAME):
            signals.login_failed.send(
                sender=None,
                identity="Hunter2-Typed-In-The-Wrong-Box",
                reason="invalid_credentials",
                request=request_,
            )
    finally:
        signals.login_failed.disconnect(receiver)
    assert received[0]["reason"] == "invalid_credentials"
    (record,) = _records(caplog)
    assert record.event == "login_failed"  # type: ignore[attr-defined]
    assert record.levelno == logging.WARNING
    digest = record.identity_hash  # type: ignore[attr-defined]
    assert digest == audit.hash_value("hunter2-typed-in-the-wrong-box")
    # Not the unkeyed sha256 a guesser could match against a word list.
    for typed in ("Hunter2-Typed-In-The-Wrong-Box", "hunter2-typed-in-the-wrong-box"):
        assert digest != hashlib.sha256(typed.encode()).hexdigest()
    assert "Hunter2" not in record.getMessage()
    assert "hunter2" not in record.getMessage()


def test_credential_rejected_sends_only_the_hash(
    caplog: pytest.LogCaptureFixture, request_: Any
) -> None:
    received: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        received.append(kwargs)

    signals.credential_rejected.connect(receiver)
    try:
        with caplog.at_level(logging.INFO, logger=audit.AUDIT_LOGGER_NAME):
            signals.credential_rejected.send(
                sender=None,
                reason="expired",
                request=request_,
                credential_hash=audit.hash_value("eyJ.secret.jwt"),
            )
    finally:
        signals.credential_rejected.disconnect(receiver)
    assert "eyJ.secret.jwt" not in repr(received)
    assert received[0]["credential_hash"] == audit.hash_value("eyJ.secret.jwt")
    (record,) = _records(caplog)
    assert record.event == "credential_rejected"  # type: ignore[attr-defined]
    assert record.reason == "expired"  # type: ignore[attr-defined]
    assert record.credential_hash == audit.hash_value("eyJ.secret.jwt")  # type: ignore[attr-defined]
    assert "eyJ.secret.jwt" not in record.getMessage()


def test_service_error_record(caplog: pytest.LogCaptureFixture) -> None:
    error = KeyrunesUnavailable("connection refused", status_code=503)
    with caplog.at_level(logging.INFO, logger=audit.AUDIT_LOGGER_NAME):
        signals.auth_service_error.send(
            sender=None, error=error, operation="me", request=None, served_stale=True
        )
    (record,) = _records(caplog)
    assert record.event == "auth_service_error"  # type: ignore[attr-defined]
    assert record.levelno == logging.ERROR
    assert record.error_type == "KeyrunesUnavailable"  # type: ignore[attr-defined]
    assert record.status_code == 503  # type: ignore[attr-defined]
    assert record.served_stale is True  # type: ignore[attr-defined]
    assert record.operation == "me"  # type: ignore[attr-defined]


def test_receivers_connected_once_and_can_be_disconnected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit.connect_receivers()  # again: dispatch_uid keeps it single
    with caplog.at_level(logging.INFO, logger=audit.AUDIT_LOGGER_NAME):
        signals.login_failed.send(sender=None, identity="bob", reason="x")
    assert len(_records(caplog)) == 1
    audit.disconnect_receivers()
    try:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=audit.AUDIT_LOGGER_NAME):
            signals.login_failed.send(sender=None, identity="bob", reason="x")
        assert _records(caplog) == []
    finally:
        audit.connect_receivers()
