"""Clusters and Azure: a kubectl context per level on target kube, Arc cluster names keyed by level names, a location
of the chosen cloud, and the subscription, tenant and resource names in Azure's forms."""
from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from layernet.site import names
from layernet.site.checks import levels as level_checks
from layernet.site.checks.doc import Doc, mapping
from layernet.site.model import CLOUDS
from layernet.site.problems import MISSING, Problem


def known_locations(cloud: str) -> list[str]:
    text = resources.files("layernet.data").joinpath("locations.yaml").read_text()
    return list(yaml.safe_load(text).get(cloud, []))


def check(doc: Doc) -> list[Problem]:
    raw = doc.raw
    levels = level_checks.read(doc)
    P: list[Problem] = []

    def add(path: str, value: Any, expected: str) -> None:
        P.append(Problem(doc.file, path, value, expected))

    if raw.get("target") == "kube":
        for i, lv in levels.good:
            if not lv.get("kube_context"):
                add(f"levels[{i}].kube_context", lv.get("kube_context", MISSING), "the kubectl context of this level's cluster (target: kube)")
    azure = mapping(raw.get("azure"))
    clusters = azure.get("clusters")
    clusters = clusters if isinstance(clusters, dict) else {} if clusters is None else None
    if clusters is not None:
        for k, v in list(clusters.items())[:32]:
            if levels.by_name and k not in levels.by_name:
                add(f"azure.clusters.{k}", v, f"a key that names a level ({levels.listed})")
                continue
            why = names.check_cluster_name(v)
            if why:
                add(f"azure.clusters.{k}", v, why)
    cloud = azure.get("cloud", "public")
    loc = azure.get("location")
    if cloud in CLOUDS and isinstance(loc, str):
        known = known_locations(cloud)
        if loc not in known:
            close = [k for k in known if k.startswith(loc[:4])][:5] if len(loc) >= 2 else []
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            other = [c for c in CLOUDS if c != cloud and loc in known_locations(c)]
            if other:
                hint = f" ({loc} is a location of the {other[0]} cloud: set azure.cloud: {other[0]})"
            add("azure.location", loc, f"an Azure location of the {cloud} cloud, lowercase without spaces{hint}")
    for key, what in (("subscription_id", "subscription"), ("tenant_id", "tenant")):
        why = names.check_guid(azure.get(key), what)
        if why and isinstance(azure.get(key), str):
            add(f"azure.{key}", azure.get(key), why)
    for key, rule in (("resource_group", names.check_resource_group),
                      ("eventhubs_namespace", names.check_eventhubs_namespace),
                      ("schema_registry_storage", names.check_storage_account)):
        why = rule(azure.get(key))
        if why:
            add(f"azure.{key}", azure.get(key), why)
    return P
