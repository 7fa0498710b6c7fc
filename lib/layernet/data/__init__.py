"""Data shipped with layernet: the endpoint catalog (endpoints.yaml) and the Azure locations (locations.yaml).

`endpoints()`, `groups()` and `roles()` read the catalog once; allowlist.py turns its entries into a site's allow
list and each role's needs, and the site checks use the group names.
"""
from __future__ import annotations

import functools
from importlib import resources

import yaml


@functools.lru_cache(maxsize=1)
def _catalog() -> dict:
    return yaml.safe_load(resources.files("layernet.data").joinpath("endpoints.yaml").read_text())


def groups() -> dict[str, str]:
    """Catalog group -> what it is for."""
    return dict(_catalog()["groups"])


def roles() -> dict[str, str]:
    """Catalog role (who needs hosts: arc-agents, aio-extensions, ...) -> who it is."""
    return dict(_catalog()["roles"])


def endpoints() -> list[dict]:
    """Every catalog entry: host (maybe with <placeholders>), ports, group, purpose, clouds, needs (role ->
    "required" | "optional", maybe "... on PORT[, PORT]")."""
    return [dict(e) for e in _catalog()["endpoints"]]
