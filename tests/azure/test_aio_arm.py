"""Stage 03 with the arm executor and the verification shared with the lab, against the HTTPS ARM double:
templates fetched at plan time and kept in the run folder, what-if as the plan, the exact deployment requests
(body and the parameters derived from the site), digest pins, an unknown required parameter, idempotent re-plan,
and evidence rows with hints. The templates are small ones of our own (the release's are never copied here)."""
from __future__ import annotations

import hashlib
import json

import pytest
from arm_double import ArmDouble, StaticToken
from kube_double import KubeApiDouble
from sites import example_site

from layernet.azure.clients import Arm  # noqa: E402
from layernet.errors import DriftError, StageFailed  # noqa: E402
from layernet.azure import aio as az_aio  # noqa: E402
from layernet.stages import aio  # noqa: E402

SUB = "00000000-0000-0000-0000-000000000000"
RG = "rg-plant-example"
PFX = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers"

ENABLEMENT = {
    "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
    "contentVersion": "1.0.0.0",
    "parameters": {"clusterName": {"type": "string"},
                   "trustConfig": {"type": "object", "defaultValue": {"source": "SelfSigned"}},
                   "advancedConfig": {"type": "object", "defaultValue": {}}},
    "resources": [{"type": "Microsoft.KubernetesConfiguration/extensions", "apiVersion": "2023-05-01",
                   "name": "cert-manager", "properties": {"extensionType": "microsoft.certmanagement"}},
                  {"type": "Microsoft.KubernetesConfiguration/extensions", "apiVersion": "2023-05-01",
                   "name": "secret-store", "properties": {"extensionType": "microsoft.azure.secretstore"}}],
}
INSTANCE = {
    "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
    "contentVersion": "1.0.0.0",
    "parameters": {"clusterName": {"type": "string"}, "customLocationName": {"type": "string", "nullable": True},
                   "clExtentionIds": {"type": "array", "items": {"type": "string"}},
                   "aioInstanceName": {"type": "string", "nullable": True}, "schemaRegistryId": {"type": "string"},
                   "adrNamespaceId": {"type": "string", "nullable": True}, "brokerConfig": {"type": "object"},
                   "defaultDataflowinstanceCount": {"type": "int", "defaultValue": 1}},
    "resources": [{"type": "Microsoft.IoTOperations/instances", "apiVersion": "2025-10-01",
                   "name": "[parameters('aioInstanceName')]", "properties": {}}],
}


def quiet(_m):
    pass


@pytest.fixture
def armd(tmp_path):
    d = ArmDouble(tmp_path / "arm")
    d.files["/rel/v9.9.9/azure-iot-operations-enablement.json"] = json.dumps(ENABLEMENT).encode()
    d.files["/rel/v9.9.9/azure-iot-operations-instance.json"] = json.dumps(INSTANCE, indent=1).encode()
    yield d
    d.close()


def install_enablement_extensions(armd: ArmDouble):
    """What the enablement deployment does on ARM: the two extensions appear on the cluster."""
    def hook(dep):
        name = dep["name"]
        if not name.startswith("layernet-aio-enablement-"):
            return
        cluster = dep["properties"]["parameters"]["clusterName"]["value"]
        base = f"{PFX}/Microsoft.Kubernetes/connectedClusters/{cluster}/providers/Microsoft.KubernetesConfiguration/extensions"
        for ext, t in (("cert-manager", "microsoft.certmanagement"), ("secret-store", "microsoft.azure.secretstore")):
            armd.put_resource(f"{base}/{ext}", {"id": f"{base}/{ext}", "name": ext,
                                                "properties": {"extensionType": t, "provisioningState": "Succeeded"}})
    armd.on_put["deployments"] = hook


def ext_ids(cluster):
    base = f"{PFX}/Microsoft.Kubernetes/connectedClusters/{cluster}/providers/Microsoft.KubernetesConfiguration/extensions"
    return [f"{base}/cert-manager", f"{base}/secret-store"]


