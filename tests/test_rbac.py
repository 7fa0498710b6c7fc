"""One role assignment record (layernet.rbac.assignment): stage 04's Data Sender and Data Receiver, stage 03's
registry role and the lab's operator path all name, address and fill an assignment the same way."""
from __future__ import annotations

from pathlib import Path

import pytest
from arm_double import ArmDouble, StaticToken

from layernet import rbac
from layernet.azure import aio_sdk, eventhubs_access
from layernet.azure.aio_levels import STORAGE_BLOB_DATA_CONTRIBUTOR
from layernet.azure.clients import Arm
from layernet.lab import azure as lab_azure
from layernet.lab import eventhubs_rbac
from layernet.render.telemetry import render_level
from layernet.resource_ids import subscription
from layernet.site import load_site

LAB = Path(__file__).resolve().parents[1] / "params" / "lab.yaml"
PRINCIPAL = "0b7a1c2e-3d4f-4a5b-8c6d-7e8f9a0b1c2d"
NAMESPACE = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-layernet-lab/providers/"
             "Microsoft.EventHub/namespaces/layernet-lab-ehns")


@pytest.fixture(scope="module")
def site():
    return load_site(LAB)


def sender_of(site, level: str, principal=None) -> dict:
    found = [r for r in render_level(site, level, principal=principal) if rbac.PROVIDER_PATH in r["id"]]
    assert len(found) == 1, [r["id"] for r in render_level(site, level)]
    return found[0]


def test_stage_04_keeps_the_names_sites_already_hold(site):
    """A re-run on a plant finds the Data Sender assignment it made before (the name stage 04 has always given
    it): a new seed rule would plan a second assignment that ARM refuses."""
    assert sender_of(site, "level4")["id"] == \
        f"{NAMESPACE}/providers/Microsoft.Authorization/roleAssignments/8d161573-7f12-56e1-9ff7-1306783c2143"
    assert sender_of(site, "level4", PRINCIPAL)["id"] == sender_of(site, "level4")["id"]   # principal read at apply


def test_every_consumer_builds_the_same_assignment(site, tmp_path, monkeypatch):
    sub = subscription(site)
    sender = sender_of(site, "level4", PRINCIPAL)
    scope = rbac.scope_of(sender["id"])
    assert scope == NAMESPACE
    assert {"id": sender["id"], "body": sender["body"]} == rbac.assignment(sub, scope, rbac.SENDER, PRINCIPAL,
                                                                           holder="level4")

    receiver = eventhubs_access.receiver_record(sub, scope, PRINCIPAL)
    one = rbac.assignment(sub, scope, rbac.RECEIVER, PRINCIPAL)
    assert {"id": receiver["id"], "body": receiver["body"]} == one
    assert receiver["apiVersion"] == sender["apiVersion"]

    # the lab's operator path (`az role assignment create`) PUTs that very record through ARM
    armd = ArmDouble(tmp_path / "arm")
    try:
        monkeypatch.setattr(lab_azure, "arm", lambda s, **kw: Arm(sub, StaticToken(), armd.url, str(armd.ca),
                                                                   extra={"polling_interval": 0}))
        assert eventhubs_rbac.put_assignment(site, scope, rbac.RECEIVER, PRINCIPAL) == receiver["id"]
        puts = [r for r in armd.requests if r.method == "PUT" and rbac.PROVIDER_PATH in r.path]
        assert [(p.path, p.body) for p in puts] == [(receiver["id"], receiver["body"])]
        assert puts[0].query["api-version"] == receiver["apiVersion"]
    finally:
        armd.close()

    # stage 03's registry role: the same rule, held by the registry until apply reads its identity
    role = next(r for r in aio_sdk.desired(site, sub) if r.kind == "role")
    registry = role.args[0].rsplit("/", 1)[-1]
    assert {"id": role.id, "body": role.body} == rbac.assignment(
        sub, role.name, STORAGE_BLOB_DATA_CONTRIBUTOR, f"<principal id of {role.args[0]}>", holder=registry)
    assert role.api == receiver["apiVersion"]


def test_the_name_follows_scope_role_and_holder_only():
    base = rbac.assignment("s", NAMESPACE, rbac.SENDER, "p1", holder="level4")
    assert base["id"] == rbac.assignment("t", NAMESPACE, rbac.SENDER, "p2", holder="level4")["id"]
    others = {rbac.assignment("s", NAMESPACE + "x", rbac.SENDER, "p1", holder="level4")["id"].rsplit("/", 1)[-1],
              rbac.assignment("s", NAMESPACE, rbac.RECEIVER, "p1", holder="level4")["id"].rsplit("/", 1)[-1],
              rbac.assignment("s", NAMESPACE, rbac.SENDER, "p1", holder="level3")["id"].rsplit("/", 1)[-1],
              rbac.assignment("s", NAMESPACE, rbac.SENDER, "p1")["id"].rsplit("/", 1)[-1]}
    assert base["id"].rsplit("/", 1)[-1] not in others and len(others) == 4
    assert rbac.role_of(base["body"]) == rbac.SENDER and rbac.scope_of(base["id"]) == NAMESPACE
