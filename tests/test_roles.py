"""Every host the allow-list catalog marks required for a role is contacted by the lab's stand-in of that role.

The required hosts come from the catalog (allowlist.role_needs); what a stand-in contacts comes from the stand-in's
own call list (the Arc agents' start-up calls, the AIO extensions' pulls, reports and reaches, the dataflow's
Kafka endpoint from the rendered records, the jump box's SDK connection). A role added to the catalog without a
stand-in here, or a required host no stand-in contacts, fails this test.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from layernet.allowlist import host_matches, role_descriptions, role_needs
from layernet.lab import aioext, arcagent, reach
from layernet.site import load_site

ROOT = Path(__file__).resolve().parents[1]


def _arc_agents(site, level: str) -> list[tuple[str, int]]:
    cfg = arcagent.config(site, level, "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Kubernetes/"
                          "connectedClusters/c", "/ca.crt", Path("/state"))
    return [arcagent._call_host(c) for c in arcagent.calls(cfg)]


def _aio_extensions(site, level: str) -> list[tuple[str, int]]:
    return aioext.contacts(aioext.config(site, level, "/c", Path("/ca"), Path("/state")))


def _eventhubs_egress(site, level: str) -> list[tuple[str, int]]:
    from layernet.lab.dataflow import plan_from_resources
    from layernet.render.telemetry import render_level

    return [(p.host, p.port) for p in plan_from_resources(render_level(site, level)) if p.kind == "kafka"]


def _jump_box(site, level: str) -> list[tuple[str, int]]:
    from azure.identity import AzureAuthorityHosts

    from layernet.azure.clients import Arm

    arm = Arm("00000000-0000-0000-0000-000000000001", cloud=site.azure.cloud)
    return [(arm.url.split("://", 1)[1].split("/")[0], 443), (AzureAuthorityHosts.AZURE_PUBLIC_CLOUD, 443)]


STAND_INS = {      # role -> (the levels its stand-in runs at, what it contacts there)
    "arc-agents": (lambda site: [lv.name for lv in site.levels], _arc_agents),
    "aio-extensions": (lambda site: [lv.name for lv in site.levels], _aio_extensions),
    "eventhubs-egress": (lambda site: sorted({f.level for f in site.telemetry.dataflows if f.destination == "eventhubs"}),
                         _eventhubs_egress),
    "jump-box": (lambda site: ["jump box"], _jump_box),
}

SITES = {
    "lab": [],
    "lab, Event Hubs only from the egress level": ["telemetry.eventhubs_from_levels=[]"],
}


def test_every_catalog_role_has_a_stand_in():
    assert set(role_descriptions()) == set(STAND_INS)


@pytest.mark.parametrize("overrides", SITES.values(), ids=SITES.keys())
@pytest.mark.parametrize("role", sorted(STAND_INS))
def test_every_required_host_is_contacted_by_the_roles_stand_in(role, overrides):
    site = load_site(ROOT / "params" / "lab.yaml", overrides)
    required = role_needs(site, role, required_only=True)
    assert required, f"{role}: the catalog marks no host required for it on the lab site"
    levels, contacts = STAND_INS[role]
    assert levels(site)
    for level in levels(site):
        contacted = contacts(site, level)
        missing = [f"{n.host}:{p}" for n in required for p in n.ports
                   if not any(port == p and host_matches(n.host, h) for h, port in contacted)]
        assert missing == [], f"{role} at {level}: required but not contacted: {missing}"


def test_the_arc_agents_reach_the_hosts_their_own_calls_do_not_use_by_name_and_nothing_more():
    site = load_site(ROOT / "params" / "lab.yaml")
    cfg = arcagent.config(site, "level2", "/c", "/ca.crt", Path("/state"))
    extra = [c for c in arcagent.calls(cfg) if c["method"] == "REACH"]
    assert {c["url"] for c in extra} == {"layernet-probe.guestnotificationservice.azure.com:443",
                                         "eastus.login.microsoft.com:443", "login.windows.net:443",
                                         "management.azure.com:443", "sts.windows.net:443"}
    # a host the site drops stays in the agents' list: dropping it must be noticed, not skipped
    dropped = load_site(ROOT / "params" / "lab.yaml", ['allowlist.drop_hosts=["sts.windows.net"]'])
    cfg = arcagent.config(dropped, "level2", "/c", "/ca.crt", Path("/state"))
    assert "sts.windows.net:443" in {c["url"] for c in arcagent.calls(cfg)}


def test_a_required_host_added_to_the_catalog_is_contacted_or_the_coverage_test_fails(monkeypatch):
    """The coverage test above is not vacuous: a required host the stand-in does not contact is reported."""
    site = load_site(ROOT / "params" / "lab.yaml")
    required = [{"host": "new.example.azure.com", "ports": [443]}] + reach.targets(site, "aio-extensions")
    assert reach.uncovered(required, aioext.own_hosts(aioext.config(site, "level2", "/c", Path("/ca"), Path("/s")))) \
        [0] == ("new.example.azure.com", 443)


def test_the_roles_row_names_every_required_host_not_reached_and_the_dropped_one():
    site = load_site(ROOT / "params" / "lab.yaml", ['allowlist.drop_hosts=["sts.windows.net"]'])
    cfg = arcagent.config(site, "level3", "/c", "/ca.crt", Path("/state"))
    calls = [{"host": h, "port": p, "ok": True, "observed": "ok"} for h, p in map(arcagent._call_host, arcagent.calls(cfg))
             if h != "sts.windows.net"]
    calls.append({"host": "sts.windows.net", "port": 443, "ok": False,
                  "observed": "reset by a proxy (the name is not on its allow list)"})
    row = reach.row(site, "arc-agents", "level3", calls, "Arc agents", "sts.windows.net:443 (reset by a proxy)")
    assert not row["ok"] and row["check"] == "hosts required by arc-agents"
    assert row["observed"] == "not reached: sts.windows.net:443"
    assert "required for Arc agents (arc-agents)" in row["hint"] and "reset by a proxy" in row["hint"]
    assert "Not on the site's allow list: sts.windows.net:443" in row["hint"]
    ok = reach.row(site, "arc-agents", "level3", [dict(c, ok=True) for c in calls], "Arc agents")
    assert ok["ok"] and ok["observed"] == f"{len(reach.targets(site, 'arc-agents'))} of {len(reach.targets(site, 'arc-agents'))} reached"
    # a stand-in stopped before a host: "not tried yet", with what it is blocked on
    early = reach.row(site, "arc-agents", "level3", calls[:3], "Arc agents", "gbl.his.arc.azure.com:443 (timeout)")
    assert "not tried yet (blocked on gbl.his.arc.azure.com:443 (timeout))" in early["hint"]


def test_a_catalog_entry_naming_an_unknown_role_or_need_is_refused_naming_the_entry(monkeypatch):
    from layernet import allowlist, data

    entry = {"host": "x.example.com", "ports": [443], "group": "aio", "purpose": "p", "needs": {"arc-agent": "required"}}
    monkeypatch.setattr(data, "endpoints", lambda: [entry])
    with pytest.raises(ValueError, match=r"x\.example\.com \(aio\) needs\.arc-agent: unknown role"):
        allowlist.catalog()
    monkeypatch.setattr(data, "endpoints", lambda: [{**entry, "needs": {"arc-agents": "needed"}}])
    with pytest.raises(ValueError, match="required or optional"):
        allowlist.catalog()
