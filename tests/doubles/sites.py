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
