"""Site section `telemetry`: assets, dataflows per level, Event Hubs and the MQTT hops between levels.

The sample's flow, which params/lab.yaml uses as its defaults: an OPC UA asset at the lowest level publishes to its
level's broker; each level's dataflow adds enrichment properties and forwards to the parent level's broker (MQTT,
east-west between the nodes, never through Envoy); the egress level's dataflow sends to Event Hubs over Kafka.

A connection string for Event Hubs is never a site field: the lab (and a real site that chooses it) reads it from
the environment variable named by `eventhubs.connection_string_env`.
"""
from __future__ import annotations

import re
from typing import Any, Literal, Optional

from pydantic import Field, field_validator

from layernet.site import names
from layernet.site.base import Strict
from layernet.site.problems import Problem

DEFAULT_CONNECTION_STRING_ENV = "LAYERNET_EVENTHUBS_CONNECTION_STRING"
_NAME = r"^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$|^[a-z0-9]$"
_NODE_ID = re.compile(r"(ns=[0-9]+;)?[isgb]=.+", re.ASCII)
_PROPERTY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*", re.ASCII)
_OPC_ADDRESS = re.compile(r"opc\.tcp://([^/:\s]+)(?::([0-9]{1,5}))?(/\S*)?", re.ASCII)


class DataPoint(Strict):
    name: str                                   # the field name in the message, e.g. Temperature
    node_id: str                                # the OPC UA node, e.g. ns=3;s=SpikeData
    sampling_ms: int = Field(default=500, ge=1, le=3_600_000, strict=True)
    queue_size: int = Field(default=1, ge=1, le=1000, strict=True)


class Dataset(Strict):
    name: str = "default"
    topic: str                                  # MQTT topic on the asset level's broker (kept exactly, '/' included)
    data_points: list[DataPoint]
    publishing_ms: int = Field(default=500, ge=1, le=3_600_000, strict=True)
    sequence_point: Optional[str] = None        # a data point that counts up by one per sample (loss from gaps)


class Asset(Strict):
    name: str = Field(pattern=_NAME)
    level: str                                  # the level whose connector reads the device
    device: str = Field(default="opc-plc", pattern=_NAME)        # ADR device that holds the endpoint
    endpoint: str = Field(default="oven-plc", pattern=_NAME)     # the device's inbound endpoint name
    address: str                                # opc.tcp://host:port of the OPC UA server
    datasets: list[Dataset]


class Dataflow(Strict):
    name: str = Field(pattern=_NAME)
    level: str                                  # the level whose AIO runs this dataflow
    source: str                                 # MQTT topic on the level's own broker
    enrich: dict[str, str] = {}                 # new properties, each a string constant
    destination: Literal["parent", "eventhubs"] = "parent"
    topic: Optional[str] = None                 # the parent broker's topic (destination: parent)


class EventHubs(Strict):
    namespace: Optional[str] = None             # None: azure.eventhubs_namespace
    hub: str = "aio-telemetry"
    auth: Literal["managed_identity", "connection_string"] = "managed_identity"
    connection_string_env: str = Field(default=DEFAULT_CONNECTION_STRING_ENV, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    consumer_group: str = "$Default"

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: Optional[str]) -> Optional[str]:
        return _rule(names.check_eventhubs_namespace, value)

    @field_validator("hub")
    @classmethod
    def _hub(cls, value: str) -> str:
        return _rule(names.check_event_hub, value)

    @field_validator("consumer_group")
    @classmethod
    def _group(cls, value: str) -> str:
        return _rule(names.check_consumer_group, value)


def _rule(check, value, *args):
    why = check(value, *args)
    if why:
        raise ValueError(why)
    return value


class MqttHops(Strict):
    """How a level's dataflow reaches its parent's broker (east-west between the nodes)."""
    mode: Literal["anonymous", "x509"] = "anonymous"
    port: Optional[int] = Field(default=None, ge=1, le=65535, strict=True)   # None: 1883 anonymous, 8883 x509
    listener: str = Field(default="publiclistener", pattern=_NAME)
    issuer: str = "layernet-mqtt-issuer"        # x509: cert-manager issuer of the listener's server certificate
    client_cert_secret: str = "layernet-mqtt-client"          # x509: the dataflow endpoint's client certificate
    trusted_ca_configmap: str = "layernet-mqtt-ca"            # x509: CA of the parent's server certificate

    @field_validator("issuer", "client_cert_secret", "trusted_ca_configmap")
    @classmethod
    def _k8s(cls, value: str, info) -> str:
        kind = {"issuer": "cert-manager Issuer", "client_cert_secret": "Kubernetes Secret",
                "trusted_ca_configmap": "Kubernetes ConfigMap"}[info.field_name]
        return _rule(names.check_k8s_name, value, kind)

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else (8883 if self.mode == "x509" else 1883)

    @property
    def tls(self) -> bool:
        return self.mode == "x509"


