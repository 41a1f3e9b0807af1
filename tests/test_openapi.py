"""OpenAPI: drf-spectacular security schemes, and the example's schema, Swagger UI and ninja API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing.websocket import WebsocketCommunicator
from django.test import Client
from django.urls import path
from drf_spectacular.generators import SchemaGenerator
from rest_framework.response import Response
from rest_framework.views import APIView

from keyrunes_django.channels import SUBPROTOCOL
from keyrunes_django.drf.authentication import (
    KeyrunesOrganizationKeyAuthentication,
    KeyrunesTokenAuthentication,
)
from keyrunes_django.drf.openapi import BEARER_SCHEME_NAME, ORGANIZATION_KEY_SCHEME_NAME
from keyrunes_django.testing.emulator import KeyrunesEmulator
from tests.example_fixtures import ALICE, BOB, example_emulator, example_site

__all__ = ["example_emulator", "example_site"]

ROOT = Path(__file__).resolve().parent.parent

BEARER = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT",
    "description": "A Keyrunes access token (HS256 JWT) from POST /api/login.",
}
ORGANIZATION_KEY = {
    "type": "apiKey",
    "in": "header",
    "name": "X-Organization-Key",
    "description": "A Keyrunes organization key (a UUID).",
}


class CustomTokenAuthentication(KeyrunesTokenAuthentication):
    """A project's own subclass still gets the scheme."""


class Both(APIView):
    authentication_classes = [KeyrunesTokenAuthentication, KeyrunesOrganizationKeyAuthentication]

    def get(self, request: Any) -> Response:
        return Response({})


class TokenOnly(APIView):
    authentication_classes = [CustomTokenAuthentication]

    def get(self, request: Any) -> Response:
        return Response({})


