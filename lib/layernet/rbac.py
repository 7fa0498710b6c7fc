"""The Azure Event Hubs data roles (built-in role definitions) and what each allows on a namespace or event hub.

One table for the real-site stage (which assignments to plan and name in hints) and the lab's broker (which
ACLs an assignment grants, `layernet.lab.eventhubs_rbac`).
"""
from __future__ import annotations

SENDER = "2b629674-e913-4c01-ae53-ef4638d8f975"
RECEIVER = "a638d3c7-ab3a-418d-83e6-5f17a39d4fde"
OWNER = "f526a384-b230-433a-b45c-95f59c4a2dec"
ROLE_NAMES = {SENDER: "Azure Event Hubs Data Sender", RECEIVER: "Azure Event Hubs Data Receiver",
              OWNER: "Azure Event Hubs Data Owner"}
ALLOWS = {SENDER: ("produce",), RECEIVER: ("consume",), OWNER: ("produce", "consume")}


def role_name(role_id: str) -> str:
    return ROLE_NAMES.get(role_id.lower(), role_id)


def role_of(body: dict) -> str:
    """The role GUID of a role assignment body (`properties.roleDefinitionId`)."""
    return str(((body or {}).get("properties") or {}).get("roleDefinitionId", "")).rstrip("/").rsplit("/", 1)[-1].lower()