class Proof(Strict):
    """What stage 04's message-level proof must see: how many messages per asset dataset it judges (the window is
    made long enough at the dataset's publishing interval) and the end-to-end p99 it allows."""
    min_messages: int = Field(default=200, ge=1, le=1_000_000, strict=True)
    p99_ms: float = Field(default=2000.0, gt=0, le=3_600_000)


class Telemetry(Strict):
    eventhubs_from_levels: list[str] = []       # levels below the egress level that send to Event Hubs themselves
    assets: list[Asset] = []
    dataflows: list[Dataflow] = []
    eventhubs: EventHubs = EventHubs()
    mqtt: MqttHops = MqttHops()
    proof: Proof = Proof()

    def asset(self, name: str) -> Asset:
        for a in self.assets:
            if a.name == name:
                return a
        raise KeyError(f"no asset named {name!r}")

    def dataflows_of(self, level: str) -> list[Dataflow]:
        return [d for d in self.dataflows if d.level == level]

    def source_asset(self, flow: Dataflow) -> Optional[tuple[Asset, Dataset]]:
        """The asset dataset whose topic a dataflow reads, if any."""
        for a in self.assets:
            if a.level == flow.level:
                for ds in a.datasets:
                    if ds.topic == flow.source:
                        return a, ds
        return None


def eventhubs_namespace(telemetry: Telemetry, azure_namespace: Optional[str]) -> Optional[str]:
    return telemetry.eventhubs.namespace or azure_namespace


def broker_addresses(site) -> dict[str, tuple[str, int]]:
    """Where a tap reaches each level's broker: the node address and the listener port of the MQTT hops."""
    port = site.telemetry.mqtt.effective_port
    return {lv.name: (str(lv.node_ip), port) for lv in site.levels}


