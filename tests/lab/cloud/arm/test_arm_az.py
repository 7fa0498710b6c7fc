"""What the real az asks of ARM besides the resources themselves, answered as Azure answers (the real az against
the lab: tests/lab/test_az_cli.py): the tenant list, Storage's name check and its 202 create, role assignments
carrying their scope, and the api-versions the pinned az sends."""
from __future__ import annotations

import pytest

from layernet import apiversions
from layernet.lab.cloud import aio
from layernet.lab.cloud.arm import hooks
from layernet.lab.cloud.arm.service import Arm, ArmSettings
from layernet.lab.cloud.arm.store import Store

SUB = "00000000-0000-0000-0000-000000000001"
TENANT = "00000000-0000-0000-0000-0000000000aa"
BASE = "https://management.azure.com"
RG = f"/subscriptions/{SUB}/resourceGroups/rg1"
SA = f"{RG}/providers/Microsoft.Storage/storageAccounts/sa1"


def v(rtype: str) -> dict:
    return {"api-version": apiversions.api_version(rtype)}


@pytest.fixture
def arm(tmp_path):
    old = hooks.register(aio.STORAGE_ACCOUNTS, aio.StorageAccountHook())
    a = Arm(Store(tmp_path / "arm.json"), ArmSettings(tenant_id=TENANT, subscriptions={SUB: "lab"}, retry_after="0"))
    assert a.handle("PUT", RG, v("Microsoft.Resources/resourceGroups"), {"location": "eastus"}, BASE).status == 201
    assert a.handle("POST", f"/subscriptions/{SUB}/providers/Microsoft.Storage/register", {"api-version": "2024-11-01"},
                    None, BASE).status == 200
    yield a
    hooks.register(aio.STORAGE_ACCOUNTS, old)


def _get(arm, url: str):
    path, _, query = url.removeprefix(BASE).partition("?")
    return arm.handle("GET", path, dict(p.split("=") for p in query.split("&")), None, BASE)


def test_tenants_lists_the_labs_tenant(arm):
    r = arm.handle("GET", "/tenants", {"api-version": "2022-12-01"}, None, BASE)
    assert r.status == 200 and [t["tenantId"] for t in r.body["value"]] == [TENANT]
    assert r.body["value"][0]["id"] == f"/tenants/{TENANT}"


def test_storage_name_check_is_global_and_says_why(arm):
    url = f"/subscriptions/{SUB}/providers/Microsoft.Storage/checkNameAvailability"
    q = {"api-version": "2025-08-01"}
    ask = (lambda name: arm.handle("POST", url, q, {"name": name, "type": "Microsoft.Storage/storageAccounts"}, BASE).body)
    assert ask("sa1") == {"nameAvailable": True}
    assert arm.handle("PUT", SA, v(aio.STORAGE_ACCOUNTS), {"location": "eastus", "kind": "StorageV2",
                                                          "sku": {"name": "Standard_LRS"}}, BASE).status == 202
    taken = ask("sa1")
    assert taken["nameAvailable"] is False and taken["reason"] == "AlreadyExists"
    assert ask("Not_Valid")["reason"] == "AccountNameInvalid"
    assert arm.handle("GET", url, q, None, BASE).status == 405


def test_a_new_storage_account_is_202_with_a_location_to_poll_then_200(arm):
    body = {"location": "eastus", "kind": "StorageV2", "sku": {"name": "Standard_LRS"},
            "properties": {"isHnsEnabled": True}}
    r = arm.handle("PUT", SA, v(aio.STORAGE_ACCOUNTS), body, BASE)
    assert r.status == 202 and r.body is None and "Azure-AsyncOperation" not in r.headers
    first = _get(arm, r.headers["Location"])
    assert first.status == 202 and "Location" in first.headers
    done = _get(arm, first.headers["Location"])
    assert done.status == 200 and done.body["properties"]["isHnsEnabled"] is True
    assert done.body["properties"]["provisioningState"] == "Succeeded"
    # the blob service comes with it, and a PUT of the existing account answers at once
    assert arm.store.get("resources", SA + "/blobServices/default") is not None
    again = arm.handle("PUT", SA, v(aio.STORAGE_ACCOUNTS), body, BASE)
    assert again.status == 200 and again.body["properties"]["provisioningState"] == "Succeeded"


def test_a_role_assignment_carries_its_scope(arm):
    rid = f"{RG}/providers/Microsoft.Authorization/roleAssignments/3f1e0000-0000-4000-8000-000000000001"
    body = {"properties": {"principalId": "9b0a3d1e-0000-4000-8000-00000000abcd", "principalType": "ServicePrincipal",
                           "roleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"
                                               "ba92f5b4-2d11-453d-a403-e96b0029c9fe"}}
    r = arm.handle("PUT", rid, v("Microsoft.Authorization/roleAssignments"), body, BASE)
    assert r.status == 201 and r.body["properties"]["scope"] == RG


def test_the_versions_the_pinned_az_sends_are_served_others_refused(arm):
    q = {"api-version": "2024-11-01"}           # az group create (azure-cli 2.91.0)
    assert "2024-11-01" in apiversions.CLIENT_VERSIONS["Microsoft.Resources/resourceGroups"]
    assert arm.handle("PUT", f"/subscriptions/{SUB}/resourceGroups/rg2", q, {"location": "eastus"}, BASE).status == 201
    assert arm.handle("GET", SA, {"api-version": "2025-08-01"}, None, BASE).status == 404   # served: not found
    r = arm.handle("PUT", f"/subscriptions/{SUB}/resourceGroups/rg3", {"api-version": "2019-01-01"},
                   {"location": "eastus"}, BASE)
    assert r.status == 400 and r.body["error"]["code"] == "InvalidApiVersionParameter"
    assert f"are '{apiversions.RESOURCES},2024-11-01'" in r.body["error"]["message"]
    assert apiversions.served("Microsoft.EventHub/namespaces") == ("2024-01-01",)
    assert apiversions.served("Microsoft.Unknown/things") == ()
