"""Fixtures for the namespace lab. The lab is built once per test module with its own prefix (`lt`) and is
ALWAYS taken down afterwards, also when a test fails."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from layernet.site import load_site

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "lt"


def _missing_requirements() -> str:
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, nftables); run the tests as root, as CI does"
    for tool in ("ip", "nft", "unbound", "curl"):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install iproute2 nftables unbound curl)"
    try:
        import layernet.render  # noqa: F401
        from layernet.render import render_site  # noqa: F401
    except ImportError as exc:
        return f"layernet.render is not importable: {exc}"
    return ""


@pytest.fixture(scope="session")
def lab_site():
    return load_site(ROOT / "params" / "lab.yaml", [f"lab.prefix={PREFIX}"])


@pytest.fixture(scope="module")
def lab_session(lab_site):
    """The lab (LabTarget), brought up by its first apply; ALWAYS taken down at the end of the module, so
    other modules can build labs of their own (labs that share an address plan cannot run side by side)."""
    why = _missing_requirements()
    if why:
        pytest.skip(why)
    from layernet.lab import commands
    from layernet.targets.lab import LabTarget

    target = LabTarget(lab_site)
    try:
        commands.down(lab_site)
        target.apply(commands.render_lab(lab_site))
        yield target
    finally:
        commands.down(lab_site)


@pytest.fixture
def lab(lab_session, lab_site):
    """The running lab; rebuilt when an earlier test left it broken."""
    from layernet.lab import commands

    if not commands.lab_is_up(lab_site):
        lab_session.apply(commands.render_lab(lab_site))
    return lab_session
