"""Two labs side by side (tests/labs.py SIDE_BY_SIDE: two prefixes, two address plans): both work, neither disturbs the other,
and a third lab that reuses an address plan already routed by the jump box is refused before it changes anything."""
from __future__ import annotations

import pytest

from layernet.lab import LabError, commands, netns
from layernet.probe_run import run_matrix

import labs

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _jump_routes(site) -> set[str]:
    jump = netns.topology(site).jump_if
    return {r["dst"] for r in netns.root_routes() if r.get("dev") == jump}


def test_two_labs_side_by_side():
    pa, pb, pc = labs.SIDE_BY_SIDE
    a, b = labs.site(pa), labs.site(pb)
    with labs.running(a) as ta:
        with labs.running(b) as tb:
            for site, target in ((a, ta), (b, tb)):
                assert all(r["ok"] for r in commands.status(site))
                rows = run_matrix(site, target=target, verbose=False)
                assert rows and all(r["ok"] for r in rows), [r for r in rows if not r["ok"]][:3]
            assert _jump_routes(a) and _jump_routes(b) and not (_jump_routes(a) & _jump_routes(b))
            # the same address plan as a running lab: refused up front, the running lab untouched
            clash = labs.site(pc)
            with pytest.raises(LabError, match="another lab"):
                commands.up(clash)
            assert not netns.our_namespaces(pc.prefix)
            assert all(r["ok"] for r in commands.status(b))
            routes_b = _jump_routes(b)
        # b is down: a still works, its routes are intact
        assert _jump_routes(b) == set() and not netns.our_namespaces(pb.prefix)
        assert all(r["ok"] for r in commands.status(a))
        rows = run_matrix(a, target=ta, verbose=False)
        assert all(r["ok"] for r in rows)
    assert routes_b
