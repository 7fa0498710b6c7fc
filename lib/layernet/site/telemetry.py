"""Site section `telemetry`: assets, dataflows per level, Event Hubs and the MQTT hops between levels.

The sample's flow, which params/lab.yaml uses as its defaults: an OPC UA asset at the lowest level publishes to its
level's broker; each level's dataflow adds enrichment properties and forwards to the parent level's broker (MQTT,
east-west between the nodes, never through Envoy); the egress level's dataflow sends to Event Hubs over Kafka.

A connection string for Event Hubs is never a site field: the lab (and a real site that chooses it) reads it from
the environment variable named by `eventhubs.connection_string_env`. The cross-checks are in `checks.telemetry` (as
written) and `checks.telemetry_chain` (the validated site).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from layernet.site import names
from layernet.site.base import Strict

DEFAULT_CONNECTION_STRING_ENV = "LAYERNET_EVENTHUBS_CONNECTION_STRING"
_NAME = r"^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$|^[a-z0-9]$"


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
