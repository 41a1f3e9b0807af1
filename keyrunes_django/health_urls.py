"""Probe and metrics URLs: ``path("health/", include("keyrunes_django.health_urls"))``.

Names are in the ``keyrunes_health`` namespace: ``ready`` (readiness, 200/503),
``live`` (liveness, 200) and ``metrics`` (Prometheus text format; 404 without
``prometheus_client``). Serve them where only probes and scrapers reach them.
"""

from __future__ import annotations

from django.urls import URLPattern, path

from keyrunes_django.health import liveness_view, readiness_view
from keyrunes_django.metrics import metrics_view

app_name = "keyrunes_health"

urlpatterns: list[URLPattern] = [
    path("ready/", readiness_view, name="ready"),
    path("live/", liveness_view, name="live"),
    path("metrics/", metrics_view, name="metrics"),
]
