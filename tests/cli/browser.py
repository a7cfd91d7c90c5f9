"""What the browser tests share: Debian's chromium, found or refused, and a page that records its errors."""

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Playwright gives every launch a fresh profile; these keep chromium off the network and the GPU.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def require_chromium() -> str:
    """Chromium's path; without it the test is skipped, or fails on CI, whose command installs it. Call it
    before a test's own work, so that a machine without chromium does not pay for it."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: the README's test command installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return CHROMIUM


@contextmanager
def browser_page(errors: list[str]) -> Iterator:
    """A headless chromium page whose console errors and page errors are appended to ``errors``."""
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=FLAGS)
        try:
            page = browser.new_page()
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page
        finally:
            browser.close()
