"""Stage 02 rehearsed on the lab: the same plan and SDK polling as a real site; the agents must cross the chain.

One lab per module with its own prefix and address plan (a shifted copy of params/lab.yaml), always taken down.
"""
from __future__ import annotations

import time

import pytest

from layernet.errors import StageFailed
from layernet.lab import commands, services
from layernet.lab.clusters import admin
from layernet.render import manifests
from layernet.stages import arc
from layernet.targets import get_target

import labs

pytestmark = pytest.mark.lab      # builds a lab: make test's lab pass, under the lab lock
PREFIX = labs.plan(__file__).prefix


def site_with(*extra: str):
    return labs.site(__file__, *extra)


@pytest.fixture(scope="module")
def site():
    return site_with()


@pytest.fixture(scope="module")
def lab(site):
    with labs.running(site):
        yield site


def test_plan_apply_verify_then_the_second_plan_is_empty(lab):
    site = lab
    since = arc.begin()
    p = arc.plan(site)
    actions = [(s.level, s.action) for s in p.changes]
    assert ("site", "create resource group") in actions or any(a == "create resource group" for _, a in actions)
    connects = [lvl for lvl, a in actions if a == "connect cluster"]
    assert connects == [lv.name for lv in site.chain]                    # egress level first, then down the chain
    provider_steps = [s for s in p.steps if s.action == "register provider"]
    assert {s.target for s in provider_steps} == set(site.arc.providers)

    t0 = time.monotonic()
    applied = arc.run(p, site)
    rows = arc.check(site, since)
    took = time.monotonic() - t0
    assert [r for r in rows if not r["ok"]] == [], rows
    connected = {r["level"] for r in rows if r["check"] == "connectivity status" and r["observed"] == "Connected"}
    assert connected == {lv.name for lv in site.levels}, rows
    assert len(applied) == len(p.changes) and took < 60

    # every level's agents made their calls by name and crossed the chain: the lowest level through both proxies
    status = services.arc_agent_status(site, "level2")
    assert status["phase"] == "heartbeating" and status["heartbeats"] >= 1
    assert {c["step"] for c in status["calls"] if c["ok"]} >= {"identity (global)", "config: GetHelmSettings",
                                                              "relay websocket", "images: layer", "cluster connect"}
    egress = str(site.egress.node_ip)
    assert {c["peer"].rsplit(":", 1)[0] for c in status["calls"] if c.get("peer")} == {egress}
    paths = arc.crossings(site, since)
    l2 = paths[(paths["source"] == "level2") & (paths["host"] == "gbl.his.arc.azure.com")]
    assert len(l2) and set(l2["hops"]) == {"level3 ✓ → level4 ✓"} and l2["reached"].all()
    svg = arc.picture(site, paths).data
    assert "level2 · gbl.his.arc.azure.com" in svg

    # `lab status` lists the stage services with the infrastructure ones: every level's Arc agents, running
    agents = {r["level"]: r for r in commands.status(site) if "arc-agent" in str(r.get("envoy"))}
    assert set(agents) == {lv.name for lv in site.levels} and all(r["ok"] for r in agents.values())

    again = arc.plan(site)
    assert again.empty, again.table().to_string()


def test_taking_a_levels_proxy_away_turns_the_cluster_below_offline(lab):
    """level3's Envoy Deployment deleted: level2's agents lose their way out and its cluster turns Offline while the
    levels above stay Connected; stage 01's next apply puts the proxy back."""
    site = lab
    if not all(r["ok"] for r in arc.verify(site)):
        arc.run(arc.plan(site), site)
    gone = admin.delete(site, "level3", f"/apis/apps/v1/namespaces/{manifests.NAMESPACE}/deployments/{manifests.APP}")
    assert gone
    try:
        def offline() -> bool:
            rows = arc.verify(site, timeouts={lv.name: 1 for lv in site.levels})
            return any(r["level"] == "level2" and r["check"] == "connectivity status" and r["observed"] == "Offline"
                       for r in rows)
        assert services.wait_for(offline, timeout=40, interval=2), "level2 never turned Offline"
        rows = arc.verify(site, timeouts={lv.name: 1 for lv in site.levels})
        by_level = {r["level"]: r for r in rows if r["check"] == "connectivity status"}
        assert by_level["level4"]["observed"] == "Connected" and by_level["level3"]["observed"] == "Connected"
    finally:
        steps = get_target(site).apply(commands.render_lab(site))
    assert ("level3", "create") in {(s.level, s.action) for s in steps if not s.skip}


def test_dropping_a_required_host_fails_the_stage_naming_level_host_and_role():
    """The identity hosts dropped: the agents below the egress level stop at their first call. Then the firewall
    team puts them back but drops sts.windows.net, a host the catalog marks required for the Arc agents that only
    their reach by name uses: the stage fails again, naming that host and the role."""
    site = site_with("allowlist.drop_hosts=[\"*.his.arc.azure.com\", \"gbl.his.arc.azure.com\"]",
                     "arc.onboarding_timeout={level4: 15, level3: 15, level2: 15}")
    with labs.running(site):
        since = arc.begin()
        arc.run(arc.plan(site), site)
        t0 = time.monotonic()
        rows = arc.check(site, since)
        assert time.monotonic() - t0 < 40                                   # within the onboarding timeout
        bad = {r["level"]: r for r in rows if not r["ok"] and r["check"] == "connectivity status"}
        assert set(bad) == {"level3", "level2"}, rows                       # level4 egresses without a proxy
        assert "his.arc.azure.com" in bad["level2"]["hint"]
        role = {r["level"]: r for r in rows if r["check"] == "hosts required by arc-agents"}
        assert role["level4"]["ok"] and not role["level2"]["ok"], role
        assert "gbl.his.arc.azure.com:443" in role["level2"]["observed"]
        with pytest.raises(StageFailed, match=r"level[32].*his\.arc\.azure\.com.*Arc agents \(arc-agents\)"):
            arc.require_connected(rows)

        # the identity hosts back, sts.windows.net dropped: stage 01 applies the new allow list to the running lab
        from layernet import context
        from layernet.stages import infrastructure

        site_sts = site_with("allowlist.drop_hosts=[\"sts.windows.net\"]",
                             "arc.onboarding_timeout={level4: 15, level3: 15, level2: 15}")
        ctx = context.build(site_sts)                                     # as the notebooks do: one Context
        infrastructure.apply(ctx.target, infrastructure.render(ctx), dry_run=False)
        t0 = time.monotonic()
        rows = arc.check(ctx, since)
        assert time.monotonic() - t0 < 40
        role = {r["level"]: r for r in rows if r["check"] == "hosts required by arc-agents"}
        assert role["level4"]["ok"], role
        for lvl in ("level3", "level2"):
            assert not role[lvl]["ok"] and role[lvl]["observed"] == "not reached: sts.windows.net:443", role[lvl]
            assert "required for Arc agents (arc-agents)" in role[lvl]["hint"]
            assert "Not on the site's allow list: sts.windows.net:443" in role[lvl]["hint"]
        calls = {c["step"]: c for c in services.arc_agent_status(site_sts, "level2")["calls"]}
        assert calls["identity (global)"]["ok"] and calls["cluster connect"]["ok"]     # got past identity this time
        with pytest.raises(StageFailed, match=r"level3: hosts required by arc-agents is not reached: "
                                              r"sts\.windows\.net:443.*Arc agents \(arc-agents\)"):
            arc.require_connected(rows)
