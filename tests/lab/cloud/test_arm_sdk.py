"""The Entra and ARM stand-ins driven by the real Azure SDK clients over TLS, through the front."""
from __future__ import annotations

import json
import time

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential

from cloud_helpers import REGION, SUB, TENANT
from layernet.azure.clients import Arm, as_dict, pick
from layernet.lab.cloud import reqlog
from layernet.lab.cloud.arm import hooks
from layernet.lab.cloud.arm.store import Store

API = "2024-01-01"


@pytest.fixture(scope="module")
def arm(lcloud):
    cid, secret = lcloud.client
    cred = ClientSecretCredential(TENANT, cid, secret, connection_verify=str(lcloud.ca))
    return Arm(SUB, cred, verify=str(lcloud.ca), extra={"polling_interval": 0.05})


@pytest.fixture(scope="module")
def rg(arm):
    arm.resources().resource_groups.create_or_update("rg-lab", {"location": REGION})
    for ns in ("Microsoft.Kubernetes", "Microsoft.IoTOperations", "Microsoft.KubernetesConfiguration",
               "Microsoft.ExtendedLocation"):
        arm.resources().providers.register(ns)
    return "rg-lab"


def _token(arm) -> str:
    return arm.cred().get_token("https://management.azure.com/.default").token


def test_client_secret_credential_gets_a_signed_token_for_arm(lcloud, arm):
    tok = arm.cred().get_token("https://management.azure.com/.default")
    claims = lcloud.cloud.signer.verify(tok.token, ["https://management.azure.com"])
    assert claims["tid"] == TENANT and claims["appid"] == lcloud.client[0]
    assert tok.expires_on > time.time() + 3000
    rows = reqlog.read(lcloud.state / "requests" / "entra.jsonl")
    assert any(r["path"].endswith("/oauth2/v2.0/token") and r["status"] == 200 and r["host"] == "login.microsoftonline.com"
               for r in rows), rows


def test_wrong_secret_is_refused_without_echoing_it(lcloud):
    cid, _ = lcloud.client
    cred = ClientSecretCredential(TENANT, cid, "not-the-secret-value", connection_verify=str(lcloud.ca))
    with pytest.raises(ClientAuthenticationError) as exc:
        cred.get_token("https://management.azure.com/.default")
    assert "AADSTS7000215" in str(exc.value) and "not-the-secret-value" not in str(exc.value)


