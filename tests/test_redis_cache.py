"""The verification cache on a real Redis server, shared by several "instances".

Runs when ``KEYRUNES_TEST_REDIS_URL`` is set (CI's PostgreSQL run; locally
``eval "$(bash scripts/services.sh start)"``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
from django.core.cache import caches

from keyrunes_django.cache import credential_hash, identity_to_dict
from keyrunes_django.conf import clock, settings_changed
from keyrunes_django.exceptions import InvalidToken
from keyrunes_django.identity import VerifiedIdentity
from keyrunes_django.tokens import (
    authenticate_organization_key,
    authenticate_token,
    authenticate_token_user,
    get_authenticator,
)
from tests.factories import make_token, service_account

pytestmark = [
    pytest.mark.redis,
    pytest.mark.django_db,  # revocation records fall back to the database
    pytest.mark.skipif(
        not os.environ.get("KEYRUNES_TEST_REDIS_URL"), reason="KEYRUNES_TEST_REDIS_URL not set"
    ),
]


@pytest.fixture
def kr(keyrunes: Any, settings: Any) -> Any:
    settings.KEYRUNES = {
        **settings.KEYRUNES,
        "VERIFICATION_MODE": "remote",
        "CACHE_ALIAS": "redis",
        "SERVICE_ACCOUNT": service_account(),
    }
    caches["redis"].clear()
    yield keyrunes
    caches["redis"].clear()


def _raw_redis() -> Any:
    import redis

    return redis.Redis.from_url(os.environ["KEYRUNES_TEST_REDIS_URL"])


def new_instance() -> None:
    """Another process: same Redis, empty per-process layer."""
    settings_changed()


def shared_key(kind: str, credential: str) -> str:
    return get_authenticator().cache.shared.key(kind, credential_hash(credential))


def test_second_instance_uses_redis(kr: Any, keyrunes_user: Any) -> None:
    token = kr.issue_token(keyrunes_user)
    first = authenticate_token(token)
    assert kr.requests_to("/api/me") == 1
    new_instance()
    second = authenticate_token(token)
    assert second == first
    assert kr.requests_to("/api/me") == 1

    stored = caches["redis"].get(shared_key("token", token))
    assert isinstance(stored, str)  # a sealed record: MAC "." JSON
    record = json.loads(stored.split(".", 1)[1])
    assert record["value"]["username"] == keyrunes_user.username
    redis_key = caches["redis"].make_key(shared_key("token", token))
    ttl = _raw_redis().ttl(redis_key)
    assert 0 < ttl <= 300 + 300  # CACHE_TTL + STALE_IF_ERROR


def test_raw_token_never_stored(kr: Any, keyrunes_user: Any) -> None:
    token = kr.issue_token(keyrunes_user)
    authenticate_token(token)
    key = kr.organization_key(1)
    authenticate_organization_key(key)
    client = _raw_redis()
    names = list(client.scan_iter("*"))
    credentials = [n for n in names if b":token:" in n or b":orgkey:" in n]
    assert len(credentials) == 2  # besides them: the user's (empty) revocation record
    for name in names:
        assert token.encode() not in name
        assert key.encode() not in name
        value = client.get(name)
        assert token.encode() not in value
        assert key.encode() not in value
    assert any(credential_hash(token).encode() in name for name in names)


def test_negative_answers_shared(kr: Any, keyrunes_user: Any) -> None:
    token = kr.issue_token(keyrunes_user)
    kr.delete_user(keyrunes_user)
    with pytest.raises(InvalidToken):
        authenticate_token(token)
    new_instance()
    with pytest.raises(InvalidToken) as info:
        authenticate_token(token)
    assert info.value.reason == "rejected"
    assert kr.requests_to("/api/me") == 1


def test_stale_answer_from_redis_during_outage(
    kr: Any, keyrunes_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = kr.issue_token(keyrunes_user)
    authenticate_token(token)
    start = time.time()
    new_instance()
    kr.faults.add(r"^/api/me$", status=503)
    monkeypatch.setattr(clock, "now", lambda: start + 310)
    identity = authenticate_token(token)
    assert identity.username == keyrunes_user.username
    # Served at once; the revalidation runs in the background and fails.
    get_authenticator().cache.wait_for_revalidations()
    assert kr.requests_to("/api/me") == 2


def test_org_key_shared(kr: Any) -> None:
    key = kr.organization_key(1)
    principal = authenticate_organization_key(key)
    new_instance()
    assert authenticate_organization_key(key) == principal
    assert kr.requests_to("/api/verify-org-key") == 1


def test_tenant_check_applies_after_shared_cache(
    kr: Any, keyrunes_user: Any, settings: Any
) -> None:
    token = kr.issue_token(keyrunes_user)
    authenticate_token(token)  # cached by a "public" service
    settings.KEYRUNES = {**settings.KEYRUNES, "NAMESPACE": "company_x"}
    with pytest.raises(InvalidToken) as info:
        authenticate_token(token)
    assert info.value.reason == "wrong_namespace"
    assert kr.requests_to("/api/me") == 1


# ------------------------------------------------ records written by someone else


def _superuser_record(user_id: int) -> dict[str, Any]:
    identity = VerifiedIdentity(
        user_id=user_id,
        username="admin",
        email="admin@example.com",
        namespace="public",
        organization_id=1,
        groups=("superadmin", "users"),
        source="remote",
    )
    now = time.time()
    return {
        "v": 2,
        "stored_at": now,
        "fresh_until": now + 300,
        "stale_until": now + 600,
        "value": identity_to_dict(identity),
    }


@pytest.mark.django_db
@pytest.mark.parametrize("form", ["plain_dict", "sealed_with_another_key", "raw_json_string"])
def test_forged_redis_record_is_ignored(
    kr: Any, keyrunes_superadmin: Any, form: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Someone who can write to Redis but lacks the signing key plants a
    # superadmin identity under the hash of a token they made up.
    from keyrunes_django.cache import SharedCache

    made_up = make_token(
        secret="attacker-secret-" * 2,
        sub=str(keyrunes_superadmin.user_id),
        username="admin",
        email="admin@example.com",
        groups=["superadmin", "users"],
    )
    key = shared_key("token", made_up)
    record = _superuser_record(keyrunes_superadmin.user_id)
    if form == "plain_dict":
        forged: Any = record
    elif form == "sealed_with_another_key":
        forged = SharedCache("redis", "x", b"guessed-key" * 3).seal(key, record)
    else:
        forged = "0" * 64 + "." + json.dumps(record)
    caches["redis"].set(key, forged, 600)  # planted where the service looks
    assert caches["redis"].get(key) == forged
    with pytest.raises(InvalidToken) as info:
        authenticate_token_user(made_up)
    assert info.value.reason == "rejected"
    assert kr.requests_to("/api/me") == 1  # Keyrunes was asked
    from django.contrib.auth import get_user_model

    assert not get_user_model().objects.filter(is_superuser=True).exists()


def test_valid_record_copied_under_another_token_is_ignored(kr: Any, keyrunes_user: Any) -> None:
    other = kr.create_user()
    token = kr.issue_token(keyrunes_user)
    victim_token = kr.issue_token(other)
    authenticate_token(token)
    client = _raw_redis()
    source = caches["redis"].make_key(shared_key("token", token))
    target = caches["redis"].make_key(shared_key("token", victim_token))
    client.set(target, client.get(source))
    new_instance()
    identity = authenticate_token(victim_token)
    assert identity.user_id == other.user_id
    assert kr.requests_to("/api/me") == 2


def test_services_with_other_namespaces_never_share_records(
    kr: Any, keyrunes_user: Any, settings: Any
) -> None:
    token = kr.issue_token(keyrunes_user)
    authenticate_token(token)
    public_names = set(_raw_redis().scan_iter("*"))
    settings.KEYRUNES = {**settings.KEYRUNES, "NAMESPACE": "company_b"}
    org = kr.create_organization("Company B", "company_b")
    b_user = kr.create_user(namespace="company_b", organization_id=org.organization_id)
    authenticate_token(kr.issue_token(b_user))
    b_names = {n for n in set(_raw_redis().scan_iter("*")) - public_names if b":token:" in n}
    assert len(b_names) == 1
    assert shared_key("token", token).encode() not in b"".join(b_names)
    assert {n.rsplit(b":", 1)[0] for n in b_names}.isdisjoint(
        {n.rsplit(b":", 1)[0] for n in public_names}
    )
