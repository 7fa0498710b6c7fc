"""Stage 04's Event Hubs identity plan without a lab: the operator's Data Receiver assignment when the site uses
managed identities (planned for the operator's object id, or said to be missing with role and scope), none with a
connection string; role assignment rows name role, principal and scope."""
from __future__ import annotations

from pathlib import Path

from layernet.azure import eventhubs_access as access
from layernet.rbac import RECEIVER, SENDER
from layernet.site import load_site
from layernet.stages import telemetry
from layernet.telemetry import records, waves

ROOT = Path(__file__).resolve().parents[2]
SUB = "11111111-2222-3333-4444-555555555555"


def lab_site(*extra: str):
    return load_site(ROOT / "params" / "lab.yaml", [f"azure.subscription_id={SUB}", *extra])


def state(operator):
    return {"providers": {}, "principals": {"level4": "ext-principal"}, "operator": operator, "resources": {},
            "listeners": {}, "running": None}


def test_the_operator_gets_a_receiver_assignment_on_the_namespace():
    site = lab_site()
    scope = records.receiver_scope(site)
    assert scope == (f"/subscriptions/{SUB}/resourceGroups/{site.azure.resource_group}/providers/"
                     f"Microsoft.EventHub/namespaces/{site.azure.eventhubs_namespace}")
    steps = telemetry.steps(site, state({"principal": "op-oid", "type": "User"}))
    recv = [s for s in steps if s.action == access.ASSIGN_RECEIVER]
    assert len(recv) == 1 and not recv[0].skip and recv[0].level == "eventhubs"
    assert f"PUT {scope}/providers/Microsoft.Authorization/roleAssignments/" in recv[0].detail
    assert f"roleDefinitions/{RECEIVER}" in recv[0].detail and '"principalId":"op-oid"' in recv[0].detail
    assert '"principalType":"User"' in recv[0].detail
    sender = [s for s in steps if s.action == "assign Azure Event Hubs Data Sender"]
    assert len(sender) == 1 and f"roleDefinitions/{SENDER}" in sender[0].detail
    assert '"principalId":"ext-principal"' in sender[0].detail
    # the receiver assignment runs in the same wave as the sender's, before the services start
    assert waves.WAVE[access.ASSIGN_RECEIVER] == waves.WAVE["assign Azure Event Hubs Data Sender"]


def test_an_unknown_operator_is_a_missing_assignment_naming_role_and_scope():
    site = lab_site()
    steps = telemetry.steps(site, state({"error": "the operator's token carries no oid claim"}))
    recv = [s for s in steps if s.action == access.ASSIGN_RECEIVER]
    assert len(recv) == 1 and recv[0].skip
    assert recv[0].reason.startswith("MISSING: the operator needs Azure Event Hubs Data Receiver on "
                                     f"{records.receiver_scope(site)}")
    assert "no oid claim" in recv[0].reason and "az role assignment create" in recv[0].reason


def test_with_a_connection_string_no_role_is_planned():
    site = lab_site("telemetry.eventhubs.auth=connection_string")
    assert records.receiver_scope(site) is None
    steps = telemetry.steps(site, state({"principal": "op-oid"}))
    assert not [s for s in steps if s.action.startswith("assign")]


def test_role_rows_name_role_principal_and_scope():
    site = lab_site()
    rec = [r for r in records.desired(site, {"level4": "ext-principal"}, {"principal": "op-oid"})
           if r["action"].startswith("assign")]
    hints = {r["action"]: telemetry.role_hint(r) for r in rec}
    scope = records.receiver_scope(site)
    assert hints["assign Azure Event Hubs Data Sender"].startswith(
        f"the AIO extension's identity on level4 (the egress dataflow) ext-principal needs Azure Event Hubs Data "
        f"Sender on {scope}")
    assert hints[access.ASSIGN_RECEIVER].startswith(
        f"the operator (the verify consumer) op-oid needs Azure Event Hubs Data Receiver on {scope}")
    rows = [{"check": "Azure Event Hubs Data Sender x", "ok": False}, {"check": "asset oven1", "ok": True}]
    assert telemetry.role_rows_only(rows)
    assert not telemetry.role_rows_only(rows + [{"check": "dataflow l2", "ok": False}])
    assert not telemetry.role_rows_only([{"check": "asset oven1", "ok": True}])
