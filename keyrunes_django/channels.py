"""Keyrunes authentication for Django Channels websocket consumers.

::

    # asgi.py
    from channels.routing import ProtocolTypeRouter, URLRouter
    from keyrunes_django.channels import KeyrunesAuthMiddlewareStack

    application = ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": KeyrunesAuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    })

The middleware sets ``scope["user"]`` (the mirrored user) and
``scope["keyrunes"]`` (the :class:`~keyrunes_django.identity.VerifiedIdentity`)
from a token verified by :func:`keyrunes_django.tokens.authenticate_token_user`
(same cache, tenancy, outage policy and revocation as HTTP requests). The
token comes, in this order of preference, from:

1. the ``Sec-WebSocket-Protocol`` header: the client offers the subprotocols
   ``["keyrunes.bearer", "<token>"]`` (``new WebSocket(url, ["keyrunes.bearer",
   token])``); the connection is accepted with the subprotocol
   ``keyrunes.bearer`` (never the token), and the consumer does not see the
   token in ``scope["subprotocols"]``;
2. ``?token=<token>`` in the URL, only with
   ``KEYRUNES["CHANNELS_QUERY_STRING_TOKEN"] = True`` (URLs end up in logs);
3. the first message, when neither is present and ``first_message`` is on
   (the default) and no session user is signed in: the middleware accepts the
   connection and waits ``first_message_timeout`` seconds for the text frame
   ``{"type": "keyrunes.authenticate", "token": "<token>"}``, answers
   ``{"type": "keyrunes.authenticated"}``, then hands the connection to the
   consumer (whose own ``accept()`` is then a no-op).

Refusals accept the handshake (so that the browser sees the code) and close
at once with:

=====  =======================================================================
code   meaning
=====  =======================================================================
4401   the token is missing, malformed, expired, revoked, of another tenant...
       (the close reason is the short reason code, e.g. ``expired``)
4403   the token is valid but the user may not use this service or this
       consumer (mapping refusal, ``groups``/``admin`` requirement)
4503   Keyrunes is unavailable and no cached answer exists (retry later)
=====  =======================================================================

The token is checked when the connection opens; a long-lived connection
outlives the token's ``exp`` unless the consumer checks
``scope["keyrunes"].expires_at``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser

from keyrunes_django.authorization import has_group, is_admin
from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.credentials import parse_authorization_header
from keyrunes_django.exceptions import InvalidToken, KeyrunesUnavailable, MirrorRefused
from keyrunes_django.identity import VerifiedIdentity
from keyrunes_django.tokens import authenticate_token_user, get_authenticator

__all__ = [
    "AUTHENTICATED_MESSAGE",
    "AUTHENTICATE_MESSAGE_TYPE",
    "CLOSE_FORBIDDEN",
    "CLOSE_REFUSED",
    "CLOSE_UNAVAILABLE",
    "SUBPROTOCOL",
    "KeyrunesAuthMiddleware",
    "KeyrunesAuthMiddlewareStack",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Close code: no valid token (the close reason names why).
CLOSE_REFUSED = 4401
#: Close code: a valid token of a user who may not use this consumer.
CLOSE_FORBIDDEN = 4403
#: Close code: Keyrunes is unavailable; the client may retry later.
CLOSE_UNAVAILABLE = 4503

#: The subprotocol that announces a token as the next offered subprotocol.
SUBPROTOCOL = "keyrunes.bearer"
#: ``type`` of the first-message authentication frame.
AUTHENTICATE_MESSAGE_TYPE = "keyrunes.authenticate"
#: The text frame sent after a first-message authentication succeeded.
AUTHENTICATED_MESSAGE = json.dumps({"type": "keyrunes.authenticated"})

#: Longest first message read (a token is well under 8 KB).
_MAX_FIRST_MESSAGE = 16_384


class _Refusal(Exception):
    """Close the connection with ``code``; ``reason`` is a short reason code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _syntax(token: Any) -> str:
    """The token if it is a well-formed bearer token, else a 4401 refusal."""
    if not isinstance(token, str):
        raise _Refusal(CLOSE_REFUSED, "malformed")
    try:
        # One home for token syntax: the Authorization header's rules.
        parsed = parse_authorization_header("Bearer " + token)
    except InvalidToken as exc:
        raise _Refusal(CLOSE_REFUSED, exc.reason) from None
    if parsed is None:  # pragma: no cover - "Bearer ..." always names the scheme
        raise _Refusal(CLOSE_REFUSED, "missing_token")
    return parsed


