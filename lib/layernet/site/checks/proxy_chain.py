"""The proxy and DNS chain: a level below egress that reaches Azure (or runs a proxy) needs a proxy on its parent
and a DNS override of its own; the egress level keeps its own DNS, and its proxy names the resolvers it uses."""
from __future__ import annotations

from typing import Any

from layernet.site.checks import levels as level_checks
from layernet.site.checks.doc import Doc
from layernet.site.problems import Problem


def check(doc: Doc) -> list[Problem]:
    levels = level_checks.read(doc)
    egress, by_name = levels.egress, levels.by_name
    P: list[Problem] = []

    def add(path: str, value: Any, expected: str) -> None:
        P.append(Problem(doc.file, path, value, expected))

    # levels on the chain only
    for i, lv in levels.chain:
        name = lv.get("name")
        if name == egress:
            if lv.get("dns_override") is True:
                add(f"levels[{i}].dns_override", True, "false at the egress level: it resolves Azure names with its own (enterprise) DNS")
            continue
        parent = by_name.get(lv.get("parent"))
        if not parent:
            continue
        pi, plv = parent
        if not all(isinstance(x.get(k, False), bool) for x in (lv, plv) for k in ("proxy", "dns_override", "reaches_azure")):
            continue  # a flag that is not true/false is reported by the model
        reaches = lv.get("reaches_azure", True)
        needs = reaches or lv.get("proxy", False)
        if needs and not plv.get("proxy", False):
            why = "runs a proxy" if lv.get("proxy") is True else "reaches Azure"
            add(f"levels[{pi}].proxy", plv.get("proxy", False), f"true: {name} {why} through {plv.get('name')}, so {plv.get('name')} must run a proxy (or set levels[{i}].reaches_azure: false)")
        if reaches and not lv.get("dns_override", False):
            add(f"levels[{i}].dns_override", lv.get("dns_override", False), f"true: {name} reaches Azure, so its DNS must point Azure names at {plv.get('name')}'s proxy (or set reaches_azure: false)")
    if egress in by_name:
        ei, elv = by_name[egress]
        ups = elv.get("dns_upstream") or []
        if elv.get("proxy") is True and not ups:
            add(f"levels[{ei}].dns_upstream", ups, "at least one resolver address: the egress proxy resolves Azure names with it (Envoy must not guess from /etc/resolv.conf)")
    return P
