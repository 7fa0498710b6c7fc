"""The lab's OPC UA connector: reads the rendered ADR device and asset records, subscribes per dataset, publishes.

For every asset record of the level (see `layernet.render.telemetry`) it opens the device's inbound endpoint
(`opc.tcp://...`, anonymous), creates one subscription per dataset (publishing interval from the dataset's
configuration, each data point monitored with its sampling interval and queue size) and, once per notification
batch, publishes the dataset's message to the dataset's MQTT topic on the level's broker with QoS 1, in the shape
the AIO connector uses:

    {"EnergyUse": {"SourceTimestamp": "2025-04-05T15:55:05.991129Z", "Value": 212}, "Temperature": {...}, ...}

Run: python -m layernet.lab.connector --resources level2.json --broker 192.168.102.10:1883
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from layernet import clock
from layernet.lab.dataflow import MqttTls, connect_mqtt
from layernet.render.telemetry import find

log = logging.getLogger("layernet.lab.connector")


@dataclass(frozen=True)
class PointSpec:
    name: str
    node_id: str
    sampling_ms: int
    queue_size: int


@dataclass(frozen=True)
class DatasetSpec:
    asset: str
    name: str
    address: str
    topic: str
    publishing_ms: int
    points: tuple[PointSpec, ...]


def specs_from_resources(resources: list[dict]) -> list[DatasetSpec]:
    """Datasets of every asset record, each joined with its device's inbound endpoint address."""
    devices = {r["id"].rsplit("/", 1)[1]: r["body"]["properties"] for r in find(resources, "devices")}
    out = []
    for rec in find(resources, "assets"):
        asset = rec["id"].rsplit("/", 1)[1]
        props = rec["body"]["properties"]
        ref = props["deviceRef"]
        dev = devices.get(ref["deviceName"])
        if dev is None:
            raise ValueError(f"asset {asset}: device {ref['deviceName']!r} is not among the records")
        ep = dev["endpoints"]["inbound"].get(ref["endpointName"])
        if ep is None or ep.get("endpointType") != "Microsoft.OpcUa":
            raise ValueError(f"asset {asset}: no Microsoft.OpcUa endpoint {ref['endpointName']!r} on {ref['deviceName']}")
        for ds in props["datasets"]:
            conf = json.loads(ds.get("datasetConfiguration") or "{}")
            topics = [d["configuration"]["topic"] for d in ds.get("destinations", []) if d.get("target") == "Mqtt"]
            if len(topics) != 1:
                raise ValueError(f"asset {asset} dataset {ds['name']}: one MQTT destination expected")
            points = []
            for p in ds["dataPoints"]:
                pc = json.loads(p.get("dataPointConfiguration") or "{}")
                points.append(PointSpec(p["name"], p["dataSource"], int(pc.get("samplingInterval", 500)),
                                        int(pc.get("queueSize", 1))))
            out.append(DatasetSpec(asset, ds["name"], ep["address"], topics[0],
                                   int(conf.get("publishingInterval", 500)), tuple(points)))
    return out


def timestamp(dt: Optional[datetime]) -> Optional[str]:
    """OPC UA DateTime as the connector writes it: UTC (a naive one is UTC), microseconds, 'Z'."""
    return None if dt is None else clock.iso(dt)


def _plain(value):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, datetime):
        return timestamp(value)
    return str(value)


class _Dataset:
    """Latest value per data point; one message per notification batch."""

    def __init__(self, spec: DatasetSpec, publish):
        self.spec = spec
        self.publish = publish
        self.by_node: dict[str, PointSpec] = {}
        self.latest: dict[str, dict] = {}
        self.pending = False
        self.sent = 0

    def datachange_notification(self, node, val, data) -> None:
        spec = self.by_node.get(node.nodeid.to_string())
        if spec is None:
            return
        dv = data.monitored_item.Value
        self.latest[spec.name] = {"SourceTimestamp": timestamp(dv.SourceTimestamp or dv.ServerTimestamp),
                                  "Value": _plain(val)}
        if not self.pending:
            # every notification of one publish response is dispatched before this callback runs
            self.pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.pending = False
        if len(self.latest) < len(self.spec.points):
            return          # start-up: the first message waits until every data point has reported once
        msg = {p.name: self.latest[p.name] for p in self.spec.points}
        if msg:
            self.publish(self.spec.topic, json.dumps(msg, separators=(",", ":")).encode())
            self.sent += 1


async def run(specs: list[DatasetSpec], publish, stop: asyncio.Event) -> dict[str, int]:
    """Subscribe every dataset and publish until `stop` is set. One session per dataset: a session's publish
    requests are answered one subscription at a time, so sessions shared by many datasets cap the rate."""
    from asyncua import Client

    clients: dict[str, Client] = {}
    sets = []
    try:
        for spec in specs:
            client = Client(spec.address, timeout=10)
            await client.connect()
            clients[f"{spec.asset}/{spec.name}"] = client
            ds = _Dataset(spec, publish)
            sub = await client.create_subscription(spec.publishing_ms, ds)
            for p in spec.points:
                node = client.get_node(p.node_id)
                ds.by_node[node.nodeid.to_string()] = p
                await sub.subscribe_data_change(node, queuesize=p.queue_size, sampling_interval=p.sampling_ms)
            sets.append(ds)
        await stop.wait()
    finally:
        for client in clients.values():
            try:
                await client.disconnect()
            except Exception:  # the server may be gone already
                pass
    return {f"{d.spec.asset}/{d.spec.name}": d.sent for d in sets}


async def _main(args) -> int:
    resources = json.loads(open(args.resources).read())
    specs = specs_from_resources(resources)
    if args.asset:
        specs = [s for s in specs if s.asset in args.asset]
    host, _, port = args.broker.rpartition(":")
    tls = MqttTls(args.ca, args.cert, args.key) if args.ca else None
    mqtt = connect_mqtt(host, int(port), args.name, tls)

    def publish(topic: str, payload: bytes) -> None:
        mqtt.publish(topic, payload, qos=1)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"connector: {len(specs)} dataset(s) -> {args.broker}", flush=True)
    try:
        sent = await run(specs, publish, stop)
    finally:
        mqtt.disconnect()
        mqtt.loop_stop()
    print(f"connector: sent {json.dumps(sent, sort_keys=True)}", flush=True)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="layernet.lab.connector", description=__doc__.splitlines()[0])
    ap.add_argument("--resources", required=True, help="the level's rendered telemetry records (JSON list)")
    ap.add_argument("--broker", required=True, help="host:port of the level's broker")
    ap.add_argument("--asset", action="append", help="only these assets (repeatable)")
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--name", default="layernet-connector")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        return asyncio.run(_main(args))
    except (OSError, ValueError, KeyError, ConnectionError) as exc:
        print(f"connector: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
