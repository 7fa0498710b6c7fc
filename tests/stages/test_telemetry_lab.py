"""Stage 04 rehearsed on the lab: the telemetry records PUT through the SDK against the lab's cloud, the OPC PLC,
connector and dataflow stand-ins running those records between the AIO stage's mosquitto brokers, the real Kafka
broker as the event hub; verify taps every broker and reads the hub, message by message.

Negative rehearsals close a crossing at the lab's router exactly as `-p lab.close=[...]` does for a whole run:
the MQTT hop level2 -> level3, and Kafka from level4 to Event Hubs. The stage must fail naming that hop, with the
brokers' evidence of where the messages stopped.

One lab for the module with its own prefix and address plan (a shifted copy of params/lab.yaml), always taken down.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager

import pytest

from layernet.lab import layout
from layernet.errors import StageFailed
from layernet.lab import kafka, netns, services
from layernet.lab import telemetry as lab_telemetry
from layernet.stages import aio, arc, telemetry, telemetry_objects
from layernet.telemetry import records
from layernet.telemetry import charts

import labs


pytestmark = [pytest.mark.lab, pytest.mark.slow]

PREFIX = labs.plan(__file__).prefix


def site_with(*extra: str):
    return labs.site(__file__, *extra)


@pytest.fixture(scope="module")
def lab():
    site = site_with()
    why = kafka.missing()
    if why:
        pytest.skip(why)
    with labs.running(site):
        arc.run(arc.plan(site), site)
        aio.run(aio.plan(site), site)
        yield site


@pytest.fixture(scope="module")
def deployed(lab, tmp_path_factory):
    site = lab
    run_dir = tmp_path_factory.mktemp("telemetry-run")
    p = telemetry.plan(site)
    t0 = time.monotonic()
    applied = telemetry.run(p, site, run_dir=str(run_dir))
    out = telemetry.check(site)
    return {"plan": p, "applied": applied, "out": out, "seconds": time.monotonic() - t0, "run_dir": run_dir}


@contextmanager
def closed(site, *items: str):
    """The running lab with `lab.close` set to `items`, put in place as the stage's check does for a site with
    that -p (MQTT hops closed at the router; an Event Hubs name taken off a level's resolution, its dataflow
    restarted), lifted afterwards."""
    faulty = site_with(f"lab.close={json.dumps(list(items))}")
    note = lab_telemetry.rehearse(faulty)
    assert note and lab_telemetry.rehearse(faulty).startswith("router: ") or not netns.closed_rules(faulty, netns.topology(faulty))
    try:
        yield faulty
    finally:
        lab_telemetry.rehearse(site)
        assert lab_telemetry.rehearse(site) == ""


def flowing_again(site, timeout: float = 40.0) -> None:
    """Wait until messages cross every hop again after a rehearsal put the crossings back: a connection that the
    router silently dropped resumes on TCP's next retransmission, which backs off to several seconds."""
    end = time.monotonic() + timeout
    while True:
        hops = telemetry.messages(site, seconds=2.0)["analysis"].hops
        if (hops["arrived"] > 0).all():
            return
        assert time.monotonic() < end, f"the flow did not cross every hop again within {timeout:g} s:\n{hops}"


def test_every_message_from_the_opc_ua_node_reaches_the_event_hub_enriched(deployed, lab):
    site, p, out = lab, deployed["plan"], deployed["out"]
    actions = [(s.level, s.action) for s in p.changes]
    assert ("site", "register provider") in actions
    eh = [a for a in actions if a[0] != "site" and a[1] not in telemetry_objects.ACTIONS][:2]
    assert eh == [("level4", "create Event Hubs namespace"), ("level4", "create event hub")]
    assert ("level2", "create asset") in actions and ("level4", "assign Azure Event Hubs Data Sender") in actions
    assert ("site", records.START_SERVICES) == actions[-1]
    # X.509 between levels (the lab site's mode): each level's listener on 8883 with its X.509 authentication
    listeners = [s for s in p.steps if s.action == "create broker listener"]
    assert listeners and not any(s.skip for s in listeners)
    assert {s.level for s in p.changes if s.action == "create broker authentication"} == {"level2", "level3", "level4"}
    # the objects the X.509 records name: created in each level's cluster, as a plant's operator would
    named = [s for s in p.steps if s.action in telemetry_objects.ACTIONS]
    assert {s.action for s in named} == {"create Secret", "create ConfigMap", "create Issuer"}
    assert named and not any(s.skip for s in named)
    assert len(deployed["applied"]) == len(p.changes)
    assert list((deployed["run_dir"] / "telemetry" / "resources" / "level2").glob("*assets~oven1.json"))

    rows = out["evidence"]
    assert [r for r in rows if not r["ok"]] == [], [r for r in rows if not r["ok"]]
    a = out["analysis"]
    hops = a.hops[a.hops["route"] == "oven1/default"].sort_values("hop")
    assert list(hops["name"]) == ["level2 broker", "level3 broker", "level4 broker",
                                  "event hub layernet-lab-ehns/aio-telemetry"]
    assert (hops["arrived"] == hops["judged"]).all() and (hops["judged"] > 0).all()
    assert int(hops["bad_or_unenriched"].sum()) == 0
    # no gap added on the way; the source's own (a sample the connector missed while the machine was busy, the
    # same at every hop) stay few, as in tests/lab/test_telemetry_flow.py
    assert hops["sequence_gaps"].nunique() == 1, hops
    assert hops["sequence_gaps"].iloc[0] <= 0.05 * hops["judged"].iloc[0], hops
    assert a.summary["lost"] == 0 and a.summary["delivered"] == a.summary["messages"] > 0
    assert 0 < a.summary["e2e_p50_ms"] <= a.summary["e2e_p99_ms"] < 2000
    assert set(a.latency["segment"]) >= {"level2 broker -> level3 broker",
                                         "level4 broker -> event hub layernet-lab-ehns/aio-telemetry"}
    # the provisioning state of every record, from ARM
    prov = [r for r in rows if r["expected"] == "Succeeded"]
    assert {r["check"].split(" ", 1)[0] for r in prov} >= {"asset", "dataflow", "event"}
    # the stand-ins run in the level namespaces as stage services; the dataflows counted what they carried
    table = services.table(site)
    assert {"level2/telemetry-opcplc", "level2/telemetry-connector", "level4/telemetry-dataflow"} <= set(table)
    assert table["level2/telemetry-opcplc"].ns == f"{PREFIX}-level2"
    res = telemetry.results(p, deployed["applied"], out)
    assert res["lost"] == 0 and res["failed"] == [] and res["messages"] > 0
    labels = list(charts.sankey(a).data[0].node.label)
    assert labels[-1] == "event hub layernet-lab-ehns/aio-telemetry" and not [x for x in labels if "lost" in x]
    assert "event hub layernet-lab-ehns" in telemetry.sankey(out).data      # inline HTML for the report
    verdict = telemetry.require_delivered(out)          # says how many were judged, against the site's minimum
    assert "message(s) judged (" in verdict and "of oven1/default (at least 200))" in verdict and "(budget <= 2000 ms)" in verdict
    assert res["judged_per_dataset"]["oven1/default"] >= 200

    again = telemetry.plan(site)
    assert again.empty, again.table().to_string()


