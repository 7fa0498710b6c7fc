"""Fixtures of the audit tests; the log-line builders live in audit_helpers.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from audit_helpers import ROOT  # noqa: E402
from layernet.allowlist import effective_allowlist  # noqa: E402
from layernet.site import load_site  # noqa: E402


@pytest.fixture(scope="session")
def site():
    return load_site(ROOT / "params" / "lab.yaml")


@pytest.fixture(scope="session")
def allowlist(site):
    return effective_allowlist(site)
