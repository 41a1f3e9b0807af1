"""Channels middleware: tokens in the subprotocol header, the query string or a first message."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.testing.websocket import WebsocketCommunicator
from django.core.cache import caches

from keyrunes_django.channels import (
    AUTHENTICATED_MESSAGE,
    CLOSE_FORBIDDEN,
    CLOSE_REFUSED,
    CLOSE_UNAVAILABLE,
    SUBPROTOCOL,
    KeyrunesAuthMiddleware,
    KeyrunesAuthMiddlewareStack,
)
from keyrunes_django.testing.emulator import KeyrunesEmulator

pytestmark = pytest.mark.django_db(transaction=True)


class WhoAmI(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Accepts everyone and tells who the middleware said they are."""

    async def connect(self) -> None:
        await self.accept()
        identity = self.scope.get("keyrunes")
        await self.send_json(
            {
                "user": str(self.scope["user"]),
                "authenticated": bool(self.scope["user"].is_authenticated),
                "identity": getattr(identity, "username", None),
                "subprotocols": list(self.scope.get("subprotocols") or ()),
            }
        )


app = KeyrunesAuthMiddleware(WhoAmI.as_asgi())
no_first_message = KeyrunesAuthMiddleware(WhoAmI.as_asgi(), first_message=False)
editors_only = KeyrunesAuthMiddleware(WhoAmI.as_asgi(), groups=["editors"])
admins_only = KeyrunesAuthMiddleware(WhoAmI.as_asgi(), admin=True)
quick = KeyrunesAuthMiddleware(WhoAmI.as_asgi(), first_message_timeout=0.2)


@pytest.fixture(autouse=True)
def _clean_cache() -> Iterator[None]:
    caches["default"].clear()
    yield
    caches["default"].clear()


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return async_to_sync(scenario)()


async def close_of(communicator: WebsocketCommunicator) -> dict[str, Any]:
    message: dict[str, Any] = await communicator.receive_output(timeout=5)
    assert message["type"] == "websocket.close", message
    return message


def token_of(kr: KeyrunesEmulator, *groups: str) -> tuple[str, str]:
    user = kr.create_user(groups=("users", *groups))
    return user.username, kr.issue_token(user)


