"""The tests' own layout: test doubles live in tests/doubles and are imported by module name (pytest's pythonpath),
never by editing sys.path in a test module."""
from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
DOUBLES = TESTS / "doubles"
PATH_EDIT = re.compile(r"sys\.path\.(insert|append)\([^\n]*doubles")


def test_no_test_module_edits_sys_path_to_reach_the_doubles():
    offenders = [str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py") if PATH_EDIT.search(p.read_text())]
    assert offenders == []


def test_every_double_lives_in_tests_doubles():
    doubles = {p.stem for p in DOUBLES.glob("*.py")}
    assert {"arm_double", "kube_double", "loganalytics_double", "fakecli"} <= doubles
    elsewhere = [str(p.relative_to(TESTS)) for p in TESTS.rglob("*_double.py") if p.parent != DOUBLES]
    assert elsewhere == []
