"""Site files of other plants than params/lab.yaml: other level names, another number of levels, another address
plan, and only the network sections (no arc, aio, telemetry, images). Tests of "a site that is not our example"
build theirs here so the example's values can never make a check pass by accident."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

# top (egress) first; four Purdue levels with names that are not levelN
NAMES = ("dmz", "plant", "area", "cell")


def plant_site(target: str = "lab", levels: int = 4, names: tuple[str, ...] = NAMES, base: int = 20,
               cloud: str = "203.0.113.0/24", prefix: str = "pl") -> dict:
    """A network-only site: `levels` levels named from `names`, level i on 10.<base>.<i+1>.0/24, the admin network
    10.<base>.0.0/24, the lab's cloud on `cloud` (its DNS at .53). For target kube every level gets a context."""
    import ipaddress

    cnet = ipaddress.IPv4Network(cloud)
    out: list[dict[str, Any]] = []
    for i in range(levels):
        lv: dict[str, Any] = {"name": names[i], "number": min(levels, 5) - i,
                              "network": f"10.{base}.{i + 1}.0/24", "node_ip": f"10.{base}.{i + 1}.7"}
        if i == 0:
            lv.update(proxy=True, dns_override=False, dns_upstream=[str(cnet.network_address + 53)])
        else:
            lv.update(parent=names[i - 1], proxy=i < levels - 1, dns_override=True)
        if target == "kube":
            lv["kube_context"] = f"ctx-{names[i]}"
        out.append(lv)
    site = {
        "name": f"plant-{levels}",
        "target": target,
        "egress_level": names[0],
        "admin": {"network": f"10.{base}.0.0/24", "jump_box_ip": f"10.{base}.0.9"},
        "levels": out,
        "azure": {"location": "westeurope", "resource_group": "rg-other-plant",
                  "clusters": {n: f"k3s-{n}" for n in names[:levels]}},
        "allowlist": {"groups": ["arc-core", "arc-cluster-connect", "aio"]},
    }
    if target == "lab":
        site["lab"] = {"prefix": prefix, "cloud_network": cloud}
    return copy.deepcopy(site)


def write(raw: dict, folder: Path, name: str = "plant.yaml") -> Path:
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def with_telemetry(raw: dict) -> dict:
    """`raw` with the later stages' sections for its chain: an OPC UA asset on the lowest level, one dataflow per
    level forwarding to the parent's broker, the egress level's to Event Hubs; an aio section per level."""
    out = copy.deepcopy(raw)
    chain = [lv["name"] for lv in out["levels"]]           # plant_site lists them egress first
    low = out["levels"][-1]
    out["azure"]["eventhubs_namespace"] = "other-plant-ehns"
    out["azure"]["schema_registry_storage"] = "otherplantsr"
    out["allowlist"]["groups"] = sorted(set(out["allowlist"]["groups"]) | {"eventhubs"})
    topic = f"{low['name']}/data/press1"
    flows = []
    for i in range(len(chain) - 1, 0, -1):
        child, parent = chain[i], chain[i - 1]
        flows.append({"name": f"{child}-to-{parent}", "level": child, "source": topic, "destination": "parent",
                      "topic": f"/{parent}in/data/press1"})
        topic = f"/{parent}in/data/press1"
    flows.append({"name": f"{chain[0]}-to-eventhubs", "level": chain[0], "source": topic, "destination": "eventhubs"})
    out["telemetry"] = {
        "assets": [{"name": "press1", "level": low["name"], "address": f"opc.tcp://{low['node_ip']}:4840",
                    "datasets": [{"name": "main", "topic": f"{low['name']}/data/press1",
                                  "data_points": [{"name": "Pressure", "node_id": "ns=2;s=Pressure"}]}]}],
        "dataflows": flows,
        "eventhubs": {"hub": "press-telemetry", "consumer_group": "verify"},
        "mqtt": {"mode": "x509"},
    }
    out["aio"] = {"levels": {}}
    return out
