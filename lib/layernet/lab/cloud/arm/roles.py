"""The role assignments the ARM stand-in holds, for lab services outside the cloud process (the Event Hubs
broker's authorization follows them: `layernet.lab.eventhubs_rbac`).

Read from the store's file (saved after every change, atomic replace), so a reader sees each assignment from the
moment its PUT was accepted until its delete completed, as ARM lists them.
"""
from __future__ import annotations

import json
from pathlib import Path

TYPE = "microsoft.authorization/roleassignments"
SEPARATOR = "/providers/microsoft.authorization/roleassignments/"


def role_assignments(store_path: Path) -> list[dict]:
    """[{"id", "scope", "role", "principal"}] of every role assignment in the store at `store_path`: `role` is
    the role definition's GUID, `scope` the id the assignment is on, all lower-cased (ARM ids are case-insensitive).
    Raises OSError / ValueError when the file cannot be read."""
    doc = json.loads(Path(store_path).read_text())
    out = []
    for res in (doc.get("resources") or {}).values():
        if not isinstance(res, dict) or str(res.get("type", "")).lower() != TYPE:
            continue
        rid = str(res.get("id", "")).lower()
        props = res.get("properties") or {}
        if SEPARATOR not in rid or not props.get("principalId") or not props.get("roleDefinitionId"):
            continue
        out.append({"id": rid, "scope": rid.split(SEPARATOR, 1)[0],
                    "role": str(props["roleDefinitionId"]).rstrip("/").rsplit("/", 1)[-1].lower(),
                    "principal": str(props["principalId"]).lower()})
    return sorted(out, key=lambda a: a["id"])
