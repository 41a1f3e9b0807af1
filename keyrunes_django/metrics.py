"""Prometheus counters for keyrunes-django, fed by its signals.

When ``prometheus_client`` is installed, :func:`connect_metrics` (called from
the app's ``ready()``) registers these metrics in its default registry and
connects one receiver per signal:

=======================================  ================================  =========================
metric                                   labels                            signal
=======================================  ================================  =========================
``keyrunes_verifications_total``         ``kind``, ``source``              ``credential_verified``
``keyrunes_cache_hits_total``            ``kind``, ``layer``               ``cache_hit``
``keyrunes_cache_misses_total``          ``kind``                          ``cache_miss``
``keyrunes_remote_calls_total``          ``operation``, ``outcome``        ``remote_call``
``keyrunes_remote_call_seconds``         ``operation``                     ``remote_call``
``keyrunes_outages_total``               ``operation``, ``served_stale``   ``auth_service_error``
``keyrunes_refusals_total``              ``reason``                        ``credential_rejected``
``keyrunes_warm_answers_total``          (none)                            (read when scraped)
=======================================  ================================  =========================

Any exporter of the default registry serves them (django-prometheus'
``/metrics``, or :func:`metrics_view`). Label values are short codes; any
other value becomes ``"other"`` so that no input can grow the label space.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from keyrunes_django import signals

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["connect_metrics", "label", "metrics_view", "prometheus_available"]

_LABEL = re.compile(r"[a-z0-9_]{1,48}")
_lock = threading.Lock()


def prometheus_available() -> bool:
    """Whether ``prometheus_client`` can be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def label(value: Any) -> str:
    """A label value: a short lower-case code as is, anything else ``"other"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and _LABEL.fullmatch(value):
        return value
    return "other"


@dataclass(frozen=True)
class _Metrics:
    verifications: Counter
    cache_hits: Counter
    cache_misses: Counter
    remote_calls: Counter
    remote_seconds: Histogram
    outages: Counter
    refusals: Counter


_metrics: _Metrics | None = None


def _build(registry: CollectorRegistry | None) -> _Metrics:
    from prometheus_client import REGISTRY, Counter, Histogram

    reg = registry if registry is not None else REGISTRY
    reg.register(WarmAnswersCollector())
    return _Metrics(
        verifications=Counter(
            "keyrunes_verifications",
            "Credentials accepted, by kind and where the answer came from.",
            ["kind", "source"],
            registry=reg,
        ),
        cache_hits=Counter(
            "keyrunes_cache_hits",
            "Verification answers found in a cache.",
            ["kind", "layer"],
            registry=reg,
        ),
        cache_misses=Counter(
            "keyrunes_cache_misses", "Verifications with no cached answer.", ["kind"], registry=reg
        ),
        remote_calls=Counter(
            "keyrunes_remote_calls",
            "HTTP calls to Keyrunes, by route and outcome.",
            ["operation", "outcome"],
            registry=reg,
        ),
        remote_seconds=Histogram(
            "keyrunes_remote_call_seconds",
            "Duration of HTTP calls to Keyrunes.",
            ["operation"],
            registry=reg,
        ),
        outages=Counter(
            "keyrunes_outages",
            "Keyrunes unreachable or answering garbage, and whether a cached answer was served.",
            ["operation", "served_stale"],
            registry=reg,
        ),
        refusals=Counter(
            "keyrunes_refusals", "Refused tokens and organization keys.", ["reason"], registry=reg
        ),
    )


class WarmAnswersCollector:
    """``keyrunes_warm_answers_total``: bearer requests answered from process memory.

    Read from :func:`keyrunes_django.tokens.warm_answers` at scrape time; these
    answers send no signal (one per request would cost more than the answer).
    """

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        from keyrunes_django.tokens import warm_answers

        family = CounterMetricFamily(
            "keyrunes_warm_answers",
            "Bearer requests answered from this process's memory, with no I/O.",
        )
        family.add_metric([], warm_answers())
        yield family


def _on_verified(*, kind: Any = None, source: Any = None, **kwargs: Any) -> None:
    if _metrics is not None:
        _metrics.verifications.labels(kind=label(kind), source=label(source)).inc()


def _on_cache_hit(*, kind: Any = None, layer: Any = None, **kwargs: Any) -> None:
    if _metrics is not None:
        _metrics.cache_hits.labels(kind=label(kind), layer=label(layer)).inc()


def _on_cache_miss(*, kind: Any = None, **kwargs: Any) -> None:
    if _metrics is not None:
        _metrics.cache_misses.labels(kind=label(kind)).inc()


def _on_remote_call(
    *, operation: Any = None, outcome: Any = None, duration: Any = None, **kwargs: Any
) -> None:
    if _metrics is None:
        return
    name = label(operation)
    _metrics.remote_calls.labels(operation=name, outcome=label(outcome)).inc()
    if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration >= 0:
        _metrics.remote_seconds.labels(operation=name).observe(float(duration))


def _on_outage(*, operation: Any = None, served_stale: Any = False, **kwargs: Any) -> None:
    if _metrics is not None:
        stale = label(bool(served_stale))
        _metrics.outages.labels(operation=label(operation), served_stale=stale).inc()


def _on_refusal(*, reason: Any = None, **kwargs: Any) -> None:
    if _metrics is not None:
        _metrics.refusals.labels(reason=label(reason)).inc()


_RECEIVERS = (
    (signals.credential_verified, _on_verified),
    (signals.cache_hit, _on_cache_hit),
    (signals.cache_miss, _on_cache_miss),
    (signals.remote_call, _on_remote_call),
    (signals.auth_service_error, _on_outage),
    (signals.credential_rejected, _on_refusal),
)


def connect_metrics(registry: CollectorRegistry | None = None) -> bool:
    """Create the metrics (once per process) and connect their receivers.

    Returns False, doing nothing, when ``prometheus_client`` is not installed.
    ``registry`` is for tests; by default the metrics join the default registry.
    """
    global _metrics
    if not prometheus_available():
        return False
    with _lock:
        if _metrics is None:
            _metrics = _build(registry)
    for signal, receiver in _RECEIVERS:
        signal.connect(receiver, dispatch_uid=f"keyrunes_django.metrics.{receiver.__name__}")
    return True


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The default registry in Prometheus' text format.

    It holds counts only, never credentials; still, serve it where only the
    scraper can reach it. Without ``prometheus_client``: 404.
    """
    if not prometheus_available():
        return HttpResponse(
            "prometheus_client is not installed.\n", status=404, content_type="text/plain"
        )
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    response = HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