@pytest.fixture
def conn(armd):
    install_enablement_extensions(armd)
    for lv in ("l4", "l3", "l2"):
        path = f"{PFX}/Microsoft.Kubernetes/connectedClusters/aio-plant-{lv}"
        armd.put_resource(path, {"id": path, "properties": {"connectivityStatus": "Connected"}})
    return Arm(SUB, StaticToken(), armd.url, str(armd.ca), extra={"polling_interval": 0})


def arm_site(armd, **templates):
    t = {"enablement_url": f"{armd.url}/rel/v9.9.9/azure-iot-operations-enablement.json",
         "instance_url": f"{armd.url}/rel/v9.9.9/azure-iot-operations-instance.json", **templates}
    return example_site(aio={"executor": "arm", "templates": t})


def test_plan_fetches_the_templates_keeps_them_and_uses_what_if(armd, conn, tmp_path):
    site = arm_site(armd)
    p = aio.plan(site, run_dir=tmp_path / "run", arm=conn, verify_fetch=str(armd.ca))
    assert p.executor == "arm"
    assert [(s.level, s.action) for s in p.steps] == [
        (lv, f"deploy {part}") for lv in ("level4", "level3", "level2")
        for part in ("prerequisites", "enablement", "instance", "insecure listener")]
    assert all(not s.skip for s in p.steps)
    assert p.steps[1].reason == "what-if: 2 Create"
    # the instance needs the enablement's extension ids: its what-if waits for the enablement deployment
    assert p.steps[2].reason == "what-if after the enablement deployment: clExtentionIds come from it"
    assert '"clExtentionIds": "<from the enablement deployment>"' in p.steps[2].detail
    kept = sorted((tmp_path / "run" / "aio" / "templates").iterdir())
    assert len(kept) == 2
    inst_bytes = armd.files["/rel/v9.9.9/azure-iot-operations-instance.json"]
    digest = hashlib.sha256(inst_bytes).hexdigest()
    assert (tmp_path / "run" / "aio" / "templates" / f"{digest[:12]}-azure-iot-operations-instance.json").read_bytes() == inst_bytes
    assert f"instance template sha256 {digest[:12]}" in p.steps[2].detail
    whatifs = armd.calls("POST", "/whatIf")
    assert [r.path.split("/")[-2] for r in whatifs][:3] == [
        "layernet-aio-prereq-level4", "layernet-aio-enablement-level4", "layernet-aio-listener-level4"]
    assert armd.calls("PUT") == []      # planning deployed nothing


