"""Contract tests over raw HTTP: health, public auth routes, bearer routes, conventions."""

from __future__ import annotations

import time
from urllib.parse import parse_qs

import jwt
import pytest

from keyrunes_django.testing import EmulatedUser, KeyrunesEmulator, register_payload
from tests.testing.conftest import Api, assert_plain, assert_shape_a

USER_KEYS = {
    "user_id",
    "external_id",
    "email",
    "username",
    "groups",
    "first_login",
    "organization_id",
    "namespace",
}


def decode(keyrunes: KeyrunesEmulator, token: str) -> dict[str, object]:
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "typ": "JWT"}
    claims: dict[str, object] = jwt.decode(
        token, keyrunes.jwt_secret, algorithms=["HS256"], issuer="keyrunes"
    )
    return claims


# -- health ------------------------------------------------------------------


def test_health_routes(api: Api) -> None:
    health = api.get("/api/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "healthy"
    assert body["version"] == "0.1.0"
    assert body["timestamp"].endswith("+00:00")
    assert body["database"]["status"] == "healthy"
    assert body["services"] == {"jwt_service": "healthy", "password_hashing": "healthy"}
    assert isinstance(body["uptime_seconds"], int)
    ready = api.get("/api/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    live = api.get("/api/health/live")
    assert live.json()["status"] == "alive"
    assert live.json()["version"] == "0.1.0"


def test_openapi_document(api: Api) -> None:
    doc = api.get("/api-docs/openapi.json").json()
    assert "/api/login" in doc["paths"]
    assert "/api/admin/users" not in doc["paths"]
    assert doc["components"]["securitySchemes"]["api_key"]["name"] == "X-Organization-Key"


# -- conventions -------------------------------------------------------------


def test_unknown_api_path_is_404_shape_a(api: Api) -> None:
    assert_shape_a(api.get("/api/users/me"), 404, "The requested resource was not found")


def test_unknown_other_path_is_html_unless_json_accepted(api: Api) -> None:
    html = api.get("/nowhere")
    assert html.status_code == 404
    assert html.headers["Content-Type"].startswith("text/html")
    as_json = api.get("/nowhere", headers={"Accept": "application/json"})
    assert_shape_a(as_json, 404, "The requested resource was not found")


def test_wrong_method_is_empty_405(api: Api) -> None:
    response = api.delete("/api/login")
    assert response.status_code == 405
    assert response.content == b""
    assert "POST" in response.headers["Allow"]


def test_missing_content_type_is_415(api: Api) -> None:
    response = api.post("/api/login", data='{"identity": "a"}')
    assert_plain(response, 415, "Content-Type: application/json")


def test_json_suffix_content_type_is_accepted(api: Api) -> None:
    response = api.post(
        "/api/login",
        data='{"identity":"nobody","password":"x","namespace":"public"}',
        headers={"Content-Type": "application/vnd.api+json"},
    )
    assert response.status_code == 401


def test_json_syntax_error_is_400_plain(api: Api) -> None:
    response = api.post(
        "/api/login", data="{not json", headers={"Content-Type": "application/json"}
    )
    assert_plain(response, 400, "Failed to parse the request body as JSON")


def test_missing_field_is_422_plain(api: Api) -> None:
    response = api.post("/api/login", json={"identity": "a", "password": "b"})
    assert_plain(response, 422, "missing field `namespace`")


def test_wrong_type_is_422_plain(api: Api) -> None:
    response = api.post("/api/login", json={"identity": 5, "password": "b", "namespace": "public"})
    assert_plain(response, 422, "identity: invalid type: integer `5`, expected a string")
    not_object = api.post("/api/login", json=["a"])
    assert_plain(not_object, 422, "expected struct LoginApi")


def test_body_over_two_megabytes_is_413(api: Api) -> None:
    response = api.post(
        "/api/login",
        data=b"[" + b"1," * (1024 * 1024 + 10) + b"1]",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413


# -- register ----------------------------------------------------------------


def test_register_returns_201_auth_response(api: Api, keyrunes: KeyrunesEmulator) -> None:
    payload = register_payload()
    response = api.post("/api/register", json=payload)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"user", "token", "requires_password_change"}
    assert set(body["user"]) == USER_KEYS
    assert body["user"]["groups"] == ["users"]
    assert body["user"]["namespace"] == "public"
    assert body["user"]["organization_id"] == 1
    assert body["requires_password_change"] is False
    claims = decode(keyrunes, body["token"])
    assert set(claims) == {
        "sub",
        "email",
        "username",
        "groups",
        "namespace",
        "organization_id",
        "exp",
        "iat",
        "iss",
    }
    assert claims["sub"] == str(body["user"]["user_id"])
    assert claims["exp"] == claims["iat"] + 3600  # type: ignore[operator]
    assert claims["groups"] == ["users"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"email": "not-an-email"}, "invalid email"),
        ({"password": "short"}, "password too short"),
        ({"username": "u" * 51}, "value too long for type character varying(50)"),
        ({"namespace": "nowhere"}, 'relation "users" does not exist'),
    ],
)
def test_register_validation_errors(api: Api, override: dict[str, str], message: str) -> None:
    response = api.post("/api/register", json=register_payload(**override))
    assert response.status_code == 400
    assert message in response.json()["message"]


