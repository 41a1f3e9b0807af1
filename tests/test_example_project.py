"""The example project's pages and API against an emulator seeded from example_project/seed.json."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from keyrunes_django.client import get_client
from keyrunes_django.testing.emulator import KeyrunesEmulator
from tests.example_fixtures import ADMIN, ALICE, BOB, example_emulator, example_site

__all__ = ["example_emulator", "example_site"]

pytestmark = pytest.mark.django_db


def browser(username: str, password: str) -> Client:
    client = Client()
    response = client.post("/login/", {"username": username, "password": password})
    assert response.status_code == 302, response.content
    assert response["Location"] == "/"
    return client


def bearer(identity: str, password: str) -> dict[str, str]:
    token = get_client().login(identity, password).token
    return {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_ACCEPT": "application/json"}


# ------------------------------------------------------------------ the site


def test_home_and_login_page(example_site: KeyrunesEmulator) -> None:
    client = Client()
    home = client.get("/")
    assert home.status_code == 200
    assert b"Keyrunes example site" in home.content
    assert b"You are not signed in" in home.content
    login = client.get("/login/")
    assert login.status_code == 200
    assert b'name="username"' in login.content


def test_login_shows_the_identity_on_the_home_page(example_site: KeyrunesEmulator) -> None:
    client = browser(*ALICE)
    home = client.get("/")
    assert b"Signed in as <strong>alice</strong>" in home.content
    user = User.objects.get(username="alice")
    assert set(user.groups.values_list("name", flat=True)) == {"users", "editors"}


def test_wrong_password_and_outage_on_the_login_page(example_site: KeyrunesEmulator) -> None:
    client = Client()
    wrong = client.post("/login/", {"username": "alice", "password": "nope-nope"})
    assert wrong.status_code == 200
    assert b"Please enter a correct" in wrong.content
    example_site.faults.add("/api/login", status=503)
    down = client.post("/login/", {"username": "alice", "password": ALICE[1]})
    assert down.status_code == 200
    assert b"The authentication service is unavailable" in down.content


@pytest.mark.parametrize(
    ("path", "alice", "bob", "admin"),
    [
        ("/members/", 200, 200, 200),
        ("/editors/", 200, 403, 403),
        ("/admin-area/", 403, 403, 200),
        ("/docs/", 200, 200, 200),
        ("/docs/edit/", 200, 403, 200),  # superadmin: the full_access policy
        ("/cbv/members/", 200, 200, 200),
        ("/cbv/editors/", 200, 403, 403),
        ("/cbv/admin-area/", 403, 403, 200),
        ("/cbv/docs/", 200, 200, 200),
    ],
)
def test_pages_behind_each_guard(
    example_site: KeyrunesEmulator, path: str, alice: int, bob: int, admin: int
) -> None:
    credentials = {"alice": ALICE, "bob": BOB, "admin": (ADMIN[0], ADMIN[1])}
    expected = {"alice": alice, "bob": bob, "admin": admin}
    for name, (identity, password) in credentials.items():
        status = browser(identity, password).get(path).status_code
        assert status == expected[name], (path, name, status)


def test_anonymous_is_sent_to_the_login_page(example_site: KeyrunesEmulator) -> None:
    response = Client().get("/editors/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/editors/"


def test_forbidden_page_uses_the_site_template(example_site: KeyrunesEmulator) -> None:
    response = browser(*BOB).get("/editors/")
    assert response.status_code == 403
    assert b"<h1>Forbidden</h1>" in response.content


def test_logout(example_site: KeyrunesEmulator) -> None:
    client = browser(*ALICE)
    response = client.post("/logout/")
    assert response.status_code == 302
    assert client.get("/members/").status_code == 302


def test_password_change_through_the_site(example_site: KeyrunesEmulator) -> None:
    client = browser(*BOB)
    page = client.get("/account/password/change/")
    assert b"Change your password" in page.content
    assert b"Signed in as" in page.content  # the site's layout wraps the app's template
    response = client.post(
        "/account/password/change/",
        {
            "old_password": BOB[1],
            "new_password1": "Bob-New-Pass-2",
            "new_password2": "Bob-New-Pass-2",
        },
    )
    assert response.status_code == 302
    assert get_client().login("bob", "Bob-New-Pass-2").token


def test_forgot_password_shows_the_demo_link(example_site: KeyrunesEmulator) -> None:
    response = Client().post("/account/password/forgot/", {"email": "bob@example.com"})
    assert b"Demo only" in response.content
    assert b'id="demo-reset-link"' in response.content


def test_django_admin_login_page(example_site: KeyrunesEmulator) -> None:
    client = browser(ADMIN[0], ADMIN[1])
    assert client.get("/admin/").status_code == 200
    assert browser(*BOB).get("/admin/").status_code == 302


# ------------------------------------------------------------------ the API


@pytest.mark.parametrize(
    ("path", "alice", "bob"),
    [
        ("/api/me/", 200, 200),
        ("/api/admin/", 403, 403),
        ("/api/editors/", 200, 403),
        ("/api/staff/", 200, 403),
        ("/api/docs/", 200, 200),
        ("/api/docs-write/", 200, 403),
        ("/api/editors-or-admins/", 200, 403),
        ("/api/readers-only/", 403, 200),
        ("/api/organization/", 403, 403),
        ("/api/me-or-organization/", 200, 200),
    ],
)
def test_api_with_bearer_tokens(
    example_site: KeyrunesEmulator, path: str, alice: int, bob: int
) -> None:
    client = Client()
    assert client.get(path, **bearer(*ALICE)).status_code == alice
    assert client.get(path, **bearer(*BOB)).status_code == bob


def test_api_me_describes_the_caller(example_site: KeyrunesEmulator) -> None:
    body = Client().get("/api/me/", **bearer(*ALICE)).json()
    assert body["ok"] is True
    assert body["caller"]["username"] == "alice"
    assert body["caller"]["groups"] == ["editors", "users"]


def test_api_admin_for_the_superadmin(example_site: KeyrunesEmulator) -> None:
    client = Client()
    headers = bearer(ADMIN[0], ADMIN[1])
    assert client.get("/api/admin/", **headers).status_code == 200
    assert client.get("/api/editors-or-admins/", **headers).status_code == 200


def test_api_with_the_organization_key(example_site: KeyrunesEmulator) -> None:
    headers: dict[str, Any] = {
        "HTTP_X_ORGANIZATION_KEY": example_site.organization_key(1),
        "HTTP_ACCEPT": "application/json",
    }
    client = Client()
    organization = client.get("/api/organization/", **headers)
    assert organization.status_code == 200
    assert organization.json()["caller"] == {"kind": "organization", "organization_id": 1}
    assert client.get("/api/me-or-organization/", **headers).status_code == 200
    assert client.get("/api/me/", **headers).status_code == 403


def test_api_anonymous_and_bad_token(example_site: KeyrunesEmulator) -> None:
    client = Client()
    anonymous = client.get("/api/me/", HTTP_ACCEPT="application/json")
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    bad = client.get("/api/me/", HTTP_AUTHORIZATION="Bearer not-a-token")
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad["WWW-Authenticate"]


def test_stateless_endpoint_makes_no_query(
    example_site: KeyrunesEmulator, django_assert_num_queries: Any
) -> None:
    headers = bearer(*ALICE)
    client = Client()
    assert client.get("/api/stateless/", **headers).status_code == 200  # cold: verifies
    with django_assert_num_queries(0):
        response = client.get("/api/stateless/", **headers)
    assert response.status_code == 200
    assert response.json()["user_class"] == "StatelessUser"


def test_home_shows_template_tags_registration_and_sign_out(
    example_site: KeyrunesEmulator,
) -> None:
    page = browser(*ALICE).get("/").content.decode()
    assert 'id="template-tags"' in page
    assert "Read <code>docs:handbook</code>" in page
    assert "/account/sign-out-everywhere/" in page
    assert Client().get("/account/register/").status_code == 200
