"""Suite-wide settings. With LAYERNET_REQUIRE_LAB=1 (as in CI) a lab test that skips is a failure:
the lab tests are the proof that the layered network works, so they may not vanish quietly."""
from __future__ import annotations

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("LAYERNET_REQUIRE_LAB") == "1" and item.get_closest_marker("lab"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"lab test skipped but LAYERNET_REQUIRE_LAB=1: {reason}"
