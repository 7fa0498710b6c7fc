"""The real-site path held to Azure's published contracts (the CLI and extension sources, the SDK models, the
release templates): extensions found by type, the schema registry's role planned once, the current storage flag,
enablement extension types from the template, what-if change types, Event Hubs adopted rather than converged,
Arc features only when enabled, the verdict counting levels, and the agents' key as their identity."""
from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest
from fakecli import FakeCli
from sites import example_site

from layernet.azure import aio as az_aio  # noqa: E402
from layernet.azure import aio_sdk  # noqa: E402
from layernet.azure import arc as az_arc  # noqa: E402
from layernet.azure.runner import Runner  # noqa: E402
from layernet.errors import StageFailed  # noqa: E402
from layernet.stages import aio, telemetry  # noqa: E402
from layernet.telemetry import arm as tel_arm, records  # noqa: E402
from layernet.plan import Step  # noqa: E402

SUB = "00000000-0000-0000-0000-000000000000"
RG = "rg-plant-example"
PFX = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers"
PRINCIPAL = "7f3c2a55-9d1e-4b8a-8c6f-2a1b3c4d5e6f"
ROLE = az_aio.STORAGE_BLOB_DATA_CONTRIBUTOR


def quiet(_m):
    pass


@pytest.fixture
def cli(tmp_path, monkeypatch):
    return FakeCli(tmp_path, monkeypatch)


def registry_exists(cli: FakeCli, role_list_answers: list) -> FakeCli:
    """A site where everything is in place except the registry's role (one `role assignment list` answer each)."""
    cli.on("az", "connectedk8s", "show", stdout={"properties": {"connectivityStatus": "Connected"}})
    cli.on("az", "extension", "show", stdout={"version": "1.2.0"})
    cli.on("az", "storage", "account", "show", stdout={"id": f"{PFX}/Microsoft.Storage/storageAccounts/plantexamplesr",
                                                       "isHnsEnabled": True})
    cli.on("az", "storage", "container", "exists", stdout={"exists": True})
    cli.on("az", "iot", "ops", "schema", "registry", "show",
           stdout={"id": "sr", "identity": {"principalId": PRINCIPAL}, "properties": {"provisioningState": "Succeeded"}})
    for answer in role_list_answers:
        cli.on("az", "role", "assignment", "list", stdout=answer, times=1)
    cli.on("az", "iot", "ops", "ns", "show", stdout={"id": "ns", "properties": {"provisioningState": "Succeeded"}})
    cli.on("az", "k8s-extension", "list", stdout=[
        {"name": "cert-manager", "extensionType": "microsoft.certmanagement", "provisioningState": "Succeeded"},
        {"name": "secret-store", "extensionType": "microsoft.azure.secretstore", "provisioningState": "Succeeded"},
        {"name": "azure-iot-operations-a1b2c", "extensionType": "microsoft.iotoperations",
         "provisioningState": "Succeeded"}])
    cli.on("az", "iot", "ops", "show", stdout={"id": "i", "properties": {"provisioningState": "Succeeded"}})
    cli.on("az", "resource", "show", stdout={"id": "listener", "properties": {"provisioningState": "Succeeded"}})
    return cli


# ----------------------------------------------------------------------------------------------- stage 03, az
def test_the_storage_account_is_created_with_the_current_hierarchical_namespace_flag(cli):
    argv = az_aio.storage_argv(example_site(), az_aio.levels(example_site())[0])
    assert "--enable-hierarchical-namespace" in argv and "--hierarchical-namespace" not in argv


