"""Edge cases where the emulator answers exactly as the server's source does.

Every test names the server file and line it follows, at Keyrunes commit
8421401 (``src/...``, ``migrations/...``) or in the libraries that server
pins (axum 0.8.8, serde_json 1.0.148, uuid 1.19, chrono 0.4).
"""

from __future__ import annotations

import base64
import http.client
import json
import re

import pytest
import requests

from keyrunes_django.testing import EmulatedUser, KeyrunesEmulator
from keyrunes_django.testing.factories import register_payload, user_payload
from tests.testing.conftest import Api, assert_plain, assert_shape_a


def raw(
    keyrunes: KeyrunesEmulator, method: str, path: str, **kwargs: object
) -> http.client.HTTPResponse:
    """A request with the path sent byte for byte (no client-side normalisation)."""
    connection = http.client.HTTPConnection(keyrunes.host, keyrunes.port, timeout=5)
    connection.request(method, path, **kwargs)  # type: ignore[arg-type]
    return connection.getresponse()


# -- item 1: default group --------------------------------------------------


def test_create_user_with_empty_groups_lands_in_users(api: Api, admin_token: str) -> None:
    """``resolve_group_ids`` adds ``users`` to an empty list.

    src/services/user_service.rs:742-744 at 8421401."""
    body = user_payload(organization_id=1, groups=[])
    response = api.post("/api/admin/user", token=admin_token, json=body)
    assert response.status_code == 201, response.text
    assert response.json()["groups"] == ["users"]


# -- item 2: the gate answers before the 405 ---------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("DELETE", "/api/me", 401),
        ("PUT", "/api/admin/users", 401),
        ("GET", "/api/check-permission", 401),
        ("PUT", "/api/admin/organizations", 401),
    ],
)
def test_wrong_method_on_a_gated_route_meets_the_gate(
    keyrunes: KeyrunesEmulator, method: str, path: str, status: int
) -> None:
    """Router ``.layer(from_fn(...))`` wraps the 405 fallback: src/main.rs:172, :223-224, :243."""
    response = raw(keyrunes, method, path)
    assert response.status == status
    assert json.loads(response.read())["status_code"] == status


