"""Raw-HTTP helpers for the emulator's contract tests."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import pytest
import requests

from keyrunes_django.testing import EmulatedUser, KeyrunesEmulator


class Api:
    """Thin raw-HTTP wrapper: every call returns the ``requests.Response``."""

    def __init__(self, emulator: KeyrunesEmulator) -> None:
        self.emulator = emulator
        self.base_url = emulator.base_url
        self.session = requests.Session()

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("timeout", 5)
        return self.session.request(method, self.base_url + path, headers=all_headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.call("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.call("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.call("DELETE", path, **kwargs)

    def login(self, identity: str, password: str, namespace: str = "public") -> str:
        response = self.post(
            "/api/login",
            json={"identity": identity, "password": password, "namespace": namespace},
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    def login_user(self, user: EmulatedUser) -> str:
        assert user.password is not None
        return self.login(user.email, user.password, user.namespace)


def assert_shape_a(response: requests.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["message"] == message
    assert body["status_code"] == status
    assert body["error"] == HTTPStatus(status).phrase


def assert_plain(response: requests.Response, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert text in response.text


@pytest.fixture
def api(keyrunes: KeyrunesEmulator) -> Api:
    return Api(keyrunes)


@pytest.fixture
def admin_token(api: Api, keyrunes_superadmin: EmulatedUser) -> str:
    return api.login_user(keyrunes_superadmin)


@pytest.fixture
def user_token(api: Api, keyrunes_user: EmulatedUser) -> str:
    return api.login_user(keyrunes_user)
