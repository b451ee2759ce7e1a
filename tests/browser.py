"""Headless Chromium for the browser tests: the system's own, driven by Playwright.

The Chromium is the distribution's package (`/usr/bin/chromium`, which `make test`
installs when it is missing); Playwright's own browsers are never downloaded. A test
that cannot start it fails, naming what is missing: it never skips.

Screenshots go to `test-artifacts/<test module>/` (ignored by git), where CI can
pick them up.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, async_playwright

CHROMIUM = Path(os.environ.get("POSGUARD_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def artifacts(module: str) -> Path:
    """The directory of one test module's screenshots (created)."""
    path = ARTIFACTS / module.rsplit(".", 1)[-1]
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """The system's headless Chromium, until the block ends."""
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: install the system's Chromium (`make test` does: "
        "apt-get install -y chromium)"
    )
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()
