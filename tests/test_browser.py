"""End to end in headless Chromium: log in through the example site, reach a
group page, get refused on an admin page, log out.

Debian's ``chromium`` (installed by scripts/install-system-packages.sh) is
driven by Playwright's Python API with its executable path set; nothing is
downloaded. Without Chromium the test is skipped on a developer machine and
fails under CI (``CI`` set), so CI can never pass without running it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from keyrunes_django.testing.emulator import KeyrunesEmulator
from tests.example_fixtures import ALICE, example_emulator, example_site

__all__ = ["example_emulator", "example_site"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    message = f"{CHROMIUM} is missing (bash scripts/install-system-packages.sh installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def page() -> Iterator[Any]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # launch() (not a persistent context) gives every run a fresh throwaway profile.
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context()
            context.set_default_timeout(10_000)
            yield context.new_page()
        finally:
            browser.close()


@contextmanager
def screenshot_on_failure(page: Any) -> Iterator[None]:
    try:
        yield
    except BaseException:
        shot = Path(tempfile.gettempdir()) / f"keyrunes-browser-{int(time.time())}.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failure: {shot}")
        raise


def test_login_group_page_admin_refusal_logout(
    example_site: KeyrunesEmulator, live_server: Any, page: Any
) -> None:
    started = time.monotonic()
    with screenshot_on_failure(page):
        journey(page, live_server.url)
    assert time.monotonic() - started < 30


def journey(page: Any, base: str) -> None:
    """What a user does, through the site's own forms and links."""
    page.goto(f"{base}/editors/")
    # Anonymous: sent to the login page, which comes back here afterwards.
    assert "/login/" in page.url
    page.fill("input[name=username]", ALICE[0])
    page.fill("input[name=password]", ALICE[1])
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{base}/editors/")
    assert page.inner_text("h1") == "Editors' room"
    assert "Signed in as alice" in page.inner_text("#signed-in-as")

    response = page.goto(f"{base}/admin-area/")
    assert response is not None
    assert response.status == 403
    assert page.inner_text("h1") == "Forbidden"

    response = page.goto(f"{base}/editors/")
    assert response is not None
    assert response.status == 200

    page.click("#logout")
    page.wait_for_url(f"{base}/")
    assert page.is_visible("#login-link")
    page.goto(f"{base}/editors/")
    assert "/login/" in page.url
