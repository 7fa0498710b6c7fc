"""One api-version per resource type, and the lab's ARM refusing what ARM refuses at that version: the contract
read from the pinned SDK models (unknown, read-only and wrongly typed properties, missing required ones, values
outside an enum, with ARM's error shape and the property path), other api-versions, and a second role assignment
for the same principal, role and scope. Every body the project sends passes."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from sites import example_site

from layernet import apiversions  # noqa: E402
from layernet.lab.cloud.arm import contract  # noqa: E402
from layernet.lab.cloud.arm.service import Arm, ArmSettings  # noqa: E402
from layernet.lab.cloud.arm.store import Store  # noqa: E402

SUB = "00000000-0000-0000-0000-000000000001"
BASE = "https://management.azure.com"
RG = f"/subscriptions/{SUB}/resourceGroups/rg1"
INST = f"{RG}/providers/Microsoft.IoTOperations/instances/i1"
LISTENER = f"{INST}/brokers/default/listeners/l1"
IO = {"api-version": apiversions.api_version("Microsoft.IoTOperations/instances")}
EXT_LOC = {"name": f"{RG}/providers/Microsoft.ExtendedLocation/customLocations/cl", "type": "CustomLocation"}
ROLE = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"


def v(rtype: str) -> dict:
    return {"api-version": apiversions.api_version(rtype)}


@pytest.fixture
def arm(tmp_path):
    a = Arm(Store(tmp_path / "arm.json"), ArmSettings(subscriptions={SUB: "lab"}, register_seconds=0.0))
    assert a.handle("PUT", RG, v("Microsoft.Resources/resourceGroups"), {"location": "westeurope"}, BASE).status == 201
    for ns in ("Microsoft.IoTOperations", "Microsoft.Storage"):
        assert a.handle("POST", f"/subscriptions/{SUB}/providers/{ns}/register", {"api-version": "2016-02-01"},
                        None, BASE).status == 200
    a.store.put("resources", INST, {"id": INST, "name": "i1", "type": "Microsoft.IoTOperations/instances",
                                    "properties": {"provisioningState": "Succeeded"}})
    a.store.put("resources", f"{INST}/brokers/default", {"id": f"{INST}/brokers/default", "name": "default",
                                                         "type": "Microsoft.IoTOperations/instances/brokers",
                                                         "properties": {"provisioningState": "Succeeded"}})
    return a


def listener(**props) -> dict:
    return {"extendedLocation": EXT_LOC, "properties": {"serviceType": "LoadBalancer", "ports": [{"port": 1883}], **props}}


def refused(arm, body, path=LISTENER, query=IO):
    r = arm.handle("PUT", path, query, body, BASE)
    assert r.status == 400, r.body
    return r.body["error"]


def test_a_body_that_fits_the_pinned_model_is_accepted(arm):
    r = arm.handle("PUT", LISTENER, IO, listener(serviceName="aio-broker-insecure"), BASE)
    assert r.status == 201 and r.body["properties"]["provisioningState"] == "Accepted"


@pytest.mark.parametrize("body, code, target", [
    (listener(colour="blue"), "UnknownProperty", "properties.colour"),
    (listener(provisioningState="Succeeded"), "ReadOnlyProperty", "properties.provisioningState"),
    (listener(ports=[{"port": "1883"}]), "InvalidPropertyType", "properties.ports[0].port"),
    ({"extendedLocation": EXT_LOC, "properties": {"serviceType": "LoadBalancer"}}, "MissingRequiredProperty",
     "properties.ports"),
    (listener(serviceType="Ingress"), "InvalidEnumValue", "properties.serviceType"),
    (listener(ports=[{"port": 1883, "tls": {"mode": "Sometimes"}}]), "InvalidEnumValue", "properties.ports[0].tls.mode"),
    (listener(ports=[{"protocol": "Mqtt"}]), "MissingRequiredProperty", "properties.ports[0].port"),
])
def test_each_kind_of_contract_breach_is_refused_with_arm_s_shape_and_the_property_path(arm, body, code, target):
    err = refused(arm, body)
    assert err["code"] == "InvalidRequestContent" and err["target"] == target
    assert {"code": code, "target": target} == {k: err["details"][0][k] for k in ("code", "target")}
    assert target in err["message"]
    assert arm.handle("GET", LISTENER, IO, None, BASE).status == 404           # nothing was stored


def test_a_polymorphic_model_is_checked_by_its_discriminator(arm):
    ep = f"{INST}/dataflowEndpoints/e1"
    mqtt = {"extendedLocation": EXT_LOC, "properties": {"endpointType": "Mqtt", "mqttSettings": {
        "host": "10.0.0.1:1883", "authentication": {"method": "Anonymous"}, "tls": {"mode": "Disabled"}}}}
    assert arm.handle("PUT", ep, IO, mqtt, BASE).status == 201
    # the REST examples' anonymousSettings is not a field of the pinned DataflowEndpointMqttAuthentication
    mqtt["properties"]["mqttSettings"]["authentication"]["anonymousSettings"] = {}
    err = refused(arm, mqtt, ep)
    assert err["target"] == "properties.mqttSettings.authentication.anonymousSettings"
    reg = {"extendedLocation": EXT_LOC, "properties": {"host": "mcr.microsoft.com", "authentication": {
        "method": "Anonymous", "anonymousSettings": {}}}}
    assert arm.handle("PUT", f"{INST}/registryEndpoints/r1", IO, reg, BASE).status == 201
    reg["properties"]["authentication"]["method"] = "Telepathy"
    err = refused(arm, reg, f"{INST}/registryEndpoints/r1")
    assert err["details"][0]["code"] == "InvalidEnumValue" and err["target"] == "properties.authentication.method"


def test_an_api_version_the_type_does_not_have_is_refused(arm):
    r = arm.handle("PUT", LISTENER, {"api-version": "2024-11-01"}, listener(), BASE)
    assert r.status == 400 and r.body["error"]["code"] == "InvalidApiVersionParameter"
    assert IO["api-version"] in r.body["error"]["message"] and "'instances/brokers/listeners'" in r.body["error"]["message"]
    assert arm.handle("GET", INST, {"api-version": "2025-10-01"}, None, BASE).status == 400
    sa = f"{RG}/providers/Microsoft.Storage/storageAccounts/sa1"
    assert arm.handle("PUT", sa, {"api-version": "2019-06-01"}, {"location": "westeurope"}, BASE).status == 400
    # (202: where the lab cloud's storage hook is registered, the Storage provider's create)
    assert arm.handle("PUT", sa, v("Microsoft.Storage/storageAccounts"), {"location": "westeurope"}, BASE).status in (201, 202)
    # providers and metadata answer whatever version a client asks (azure-mgmt-core registers with its own)
    assert arm.handle("GET", f"/subscriptions/{SUB}/providers/Microsoft.IoTOperations", {"api-version": "2016-02-01"},
                      None, BASE).status == 200


def test_a_second_role_assignment_for_the_same_principal_role_and_scope_is_a_conflict(arm):
    scope = f"{RG}/providers/Microsoft.Storage/storageAccounts/sa1"
    arm.store.put("resources", scope, {"id": scope, "name": "sa1", "type": "Microsoft.Storage/storageAccounts",
                                       "properties": {"provisioningState": "Succeeded"}})
    body = {"properties": {"roleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{ROLE}",
                           "principalId": "p-1", "principalType": "ServicePrincipal"}}
    q = v("Microsoft.Authorization/roleAssignments")
    first = f"{scope}/providers/Microsoft.Authorization/roleAssignments/11111111-1111-1111-1111-111111111111"
    assert arm.handle("PUT", first, q, body, BASE).status == 201
    assert arm.handle("PUT", first, q, body, BASE).status == 200               # the same name again: an update
    second = first.replace("11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222")
    r = arm.handle("PUT", second, q, body, BASE)
    assert r.status == 409 and r.body["error"]["code"] == "RoleAssignmentExists"
    assert "11111111-1111-1111-1111-111111111111" in r.body["error"]["message"]
    other = {"properties": {**body["properties"], "principalId": "p-2"}}
    assert arm.handle("PUT", second, q, other, BASE).status == 201             # another principal is another assignment


def test_the_table_follows_the_pinned_packages_and_every_writer_uses_it():
    """A provider's pinned version is its model package's default (the models are of that version)."""
    for key, module in apiversions.MODEL_PACKAGES.items():
        types = [t for t in apiversions.API_VERSIONS if t == key or t.startswith(key + "/")]
        cfg = importlib.import_module(module + "._configuration")
        conf = next(c for n, c in vars(cfg).items() if n.endswith("Configuration"))
        import inspect
        default = inspect.getsource(conf).split('kwargs.pop("api_version", "')[1].split('"')[0]
        assert types and {apiversions.API_VERSIONS[t] for t in types} == {default}, (key, default)
    for rtype in contract.MODELS:
        assert apiversions.known(rtype), rtype
    from layernet.azure import aio as az_aio
    from layernet.azure import aio_sdk
    from layernet.render import telemetry as render_telemetry
    from layernet.stages import telemetry
    from layernet.telemetry import records

    site = example_site()
    for r in aio_sdk.desired(site, SUB):
        if r.api:
            assert r.api == apiversions.api_version(apiversions.type_of(r.id)), r.id
    lab = telemetry._with_subscription(_lab_site(), SUB)
    for r in records.desired(lab, {"level4": "p"}):
        assert r["apiVersion"] == apiversions.api_version(apiversions.type_of(r["id"])), r["id"]
    assert render_telemetry.IOTOPS_API == apiversions.IOTOPERATIONS
    for item in az_aio.prereq_template(site, az_aio.levels(site)[0])["resources"]:
        assert item["apiVersion"] == apiversions.api_version(item["type"])


def _lab_site():
    from layernet.site import load_site

    return load_site(Path(__file__).resolve().parents[2] / "params" / "lab.yaml")


def test_every_body_the_project_sends_fits_the_pinned_models():
    from layernet.azure import aio as az_aio
    from layernet.azure import aio_sdk
    from layernet.azure import arc as az_arc
    from layernet.stages import telemetry
    from layernet.telemetry import records

    site = example_site()
    bodies = [(apiversions.type_of(r.id), r.body, r.action) for r in aio_sdk.desired(site, SUB)]
    for t in az_arc.targets(site):
        bodies.append(("Microsoft.Kubernetes/connectedClusters", az_arc.connected_cluster_body(site, t, "AAAA"), "connect"))
    lab = telemetry._with_subscription(_lab_site(), SUB)
    bodies += [(apiversions.type_of(r["id"]), r["body"], r["action"]) for r in records.desired(lab, {"level4": "p"})]
    for r in az_aio.levels(site):
        res = az_aio.listener_template(site, r)["resources"][0]
        bodies.append((res["type"], {k: res[k] for k in ("extendedLocation", "properties")}, "insecure listener"))
        for item in az_aio.prereq_template(site, r)["resources"]:
            bodies.append((item["type"], {k: x for k, x in item.items()
                                          if k not in ("type", "apiVersion", "name", "dependsOn", "scope")}, "prereq"))
    checked = [(t, a) for t, _, a in bodies if contract.model_for(t) is not None]
    assert len(checked) > 40 and {t for t, _ in checked} >= {
        "Microsoft.IoTOperations/instances/dataflowEndpoints", "Microsoft.DeviceRegistry/namespaces/assets",
        "Microsoft.Kubernetes/connectedClusters", "Microsoft.KubernetesConfiguration/extensions"}
    bad = [(a, t, p) for t, b, a in bodies for p in contract.problems(t, b)]
    assert bad == []
