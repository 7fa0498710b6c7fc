"""Azure role assignments: the Event Hubs data roles (built-in role definitions) and what each allows on a
namespace or event hub, and THE role assignment record every stage and the lab puts.

One table for the real-site stage (which assignments to plan and name in hints) and the lab's broker (which
ACLs an assignment grants, `layernet.lab.eventhubs_rbac`).

`assignment(sub, scope, role, principal, holder)` is the ARM resource
`<scope>/providers/Microsoft.Authorization/roleAssignments/<name>` and its body. Its name is deterministic, so a
re-run finds the assignment it made: the uuid5 of "<scope>|<role>|<holder>" in one fixed namespace, where the
holder is the principal, or, when the principal is only known at apply (the AIO extension's identity, a schema
registry's), the stable name of what owns it (the level, the registry). These are the names stage 04 has given
the AIO extension's Data Sender assignments since its first release, so a site's existing ones keep their ids.
"""
from __future__ import annotations

import uuid

SENDER = "2b629674-e913-4c01-ae53-ef4638d8f975"
RECEIVER = "a638d3c7-ab3a-418d-83e6-5f17a39d4fde"
OWNER = "f526a384-b230-433a-b45c-95f59c4a2dec"
ROLE_NAMES = {SENDER: "Azure Event Hubs Data Sender", RECEIVER: "Azure Event Hubs Data Receiver",
              OWNER: "Azure Event Hubs Data Owner"}
ALLOWS = {SENDER: ("produce",), RECEIVER: ("consume",), OWNER: ("produce", "consume")}
PROVIDER_PATH = "/providers/Microsoft.Authorization/roleAssignments/"
_NAMES = uuid.UUID("6c6e6574-7465-6c65-6d65-7472792d3034")   # fixed: sites hold assignments named with it


def role_name(role_id: str) -> str:
    return ROLE_NAMES.get(role_id.lower(), role_id)


def role_of(body: dict) -> str:
    """The role GUID of a role assignment body (`properties.roleDefinitionId`)."""
    return str(((body or {}).get("properties") or {}).get("roleDefinitionId", "")).rstrip("/").rsplit("/", 1)[-1].lower()


def scope_of(record_id: str) -> str:
    """The scope of a role assignment id (what it is assigned on)."""
    i = record_id.lower().find(PROVIDER_PATH.lower())
    return record_id[:i] if i >= 0 else record_id


def assignment_name(scope: str, role: str, holder: str) -> str:
    """The deterministic name (a GUID) of `role`'s assignment on `scope` to `holder` (see the module docstring)."""
    return str(uuid.uuid5(_NAMES, f"{scope}|{role}|{holder}"))


def definition_id(sub: str, role: str) -> str:
    return f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{role}"


def assignment(sub: str, scope: str, role: str, principal: str, holder: str | None = None,
               principal_type: str = "ServicePrincipal") -> dict:
    """{"id", "body"} of the assignment of `role` (a GUID) on `scope` to `principal` (its object id, or a
    placeholder until apply reads it; then `holder` names what owns it). The caller adds its apiVersion."""
    return {"id": scope + PROVIDER_PATH + assignment_name(scope, role, holder or principal),
            "body": {"properties": {"roleDefinitionId": definition_id(sub, role), "principalId": principal,
                                    "principalType": principal_type}}}