def test_apply_sends_the_exact_deployment_requests(armd, conn, tmp_path):
    site = arm_site(armd)
    p = aio.plan(site, run_dir=tmp_path, arm=conn, verify_fetch=str(armd.ca))
    from layernet.plan import Plan
    p = Plan.from_dict(json.loads(json.dumps(p.to_dict())))      # a plan survives the trip as JSON
    rows = aio.apply(p, site, run_dir=tmp_path, arm=conn, progress=quiet)
    assert len(rows) == 12 and all(r["ok"] for r in rows)
    puts = armd.calls("PUT", "/providers/Microsoft.Resources/deployments/")
    assert [r.path.rsplit("/", 1)[1] for r in puts] == [
        f"layernet-aio-{part}-{lv}" for lv in ("level4", "level3", "level2")
        for part in ("prereq", "enablement", "instance", "listener")]
    lst = next(r for r in puts if r.path.endswith("layernet-aio-listener-level2")).body["properties"]["template"]
    assert lst["resources"] == [{
        "type": "Microsoft.IoTOperations/instances/brokers/listeners", "apiVersion": "2026-07-01",
        "name": "aio-plant-l2-ops/default/default-insecure",
        "extendedLocation": {"name": f"{PFX}/Microsoft.ExtendedLocation/customLocations/aio-plant-l2-cl",
                             "type": "CustomLocation"},
        "properties": {"serviceName": "aio-broker-insecure", "serviceType": "LoadBalancer",
                       "ports": [{"port": 1883, "protocol": "Mqtt"}]}}]
    inst = next(r for r in puts if r.path.endswith("layernet-aio-instance-level3"))
    kept = json.loads((tmp_path / "aio" / "deployments" / "layernet-aio-instance-level3.json").read_text())
    assert kept == inst.body
    assert inst.body == {"properties": {"mode": "Incremental", "template": INSTANCE, "parameters": {
        "clusterName": {"value": "aio-plant-l3"},
        "customLocationName": {"value": "aio-plant-l3-cl"},
        "clExtentionIds": {"value": ext_ids("aio-plant-l3")},
        "aioInstanceName": {"value": "aio-plant-l3-ops"},
        "schemaRegistryId": {"value": f"{PFX}/Microsoft.DeviceRegistry/schemaRegistries/aio-plant-l3-sr"},
        "adrNamespaceId": {"value": f"{PFX}/Microsoft.DeviceRegistry/namespaces/aio-plant-l3-ns"},
        "brokerConfig": {"value": {"frontendReplicas": 1, "frontendWorkers": 1, "backendPartitions": 1,
                                   "backendWorkers": 1, "backendRedundancyFactor": 2, "memoryProfile": "Low",
                                   "serviceType": "ClusterIp"}},
        }}}
    enab = next(r for r in puts if r.path.endswith("layernet-aio-enablement-level4"))
    assert enab.body["properties"]["parameters"] == {"clusterName": {"value": "aio-plant-l4"},
                                                     "trustConfig": {"value": {"source": "SelfSigned"}}}
    pre = next(r for r in puts if r.path.endswith("layernet-aio-prereq-level2"))
    res = {x["type"]: x for x in pre.body["properties"]["template"]["resources"]}
    assert res["Microsoft.Storage/storageAccounts"]["properties"]["isHnsEnabled"] is True
    assert res["Microsoft.Storage/storageAccounts/blobServices/containers"]["name"] == "plantexamplesr/default/aio-plant-l2-schemas"
    assert res["Microsoft.DeviceRegistry/schemaRegistries"]["properties"] == {
        "namespace": "aio-plant-l2-sr",
        "storageAccountContainerUrl": "https://plantexamplesr.blob.core.windows.net/aio-plant-l2-schemas"}
    assert res["Microsoft.DeviceRegistry/namespaces"]["name"] == "aio-plant-l2-ns"
    assert "ba92f5b4-2d11-453d-a403-e96b0029c9fe" in res["Microsoft.Authorization/roleAssignments"]["properties"]["roleDefinitionId"]
    # the second plan is empty: what-if sees the same templates and parameters deployed
    again = aio.plan(site, run_dir=tmp_path, arm=conn, verify_fetch=str(armd.ca))
    assert again.empty, again.table()
    assert {s.reason for s in again.steps} == {"what-if: 1 NoChange"}
    assert '"clExtentionIds": ["' in again.steps[2].detail


def test_apply_refuses_drift(armd, conn, tmp_path):
    site = arm_site(armd)
    p = aio.plan(site, run_dir=tmp_path, arm=conn, verify_fetch=str(armd.ca))
    name = "layernet-aio-prereq-level4"
    deployed = p.context["bodies"][name]
    armd.put_resource(f"/subscriptions/{SUB}/resourcegroups/{RG}/providers/microsoft.resources/deployments/{name}",
                      {"properties": dict(deployed["properties"], provisioningState="Succeeded")})
    with pytest.raises(DriftError):
        aio.apply(p, site, run_dir=tmp_path, arm=conn, progress=quiet)
    assert armd.calls("PUT") == []


def test_a_pinned_digest_that_does_not_match_is_refused(armd, conn, tmp_path):
    site = arm_site(armd, instance_sha256="0" * 64)
    with pytest.raises(StageFailed, match="pins 0000.*nothing was deployed"):
        aio.plan(site, run_dir=tmp_path, arm=conn, verify_fetch=str(armd.ca))
    good = hashlib.sha256(armd.files["/rel/v9.9.9/azure-iot-operations-instance.json"]).hexdigest()
    p = aio.plan(arm_site(armd, instance_sha256=good), run_dir=tmp_path, arm=conn, verify_fetch=str(armd.ca))
    assert len(p.steps) == 12


