"""The allow-list selection as written: catalog groups that exist, host names in their form (extra, dropped and the
lab's refused hosts), and extra hosts with at least one port."""
from __future__ import annotations

from typing import Any

from layernet.data import groups as catalog_groups
from layernet.site.checks.doc import Doc, items, mapping
from layernet.site.names import check_host
from layernet.site.problems import Problem


def check(doc: Doc) -> list[Problem]:
    P: list[Problem] = []

    def add(path: str, value: Any, expected: str) -> None:
        P.append(Problem(doc.file, path, value, expected))

    sel = mapping(doc.raw.get("allowlist"))
    groups = sel.get("groups")
    if isinstance(groups, list):
        known_groups = catalog_groups()
        for j, g in enumerate(groups[:32]):
            if isinstance(g, str) and g not in known_groups:
                add(f"allowlist.groups[{j}]", g, f"a catalog group ({', '.join(known_groups)})")
    for j, e in enumerate(items(sel.get("extra_hosts"))):
        host = e.get("host") if isinstance(e, dict) else e
        field = f"allowlist.extra_hosts[{j}].host" if isinstance(e, dict) else f"allowlist.extra_hosts[{j}]"
        if isinstance(host, str):
            why = check_host(host)
            if why:
                add(field, host, why)
        if isinstance(e, dict) and isinstance(e.get("ports"), list) and not e["ports"]:
            add(f"allowlist.extra_hosts[{j}].ports", [], "at least one port, e.g. [443] (leave 'ports' out for 443)")
    for j, h in enumerate(items(sel.get("drop_hosts"))):
        if isinstance(h, str):
            why = check_host(h)
            if why:
                add(f"allowlist.drop_hosts[{j}]", h, why)
    for j, h in enumerate(items(mapping(doc.raw.get("lab")).get("refused_hosts"))):
        if isinstance(h, str):
            why = check_host(h)
            if why:
                add(f"lab.refused_hosts[{j}]", h, why)
    return P