def _header_token(scope: Scope) -> tuple[str | None, list[str]]:
    """(token offered after ``keyrunes.bearer``, the other subprotocols)."""
    offered = [str(p) for p in scope.get("subprotocols") or ()]
    if SUBPROTOCOL not in offered:
        return None, offered
    index = offered.index(SUBPROTOCOL)
    if index + 1 >= len(offered):
        raise _Refusal(CLOSE_REFUSED, "missing_token")
    token = offered[index + 1]
    rest = offered[: index + 1] + offered[index + 2 :]
    return _syntax(token), rest


def _query_token(scope: Scope) -> str | None:
    if not keyrunes_settings.CHANNELS_QUERY_STRING_TOKEN:
        return None
    raw = scope.get("query_string") or b""
    values = parse_qs(raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)).get("token")
    if not values:
        return None
    if len(values) > 1:
        raise _Refusal(CLOSE_REFUSED, "malformed")
    return _syntax(values[0])


def _first_message_token(message: Message) -> str:
    text = message.get("text")
    if not isinstance(text, str) or len(text) > _MAX_FIRST_MESSAGE:
        raise _Refusal(CLOSE_REFUSED, "malformed")
    try:
        body = json.loads(text)
    except ValueError:
        raise _Refusal(CLOSE_REFUSED, "malformed") from None
    if not isinstance(body, dict) or body.get("type") != AUTHENTICATE_MESSAGE_TYPE:
        raise _Refusal(CLOSE_REFUSED, "malformed")
    if "token" not in body:
        raise _Refusal(CLOSE_REFUSED, "missing_token")
    return _syntax(body["token"])


async def _close(send: Send, refusal: _Refusal, *, accept: dict[str, Any] | None) -> None:
    # Closing before the handshake completes turns into an HTTP 403 without a
    # code, so a refusal completes the handshake first.
    if accept is not None:
        await send({"type": "websocket.accept", **accept})
    await send({"type": "websocket.close", "code": refusal.code, "reason": refusal.reason})


