"""The lab's telemetry stand-ins of a site, as commands: which process runs on which level, with what arguments.

The stage starts these in the level namespaces (the brokers come from the AIO stage); the loopback runner starts
the same commands on 127.0.0.0/8. Every command reads the level's rendered records file
(`<resources_dir>/<level>.json`, written with `layernet.render.telemetry.to_json`).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from layernet.render.telemetry import KAFKA_ENDPOINT, find, render
from layernet.site import Site
from layernet.site.telemetry import broker_addresses


@dataclass(frozen=True)
class Service:
    name: str                      # "level2/opcplc", "level2/connector", "level3/dataflow"
    level: str
    argv: tuple[str, ...]
    needs_connection_string: bool = False   # authenticates to Event Hubs with the connection string
    eventhubs: bool = False                 # sends to Event Hubs (however it authenticates)
    ready_line: str = ""           # printed once the service is up
    listens: Optional[tuple[str, int]] = field(default=None)


def identity_path(resources_dir: Path, level: str) -> Path:
    """The managed identities a level's cluster holds for its dataflow (`layernet.lab.workload_identity`)."""
    return Path(resources_dir) / f"{level}.identity.json"


def opc_host_port(address: str) -> tuple[str, int]:
    hostport = address.split("://", 1)[1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    return (host, int(port)) if host else (hostport, 4840)


def simulator_tick_ms(site: Site) -> int:
    """The OPC PLC's tick: twice the shortest sampling interval (the sample samples at 500 ms, OPC PLC ticks at 1 s)."""
    ms = [p.sampling_ms for a in site.telemetry.assets for ds in a.datasets for p in ds.data_points]
    return 2 * min(ms) if ms else 1000


def services(site: Site, resources_dir: Path, brokers: Optional[dict[str, tuple[str, int]]] = None,
             ca: Optional[str] = None, client_cert: Optional[str] = None, client_key: Optional[str] = None,
             kafka: bool = True, python: str = sys.executable) -> list[Service]:
    """Every telemetry stand-in of the site in start order: simulators, dataflows (downstream first), connectors.

    `brokers`: level -> (host, port) of its broker (default: node address and the MQTT hop port). `ca` is the CA of
    the brokers' certificates (X.509 mode) and of the Event Hubs endpoint; `kafka=False` leaves out a dataflow
    process whose every dataflow sends to Event Hubs."""
    tel = site.telemetry
    brokers = brokers or broker_addresses(site)
    records = render(site)
    x509 = ["--ca", ca, "--cert", client_cert, "--key", client_key] if tel.mqtt.tls and ca and client_cert else []
    out: list[Service] = []
    seen: set = set()
    for a in tel.assets:
        host, port = opc_host_port(a.address)
        if (host, port) in seen:
            continue
        seen.add((host, port))
        n = len(seen) - 1
        out.append(Service(f"{a.level}/opcplc" + (f"-{n}" if n else ""), a.level,
                           (python, "-m", "layernet.lab.opcplc", "--host", host, "--port", str(port),
                            "--fast-ms", str(simulator_tick_ms(site))), ready_line="opcplc: serving",
                           listens=(host, port)))
    for lv in site.chain:                      # egress first: a dataflow's destination is up before its source
        flows = find(records[lv.name], "dataflows")
        if not flows:
            continue
        dests = [op.get("destinationSettings", {}).get("endpointRef") for f in flows
                 for op in f["body"]["properties"]["operations"] if op["operationType"] == "Destination"]
        to_kafka = KAFKA_ENDPOINT in dests
        if to_kafka and not kafka and all(d == KAFKA_ENDPOINT for d in dests):
            continue
        host, port = brokers[lv.name]
        argv = [python, "-m", "layernet.lab.dataflow", "--resources", str(Path(resources_dir) / f"{lv.name}.json"),
                "--local", f"{host}:{port}", "--name", f"df-{lv.name}",
                "--connection-string-env", tel.eventhubs.connection_string_env]
        if to_kafka:          # the identities the level's cluster holds, for a managed-identity endpoint
            argv += ["--identity", str(identity_path(resources_dir, lv.name))]
        if x509:
            argv += x509 + ["--local-tls"]
        elif ca:
            argv += ["--ca", ca]
        out.append(Service(f"{lv.name}/dataflow", lv.name, tuple(argv), ready_line="dataflow: running",
                           needs_connection_string=to_kafka and tel.eventhubs.auth == "connection_string",
                           eventhubs=to_kafka))
    for level in [lv.name for lv in site.chain if any(a.level == lv.name for a in tel.assets)]:
        host, port = brokers[level]
        argv = [python, "-m", "layernet.lab.connector", "--resources", str(Path(resources_dir) / f"{level}.json"),
                "--broker", f"{host}:{port}", "--name", f"connector-{level}"] + x509
        out.append(Service(f"{level}/connector", level, tuple(argv), ready_line="connector:"))
    return out
