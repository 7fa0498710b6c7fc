"""ARM semantics without HTTP: ids, the long-running-operation state machine, hooks, groups, errors, the store."""
from __future__ import annotations

import time

import pytest

from layernet.lab.cloud.arm import hooks
from layernet.lab.cloud.arm.ids import parse
from layernet.lab.cloud.arm.service import Arm, ArmSettings
from layernet.lab.cloud.arm.store import Store

SUB = "00000000-0000-0000-0000-000000000001"
BASE = "https://management.azure.com"
RG = f"/subscriptions/{SUB}/resourceGroups/rg1"
V = {"api-version": "2024-01-01"}


@pytest.fixture
def arm(tmp_path):
    a = Arm(Store(tmp_path / "arm.json"), ArmSettings(subscriptions={SUB: "lab"}, register_seconds=0.0, contract=False))
    assert a.handle("PUT", RG, V, {"location": "West Europe"}, BASE).status == 201
    for ns in ("Microsoft.Kubernetes", "Microsoft.KubernetesConfiguration", "Microsoft.IoTOperations"):
        assert a.handle("POST", f"/subscriptions/{SUB}/providers/{ns}/register", V, None, BASE).status == 200
    return a


def _poll(arm, url: str):
    path, _, query = url.removeprefix(BASE).partition("?")
    return arm.handle("GET", path, dict(p.split("=") for p in query.split("&")), None, BASE)


def test_parse_ids():
    r = parse(f"{RG}/providers/Microsoft.IoTOperations/instances/i1/brokers/default")
    assert (r.subscription, r.resource_group, r.namespace, r.name) == (SUB, "rg1", "Microsoft.IoTOperations", "default")
    assert r.type == "Microsoft.IoTOperations/instances/brokers"
    assert r.parent_id == f"{RG}/providers/Microsoft.IoTOperations/instances/i1"
    ext = parse(f"{RG}/providers/Microsoft.Kubernetes/connectedClusters/c1/providers/Microsoft.KubernetesConfiguration/extensions/aio")
    assert ext.type == "Microsoft.KubernetesConfiguration/extensions"
    assert ext.parent_id == f"{RG}/providers/Microsoft.Kubernetes/connectedClusters/c1"
    coll = parse(f"/subscriptions/{SUB}/providers/Microsoft.Kubernetes/connectedClusters")
    assert coll.is_collection and coll.resource_group is None
    assert parse(f"/subscriptions/{SUB}/resourceGroups/rg1") is None


def test_put_is_a_long_running_operation_in_progress_then_succeeded(arm):
    rid = f"{RG}/providers/Microsoft.Kubernetes/connectedClusters/c1"
    r = arm.handle("PUT", rid, V, {"location": "westeurope", "properties": {"distribution": "k3s"}}, BASE)
    assert r.status == 201 and r.body["properties"]["provisioningState"] == "Accepted"
    url = r.headers["Azure-AsyncOperation"]
    assert url.startswith(f"{BASE}/subscriptions/{SUB}/providers/Microsoft.Kubernetes/locations/westeurope/operationStatuses/")
    assert r.headers["Retry-After"] == "1"
    assert _poll(arm, url).body["status"] == "InProgress"
    assert arm.handle("GET", rid, V, None, BASE).body["properties"]["provisioningState"] == "Provisioning"
    done = _poll(arm, url).body
    assert done["status"] == "Succeeded" and done["endTime"] and _poll(arm, url).body["status"] == "Succeeded"
    got = arm.handle("GET", rid.upper().replace("SUBSCRIPTIONS", "subscriptions"), V, None, BASE)
    assert got.status == 200 and got.body["id"] == rid and got.body["properties"]["distribution"] == "k3s"
    again = arm.handle("PUT", rid.lower(), V, {"location": "westeurope", "properties": {}}, BASE)
    assert again.status == 200 and again.body["id"] == rid                  # an update keeps the first casing


def test_errors_have_arm_shape(arm):
    assert arm.handle("GET", RG, {}, None, BASE).body["error"]["code"] == "MissingApiVersionParameter"
    r = arm.handle("GET", f"{RG}/providers/Microsoft.Kubernetes/connectedClusters/nope", V, None, BASE)
    assert r.status == 404 and r.body["error"]["code"] == "ResourceNotFound"
    r = arm.handle("PUT", f"/subscriptions/{SUB}/resourceGroups/rg2/providers/Microsoft.Kubernetes/connectedClusters/c", V, {}, BASE)
    assert r.status == 404 and r.body["error"]["code"] == "ResourceGroupNotFound"
    r = arm.handle("PUT", f"{RG}/providers/Microsoft.DeviceRegistry/namespaces/n1", V, {"location": "x"}, BASE)
    assert r.status == 409 and r.body["error"]["code"] == "MissingSubscriptionRegistration"
    r = arm.handle("GET", "/subscriptions/11111111-0000-0000-0000-000000000000/resourcegroups", V, None, BASE)
    assert r.status == 404 and r.body["error"]["code"] == "SubscriptionNotFound"
    r = arm.handle("PUT", f"{RG}/providers/Microsoft.Kubernetes/connectedClusters/c1", V, ["not", "an", "object"], BASE)
    assert r.status == 400 and r.body["error"]["code"] == "InvalidRequestContent"
    assert arm.handle("DELETE", f"{RG}/providers/Microsoft.Kubernetes/connectedClusters/never", V, None, BASE).status == 204


