"""Section defaults that follow the site's target: the one place that says what a section left out means on the
lab and what it means on a real site.

The sections' models carry a real site's defaults (stage 02 and 03 run the az CLI on the jump box, stage 02 reads
each node's sysctls). On `target: lab` those cannot work (the lab's jump box has no `az login`, its nodes are
processes, not machines), so a lab site that leaves them out gets what the lab runs: the SDK executors, the lab's
Custom Locations object id, short onboarding waits and a schema-registry storage account named after the lab.
A value the file sets always wins; `-p` overrides are applied before, so they win too.
"""
from __future__ import annotations

import copy
from typing import Any

# the lab's Custom Locations resource provider object id (its ARM stand-in accepts this one, as Azure accepts the
# object id of the real first-party application in a tenant)
LAB_CUSTOM_LOCATIONS_OID = "51dfe1e8-70c6-4de5-a08e-e18aff23d815"
LAB_ONBOARDING_TIMEOUT = 120          # seconds: the lab's agents connect in seconds; a broken lab fails fast


def _lab_storage(raw: dict) -> Any:
    """The lab's schema-registry storage account, unless every level names its own (then None: nothing to fill)."""
    aio = raw.get("aio") if isinstance(raw.get("aio"), dict) else {}
    per = aio.get("levels") if isinstance(aio.get("levels"), dict) else {}
    names = [lv.get("name") for lv in raw.get("levels") or [] if isinstance(lv, dict)] if isinstance(raw.get("levels"), list) else []

    def own(name: Any) -> bool:
        cfg = per.get(name) if isinstance(per.get(name), dict) else {}
        sr = cfg.get("schema_registry") if isinstance(cfg.get("schema_registry"), dict) else {}
        return bool(sr.get("storage_account"))

    if names and all(own(n) for n in names):
        return None
    lab = raw.get("lab") if isinstance(raw.get("lab"), dict) else {}
    prefix = lab.get("prefix", "ln")
    return f"{prefix}schemas" if isinstance(prefix, str) and prefix.isalnum() and prefix.islower() else "lnschemas"


# section -> field -> value (or a function of the raw site) used when the site leaves the field out
TARGET_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "lab": {
        "arc": {"executor": "sdk", "custom_locations_oid": LAB_CUSTOM_LOCATIONS_OID, "node_preflight": False,
                "default_onboarding_timeout": LAB_ONBOARDING_TIMEOUT},
        "aio": {"executor": "sdk"},
        "azure": {"schema_registry_storage": _lab_storage},
    },
    "kube": {},     # the models' own defaults are a real site's
}
REQUIRED = ("azure",)     # sections a site must have: never made up from defaults alone


def with_target_defaults(raw: Any) -> Any:
    """`raw` (a site mapping as read from YAML) with the defaults of its target filled in where a field is left out
    or null. Anything that is not a mapping, or a section of the wrong type, is returned as it is: the model reports
    it. Idempotent; the input is not changed."""
    if not isinstance(raw, dict):
        return raw
    target = raw.get("target")
    defaults = TARGET_DEFAULTS.get(target) if isinstance(target, str) else None
    if not defaults:
        return raw
    out = dict(raw)
    for section, fields in defaults.items():
        have = out.get(section)
        if have is None and section in REQUIRED:
            continue          # the model says the section is missing
        have = {} if have is None else have
        if not isinstance(have, dict):
            continue
        filled = dict(have)
        for key, value in fields.items():
            if filled.get(key) is None:
                value = value(raw) if callable(value) else copy.deepcopy(value)
                if value is not None:
                    filled[key] = value
        if filled != have or section not in out:
            out[section] = filled
    return out

