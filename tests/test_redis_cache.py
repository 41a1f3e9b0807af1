"""The verification cache on a real Redis server, shared by several "instances".

Runs when ``KEYRUNES_TEST_REDIS_URL`` is set (CI's PostgreSQL run; locally
``eval "$(bash scripts/services.sh start)"``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from django.core.cache import caches

from keyrunes_django import cache, tokens
from keyrunes_django.exceptions import InvalidToken

pytestmark = [
    pytest.mark.redis,
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
    }
    caches["redis"].clear()
    yield keyrunes
    caches["redis"].clear()


def _raw_redis() -> Any:
    import redis

    return redis.Redis.from_url(os.environ["KEYRUNES_TEST_REDIS_URL"])


def new_instance() -> None:
    """Another process: same Redis, empty per-process layer."""
    cache.clear_caches()


def test_second_instance_uses_redis(kr: Any, keyrunes_user: Any) -> None:
    token = kr.issue_token(keyrunes_user)
    first = tokens.authenticate_token(token)
    assert kr.requests_to("/api/me") == 1
    new_instance()
    second = tokens.authenticate_token(token)
    assert second == first
    assert kr.requests_to("/api/me") == 1

    state = cache.get_state()
    record = caches["redis"].get(state.shared.key("token", cache.credential_hash(token)))
    assert isinstance(record, dict)
    assert record["value"]["username"] == keyrunes_user.username
    redis_key = caches["redis"].make_key(state.shared.key("token", cache.credential_hash(token)))
    ttl = _raw_redis().ttl(redis_key)
    assert 0 < ttl <= 300 + 300  # CACHE_TTL + STALE_IF_ERROR


def test_raw_token_never_stored(kr: Any, keyrunes_user: Any) -> None:
    token = kr.issue_token(keyrunes_user)
    tokens.authenticate_token(token)
    key = kr.organization_key(1)
    tokens.authenticate_organization_key(key)
    client = _raw_redis()
    names = list(client.scan_iter("*"))
    assert len(names) == 2
    for name in names:
        assert token.encode() not in name
        assert key.encode() not in name
        value = client.get(name)
        assert token.encode() not in value
        assert key.encode() not in value
    assert any(cache.credential_hash(token).encode() in name for name in names)


def test_negative_answers_shared(kr: Any, keyrunes_user: Any) -> None:
    token = kr.issue_token(keyrunes_user)
    kr.delete_user(keyrunes_user)
    with pytest.raises(InvalidToken):
        tokens.authenticate_token(token)
    new_instance()
    with pytest.raises(InvalidToken) as info:
        tokens.authenticate_token(token)
    assert info.value.reason == "rejected"
    assert kr.requests_to("/api/me") == 1


def test_stale_answer_from_redis_during_outage(
    kr: Any, keyrunes_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = kr.issue_token(keyrunes_user)
    tokens.authenticate_token(token)
    start = time.time()
    new_instance()
    kr.faults.add(r"^/api/me$", status=503)
    monkeypatch.setattr(cache, "now", lambda: start + 310)
    identity = tokens.authenticate_token(token)
    assert identity.username == keyrunes_user.username
    assert kr.requests_to("/api/me") == 2


def test_org_key_shared(kr: Any) -> None:
    key = kr.organization_key(1)
    principal = tokens.authenticate_organization_key(key)
    new_instance()
    assert tokens.authenticate_organization_key(key) == principal
    assert kr.requests_to("/api/verify-org-key") == 1


def test_tenant_check_applies_after_shared_cache(
    kr: Any, keyrunes_user: Any, settings: Any
) -> None:
    token = kr.issue_token(keyrunes_user)
    tokens.authenticate_token(token)  # cached by a "public" service
    settings.KEYRUNES = {**settings.KEYRUNES, "NAMESPACE": "company_x"}
    with pytest.raises(InvalidToken) as info:
        tokens.authenticate_token(token)
    assert info.value.reason == "wrong_namespace"
    assert kr.requests_to("/api/me") == 1