def test_wrong_method_after_the_gate_is_an_empty_405(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    """Once require_auth passes (src/main.rs:172), axum's bare 405 with ``Allow`` follows."""
    token = keyrunes.issue_token(keyrunes_user)
    response = raw(keyrunes, "DELETE", "/api/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 405
    assert response.getheader("Allow") == "GET,HEAD"
    assert response.getheader("Content-Type") is None
    assert response.read() == b""


def test_admin_gate_guards_the_405_of_a_shared_path(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    """GET (src/main.rs:157, bearer) and POST (:212, admin) share a path; the later router's
    fallback, behind the admin gate, answers other methods (axum ``Fallback::merge``)."""
    token = keyrunes.issue_token(keyrunes_user)
    response = raw(
        keyrunes, "PUT", "/api/admin/organizations", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 403
    admin = keyrunes.issue_token(keyrunes_user, groups=["admin"])
    response = raw(
        keyrunes, "PUT", "/api/admin/organizations", headers={"Authorization": f"Bearer {admin}"}
    )
    assert response.status == 405
    assert response.getheader("Allow") == "GET,HEAD,POST"


def test_allow_header_keeps_registration_order(keyrunes: KeyrunesEmulator) -> None:
    """``post(...).delete(...)`` at src/main.rs:205 gives ``POST,DELETE`` (axum appends)."""
    token = keyrunes.issue_token(
        keyrunes.get_user(1) or keyrunes.create_user(), groups=["superadmin"]
    )
    response = raw(
        keyrunes, "GET", "/api/admin/users/1/groups/1", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 405
    assert response.getheader("Allow") == "POST,DELETE"


# -- item 3: paths are matched as sent ----------------------------------------


@pytest.mark.parametrize("path", ["/api/me/", "/api/%6De", "/api/admin/users//groups/1"])
def test_paths_match_byte_for_byte(keyrunes: KeyrunesEmulator, path: str) -> None:
    """axum matches the raw path; the fallback answers 404 JSON for /api/ (src/main.rs:253,
    src/handler/errors.rs:83)."""
    response = raw(keyrunes, "GET", path)
    assert response.status == 404
    assert json.loads(response.read())["message"] == "The requested resource was not found"


def test_double_slash_is_not_an_api_path(keyrunes: KeyrunesEmulator) -> None:
    """``//api/me`` matches no route, and ``is_api_route`` (src/handler/errors.rs:83) sees a
    path that does not start with ``/api/``: HTML 404 unless the client accepts JSON."""
    response = raw(keyrunes, "GET", "//api/me")
    assert response.status == 404
    assert response.getheader("Content-Type", "").startswith("text/html")
    response = raw(keyrunes, "GET", "//api/me", headers={"Accept": "application/json"})
    assert response.status == 404
    assert json.loads(response.read())["status_code"] == 404


# -- item 4: Query<OrgIdParam> -----------------------------------------------


@pytest.mark.parametrize(
    ("query", "status", "text"),
    [
        ("?org_id=", 200, None),
        ("?org_id=1&org_id=1", 400, "Failed to deserialize query string: duplicate field `org_id`"),
        ("?org_id=x", 400, "Failed to deserialize query string: invalid digit found in string"),
        ("?org_id=%2B1", 200, None),
        ("?org_id=+1", 400, "invalid digit found in string"),
        ("?org%5Fid=1", 200, None),
        ("?org_id=99999999999999999999", 400, "number too large to fit in target type"),
        ("?org_id=%D9%A1", 400, "invalid digit found in string"),
    ],
)
def test_org_id_query_follows_serde_urlencoded(
    api: Api, admin_token: str, query: str, status: int, text: str | None
) -> None:
    """``deserialize_option_string_or_number``: "" is None (src/api/deserializers.rs:56), else
    ``s.parse::<i64>()`` (:59); a repeated key is a duplicate field (serde derive)."""
    response = api.get(f"/api/admin/groups{query}", token=admin_token)
    assert response.status_code == status, response.text
    if text:
        assert_plain(response, status, text)


def test_query_is_read_before_the_path_on_membership_routes(api: Api, admin_token: str) -> None:
    """``Query`` precedes ``Path<(i64, i64)>`` in the handler's arguments.

    src/api/admin.rs:352-353."""
    response = api.post("/api/admin/users/x/groups/y?org_id=z", token=admin_token)
    assert_plain(response, 400, "Failed to deserialize query string")
    response = api.post("/api/admin/users/1/groups/y", token=admin_token)
    assert_plain(
        response, 400, "Invalid URL: Cannot parse value at index 1 with value `y` to a `i64`"
    )
    response = api.delete("/api/admin/users/x", token=admin_token)
    assert_plain(response, 400, "Invalid URL: Cannot parse `x` to a `i64`")


# -- item 5: reset-password order ---------------------------------------------


def test_reset_password_checks_the_token_before_the_length(api: Api) -> None:
    """``find_valid_token`` (src/services/user_service.rs:493) before the length rule (:497)."""
    body = {"token": "nope", "new_password": "short", "namespace": "public"}
    assert_shape_a(
        api.post("/api/reset-password", json=body), 400, "invalid or expired reset token"
    )


def test_short_password_keeps_the_reset_token_usable(api: Api, keyrunes_user: EmulatedUser) -> None:
    """The token is marked used only after success: src/services/user_service.rs:506-508."""
    forgot = api.post(
        "/api/forgot-password", json={"email": keyrunes_user.email, "namespace": "public"}
    )
    token = forgot.json()["reset_url"].split("=", 1)[1]
    body = {"token": token, "new_password": "short", "namespace": "public"}
    assert_shape_a(api.post("/api/reset-password", json=body), 400, "new password too short")
    body["new_password"] = "LongEnough1"
    assert api.post("/api/reset-password", json=body).status_code == 200


# -- item 6: cookie fallback ------------------------------------------------------


def test_cookie_fallback_like_extract_bearer_token(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    """First non-empty ``jwt_token=`` pair, value verbatim: src/handler/auth.rs:203-215."""
    token = keyrunes.issue_token(keyrunes_user)

    def me(cookie: str, authorization: str | None = None) -> int:
        headers = {"Cookie": cookie}
        if authorization is not None:
            headers["Authorization"] = authorization
        return raw(keyrunes, "GET", "/api/me", headers=headers).status

    assert me(f"jwt_token=; jwt_token={token}") == 200
    assert me(f"a=1;jwt_token={token}; jwt_token=garbage") == 200
    assert me(f"jwt_token=garbage; jwt_token={token}") == 401
    assert me(f'jwt_token="{token}"') == 401
    assert me("jwt_token=") == 401
    assert me(f"jwt_token={token}", authorization="Basic abc") == 200
    assert me(f"jwt_token={token}", authorization="Bearer ") == 200
    assert me(f"jwt_token={token}", authorization="bearer x") == 200


# -- item 7: seeded rows -------------------------------------------------------------


def test_seed_and_organization_group_descriptions(api: Api, admin_token: str) -> None:
    """migrations/20250908121827_create_groups_and_policies.sql:99-108,
    migrations/20251228154800_create_organizations_and_multitenancy.sql:22,
    src/services/organization_service.rs:72 and :84."""
    groups = {
        g["name"]: g["description"] for g in api.get("/api/admin/groups", token=admin_token).json()
    }
    assert groups == {
        "superadmin": "Super administrators with full access",
        "users": "Regular users",
    }
    policies = api.get("/api/admin/policies", token=admin_token).json()
    assert {p["name"]: p["description"] for p in policies} == {
        "full_access": "Full access to all resources",
        "read_only": "Read-only access to user resources",
        "user_self_manage": "Users can manage their own data",
    }
    orgs = api.get("/api/admin/organizations", token=admin_token).json()
    assert orgs[0]["description"] == "Default organization for existing data"
    org = api.post(
        "/api/admin/organizations",
        token=admin_token,
        json={"name": "Acme", "namespace": "acme", "description": "  "},
    ).json()
    assert org["description"] is None  # empty_string_as_none: organization_service.rs:18-24
    tenant = api.get(f"/api/admin/groups?org_id={org['organization_id']}", token=admin_token).json()
    assert {g["name"]: g["description"] for g in tenant} == {
        "admin": "Administrators of the organization",
        "users": "Standard users of the organization",
    }


# -- item 8: input validation ---------------------------------------------------------


def test_email_rule_has_no_newline_exception(api: Api) -> None:
    """Rust's ``$`` matches only at the end: src/domain/user.rs:14."""
    response = api.post("/api/register", json=register_payload(email="a@b.co\n"))
    assert_shape_a(response, 400, "invalid email")


def test_non_ascii_digits_are_not_numbers(api: Api, admin_token: str) -> None:
    """``str::parse::<i64>`` takes ASCII digits only: src/api/deserializers.rs:15."""
    body = {"organization_id": "\u0661", "name": "g"}
    response = api.post("/api/admin/groups", token=admin_token, json=body)
    assert_plain(response, 422, "organization_id: invalid digit found in string at line 1 column")


def test_column_limits_and_the_id_they_consume(
    api: Api, admin_token: str, keyrunes: KeyrunesEmulator
) -> None:
    """VARCHAR(50) username (migrations/20250819092538_create_users_table.sql:8); the failed
    INSERT still takes a sequence value (src/repository/sqlx_impl.rs:79)."""
    too_long = api.post(
        "/api/admin/user",
        token=admin_token,
        json=user_payload(organization_id=1, username="u" * 51),
    )
    assert_plain(too_long, 400, "value too long for type character varying(50)")
    exact = api.post(
        "/api/admin/user",
        token=admin_token,
        json=user_payload(organization_id=1, username="u" * 50),
    )
    assert exact.status_code == 201
    assert exact.json()["user_id"] == 3  # 1 = superadmin, 2 = the failed insert


def test_nul_characters_are_refused_by_postgresql(api: Api, admin_token: str) -> None:
    """PostgreSQL text cannot hold NUL; the lookup (src/repository/sqlx_impl.rs:509) fails first."""
    response = api.post(
        "/api/admin/groups", token=admin_token, json={"organization_id": 1, "name": "a\u0000b"}
    )
    assert_plain(response, 400, 'invalid byte sequence for encoding "UTF8": 0x00')
    login = api.post(
        "/api/login", json={"identity": "a\u0000", "password": "x", "namespace": "public"}
    )
    assert_shape_a(
        login, 401, 'error returned from database: invalid byte sequence for encoding "UTF8": 0x00'
    )


def test_duplicate_json_keys_are_refused(api: Api) -> None:
    """serde derive refuses a repeated field; serde_json positions it after the key."""
    body = b'{"identity":"a","identity":"b","password":"p","namespace":"public"}'
    response = api.post("/api/login", data=body, headers={"Content-Type": "application/json"})
    assert_plain(
        response,
        422,
        "Failed to deserialize the JSON body into the target type: "
        "duplicate field `identity` at line 1 column 26",
    )


def test_forged_token_claims(
    api: Api, keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    """``verify_token`` reads each claim with a type: src/services/jwt_service.rs:71-129."""
    float_exp = keyrunes.issue_token(keyrunes_user, exp=1.9e9)
    assert_shape_a(api.get("/api/me", token=float_exp), 401, "Invalid or expired token")
    refresh = api.post(
        "/api/refresh-token",
        token=keyrunes.issue_token(keyrunes_user),
        json={"token": keyrunes.issue_token(keyrunes_user, organization_id="1")},
    )
    assert_shape_a(refresh, 401, "Missing or invalid 'organization_id' claim")
    header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    unsigned = header + "." + keyrunes.issue_token(keyrunes_user).split(".")[1] + "."
    assert_shape_a(api.get("/api/me", token=unsigned), 401, "Invalid or expired token")
    min_i64 = keyrunes.issue_token(keyrunes_user, iat=-(2**63))
    assert api.get("/api/me", token=min_i64).status_code == 200


# -- item 9: order and collation ---------------------------------------------------------


def test_lists_sort_like_postgresql_en_us(api: Api, admin_token: str) -> None:
    """``ORDER BY name`` (src/repository/sqlx_impl.rs:566) under the en_US.utf8 collation of
    the postgres:17 image: case-blind first, lower case first on ties."""
    for name in ("beta", "Alpha", "alpha", "Zulu"):
        api.post("/api/admin/groups", token=admin_token, json={"organization_id": 1, "name": name})
    names = [g["name"] for g in api.get("/api/admin/groups", token=admin_token).json()]
    assert names == ["alpha", "Alpha", "beta", "superadmin", "users", "Zulu"]


def test_tenant_emails_are_unique_by_exact_case(
    api: Api, admin_token: str, keyrunes: KeyrunesEmulator
) -> None:
    """Tenant ``email ... UNIQUE`` (migrations/tenant/001_init_tenant.sql:6) is case-sensitive;
    public also has ``users_email_lower_idx``
    (migrations/20250819092538_create_users_table.sql:15)."""
    org = keyrunes.create_organization("Acme", "acme")
    first = keyrunes.create_user(namespace="acme", email="alice@acme.io", groups=("users",))
    second = keyrunes.create_user(namespace="acme", email="bob@acme.io", groups=("users",))
    response = api.patch(
        f"/api/admin/users/{second.user_id}?org_id={org.organization_id}",
        token=admin_token,
        json={"email": "ALICE@acme.io"},
    )
    assert response.status_code == 200, response.text
    exact = api.patch(
        f"/api/admin/users/{second.user_id}?org_id={org.organization_id}",
        token=admin_token,
        json={"email": first.email},
    )
    assert_plain(exact, 400, '"users_email_key"')


def test_policy_conditions_come_back_in_jsonb_key_order(api: Api, admin_token: str) -> None:
    """``conditions JSONB`` (migrations/tenant/001_init_tenant.sql:41): shorter keys first."""
    body = (
        b'{"organization_id":1,"name":"p","resource":"r","action":"a","effect":"Allow",'
        b'"conditions":{"bbb":1,"a":{"zz":1,"y":2},"cc":3,"a":{"x":0}}}'
    )
    response = api.post(
        "/api/admin/policies",
        token=admin_token,
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert '"conditions":{"a":{"x":0},"cc":3,"bbb":1}' in response.text


def test_assigned_by_references_the_admin(api: Api, keyrunes: KeyrunesEmulator) -> None:
    """``user_groups.assigned_by REFERENCES users(user_id)`` with no ON DELETE action
    (migrations/20250908121827_create_groups_and_policies.sql:52): an admin who assigned
    memberships cannot be deleted, and a token whose user is gone cannot assign."""
    admin = keyrunes.create_user(groups=("superadmin", "users"))
    token = api.login_user(admin)
    created = api.post("/api/admin/user", token=token, json=user_payload(organization_id=1))
    assert created.status_code == 201
    root = api.login_user(keyrunes.create_user(groups=("superadmin",)))
    blocked = api.delete(f"/api/admin/users/{admin.user_id}", token=root)
    assert_plain(blocked, 500, 'constraint "user_groups_assigned_by_fkey" on table "user_groups"')
    ghost = keyrunes.issue_token(admin, sub="999", groups=["superadmin"])
    orphaned = api.post("/api/admin/user", token=ghost, json=user_payload(organization_id=1))
    assert_plain(orphaned, 400, 'violates foreign key constraint "user_groups_assigned_by_fkey"')
    # The INSERT happened before the membership failed (no transaction).
    listed = api.get("/api/admin/users", token=root).json()
    assert any(u["groups"] == [] for u in listed)


# -- item 10: which error wins ---------------------------------------------------------------


def test_register_unknown_namespace_wins_over_a_bad_email(api: Api) -> None:
    """``count_users`` (src/services/user_service.rs:235) runs before ``Email::try_from`` (:255)."""
    response = api.post("/api/register", json=register_payload(email="bad", namespace="nowhere"))
    assert_shape_a(response, 400, 'error returned from database: relation "users" does not exist')


def test_organization_name_taken_wins_over_a_bad_namespace(api: Api, admin_token: str) -> None:
    """``find_by_name`` (src/services/organization_service.rs:41) precedes the namespace
    rule (:49)."""
    body = {"name": "Default Organization", "namespace": "bad-ns"}
    response = api.post("/api/admin/organizations", token=admin_token, json=body)
    assert_plain(response, 400, "organization already exists")


def test_policy_name_taken_wins_over_an_empty_resource(api: Api, admin_token: str) -> None:
    """src/services/policy_service.rs:69 before :73."""
    body = {
        "organization_id": 1,
        "name": "full_access",
        "resource": "",
        "action": "",
        "effect": "Allow",
    }
    response = api.post("/api/admin/policies", token=admin_token, json=body)
    assert_plain(response, 400, "policy name already exists")


def test_first_field_in_document_order_wins(api: Api) -> None:
    """serde_json reads fields as they come; missing fields are reported at the end."""
    body = b'{"namespace":5,"identity":[]}'
    response = api.post("/api/login", data=body, headers={"Content-Type": "application/json"})
    assert_plain(
        response, 422, "namespace: invalid type: integer `5`, expected a string at line 1 column 14"
    )
    response = api.post("/api/login", data=b"{}", headers={"Content-Type": "application/json"})
    assert_plain(response, 422, "missing field `identity` at line 1 column 2")


# -- item 11: serde's position suffix ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        (
            b"",
            400,
            "Failed to parse the request body as JSON: "
            "EOF while parsing a value at line 1 column 0",
        ),
        (b'{"identity":"a",}', 400, "trailing comma at line 1 column 17"),
        (b'{"identity":"a"} x', 422, "missing field `password` at line 1 column 16"),
        (b'{"identity":tru}', 400, "identity: expected ident at line 1 column 16"),
        (
            b'{\n"identity":\n1}',
            422,
            "identity: invalid type: integer `1`, expected a string at line 3 column 1",
        ),
        (b'{"x":1}  ]', 422, "missing field `identity` at line 1 column 7"),
        (b'["a","b","public"] ,', 400, "trailing characters at line 1 column 20"),
    ],
)
def test_serde_error_texts(api: Api, body: bytes, status: int, text: str) -> None:
    """axum ``Json::from_bytes`` (axum 0.8.8 ``json.rs:192-201``) over serde_json's messages."""
    response = api.post("/api/login", data=body, headers={"Content-Type": "application/json"})
    assert_plain(response, status, text)


def test_struct_from_a_json_array(api: Api, keyrunes_user: EmulatedUser) -> None:
    """serde derive also reads a struct from a sequence, fields in declaration order
    (``LoginApi``, src/api/auth.rs:38-45)."""
    body = json.dumps([keyrunes_user.email, keyrunes_user.password, "public"]).encode()
    response = api.post("/api/login", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text


def test_effect_enum_errors(api: Api, admin_token: str) -> None:
    """``PolicyEffect`` is a plain enum (src/repository/mod.rs:68): a number is a syntax error
    (serde_json ``deserialize_enum``), ``{"Deny": null}`` is accepted."""
    base = {"organization_id": 1, "name": "p", "resource": "r", "action": "a"}
    response = api.post("/api/admin/policies", token=admin_token, json={**base, "effect": 1})
    assert_plain(response, 400, "Failed to parse the request body as JSON: effect: expected value")
    response = api.post(
        "/api/admin/policies", token=admin_token, json={**base, "effect": {"Deny": None}}
    )
    assert response.status_code == 201
    assert response.json()["effect"] == "Deny"


# -- item 12: X-Organization-Key forms ---------------------------------------------------------


def test_org_key_accepts_only_uuid_crate_forms(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    """``Uuid::parse_str`` (src/handler/auth.rs:154): simple, hyphenated, braced, urn."""
    key = keyrunes.organization_key(1)
    simple = key.replace("-", "")
    body = {"user_id": keyrunes_user.user_id, "resource": "r", "action": "a"}

    def check(value: str) -> requests.Response:
        return requests.post(
            f"{keyrunes.base_url}/api/check-permission",
            json=body,
            headers={"X-Organization-Key": value},
            timeout=5,
        )

    for good in (key, key.upper(), simple, "{" + key + "}", "urn:uuid:" + key):
        assert check(good).status_code == 200, good
    bad_forms = (
        "{" + simple + "}",
        "uuid:" + key,
        "URN:UUID:" + key,
        key[:8] + key[9:] + "-",
        simple[:31] + "_",
        key + "0",
    )
    for bad in bad_forms:
        assert_shape_a(check(bad), 401, "Invalid API Key format (must be UUID)")


# -- item 13: deleted organizations ------------------------------------------------------------


def test_deleted_organization_leaves_its_schema(api: Api, admin_token: str) -> None:
    """The row is deleted (src/repository/sqlx_impl.rs:1146), tenant rows cascade, the schema
    and its sequences stay; re-creating it runs ``CREATE SCHEMA IF NOT EXISTS`` (:1091)."""
    org = api.post(
        "/api/admin/organizations", token=admin_token, json={"name": "A", "namespace": "ns_a"}
    ).json()
    first = api.post(
        "/api/admin/user",
        token=admin_token,
        json=user_payload(organization_id=org["organization_id"]),
    ).json()
    assert first["user_id"] == 1
    assert (
        api.delete(
            f"/api/admin/organizations/{org['organization_id']}", token=admin_token
        ).status_code
        == 204
    )
    login = api.post(
        "/api/login", json={"identity": first["email"], "password": "x" * 8, "namespace": "ns_a"}
    )
    assert_shape_a(login, 401, "invalid credentials")
    again = api.post(
        "/api/admin/organizations", token=admin_token, json={"name": "A2", "namespace": "ns_a"}
    ).json()
    assert again["organization_id"] == org["organization_id"] + 1
    groups = api.get(
        f"/api/admin/groups?org_id={again['organization_id']}", token=admin_token
    ).json()
    assert [g["group_id"] for g in groups] == [3, 4]
    user = api.post(
        "/api/admin/user",
        token=admin_token,
        json=user_payload(organization_id=again["organization_id"]),
    ).json()
    assert user["user_id"] == 2


# -- item 14: response details -----------------------------------------------------------------


def test_no_content_type_on_204(api: Api, admin_token: str, keyrunes: KeyrunesEmulator) -> None:
    """``(StatusCode::NO_CONTENT, ())``: src/api/admin.rs:485, src/api/organization.rs:259."""
    victim = keyrunes.create_user()
    response = api.delete(f"/api/admin/users/{victim.user_id}", token=admin_token)
    assert response.status_code == 204
    assert "Content-Type" not in response.headers


def test_health_timestamps_are_chrono_rfc3339(api: Api) -> None:
    """``Utc::now().to_rfc3339()`` (src/api/health.rs:70, :96, :115): ``+00:00``, 0/3/6/9 digits."""
    pattern = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?\+00:00")
    for path in ("/api/health", "/api/health/ready", "/api/health/live"):
        assert pattern.fullmatch(api.get(path).json()["timestamp"])


def test_model_timestamps_use_the_shortest_fraction(keyrunes: KeyrunesEmulator) -> None:
    """chrono's serde uses ``SecondsFormat::AutoSi`` with ``Z`` on PostgreSQL's microseconds."""
    from datetime import datetime, timezone

    from keyrunes_django.testing.state import timestamp

    assert timestamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == "2026-01-02T03:04:05Z"
    assert timestamp(datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=timezone.utc)).endswith("05.120Z")
    assert timestamp(datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)).endswith(
        "05.123456Z"
    )


def test_jwt_header_member_order(api: Api, keyrunes_user: EmulatedUser) -> None:
    """josekit writes ``typ`` (set at src/services/jwt_service.rs:63) before ``alg``."""
    response = api.post(
        "/api/login",
        json={
            "identity": keyrunes_user.email,
            "password": keyrunes_user.password,
            "namespace": "public",
        },
    )
    header = response.json()["token"].split(".")[0]
    assert base64.urlsafe_b64decode(header + "==") == b'{"typ":"JWT","alg":"HS256"}'


def test_non_ascii_is_sent_unescaped(api: Api, admin_token: str) -> None:
    """serde_json writes UTF-8 as is."""
    api.post("/api/admin/groups", token=admin_token, json={"organization_id": 1, "name": "équipe"})
    assert "équipe" in api.get("/api/admin/groups", token=admin_token).text


# -- item 15: keep-alive -----------------------------------------------------------------------


def test_connections_are_kept_alive(keyrunes: KeyrunesEmulator) -> None:
    """hyper keeps HTTP/1.1 connections open; one socket serves many requests."""
    connection = http.client.HTTPConnection(keyrunes.host, keyrunes.port, timeout=5)
    ports = set()
    for path in ("/api/health/live", "/api/me", "/api/nowhere"):
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        assert response.getheader("Connection") is None
        ports.add(connection.sock.getsockname()[1])
    connection.request(
        "POST", "/api/login", body=b'{"x":1}', headers={"Content-Type": "application/json"}
    )
    assert connection.getresponse().status == 422
    assert len(ports) == 1


def test_chunked_request_bodies_keep_the_connection_usable(
    keyrunes: KeyrunesEmulator, keyrunes_user: EmulatedUser
) -> None:
    """hyper reads chunked request bodies; the next request on the connection still parses."""
    connection = http.client.HTTPConnection(keyrunes.host, keyrunes.port, timeout=5)
    body = json.dumps(
        {"identity": keyrunes_user.email, "password": keyrunes_user.password, "namespace": "public"}
    ).encode()
    connection.request(
        "POST",
        "/api/login",
        body=iter([body[:10], body[10:]]),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    assert response.status == 200
    assert "token" in json.loads(response.read())
    connection.request("GET", "/api/health/live")
    assert connection.getresponse().status == 200


def test_connection_close_is_honoured(keyrunes: KeyrunesEmulator) -> None:
    connection = http.client.HTTPConnection(keyrunes.host, keyrunes.port, timeout=5)
    connection.request("GET", "/api/health/live", headers={"Connection": "close"})
    response = connection.getresponse()
    assert response.status == 200
    response.read()
    assert response.will_close
