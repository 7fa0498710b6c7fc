"""Fixtures of the render tests; plain helpers live in render_helpers.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from layernet.allowlist import effective_allowlist  # noqa: E402
from layernet.site import load_site  # noqa: E402
from render_helpers import LAB_SITE  # noqa: E402


@pytest.fixture(scope="session")
def site():
    return load_site(LAB_SITE)


@pytest.fixture(scope="session")
def allowlist(site):
    return effective_allowlist(site)
