"""ARM records of stage 04: byte-stable, the documented shapes, and read back by the lab's stand-ins."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layernet.lab.connector import specs_from_resources
from layernet.lab.dataflow import MappingError, compile_map, plan_from_resources
from layernet.rbac import SENDER as EVENTHUBS_DATA_SENDER
from layernet.render.telemetry import (find, quote, render, render_level, to_json)
from layernet.site import load_site

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "params" / "lab.yaml"
EXAMPLE = ROOT / "params" / "site-example.yaml"


@pytest.fixture(scope="module")
def lab():
    return load_site(LAB, ["telemetry.mqtt.mode=anonymous"])     # the sample's hops (the lab site uses x509)


@pytest.fixture(scope="module")
def recs(lab):
    return render(lab)


def props(rec):
    return rec["body"]["properties"]


def one(resources, kind, name=None):
    found = find(resources, kind, name)
    assert len(found) == 1, [r["id"] for r in resources]
    return found[0]


# ----------------------------------------------------------------------------------------------- stability
def test_byte_identical_across_runs_and_processes():
    first = to_json(render(load_site(LAB)))
    assert first == to_json(render(load_site(LAB)))
    code = ("import sys; from layernet.site import load_site; from layernet.render.telemetry import render, to_json;"
            f"sys.stdout.write(to_json(render(load_site({str(LAB)!r}))))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert outs == {first}


def test_resources_per_level_in_apply_order(recs):
    kinds = {lv: [r["id"].split("/")[-2] for r in rs] for lv, rs in recs.items()}
    assert list(recs) == ["level4", "level3", "level2"]
    assert kinds["level2"] == ["devices", "assets", "listeners", "dataflowEndpoints", "dataflows"]
    assert kinds["level3"] == ["listeners", "dataflowEndpoints", "dataflows"]
    assert kinds["level4"] == ["listeners", "dataflowEndpoints", "dataflows", "roleAssignments"]


# ----------------------------------------------------------------------------------------------- shapes
def test_mqtt_endpoint_is_the_documented_shape(recs):
    ep = one(recs["level2"], "dataflowEndpoints", "to-level3")
    assert props(ep) == {"endpointType": "Mqtt", "mqttSettings": {
        "host": "192.168.103.10:1883", "authentication": {"method": "Anonymous"},
        "tls": {"mode": "Disabled"}}}
    assert props(one(recs["level3"], "dataflowEndpoints", "to-level4"))["mqttSettings"]["host"] == "192.168.104.10:1883"
    assert ep["body"]["extendedLocation"]["type"] == "CustomLocation"
    assert "/Microsoft.IoTOperations/instances/aio-l2-ops/dataflowEndpoints/to-level3" in ep["id"]


def test_kafka_endpoint_uses_the_extension_identity(recs):
    ks = props(one(recs["level4"], "dataflowEndpoints", "eventhubs"))
    assert ks["endpointType"] == "Kafka"
    assert ks["kafkaSettings"]["host"] == "layernet-lab-ehns.servicebus.windows.net:9093"
    assert ks["kafkaSettings"]["authentication"] == {"method": "SystemAssignedManagedIdentity",
                                                     "systemAssignedManagedIdentitySettings": {}}
    assert ks["kafkaSettings"]["tls"] == {"mode": "Enabled"}
    assert not find(recs["level3"], "dataflowEndpoints", "eventhubs")


def test_dataflows_quote_constants_and_keep_topics(recs):
    want = {"level2": ("l2-to-l3", "clusterl2/data/oven1", "product", "flakes", "to-level3", "/l2in/data/oven1"),
            "level3": ("l3-to-l4", "/l2in/data/oven1", "line-config", "cereal", "to-level4", "/l3in/data/oven1"),
            "level4": ("l4-to-eventhubs", "/l3in/data/oven1", "factory-code", "1032", "eventhubs", "aio-telemetry")}
    for level, (name, source, key, value, ep, dest) in want.items():
        ops = props(one(recs[level], "dataflows", name))["operations"]
        assert [o["operationType"] for o in ops] == ["Source", "BuiltInTransformation", "Destination"]
        src = ops[0]["sourceSettings"]
        assert src["dataSources"] == [source] and src["endpointRef"] == "default"
        rules = ops[1]["builtInTransformationSettings"]["map"]
        assert rules[0] == {"type": "PassThrough", "inputs": ["*"], "output": "*"}
        assert rules[1] == {"type": "NewProperties", "inputs": [], "output": f'"{key}"', "expression": f'"{value}"'}
        assert ops[2]["destinationSettings"] == {"endpointRef": ep, "dataDestination": dest}
    assert props(one(recs["level2"], "dataflows"))["operations"][0]["sourceSettings"]["assetRef"] == "oven1"
    assert "assetRef" not in props(one(recs["level3"], "dataflows"))["operations"][0]["sourceSettings"]


def test_adr_device_and_asset(recs):
    dev = props(one(recs["level2"], "devices", "opc-plc"))
    assert dev["endpoints"]["inbound"]["oven-plc"] == {"address": "opc.tcp://192.168.102.10:50000",
                                                       "endpointType": "Microsoft.OpcUa",
                                                       "authentication": {"method": "Anonymous"}}
    asset = props(one(recs["level2"], "assets", "oven1"))
    assert asset["deviceRef"] == {"deviceName": "opc-plc", "endpointName": "oven-plc"}
    ds = asset["datasets"][0]
    assert [(p["name"], p["dataSource"], json.loads(p["dataPointConfiguration"])) for p in ds["dataPoints"]] == [
        ("Temperature", "ns=3;s=SpikeData", {"samplingInterval": 25, "queueSize": 1}),
        ("EnergyUse", "ns=3;s=FastUInt10", {"samplingInterval": 25, "queueSize": 1}),
        ("Weight", "ns=3;s=FastUInt9", {"samplingInterval": 25, "queueSize": 1})]
    assert ds["destinations"] == [{"target": "Mqtt", "configuration": {"topic": "clusterl2/data/oven1",
                                                                       "retain": "Never", "qos": "Qos1"}}]
    assert "/Microsoft.DeviceRegistry/namespaces/lab-adr/assets/oven1" in one(recs["level2"], "assets")["id"]


def test_listener_anonymous_1883(recs):
    lst = props(one(recs["level3"], "listeners", "publiclistener"))
    assert lst["serviceType"] == "LoadBalancer"
    assert lst["ports"] == [{"port": 1883, "protocol": "Mqtt"}]


def test_role_assignment_event_hubs_data_sender(lab, recs):
    ra = one(recs["level4"], "roleAssignments")
    assert ra["id"].startswith("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-layernet-lab/"
                               "providers/Microsoft.EventHub/namespaces/layernet-lab-ehns/providers/Microsoft.Authorization/roleAssignments/")
    assert props(ra)["roleDefinitionId"].endswith(f"/roleDefinitions/{EVENTHUBS_DATA_SENDER}")
    assert props(ra)["principalType"] == "ServicePrincipal"
    with_principal = render_level(lab, "level4", principal="11111111-2222-3333-4444-555555555555")
    ra2 = one(with_principal, "roleAssignments")
    assert props(ra2)["principalId"] == "11111111-2222-3333-4444-555555555555"
    assert ra2["id"] == ra["id"]          # the name is stable: a second apply updates, never duplicates


def test_x509_variant():
    site = load_site(EXAMPLE)
    recs = render(site)
    ep = props(one(recs["level2"], "dataflowEndpoints", "to-level3"))["mqttSettings"]
    assert ep["host"] == "192.168.103.10:8883"
    assert ep["authentication"] == {"method": "X509Certificate", "x509CertificateSettings": {"secretRef": "layernet-mqtt-client"}}
    assert ep["tls"] == {"mode": "Enabled", "trustedCaCertificateConfigMapRef": "layernet-mqtt-ca"}
    port = props(one(recs["level3"], "listeners"))["ports"][0]
    assert port["port"] == 8883 and port["authenticationRef"] == "x509-authn"
    assert port["tls"]["mode"] == "Automatic"
    assert port["tls"]["certManagerCertificateSpec"]["san"]["ip"] == ["192.168.103.10"]
    authn = props(one(recs["level3"], "authentications", "x509-authn"))
    assert authn["authenticationMethods"][0]["method"] == "X509"
    assert "/subscriptions/00000000-0000-0000-0000-000000000000/" in ep_id(recs)


def ep_id(recs):
    return one(recs["level2"], "dataflowEndpoints")["id"]


def test_quote_refuses_what_the_language_cannot_hold():
    assert quote("line-config") == '"line-config"'
    with pytest.raises(ValueError):
        quote('say "hi"')


# ----------------------------------------------------------------------------------------------- read back
def test_stand_ins_read_the_rendered_records(recs):
    plans = plan_from_resources(recs["level2"])
    assert [(p.name, p.source_topic, p.kind, p.host, p.port, p.destination) for p in plans] == [
        ("l2-to-l3", "clusterl2/data/oven1", "mqtt", "192.168.103.10", 1883, "/l2in/data/oven1")]
    msg = {"EnergyUse": {"SourceTimestamp": "2025-04-05T15:55:05.991129Z", "Value": 212}}
    out = plans[0].transform(msg)
    assert out == {**msg, "product": "flakes"}
    kafka = plan_from_resources(recs["level4"])[0]
    assert (kafka.kind, kafka.host, kafka.port, kafka.destination) == (
        "kafka", "layernet-lab-ehns.servicebus.windows.net", 9093, "aio-telemetry")
    assert kafka.transform({"product": "flakes"}) == {"product": "flakes", "factory-code": "1032"}
    spec = specs_from_resources(recs["level2"])[0]
    assert (spec.asset, spec.address, spec.topic, spec.publishing_ms) == (
        "oven1", "opc.tcp://192.168.102.10:50000", "clusterl2/data/oven1", 25)
    assert [(p.name, p.node_id, p.sampling_ms, p.queue_size) for p in spec.points][0] == ("Temperature", "ns=3;s=SpikeData", 25, 1)


def test_mapping_language_constants_and_refusals():
    f = compile_map([{"type": "PassThrough", "inputs": ["*"], "output": "*"},
                     {"type": "NewProperties", "inputs": [], "output": '"a.b"', "expression": '"x"'},
                     {"type": "NewProperties", "inputs": [], "output": "meta.site", "expression": "12"}])
    assert f({"v": 1}) == {"v": 1, "a.b": "x", "meta": {"site": 12}}
    with pytest.raises(MappingError):
        compile_map([{"type": "NewProperties", "inputs": [], "output": "x", "expression": "flakes"}])
    with pytest.raises(MappingError):
        compile_map([{"type": "Compute", "inputs": ["a"], "output": "b", "expression": "$1 * 2"}])


def test_connection_string_auth_renders_a_secret_reference_and_no_role(lab):
    site = load_site(LAB, ["telemetry.eventhubs.auth=connection_string"])
    recs = render(site)["level4"]
    ks = props(one(recs, "dataflowEndpoints", "eventhubs"))["kafkaSettings"]
    assert ks["authentication"] == {"method": "Sasl", "saslSettings": {"saslType": "Plain",
                                                                       "secretRef": "layernet-eventhubs-connection"}}
    assert not find(recs, "roleAssignments")
    assert "SharedAccessKey" not in to_json(recs)


def test_assets_sharing_a_device_render_it_once():
    from layernet.telemetry.loopback import loopback_site

    site = loopback_site(LAB, assets=3)
    recs = render(site)["level2"]
    assert [r["id"].split("/")[-2] for r in recs][:4] == ["devices", "assets", "assets", "assets"]
    assert list(props(one(recs, "devices"))["endpoints"]["inbound"]) == ["oven-plc"]
