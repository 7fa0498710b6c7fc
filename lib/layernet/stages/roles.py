"""The hosts a role requires, proven by the target's stand-ins of the role, among a stage's evidence.

The allow-list catalog marks, per host, which role needs it and whether it is required (allowlist.role_needs).
On the lab, the stand-ins of a role (the Arc agents, the AIO extensions) contact every host required for it
through the level's proxies, and the lab's cluster side reports one row per level (Cluster.role_rows). `checked` puts each
level's row first among that level's rows, so a host the site dropped is the stage's first failure, named with
the role. A real site's cluster side has no such rows: its agents and extensions are the real ones.
"""
from __future__ import annotations

from layernet import context


def checked(site, rows: list[dict], role: str) -> list[dict]:
    """`rows` (a stage's evidence) with the cluster side's row per level for `role` first among each level's rows
    (`site`: a Context or a Site)."""
    return merged(rows, context.of(site).cluster.role_rows(role))


def merged(rows: list[dict], role_rows: list[dict]) -> list[dict]:
    by_level = {r["level"]: r for r in role_rows}
    out, seen = [], set()
    for r in rows:
        if r["level"] in by_level and r["level"] not in seen:
            out.append(by_level[r["level"]])
            seen.add(r["level"])
        out.append(r)
    return out + [r for lvl, r in by_level.items() if lvl not in seen]
