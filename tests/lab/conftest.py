"""Fixtures for the namespace lab. The lab is built once per test module with its own prefix (tests/labs.py
LAB_FIXTURE_PREFIX) on params/lab.yaml's plan and is ALWAYS taken down afterwards, also when a test fails."""
from __future__ import annotations

from pathlib import Path

import pytest

import labs

from layernet.site import load_site

ROOT = Path(__file__).resolve().parents[2]
PREFIX = labs.LAB_FIXTURE_PREFIX


@pytest.fixture(scope="session")
def lab_site():
    return load_site(ROOT / "params" / "lab.yaml", [f"lab.prefix={PREFIX}"])


@pytest.fixture(scope="module")
def lab_session(lab_site):
    """The lab (LabTarget), brought up by its first apply; ALWAYS taken down at the end of the module, so
    other modules can build labs of their own (labs that share an address plan cannot run side by side)."""
    with labs.running(lab_site) as target:
        yield target


@pytest.fixture
def lab(lab_session, lab_site):
    """The running lab; rebuilt when an earlier test left it broken."""
    from layernet.lab import commands

    if not commands.lab_is_up(lab_site):
        lab_session.apply(commands.render_lab(lab_site))
    return lab_session