def test_an_unknown_required_parameter_is_named(armd, conn, tmp_path):
    armd.files["/rel/v9.9.9/azure-iot-operations-instance.json"] = json.dumps(
        {**INSTANCE, "parameters": {**INSTANCE["parameters"], "fleetId": {"type": "string"}}}).encode()
    with pytest.raises(StageFailed, match="instance template requires parameter\\(s\\) fleetId"):
        aio.plan(arm_site(armd), run_dir=tmp_path, arm=conn, verify_fetch=str(armd.ca))


def test_a_template_url_that_cannot_be_fetched_says_so(armd, conn, tmp_path):
    site = arm_site(armd, enablement_url=f"{armd.url}/rel/v0/missing.json")
    with pytest.raises(StageFailed, match="could not fetch the template .*missing.json on this jump box"):
        aio.plan(site, run_dir=tmp_path, arm=conn, verify_fetch=str(armd.ca))


# ----------------------------------------------------------------------------------------------- verify
def seed_level(armd: ArmDouble, cluster: str, instance: str, insecure=True, states=None):
    states = states or {}
    base = f"{PFX}/Microsoft.IoTOperations/instances/{instance}"

    def put(path, state):
        armd.put_resource(path, {"id": path, "name": path.rsplit("/", 1)[1],
                                 "properties": {"provisioningState": state}})
    put(base, states.get("instance", "Succeeded"))
    put(f"{base}/brokers/default", states.get("broker", "Succeeded"))
    put(f"{base}/brokers/default/listeners/default", states.get("listener default", "Succeeded"))
    if insecure:
        put(f"{base}/brokers/default/listeners/default-insecure", states.get("listener default-insecure", "Succeeded"))
    put(f"{base}/dataflowProfiles/default", "Succeeded")
    put(f"{base}/dataflowEndpoints/default", "Succeeded")
    ext = f"{PFX}/Microsoft.Kubernetes/connectedClusters/{cluster}/providers/Microsoft.KubernetesConfiguration/extensions"
    for name, t in (("cert-manager", "microsoft.certmanagement"), ("secret-store", "microsoft.azure.secretstore"),
                    ("azure-iot-operations-x1", "microsoft.iotoperations")):
        armd.put_resource(f"{ext}/{name}", {"id": f"{ext}/{name}", "name": name, "properties": {
            "extensionType": t, "provisioningState": states.get(t, "Succeeded"),
            "statuses": [] if states.get(t, "Succeeded") == "Succeeded" else
            [{"code": "InstallationFailed", "level": "Error", "message": "image pull from mcr.microsoft.com refused"}]}})


CHECKS = ["instance", "broker", "listener default", "listener default-insecure", "dataflow profile",
          "dataflow endpoint", "extension microsoft.certmanagement", "extension microsoft.azure.secretstore",
          "extension microsoft.iotoperations"]


def test_verify_reads_every_resource_of_every_level(armd, conn):
    for lv in ("l4", "l3", "l2"):
        seed_level(armd, f"aio-plant-{lv}", f"aio-plant-{lv}-ops")
    rows = az_aio.verify_aio(example_site(target="lab"), conn, progress=quiet)
    assert [(r["level"], r["check"]) for r in rows] == [(lv, c) for lv in ("level4", "level3", "level2") for c in CHECKS]
    assert all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
    assert aio.failed(rows) is None
    assert armd.calls("GET", "/brokers/default/listeners/default-insecure")
    assert all(r.query.get("api-version") for r in armd.requests)


def test_verify_names_the_failed_resource_its_error_and_refused_hosts(armd, conn):
    seed_level(armd, "aio-plant-l4", "aio-plant-l4-ops")
    seed_level(armd, "aio-plant-l3", "aio-plant-l3-ops")
    seed_level(armd, "aio-plant-l2", "aio-plant-l2-ops", states={"microsoft.iotoperations": "Failed"})
    armd.store.pop(f"{PFX}/Microsoft.IoTOperations/instances/aio-plant-l3-ops/brokers/default/listeners/default-insecure".lower())
    rows = az_aio.verify_aio(example_site(target="lab"), conn, progress=quiet, refused={"level2": ["mcr.microsoft.com"]})
    bad = {(r["level"], r["check"]): r for r in rows if not r["ok"]}
    assert set(bad) == {("level3", "listener default-insecure"), ("level2", "extension microsoft.iotoperations")}
    l3 = bad[("level3", "listener default-insecure")]
    assert l3["observed"] == "absent" and "brokers/default/listeners/default-insecure is absent: not found" in l3["hint"]
    l2 = bad[("level2", "extension microsoft.iotoperations")]
    assert l2["observed"] == "Failed"
    assert "extensions/azure-iot-operations-x1 is Failed: image pull from mcr.microsoft.com refused" in l2["hint"]
    assert "the proxies refused at level2: mcr.microsoft.com" in l2["hint"]