@pytest.fixture
def spectacular(settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **getattr(settings, "REST_FRAMEWORK", {}),
        "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    }


def schema_of(*patterns: Any) -> dict[str, Any]:
    generated: dict[str, Any] = SchemaGenerator(patterns=list(patterns)).get_schema(
        request=None, public=True
    )
    return generated


@pytest.mark.usefixtures("spectacular")
def test_security_schemes() -> None:
    schema = schema_of(path("both/", Both.as_view()), path("token/", TokenOnly.as_view()))
    assert schema["components"]["securitySchemes"] == {
        BEARER_SCHEME_NAME: BEARER,
        ORGANIZATION_KEY_SCHEME_NAME: ORGANIZATION_KEY,
    }
    # Alternatives (either credential), in the order of authentication_classes.
    assert schema["paths"]["/both/"]["get"]["security"] == [
        {BEARER_SCHEME_NAME: []},
        {ORGANIZATION_KEY_SCHEME_NAME: []},
    ]
    assert schema["paths"]["/token/"]["get"]["security"] == [{BEARER_SCHEME_NAME: []}]


@pytest.mark.parametrize("installed", [True, False])
def test_registered_when_drf_spectacular_is_an_installed_app(installed: bool) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from django.conf import settings
        if {installed!r}:
            settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "drf_spectacular"]
        import django
        django.setup()
        from drf_spectacular.extensions import OpenApiAuthenticationExtension
        from keyrunes_django.drf.authentication import KeyrunesTokenAuthentication
        print(OpenApiAuthenticationExtension.get_match(KeyrunesTokenAuthentication()) is not None)
        """
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(installed)


# ------------------------------------------------------------- the example


@pytest.fixture
def example_with_swagger(example_site: KeyrunesEmulator, settings: Any) -> KeyrunesEmulator:
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "drf_spectacular"]
    return example_site


def bearer(identity: str, password: str) -> dict[str, str]:
    from keyrunes_django.client import get_client

    return {"HTTP_AUTHORIZATION": f"Bearer {get_client().login(identity, password).token}"}


@pytest.mark.django_db
def test_example_serves_its_schema(example_with_swagger: KeyrunesEmulator) -> None:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    schemes = schema["components"]["securitySchemes"]
    assert schemes[BEARER_SCHEME_NAME] == BEARER
    assert schemes[ORGANIZATION_KEY_SCHEME_NAME] == ORGANIZATION_KEY
    me = schema["paths"]["/api/me/"]["get"]
    assert me["security"] == [{BEARER_SCHEME_NAME: []}, {ORGANIZATION_KEY_SCHEME_NAME: []}]
    assert set(me["responses"]["200"]["content"]["application/json"]["schema"]) == {"$ref"}


@pytest.mark.django_db
def test_example_serves_swagger_ui(example_with_swagger: KeyrunesEmulator) -> None:
    response = Client().get("/api/schema/swagger/")
    assert response.status_code == 200
    assert b"swagger-ui" in response.content
    assert b"/api/schema/" in response.content


@pytest.mark.django_db
def test_example_ninja_api(example_site: KeyrunesEmulator) -> None:
    client = Client()
    alice, bob = bearer(*ALICE), bearer(*BOB)
    me = client.get("/ninja/me", **alice)
    assert me.status_code == 200
    assert me.json()["username"] == "alice"
    assert client.get("/ninja/editors", **alice).status_code == 200
    assert client.get("/ninja/editors", **bob).status_code == 403
    assert client.get("/ninja/handbook/handbook", **bob).status_code == 200
    assert client.get("/ninja/writers/draft", **alice).status_code == 200
    assert client.get("/ninja/writers/draft", **bob).status_code == 403
    assert client.get("/ninja/staff", **bob).status_code == 403
    assert client.get("/ninja/admin", **alice).status_code == 403
    anonymous = client.get("/ninja/me", HTTP_ACCEPT="application/json")
    assert anonymous.status_code == 401
    assert anonymous.json()["reason"] == "not_authenticated"
    organization = client.get(
        "/ninja/organization", HTTP_X_ORGANIZATION_KEY=example_site.organization_key(1)
    )
    assert organization.json() == {"kind": "organization", "organization_id": 1}
    schema = client.get("/ninja/openapi.json").json()
    assert schema["components"]["securitySchemes"]["KeyrunesBearer"]["bearerFormat"] == "JWT"


@pytest.mark.django_db
def test_home_page_shows_the_demo_curl_line(example_site: KeyrunesEmulator, settings: Any) -> None:
    client = Client()
    assert client.post("/login/", {"username": ALICE[0], "password": ALICE[1]}).status_code == 302
    settings.DEBUG = True
    settings.EXAMPLE_SHOW_API_TOKEN = True
    page = client.get("/").content.decode()
    assert "curl -H &#x27;Authorization: Bearer ey" in page
    assert "http://testserver/api/me/" in page
    assert example_site.base_url in page
    assert 'id="schema-link"' in page
    # The token shown is alice's and works.
    token = page.split("Bearer ", 1)[1].split("&#x27;", 1)[0]
    api = Client().get("/api/me/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.json()["caller"]["username"] == "alice"


@pytest.mark.django_db
@pytest.mark.parametrize(("debug", "flag"), [(False, True), (True, False)])
def test_no_token_on_the_home_page_outside_the_demo(
    example_site: KeyrunesEmulator, settings: Any, debug: bool, flag: bool
) -> None:
    client = Client()
    client.post("/login/", {"username": ALICE[0], "password": ALICE[1]})
    settings.DEBUG = debug
    settings.EXAMPLE_SHOW_API_TOKEN = flag
    page = client.get("/").content.decode()
    assert "Bearer ey" not in page
    assert 'id="api-demo"' not in page
    assert 'id="schema-link"' in page


@pytest.mark.django_db(transaction=True)
def test_example_websocket_consumer(example_site: KeyrunesEmulator) -> None:
    from example_project.asgi import application

    token = bearer(*ALICE)["HTTP_AUTHORIZATION"].split()[1]

    async def scenario() -> tuple[Any, Any, Any]:
        communicator = WebsocketCommunicator(
            application, "/ws/whoami/", subprotocols=[SUBPROTOCOL, token]
        )
        connected = await communicator.connect(timeout=5)
        hello = await communicator.receive_json_from(timeout=5)
        await communicator.send_json_to({"ping": 1})
        echo = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return connected, hello, echo

    connected, hello, echo = async_to_sync(scenario)()
    assert connected == (True, SUBPROTOCOL)
    assert hello == {"username": "alice", "groups": ["editors", "users"]}
    assert echo == {"echo": {"ping": 1}}
