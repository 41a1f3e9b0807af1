"""Fault injection, request counters and thread safety."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from keyrunes_django.testing import KeyrunesEmulator, register_payload
from keyrunes_django.testing.faults import FaultInjector, RequestLog
from tests.testing.conftest import Api, assert_shape_a


def test_fail_next(api: Api, keyrunes: KeyrunesEmulator) -> None:
    keyrunes.faults.fail_next(2, status=503)
    assert_shape_a(api.get("/api/health"), 503, "Injected fault")
    assert api.get("/api/health/live").status_code == 503
    assert api.get("/api/health").status_code == 200


def test_fault_by_path_and_method(api: Api, keyrunes: KeyrunesEmulator, user_token: str) -> None:
    fault = keyrunes.faults.add(r"^/api/me$", status=500, times=1, method="GET")
    assert api.get("/api/health").status_code == 200
    assert api.get("/api/me", token=user_token).status_code == 500
    assert api.get("/api/me", token=user_token).status_code == 200
    assert fault.hits == 1
    keyrunes.faults.add("/api/login", status=429, method="POST")
    assert api.get("/api/login").status_code == 405  # other method: no fault
    for _ in range(3):  # no times limit: until cleared
        assert api.post("/api/login", json={}).status_code == 429
    keyrunes.faults.clear()
    assert api.post("/api/login", json={}).status_code == 422


def test_fault_delay(api: Api, keyrunes: KeyrunesEmulator) -> None:
    keyrunes.faults.add("/api/health/live", delay=0.3, times=1)
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.get("/api/health/live", timeout=0.05)
    started = time.monotonic()
    keyrunes.faults.add("/api/health/ready", delay=0.1, times=1)
    response = api.get("/api/health/ready")
    assert response.status_code == 200  # a delay alone lets the request through
    assert time.monotonic() - started >= 0.1


def test_fault_delay_then_status(api: Api, keyrunes: KeyrunesEmulator) -> None:
    keyrunes.faults.add("/api/health", delay=0.05, status=502, times=1)
    assert api.get("/api/health").status_code == 502


def test_fault_drop(api: Api, keyrunes: KeyrunesEmulator) -> None:
    keyrunes.faults.add(re.compile(r"/api/health$"), drop=True, times=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{keyrunes.base_url}/api/health", timeout=2)
    assert requests.get(f"{keyrunes.base_url}/api/health", timeout=2).status_code == 200


def test_fault_malformed(api: Api, keyrunes: KeyrunesEmulator) -> None:
    keyrunes.faults.add("/api/login", malformed=True, times=1)
    response = api.post("/api/login", json={})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError, match=r"Unterminated|Expecting"):
        response.json()


def test_fault_needs_an_effect() -> None:
    with pytest.raises(ValueError, match="needs a status"):
        FaultInjector().add("/x")


def test_active_faults() -> None:
    injector = FaultInjector()
    fault = injector.fail_next(1)
    assert injector.active == [fault]
    assert injector.take("GET", "/anything") is fault
    assert injector.active == []
    assert injector.take("GET", "/anything") is None


def test_request_counters(api: Api, keyrunes: KeyrunesEmulator, user_token: str) -> None:
    for _ in range(3):
        api.get("/api/me", token=user_token)
    api.patch("/api/admin/users/7", json={})
    api.get("/api/unknown")
    assert keyrunes.requests_to("/api/me") == 3
    assert keyrunes.requests_to("/api/me", method="POST") == 0
    assert keyrunes.requests_to(r"/api/admin/users/\d+", method="patch") == 1
    assert keyrunes.requests_to(re.compile(r"/api/.*")) == 6  # the login fixture too
    log = keyrunes.request_log
    assert [r.path for r in log[-2:]] == ["/api/admin/users/7", "/api/unknown"]
    assert log[-2].route == "/api/admin/users/<user_id>"
    assert log[-1].route is None
    counts = keyrunes.request_counts()
    assert counts["GET /api/me"] == 3
    assert counts["PATCH /api/admin/users/<user_id>"] == 1
    assert counts["GET /api/unknown"] == 1
    keyrunes.reset_counters()
    assert keyrunes.requests_to("/api/me") == 0


def test_faulted_requests_are_counted(api: Api, keyrunes: KeyrunesEmulator) -> None:
    keyrunes.faults.fail_next(1)
    api.get("/api/health")
    assert keyrunes.requests_to("/api/health") == 1


def test_request_log_by_route_and_odd_patterns() -> None:
    log = RequestLog()
    log.record("GET", "/api/admin/users/1", "/api/admin/users/<user_id>")
    log.record("GET", "/api/admin/users/2", "/api/admin/users/<user_id>")
    log.record("GET", "/a(b", None)
    assert log.by_route() == {"GET /api/admin/users/<user_id>": 2, "GET /a(b": 1}
    assert log.count("/a(b") == 1  # not a valid regex: compared literally


def test_concurrent_registrations_get_distinct_ids(api: Api) -> None:
    payloads = [register_payload() for _ in range(24)]

    def register(payload: dict[str, str]) -> int:
        response = requests.post(f"{api.base_url}/api/register", json=payload, timeout=10)
        assert response.status_code == 201, response.text
        user_id: int = response.json()["user"]["user_id"]
        return user_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(register, payloads))
    assert len(set(ids)) == len(ids)


def test_concurrent_duplicate_registrations_create_one_user(api: Api) -> None:
    payload = register_payload()

    def register(_: int) -> int:
        return requests.post(f"{api.base_url}/api/register", json=payload, timeout=10).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = sorted(pool.map(register, range(6)))
    assert statuses == [201, 400, 400, 400, 400, 400]
