"""The in-process emulator's Python API: lifecycle, direct helpers, seeding, factories."""

from __future__ import annotations

import json
import string
import time
from datetime import datetime, timezone
from pathlib import Path

import jwt
import pytest
import requests

from keyrunes_django.testing import (
    EmulatorError,
    KeyrunesEmulator,
    build_state,
    group_payload,
    login_payload,
    organization_payload,
    policy_payload,
    register_payload,
    strong_password,
    unique_email,
    unique_namespace,
    unique_username,
    user_payload,
)
from keyrunes_django.testing.app import DEFAULT_JWT_SECRET, KeyrunesApp
from keyrunes_django.testing.state import State, hash_password, verify_password


def test_context_manager_lifecycle() -> None:
    emulator = KeyrunesEmulator(jwt_secret="j" * 32)
    assert not emulator.running
    with pytest.raises(RuntimeError, match="not running"):
        _ = emulator.base_url
    with emulator as kr:
        assert kr.start() is kr  # idempotent
        assert kr.running
        url = kr.base_url
        assert requests.get(f"{url}/api/health/live", timeout=2).status_code == 200
    assert not emulator.running
    emulator.stop()  # idempotent
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{url}/api/health/live", timeout=1)


def test_defaults() -> None:
    emulator = KeyrunesEmulator()
    assert emulator.jwt_secret == DEFAULT_JWT_SECRET
    assert emulator.server_quirks is False
    assert KeyrunesEmulator(server_quirks=True).server_quirks is True


def test_ipv6_base_url_formatting() -> None:
    emulator = KeyrunesEmulator(host="::1")
    emulator._server = object()  # type: ignore[assignment]
    emulator.port = 1234
    assert emulator.base_url == "http://[::1]:1234"


def test_reset_restores_seed_quirks_faults_counters(keyrunes: KeyrunesEmulator) -> None:
    keyrunes.create_user(username="temp")
    keyrunes.server_quirks = True
    keyrunes.faults.fail_next(3)
    requests.get(f"{keyrunes.base_url}/api/health", timeout=2)
    keyrunes.reset()
    assert keyrunes.state.namespace("public").user_by_username("temp") is None
    assert keyrunes.state.namespace("public").user_by_username("admin") is not None
    assert keyrunes.server_quirks is False
    assert keyrunes.faults.active == []
    assert keyrunes.request_log == []


def test_seeded_state_matches_migrations() -> None:
    state = State.seeded()
    org = state.organizations[1]
    assert (org.name, org.namespace) == ("Default Organization", "public")
    ns = state.namespace("public")
    assert [(g.group_id, g.name) for g in ns.groups.values()] == [(1, "superadmin"), (2, "users")]
    assert [p.name for p in ns.policies.values()] == [
        "full_access",
        "read_only",
        "user_self_manage",
    ]
    assert ns.group_policies == {(1, 1), (2, 2), (2, 3)}
    assert ns.users == {}


def test_create_user_helper(keyrunes: KeyrunesEmulator) -> None:
    user = keyrunes.create_user(
        "bob", "bob@example.com", "Bob-Pass-1", groups=("users", "superadmin")
    )
    assert (user.username, user.email, user.password) == ("bob", "bob@example.com", "Bob-Pass-1")
    assert user.groups == ("users", "superadmin")
    assert user.organization_id == 1
    assert user.namespace == "public"
    fetched = keyrunes.get_user(user.user_id)
    assert fetched is not None
    assert fetched.password is None
    assert fetched.external_id == user.external_id
    assert keyrunes.get_user(999) is None
    with pytest.raises(EmulatorError, match="invalid group specified"):
        keyrunes.create_user(groups=("nope",))
    with pytest.raises(EmulatorError, match="username taken"):
        keyrunes.create_user("bob")
    with pytest.raises(EmulatorError, match='relation "users" does not exist'):
        keyrunes.create_user(namespace="missing")


def test_user_ids_collide_across_namespaces(keyrunes: KeyrunesEmulator) -> None:
    keyrunes.create_organization("Acme", "acme")
    keyrunes.create_organization("Beta", "beta")
    a = keyrunes.create_user(namespace="acme")
    b = keyrunes.create_user(namespace="beta")
    assert a.user_id == b.user_id == 1
    assert a.organization_id != b.organization_id
    assert a.groups == ("users",)


