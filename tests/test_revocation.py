"""Revocation: a user's not-before and the token deny list, on every path and every instance."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.http import HttpRequest, JsonResponse
from django.test import Client
from django.urls import include, path

from keyrunes_django import revocation, signals, tokens
from keyrunes_django.conf import clock
from keyrunes_django.identity import VerifiedIdentity
from keyrunes_django.models import TokenRevocation
from keyrunes_django.sessions import SESSION_TOKEN_KEY

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.test_revocation")]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "keyrunes_django.middleware.KeyrunesAuthenticationMiddleware",
    "keyrunes_django.middleware.KeyrunesSessionRefreshMiddleware",
]


def whoami(request: HttpRequest) -> JsonResponse:
    user = request.user
    return JsonResponse({"user": user.get_username() if user.is_authenticated else None})


urlpatterns = [path("whoami/", whoami), path("account/", include("keyrunes_django.urls"))]


@pytest.fixture(autouse=True)
def _empty_shared_cache() -> Iterator[None]:
    from django.core.cache import caches

    caches["default"].clear()
    yield
    caches["default"].clear()


@pytest.fixture
def kr(keyrunes: Any, settings: Any) -> Any:
    settings.MIDDLEWARE = MIDDLEWARE
    return keyrunes


@pytest.fixture(params=["local", "remote"])
def mode(request: pytest.FixtureRequest, kr: Any, settings: Any) -> str:
    settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": request.param}
    return str(request.param)


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        monkeypatch.setattr(clock, "now", lambda: time.time() + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


def bearer(client: Client, token: str) -> Any:
    return client.get(
        "/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_ACCEPT="application/json"
    )


def events(signal: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        seen.append(kwargs)

    signal.connect(receiver, weak=False)
    return seen


class TestNotBefore:
    def test_tokens_issued_before_are_refused_on_both_modes(
        self, mode: str, client: Client, keyrunes_user: Any, kr: Any
    ) -> None:
        old = kr.issue_token(keyrunes_user, issued_at=int(time.time()) - 60)
        assert bearer(client, old).json()["user"] == keyrunes_user.username  # warm now
        revoked = events(signals.tokens_revoked)
        not_before = revocation.revoke_user_tokens(
            revocation.Subject(keyrunes_user.namespace, keyrunes_user.user_id), reason="test"
        )
        assert not_before is not None
        response = bearer(client, old)
        assert response.status_code == 401
        assert response.json()["reason"] == "revoked"
        assert 'error="invalid_token"' in response["WWW-Authenticate"]
        assert revoked[0]["user_id"] == keyrunes_user.user_id
        assert revoked[0]["reason"] == "test"
        fresh = kr.issue_token(keyrunes_user, issued_at=int(time.time()) + 1)
        assert bearer(client, fresh).json()["user"] == keyrunes_user.username

    def test_public_function_takes_a_django_user(
        self, kr: Any, client: Client, keyrunes_user: Any
    ) -> None:
        token = kr.issue_token(keyrunes_user, issued_at=int(time.time()) - 5)
        assert bearer(client, token).status_code == 200
        local = get_user_model().objects.get(username=keyrunes_user.username)
        assert revocation.revoke_user_tokens(local, reason="code") is not None
        assert bearer(client, token).status_code == 401
        record = TokenRevocation.objects.get(remote_user_id=keyrunes_user.user_id)
        assert record.reason == "code"

    def test_a_local_only_user_is_left_alone(self, kr: Any) -> None:
        local = get_user_model().objects.create_user(username="local-only")
        assert revocation.revoke_user_tokens(local, reason="x") is None
        assert not TokenRevocation.objects.exists()

    def test_not_before_only_moves_forward(self, kr: Any, keyrunes_user: Any, later: Clock) -> None:
        subject = revocation.Subject(keyrunes_user.namespace, keyrunes_user.user_id)
        first = revocation.revoke_user_tokens(subject, reason="a")
        later.advance(-100)
        second = revocation.revoke_user_tokens(subject, reason="b")
        assert first == second
        assert TokenRevocation.objects.get().reason == "a"

    def test_database_is_the_source_when_the_cache_forgot(
        self, kr: Any, client: Client, keyrunes_user: Any
    ) -> None:
        from django.core.cache import caches

        token = kr.issue_token(keyrunes_user, issued_at=int(time.time()) - 5)
        revocation.revoke_user_tokens(
            revocation.Subject(keyrunes_user.namespace, keyrunes_user.user_id), reason="x"
        )
        caches["default"].clear()
        tokens.reset_authenticator()
        assert bearer(client, token).status_code == 401

    def test_management_command(self, kr: Any, client: Client, keyrunes_user: Any) -> None:
        token = kr.issue_token(keyrunes_user, issued_at=int(time.time()) - 5)
        assert bearer(client, token).status_code == 200
        call_command(
            "keyrunes_revoke_tokens", "--remote-id", str(keyrunes_user.user_id), verbosity=0
        )
        assert bearer(client, token).status_code == 401
        with pytest.raises(Exception, match="No local user"):
            call_command("keyrunes_revoke_tokens", "nobody", verbosity=0)

    def test_command_by_username_and_dry_run(
        self, kr: Any, client: Client, keyrunes_user: Any
    ) -> None:
        token = kr.issue_token(keyrunes_user, issued_at=int(time.time()) - 5)
        assert bearer(client, token).status_code == 200
        call_command("keyrunes_revoke_tokens", keyrunes_user.username, "--dry-run", verbosity=0)
        assert bearer(client, token).status_code == 200
        call_command("keyrunes_revoke_tokens", keyrunes_user.username, verbosity=0)
        assert bearer(client, token).status_code == 401


class TestDenyList:
    def test_logout_denies_the_session_token_as_a_bearer_token(
        self, mode: str, client: Client, keyrunes_user: Any
    ) -> None:
        assert client.login(username=keyrunes_user.username, password=keyrunes_user.password)
        token = client.session[SESSION_TOKEN_KEY]
        other = Client()
        assert bearer(other, token).json()["user"] == keyrunes_user.username
        denied = events(signals.token_denied)
        client.logout()
        response = bearer(other, token)
        assert response.status_code == 401
        assert response.json()["reason"] == "revoked"
        assert denied
        assert denied[0]["reason"] == "logout"
        assert token not in repr(denied)

    def test_deny_record_is_sealed_and_expires_with_the_token(
        self, kr: Any, keyrunes_user: Any
    ) -> None:
        from django.core.cache import caches

        token = kr.issue_token(keyrunes_user)
        revocation.deny_token(token, reason="x")
        shared = tokens.get_authenticator().cache.shared
        key = shared.key(revocation.TOKEN_KIND, tokens.credential_hash(token))
        stored = caches["default"].get(key)
        assert isinstance(stored, str)
        assert token not in stored
        assert stored.endswith('{"reason":"x"}')

    def test_forged_deny_or_allow_records_are_ignored(
        self, kr: Any, client: Client, keyrunes_user: Any
    ) -> None:
        """Someone without the key can neither revoke nor un-revoke through the cache."""
        from django.core.cache import caches

        token = kr.issue_token(keyrunes_user, issued_at=int(time.time()) - 5)
        subject = revocation.Subject(keyrunes_user.namespace, keyrunes_user.user_id)
        revocation.revoke_user_tokens(subject, reason="x")
        shared = tokens.get_authenticator().cache.shared
        user_key = shared.key(revocation.USER_KIND, subject.name)
        caches["default"].set(user_key, '0.{"not_before": null}')  # forged "no revocation"
        tokens.reset_authenticator()
        assert bearer(client, token).status_code == 401  # falls back to the database


class TestPropagation:
    def test_other_process_refuses_within_the_interval(
        self, kr: Any, keyrunes_user: Any, later: Clock, settings: Any
    ) -> None:
        """Two authenticators sharing one cache stand for two instances."""
        from django.test import RequestFactory

        settings.KEYRUNES = {**settings.KEYRUNES, "REVOCATION_CHECK_INTERVAL": 2.0}
        token = kr.issue_token(keyrunes_user, issued_at=int(time.time()) - 5)
        other = tokens.TokenAuthenticator()
        request = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert other.authenticate(request) is not None
        calls_before = kr.request_counts()
        revocation.revoke_user_tokens(
            revocation.Subject(keyrunes_user.namespace, keyrunes_user.user_id), reason="x"
        )
        # Within the interval the other instance still answers from memory, without I/O.
        assert other.warm(f"Bearer {token}") is not None
        later.advance(2.5)
        assert other.warm(f"Bearer {token}") is None
        with pytest.raises(tokens.InvalidToken) as refused:
            other.authenticate(request)
        assert refused.value.reason == "revoked"
        assert kr.request_counts() == calls_before  # decided from the shared cache alone

    def test_zero_interval_checks_every_request(
        self, kr: Any, keyrunes_user: Any, settings: Any
    ) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "REVOCATION_CHECK_INTERVAL": 0}
        token = kr.issue_token(keyrunes_user)
        auth = tokens.get_authenticator()
        from django.test import RequestFactory

        request = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert auth.authenticate(request) is not None
        time.sleep(0.01)
        assert auth.warm(f"Bearer {token}") is None


class TestSessions:
    def test_revoked_session_is_logged_out(
        self, kr: Any, client: Client, keyrunes_user: Any, later: Clock
    ) -> None:
        assert client.login(username=keyrunes_user.username, password=keyrunes_user.password)
        assert client.get("/whoami/").json()["user"] == keyrunes_user.username
        later.advance(1.5)  # the login's token must be strictly older than the not-before
        revocation.revoke_user_tokens(
            revocation.Subject(keyrunes_user.namespace, keyrunes_user.user_id), reason="x"
        )
        later.advance(3)
        assert client.get("/whoami/").json()["user"] is None

    def test_deleted_user_ends_the_session_at_the_recheck(
        self, kr: Any, client: Client, keyrunes_user: Any, later: Clock
    ) -> None:
        assert client.login(username=keyrunes_user.username, password=keyrunes_user.password)
        kr.delete_user(kr.get_user(keyrunes_user.user_id))
        assert client.get("/whoami/").json()["user"] == keyrunes_user.username  # not due yet
        later.advance(301)
        assert client.get("/whoami/").json()["user"] is None

    def test_removed_group_is_seen_at_the_recheck(
        self, kr: Any, client: Client, keyrunes_user: Any, later: Clock
    ) -> None:
        kr.create_group("editors")
        kr.add_to_group(kr.get_user(keyrunes_user.user_id), "editors")
        assert client.login(username=keyrunes_user.username, password=keyrunes_user.password)
        local = get_user_model().objects.get(username=keyrunes_user.username)
        assert local.groups.filter(name="editors").exists()
        kr.remove_from_group(kr.get_user(keyrunes_user.user_id), "editors")
        later.advance(301)
        assert client.get("/whoami/").json()["user"] == keyrunes_user.username
        assert not local.groups.filter(name="editors").exists()

    def test_outage_at_the_recheck_follows_the_outage_policy(
        self, kr: Any, client: Client, keyrunes_user: Any, later: Clock
    ) -> None:
        assert client.login(username=keyrunes_user.username, password=keyrunes_user.password)
        kr.faults.add(r"^/api/me$", status=503)
        later.advance(301)
        # Unreachable, but within STALE_IF_ERROR past the due re-check: the session goes on.
        assert client.get("/whoami/").json()["user"] == keyrunes_user.username
        later.advance(400)
        response = client.get("/whoami/", HTTP_ACCEPT="application/json")
        assert response.status_code == 503
        assert response.json()["reason"] == "keyrunes_unavailable"
        kr.faults.clear()
        later.advance(31)  # past the back-off
        assert client.get("/whoami/").json()["user"] == keyrunes_user.username
        assert client.session[SESSION_TOKEN_KEY]


class TestDeprovisioning:
    """A user a sync deactivated stays out until Keyrunes itself confirms the user."""

    def _deactivate_by_sync(self, kr: Any, keep: list[Any]) -> None:
        from keyrunes_django.sync import sync_users

        listing = [
            VerifiedIdentity(
                user_id=u.user_id,
                username=u.username,
                email=u.email,
                namespace=u.namespace,
                organization_id=u.organization_id,
                groups=tuple(u.groups),
                source="sync",
            )
            for u in keep
        ]
        sync_users(
            listing,
            namespace="public",
            organization_id=1,
            deactivate_missing=True,
            max_shrink=None,
        )

    def test_old_and_resigned_tokens_of_a_deleted_user_stay_refused(
        self, kr: Any, client: Client, keyrunes_user: Any, later: Clock
    ) -> None:
        other = kr.create_user()
        old = kr.issue_token(keyrunes_user, issued_at=int(time.time()) - 60)
        assert bearer(client, old).status_code == 200
        kr.delete_user(kr.get_user(keyrunes_user.user_id))
        self._deactivate_by_sync(kr, [other])
        local = get_user_model().objects.get(username=keyrunes_user.username)
        assert not local.is_active
        assert TokenRevocation.objects.get(remote_user_id=keyrunes_user.user_id).reason == (
            "deactivated_by_sync"
        )
        later.advance(3)
        assert bearer(client, old).json()["reason"] == "revoked"
        # Keyrunes re-signs tokens of deleted users: a fresh one still gets nowhere.
        resigned = kr.issue_token(keyrunes_user, issued_at=int(time.time()) + 5)
        response = bearer(client, resigned)
        assert response.status_code == 401
        assert response.json()["reason"] == "user_inactive"
        local.refresh_from_db()
        assert not local.is_active

    def test_keyrunes_confirming_the_user_reactivates_it(
        self, kr: Any, client: Client, keyrunes_user: Any
    ) -> None:
        other = kr.create_user()
        assert bearer(client, kr.issue_token(keyrunes_user)).status_code == 200
        self._deactivate_by_sync(kr, [other])  # listed by mistake as gone
        assert not get_user_model().objects.get(username=keyrunes_user.username).is_active
        fresh = kr.issue_token(keyrunes_user, issued_at=int(time.time()) + 5)
        calls = kr.requests_to("/api/me")
        assert bearer(client, fresh).json()["user"] == keyrunes_user.username
        assert kr.requests_to("/api/me") == calls + 1  # confirmed by Keyrunes, once
        assert get_user_model().objects.get(username=keyrunes_user.username).is_active

    def test_a_user_deactivated_by_hand_stays_inactive(
        self, kr: Any, client: Client, keyrunes_user: Any
    ) -> None:
        token = kr.issue_token(keyrunes_user)
        assert bearer(client, token).status_code == 200
        get_user_model().objects.filter(username=keyrunes_user.username).update(is_active=False)
        tokens.reset_authenticator()
        response = bearer(client, kr.issue_token(keyrunes_user, issued_at=int(time.time()) + 5))
        assert response.json()["reason"] == "user_inactive"


class TestPasswordChanges:
    """A password change or reset through this app's views ends the other sessions and tokens."""

    def test_change_ends_other_sessions_and_older_tokens_but_keeps_this_one(
        self, kr: Any, keyrunes_user: Any, later: Clock
    ) -> None:
        here, elsewhere = Client(), Client()
        for client in (here, elsewhere):
            assert client.login(username=keyrunes_user.username, password=keyrunes_user.password)
        old = kr.issue_token(keyrunes_user, issued_at=int(time.time()) - 60)
        assert bearer(Client(), old).status_code == 200
        response = here.post(
            "/account/password/change/",
            {
                "old_password": keyrunes_user.password,
                "new_password1": "Brand-New-Pass-9",
                "new_password2": "Brand-New-Pass-9",
            },
        )
        assert response.status_code == 302
        later.advance(3)
        assert here.get("/whoami/").json()["user"] == keyrunes_user.username
        assert elsewhere.get("/whoami/").json()["user"] is None
        assert bearer(Client(), old).json()["reason"] == "revoked"
        record = TokenRevocation.objects.get(remote_user_id=keyrunes_user.user_id)
        assert record.reason == "password_change"

    def test_reset_through_this_app_ends_every_session(
        self, kr: Any, keyrunes_user: Any, settings: Any, later: Clock
    ) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "SHOW_RESET_LINK": True}
        signed_in = Client()
        assert signed_in.login(username=keyrunes_user.username, password=keyrunes_user.password)
        later.advance(1.5)
        browser = Client()  # another browser: the token handed back by Keyrunes identifies the user
        done = browser.post("/account/password/forgot/", {"email": keyrunes_user.email})
        reset_url = done.context["demo_reset_url"]
        token = reset_url.split("=", 1)[1]
        reset = Client().post(
            "/account/password/reset/",
            {"token": token, "new_password1": "Reset-Pass-9", "new_password2": "Reset-Pass-9"},
        )
        assert reset.status_code == 302
        later.advance(3)
        assert signed_in.get("/whoami/").json()["user"] is None
        assert TokenRevocation.objects.get().reason == "password_reset"


