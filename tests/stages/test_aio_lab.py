"""Stage 03 rehearsed on the lab: every resource PUT through the real SDK clients against the lab's cloud, each
level's extension stand-in pulls its images through the chain and runs a real mosquitto from the listener
resources, and the same verification as a real site plus an MQTT round trip per listener.

One lab per module with its own prefix and address plan (a shifted copy of params/lab.yaml), always taken down.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from layernet.errors import StageFailed
from layernet.lab import aioext, services
from layernet.stages import aio, arc

import labs


pytestmark = [pytest.mark.lab, pytest.mark.slow]

PREFIX = labs.plan(__file__).prefix
NEGATIVE = labs.plan(__file__, "negative")
DROP_MCR = ['allowlist.drop_hosts=["mcr.microsoft.com", "*.data.mcr.microsoft.com"]',
            # the site check refuses images from a registry the levels cannot reach: the levels import them
            "images.mode={level4: import, level3: import, level2: import}"]


def site_with(plan, *extra: str):
    return labs.site(plan, *extra)


@pytest.fixture(scope="module")
def lab():
    site = site_with(labs.plan(__file__))
    with labs.running(site):
        arc.run(arc.plan(site), site)            # the connected clusters the extensions belong to
        yield site


def test_plan_apply_check_on_every_level_then_the_second_plan_is_empty(lab, tmp_path):
    site = lab
    since = aio.begin()
    p = aio.plan(site)
    levels = [lv.name for lv in site.chain]
    for lvl in levels:
        mine = [s.action for s in p.changes if s.level == lvl]
        assert "create: instance" in mine and "init: extension microsoft.certmanagement" in mine, mine
        assert mine.count("create: broker listener") == 2          # default (TLS 18883) and default-insecure (1883)
    assert next(s for s in p.changes if s.action == "create: broker").detail.startswith("PUT /subscriptions/")

    t0 = time.monotonic()
    applied = aio.run(p, site, run_dir=str(tmp_path))
    rows = aio.check(site, since)
    took = time.monotonic() - t0
    assert [r for r in rows if not r["ok"]] == [], [r for r in rows if not r["ok"]]
    assert len(applied) == len(p.changes) and took < 60
    checks = {(r["level"], r["check"]) for r in rows}
    for lvl in levels:
        assert {(lvl, "instance"), (lvl, "broker"), (lvl, "extension microsoft.iotoperations"),
                (lvl, "mqtt default :18883"), (lvl, "mqtt default-insecure :1883")} <= checks
    tls = [r for r in rows if r["check"] == "mqtt default :18883"]
    # the default listener authenticates its clients (service account tokens): an anonymous one is refused
    assert all(r["observed"].startswith("anonymous client refused") and "over TLS" in r["observed"] for r in tls)

    # every level pulled its images by name through the chain: the lowest level through both proxies
    st = aioext.status(site, "level2")
    pulled = [i for e in st["extensions"].values() for i in e["images"]]
    assert pulled and all(i["ok"] and i["via"] == f"mcr.microsoft.com -> {site.azure.location}.data.mcr.microsoft.com"
                          for i in pulled)
    assert {p["port"] for p in st["broker"]["listeners"]} == {1883, 18883}
    paths = aio.crossings(site, since)
    l2 = paths[(paths["source"] == "level2") & (paths["host"] == "mcr.microsoft.com")]
    assert len(l2) and set(l2["hops"]) == {"level3 ✓ → level4 ✓"} and l2["reached"].all()
    assert "level2 · mcr.microsoft.com" in aio.picture(site, paths).data

    # the requests and answers are kept in the run folder, linked from the resource table
    table = aio.resource_table(p, applied, str(tmp_path))
    assert set(table["level"]) >= set(levels) and table["ok"].all()
    files = list((tmp_path / "aio" / "resources" / "level2").glob("*.json"))
    assert len(files) == len([s for s in p.changes if s.level == "level2"])
    inst = json.loads(next(f for f in files if f.name.endswith("instances~aio-l2-ops.json")).read_text())
    assert inst["response"]["properties"]["provisioningState"] == "Succeeded"
    assert '<a href="aio/resources/level2/' in " ".join(map(str, table["json"]))

    again = aio.plan(site)
    assert again.empty, again.table().to_string()
    assert aio.require_deployed(rows).startswith("Azure IoT Operations deployed on 3 level(s)")


def test_each_levels_broker_is_mosquitto_bound_to_its_node_and_restarted_when_it_stops(lab):
    site = lab
    if not all(r["ok"] for r in aio.check(site)):
        aio.run(aio.plan(site), site)
    for lv in site.levels:
        st = aioext.status(site, lv.name)
        pid = st["broker"]["pid"]
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmd[0].endswith(b"mosquitto")
        conf = Path(st["broker"]["conf"]).read_text()
        assert f"listener 1883 {lv.node_ip}" in conf and f"listener 18883 {lv.node_ip}" in conf
    ok, observed = aioext.mqtt_round_trip(str(site.level("level3").node_ip), 18883, None, timeout=2)
    assert not ok                                     # the TLS listener does not speak plain MQTT
    # the stand-in keeps its broker running: a killed mosquitto comes back on the same listeners
    import os
    import signal

    st = aioext.status(site, "level3")
    os.kill(st["broker"]["pid"], signal.SIGKILL)
    assert services.wait_for(lambda: (aioext.status(site, "level3")["broker"] or {}).get("pid") not in
                             (None, st["broker"]["pid"]), timeout=10)
    ok, observed = aioext.mqtt_round_trip(str(site.level("level3").node_ip), 1883)
    assert ok, observed


def test_a_stopped_extension_stand_in_is_a_repair_in_the_next_plan(lab):
    site = lab
    if not aio.plan(site).empty:
        aio.run(aio.plan(site), site)
    assert services.stop(site, "level2/aio-extension")
    assert not aioext.mqtt_round_trip(str(site.level("level2").node_ip), 1883, timeout=2)[0]   # its broker went too
    p = aio.plan(site)
    assert [(s.level, s.action) for s in p.changes] == [("level2", "restart extensions in the cluster")]
    aio.run(p, site)
    rows = aio.check(site)
    assert [r for r in rows if not r["ok"]] == []
    assert aio.plan(site).empty


def test_dropping_mcr_fails_the_levels_below_the_egress_naming_the_host():
    site = site_with(NEGATIVE, *DROP_MCR)
    with labs.running(site):
        arc.run(arc.plan(site), site)
        since = aio.begin()
        with pytest.raises(StageFailed) as exc:
            aio.run(aio.plan(site), site)
        msg = str(exc.value)
        assert "level3:" in msg and "level2:" in msg and "level4:" not in msg
        assert "mcr.microsoft.com" in msg
        rows = aio.check(site, since)
        bad = {(r["level"], r["check"]): r for r in rows if not r["ok"]}
        assert {lvl for lvl, _ in bad} == {"level3", "level2"}, bad.keys()   # level4 egresses without a proxy
        for lvl in ("level3", "level2"):
            ext = bad[(lvl, "extension microsoft.certmanagement")]
            assert ext["observed"] == "Failed" and "mcr.microsoft.com:443" in ext["hint"], ext
            assert (lvl, "mqtt default-insecure :1883") in bad
            role = bad[(lvl, "hosts required by aio-extensions")]        # the catalog's role, named with the host
            assert role["observed"] == "not reached: *.data.mcr.microsoft.com:443, mcr.microsoft.com:443", role
            assert "required for AIO extensions (aio-extensions)" in role["hint"]
            assert "Not on the site's allow list: *.data.mcr.microsoft.com:443, mcr.microsoft.com:443" in role["hint"]
        assert aioext.status(site, "level2")["extensions"]
        with pytest.raises(StageFailed, match=r"level[32].*mcr\.microsoft\.com"):
            aio.require_deployed(rows)
