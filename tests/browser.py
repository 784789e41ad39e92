"""Debian's chromium driven by Playwright, for the admin's browser tests.

Nothing here downloads a browser: /usr/bin/chromium comes from apt (.ci/run installs it). Without
it a browser test is skipped locally and fails when CI is set."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
]
TIMEOUT_MS = 20_000


def missing() -> str:
    """Why a browser test cannot run here, or "" when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -r requirements.txt)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return ""


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    why = missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run: {why}")
        pytest.skip(f"browser test needs Debian's chromium: {why}")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, so Django takes the
    # test's ORM calls for async code. They are sync (the live server has its own thread); the
    # switch lasts for this test only.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
