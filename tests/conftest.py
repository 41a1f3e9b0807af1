"""Shared fixtures. The Keyrunes emulator fixtures come from the package's own plugin."""

from __future__ import annotations

pytest_plugins = ["keyrunes_django.testing.pytest_plugin"]
