"""Site section `telemetry`: the template documents every field, the sample defaults, and precise errors."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from layernet.site import SiteError, load_site, validate_site
from layernet.site.telemetry import Telemetry

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "params" / "lab.yaml"
EXAMPLE = ROOT / "params" / "site-example.yaml"


def _fields(model) -> set[str]:
    out = set()
    for name, f in model.model_fields.items():
        out.add(name)
        ann = f.annotation
        for arg in (ann, *getattr(ann, "__args__", ())):
            for inner in (arg, *getattr(arg, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    out |= _fields(inner)
    return out


def test_every_telemetry_field_is_in_the_template():
    text = EXAMPLE.read_text()
    fields = _fields(Telemetry)
    assert {"assets", "datasets", "data_points", "node_id", "enrich", "eventhubs", "mqtt", "client_cert_secret"} <= fields
    for name in sorted(fields):
        assert re.search(rf"\b{name}:", text), name


def test_lab_defaults_are_the_sample():
    site = load_site(LAB)
    tel = site.telemetry
    assert tel.eventhubs_from_levels == ["level3"]
    a = tel.asset("oven1")
    assert a.level == "level2"
    ds = a.datasets[0]
    assert ds.topic == "clusterl2/data/oven1"
    assert [(p.name, p.node_id, p.sampling_ms, p.queue_size) for p in ds.data_points] == [
        ("Temperature", "ns=3;s=SpikeData", 25, 1), ("EnergyUse", "ns=3;s=FastUInt10", 25, 1),
        ("Weight", "ns=3;s=FastUInt9", 25, 1)]
    assert [(f.level, f.source, f.enrich, f.destination, f.topic) for f in tel.dataflows] == [
        ("level2", "clusterl2/data/oven1", {"product": "flakes"}, "parent", "/l2in/data/oven1"),
        ("level3", "/l2in/data/oven1", {"line-config": "cereal"}, "parent", "/l3in/data/oven1"),
        ("level4", "/l3in/data/oven1", {"factory-code": "1032"}, "eventhubs", None)]
    assert (tel.mqtt.mode, tel.mqtt.effective_port) == ("x509", 8883)
    assert tel.eventhubs.namespace is None and site.azure.eventhubs_namespace == "layernet-lab-ehns"


def test_example_recommends_x509():
    tel = load_site(EXAMPLE).telemetry
    assert (tel.mqtt.mode, tel.mqtt.effective_port, tel.eventhubs.auth) == ("x509", 8883, "managed_identity")


def _problems(mutate) -> list[tuple[str, str]]:
    raw = yaml.safe_load(LAB.read_text())
    mutate(raw)
    with pytest.raises(SiteError) as info:
        validate_site(raw, "t.yaml")
    return [(p.path, p.expected) for p in info.value.problems]


def test_connection_string_is_never_a_site_field():
    secret = "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=SECRETVALUE"

    def m(raw):
        raw["telemetry"]["eventhubs"]["connection_string"] = secret

    raw = yaml.safe_load(LAB.read_text())
    m(raw)
    with pytest.raises(SiteError) as info:
        validate_site(raw, "t.yaml")
    text = str(info.value)
    assert "SECRETVALUE" not in text
    assert any(p.path == "telemetry.eventhubs.connection_string" and "LAYERNET_EVENTHUBS_CONNECTION_STRING" in p.expected
               for p in info.value.problems)


@pytest.mark.parametrize("mutate, path, phrase", [
    (lambda r: r["telemetry"]["dataflows"][0].update(level="level9"), "telemetry.dataflows[0].level", "a level name"),
    (lambda r: r["telemetry"]["dataflows"][2].update(destination="parent", topic="/x"), "telemetry.dataflows[2].destination", "no parent"),
    (lambda r: r["telemetry"]["dataflows"][0].update(destination="eventhubs", topic=None), "telemetry.dataflows[0].destination", "only the egress level"),
    (lambda r: r["telemetry"]["dataflows"][1].update(topic=None), "telemetry.dataflows[1].topic", "the topic on the parent's broker"),
    (lambda r: r["telemetry"]["dataflows"][1].update(source="/l2in/+/oven1"), "telemetry.dataflows[1].source", "without the wildcards"),
    (lambda r: r["telemetry"]["dataflows"][0]["enrich"].update(product='fla"kes'), "telemetry.dataflows[0].enrich.product", "without double quotes"),
    (lambda r: r["telemetry"]["assets"][0]["datasets"][0].update(sequence_point="Pressure"), "telemetry.assets[0].datasets[0].sequence_point", "one of the dataset's data points"),
    (lambda r: r["telemetry"]["assets"][0]["datasets"][0]["data_points"][0].update(node_id="SpikeData"), "telemetry.assets[0].datasets[0].data_points[0].node_id", "ns=3;s=SpikeData"),
    (lambda r: r["telemetry"]["assets"][0].update(address="http://plc:50000"), "telemetry.assets[0].address", "opc.tcp://"),
    (lambda r: r["telemetry"]["mqtt"].update(mode="tls"), "telemetry.mqtt.mode", "anonymous"),
    (lambda r: r["telemetry"]["assets"].append({**r["telemetry"]["assets"][0], "name": "oven2",
                                                "address": "opc.tcp://other:4840"}),
     "telemetry.assets[1].address", "the address the device's endpoint 'oven-plc' already has"),
    (lambda r: r["telemetry"]["eventhubs_from_levels"].append("level7"), "telemetry.eventhubs_from_levels[1]", "a level name"),
])
def test_bad_telemetry_is_named_precisely(mutate, path, phrase):
    got = _problems(mutate)
    assert any(p == path and phrase.lower() in e.lower() for p, e in got), got


def test_a_number_as_enrichment_value_is_refused():
    got = _problems(lambda r: r["telemetry"]["dataflows"][2]["enrich"].update({"factory-code": 1032}))
    assert [p for p, _ in got] == ["telemetry.dataflows[2].enrich.factory-code"]
