"""Django app configuration."""

from __future__ import annotations

from django.apps import AppConfig, apps


class KeyrunesConfig(AppConfig):
    name = "keyrunes_django"
    verbose_name = "Keyrunes"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks (keyrunes_django.E001...).
        from keyrunes_django import checks  # noqa: F401

        # Audit log records for every login, refused credential and outage signal.
        from keyrunes_django.audit import connect_receivers

        connect_receivers()

        # Logout puts the session's Keyrunes token on the deny list.
        from keyrunes_django import revocation

        revocation.connect_receivers()

        # A user saved inactive loses its remembered tokens in this process.
        from keyrunes_django import tokens

        tokens.connect_receivers()

        # Optional integrations, each only when its package is installed.
        from keyrunes_django.metrics import connect_metrics

        connect_metrics()
        if apps.is_installed("drf_spectacular"):
            from keyrunes_django.drf import openapi  # noqa: F401