def test_register_password_length_counts_bytes(api: Api) -> None:
    # Four two-byte characters are eight bytes: long enough for the server.
    response = api.post("/api/register", json=register_payload(password="éééé"))
    assert response.status_code == 201


def test_register_duplicates(api: Api, keyrunes_user: EmulatedUser) -> None:
    same_email = api.post("/api/register", json=register_payload(email=keyrunes_user.email.upper()))
    assert_shape_a(same_email, 400, "email already registered")
    same_username = api.post(
        "/api/register", json=register_payload(username=keyrunes_user.username)
    )
    assert_shape_a(same_username, 400, "username taken")


def test_register_organization_id_forms(api: Api) -> None:
    for value in ("1", "", None, 1):
        response = api.post("/api/register", json=register_payload(organization_id=value))
        assert response.status_code == 201, (value, response.text)
    bad = api.post("/api/register", json=register_payload(organization_id="one"))
    assert bad.status_code == 422


def test_first_registrant_of_a_namespace_becomes_its_admin(
    api: Api, keyrunes: KeyrunesEmulator
) -> None:
    org = keyrunes.create_organization("Acme", "acme")
    first = api.post(
        "/api/register",
        json=register_payload(namespace="acme", organization_id=org.organization_id),
    )
    assert first.status_code == 201
    assert first.json()["user"]["groups"] == ["admin", "users"]
    assert first.json()["user"]["user_id"] == 1  # per-namespace sequence
    second = api.post(
        "/api/register",
        json=register_payload(namespace="acme", organization_id=org.organization_id),
    )
    assert second.json()["user"]["groups"] == ["users"]


def test_register_into_tenant_without_organization_id_fails(
    api: Api, keyrunes: KeyrunesEmulator
) -> None:
    keyrunes.create_organization("Acme", "acme")
    response = api.post("/api/register", json=register_payload(namespace="acme"))
    assert_shape_a(response, 400, "invalid group specified: `admin`")


def test_first_registrant_in_empty_public_becomes_superadmin(keyrunes: KeyrunesEmulator) -> None:
    with KeyrunesEmulator(jwt_secret="s" * 32) as empty:
        response = Api(empty).post("/api/register", json=register_payload())
        assert response.json()["user"]["groups"] == ["superadmin", "users"]


# -- login -------------------------------------------------------------------


def test_login_by_email_or_username(api: Api, keyrunes_user: EmulatedUser) -> None:
    assert keyrunes_user.password is not None
    for identity in (keyrunes_user.email.upper(), keyrunes_user.username):
        response = api.post(
            "/api/login",
            json={"identity": identity, "password": keyrunes_user.password, "namespace": "public"},
        )
        assert response.status_code == 200
        assert response.json()["user"]["user_id"] == keyrunes_user.user_id
        assert response.json()["requires_password_change"] is False


def test_login_username_is_case_sensitive(api: Api, keyrunes_user: EmulatedUser) -> None:
    response = api.post(
        "/api/login",
        json={
            "identity": keyrunes_user.username.upper(),
            "password": keyrunes_user.password,
            "namespace": "public",
        },
    )
    assert_shape_a(response, 401, "invalid credentials")


