"""Helpers for the hardening tests (a module name of its own: every test folder has a conftest).

Each module builds its own lab with its own prefix AND its own address plan (a shifted copy of params/lab.yaml), so it never clashes with a lab built from the unchanged site file, and
ALWAYS takes it down, also when a test fails."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from layernet.site import load_site

ROOT = Path(__file__).resolve().parents[2]
LAB_SITE = ROOT / "params" / "lab.yaml"


def site_args(prefix: str, base: str) -> list[str]:
    """Overrides: lab prefix and the admin/level networks moved into `base` (a /16); the network alone, no level
    clusters (hardening is about the proxies, DNS and firewalls, and each lab starts ~10 s sooner without them)."""
    from layernet.harden.lab import beside

    return beside(LAB_SITE, prefix, base) + ["lab.clusters=false"]


def make_site(prefix: str, base: str):
    return load_site(LAB_SITE, site_args(prefix, base))


@contextmanager
def running_lab(site):
    """The lab of `site` (see layernet.targets.lab.running), skipped where the lab cannot run; nothing left after."""
    from layernet.lab import commands
    from layernet.targets import lab as lab_target

    why = commands.missing_requirements()
    if why:
        pytest.skip(why)
    with lab_target.running(site) as target:
        yield target
    assert commands.leftovers(site) == []
