"""Session storage of the Keyrunes login token."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.http import HttpRequest

from keyrunes_django import sessions

pytestmark = pytest.mark.django_db


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
    assert sessions.session_token_expires_within(request, 60)
    no_session = make_request(with_session=False)
    assert sessions.get_session_token(no_session) is None
    assert sessions.get_session_token_expiry(no_session) is None
    assert not sessions.password_change_required(no_session)
    sessions.clear_session_token(no_session)  # no session: nothing to do, no error


def test_garbage_expiry_reads_as_none() -> None:
    request = make_request()
    request.session[sessions.SESSION_TOKEN_KEY] = "abc"
    request.session[sessions.SESSION_TOKEN_EXPIRY_KEY] = "tomorrow"
    assert sessions.get_session_token_expiry(request) is None
    request.session[sessions.SESSION_TOKEN_EXPIRY_KEY] = True
    assert sessions.get_session_token_expiry(request) is None


def test_expires_within() -> None:
    request = make_request()
    sessions.store_session_token(
        request, "abc", datetime.now(tz=timezone.utc) + timedelta(seconds=120)
    )
    assert sessions.session_token_expires_within(request, 300)
    assert not sessions.session_token_expires_within(request, 60)


def test_clear_removes_token_expiry_and_flag() -> None:
    request = make_request()
    sessions.store_session_token(request, "abc", datetime.now(tz=timezone.utc))
    sessions.set_password_change_required(request, True)
    assert sessions.password_change_required(request)
    sessions.clear_session_token(request)
    assert sessions.get_session_token(request) is None
    assert not sessions.password_change_required(request)
    assert dict(request.session) == {}


def test_password_change_flag_can_be_unset() -> None:
    request = make_request()
    sessions.set_password_change_required(request, True)
    sessions.set_password_change_required(request, False)
    assert not sessions.password_change_required(request)
    assert sessions.SESSION_PASSWORD_CHANGE_KEY not in request.session