def test_login_failures(api: Api, keyrunes_user: EmulatedUser, keyrunes: KeyrunesEmulator) -> None:
    wrong = api.post(
        "/api/login",
        json={"identity": keyrunes_user.email, "password": "wrong-pass", "namespace": "public"},
    )
    assert_shape_a(wrong, 401, "invalid credentials")
    unknown = api.post(
        "/api/login", json={"identity": "ghost", "password": "whatever", "namespace": "public"}
    )
    assert_shape_a(unknown, 401, "invalid credentials")
    no_ns = api.post(
        "/api/login",
        json={
            "identity": keyrunes_user.email,
            "password": keyrunes_user.password,
            "namespace": "default",
        },
    )
    assert no_ns.status_code == 401
    assert 'relation "users" does not exist' in no_ns.json()["message"]
    # Namespaces are separate: the same user is unknown in another tenant.
    keyrunes.create_organization("Other", "other")
    other = api.post(
        "/api/login",
        json={
            "identity": keyrunes_user.email,
            "password": keyrunes_user.password,
            "namespace": "other",
        },
    )
    assert_shape_a(other, 401, "invalid credentials")


def test_login_reports_first_login(api: Api, keyrunes: KeyrunesEmulator) -> None:
    user = keyrunes.create_user(first_login=True)
    assert user.password is not None
    response = api.post(
        "/api/login",
        json={"identity": user.username, "password": user.password, "namespace": "public"},
    )
    assert response.json()["requires_password_change"] is True


# -- bearer gate, /api/me ----------------------------------------------------


def test_me(api: Api, keyrunes_user: EmulatedUser, user_token: str) -> None:
    response = api.get("/api/me", token=user_token)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == USER_KEYS
    assert body["user_id"] == keyrunes_user.user_id
    assert body["external_id"] == keyrunes_user.external_id


def test_me_reads_current_groups(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, user_token: str
) -> None:
    keyrunes.create_group("developers")
    keyrunes.add_to_group(keyrunes_user, "developers")
    assert api.get("/api/me", token=user_token).json()["groups"] == ["users", "developers"]
    keyrunes.remove_from_group(keyrunes_user, "developers")
    assert api.get("/api/me", token=user_token).json()["groups"] == ["users"]


