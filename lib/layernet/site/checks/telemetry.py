"""The telemetry section as written, against the whole site: no Event Hubs secret in the file, levels that exist,
lab.close rehearsals naming a level and its parent, assets (names, endpoints, OPC UA addresses and node ids, dataset
topics and data points) and dataflows (names, topics, destinations, enrichment)."""
from __future__ import annotations

import re
from typing import Any, Optional

from layernet.site.checks.doc import Doc
from layernet.site.problems import HIDDEN, Problem
from layernet.site.telemetry import DEFAULT_CONNECTION_STRING_ENV

_NODE_ID = re.compile(r"(ns=[0-9]+;)?[isgb]=.+", re.ASCII)
_PROPERTY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*", re.ASCII)
_OPC_ADDRESS = re.compile(r"opc\.tcp://([^/:\s]+)(?::([0-9]{1,5}))?(/\S*)?", re.ASCII)


def check(doc: Doc) -> list[Problem]:
    return [Problem(doc.file, path, HIDDEN if value == "(hidden)" else value, expected)
            for path, value, expected in _problems(doc.raw)]


def _problems(raw: dict) -> list[tuple[str, Any, str]]:
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

    out += _close(raw, names, parent)
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
        why = _opc_address(addr)
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
            why = _topic(topic)
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
                why = _topic(f.get(fld))
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


def _close(raw: dict, names: list, parent: dict) -> list[tuple[str, Any, str]]:
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


def _opc_address(addr: Any) -> Optional[str]:
    """opc.tcp://host[:port][/path] with a port of 1-65535 (4840 when left out)."""
    if not isinstance(addr, str):
        return None     # the model reports the type
    m = _OPC_ADDRESS.fullmatch(addr)
    if not m:
        return "an OPC UA endpoint such as opc.tcp://opcplc-000000:50000"
    if m.group(2) is not None and not 1 <= int(m.group(2)) <= 65535:
        return f"an OPC UA endpoint with a TCP port 1-65535 (opc.tcp://{m.group(1)[:60]}:50000); {m.group(2)} is not a port"
    return None


def _topic(topic: Any) -> Optional[str]:
    if not isinstance(topic, str) or not topic:
        return "an MQTT topic such as clusterl2/data/oven1"
    if "+" in topic or "#" in topic:
        return "a topic without the wildcards '+' and '#'"
    if len(topic.encode()) > 65535 or "\x00" in topic:
        return "a topic of at most 65535 bytes without NUL"
    return None