def test_a_client_without_a_certificate_is_refused_by_the_brokers_the_stage_deployed(deployed, lab):
    from layernet.lab import aioext
    from layernet.lab.dataflow import MqttTls, connect_mqtt
    from layernet.telemetry.verify import broker_addresses

    site = lab
    host, port = broker_addresses(site)["level3"]
    assert port == 8883
    # the broker's configuration came from the listener and its X.509 authentication resource
    conf = open(aioext.status(site, "level3")["broker"]["conf"]).read().split(f"listener {port} {host}", 1)[1]
    block = conf.split("\n\n", 1)[0].splitlines()
    assert {"require_certificate true", "allow_anonymous false"} <= set(block)
    for name, tls in (("tls-without-certificate", MqttTls(str(layout.ca_cert_path(site)))), ("plain", None)):
        with pytest.raises((ConnectionError, OSError)):
            c = connect_mqtt(host, port, f"layernet-test-{name}", tls, timeout=3)
            c.disconnect()
            c.loop_stop()
    # the stage's taps present the client certificate and are let in
    c = connect_mqtt(host, port, "layernet-test-with-certificate", telemetry.tap_tls(site), timeout=5)
    c.disconnect()
    c.loop_stop()
    # stage 03's listener without authentication still takes anonymous clients, as it says
    assert aioext.mqtt_round_trip(host, 1883)[0]


def first_failure(out, refusal: str):
    """The first failed evidence row of a proof, once the stage is seen refusing it (`refusal`), and the hops."""
    bad = [r for r in out["evidence"] if not r["ok"]]
    assert bad, out["evidence"]
    with pytest.raises(StageFailed, match=refusal):
        telemetry.require_delivered(out)
    return bad[0], out["analysis"].hops.set_index("hop")


def test_closing_mqtt_between_level2_and_level3_fails_naming_that_hop(deployed, lab):
    site = lab
    faulty = site_with('lab.close=["mqtt level2 -> level3"]')    # what `-p` gives the stage's notebook
    try:
        out = telemetry.check(faulty, seconds=5.0, settle=3.0)   # puts the rehearsal in place, then proves
    finally:
        assert lab_telemetry.rehearse(site) == "router: every crossing open again"
    bad, hops = first_failure(out, r"level3: .*level3 broker.*MQTT level2 -> level3")
    assert bad["check"] == "telemetry oven1/default at level3 broker", bad
    assert "MQTT level2 -> level3" in bad["hint"] and "reached level2 broker" in bad["hint"]
    assert hops.loc[0, "arrived"] > 0 and hops.loc[1, "arrived"] == 0


def test_taking_event_hubs_off_level4s_egress_fails_naming_event_hubs(deployed, lab):
    site = lab
    flowing_again(site)                       # an earlier rehearsal's closed hop may still be resuming
    with closed(site, "eventhubs level4"):
        time.sleep(1.0)
        out = telemetry.messages(site, seconds=5.0)
    bad, hops = first_failure(out, r"eventhubs: .*event hub.*Event Hubs")
    assert bad["level"] == "eventhubs", bad
    assert "Event Hubs" in bad["hint"] and "reached level4 broker" in bad["hint"]
    assert hops.loc[2, "arrived"] > 0 and hops.loc[3, "arrived"] == 0          # the level4 broker saw them
    # the infrastructure probes dial the cloud's address with the name as SNI: the network itself stays open
    assert netns.closed_names(site_with('lab.close=["eventhubs level4"]')) == {
        "level4": ["layernet-lab-ehns.servicebus.windows.net"]}
    # once the name resolves again the flow reaches the hub again, every message enriched
    after = telemetry.messages(site, settle=10.0)      # the site's proof window: 200 messages judged
    assert [r for r in after["evidence"] if not r["ok"]] == []