class KeyrunesAuthMiddleware:
    """ASGI middleware authenticating websocket connections with Keyrunes tokens.

    :param inner: the ASGI application (a consumer or a router).
    :param first_message: without a token in the handshake, wait for one in
        the first message (otherwise the connection goes on anonymous).
    :param first_message_timeout: seconds to wait for that message.
    :param groups: Keyrunes groups of which the user needs one (or, with
        ``all_groups``, each), else 4403.
    :param admin: require a Keyrunes admin, else 4403.
    """

    def __init__(
        self,
        inner: ASGIApp,
        *,
        first_message: bool = True,
        first_message_timeout: float = 10.0,
        groups: Iterable[str] = (),
        all_groups: bool = False,
        admin: bool = False,
    ) -> None:
        self.inner = inner
        self.first_message = first_message
        self.first_message_timeout = float(first_message_timeout)
        self.groups = tuple(groups)
        self.all_groups = all_groups
        self.admin = admin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "websocket":
            await self.inner(scope, receive, send)
            return
        scope = dict(scope)
        try:
            token, subprotocols = _header_token(scope)
            if token is not None:
                scope["subprotocols"] = subprotocols
            else:
                token = _query_token(scope)
        except _Refusal as refusal:
            await self._refuse_handshake(scope, receive, send, refusal)
            return
        if token is not None:
            await self._with_handshake_token(scope, receive, send, token)
        elif self.first_message and not _signed_in(scope):
            await self._with_first_message(scope, receive, send)
        else:
            scope.setdefault("user", AnonymousUser())
            await self.inner(scope, receive, send)

    # -------------------------------------------------------------- handshake

    @staticmethod
    def _accept_fields(scope: Scope) -> dict[str, Any]:
        offered = scope.get("subprotocols") or ()
        return {"subprotocol": SUBPROTOCOL} if SUBPROTOCOL in offered else {}

    async def _refuse_handshake(
        self, scope: Scope, receive: Receive, send: Send, refusal: _Refusal
    ) -> None:
        message = await receive()
        if message.get("type") == "websocket.connect":
            await _close(send, refusal, accept=self._accept_fields(scope))

    async def _with_handshake_token(
        self, scope: Scope, receive: Receive, send: Send, token: str
    ) -> None:
        try:
            await self._authenticate(scope, token)
        except _Refusal as refusal:
            await self._refuse_handshake(scope, receive, send, refusal)
            return
        subprotocol = SUBPROTOCOL if SUBPROTOCOL in scope.get("subprotocols", ()) else None

        async def send_with_subprotocol(message: Message) -> None:
            # A browser fails the connection unless the server picks one of
            # the offered subprotocols.
            if message.get("type") == "websocket.accept" and subprotocol:
                message = {**message, "subprotocol": message.get("subprotocol") or subprotocol}
            await send(message)

        await self.inner(scope, receive, send_with_subprotocol)

    # ---------------------------------------------------------- first message

    async def _with_first_message(self, scope: Scope, receive: Receive, send: Send) -> None:
        connect = await receive()
        if connect.get("type") != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        try:
            try:
                message = await asyncio.wait_for(receive(), self.first_message_timeout)
            except asyncio.TimeoutError:
                raise _Refusal(CLOSE_REFUSED, "timeout") from None
            if message.get("type") == "websocket.disconnect":
                return
            await self._authenticate(scope, _first_message_token(message))
        except _Refusal as refusal:
            await _close(send, refusal, accept=None)
            return
        await send({"type": "websocket.send", "text": AUTHENTICATED_MESSAGE})
        await self.inner(scope, _replay(connect, receive), _without_accept(send))

    # ---------------------------------------------------------- verification

    async def _authenticate(self, scope: Scope, token: str) -> None:
        """Set ``user`` and ``keyrunes`` in ``scope``, or raise the refusal."""
        result = await database_sync_to_async(self._verify)(token)
        if result is None:  # FAIL_OPEN during an outage: anonymous
            scope["user"] = AnonymousUser()
            return
        scope["user"], scope["keyrunes"] = result

    def _verify(self, token: str) -> tuple[Any, VerifiedIdentity] | None:
        try:
            user, identity = authenticate_token_user(token)
        except InvalidToken as exc:
            raise _Refusal(CLOSE_REFUSED, exc.reason) from None
        except MirrorRefused as exc:
            raise _Refusal(CLOSE_FORBIDDEN, exc.reason) from None
        except KeyrunesUnavailable as exc:
            if get_authenticator().fail_open(exc, None):
                return None
            raise _Refusal(CLOSE_UNAVAILABLE, "keyrunes_unavailable") from None
        if self.groups and not has_group(identity, *self.groups, all_groups=self.all_groups):
            raise _Refusal(CLOSE_FORBIDDEN, "missing_group")
        if self.admin and not is_admin(identity):
            raise _Refusal(CLOSE_FORBIDDEN, "not_admin")
        return user, identity


def _signed_in(scope: Scope) -> bool:
    user = scope.get("user")
    return bool(user is not None and getattr(user, "is_authenticated", False))


def _replay(first: Message, receive: Receive) -> Receive:
    """``receive`` that yields ``first`` again, then the real messages."""
    pending = [first]

    async def replaying_receive() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replaying_receive


def _without_accept(send: Send) -> Send:
    """``send`` that drops the consumer's accept: the middleware accepted already."""

    async def sending(message: Message) -> None:
        if message.get("type") != "websocket.accept":
            await send(message)

    return sending


def KeyrunesAuthMiddlewareStack(inner: ASGIApp, **options: Any) -> ASGIApp:
    """Channels' session stack with Keyrunes tokens inside it.

    A session user (``AuthMiddlewareStack``) is kept when no token is sent; a
    token wins over the session. ``options`` go to :class:`KeyrunesAuthMiddleware`.
    """
    from channels.auth import AuthMiddlewareStack

    stack: ASGIApp = AuthMiddlewareStack(KeyrunesAuthMiddleware(inner, **options))
    return stack
