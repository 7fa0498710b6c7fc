"""Headless Chromium from Debian (`apt-get install chromium`, in the Makefile's APT_PACKAGES) driven by Playwright
for Python: the system browser, nothing downloaded, no network of its own."""
from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """Module-scoped on purpose: Playwright's sync API keeps an event loop running in the main thread while it is
    open, and a test module after this folder that calls asyncio.run() would find it (RuntimeError)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra: pip install -e '.[test]'")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no {CHROMIUM}: apt-get install chromium (make setup does)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()
