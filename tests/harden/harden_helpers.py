"""Helpers for the hardening tests (a module name of its own: every test folder has a conftest).

Each module builds its own lab with its own prefix AND its own address plan (a shifted copy of params/lab.yaml), so it never clashes with a lab built from the unchanged site file, and
ALWAYS takes it down, also when a test fails."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from layernet.site import load_site

ROOT = Path(__file__).resolve().parents[2]
LAB_SITE = ROOT / "params" / "lab.yaml"


def missing_requirements() -> str:
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, nftables); run the tests as root, as CI does"
    for tool in ("ip", "nft", "unbound", "curl"):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install iproute2 nftables unbound curl)"
    return ""


def site_args(prefix: str, base: str) -> list[str]:
    """Overrides: lab prefix and the admin/level networks moved into `base` (a /16)."""
    from layernet.harden.lab import shifted_plan

    return [f"lab.prefix={prefix}"] + shifted_plan(load_site(LAB_SITE), base)


def make_site(prefix: str, base: str):
    return load_site(LAB_SITE, site_args(prefix, base))


@contextmanager
def running_lab(site):
    """The lab of `site`, up through the lab target's first apply; always down afterwards, with nothing left."""
    why = missing_requirements()
    if why:
        pytest.skip(why)
    from layernet.lab import commands
    from layernet.targets.lab import LabTarget

    target = LabTarget(site)
    try:
        commands.down(site)
        target.apply(commands.render_lab(site))
        yield target
    finally:
        commands.down(site)
    assert commands.leftovers(site) == []
