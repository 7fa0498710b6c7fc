"""Stage 04's desired ARM records, in apply order, each with its level, action and name.

`layernet.render.telemetry` per level (ADR device and asset, the broker listener of the MQTT hops, the dataflow
endpoints, the dataflows, the Event Hubs Data Sender role), plus the Event Hubs namespace and hub and, with a
managed identity, the operator's Data Receiver role. An existing namespace or hub is adopted as it is
(`adoption_notes` says how it differs).
"""
from __future__ import annotations

from typing import Optional

from layernet.apiversions import api_version
from layernet.azure import aio as az_aio, eventhubs_access as access
from layernet.azure.aio import INSTANCE_EXTENSION
from layernet.azure.clients import pick
from layernet.render.telemetry import AioNames, eventhubs_namespace_id, render

EVENTHUB_API = api_version("Microsoft.EventHub/namespaces/eventhubs")      # the one table (layernet.apiversions)
START_SERVICES = "start telemetry services in the cluster"
ACTIONS = {   # the last type of a record's id -> the step's verb phrase
    "namespaces": "create Event Hubs namespace", "eventhubs": "create event hub", "devices": "create device",
    "assets": "create asset", "authentications": "create broker authentication",
    "listeners": "create broker listener", "dataflowEndpoints": "create dataflow endpoint",
    "dataflows": "create dataflow", "roleAssignments": "assign Azure Event Hubs Data Sender",
}
SENDER_ACTION = ACTIONS["roleAssignments"]      # the AIO extension's identity: read from ARM at apply


def _names(site) -> dict:
    """The names stage 03 gave each level's deployment (instance, custom location, ADR namespace)."""
    return {r.level: AioNames(r.instance, r.custom_location, r.adr_namespace) for r in az_aio.levels(site)}


def extension_id(site, level: str) -> str:
    """How the plan names a level's AIO extension: it is found by extension type, whatever its name
    (`az iot ops create` names it azure-iot-operations-<suffix>)."""
    cluster = site.aio.for_level(site, level).cluster
    return f"the {INSTANCE_EXTENSION} extension of connected cluster {cluster}"


def eventhub_records(site) -> list[dict]:
    """The Event Hubs namespace and hub the egress dataflow sends to (a real site usually has them: skips)."""
    tel = site.telemetry
    if not any(f.destination == "eventhubs" for f in tel.dataflows):
        return []
    ns_id = eventhubs_namespace_id(site)
    return [{"id": ns_id, "apiVersion": EVENTHUB_API,
             "body": {"location": site.azure.location, "sku": {"name": "Standard", "tier": "Standard"},
                      "properties": {"kafkaEnabled": True}}},
            {"id": f"{ns_id}/eventhubs/{tel.eventhubs.hub}", "apiVersion": EVENTHUB_API,
             "body": {"properties": {"partitionCount": 1, "messageRetentionInDays": 1}}}]


ADOPTED = ("create Event Hubs namespace", "create event hub")
SKU_RANK = {"basic": 0, "standard": 1, "premium": 2}


def adoption_notes(rec: dict, have: dict) -> list[str]:
    """How an existing Event Hubs namespace or hub differs from what the site would create. It is adopted as it
    is, never changed: a Standard hub's partition count cannot change (and never shrink), and the SKU and
    retention of a plant's namespace are someone's paid, production settings."""
    want, notes = rec["body"], []
    if rec["action"] == "create Event Hubs namespace":
        w, h = pick(want, "sku", "name") or "", pick(have, "sku", "name") or "?"
        if h.lower() != w.lower():
            notes.append(f"SKU {h} (the site would create {w}): kept" +
                         ("; the Kafka endpoint needs Standard or higher" if SKU_RANK.get(h.lower(), 1) < 1 else ""))
        if pick(have, "properties", "kafkaEnabled") is False:
            notes.append("kafkaEnabled is false: the dataflow's Kafka endpoint will not answer")
        return notes
    for field, unit, why in (("partitionCount", "partition(s)", "partitions cannot be decreased"),
                             ("messageRetentionInDays", "day(s) retention", "")):
        w, h = pick(want, "properties", field), pick(have, "properties", field)
        if h is not None and h != w:
            notes.append(f"{h} {unit} (the site would create {w}): kept" + (f"; {why}" if why and h > w else ""))
    return notes


def desired(site, principals: Optional[dict[str, str]] = None, operator: Optional[dict] = None) -> list[dict]:
    """Every record in apply order, each with its level and action: the event hub first (on the egress level),
    then each level's records as render/telemetry gives them, egress level first; with a managed identity, the
    operator's Data Receiver assignment last (`operator`: from `eventhubs_access.operator`)."""
    out = [{**r, "level": site.egress_level} for r in eventhub_records(site)]
    for level, recs in render(site, _names(site), principals or {}).items():
        out += [{**r, "level": level} for r in recs]
    scope = receiver_scope(site)
    if scope and (operator or {}).get("principal"):
        out.append({**access.receiver_record(site.azure.subscription_id or "", scope, operator["principal"],
                                             operator.get("type", "ServicePrincipal")), "level": "eventhubs"})
    for r in out:
        r["action"] = ACTIONS.get(r["id"].rstrip("/").split("/")[-2], "create resource")
        if r["action"].startswith("assign") and access.role_of(r["body"]) == access.RECEIVER:
            r["action"] = access.ASSIGN_RECEIVER
        r["name"] = "/".join(r["id"].rstrip("/").split("/")[-1:])
    return out


def receiver_scope(site) -> Optional[str]:
    """Where the operator needs Azure Event Hubs Data Receiver to read the hub (the namespace), when the site's
    Event Hubs uses Entra identities (auth: managed_identity); None otherwise."""
    tel = site.telemetry
    if tel.eventhubs.auth != "managed_identity" or not any(f.destination == "eventhubs" for f in tel.dataflows):
        return None
    return eventhubs_namespace_id(site)


def records_by_level(site, principals: Optional[dict[str, str]] = None) -> dict[str, list[dict]]:
    """The rendered records per level (no Event Hubs records): what the cluster's connector and dataflows run."""
    return render(site, _names(site), principals or {})