def test_group_policy_helpers(keyrunes: KeyrunesEmulator) -> None:
    user = keyrunes.create_user()
    group = keyrunes.create_group("editors", description="Edit things")
    assert (group.group_id, group.namespace, group.organization_id) == (3, "public", 1)
    policy = keyrunes.create_policy("edit_docs", "docs:*", "write")
    assert (policy.policy_id, policy.effect) == (4, "Allow")
    keyrunes.attach_policy("edit_docs", group="editors")
    assert keyrunes.is_allowed(user, "docs:1", "write") is False
    keyrunes.add_to_group(user, "editors")
    assert keyrunes.user_groups(user) == ("users", "editors")
    assert keyrunes.is_allowed(user, "docs:1", "write") is True
    keyrunes.create_policy("no_secret", "docs:secret", "*", "Deny")
    keyrunes.attach_policy("no_secret", user=user.user_id)
    assert keyrunes.is_allowed(user, "docs:secret", "write") is False
    keyrunes.remove_from_group(user, "editors")
    assert keyrunes.is_allowed(user, "docs:1", "write") is False
    with pytest.raises(EmulatorError, match="group not found"):
        keyrunes.add_to_group(user, "ghosts")
    with pytest.raises(EmulatorError, match="policy not found"):
        keyrunes.attach_policy("ghost", group="editors")
    with pytest.raises(EmulatorError, match="group not found"):
        keyrunes.attach_policy("edit_docs", group="ghosts")
    with pytest.raises(EmulatorError, match="exactly one"):
        keyrunes.attach_policy("edit_docs")
    with pytest.raises(EmulatorError, match="User not found"):
        keyrunes.attach_policy("edit_docs", user=999)
    with pytest.raises(EmulatorError, match="unknown variant"):
        keyrunes.create_policy("bad", "x", "y", "ALLOW")
    keyrunes.delete_user(user)
    assert keyrunes.get_user(user.user_id) is None


def test_policy_matching_rules(keyrunes: KeyrunesEmulator) -> None:
    user = keyrunes.create_user(groups=())
    keyrunes.create_policy("prefix", "docs:*", "read")
    keyrunes.create_policy("exact", "reports", "*")
    keyrunes.attach_policy("prefix", user=user)
    keyrunes.attach_policy("exact", user=user)
    assert keyrunes.is_allowed(user, "docs:", "read")
    assert keyrunes.is_allowed(user, "docs:a:b", "read")
    assert not keyrunes.is_allowed(user, "doc", "read")
    assert not keyrunes.is_allowed(user, "Docs:1", "read")  # case-sensitive
    assert not keyrunes.is_allowed(user, "docs:1", "Read")
    assert keyrunes.is_allowed(user, "reports", "anything")
    assert not keyrunes.is_allowed(user, "reports2", "read")


def test_organization_helpers(keyrunes: KeyrunesEmulator) -> None:
    org = keyrunes.create_organization("Acme", "acme", description="ACME", base_url="https://a.io")
    assert org.organization_id == 2
    assert keyrunes.organization_key(org.organization_id) == org.secret_key
    assert keyrunes.get_organization(org.organization_id) == org
    assert keyrunes.get_organization(99) is None
    new_key = keyrunes.rotate_organization_key(org.organization_id)
    assert new_key != org.secret_key
    assert keyrunes.organization_key(org.organization_id) == new_key
    with pytest.raises(EmulatorError, match="Organization 99 not found"):
        keyrunes.organization_key(99)
    with pytest.raises(EmulatorError, match="organization already exists"):
        keyrunes.create_organization("Acme", "acme2")
    assert keyrunes.state.delete_organization(org.organization_id) is True
    assert keyrunes.state.delete_organization(org.organization_id) is False
    # The schema outlives its organization: src/repository/sqlx_impl.rs:1144-1153
    # (at commit 8421401) deletes the row only.
    assert not keyrunes.state.namespaces["acme"].users


def test_delete_default_organization_purges_public_rows(keyrunes: KeyrunesEmulator) -> None:
    assert keyrunes.state.delete_organization(1)
    ns = keyrunes.state.namespaces["public"]
    assert (ns.users, ns.groups, ns.policies) == ({}, {}, {})


def test_issue_token(keyrunes: KeyrunesEmulator) -> None:
    user = keyrunes.create_user()
    token = keyrunes.issue_token(user)
    claims = jwt.decode(token, keyrunes.jwt_secret, algorithms=["HS256"])
    assert claims["sub"] == str(user.user_id)
    assert claims["groups"] == ["users"]
    assert claims["iss"] == "keyrunes"
    assert claims["exp"] - claims["iat"] == 3600
    keyrunes.create_group("extra")
    keyrunes.add_to_group(user, "extra")
    assert jwt.decode(keyrunes.issue_token(user), keyrunes.jwt_secret, algorithms=["HS256"])[
        "groups"
    ] == ["users", "extra"]
    when = datetime(2030, 1, 1, tzinfo=timezone.utc)
    dated = jwt.decode(
        keyrunes.issue_token(user, issued_at=when, lifetime=60, groups=["x"], extra="y"),
        keyrunes.jwt_secret,
        algorithms=["HS256"],
        options={"verify_iat": False},
    )
    assert dated["iat"] == int(when.timestamp())
    assert dated["exp"] == dated["iat"] + 60
    assert dated["groups"] == ["x"]
    assert dated["extra"] == "y"
    no_exp = jwt.decode(keyrunes.issue_token(user, exp=None), options={"verify_signature": False})
    assert "exp" not in no_exp
    keyrunes.delete_user(user)
    # A deleted user keeps the groups recorded on the EmulatedUser.
    assert jwt.decode(keyrunes.issue_token(user), keyrunes.jwt_secret, algorithms=["HS256"])[
        "groups"
    ] == ["users"]


