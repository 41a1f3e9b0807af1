"""Shared fixtures. The Keyrunes emulator fixtures come from the package's own pytest plugin,
registered through its ``pytest11`` entry point.

Opt-in fixtures (none is autouse, so other test files are unaffected):

* ``clean_caches``: an empty ``default`` cache and fresh per-process state
  before and after the test, so no verified credential leaks between tests;
* ``frozen_clock``: the package's one clock (``keyrunes_django.conf.clock``),
  set and moved by hand;
* ``rejections`` / ``service_errors``: what ``credential_rejected`` and
  ``auth_service_error`` were sent;
* ``local``: ``KEYRUNES`` for local verification without a server;
* ``remote`` / ``org_service``: the emulator in remote mode / with a service
  account, so organization keys can be bound to this service's organization.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.factories import local_settings, service_account


@pytest.fixture
def clean_caches() -> Iterator[None]:
    from django.core.cache import caches

    from keyrunes_django.conf import settings_changed

    caches["default"].clear()
    settings_changed()
    yield
    caches["default"].clear()
    settings_changed()


class FrozenClock:
    """A clock that stands still until moved."""

    def __init__(self, start: float) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    import time

    from keyrunes_django.conf import clock

    frozen = FrozenClock(time.time())
    monkeypatch.setattr(clock, "now", frozen)
    return frozen


def _collector(signal: Any) -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        seen.append(kwargs)

    signal.connect(receiver, weak=False)
    try:
        yield seen
    finally:
        signal.disconnect(receiver)


@pytest.fixture
def rejections() -> Iterator[list[dict[str, Any]]]:
    from keyrunes_django import signals

    yield from _collector(signals.credential_rejected)


@pytest.fixture
def service_errors() -> Iterator[list[dict[str, Any]]]:
    from keyrunes_django import signals

    yield from _collector(signals.auth_service_error)


@pytest.fixture
def local(settings: Any) -> dict[str, Any]:
    settings.KEYRUNES = local_settings()
    return settings.KEYRUNES  # type: ignore[no-any-return]


@pytest.fixture
def remote(keyrunes: Any, settings: Any) -> Any:
    settings.KEYRUNES = {**settings.KEYRUNES, "VERIFICATION_MODE": "remote"}
    return keyrunes


@pytest.fixture
def org_service(keyrunes: Any, settings: Any) -> Any:
    """The emulator, with a service account that establishes this service's organization."""
    settings.KEYRUNES = {**settings.KEYRUNES, "SERVICE_ACCOUNT": service_account()}
    return keyrunes
