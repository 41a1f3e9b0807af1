"""A websocket consumer behind the Keyrunes Channels middleware (see example_project/asgi.py).

Connect with the token in the subprotocols, e.g. in a browser::

    const ws = new WebSocket("ws://127.0.0.1:8000/ws/whoami/", ["keyrunes.bearer", token]);

or send ``{"type": "keyrunes.authenticate", "token": "..."}`` as the first
message. The consumer answers who the middleware says the caller is, and
echoes messages back to signed-in users.
"""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.urls import path

from keyrunes_django.channels import CLOSE_REFUSED


class WhoAmIConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        await self.accept()
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close(code=CLOSE_REFUSED)
            return
        identity = self.scope.get("keyrunes")
        await self.send_json(
            {
                "username": user.get_username(),
                "groups": sorted(getattr(identity, "groups", None) or ()),
            }
        )

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"echo": content})


websocket_urlpatterns = [path("ws/whoami/", WhoAmIConsumer.as_asgi())]