def test_a_missing_role_on_an_existing_registry_is_planned_and_an_identical_assignment_counts_as_done(cli, tmp_path):
    three = 3 * [[]]
    # plan: no assignment on any level; apply re-reads for the drift check (3), then each level's step looks again
    # first: level4 finds one made meanwhile (e.g. by the registry's create), the others do not
    registry_exists(cli, three + three + [[{"name": "a1", "properties": {"principalId": PRINCIPAL}}], [], []])
    cli.on("az", "role", "assignment", "create", "--assignee-object-id", PRINCIPAL, rc=1,
           stderr="(RoleAssignmentExists) The role assignment already exists.", times=1)
    cli.on("az", "role", "assignment", "create", stdout="{}")
    site = example_site()
    p = aio.plan(site, runner=Runner())
    assert [(s.level, s.action) for s in p.changes] == [(lv, "assign Storage Blob Data Contributor")
                                                        for lv in ("level4", "level3", "level2")]
    assert p.changes[0].reason == "missing on the existing registry"
    rows = aio.apply(p, site, runner=Runner(sleep=lambda s: None), progress=quiet)
    assert [r["ok"] for r in rows] == [True, True, True]
    assert rows[0]["output"] == "already assigned (a1)"
    assert rows[1]["output"] == "already assigned (ARM: RoleAssignmentExists)"
    creates = [a for a in cli.calls("az") if a[:3] == ["role", "assignment", "create"]]
    assert len(creates) == 2           # level4's identical assignment was not made a second time


def test_without_the_role_the_registry_is_created_with_skip_ra(cli):
    site = example_site(aio={"schema_registry_role": False})
    r = az_aio.levels(site)[0]
    assert az_aio.registry_argv(site, r, "sa")[-1] == "--skip-ra"
    assert "--skip-ra" not in az_aio.registry_argv(example_site(), r, "sa")


def test_init_reads_the_enablement_types_of_the_release():
    blueprint = ("microsoft.iotoperations.platform", "microsoft.azure.secretstore", "microsoft.arc.containerstorage")
    have = {"microsoft.certmanagement": "Succeeded", "microsoft.azure.secretstore": "Succeeded"}
    ok, why = az_aio.init_done(list(blueprint), have, {"state": "Succeeded"})
    assert not ok and "microsoft.iotoperations.platform missing" in why
    ok, why = az_aio.init_done(list(blueprint), {t: "Succeeded" for t in blueprint}, None)
    assert ok and why.startswith("extensions Succeeded: microsoft.iotoperations.platform")
    # no template named: only an instance (create ran after init) with every extension Succeeded is a skip
    assert az_aio.init_done(None, have, None)[0] is False
    assert az_aio.init_done(None, {**have, "microsoft.arc.containerstorage": "Failed"}, {"state": "Succeeded"})[0] is False
    assert az_aio.init_done(None, have, {"state": "Succeeded"})[0] is True


# ----------------------------------------------------------------------------------------------- templates, what-if
def blueprint_template() -> dict:
    """A 2025-07-style enablement: the extensions sit in a nested deployment, resources as symbolic names."""
    ext = "Microsoft.KubernetesConfiguration/extensions"
    inner = {"resources": [{"type": ext, "name": "platform", "properties": {"extensionType": "microsoft.iotoperations.platform"}},
                           {"type": ext, "name": "acsa", "properties": {"extensionType": "microsoft.arc.containerstorage"}}]}
    return {"languageVersion": "2.0", "resources": {
        "secretStore": {"type": ext, "name": "ssc", "properties": {"extensionType": "Microsoft.Azure.SecretStore"}},
        "nested": {"type": "Microsoft.Resources/deployments", "name": "n", "properties": {"template": inner}},
        "computed": {"type": ext, "name": "x", "properties": {"extensionType": "[parameters('t')]"}}}}


def test_the_enablement_types_come_from_the_template_being_deployed():
    assert az_aio.extension_types(blueprint_template()) == (
        "microsoft.azure.secretstore", "microsoft.iotoperations.platform", "microsoft.arc.containerstorage")


class _Lister:
    def __init__(self, exts):
        self.exts = exts

    def list(self, *args):
        return self.exts


class _FakeArm:
    subscription_id = SUB

    def __init__(self, exts):
        self.ext = type("E", (), {"extensions": _Lister(exts)})()

    def extensions(self):
        return self.ext