def test_verify_polls_until_settled(armd, conn):
    for lv in ("l4", "l3", "l2"):
        seed_level(armd, f"aio-plant-{lv}", f"aio-plant-{lv}-ops")
    key = f"{PFX}/Microsoft.IoTOperations/instances/aio-plant-l4-ops/brokers/default".lower()
    armd.store[key]["properties"]["provisioningState"] = "Provisioning"
    now = [0.0]

    def sleep(s):
        now[0] += s
        if now[0] >= 30:
            armd.store[key]["properties"]["provisioningState"] = "Succeeded"
    rows = az_aio.verify_aio(example_site(target="lab"), conn, timeout=600, interval=10, sleep=sleep, clock=lambda: now[0],
                      progress=quiet)
    assert all(r["ok"] for r in rows) and now[0] == 30


# ----------------------------------------------------------------------------------------------- inside the clusters
@pytest.fixture
def kube():
    d = KubeApiDouble()
    yield d
    d.close()


def pod(name, ready=True, waiting=None):
    return {"metadata": {"name": name, "namespace": "azure-iot-operations"},
            "status": {"phase": "Running" if ready else "Pending",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"state": {"waiting": {"reason": waiting}} if waiting else {"running": {}}}]}}


def svc(name, port, kind="ClusterIP", ip=None):
    return {"metadata": {"name": name, "namespace": "azure-iot-operations"},
            "spec": {"type": kind, "ports": [{"port": port}]},
            "status": {"loadBalancer": {"ingress": [{"ip": ip}]} if ip else {}}}


def test_a_real_site_also_checks_pods_and_broker_services(armd, conn, kube):
    from kubernetes import client as k8s

    from layernet.targets.kube import Api

    for lv in ("l4", "l3", "l2"):
        seed_level(armd, f"aio-plant-{lv}", f"aio-plant-{lv}-ops")
    ns = "/api/v1/namespaces/azure-iot-operations"
    kube.store(f"{ns}/pods/aio-broker-frontend-0", pod("aio-broker-frontend-0"))
    kube.store(f"{ns}/pods/aio-operator-0", pod("aio-operator-0", ready=False, waiting="ImagePullBackOff"))
    kube.store(f"{ns}/services/aio-broker", svc("aio-broker", 18883))
    kube.store(f"{ns}/services/aio-broker-insecure", svc("aio-broker-insecure", 1883, "LoadBalancer", "192.168.103.10"))
    api = Api(k8s.ApiClient(configuration=kube.configuration()))
    rows = aio.verify(example_site(), arm=conn, progress=quiet, kube=lambda level: api,
                      refused={"level3": ["mcr.microsoft.com"]})
    l3 = [r for r in rows if r["level"] == "level3"]
    assert [r["check"] for r in l3] == CHECKS + ["pods Ready", "service aio-broker", "service aio-broker-insecure"]
    by = {r["check"]: r for r in l3}
    assert by["pods Ready"]["observed"] == "1/2 Ready" and not by["pods Ready"]["ok"]
    assert "aio-operator-0 (ImagePullBackOff)" in by["pods Ready"]["hint"]
    assert "the proxies refused at level3: mcr.microsoft.com" in by["pods Ready"]["hint"]
    assert by["service aio-broker"]["ok"] and by["service aio-broker"]["observed"] == "ClusterIP 18883"
    assert by["service aio-broker-insecure"]["ok"]
    assert by["service aio-broker-insecure"]["observed"] == "LoadBalancer 1883 at 192.168.103.10"
    kube.objects.pop(f"{ns}/services/aio-broker-insecure")
    rows = aio.verify(example_site(), arm=conn, progress=quiet, kube=lambda level: api)
    gone = next(r for r in rows if r["level"] == "level2" and r["check"] == "service aio-broker-insecure")
    assert gone["observed"] == "absent" and "does not exist" in gone["hint"]