class TestSubprotocolHeader:
    def test_valid_token_sets_scope_user_and_answers_the_subprotocol(
        self, keyrunes: KeyrunesEmulator
    ) -> None:
        username, token = token_of(keyrunes)

        async def scenario() -> tuple[Any, Any]:
            communicator = WebsocketCommunicator(
                app, "/ws/", subprotocols=[SUBPROTOCOL, token, "chat"]
            )
            connected = await communicator.connect(timeout=5)
            hello = await communicator.receive_json_from(timeout=5)
            await communicator.disconnect()
            return connected, hello

        connected, hello = run(scenario)
        assert connected == (True, SUBPROTOCOL)
        assert hello == {
            "user": username,
            "authenticated": True,
            "identity": username,
            # The consumer never sees the token.
            "subprotocols": [SUBPROTOCOL, "chat"],
        }

    @pytest.mark.parametrize(
        ("subprotocols", "reason"),
        [
            ([SUBPROTOCOL], "missing_token"),
            ([SUBPROTOCOL, "not a token"], "malformed"),
            ([SUBPROTOCOL, "a" * 20_000], "header_too_large"),
        ],
    )
    def test_malformed_is_refused_without_asking_keyrunes(
        self, keyrunes: KeyrunesEmulator, subprotocols: list[str], reason: str
    ) -> None:
        async def scenario() -> tuple[Any, Any]:
            communicator = WebsocketCommunicator(app, "/ws/", subprotocols=subprotocols)
            connected = await communicator.connect(timeout=5)
            return connected, await close_of(communicator)

        connected, close = run(scenario)
        assert connected == (True, SUBPROTOCOL)
        assert close == {"type": "websocket.close", "code": CLOSE_REFUSED, "reason": reason}
        assert len(keyrunes.request_log) == 0

    def test_expired_token_closes_4401(self, keyrunes: KeyrunesEmulator) -> None:
        user = keyrunes.create_user()
        token = keyrunes.expired_token(user)

        async def scenario() -> dict[str, Any]:
            communicator = WebsocketCommunicator(app, "/ws/", subprotocols=[SUBPROTOCOL, token])
            await communicator.connect(timeout=5)
            return await close_of(communicator)

        close = run(scenario)
        assert (close["code"], close["reason"]) == (CLOSE_REFUSED, "expired")

    def test_other_namespace_closes_4401(self, keyrunes: KeyrunesEmulator) -> None:
        user = keyrunes.create_user()
        token = keyrunes.issue_token(user, namespace="tenant-b")

        async def scenario() -> dict[str, Any]:
            communicator = WebsocketCommunicator(app, "/ws/", subprotocols=[SUBPROTOCOL, token])
            await communicator.connect(timeout=5)
            return await close_of(communicator)

        assert run(scenario)["reason"] == "wrong_namespace"

    def test_mirror_refusal_closes_4403(self, keyrunes: KeyrunesEmulator, settings: Any) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "DENY_GROUP": "users"}
        _, token = token_of(keyrunes)

        async def scenario() -> dict[str, Any]:
            communicator = WebsocketCommunicator(app, "/ws/", subprotocols=[SUBPROTOCOL, token])
            await communicator.connect(timeout=5)
            return await close_of(communicator)

        close = run(scenario)
        assert (close["code"], close["reason"]) == (CLOSE_FORBIDDEN, "denied_group")

    def test_outage_closes_4503(self, keyrunes: KeyrunesEmulator, settings: Any) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": "remote"}
        keyrunes.faults.add(r"^/api/me$", status=502)
        _, token = token_of(keyrunes)

        async def scenario() -> dict[str, Any]:
            communicator = WebsocketCommunicator(app, "/ws/", subprotocols=[SUBPROTOCOL, token])
            await communicator.connect(timeout=5)
            return await close_of(communicator)

        close = run(scenario)
        assert (close["code"], close["reason"]) == (CLOSE_UNAVAILABLE, "keyrunes_unavailable")

    def test_fail_open_goes_on_anonymous(self, keyrunes: KeyrunesEmulator, settings: Any) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": "remote", "FAIL_OPEN": True}
        keyrunes.faults.add(r"^/api/me$", status=503)
        _, token = token_of(keyrunes)

        async def scenario() -> Any:
            communicator = WebsocketCommunicator(app, "/ws/", subprotocols=[SUBPROTOCOL, token])
            await communicator.connect(timeout=5)
            hello = await communicator.receive_json_from(timeout=5)
            await communicator.disconnect()
            return hello

        hello = run(scenario)
        assert hello["authenticated"] is False
        assert hello["identity"] is None

    def test_group_and_admin_requirements(self, keyrunes: KeyrunesEmulator) -> None:
        keyrunes.create_group("editors")
        _, editor = token_of(keyrunes, "editors")
        _, reader = token_of(keyrunes)

        async def outcome(application: Any, token: str) -> Any:
            communicator = WebsocketCommunicator(
                application, "/ws/", subprotocols=[SUBPROTOCOL, token]
            )
            await communicator.connect(timeout=5)
            message = await communicator.receive_output(timeout=5)
            await communicator.disconnect()
            return message.get("code") if message["type"] == "websocket.close" else "open"

        async def scenario() -> list[Any]:
            return [
                await outcome(editors_only, editor),
                await outcome(editors_only, reader),
                await outcome(admins_only, editor),
            ]

        assert run(scenario) == ["open", CLOSE_FORBIDDEN, CLOSE_FORBIDDEN]


class TestQueryString:
    def test_ignored_unless_enabled(self, keyrunes: KeyrunesEmulator) -> None:
        _, token = token_of(keyrunes)

        async def scenario() -> Any:
            communicator = WebsocketCommunicator(no_first_message, f"/ws/?token={token}")
            await communicator.connect(timeout=5)
            hello = await communicator.receive_json_from(timeout=5)
            await communicator.disconnect()
            return hello

        assert run(scenario)["authenticated"] is False
        assert len(keyrunes.request_log) == 0

    def test_enabled(self, keyrunes: KeyrunesEmulator, settings: Any) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "CHANNELS_QUERY_STRING_TOKEN": True}
        username, token = token_of(keyrunes)

        async def scenario() -> Any:
            communicator = WebsocketCommunicator(app, f"/ws/?token={token}")
            connected = await communicator.connect(timeout=5)
            hello = await communicator.receive_json_from(timeout=5)
            await communicator.disconnect()
            return connected, hello

        connected, hello = run(scenario)
        assert connected == (True, None)
        assert hello["identity"] == username

    def test_enabled_without_a_token_goes_on(
        self, keyrunes: KeyrunesEmulator, settings: Any
    ) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "CHANNELS_QUERY_STRING_TOKEN": True}

        async def scenario() -> Any:
            communicator = WebsocketCommunicator(no_first_message, "/ws/?room=1")
            await communicator.connect(timeout=5)
            hello = await communicator.receive_json_from(timeout=5)
            await communicator.disconnect()
            return hello

        assert run(scenario)["authenticated"] is False

    def test_two_tokens_are_refused(self, keyrunes: KeyrunesEmulator, settings: Any) -> None:
        settings.KEYRUNES = {**settings.KEYRUNES, "CHANNELS_QUERY_STRING_TOKEN": True}
        _, token = token_of(keyrunes)

        async def scenario() -> Any:
            communicator = WebsocketCommunicator(app, f"/ws/?token={token}&token={token}")
            await communicator.connect(timeout=5)
            return await close_of(communicator)

        close = run(scenario)
        assert (close["code"], close["reason"]) == (CLOSE_REFUSED, "malformed")