def test_the_arm_executor_finds_the_release_s_enablement_extensions_by_type(tmp_path):
    base = f"{PFX}/Microsoft.Kubernetes/connectedClusters/aio-plant-l4/providers/Microsoft.KubernetesConfiguration/extensions"
    exts = [{"id": f"{base}/{n}", "name": n, "properties": {"extensionType": t}} for n, t in (
        ("ssc", "microsoft.azure.secretstore"), ("platform", "microsoft.iotoperations.platform"),
        ("acsa", "microsoft.arc.containerstorage"))]
    dep = az_aio.ArmDeployments(example_site(), _FakeArm(exts), tmp_path)
    dep.bodies["layernet-aio-enablement-level4"] = az_aio.deployment_body(blueprint_template(), {})
    r = az_aio.levels(example_site())[0]
    assert dep.extension_ids(r) == [f"{base}/ssc", f"{base}/platform", f"{base}/acsa"]
    dep2 = az_aio.ArmDeployments(example_site(), _FakeArm(exts[:2]), tmp_path)
    dep2.bodies = dict(dep.bodies)
    assert dep2.extension_ids(r) is None        # the container storage extension is not there yet


@pytest.mark.parametrize("changes, same, words", [
    ([{"changeType": "NoChange"}, {"changeType": "Ignore"}], True, "1 Ignore, 1 NoChange"),
    ([{"changeType": "Modify", "delta": [{"path": "properties.x", "propertyChangeType": "NoEffect"}]}], True, "1 NoChange"),
    ([{"changeType": "Modify", "delta": [{"propertyChangeType": "NoEffect"}, {"propertyChangeType": "Modify"}]}],
     False, "1 Modify"),
    ([{"changeType": "Unsupported", "resourceId": f"{PFX}/Microsoft.X/things/a",
       "unsupportedReason": "reference() cannot be evaluated"}], False,
     "what-if cannot predict things/a: reference() cannot be evaluated"),
    ([{"changeType": "Deploy"}], False, "1 Deploy"),
    ([{"changeType": "Teleport"}], False, "a change type this version does not know"),
])
def test_what_if_change_types(changes, same, words):
    got_same, text = az_aio.summarize_what_if({"status": "Succeeded", "properties": {"changes": changes}})
    assert got_same is same and words in text


# ----------------------------------------------------------------------------------------------- extensions by type
def test_the_aio_extension_is_named_as_the_installers_name_it_and_existing_ones_are_adopted_by_type():
    site = example_site()
    res = [r for r in aio_sdk.desired(site, SUB) if r.kind == "extension"]
    aio_ext = [r for r in res if r.body["properties"]["extensionType"] == "microsoft.iotoperations"]
    assert len(aio_ext) == 3 and all(r.args[1].startswith("azure-iot-operations-") and len(r.args[1]) == 26
                                     for r in aio_ext)
    assert len({r.args[1] for r in aio_ext}) == 3           # a suffix per cluster
    cid = f"{PFX}/Microsoft.Kubernetes/connectedClusters/aio-plant-l4".lower()
    adopted = aio_sdk.desired(site, SUB, {cid: {"microsoft.iotoperations": "azure-iot-operations-zz9qx",
                                                 "microsoft.certmanagement": "cert-manager-by-hand"}})
    l4 = {r.body["properties"]["extensionType"]: r for r in adopted if r.kind == "extension" and r.level == "level4"}
    assert l4["microsoft.iotoperations"].id.endswith("/extensions/azure-iot-operations-zz9qx")
    assert l4["microsoft.certmanagement"].args[1] == "cert-manager-by-hand"
    cl = next(r for r in adopted if r.level == "level4" and r.action == "create: custom location")
    assert cl.body["properties"]["clusterExtensionIds"][0].endswith("/cert-manager-by-hand")