def test_the_arm_plan_needs_connected_clusters(armd, conn, tmp_path):
    armd.store[f"{PFX}/Microsoft.Kubernetes/connectedClusters/aio-plant-l2".lower()]["properties"]["connectivityStatus"] = "Offline"
    with pytest.raises(StageFailed, match=r"not Connected: level2 \(Offline\)"):
        aio.plan(arm_site(armd), run_dir=tmp_path, arm=conn, verify_fetch=str(armd.ca))
    assert armd.calls("POST", "/whatIf") == []


def test_the_instance_fails_clearly_when_the_enablement_installed_nothing(armd, conn, tmp_path):
    armd.on_put.pop("deployments")          # the enablement deployment "succeeds" but no extension appears
    site = arm_site(armd)
    p = aio.plan(site, run_dir=tmp_path, arm=conn, verify_fetch=str(armd.ca))
    with pytest.raises(StageFailed, match="level4: clExtentionIds not known: the enablement extensions "
                                          "\\(microsoft.certmanagement, microsoft.azure.secretstore\\) are not installed"):
        aio.apply(p, site, run_dir=tmp_path, arm=conn, progress=quiet)
    assert not [r for r in armd.calls("PUT") if "layernet-aio-instance" in r.path]


def test_a_tls_only_level_gets_no_insecure_listener(armd, conn, tmp_path):
    site = example_site(aio={"executor": "arm", "templates": {
        "enablement_url": f"{armd.url}/rel/v9.9.9/azure-iot-operations-enablement.json",
        "instance_url": f"{armd.url}/rel/v9.9.9/azure-iot-operations-instance.json"},
        "levels": {"level4": {"listener": "tls"}}})
    p = aio.plan(site, run_dir=tmp_path, arm=conn, verify_fetch=str(armd.ca))
    assert [s.target for s in p.steps if "listener" in s.action] == ["layernet-aio-listener-level3",
                                                                    "layernet-aio-listener-level2"]


def test_an_identical_role_assignment_made_by_the_cli_keeps_the_template_from_a_second_one(armd, conn, tmp_path):
    """A registry created by `az iot ops schema registry create` holds the role under a name of its own: the
    prerequisites template leaves the role out (ARM would answer 409 RoleAssignmentExists)."""
    principal = "9a8b7c6d-0000-4000-8000-000000000001"
    sr = f"{PFX}/Microsoft.DeviceRegistry/schemaRegistries/aio-plant-l3-sr"
    armd.put_resource(sr, {"id": sr, "name": "aio-plant-l3-sr", "identity": {"type": "SystemAssigned",
                                                                               "principalId": principal},
                           "properties": {"provisioningState": "Succeeded"}})
    container = f"{PFX}/Microsoft.Storage/storageAccounts/plantexamplesr/blobServices/default/containers/aio-plant-l3-schemas"
    ra = f"{container}/providers/Microsoft.Authorization/roleAssignments/0f0e0d0c-1111-4222-8333-444455556666"
    armd.put_resource(ra, {"id": ra, "name": ra.rsplit("/", 1)[1], "properties": {
        "principalId": principal, "scope": container,
        "roleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"
                            "ba92f5b4-2d11-453d-a403-e96b0029c9fe"}})
    site = arm_site(armd)
    p = aio.plan(site, run_dir=tmp_path, arm=conn, verify_fetch=str(armd.ca))
    pre = {s.level: p.context["bodies"][s.target] for s in p.steps if s.action == "deploy prerequisites"}
    types = {lv: [r["type"] for r in b["properties"]["template"]["resources"]] for lv, b in pre.items()}
    assert "Microsoft.Authorization/roleAssignments" not in types["level3"]
    assert "Microsoft.Authorization/roleAssignments" in types["level4"]          # no registry there yet
