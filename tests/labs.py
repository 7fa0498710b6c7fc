"""The one place that hands out lab prefixes and address plans to test modules, and builds their labs.

Labs on different prefixes and address plans run side by side; labs on the same plan may not (make test's lab pass
makes each plan one xdist scope: tests/conftest.py reads `scope` below). A module that builds a lab of its own asks
for its plan by file name:

    site = labs.site(__file__, "telemetry.dataflows=[]")      # params/lab.yaml moved to the module's plan
    with labs.running(site) as target: ...                     # up for the block, ALWAYS down after it

and tests of another plant's site take `labs.plan(__file__).octet` for tests/doubles/plants.py. A module not in
PLANS runs on params/lab.yaml's own plan (scope "default-plan": those run one after the other).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
LAB_SITE = ROOT / "params" / "lab.yaml"


@dataclass(frozen=True)
class Plan:
    prefix: str          # lab.prefix: the namespaces' and the state folder's prefix
    octet: int           # the address plan: 10.<octet>.0.0/16

    @property
    def base(self) -> str:
        return f"10.{self.octet}.0.0/16"


# module (relative to tests/) -> its plan. tests/harden/ is one scope of its own (its side-by-side test builds two
# of its modules' labs at once), every other module its own.
PLANS: dict[str, Plan] = {
    "lab/cloud/test_cloud_lab.py": Plan("cc", 66),
    "stages/test_telemetry_lab.py": Plan("te", 68),
    "stages/test_arc_lab.py": Plan("ar", 72),
    "stages/test_aio_lab.py": Plan("ai", 74),
    "stages/test_aio_lab.py#negative": Plan("an", 75),       # a second lab of that module, after the first
    "lab/test_lab_lifecycle.py": Plan("q4", 77),
    "lab/test_deploy_other_plant.py": Plan("qd", 78),
    "harden/test_hardening_lab.py": Plan("h1", 81),
    "harden/test_load_faults.py": Plan("h2", 82),
    "harden/test_harden_runbook.py": Plan("h5", 85),
    "lab/test_kafka.py": Plan("ek", 87),
    "stages/test_telemetry_identity_lab.py": Plan("ei", 89),
    "lab/test_az_cli.py": Plan("zc", 91),
    "lab/test_telemetry_kafka.py": Plan("tm", 93),
    "audit/test_audit_lab.py": Plan("au", 98),
}
# on params/lab.yaml's own plan (scope "default-plan", one after the other): tests/lab/conftest.py's lab, which the
# cluster, DNS and live-lab tests share, and the session's deploy runs (tests/conftest.py deploy_run, the browser tests)
LAB_FIXTURE_PREFIX = "lt"
DEPLOY_PREFIX = "dr"
# tests/harden/test_side_by_side.py: two labs at once, and a third on the second's plan under another prefix
SIDE_BY_SIDE = (Plan("h3", 83), Plan("h4", 84), Plan("h6", 84))


def _key(module_file: str | Path) -> str:
    p = Path(module_file).resolve()
    try:
        return p.relative_to(TESTS).as_posix()
    except ValueError:
        return p.as_posix()


def plan(module_file: str | Path, which: str = "") -> Plan:
    """The plan handed out to the module at `module_file` (pass `__file__`); `which` names a second lab of it."""
    key = _key(module_file) + (f"#{which}" if which else "")
    if key not in PLANS:
        raise KeyError(f"{key} has no lab plan: give it a prefix and a free second octet in tests/labs.py PLANS")
    return PLANS[key]


def scope(module_file: str | Path) -> str:
    """The xdist scope of a test module: its address plan (harden/ is one), else params/lab.yaml's own."""
    key = _key(module_file)
    if key.startswith("harden/"):
        return "harden"
    return PLANS[key].base if key in PLANS else "default-plan"


def site_args(where: "str | Path | Plan", *extra: str) -> list[str]:
    """Overrides that move params/lab.yaml to a plan (a module's, given its `__file__`, or a Plan)."""
    from layernet.harden.lab import beside

    p = where if isinstance(where, Plan) else plan(where)
    return beside(LAB_SITE, p.prefix, p.base) + list(extra)


def site(where: str | Path | Plan, *extra: str):
    """params/lab.yaml moved to the plan (see site_args), with `extra` overrides."""
    from layernet.site import load_site

    return load_site(LAB_SITE, site_args(where, *extra))


def missing(extra_why: Optional[str] = None) -> None:
    """Skip where the lab cannot run on this machine; under LAYERNET_REQUIRE_LAB=1 (CI) that is a failure."""
    from layernet.lab import commands

    why = extra_why or commands.missing_requirements()
    if not why:
        return
    if os.environ.get("LAYERNET_REQUIRE_LAB") == "1":
        pytest.fail(f"the lab cannot run but LAYERNET_REQUIRE_LAB=1: {why}")
    pytest.skip(why)


@contextmanager
def running(site, why_not: Optional[str] = None):
    """The lab of `site`, up for the block and ALWAYS taken down after it; nothing of it left afterwards."""
    from layernet.lab import commands
    from layernet.targets import lab as lab_target

    missing(why_not)
    with lab_target.running(site) as target:
        yield target
    assert commands.leftovers(site) == []