def test_an_identical_role_assignment_under_another_name_is_found():
    scope = f"{PFX}/Microsoft.Storage/storageAccounts/sa/blobServices/default/containers/c"
    mine = {"id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/g1", "name": "g1",
            "properties": {"principalId": PRINCIPAL.upper(), "roleDefinitionId": f"/subscriptions/{SUB}/providers/"
                           f"Microsoft.Authorization/roleDefinitions/{ROLE}"}}
    above = {**mine, "id": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/g2",
             "properties": {**mine["properties"], "scope": f"/subscriptions/{SUB}"}}
    assert aio_sdk.identical_assignment([above, mine], PRINCIPAL, ROLE, scope) is mine
    assert aio_sdk.identical_assignment([above], PRINCIPAL, ROLE, scope) is None


class FakeLive:
    """Stage 04's ARM client (layernet.telemetry.arm.Live) with canned ARM answers (by id) and cluster extensions (by level)."""

    def __init__(self, arm=None, resources=None, extensions=None):
        self.resources = {k.lower(): v for k, v in (resources or {}).items()}
        self.extensions = extensions or {}
        self.client = type("C", (), {"providers": type("P", (), {"get": staticmethod(
            lambda ns: {"registrationState": "Registered"})})()})()

    def get(self, rid, api):
        return self.resources.get(rid.lower())

    def extension_of_type(self, site, level, ext_type):
        return next((e for e in self.extensions.get(level, []) if e["properties"]["extensionType"] == ext_type), None)


def lab_site():
    from layernet.site import load_site

    return telemetry._with_subscription(load_site(Path(__file__).resolve().parents[2] / "params" / "lab.yaml"), SUB)


def test_stage_04_finds_the_aio_extension_s_identity_by_type_not_by_name():
    site = lab_site()
    ext = {"name": "azure-iot-operations-q7w2e", "identity": {"principalId": "p-aio"},
           "properties": {"extensionType": "microsoft.iotoperations"}}
    other = {"name": "azure-iot-operations", "identity": {"principalId": "p-wrong"},
             "properties": {"extensionType": "microsoft.azure.secretstore"}}
    assert tel_arm.principals(site, FakeLive(extensions={"level4": [other, ext]})) == {"level4": "p-aio"}
    assert tel_arm.principals(site, FakeLive(extensions={"level4": [other]})) == {}


def test_an_existing_event_hubs_namespace_and_hub_are_adopted_never_downgraded(monkeypatch):
    site = lab_site()
    ns, hub = records.desired(site)[:2]
    live = {ns["id"]: {"sku": {"name": "Premium", "tier": "Premium"},
                       "properties": {"provisioningState": "Succeeded", "kafkaEnabled": True}},
            hub["id"]: {"properties": {"provisioningState": "Succeeded", "partitionCount": 8,
                                       "messageRetentionInDays": 7}}}
    monkeypatch.setattr(tel_arm, "Live", lambda arm: FakeLive(arm, live))
    monkeypatch.setattr("layernet.targets.sides",
                        lambda s, t=None: (None, type("C", (), {"telemetry_running": lambda self: None})(), None))
    state = tel_arm.observe(site, type("A", (), {"subscription_id": SUB})())
    steps = {s.action: s for s in telemetry.steps(site, state) if s.level == site.egress_level}
    nss, hubs = steps["create Event Hubs namespace"], steps["create event hub"]
    assert nss.skip and hubs.skip
    assert "adopted as it is, never changed" in nss.reason and "SKU Premium (the site would create Standard): kept" in nss.reason
    assert "8 partition(s) (the site would create 1): kept; partitions cannot be decreased" in hubs.reason
    assert "7 day(s) retention (the site would create 1): kept" in hubs.reason
    basic = records.adoption_notes(ns, {"sku": {"name": "Basic"}, "properties": {}})
    assert basic == ["SKU Basic (the site would create Standard): kept; the Kafka endpoint needs Standard or higher"]
    assert records.adoption_notes(hub, {"properties": {"partitionCount": 1, "messageRetentionInDays": 1}}) == []