def test_bearer_gate_errors(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    assert_shape_a(api.get("/api/me"), 401, "Missing authorization header")
    assert_shape_a(
        api.get("/api/me", headers={"Authorization": "Bearer "}),
        401,
        "Missing authorization header",
    )
    assert_shape_a(
        api.get("/api/me", headers={"Authorization": "bearer x.y.z"}),
        401,
        "Missing authorization header",
    )
    assert_shape_a(api.get("/api/me", token="not-a-jwt"), 401, "Invalid or expired token")
    forged = jwt.encode(
        {
            "sub": "1",
            "email": "a@b.co",
            "username": "a",
            "groups": [],
            "namespace": "public",
            "organization_id": 1,
            "exp": int(time.time()) + 60,
            "iat": int(time.time()),
            "iss": "keyrunes",
        },
        "another-secret-of-enough-length-000",
        algorithm="HS256",
    )
    assert_shape_a(api.get("/api/me", token=forged), 401, "Invalid or expired token")
    # A missing or mistyped claim fails verification too.
    string_org = keyrunes.issue_token(keyrunes_user, organization_id="1")
    assert_shape_a(api.get("/api/me", token=string_org), 401, "Invalid or expired token")
    missing_email = keyrunes.issue_token(keyrunes_user, email=None)
    assert_shape_a(api.get("/api/me", token=missing_email), 401, "Invalid or expired token")
    none_alg = jwt.encode(
        jwt.decode(missing_email, options={"verify_signature": False}), None, algorithm="none"
    )
    assert_shape_a(api.get("/api/me", token=none_alg), 401, "Invalid or expired token")
    float_exp = keyrunes.issue_token(keyrunes_user, exp=1.9e10)
    assert_shape_a(api.get("/api/me", token=float_exp), 401, "Invalid or expired token")


def test_cookie_token_is_used_without_bearer(
    api: Api, keyrunes_user: EmulatedUser, user_token: str
) -> None:
    response = api.get("/api/me", headers={"Cookie": f"jwt_token={user_token}"})
    assert response.status_code == 200
    assert response.json()["user_id"] == keyrunes_user.user_id


def test_expired_token_refused_by_default_accepted_with_quirks(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    expired = keyrunes.expired_token(keyrunes_user)
    assert_shape_a(api.get("/api/me", token=expired), 401, "Invalid or expired token")
    keyrunes.server_quirks = True
    assert api.get("/api/me", token=expired).status_code == 200


def test_me_for_deleted_user(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, user_token: str
) -> None:
    keyrunes.delete_user(keyrunes_user)
    assert_shape_a(api.get("/api/me", token=user_token), 401, "user not found")


# -- refresh -----------------------------------------------------------------


def test_refresh_copies_body_token_claims(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, admin_token: str
) -> None:
    old = keyrunes.issue_token(keyrunes_user, issued_at=int(time.time()) - 100)
    response = api.post("/api/refresh-token", token=admin_token, json={"token": old})
    assert response.status_code == 200
    assert set(response.json()) == {"token"}
    new = decode(keyrunes, response.json()["token"])
    old_claims = decode(keyrunes, old)
    for claim in ("sub", "email", "username", "groups", "namespace", "organization_id"):
        assert new[claim] == old_claims[claim]
    assert new["iat"] > old_claims["iat"]  # type: ignore[operator]
    assert new["exp"] == new["iat"] + 3600  # type: ignore[operator]


def test_refresh_carries_stale_groups(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, user_token: str
) -> None:
    keyrunes.remove_from_group(keyrunes_user, "users")
    response = api.post("/api/refresh-token", token=user_token, json={"token": user_token})
    assert decode(keyrunes, response.json()["token"])["groups"] == ["users"]


def test_refresh_errors(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, user_token: str
) -> None:
    no_header = api.post("/api/refresh-token", json={"token": user_token})
    assert_shape_a(no_header, 401, "Missing authorization header")
    missing_body = api.post("/api/refresh-token", token=user_token, json={})
    assert_plain(missing_body, 422, "missing field `token`")
    bad_body = api.post("/api/refresh-token", token=user_token, json={"token": "garbage"})
    assert bad_body.status_code == 401
    assert bad_body.json()["message"].startswith("Failed to decode JWT: ")


def test_refresh_expired_token_default_vs_quirks(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, user_token: str
) -> None:
    expired = keyrunes.expired_token(keyrunes_user)
    as_header = api.post("/api/refresh-token", token=expired, json={"token": expired})
    assert_shape_a(as_header, 401, "Invalid or expired token")
    as_body = api.post("/api/refresh-token", token=user_token, json={"token": expired})
    assert_shape_a(as_body, 401, "Invalid or expired token")
    keyrunes.server_quirks = True
    quirky = api.post("/api/refresh-token", token=expired, json={"token": expired})
    assert quirky.status_code == 200
    assert decode(keyrunes, quirky.json()["token"])["sub"] == str(keyrunes_user.user_id)


# -- profile and password ----------------------------------------------------


def test_update_profile(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, user_token: str
) -> None:
    response = api.patch(
        "/api/user/profile", token=user_token, json={"username": "renamed", "email": "n@x.io"}
    )
    assert response.status_code == 200
    assert response.json()["username"] == "renamed"
    assert response.json()["email"] == "n@x.io"
    # The old token still works and /api/me shows the new values.
    assert api.get("/api/me", token=user_token).json()["username"] == "renamed"
    only_username = api.patch("/api/user/profile", token=user_token, json={"username": "again"})
    assert only_username.json()["email"] == "n@x.io"


def test_update_profile_errors(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, user_token: str
) -> None:
    other = keyrunes.create_user()
    assert_plain(
        api.patch("/api/user/profile", token=user_token, json={"email": "bad"}),
        400,
        "invalid email",
    )
    taken = api.patch("/api/user/profile", token=user_token, json={"username": other.username})
    assert_plain(taken, 400, "duplicate key value violates unique constraint")
    taken_email = api.patch("/api/user/profile", token=user_token, json={"email": other.email})
    # public has a case-blind unique index on lower(email), checked before users_email_key.
    assert_plain(taken_email, 400, '"users_email_lower_idx"')
    assert_plain(
        api.patch("/api/user/profile", token=user_token, json={"username": 5}),
        422,
        "expected a string",
    )
    keyrunes.delete_user(keyrunes_user)
    gone = api.patch("/api/user/profile", token=user_token, json={"username": "x"})
    assert_plain(gone, 400, "User not found")


def test_change_password(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser, user_token: str
) -> None:
    assert keyrunes_user.password is not None
    wrong = api.post(
        "/api/user/change-password",
        token=user_token,
        json={"current_password": "nope-nope", "new_password": "NewPass123"},
    )
    assert_plain(wrong, 400, "Invalid current password")
    short = api.post(
        "/api/user/change-password",
        token=user_token,
        json={"current_password": keyrunes_user.password, "new_password": "short"},
    )
    assert_plain(short, 400, "password too short")
    ok = api.post(
        "/api/user/change-password",
        token=user_token,
        json={"current_password": keyrunes_user.password, "new_password": "NewPass123"},
    )
    assert ok.status_code == 200
    assert ok.json() == {"message": "Password changed successfully"}
    api.login(keyrunes_user.email, "NewPass123")
    keyrunes.delete_user(keyrunes_user)
    gone = api.post(
        "/api/user/change-password",
        token=user_token,
        json={"current_password": "NewPass123", "new_password": "NewPass456"},
    )
    assert_plain(gone, 400, "User not found")


def test_change_password_route_is_not_routed(api: Api, user_token: str) -> None:
    response = api.post("/api/change-password", token=user_token, json={})
    assert response.status_code == 404


# -- forgot / reset ------------------------------------------------------------


def test_forgot_and_reset_password(api: Api, keyrunes_user: EmulatedUser) -> None:
    forgot = api.post(
        "/api/forgot-password", json={"email": keyrunes_user.email, "namespace": "public"}
    )
    assert forgot.status_code == 200
    body = forgot.json()
    assert body["message"] == "If the email is registered, you will receive a reset link."
    token = parse_qs(body["reset_url"].lstrip("?"))["forgot_password"][0]
    assert len(token) == 64
    short = api.post(
        "/api/reset-password",
        json={"token": token, "new_password": "short", "namespace": "public"},
    )
    assert_shape_a(short, 400, "new password too short")
    reset = api.post(
        "/api/reset-password",
        json={"token": token, "new_password": "Brand-New-1", "namespace": "public"},
    )
    assert reset.status_code == 200
    assert reset.json() == {"message": "Password reset successfully"}
    api.login(keyrunes_user.username, "Brand-New-1")
    reused = api.post(
        "/api/reset-password",
        json={"token": token, "new_password": "Another-1", "namespace": "public"},
    )
    assert_shape_a(reused, 400, "invalid or expired reset token")


def test_forgot_password_errors(api: Api) -> None:
    unknown = api.post("/api/forgot-password", json={"email": "x@y.zz", "namespace": "public"})
    assert_shape_a(unknown, 400, "email not found")
    bad_ns = api.post("/api/forgot-password", json={"email": "x@y.zz", "namespace": "nope"})
    assert bad_ns.status_code == 400
    missing = api.post("/api/forgot-password", json={"email": "x@y.zz"})
    assert missing.status_code == 422
    bad_reset_ns = api.post(
        "/api/reset-password", json={"token": "t", "new_password": "long-enough", "namespace": "no"}
    )
    assert bad_reset_ns.status_code == 400
    bad_token = api.post(
        "/api/reset-password",
        json={"token": "0" * 64, "new_password": "long-enough", "namespace": "public"},
    )
    assert_shape_a(bad_token, 400, "invalid or expired reset token")


@pytest.mark.parametrize(
    ("value", "described"),
    [
        (None, "invalid type: null, expected a string"),
        (True, "invalid type: boolean `true`, expected a string"),
        (1.5, "invalid type: floating point `1.5`, expected a string"),
        (["a"], "invalid type: sequence, expected a string"),
        ({"a": 1}, "invalid type: map, expected a string"),
    ],
)
def test_type_errors_are_described_like_serde(api: Api, value: object, described: str) -> None:
    response = api.post(
        "/api/login", json={"identity": value, "password": "p", "namespace": "public"}
    )
    assert_plain(response, 422, f"identity: {described}")


def test_nan_is_not_json(api: Api) -> None:
    response = api.post(
        "/api/login",
        data='{"identity": NaN, "password": "p", "namespace": "public"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400


def test_groups_must_be_a_list_of_strings(api: Api, admin_token: str) -> None:
    response = api.post(
        "/api/admin/user",
        token=admin_token,
        json={
            "organization_id": 1,
            "email": "a@b.co",
            "username": "a",
            "password": "p" * 8,
            "groups": [1],
        },
    )
    assert_plain(response, 422, "groups[0]: invalid type: integer `1`, expected a string at line 1")
    huge = api.post(
        "/api/admin/user",
        token=admin_token,
        json={"organization_id": 2**70, "email": "a@b.co", "username": "a", "password": "p" * 8},
    )
    assert huge.status_code == 422