def test_arm_refuses_calls_without_a_valid_token(lcloud):
    url = f"https://management.azure.com/subscriptions/{SUB}?api-version={API}"
    r = requests.get(url, verify=str(lcloud.ca), timeout=5)
    assert r.status_code == 401 and r.json()["error"]["code"] == "AuthenticationFailed"
    r = requests.get(url, verify=str(lcloud.ca), timeout=5, headers={"Authorization": "Bearer x.y.z"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_metadata_endpoints_and_api_version_required(lcloud, arm):
    r = requests.get("https://management.azure.com/metadata/endpoints?api-version=2022-09-01", verify=str(lcloud.ca), timeout=5)
    assert r.status_code == 200 and r.json()[0]["resourceManager"] == "https://management.azure.com/"
    assert r.json()[0]["authentication"]["loginEndpoint"] == "https://login.microsoftonline.com/"
    r = requests.get(f"https://management.azure.com/subscriptions/{SUB}/resourcegroups", verify=str(lcloud.ca), timeout=5,
                     headers={"Authorization": f"Bearer {_token(arm)}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "MissingApiVersionParameter"


def test_providers_and_resource_groups(arm, rg):
    client = arm.resources()
    p = client.providers.get("microsoft.kubernetes")
    assert p.namespace == "Microsoft.Kubernetes" and p.registration_state == "Registered"
    assert "connectedClusters" in [t.resource_type for t in p.resource_types]
    assert client.providers.get("Microsoft.DeviceRegistry").registration_state == "NotRegistered"
    g = client.resource_groups.get("RG-LAB")                                 # case-insensitive
    assert g.name == "rg-lab" and g.location == REGION and g.properties.provisioning_state == "Succeeded"
    assert "rg-lab" in [x.name for x in client.resource_groups.list()]
    assert client.resource_groups.check_existence("rg-lab") is True
    assert client.resource_groups.check_existence("rg-nope") is False
    with pytest.raises(ResourceNotFoundError) as exc:
        client.resource_groups.get("rg-nope")
    assert exc.value.error.code == "ResourceGroupNotFound"


def test_unregistered_namespace_is_409_missing_subscription_registration(lcloud, arm, rg):
    url = (f"https://management.azure.com/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.DeviceRegistry/"
           f"namespaces/ns1?api-version={API}")
    r = requests.put(url, json={"location": REGION}, verify=str(lcloud.ca), timeout=5,
                     headers={"Authorization": f"Bearer {_token(arm)}"})
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "MissingSubscriptionRegistration" and "'Microsoft.DeviceRegistry'" in err["message"]


def test_connected_cluster_create_polls_the_lro_and_heartbeats_connect_it(lcloud, arm, rg):
    ck = arm.connected_kubernetes()
    body = {"location": REGION, "identity": {"type": "SystemAssigned"},
            "properties": {"agentPublicKeyCertificate": "MIIBCgKCAQEA", "distribution": "k3s",
                           "arcAgentProfile": {"agentAutoUpgrade": "Disabled"}}}
    t0 = time.monotonic()
    poller = ck.connected_cluster.begin_create_or_replace(rg, "level4", body)
    cc = as_dict(poller.result())
    assert time.monotonic() - t0 < 5
    assert pick(cc, "properties", "provisioningState") == "Succeeded"
    assert pick(cc, "properties", "connectivityStatus") == "Connecting"
    assert cc["identity"]["principalId"] and cc["identity"]["tenantId"] == TENANT
    # the ARM calls: PUT 201, the status URL InProgress then Succeeded, then the final GET
    rows = [r for r in reqlog.read(lcloud.state / "requests" / "arm.jsonl") if r["time"] >= time.time() - 10]
    kinds = [(r["method"], "operationStatuses" in r["path"], r["status"]) for r in rows if "level4" in r["path"] or "operationStatuses" in r["path"]]
    assert kinds[0] == ("PUT", False, 201) and ("GET", True, 200) in kinds and kinds[-1] == ("GET", False, 200), kinds
    # a heartbeat through the front (the egress address in this test is 127.0.0.1) connects it
    r = requests.post(f"https://{REGION}.dp.kubernetesconfiguration.azure.com/azure-arc-k8sagents/heartbeat",
                      json={"clusterResourceId": cc["id"].upper().replace("SUBSCRIPTIONS", "subscriptions"), "agentVersion": "1.2.3"},
                      verify=str(lcloud.ca), timeout=5)
    assert r.status_code == 200 and r.json()["connectivityStatus"] == "Connected"
    assert r.json()["peer"].startswith("127.0.0.1:")
    got = as_dict(ck.connected_cluster.get(rg, "LEVEL4"))
    assert pick(got, "properties", "connectivityStatus") == "Connected"
    assert pick(got, "properties", "agentVersion") == "1.2.3" and pick(got, "properties", "lastConnectivityTime")
    assert got["id"] == cc["id"]                                             # stored casing, whatever was asked
    assert [c.name for c in ck.connected_cluster.list_by_resource_group(rg)] == ["level4"]


def test_heartbeat_from_another_address_never_connects_and_stale_ones_go_offline(lcloud, arm, rg):
    from layernet.lab.cloud import arc

    ck = arm.connected_kubernetes()
    cc = as_dict(ck.connected_cluster.begin_create_or_replace(rg, "level3", {"location": REGION, "identity": {"type": "SystemAssigned"},
                                                                              "properties": {"agentPublicKeyCertificate": "x"}}).result())
    store, settings = lcloud.cloud.store, lcloud.cloud.arm.settings
    arc.record_heartbeat(store, cc["id"], "192.0.2.7", "1.0", settings.egress_ip)     # not the egress address
    assert pick(as_dict(ck.connected_cluster.get(rg, "level3")), "properties", "connectivityStatus") == "Connecting"
    arc.record_heartbeat(store, cc["id"], settings.egress_ip, "1.0", settings.egress_ip,
                         now=time.time() - settings.offline_after - 1)
    assert pick(as_dict(ck.connected_cluster.get(rg, "level3")), "properties", "connectivityStatus") == "Offline"


def test_iot_operations_instance_create_and_get(arm, rg):
    io = arm.iotoperations()
    body = {"location": REGION,
            "extendedLocation": {"name": f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.ExtendedLocation/customLocations/cl4",
                                 "type": "CustomLocation"},
            "properties": {"description": "lab", "schemaRegistryRef": {"resourceId": "/subscriptions/x/sr"}}}
    inst = io.instance.begin_create_or_update(rg, "aio-l4", body).result()
    d = as_dict(inst)
    assert pick(d, "properties", "provisioningState") == "Succeeded" and pick(d, "properties", "description") == "lab"
    assert as_dict(io.instance.get(rg, "AIO-L4"))["name"] == "aio-l4"
    broker = io.broker.begin_create_or_update(rg, "aio-l4", "default", {
        "extendedLocation": body["extendedLocation"], "properties": {"memoryProfile": "Low"}}).result()
    assert pick(as_dict(broker), "properties", "memoryProfile") == "Low"
    assert as_dict(broker)["type"] == "Microsoft.IoTOperations/instances/brokers"
    with pytest.raises(ResourceNotFoundError) as exc:
        io.instance.get(rg, "nope")
    assert exc.value.error.code == "ResourceNotFound" and "Microsoft.IoTOperations/instances/nope" in exc.value.error.message
    with pytest.raises(HttpResponseError) as exc:                            # a child needs its parent
        io.broker.begin_create_or_update(rg, "missing", "default", {"extendedLocation": body["extendedLocation"],
                                                                    "properties": {}}).result()
    assert exc.value.error.code == "ParentResourceNotFound"


class _FailBad(hooks.Hook):
    def on_poll(self, ctx):
        if ctx.op["polls"] < 2:
            return hooks.IN_PROGRESS
        if ctx.resource["name"].startswith("bad"):
            return hooks.Failed("ImagePullFailed", "mcr.microsoft.com was refused at level3")
        return hooks.SUCCEEDED


def test_failed_lro_raises_with_arm_error_and_extension_hooks(arm, rg, lcloud):
    ext_type = "Microsoft.KubernetesConfiguration/extensions"
    old = hooks.register(ext_type, _FailBad())
    try:
        ck = arm.connected_kubernetes()
        ck.connected_cluster.begin_create_or_replace(rg, "level2", {"location": REGION, "identity": {"type": "SystemAssigned"},
                                                                    "properties": {"agentPublicKeyCertificate": "x"}}).result()
        ex = arm.extensions()
        body = {"identity": {"type": "SystemAssigned"}, "properties": {"extensionType": "microsoft.iotoperations",
                                                                       "autoUpgradeMinorVersion": False}}
        good = ex.extensions.begin_create(rg, "Microsoft.Kubernetes", "connectedClusters", "level2", "aio", body).result()
        assert pick(as_dict(good), "properties", "provisioningState") == "Succeeded"
        with pytest.raises(HttpResponseError) as exc:
            ex.extensions.begin_create(rg, "Microsoft.Kubernetes", "connectedClusters", "level2", "bad-aio", body).result()
        assert exc.value.error.code == "ImagePullFailed" and "level3" in exc.value.error.message
        got = as_dict(ex.extensions.get(rg, "Microsoft.Kubernetes", "connectedClusters", "level2", "bad-aio"))
        assert pick(got, "properties", "provisioningState") == "Failed"
        assert sorted(e.name for e in ex.extensions.list(rg, "Microsoft.Kubernetes", "connectedClusters", "level2")) == ["aio", "bad-aio"]
    finally:
        hooks.register(ext_type, old)


def test_delete_is_202_then_gone_and_lists_page_with_next_link(arm, rg, lcloud):
    ck = arm.connected_kubernetes()
    for i in range(3):
        ck.connected_cluster.begin_create_or_replace(rg, f"page{i}", {"location": REGION, "identity": {"type": "SystemAssigned"},
                                                                      "properties": {"agentPublicKeyCertificate": "x"}}).result()
    settings = lcloud.cloud.arm.settings
    settings.page_size = 2
    try:
        names = [c.name for c in ck.connected_cluster.list_by_subscription()]
    finally:
        settings.page_size = 100
    assert {"page0", "page1", "page2", "level4"} <= set(names) and len(names) == len(set(names))
    ck.connected_cluster.begin_delete(rg, "PAGE1").result()
    with pytest.raises(ResourceNotFoundError):
        ck.connected_cluster.get(rg, "page1")
    rows = reqlog.read(lcloud.state / "requests" / "arm.jsonl")
    assert any(r["method"] == "DELETE" and r["status"] == 202 and r["path"].endswith("/PAGE1") for r in rows)


def test_store_survives_a_restart(lcloud, arm, rg):
    again = Store(lcloud.state / "arm-store.json")
    ids = {r["id"].lower() for r in again.values("resources")}
    assert f"/subscriptions/{SUB}/resourcegroups/{rg}/providers/microsoft.kubernetes/connectedclusters/level4".lower() in ids
    assert json.loads((lcloud.state / "arm-store.json").read_text())["groups"]



def test_an_lro_create_in_an_unregistered_namespace_fails_with_the_code_until_registered(arm, rg, lcloud):
    """The new SDKs stream the initial response of a long-running create, so azure-mgmt-core's automatic
    registration cannot read the 409 body: the caller sees MissingSubscriptionRegistration and must register
    the provider itself (stage 02 registers every provider first, as the sample does)."""
    from azure.core.exceptions import ResourceExistsError
    from azure.mgmt.deviceregistry import DeviceRegistryMgmtClient

    client = DeviceRegistryMgmtClient(arm.cred(), SUB, **arm.kwargs())
    with pytest.raises(ResourceExistsError) as exc:
        client.namespaces.begin_create_or_replace(rg, "adr-l4", {"location": REGION, "properties": {}}).result()
    assert exc.value.error.code == "MissingSubscriptionRegistration"
    arm.resources().providers.register("Microsoft.DeviceRegistry")
    ns = client.namespaces.begin_create_or_replace(rg, "adr-l4", {"location": REGION, "properties": {}}).result()
    assert as_dict(ns)["name"] == "adr-l4"
