"""Helpers for the stage tests that build a lab (a module name of its own: test folders share conftest names)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def lab_running(site):
    """The lab of `site`, up for the block and ALWAYS taken down after it; skipped only where the lab cannot run
    (never in CI, where LAYERNET_REQUIRE_LAB=1 turns a missing requirement into a failure)."""
    from layernet.lab import commands
    from layernet.targets import lab as lab_target

    why = commands.missing_requirements()
    if why and os.environ.get("LAYERNET_REQUIRE_LAB") == "1":
        pytest.fail(f"the lab cannot run but LAYERNET_REQUIRE_LAB=1: {why}")
    if why:
        pytest.skip(why)
    with lab_target.running(site) as target:
        yield target
    assert commands.leftovers(site) == []
