"""Stage 04 without a lab: the desired records and their order, the plan from an observed state (changes, skips and
their reasons), the apply waves, the rehearsal settings (lab.close) and where the proof says messages stopped."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from layernet.lab import netns
from layernet.site import SiteError, load_site
from layernet.stages import telemetry
from layernet.telemetry import arm as tel_arm, records, waves as tel_waves
from layernet.telemetry.verify import Record, analyse, routes

ROOT = Path(__file__).resolve().parents[2]
SUB = "11111111-2222-3333-4444-555555555555"


@pytest.fixture(scope="module")
def site():
    return telemetry._with_subscription(load_site(ROOT / "params" / "lab.yaml"), SUB)


def state_of(site, resources=None, running=None, principals=None, listeners=None):
    return {"providers": {ns: "Registered" for ns in tel_arm.PROVIDERS}, "principals": principals or {},
            "resources": resources or {}, "listeners": listeners or {}, "running": running}


def test_desired_records_event_hub_first_then_each_level_egress_first(site):
    recs = records.desired(site, {"level4": "p-4"})
    order = [(r["level"], r["action"]) for r in recs]
    assert order[:2] == [("level4", "create Event Hubs namespace"), ("level4", "create event hub")]
    levels = [lv for lv, _ in order]
    assert levels == sorted(levels, key=lambda lv: ["level4", "level3", "level2"].index(lv))
    assert ("level2", "create asset") in order and ("level4", "assign Azure Event Hubs Data Sender") in order
    assert all(r["id"].startswith(f"/subscriptions/{SUB}/resourceGroups/rg-layernet-lab/") for r in recs)
    # the names stage 03 gave the level's deployment: instance and ADR namespace of the cluster
    asset = next(r for r in recs if r["action"] == "create asset")
    assert "/namespaces/aio-l2-ns/assets/oven1" in asset["id"]
    df = next(r for r in recs if r["name"] == "l4-to-eventhubs")
    assert "/instances/aio-l4-ops/dataflowProfiles/default/dataflows/" in df["id"]
    role = next(r for r in recs if r["action"].startswith("assign"))
    assert role["body"]["properties"]["principalId"] == "p-4"
    # the AIO extension is found by type (installers name it azure-iot-operations-<suffix>)
    assert records.extension_id(site, "level4") == "the microsoft.iotoperations extension of connected cluster aio-l4"


def test_everything_missing_plans_every_record_and_the_services(site):
    steps = telemetry.steps(site, state_of(site, running=False))
    changes = [s for s in steps if not s.skip]
    assert len(changes) == len(records.desired(site)) + 1
    assert changes[-1].action == records.START_SERVICES and changes[-1].reason == "records changed"
    role = next(s for s in steps if s.action.startswith("assign"))
    assert "needs the principal" in role.reason
    put = next(s for s in steps if s.action == "create asset")
    assert put.detail.startswith(f"PUT /subscriptions/{SUB}/") and "?api-version=2025-10-01 " in put.detail
    assert json.loads(put.detail.split(" ", 2)[2])["properties"]["deviceRef"] == {"deviceName": "opc-plc",
                                                                                  "endpointName": "oven-plc"}


def test_live_state_skips_and_differences(site):
    recs = records.desired(site, {"level4": "p-4"})
    resources = {r["id"]: {"state": "Succeeded", "missing": []} for r in recs}
    steps = telemetry.steps(site, state_of(site, resources, running=True, principals={"level4": "p-4"}))
    assert all(s.skip for s in steps), [s.as_row() for s in steps if not s.skip]
    assert next(s for s in steps if s.action == records.START_SERVICES).reason == "running"
    df = next(r for r in recs if r["name"] == "l3-to-l4")
    resources[df["id"]] = {"state": "Succeeded", "missing": ["properties.operations[1]"]}
    asset = next(r for r in recs if r["action"] == "create asset")
    resources[asset["id"]] = {"state": "Failed", "missing": []}
    steps = telemetry.steps(site, state_of(site, resources, running=True, principals={"level4": "p-4"}))
    why = {s.target: s.reason for s in steps if not s.skip}
    assert why == {"l3-to-l4": "differs in properties.operations[1]", "oven1": "exists but Failed: PUT again",
                   "OPC PLC, connector, dataflows, event hub": "records changed"}
    # a real site's target cannot tell whether AIO runs the records: no services step at all
    assert not [s for s in telemetry.steps(site, state_of(site, resources)) if s.action == records.START_SERVICES]


def test_a_listener_port_already_served_by_stage_03_is_not_opened_twice():
    site = telemetry._with_subscription(load_site(ROOT / "params" / "lab.yaml", ["telemetry.mqtt.mode=anonymous"]), SUB)
    recs = records.desired(site)
    lst = next(r for r in recs if r["action"] == "create broker listener" and r["level"] == "level3")
    base = lst["id"].rsplit("/", 1)[0]
    served = {f"{base}/default-insecure": [{"port": 1883}], f"{base}/default": [{"port": 18883, "tls": {"mode": "Automatic"}}]}
    step = next(s for s in telemetry.steps(site, state_of(site, listeners=served))
                if s.action == "create broker listener" and s.level == "level3")
    assert step.skip and "default-insecure already serves this port" in step.reason
    # TLS on 18883 does not serve the anonymous 1883 hop
    only_tls = {f"{base}/default": [{"port": 18883, "tls": {"mode": "Automatic"}}]}
    step = next(s for s in telemetry.steps(site, state_of(site, listeners=only_tls))
                if s.action == "create broker listener" and s.level == "level3")
    assert not step.skip and step.reason == "missing"


def test_waves_put_what_a_record_refers_to_first(site):
    steps = [s for s in telemetry.steps(site, state_of(site, running=False)) if not s.skip]
    waves = tel_waves.waves(steps)
    at = {(s.level, s.action): i for i, w in enumerate(waves) for s in w}
    assert at[("level4", "create Event Hubs namespace")] < at[("level4", "create event hub")]
    assert at[("level4", "create Event Hubs namespace")] < at[("level4", "assign Azure Event Hubs Data Sender")]
    assert at[("level2", "create device")] < at[("level2", "create asset")]
    assert at[("level3", "create dataflow endpoint")] < at[("level3", "create dataflow")]
    assert at[("site", records.START_SERVICES)] == len(waves) - 1 and len(waves[-1]) == 1
    assert sum(len(w) for w in waves) == len(steps)



def test_a_plan_that_starts_the_services_lets_the_cluster_side_prepare_before_the_first_wave(site, monkeypatch):
    """What the services need and takes long to start (the lab: the event hub's broker) begins beside the records'
    requests: the cluster side is told before the first wave runs, once, and only when the plan starts services."""
    import dataclasses

    from layernet import context
    from layernet.errors import StageFailed
    from layernet.plan import Step
    from layernet.targets.cluster import Cluster

    calls: list[str] = []

    class Recording(Cluster):
        def prepare_telemetry(self) -> None:
            calls.append("prepare")

        def install_telemetry(self, records: dict) -> str:
            calls.append("install")
            return ""

    ctx = dataclasses.replace(context.build(site), cluster=Recording(site))
    monkeypatch.setattr(tel_waves.context, "of", lambda s: ctx)
    start = Step("site", records.START_SERVICES, "OPC PLC, connector, dataflows, event hub")
    with pytest.raises(StageFailed, match="start telemetry services"):     # no ARM to read the principals from
        tel_waves.run([start], site, None, {"principals": {}}, None, lambda line: None)
    assert calls == ["prepare"]
    calls.clear()
    tel_waves.run([], site, None, {"principals": {}}, None, lambda line: None)
    assert calls == []


def test_lab_close_is_checked_and_closes_only_when_rehearsed():
    site = load_site(ROOT / "params" / "lab.yaml", ['lab.close=["mqtt level2 -> level3", "eventhubs level4"]'])
    topo = netns.topology(site)
    plain = netns.router_ruleset(site, topo)
    assert "closed:" not in plain                                  # the lab's build: every crossing of the model
    assert 'tcp dport 9093 accept comment "jump box to Event Hubs (Kafka)"' in plain
    rehearsed = netns.router_ruleset(site, topo, rehearse=True).splitlines()
    drop = next(i for i, line in enumerate(rehearsed) if "closed: mqtt level2 -> level3" in line)
    assert "ip saddr 192.168.102.10 ip daddr 192.168.103.10 tcp dport 8883 counter drop" in rehearsed[drop]
    assert drop < next(i for i, line in enumerate(rehearsed) if "ct state established" in line)
    assert netns.closed_names(site) == {"level4": ["layernet-lab-ehns.servicebus.windows.net"]}
    for bad in ('lab.close=["mqtt level2 -> level4"]', 'lab.close=["eventhubs level9"]', 'lab.close=["dns level2"]'):
        with pytest.raises(SiteError, match=r"lab\.close\[0\].*'mqtt level2 -> level3'"):
            load_site(ROOT / "params" / "lab.yaml", [bad])


def _msg(ts: float, seq: int, **extra) -> bytes:
    stamp = datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")
    body = {p: {"SourceTimestamp": stamp, "Value": seq} for p in ("Temperature", "EnergyUse", "Weight")}
    return json.dumps({**body, **extra}).encode()


def test_where_messages_stopped_names_the_hop_and_the_last_broker(site):
    route = routes(site)[0]
    t0 = 1_800_000_000.0
    hop0 = [Record(t0 + i, "clusterl2/data/oven1", None, _msg(t0 + i - 0.2, i)) for i in range(8)]
    hop1 = [Record(t0 + i + 0.01, "/l2in/data/oven1", None, _msg(t0 + i - 0.2, i, product="flakes")) for i in range(8)]
    a = analyse([route], {route.label: {0: hop0, 1: hop1, 2: [], 3: []}}, until=t0 + 10)
    hints = telemetry._stopped_hints(a)
    assert list(hints) == ["level4"]
    assert hints["level4"].startswith("MQTT level3 -> level4: oven1/default messages reached level3 broker (8 seen")
    assert "dataflow l3-to-l4" in hints["level4"]
    hop2 = [Record(r.t + 0.01, "/l3in/data/oven1", None,
                   _msg(t0 + i - 0.2, i, product="flakes", **{"line-config": "cereal"})) for i, r in enumerate(hop1)]
    a = analyse([route], {route.label: {0: hop0, 1: hop1, 2: hop2, 3: []}}, until=t0 + 10)
    assert telemetry._stopped_hints(a)["eventhubs"].startswith("Event Hubs: oven1/default messages reached level4 broker")
