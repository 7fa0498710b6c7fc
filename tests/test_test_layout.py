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


def test_lab_plans_are_handed_out_in_one_place():
    """tests/labs.py is the only place that picks a lab prefix or address plan: no two modules get the same
    prefix or plan, none is params/lab.yaml's, and no test module picks its own."""
    import labs

    plans = list(labs.PLANS.values())
    prefixes = [p.prefix for p in plans] + [p.prefix for p in labs.SIDE_BY_SIDE] + [labs.LAB_FIXTURE_PREFIX,
                                                                                     labs.DEPLOY_PREFIX]
    assert len(prefixes) == len(set(prefixes)), sorted(prefixes)
    octets = [p.octet for p in plans] + [p.octet for p in labs.SIDE_BY_SIDE[:2]]
    assert len(octets) == len(set(octets)), sorted(octets)
    assert labs.SIDE_BY_SIDE[2].octet == labs.SIDE_BY_SIDE[1].octet     # the refused clash, on purpose
    import ipaddress

    from layernet.site import load_site

    own_plan = load_site(labs.LAB_SITE)
    nets = [own_plan.admin.network] + [lv.network for lv in own_plan.levels]
    assert not any(n.overlaps(ipaddress.ip_network(p.base)) for n in nets for p in plans + list(labs.SIDE_BY_SIDE))
    for key in labs.PLANS:
        assert (TESTS / key.split("#")[0]).is_file(), f"tests/labs.py names {key}, which is not a test module"
    picked = re.compile(r'^(PREFIX(, (BASE|OCTET))?) = ["\'0-9]', re.M)
    own = [str(p.relative_to(TESTS)) for p in TESTS.rglob("test_*.py") if picked.search(p.read_text())]
    assert own == [], f"these modules pick their own lab prefix or plan: take one from tests/labs.py: {own}"


def test_each_planned_module_is_its_own_xdist_scope():
    import labs

    lab_scope = labs.scope                      # what tests/conftest.py's xdist scheduler calls

    for key, plan in labs.PLANS.items():
        if "#" in key:                  # a module's second lab: the module's scope is its first plan's
            continue
        path = str(TESTS / key)
        want = "harden" if key.startswith("harden/") else plan.base
        assert lab_scope(path) == want
    assert lab_scope(str(TESTS / "lab" / "test_clusters_lab.py")) == "default-plan"


def test_every_module_that_builds_a_lab_is_marked_lab():
    """Modules with a lab plan build labs: their lab tests run in make test's lab pass (one scope per plan, under the
    lab lock), never beside the unit tests."""
    import labs

    for key in labs.PLANS:
        text = (TESTS / key.split("#")[0]).read_text()
        assert re.search(r"pytestmark = [^\n]*pytest\.mark\.lab|@?pytest\.mark\.lab\b", text), key