def test_registration_takes_register_seconds(tmp_path):
    a = Arm(Store(), ArmSettings(subscriptions={SUB: "lab"}, register_seconds=0.3, contract=False))
    r = a.handle("POST", f"/subscriptions/{SUB}/providers/Microsoft.Kubernetes/register", V, None, BASE)
    assert r.body["registrationState"] == "Registering"
    time.sleep(0.35)
    assert a.handle("GET", f"/subscriptions/{SUB}/providers/Microsoft.Kubernetes", V, None, BASE).body["registrationState"] == "Registered"


class _Record(hooks.Hook):
    def __init__(self):
        self.seen = []

    def on_put(self, ctx):
        ctx.resource["properties"]["phase"] = "starting"
        self.seen.append(("put", ctx.resource["name"]))

    def on_poll(self, ctx):
        return hooks.SUCCEEDED if ctx.op["polls"] >= 3 else hooks.IN_PROGRESS

    def on_get(self, ctx):
        ctx.resource["properties"]["seenAt"] = "now"

    def on_delete(self, ctx):
        self.seen.append(("delete", ctx.resource["name"]))

    def action(self, ctx, name, body):
        return (200, {"action": name, "of": ctx.resource["name"], "body": body})


def test_hooks_decide_completion_properties_actions_and_delete(arm):
    hook = _Record()
    kind = "Microsoft.IoTOperations/instances"
    old = hooks.register(kind.upper(), hook)                                 # types match case-insensitively
    try:
        rid = f"{RG}/providers/Microsoft.IoTOperations/instances/i1"
        r = arm.handle("PUT", rid, V, {"location": "westeurope"}, BASE)
        assert r.body["properties"]["phase"] == "starting" and hook.seen == [("put", "i1")]
        url = r.headers["Azure-AsyncOperation"]
        assert [_poll(arm, url).body["status"] for _ in range(3)] == ["InProgress", "InProgress", "Succeeded"]
        assert arm.handle("GET", rid, V, None, BASE).body["properties"]["seenAt"] == "now"
        a = arm.handle("POST", f"{rid}/listCredentials", V, {"x": 1}, BASE)
        assert a.status == 200 and a.body == {"action": "listCredentials", "of": "i1", "body": {"x": 1}}
        child = arm.handle("PUT", f"{rid}/brokers/default", V, {"properties": {}}, BASE)
        assert child.status == 201
        d = arm.handle("DELETE", rid, V, None, BASE)
        assert d.status == 202 and "operationResults" in d.headers["Location"]
        assert _poll(arm, d.headers["Location"]).status == 202                      # still deleting
        assert [_poll(arm, d.headers["Azure-AsyncOperation"]).body["status"] for _ in range(2)] == ["InProgress", "Succeeded"]
        assert _poll(arm, d.headers["Location"]).status == 204
        assert ("delete", "i1") in hook.seen
        assert arm.handle("GET", f"{rid}/brokers/default", V, None, BASE).status == 404           # children went too
    finally:
        hooks.unregister(kind)
        if old is not hooks.DEFAULT:
            hooks.register(kind, old)


def test_group_delete_removes_its_resources_and_lists_page(arm):
    for i in range(5):
        arm.handle("PUT", f"{RG}/providers/Microsoft.Kubernetes/connectedClusters/c{i}", V, {"location": "westeurope"}, BASE)
    arm.settings.page_size = 2
    page = arm.handle("GET", f"{RG}/providers/Microsoft.Kubernetes/connectedClusters", V, None, BASE).body
    assert len(page["value"]) == 2 and "%24skiptoken=2" in page["nextLink"] and "api-version=2024-01-01" in page["nextLink"]
    r = arm.handle("DELETE", RG, V, None, BASE)
    assert r.status == 202 and "Azure-AsyncOperation" not in r.headers
    assert _poll(arm, r.headers["Location"]).status == 202
    assert _poll(arm, r.headers["Location"]).status == 204
    assert arm.handle("GET", RG, V, None, BASE).status == 404
    assert not arm.store.values("resources")


def test_store_reloads_and_rejects_a_corrupt_file(arm, tmp_path):
    arm.handle("PUT", f"{RG}/providers/Microsoft.Kubernetes/connectedClusters/keep", V, {"location": "westeurope"}, BASE)
    again = Store(tmp_path / "arm.json")
    assert again.get("resources", f"{RG}/providers/Microsoft.Kubernetes/connectedClusters/KEEP".lower())["name"] == "keep"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON.*move it away"):
        Store(tmp_path / "bad.json")