# ----------------------------------------------------------------------------------------------- Arc
def test_features_are_unreadable_through_arm_not_assumed_enabled():
    t = az_arc.targets(example_site())[0]
    connected = {"properties": {"connectivityStatus": "Connected"}}
    live = az_arc.SdkLive(arm=None)
    live.cluster = lambda t: connected
    assert live.features(t) is None
    assert az_arc.SdkLive(arm=None, features_of=lambda level: ["cluster-connect"]).features(t) == ["cluster-connect"]
    ex = az_arc.SdkExecutor(example_site(), arm=None)
    with pytest.raises(StageFailed, match="agent settings, not ARM resources"):
        ex.run(Step("level4", "enable features", "aio-plant-l4", ""))
    seen = []
    ex = az_arc.SdkExecutor(example_site(), arm=None, on_features=lambda lv, f: seen.append((lv, f)) or "on")
    assert ex.run(Step("level4", "enable features", "aio-plant-l4", ""))["output"] == "on"
    assert seen == [("level4", list(example_site().arc.features))]


def test_the_verdict_counts_levels_not_rows():
    from layernet.stages import arc

    rows = [{"level": lv, "check": c, "ok": True} for lv in ("level4", "level3", "level2")
            for c in ("connectivity status", "provisioning state", "agent version", "last connectivity time")]
    assert arc.require_connected(rows).startswith("all 3 level(s) Connected to Azure Arc")


def test_the_identity_service_accepts_only_the_connected_cluster_s_own_key():
    from layernet.lab import arcagent
    from layernet.lab.cloud import arc as cloud_arc

    key, pub = az_arc.new_agent_key(1024)
    other, _ = az_arc.new_agent_key(1024)
    cid = f"{PFX}/Microsoft.Kubernetes/connectedClusters/c1"

    class Store:
        def snapshot(self, section, k):
            return {"id": cid, "properties": {"agentPublicKeyCertificate": pub}} if k.lower() == cid.lower() else None

    good = arcagent.proof(cid, az_arc.private_pem(key))
    assert cloud_arc.check_proof(Store(), good) == (200, "", "verified")
    status, code, _ = cloud_arc.check_proof(Store(), arcagent.proof(cid, az_arc.private_pem(other)))
    assert (status, code) == (401, "InvalidProof")
    stale = arcagent.proof(cid, az_arc.private_pem(key), now=time.time() - 3600)
    assert cloud_arc.check_proof(Store(), stale)[:2] == (401, "InvalidProof")
    assert cloud_arc.check_proof(Store(), {**good, "clusterResourceId": cid + "x"})[0] == 404


def test_the_connect_step_hands_the_private_key_to_what_installs_the_agents(tmp_path):
    """The key whose public half the PUT carries is the one the agents get (the sdk executor)."""
    from cryptography.hazmat.primitives import serialization

    got = {}

    class CC:
        def begin_create_or_replace(self, rg, name, body):
            got["body"] = body
            return type("P", (), {"result": lambda self: {"id": f"{PFX}/Microsoft.Kubernetes/connectedClusters/{name}"}})()

    arm = type("A", (), {"subscription_id": SUB,
                         "connected_kubernetes": lambda self: type("K", (), {"connected_cluster": CC()})()})()
    ex = az_arc.SdkExecutor(example_site(), arm, key_size=1024,
                            on_connected=lambda level, cid, key: got.update(level=level, key=key) or "installed")
    out = ex.run(Step("level4", "connect cluster", "aio-plant-l4", ""))
    assert out["ok"] and got["level"] == "level4"
    key = serialization.load_pem_private_key(got["key"], password=None)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    import base64

    assert got["body"]["properties"]["agentPublicKeyCertificate"] == base64.b64encode(der).decode()
    assert json.dumps(out).find("PRIVATE KEY") == -1 and shlex.quote("x")