class TestFirstMessage:
    def test_authenticate_message(self, keyrunes: KeyrunesEmulator) -> None:
        username, token = token_of(keyrunes)

        async def scenario() -> tuple[Any, Any, Any]:
            communicator = WebsocketCommunicator(app, "/ws/")
            connected = await communicator.connect(timeout=5)
            await communicator.send_to(
                text_data=json.dumps({"type": "keyrunes.authenticate", "token": token})
            )
            ack = await communicator.receive_from(timeout=5)
            hello = await communicator.receive_json_from(timeout=5)
            await communicator.disconnect()
            return connected, ack, hello

        connected, ack, hello = run(scenario)
        assert connected == (True, None)
        assert ack == AUTHENTICATED_MESSAGE
        assert hello["identity"] == username
        assert hello["authenticated"] is True

    @pytest.mark.parametrize(
        ("frame", "reason"),
        [
            ("not json", "malformed"),
            (json.dumps(["keyrunes.authenticate"]), "malformed"),
            (json.dumps({"type": "hello", "token": "x"}), "malformed"),
            (json.dumps({"type": "keyrunes.authenticate"}), "missing_token"),
            (json.dumps({"type": "keyrunes.authenticate", "token": 42}), "malformed"),
            (json.dumps({"type": "keyrunes.authenticate", "token": "a b"}), "malformed"),
            ("x" * 20_000, "malformed"),
        ],
    )
    def test_bad_first_messages(self, keyrunes: KeyrunesEmulator, frame: str, reason: str) -> None:
        async def scenario() -> dict[str, Any]:
            communicator = WebsocketCommunicator(app, "/ws/")
            await communicator.connect(timeout=5)
            await communicator.send_to(text_data=frame)
            return await close_of(communicator)

        close = run(scenario)
        assert (close["code"], close["reason"]) == (CLOSE_REFUSED, reason)
        assert len(keyrunes.request_log) == 0

    def test_binary_first_message_is_refused(self, keyrunes: KeyrunesEmulator) -> None:
        async def scenario() -> dict[str, Any]:
            communicator = WebsocketCommunicator(app, "/ws/")
            await communicator.connect(timeout=5)
            await communicator.send_to(bytes_data=b"\x00token")
            return await close_of(communicator)

        assert run(scenario)["code"] == CLOSE_REFUSED

    def test_silence_times_out(self, keyrunes: KeyrunesEmulator) -> None:
        async def scenario() -> dict[str, Any]:
            communicator = WebsocketCommunicator(quick, "/ws/")
            await communicator.connect(timeout=5)
            return await close_of(communicator)

        close = run(scenario)
        assert (close["code"], close["reason"]) == (CLOSE_REFUSED, "timeout")

    def test_disconnect_while_waiting(self, keyrunes: KeyrunesEmulator) -> None:
        async def scenario() -> bool:
            communicator = WebsocketCommunicator(app, "/ws/")
            await communicator.connect(timeout=5)
            await communicator.disconnect()
            return await communicator.receive_nothing(timeout=0.1)

        assert run(scenario) is True

    def test_disabled_goes_on_anonymous(self, keyrunes: KeyrunesEmulator) -> None:
        async def scenario() -> Any:
            communicator = WebsocketCommunicator(no_first_message, "/ws/")
            await communicator.connect(timeout=5)
            hello = await communicator.receive_json_from(timeout=5)
            await communicator.disconnect()
            return hello

        hello = run(scenario)
        assert hello == {
            "user": "AnonymousUser",
            "authenticated": False,
            "identity": None,
            "subprotocols": [],
        }


def test_other_scope_types_pass_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def scenario() -> None:
        await KeyrunesAuthMiddleware(inner)({"type": "http"}, None, None)  # type: ignore[arg-type]

    run(scenario)
    assert seen == ["http"]


def test_stack_keeps_a_token_over_no_session(keyrunes: KeyrunesEmulator) -> None:
    username, token = token_of(keyrunes)
    application = KeyrunesAuthMiddlewareStack(WhoAmI.as_asgi())

    async def scenario() -> Any:
        communicator = WebsocketCommunicator(application, "/ws/", subprotocols=[SUBPROTOCOL, token])
        await communicator.connect(timeout=5)
        hello = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return hello

    assert run(scenario)["identity"] == username