def test_events_file_gets_writes_and_finished_operations(tmp_path):
    import json

    a = Arm(Store(), ArmSettings(subscriptions={SUB: "lab"}, preregistered=("Microsoft.Kubernetes",), contract=False),
            events=tmp_path / "events.jsonl")
    a.handle("PUT", RG, V, {"location": "westeurope"}, BASE)
    rid = f"{RG}/providers/Microsoft.Kubernetes/connectedClusters/c1"
    url = a.handle("PUT", rid, V, {"location": "westeurope"}, BASE, peer="10.0.0.4:5000").headers["Azure-AsyncOperation"]
    _poll(a, url), _poll(a, url)
    rows = [json.loads(l) for l in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(r["event"], r["status"]) for r in rows] == [("put", "Accepted"), ("put-done", "Succeeded")]
    assert rows[0]["type"] == "Microsoft.Kubernetes/connectedClusters" and rows[0]["peer"] == "10.0.0.4:5000"
    assert rows[1]["id"] == rid


def test_role_assignments_and_blob_containers_are_synchronous(arm):
    assert arm.handle("POST", f"/subscriptions/{SUB}/providers/Microsoft.Storage/register", V, None, BASE).status == 200
    sa = f"{RG}/providers/Microsoft.Storage/storageAccounts/sa1"
    put = arm.handle("PUT", sa, V, {"location": "westeurope", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}, BASE)
    # the account itself is long-running (202 + Location where the lab cloud's storage hook is registered)
    url = put.headers.get("Azure-AsyncOperation") or put.headers["Location"]
    _poll(arm, url), _poll(arm, url)
    arm.handle("PUT", f"{sa}/blobServices/default", V, {"properties": {}}, BASE)
    c = arm.handle("PUT", f"{sa}/blobServices/default/containers/schemas", V, {"properties": {}}, BASE)
    assert c.status == 201 and not c.headers and c.body["properties"]["provisioningState"] == "Succeeded"
    ra = f"{sa}/providers/Microsoft.Authorization/roleAssignments/3c4b2a10-0000-0000-0000-000000000001"
    body = {"properties": {"roleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"
                                               "ba92f5b4-2d11-453d-a403-e96b0029c9fe", "principalId": "p1"}}
    r = arm.handle("PUT", ra, V, body, BASE)
    assert r.status == 201 and not r.headers and r.body["type"] == "Microsoft.Authorization/roleAssignments"
    assert arm.handle("PUT", ra, V, body, BASE).status == 200
    listed = arm.handle("GET", f"{sa}/providers/Microsoft.Authorization/roleAssignments", V, None, BASE).body["value"]
    assert [x["properties"]["principalId"] for x in listed] == ["p1"]
    missing = f"{RG}/providers/Microsoft.Storage/storageAccounts/nope/providers/Microsoft.Authorization/roleAssignments/x"
    assert arm.handle("PUT", missing, V, body, BASE).body["error"]["code"] == "ParentResourceNotFound"



def test_the_labs_cloud_asks_for_a_quarter_second_between_polls_in_the_header_the_sdk_reads(tmp_path):
    """The lab runs its cloud with lab_azure.RETRY_AFTER; sub-second goes out as Retry-After-Ms, which azure-core's
    long-running-operation polling reads (the seconds it sleeps before the next poll)."""
    from pathlib import Path

    from azure.core.polling.base_polling import get_retry_after

    from layernet.lab import azure as lab_azure
    from layernet.lab.registry import cloud_app_args
    from layernet.site import load_site

    site = load_site(str(Path(__file__).resolve().parents[4] / "params" / "lab.yaml"))
    args = cloud_app_args(site, tmp_path)
    assert args[args.index("--retry-after") + 1] == lab_azure.RETRY_AFTER
    a = Arm(Store(tmp_path / "arm.json"), ArmSettings(subscriptions={SUB: "lab"}, register_seconds=0.0, contract=False,
                                                      retry_after=lab_azure.RETRY_AFTER))
    assert a.handle("PUT", RG, V, {"location": "West Europe"}, BASE).status == 201
    assert a.handle("POST", f"/subscriptions/{SUB}/providers/Microsoft.Kubernetes/register", V, None, BASE).status == 200
    r = a.handle("PUT", f"{RG}/providers/Microsoft.Kubernetes/connectedClusters/c1", V,
                 {"location": "westeurope", "properties": {"distribution": "k3s"}}, BASE)
    assert r.status == 201 and r.headers["Retry-After-Ms"] == "250" and "Retry-After" not in r.headers

    class Answer:
        http_response = type("HttpResponse", (), {"headers": r.headers})()
    assert get_retry_after(Answer()) == 0.25