class TestRevocationEpoch:
    """Between revocations a process re-reads one shared epoch, not one record per token."""

    def test_one_read_per_interval_however_many_tokens(
        self, kr: Any, later: Clock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from django.test import RequestFactory

        users = [kr.create_user() for _ in range(20)]
        requests = [
            RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {kr.issue_token(u)}")
            for u in users
        ]
        auth = tokens.get_authenticator()
        for request in requests:
            assert auth.authenticate(request) is not None
        per_token: list[Any] = []
        epochs: list[Any] = []
        real_state, real_epoch = revocation.revocation_state, revocation.revocation_epoch
        monkeypatch.setattr(
            tokens, "revocation_state", lambda *a: per_token.append(a) or real_state(*a)
        )
        monkeypatch.setattr(tokens, "revocation_epoch", lambda: epochs.append(1) or real_epoch())
        later.advance(3)
        for request in requests:
            assert auth.authenticate(request) is not None
        assert len(epochs) == 1
        assert per_token == []  # nothing was revoked: no per-token reads
        revocation.revoke_user_tokens(
            revocation.Subject(users[0].namespace, users[0].user_id), reason="x"
        )
        later.advance(3)
        refused = 0
        for request in requests:
            try:
                auth.authenticate(request)
            except tokens.InvalidToken:
                refused += 1
        assert len(epochs) == 2
        assert len(per_token) == len(requests)  # the epoch changed: every token is checked again
        assert refused == 1

    def test_concurrent_requests_read_the_epoch_once(
        self, kr: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Threads that find the check due together (ASGI, gthread) make one read, not one each."""
        import threading

        auth = tokens.TokenAuthenticator()
        auth.authenticate(bearer_request(kr.issue_token(kr.create_user())))
        generation = auth.generation
        reads: list[int] = []
        reading = threading.Event()

        def slow_epoch() -> str:
            reads.append(1)
            reading.set()
            time.sleep(0.05)  # a round trip the other threads arrive during
            return "after-a-revocation"

        monkeypatch.setattr(tokens, "revocation_epoch", slow_epoch)
        auth.revocations_checked_at = float("-inf")
        start = threading.Barrier(8)
        finished: list[int] = []

        def request() -> None:
            start.wait()
            auth.refresh_revocations()
            finished.append(auth.generation)

        threads = [threading.Thread(target=request) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)
        assert reading.is_set()
        assert reads == [1]
        # Every thread came back with what the one read learned.
        assert finished == [generation + 1] * 8
        assert auth.revocation_epoch == "after-a-revocation"


def bearer_request(token: str) -> HttpRequest:
    from django.test import RequestFactory

    return RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The revocation reads the authenticators make (one shared-cache round trip each)."""
    made: list[Any] = []
    real = revocation.revocation_state
    monkeypatch.setattr(tokens, "revocation_state", lambda *a: made.append(a) or real(*a))
    return made


class TestReturningUsersNewTokens:
    """A returning user's new token makes no revocation read while nothing was revoked.

    The global authenticator revokes; ``other`` stands for another instance.
    """

    def test_one_read_per_user_until_the_epoch_changes(
        self, kr: Any, later: Clock, reads: list[Any]
    ) -> None:
        user, other = kr.create_user(), tokens.TokenAuthenticator()
        now = int(time.time())
        for age in range(10, 5, -1):
            assert other.authenticate(bearer_request(kr.issue_token(user, issued_at=now - age)))
        assert len(reads) == 1
        revocation.revoke_user_tokens(revocation.Subject(user.namespace, user.user_id), reason="x")
        older = kr.issue_token(user, issued_at=now - 4)
        later.advance(3)
        with pytest.raises(tokens.InvalidToken) as refused:
            other.authenticate(bearer_request(older))
        assert refused.value.reason == "revoked"
        newer = kr.issue_token(user, issued_at=int(clock.now()))
        assert other.authenticate(bearer_request(newer)) is not None
        assert other.authenticate(bearer_request(kr.issue_token(user, issued_at=now + 4)))
        # Refused from what was learned: the user's not-before, read once again.
        assert len(reads) == 2
        with pytest.raises(tokens.InvalidToken):
            other.authenticate(bearer_request(kr.issue_token(user, issued_at=now - 3)))
        assert len(reads) == 2

    def test_a_denied_token_never_seen_here_is_refused(
        self, kr: Any, later: Clock, reads: list[Any]
    ) -> None:
        user, other = kr.create_user(), tokens.TokenAuthenticator()
        now = int(time.time())
        assert other.authenticate(bearer_request(kr.issue_token(user, issued_at=now - 9)))
        assert other.authenticate(bearer_request(kr.issue_token(user, issued_at=now - 8)))
        assert len(reads) == 1
        denied = kr.issue_token(user, issued_at=now - 7)
        revocation.deny_token(denied, reason="logout")
        later.advance(3)
        with pytest.raises(tokens.InvalidToken) as refused:
            other.authenticate(bearer_request(denied))
        assert refused.value.reason == "revoked"
        # The user now has a denied token: each of its new tokens is read again.
        for age in (6, 5):
            assert other.authenticate(bearer_request(kr.issue_token(user, issued_at=now - age)))
        assert len(reads) == 4

    def test_the_process_that_revokes_refuses_at_once(self, kr: Any, reads: list[Any]) -> None:
        user, auth = kr.create_user(), tokens.get_authenticator()
        now = int(time.time())
        assert auth.authenticate(bearer_request(kr.issue_token(user, issued_at=now - 9)))
        denied = kr.issue_token(user, issued_at=now - 8)
        revocation.deny_token(denied, reason="logout")
        with pytest.raises(tokens.InvalidToken):
            auth.authenticate(bearer_request(denied))
        older = kr.issue_token(user, issued_at=now - 7)
        assert auth.authenticate(bearer_request(older)) is not None
        revocation.revoke_user_tokens(revocation.Subject(user.namespace, user.user_id), reason="x")
        with pytest.raises(tokens.InvalidToken):
            auth.authenticate(bearer_request(kr.issue_token(user, issued_at=now - 6)))

    def test_with_a_zero_interval_a_revocation_elsewhere_is_seen_by_the_next_token(
        self, kr: Any, settings: Any
    ) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "REVOCATION_CHECK_INTERVAL": 0}
        user, other = kr.create_user(), tokens.TokenAuthenticator()
        now = int(time.time())
        assert other.authenticate(bearer_request(kr.issue_token(user, issued_at=now - 9)))
        revocation.revoke_user_tokens(revocation.Subject(user.namespace, user.user_id), reason="x")
        with pytest.raises(tokens.InvalidToken):
            other.authenticate(bearer_request(kr.issue_token(user, issued_at=now - 5)))

    def test_denying_an_unreadable_token_marks_no_user(self, kr: Any) -> None:
        from django.core.cache import caches

        revocation.deny_token("not-a-jwt", reason="logout")
        shared = tokens.get_authenticator().cache.shared
        assert caches["default"].get(
            shared.key(revocation.TOKEN_KIND, tokens.credential_hash("not-a-jwt"))
        )
        user = kr.create_user()
        revocation.deny_token(kr.issue_token(user), reason="logout")
        mark = shared.key(revocation.DENIALS_KIND, f"{user.namespace}:{user.user_id}")
        assert caches["default"].get(mark) is not None


class TestSignOutEverywhere:
    def test_the_view_ends_every_session_and_token(
        self, kr: Any, keyrunes_user: Any, later: Clock
    ) -> None:
        here, elsewhere = Client(), Client()
        for client in (here, elsewhere):
            assert client.login(username=keyrunes_user.username, password=keyrunes_user.password)
        token = here.session[SESSION_TOKEN_KEY]
        old = kr.issue_token(keyrunes_user, issued_at=int(time.time()) - 30)
        assert here.get("/account/sign-out-everywhere/").status_code == 405  # POST only
        response = here.post("/account/sign-out-everywhere/", {"next": "https://evil.example/"})
        assert response.status_code == 302
        assert not response["Location"].startswith("https://evil.example")
        later.advance(3)
        assert here.get("/whoami/").json()["user"] is None
        assert elsewhere.get("/whoami/").json()["user"] is None
        assert bearer(Client(), old).json()["reason"] == "revoked"
        assert bearer(Client(), token).json()["reason"] == "revoked"
        assert TokenRevocation.objects.get().reason == "sign_out_everywhere"

    def test_anonymous_callers_are_sent_to_log_in(self, kr: Any) -> None:
        response = Client().post("/account/sign-out-everywhere/")
        assert response.status_code == 302
        assert "login" in response["Location"]


def test_an_unreadable_shared_cache_falls_back_to_the_database(
    kr: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = kr.create_user()
    subject = revocation.Subject(user.namespace, user.user_id)
    revocation.revoke_user_tokens(subject, reason="x")
    shared = tokens.get_authenticator().cache.shared
    monkeypatch.setattr(shared, "get_values", lambda keys: None)
    state = revocation.revocation_state(subject, "0" * 64)
    assert state.not_before == TokenRevocation.objects.get().not_before.timestamp()
    assert not state.token_denied
    assert state.refuses(state.not_before - 1)
