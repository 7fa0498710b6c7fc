"""What the ARM stand-in holds, read by lab services outside the cloud process: the role assignments (the Event
Hubs broker's authorization follows them, `layernet.lab.eventhubs_rbac`) and the resources of a type (the AIO
extension whose managed identity the lab's dataflow uses, `layernet.lab.workload_identity`).

Read from the store's file (saved after every change, atomic replace), so a reader sees a resource from the
moment its PUT was accepted until its delete completed, as ARM lists it. Only reads: writes go through ARM.
"""
from __future__ import annotations

import json
from pathlib import Path

ROLE_ASSIGNMENTS = "microsoft.authorization/roleassignments"
SEPARATOR = "/providers/microsoft.authorization/roleassignments/"


def resources(store_path: Path, rtype: str) -> list[dict]:
    """Every stored resource of type `rtype` (case-insensitive), as ARM returns it. Raises OSError / ValueError
    when the file cannot be read."""
    doc = json.loads(Path(store_path).read_text())
    return [res for res in (doc.get("resources") or {}).values()
            if isinstance(res, dict) and str(res.get("type", "")).lower() == rtype.lower()]


def role_assignments(store_path: Path) -> list[dict]:
    """[{"id", "scope", "role", "principal"}] of every role assignment in the store at `store_path`: `role` is
    the role definition's GUID, `scope` the id the assignment is on, all lower-cased (ARM ids are case-insensitive)."""
    out = []
    for res in resources(store_path, ROLE_ASSIGNMENTS):
        rid = str(res.get("id", "")).lower()
        props = res.get("properties") or {}
        if SEPARATOR not in rid or not props.get("principalId") or not props.get("roleDefinitionId"):
            continue
        out.append({"id": rid, "scope": rid.split(SEPARATOR, 1)[0],
                    "role": str(props["roleDefinitionId"]).rstrip("/").rsplit("/", 1)[-1].lower(),
                    "principal": str(props["principalId"]).lower()})
    return sorted(out, key=lambda a: a["id"])
