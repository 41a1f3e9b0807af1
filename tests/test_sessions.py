"""Session storage of the Keyrunes login token."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.http import HttpRequest

from keyrunes_django import sessions

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_caches")]


def make_request(with_session: bool = True) -> HttpRequest:
    request = HttpRequest()
    if with_session:
        request.session = SessionStore()
    return request


def test_store_and_read_back() -> None:
    request = make_request()
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    sessions.store_session_token(request, "tok.en.value", expires)
    assert request.session[sessions.SESSION_TOKEN_KEY] == "tok.en.value"
    assert isinstance(request.session[sessions.SESSION_TOKEN_EXPIRY_KEY], int)
    assert sessions.get_session_token(request) == "tok.en.value"
    assert sessions.get_session_token_expiry(request) == expires


def test_survives_a_saved_and_reloaded_session() -> None:
    request = make_request()
    expires = datetime.now(tz=timezone.utc).replace(microsecond=0) + timedelta(hours=1)
    sessions.store_session_token(request, "abc", expires)
    request.session.save()
    reloaded = make_request(with_session=False)
    reloaded.session = SessionStore(session_key=request.session.session_key)
    assert sessions.get_session_token(reloaded) == "abc"
    assert sessions.get_session_token_expiry(reloaded) == expires


def test_naive_expiry_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sessions.store_session_token(make_request(), "abc", datetime(2030, 1, 1))


def test_missing_values() -> None:
    request = make_request()
    assert sessions.get_session_token(request) is None
    assert sessions.get_session_token_expiry(request) is None
    no_session = make_request(with_session=False)
    assert sessions.get_session_token(no_session) is None
    assert sessions.get_session_token_expiry(no_session) is None
    assert not sessions.password_change_required(no_session)


def test_garbage_expiry_reads_as_none() -> None:
    request = make_request()
    request.session[sessions.SESSION_TOKEN_KEY] = "abc"
    request.session[sessions.SESSION_TOKEN_EXPIRY_KEY] = "tomorrow"
    assert sessions.get_session_token_expiry(request) is None
    request.session[sessions.SESSION_TOKEN_EXPIRY_KEY] = True
    assert sessions.get_session_token_expiry(request) is None


def test_password_change_flag_can_be_unset() -> None:
    request = make_request()
    sessions.set_password_change_required(request, True)
    sessions.set_password_change_required(request, False)
    assert not sessions.password_change_required(request)
    assert sessions.SESSION_PASSWORD_CHANGE_KEY not in request.session


# ------------------------------------------------------------------ refresh


def refresh_request(user: Any, token: str | None, expires_in: float) -> HttpRequest:
    request = make_request()
    request.user = user
    request.keyrunes = None  # type: ignore[attr-defined]
    if token is not None:
        sessions.store_session_token(
            request, token, datetime.now(tz=timezone.utc) + timedelta(seconds=expires_in)
        )
    return request


class TestRefreshSessionToken:
    @pytest.fixture
    def local_user(self) -> Any:
        from django.contrib.auth import get_user_model

        return get_user_model().objects.create_user(username="someone")

    def test_skipped_cases(self, local_user: Any, keyrunes: Any) -> None:
        from django.contrib.auth.models import AnonymousUser

        from keyrunes_django.identity import VerifiedIdentity

        assert sessions.refresh_session_token(refresh_request(AnonymousUser(), "t", 10)) == (
            "skipped"
        )
        assert sessions.refresh_session_token(refresh_request(local_user, None, 10)) == "skipped"
        far = refresh_request(local_user, "t", 3000)
        assert sessions.refresh_session_token(far) == "skipped"
        bearer = refresh_request(local_user, "t", 10)
        bearer.keyrunes = VerifiedIdentity(  # type: ignore[attr-defined]
            user_id=1, username="u", email="e", namespace="public", organization_id=1
        )
        assert sessions.refresh_session_token(bearer) == "skipped"
        assert len(keyrunes.request_log) == 0

    def test_backoff_then_reset_by_settings_change(
        self, local_user: Any, keyrunes: Any, settings: Any
    ) -> None:
        keyrunes.faults.add(r"^/api/refresh-token$", status=503)
        request = refresh_request(local_user, "a.b.c", 10)
        assert sessions.refresh_session_token(request) == "deferred"
        assert sessions.refresh_session_token(request) == "deferred"
        assert keyrunes.requests_to("/api/refresh-token") == 1  # backing off
        settings.KEYRUNES = {**settings.KEYRUNES, "SESSION_REFRESH_MARGIN": 301}
        assert sessions.refresh_session_token(request) == "deferred"
        assert keyrunes.requests_to("/api/refresh-token") == 2  # the backoff was reset

    def test_backoff_ends_with_the_clock(
        self, local_user: Any, keyrunes: Any, frozen_clock: Any
    ) -> None:
        keyrunes.faults.add(r"^/api/refresh-token$", status=503)
        request = refresh_request(local_user, "a.b.c", 10)
        sessions.refresh_session_token(request)
        frozen_clock.advance(sessions.REFRESH_RETRY_INTERVAL + 1)
        sessions.refresh_session_token(request)
        assert keyrunes.requests_to("/api/refresh-token") == 2
