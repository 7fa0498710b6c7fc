"""Helpers for the hardening tests (a module name of its own: every test folder has a conftest). Each module's lab
has its own prefix and address plan from tests/labs.py, and is ALWAYS taken down, also when a test fails."""
from __future__ import annotations

from pathlib import Path



ROOT = Path(__file__).resolve().parents[2]
LAB_SITE = ROOT / "params" / "lab.yaml"
