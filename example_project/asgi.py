"""ASGI entry point with websockets: ``daphne example_project.asgi:application``.

HTTP goes to Django as usual; websockets go through the Keyrunes Channels
middleware (inside Channels' session stack) to example_project/consumers.py.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
django_asgi_app = get_asgi_application()

# After Django is set up: the consumers import models.
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from example_project.consumers import websocket_urlpatterns  # noqa: E402
from keyrunes_django.channels import KeyrunesAuthMiddlewareStack  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": KeyrunesAuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