# ----------------------------------------------------------------------------------------------- checks
def check_raw(raw: dict) -> list[tuple[str, Any, str]]:
    """Cross-field checks on the raw site mapping: (field path, bad value, what is expected)."""
    out: list[tuple[str, Any, str]] = []
    tel = raw.get("telemetry")
    if not isinstance(tel, dict):
        return out
    levels = [lv for lv in raw.get("levels") or [] if isinstance(lv, dict)]
    names = [lv.get("name") for lv in levels]
    parent = {lv.get("name"): lv.get("parent") for lv in levels}
    egress = raw.get("egress_level")
    ehfrom = tel.get("eventhubs_from_levels") or []
    eh = tel.get("eventhubs") if isinstance(tel.get("eventhubs"), dict) else {}
    for key in ("connection_string", "connectionString", "password", "sas_key", "key"):
        if key in eh:
            out.append((f"telemetry.eventhubs.{key}", "(hidden)",
                        "never a site field: export the connection string in the environment variable named by "
                        f"telemetry.eventhubs.connection_string_env (default {DEFAULT_CONNECTION_STRING_ENV}) and remove this key"))
    for j, lv in enumerate(ehfrom if isinstance(ehfrom, list) else []):
        if names and lv not in names:
            out.append((f"telemetry.eventhubs_from_levels[{j}]", lv, f"a level name ({', '.join(map(str, names))})"))

    out += check_close(raw, names, parent)
    assets = tel.get("assets") or []
    topics: dict[tuple[str, str], str] = {}
    seen_assets: set = set()
    endpoint_address: dict[tuple, Any] = {}
    for i, a in enumerate(assets if isinstance(assets, list) else []):
        if not isinstance(a, dict):
            continue
        ep = (a.get("level"), a.get("device", "opc-plc"), a.get("endpoint", "oven-plc"))
        if ep in endpoint_address and endpoint_address[ep] != a.get("address"):
            out.append((f"telemetry.assets[{i}].address", a.get("address"),
                        f"the address the device's endpoint {ep[2]!r} already has ({endpoint_address[ep]}), "
                        "or another endpoint name"))
        endpoint_address.setdefault(ep, a.get("address"))
        if a.get("name") in seen_assets:
            out.append((f"telemetry.assets[{i}].name", a.get("name"), "a name no other asset uses"))
        seen_assets.add(a.get("name"))
        if names and a.get("level") not in names:
            out.append((f"telemetry.assets[{i}].level", a.get("level"), f"a level name ({', '.join(map(str, names))})"))
        addr = a.get("address")
        why = check_opc_address(addr)
        if why:
            out.append((f"telemetry.assets[{i}].address", addr, why))
        dataset_names: dict[Any, int] = {}
        for k, ds in enumerate(a.get("datasets") or [] if isinstance(a.get("datasets"), list) else []):
            if not isinstance(ds, dict):
                continue
            where = f"telemetry.assets[{i}].datasets[{k}]"
            dname = ds.get("name", "default")
            if isinstance(dname, str) and dname in dataset_names:
                out.append((f"{where}.name", dname, f"a name no other dataset of the asset uses (datasets[{dataset_names[dname]}] "
                            "has it; ADR keys an asset's datasets by name)"))
            elif isinstance(dname, str):
                dataset_names[dname] = k
            topic = ds.get("topic")
            why = check_topic(topic)
            if why:
                out.append((f"{where}.topic", topic, why))
            elif isinstance(a.get("level"), str):
                topics[(a["level"], topic)] = a.get("name")
            pts = ds.get("data_points") or []
            pnames = [p.get("name") for p in pts if isinstance(p, dict)]
            for m, p in enumerate(pts):
                if not isinstance(p, dict):
                    continue
                nid = p.get("node_id")
                if isinstance(nid, str) and not _NODE_ID.fullmatch(nid):
                    out.append((f"{where}.data_points[{m}].node_id", nid, "an OPC UA node id such as ns=3;s=SpikeData"))
                if pnames.count(p.get("name")) > 1:
                    out.append((f"{where}.data_points[{m}].name", p.get("name"), "a name no other data point of the dataset uses"))
            seq = ds.get("sequence_point")
            if seq is not None and seq not in pnames:
                out.append((f"{where}.sequence_point", seq, f"the name of one of the dataset's data points ({', '.join(map(str, pnames))})"))

    flows = tel.get("dataflows") or []
    seen_flows: set = set()
    for i, f in enumerate(flows if isinstance(flows, list) else []):
        if not isinstance(f, dict):
            continue
        where = f"telemetry.dataflows[{i}]"
        if f.get("name") in seen_flows:
            out.append((f"{where}.name", f.get("name"), "a name no other dataflow uses"))
        seen_flows.add(f.get("name"))
        lv = f.get("level")
        if names and lv not in names:
            out.append((f"{where}.level", lv, f"a level name ({', '.join(map(str, names))})"))
            continue
        for fld in ("source", "topic"):
            if f.get(fld) is not None:
                why = check_topic(f.get(fld))
                if why:
                    out.append((f"{where}.{fld}", f.get(fld), why))
        dest = f.get("destination", "parent")
        if dest == "parent":
            if names and not parent.get(lv):
                out.append((f"{where}.destination", dest, f"eventhubs: {lv} has no parent level to forward to"))
            if not f.get("topic"):
                out.append((f"{where}.topic", f.get("topic"), "the topic on the parent's broker, e.g. /l2in/data/oven1"))
        elif dest == "eventhubs":
            if lv != egress and lv not in ehfrom:
                out.append((f"{where}.destination", dest, f"parent: only the egress level ({egress}) and telemetry.eventhubs_from_levels reach Event Hubs"))
            if f.get("topic") is not None:
                out.append((f"{where}.topic", f.get("topic"), "no topic for destination eventhubs (the hub is telemetry.eventhubs.hub); remove it"))
            if not (eh.get("namespace") or (raw.get("azure") or {}).get("eventhubs_namespace")):
                out.append(("telemetry.eventhubs.namespace", eh.get("namespace"), "an Event Hubs namespace (here or azure.eventhubs_namespace)"))
        for key, val in (f.get("enrich") or {}).items() if isinstance(f.get("enrich"), dict) else ():
            if not isinstance(key, str) or not _PROPERTY.fullmatch(key):
                out.append((f"{where}.enrich.{key}", key, "a property name of letters, digits, '_' and '-' starting with a letter"))
            if isinstance(val, str) and ('"' in val or "\\" in val):
                out.append((f"{where}.enrich.{key}", val, "a constant without double quotes or backslashes"))
    return out