def test_expired_token(keyrunes: KeyrunesEmulator) -> None:
    user = keyrunes.create_user()
    claims = jwt.decode(keyrunes.expired_token(user), options={"verify_signature": False})
    assert claims["exp"] < time.time()
    numeric = jwt.decode(
        keyrunes.issue_token(user, issued_at=1000.7), options={"verify_signature": False}
    )
    assert numeric["iat"] == 1000


def test_build_state_with_superadmin_and_seed(tmp_path: Path) -> None:
    state = build_state(
        ("root@example.com", "Root-Pass-1"),
        {
            "organizations": [
                {
                    "name": "Acme",
                    "namespace": "acme",
                    "secret_key": "0b0e9cf4-5f5e-4e53-8d4b-7d4d3a9e0c11",
                }
            ],
        },
    )
    ns = state.namespace("public")
    root = ns.user_by_username("root")
    assert root is not None
    assert ns.group_names(root.user_id) == ["superadmin", "users"]
    assert state.organizations[2].secret_key == "0b0e9cf4-5f5e-4e53-8d4b-7d4d3a9e0c11"
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(
        json.dumps({"users": [{"email": "z@example.com", "password": "Zed-Pass-1"}]})
    )
    with KeyrunesEmulator(seed=str(seed_file)) as kr:
        response = requests.post(
            f"{kr.base_url}/api/login",
            json={"identity": "z", "password": "Zed-Pass-1", "namespace": "public"},
            timeout=5,
        )
        assert response.status_code == 200


def test_seed_errors() -> None:
    with pytest.raises(EmulatorError, match="unknown user or group"):
        build_state(None, {"memberships": [{"user": "nobody", "group": "users"}]})


def test_app_is_a_plain_wsgi_callable() -> None:
    from werkzeug.test import Client

    app = KeyrunesApp(State.seeded(), jwt_secret="w" * 32)
    client = Client(app)
    response = client.get("/api/health/live")
    assert response.status_code == 200
    app.faults.add("/api/health", drop=True, times=1)
    with pytest.raises(ConnectionAbortedError):
        client.get("/api/health")


def test_password_hashing() -> None:
    encoded = hash_password("secret-pass")
    assert "secret-pass" not in encoded
    assert verify_password("secret-pass", encoded)
    assert not verify_password("other-pass", encoded)
    assert not verify_password("secret-pass", "garbage")
    assert hash_password("secret-pass") != encoded  # salted


def test_factories_are_unique_and_valid() -> None:
    names = {unique_username() for _ in range(50)}
    assert len(names) == 50
    assert all(len(n) <= 50 for n in names)
    assert unique_email("x", "corp.io") == "x@corp.io"
    assert unique_namespace().replace("_", "").isalnum()
    password = strong_password()
    assert len(password) == 16
    for pool in (string.ascii_lowercase, string.ascii_uppercase, string.digits):
        assert any(ch in pool for ch in password)
    assert len(strong_password(6)) == 6
    with pytest.raises(ValueError, match="at least 4"):
        strong_password(3)
    payload = user_payload(username="fixed", first_login=True)
    assert payload["username"] == "fixed"
    assert payload["first_login"] is True
    assert register_payload("acme")["namespace"] == "acme"
    assert login_payload("a", "b") == {"identity": "a", "password": "b", "namespace": "public"}
    assert organization_payload(name="X")["name"] == "X"
    assert group_payload(2)["organization_id"] == 2
    assert policy_payload(effect="Deny")["effect"] == "Deny"


def test_full_seed_in_process() -> None:
    from tests.testing.test_server import SEED

    state = build_state(None, SEED)
    public = state.namespace("public")
    alice = public.user_by_username("alice")
    assert alice is not None
    assert public.group_names(alice.user_id) == ["users", "developers"]
    assert public.is_allowed(alice.user_id, "docs:1", "read")
    acme = state.namespace("acme")
    carol = acme.user_by_username("carol")
    assert carol is not None
    assert carol.organization_id == 2
    with pytest.raises(EmulatorError, match="names unknown user"):
        build_state(
            None, {"policies": [{"name": "p", "resource": "r", "action": "a", "users": ["ghost"]}]}
        )


def test_seed_file_must_hold_an_object(tmp_path: Path) -> None:
    seed_file = tmp_path / "seed.json"
    seed_file.write_text("[1]")
    with pytest.raises(ValueError, match="JSON object"):
        KeyrunesEmulator(seed=seed_file)
