"""Readiness and liveness views for container probes.

``readiness_view`` answers 200 when Keyrunes answers its health route and the
verification cache (``CACHE_ALIAS``) completes a set/get round-trip, and 503
otherwise; ``liveness_view`` answers 200 without any I/O. Bodies are JSON,
never cached, and name no URL, credential or error message, only short
status codes::

    {"status": "ok",
     "checks": {"keyrunes": {"ok": true, "status": "healthy", "duration_ms": 4},
                "cache": {"ok": true, "status": "ok", "duration_ms": 0},
                "breaker": {"state": "closed"}}}

The Keyrunes probe uses its own client with ``HEALTH_TIMEOUT`` as connect and
read timeout and no retries, and the view stops waiting for it after
``HEALTH_TIMEOUT`` seconds in any case, so a probe answers in bounded time.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

from django.core.cache import caches
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe

from keyrunes_django.conf import keyrunes_settings
from keyrunes_django.exceptions import KeyrunesError

__all__ = [
    "breaker_state",
    "check_cache",
    "check_keyrunes",
    "liveness_view",
    "readiness",
    "readiness_view",
]

logger = logging.getLogger("keyrunes_django.health")

Check = dict[str, Any]


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _probe_keyrunes(timeout: float) -> str:
    """``healthy``/``unhealthy`` as Keyrunes reports itself, or why it could not say."""
    from keyrunes_django.client import KeyrunesClient

    client = KeyrunesClient(
        str(keyrunes_settings.BASE_URL),
        timeout=timeout,
        retries=0,
        verify_ssl=keyrunes_settings.VERIFY_SSL,
    )
    try:
        return "healthy" if client.health().healthy else "unhealthy"
    except KeyrunesError as exc:
        logger.warning("readiness: Keyrunes health check failed: %s", type(exc).__name__)
        return "unhealthy" if exc.status_code == 503 else "unreachable"
    finally:
        client.close()


def check_keyrunes() -> Check:
    """Whether Keyrunes answers ``GET /api/health`` as healthy within ``HEALTH_TIMEOUT``."""
    started = time.monotonic()
    if not keyrunes_settings.BASE_URL:
        return {"ok": False, "status": "not_configured", "duration_ms": 0}
    timeout = float(keyrunes_settings.HEALTH_TIMEOUT)
    result: list[str] = []

    def run() -> None:
        try:
            result.append(_probe_keyrunes(timeout))
        except Exception as exc:  # a probe must answer, whatever breaks
            logger.exception("readiness: Keyrunes probe crashed: %s", type(exc).__name__)
            result.append("error")

    # A server that trickles its answer can outlast socket timeouts; the
    # thread is a daemon so an abandoned probe never holds the process.
    worker = threading.Thread(target=run, name="keyrunes-health-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    status = result[0] if result else "timeout"
    return {"ok": status == "healthy", "status": status, "duration_ms": _elapsed_ms(started)}


def check_cache() -> Check:
    """Whether ``CACHE_ALIAS`` stores and returns a fresh random value."""
    started = time.monotonic()
    key = "keyrunes:health:" + secrets.token_hex(8)
    value = secrets.token_hex(8)
    try:
        cache = caches[keyrunes_settings.CACHE_ALIAS]
        cache.set(key, value, 10)
        ok = cache.get(key) == value
        cache.delete(key)
    except Exception as exc:  # any cache backend error means "not ready"
        logger.warning("readiness: cache round-trip failed: %s", type(exc).__name__)
        return {"ok": False, "status": "error", "duration_ms": _elapsed_ms(started)}
    return {
        "ok": ok,
        "status": "ok" if ok else "mismatch",
        "duration_ms": _elapsed_ms(started),
    }


def breaker_state() -> str:
    """The circuit breaker's state (``closed``/``open``/``half_open``)."""
    from keyrunes_django.breaker import get_breaker

    try:
        return str(get_breaker().state)
    except Exception as exc:  # reporting must not break the probe
        logger.warning("readiness: breaker state unavailable: %s", type(exc).__name__)
        return "unknown"


def readiness() -> tuple[bool, dict[str, Any]]:
    """(ready, report): ready when Keyrunes is healthy and the cache works.

    The breaker's state is reported but does not decide readiness: an open
    breaker means Keyrunes failed recently, which the Keyrunes check sees too.
    """
    checks: dict[str, Any] = {"keyrunes": check_keyrunes(), "cache": check_cache()}
    ready = all(check["ok"] for check in checks.values())
    checks["breaker"] = {"state": breaker_state()}
    return ready, {"status": "ok" if ready else "unavailable", "checks": checks}


def _json(payload: dict[str, Any], status: int) -> JsonResponse:
    response = JsonResponse(payload, status=status)
    response["Cache-Control"] = "no-store"
    return response


@require_safe
def readiness_view(request: HttpRequest) -> JsonResponse:
    """200 when ready, 503 otherwise; the body says which check failed."""
    ready, report = readiness()
    return _json(report, 200 if ready else 503)


@require_safe
def liveness_view(request: HttpRequest) -> JsonResponse:
    """200 as long as the process serves requests (no I/O)."""
    return _json({"status": "ok"}, 200)