def check_close(raw: dict, names: list, parent: dict) -> list[tuple[str, Any, str]]:
    """lab.close (rehearsals): "mqtt <child> -> <parent>" for a level and its parent, or "eventhubs <level>"."""
    out: list[tuple[str, Any, str]] = []
    close = (raw.get("lab") or {}).get("close") if isinstance(raw.get("lab"), dict) else None
    for i, item in enumerate(close if isinstance(close, list) else []):
        words = item.replace("->", " ").split() if isinstance(item, str) else []
        ok = (len(words) == 3 and words[0] == "mqtt" and words[1] in names and parent.get(words[1]) == words[2]) \
            or (len(words) == 2 and words[0] == "eventhubs" and words[1] in names)
        if not ok:
            pairs = ", ".join(f"'mqtt {c} -> {p}'" for c, p in parent.items() if p)
            out.append((f"lab.close[{i}]", item, f"{pairs} or 'eventhubs <level>' (a level and its parent)"))
    return out


def check_opc_address(addr: Any) -> Optional[str]:
    """opc.tcp://host[:port][/path] with a port of 1-65535 (4840 when left out)."""
    if not isinstance(addr, str):
        return None     # the model reports the type
    m = _OPC_ADDRESS.fullmatch(addr)
    if not m:
        return "an OPC UA endpoint such as opc.tcp://opcplc-000000:50000"
    if m.group(2) is not None and not 1 <= int(m.group(2)) <= 65535:
        return f"an OPC UA endpoint with a TCP port 1-65535 (opc.tcp://{m.group(1)[:60]}:50000); {m.group(2)} is not a port"
    return None


def check_site(site, fname: str = "<site>") -> list:
    """Checks that need the validated site: the MQTT hop's port against the ports the receiving level's proxy
    listens on (same node address), and the dataflows as one chain: each level's source is what its child sends
    (or one of its own assets' topics), and each hop lands on a parent that reads it."""
    tel = site.telemetry
    out: list = []
    port = tel.mqtt.effective_port
    for f in tel.dataflows:
        parent = site.parent(f.level) if f.destination == "parent" and f.level in {lv.name for lv in site.levels} else None
        taken = site.node_ports(parent) if parent is not None else {}
        if port in taken:
            out.append(Problem(fname, "telemetry.mqtt.port", port, f"an MQTT port nothing else on {parent.name}'s node "
                               f"({parent.node_ip}) listens on: {port} is {taken[port]}'s (taken there: "
                               f"{', '.join(map(str, sorted(taken)))}); the broker's listener shares the node address, "
                               "e.g. 1883 (anonymous) or 8883 (x509)"))
            break
    by_level: dict[str, list[tuple[int, Any]]] = {}
    for i, f in enumerate(tel.dataflows):
        by_level.setdefault(f.level, []).append((i, f))
    for i, f in enumerate(tel.dataflows):
        where = f"telemetry.dataflows[{i}]"
        if f.destination == "parent":
            parent = site.parent(f.level)
            if parent is None:
                continue                        # reported by check_raw
            readers = [j for j, g in by_level.get(parent.name, []) if g.source == f.topic]
            if not readers:
                sources = ", ".join(repr(g.source) for _, g in by_level.get(parent.name, [])) or "none"
                out.append(Problem(fname, f"{where}.topic", f.topic, f"a topic a dataflow of {parent.name} reads as its "
                                   f"source ({sources}): the chain is broken here, so the messages stop at "
                                   f"{parent.name}'s broker; add a dataflow on {parent.name} with source {f.topic!r}"))
        if tel.source_asset(f) is None:
            child = site.child(f.level)
            senders = [g for _, g in by_level.get(child.name, []) if g.destination == "parent"] if child else []
            if not any(g.topic == f.source for g in senders):
                from_child = ", ".join(repr(g.topic) for g in senders) or "nothing"
                own = [ds.topic for a in tel.assets if a.level == f.level for ds in a.datasets]
                what = f"what {child.name} sends ({from_child})" if child else "no child level sends to it"
                out.append(Problem(fname, f"{where}.source", f.source,
                                   f"a topic that reaches {f.level}'s broker: {what}"
                                   + (f", or one of its assets' topics ({', '.join(map(repr, own))})" if own else "")
                                   + "; a hop cannot skip a level"))
    return out


def check_topic(topic: Any) -> Optional[str]:
    if not isinstance(topic, str) or not topic:
        return "an MQTT topic such as clusterl2/data/oven1"
    if "+" in topic or "#" in topic:
        return "a topic without the wildcards '+' and '#'"
    if len(topic.encode()) > 65535 or "\x00" in topic:
        return "a topic of at most 65535 bytes without NUL"
    return None
