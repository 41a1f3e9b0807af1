"""The counters' signals, sent from the request path and the client (what the metrics count)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.test import RequestFactory

from keyrunes_django import signals, tokens
from keyrunes_django.client import operation_name

pytestmark = pytest.mark.django_db


@pytest.fixture
def seen() -> Iterator[dict[str, list[dict[str, Any]]]]:
    record: dict[str, list[dict[str, Any]]] = {}
    connected = []
    for name in ("credential_verified", "cache_hit", "cache_miss", "remote_call"):
        signal = getattr(signals, name)

        def receiver(_name: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal", None)
            kwargs.pop("sender", None)
            record.setdefault(_name, []).append(kwargs)

        signal.connect(receiver, weak=False, dispatch_uid=f"test-{name}")
        connected.append(signal)
    caches["default"].clear()
    yield record
    for name, signal in zip(
        ("credential_verified", "cache_hit", "cache_miss", "remote_call"), connected, strict=True
    ):
        signal.disconnect(dispatch_uid=f"test-{name}")
    caches["default"].clear()


def test_cold_remote_then_warm(keyrunes: Any, keyrunes_user: Any, settings: Any, seen: Any) -> None:
    settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": "remote"}
    token = keyrunes.issue_token(keyrunes_user)
    request = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {token}")
    auth = tokens.get_authenticator()
    assert auth.authenticate(request) is not None
    warm_before = tokens.warm_answers()
    assert auth.authenticate(request) is not None  # warm: counted, not signalled
    assert tokens.warm_answers() == warm_before + 1
    assert [e["source"] for e in seen["credential_verified"]] == ["remote"]
    assert seen["cache_miss"] == [{"kind": "token"}]
    me_calls = [c for c in seen["remote_call"] if c["operation"] == "me"]
    assert len(me_calls) == 1
    assert me_calls[0]["outcome"] == "ok"
    assert me_calls[0]["status_code"] == 200


def test_shared_cache_hit_and_organization_keys(keyrunes: Any, settings: Any, seen: Any) -> None:
    settings.KEYRUNES = {**settings.KEYRUNES, "ORGANIZATION_SCOPE": 1}
    key = keyrunes.organization_key(1)
    assert tokens.authenticate_organization_key(key).organization_id == 1
    tokens.reset_authenticator()  # another process, same shared cache
    assert tokens.authenticate_organization_key(key).organization_id == 1
    kinds = {(e["kind"], e["source"]) for e in seen["credential_verified"]}
    assert kinds == {("organization_key", "remote"), ("organization_key", "shared_cache")}
    assert {"kind": "organization_key", "layer": "shared"} in seen["cache_hit"]


def test_refused_and_failed_calls_are_labelled(keyrunes: Any, seen: Any) -> None:
    from keyrunes_django.client import get_client
    from keyrunes_django.exceptions import AuthenticationFailed

    with pytest.raises(AuthenticationFailed):
        get_client().me("not-a-token")
    assert seen["remote_call"][-1]["outcome"] == "refused"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/me", "me"),
        ("/api/verify-org-key", "verify-org-key"),
        ("/api/admin/users/7", "admin/users/{id}"),
        ("/api/admin/users/7/groups/12?org_id=3", "admin/users/{id}/groups/{id}"),
        ("/api/admin/organizations/5/rotate-key", "admin/organizations/{id}/rotate-key"),
        ("/", "root"),
    ],
)
def test_operation_names_are_bounded(path: str, name: str) -> None:
    assert operation_name(path) == name


def test_warm_answers_reach_prometheus(keyrunes: Any, keyrunes_user: Any) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from keyrunes_django.metrics import WarmAnswersCollector

    registry = CollectorRegistry()
    registry.register(WarmAnswersCollector())
    token = keyrunes.issue_token(keyrunes_user)
    request = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {token}")
    auth = tokens.get_authenticator()
    auth.authenticate(request)
    auth.authenticate(request)
    text = generate_latest(registry).decode()
    assert f"keyrunes_warm_answers_total {float(tokens.warm_answers())}" in text
