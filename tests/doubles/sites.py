"""Site models for stage tests: the example site's YAML with a few fields changed, validated by the Site model."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
_RAW = yaml.safe_load((ROOT / "params" / "site-example.yaml").read_text())


def example_site(**sections):
    """The example site (target kube, three levels); `sections` replace or extend top-level sections, e.g.
    example_site(arc={"custom_locations_oid": "..."})."""
    from layernet.site import Site

    raw = copy.deepcopy(_RAW)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return Site.model_validate(raw)


def four_level_lab(prefix: str, second_octet: int, **sections) -> dict:
    """A lab site that is NOT params/lab.yaml: four levels with other names (corp -> plant -> area -> cell, Purdue 5
    to 2), the address plan 10.<second_octet>.0.0/16, the cloud on 203.0.113.0/24, and only the network sections
    (no telemetry, no Event Hubs namespace, no arc/aio). `sections` replace or add top-level sections. Returns the
    raw document (write it with yaml.safe_dump and load it with load_site, as a user's file would be)."""
    net = f"10.{second_octet}"
    names = [("corp", 5), ("plant", 4), ("area", 3), ("cell", 2)]
    levels = []
    for i, (name, number) in enumerate(names):
        lv = {"name": name, "number": number, "network": f"{net}.{number}0.0/24", "node_ip": f"{net}.{number}0.20",
              "proxy": i < len(names) - 1, "dns_override": i > 0}
        if i == 0:
            lv["dns_upstream"] = ["203.0.113.53"]
        else:
            lv["parent"] = names[i - 1][0]
        levels.append(lv)
    raw = {
        "name": "four-plant", "target": "lab", "egress_level": "corp",
        "admin": {"network": f"{net}.0.0/24", "jump_box_ip": f"{net}.0.50"},
        "levels": levels,
        "azure": {"location": "westeurope", "resource_group": "rg-four-plant",
                  "clusters": {name: f"aio-{name}" for name, _ in names}},
        "lab": {"prefix": prefix, "cloud_network": "203.0.113.0/24"},
    }
    raw.update(sections)
    return raw
