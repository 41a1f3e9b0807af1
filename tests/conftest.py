"""Shared fixtures. The Keyrunes emulator fixtures come from the package's own pytest plugin,
registered through its ``pytest11`` entry point."""

from __future__ import annotations

