"""The telemetry section on the validated site: the MQTT hop's port against what else listens on the receiving
level's node (same address), and the dataflows as one chain: each level's source is what its child sends (or one of
its own assets' topics), and each hop lands on a parent that reads it."""
from __future__ import annotations

from typing import Any

from layernet.site.checks.doc import Doc
from layernet.site.problems import Problem


def check(doc: Doc) -> list[Problem]:
    site, fname = doc.site, doc.file
    tel = site.telemetry
    out: list[Problem] = []
    port = tel.mqtt.effective_port
    for f in tel.dataflows:
        parent = site.parent(f.level) if f.destination == "parent" and f.level in {lv.name for lv in site.levels} else None
        taken = site.node_ports(parent) if parent is not None else {}
        if port in taken:
            out.append(Problem(fname, "telemetry.mqtt.port", port, f"an MQTT port nothing else on {parent.name}'s node "
                               f"({parent.node_ip}) listens on: {port} is {taken[port]}'s (taken there: "
                               f"{', '.join(map(str, sorted(taken)))}); the broker's listener shares the node address, "
                               "e.g. 1883 (anonymous) or 8883 (x509)"))
            break
    by_level: dict[str, list[tuple[int, Any]]] = {}
    for i, f in enumerate(tel.dataflows):
        by_level.setdefault(f.level, []).append((i, f))
    for i, f in enumerate(tel.dataflows):
        where = f"telemetry.dataflows[{i}]"
        if f.destination == "parent":
            parent = site.parent(f.level)
            if parent is None:
                continue                        # reported by checks.telemetry
            readers = [j for j, g in by_level.get(parent.name, []) if g.source == f.topic]
            if not readers:
                sources = ", ".join(repr(g.source) for _, g in by_level.get(parent.name, [])) or "none"
                out.append(Problem(fname, f"{where}.topic", f.topic, f"a topic a dataflow of {parent.name} reads as its "
                                   f"source ({sources}): the chain is broken here, so the messages stop at "
                                   f"{parent.name}'s broker; add a dataflow on {parent.name} with source {f.topic!r}"))
        if tel.source_asset(f) is None:
            child = site.child(f.level)
            senders = [g for _, g in by_level.get(child.name, []) if g.destination == "parent"] if child else []
            if not any(g.topic == f.source for g in senders):
                from_child = ", ".join(repr(g.topic) for g in senders) or "nothing"
                own = [ds.topic for a in tel.assets if a.level == f.level for ds in a.datasets]
                what = f"what {child.name} sends ({from_child})" if child else "no child level sends to it"
                out.append(Problem(fname, f"{where}.source", f.source,
                                   f"a topic that reaches {f.level}'s broker: {what}"
                                   + (f", or one of its assets' topics ({', '.join(map(repr, own))})" if own else "")
                                   + "; a hop cannot skip a level"))
    return out
