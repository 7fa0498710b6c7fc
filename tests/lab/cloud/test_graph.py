"""The Microsoft Graph stand-in: service principal lookup for the lab's known principals, Graph's 404 and 401
shapes otherwise (the real az against it: tests/lab/test_az_cli.py)."""
from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from layernet.lab.cloud import entra, graph
from layernet.site.arc import CUSTOM_LOCATIONS_APP_ID
from layernet.site.defaults import LAB_CUSTOM_LOCATIONS_OID

MI = "9b0a3d1e-0000-4000-8000-00000000abcd"
RES = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DeviceRegistry/schemaRegistries/sr1"


@pytest.fixture
def lab(tmp_path):
    path = tmp_path / "entra.json"
    directory = entra.Directory.load_or_create(path)
    entra.register_identity(path, MI, RES)
    directory.refresh()
    signer = entra.Signer(tmp_path / "key.pem")
    client_id = next(iter(directory.clients))
    token = signer.issue(directory.tenant_id, client_id, "https://graph.microsoft.com")
    c = TestClient(graph.build(directory, signer), base_url="https://graph.microsoft.com")
    c.headers["Authorization"] = f"Bearer {token}"
    return c, directory, signer, client_id


def test_az_ad_sp_show_by_app_id_finds_the_custom_locations_rp(lab):
    c, *_ = lab
    r = c.get("/v1.0/servicePrincipals", params={"$filter": f"servicePrincipalNames/any(c:c eq '{CUSTOM_LOCATIONS_APP_ID}')"})
    assert r.status_code == 200 and r.json()["@odata.context"].endswith("#servicePrincipals")
    [sp] = r.json()["value"]
    assert (sp["id"], sp["appId"]) == (LAB_CUSTOM_LOCATIONS_OID, CUSTOM_LOCATIONS_APP_ID)
    assert c.get(f"/v1.0/servicePrincipals/{LAB_CUSTOM_LOCATIONS_OID}").json()["appId"] == CUSTOM_LOCATIONS_APP_ID
    assert c.get(f"/v1.0/servicePrincipals(appId='{CUSTOM_LOCATIONS_APP_ID}')").json()["id"] == LAB_CUSTOM_LOCATIONS_OID


def test_the_directorys_clients_and_managed_identities_are_service_principals(lab):
    c, directory, _, client_id = lab
    sp = c.get(f"/v1.0/servicePrincipals/{entra.service_principal_oid(client_id)}").json()
    assert sp["appId"] == client_id and sp["servicePrincipalType"] == "Application"
    mi = c.post("/v1.0/directoryObjects/getByIds", json={"ids": [MI, "00000000-0000-0000-0000-000000000099"],
                                                          "types": ["user", "group", "servicePrincipal"]}).json()
    assert [(o["id"], o["servicePrincipalType"]) for o in mi["value"]] == [(MI, "ManagedIdentity")]
    assert RES in mi["value"][0]["servicePrincipalNames"]
    only_users = c.post("/v1.0/directoryObjects/getByIds", json={"ids": [MI], "types": ["user"]}).json()
    assert only_users["value"] == []


def test_an_unknown_principal_is_graphs_404_and_no_token_is_401(lab):
    c, *_ = lab
    unknown = "11111111-2222-3333-4444-555555555555"
    r = c.get(f"/v1.0/servicePrincipals/{unknown}")
    err = r.json()["error"]
    assert r.status_code == 404 and err["code"] == "Request_ResourceNotFound" and unknown in err["message"]
    assert set(err["innerError"]) >= {"date", "request-id", "client-request-id"}
    assert c.get("/v1.0/servicePrincipals", params={"$filter": f"appId eq '{unknown}'"}).json()["value"] == []
    assert c.get("/v1.0/users").status_code == 400
    r = c.get(f"/v1.0/servicePrincipals/{LAB_CUSTOM_LOCATIONS_OID}", headers={"Authorization": ""})
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_a_token_for_another_audience_is_refused(lab):
    c, directory, signer, client_id = lab
    arm_token = signer.issue(directory.tenant_id, client_id, "https://management.azure.com")
    r = c.get(f"/v1.0/servicePrincipals/{LAB_CUSTOM_LOCATIONS_OID}", headers={"Authorization": f"Bearer {arm_token}"})
    assert r.status_code == 401 and "InvalidAudience" in r.json()["error"]["message"]


def test_the_system_assigned_identities_arm_gave_its_resources_are_service_principals(tmp_path):
    from layernet.lab.cloud.arm.store import Store

    directory = entra.Directory.load_or_create(tmp_path / "entra.json")
    store = Store(tmp_path / "arm.json")
    with_identity = RES.replace("sr1", "sr2")
    store.put("resources", with_identity, {"id": with_identity, "name": "sr2", "type": "Microsoft.DeviceRegistry/schemaRegistries",
                                           "identity": {"type": "SystemAssigned", "principalId": MI}})
    store.put("resources", RES, {"id": RES, "name": "sr1", "type": "Microsoft.DeviceRegistry/schemaRegistries"})
    c = TestClient(graph.build(directory, None, store), base_url="https://graph.microsoft.com")
    [sp] = c.post("/v1.0/directoryObjects/getByIds", json={"ids": [MI]}).json()["value"]
    assert sp["servicePrincipalType"] == "ManagedIdentity" and with_identity in sp["servicePrincipalNames"]
    assert sp["appId"] == entra.identity_client_id(MI)
    names = [n for p in graph.principals(directory, store) for n in p["servicePrincipalNames"]]
    assert RES not in names
    assert c.get(f"/v1.0/servicePrincipals/{MI}").status_code == 200
    assert graph.build(directory, None) and all(p["id"] != MI for p in graph.principals(directory))
