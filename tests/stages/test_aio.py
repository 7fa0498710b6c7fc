"""Stage 03 on a real site with the az executor: the exact commands per level in order, skips for resources in
the desired state, the pinned CLI, the shared storage account, role assignment with the registry's principal,
drift and failure paths. The `az` on PATH is the fake of tests/doubles."""
from __future__ import annotations

import json
import shlex

import pytest
from fakecli import FakeCli
from sites import example_site

from layernet.azure.runner import Runner, secret_in  # noqa: E402
from layernet.errors import DriftError, StageFailed  # noqa: E402
from layernet.stages import aio  # noqa: E402

SUB = "00000000-0000-0000-0000-000000000000"
RG = "rg-plant-example"
PFX = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers"
SA_ID = f"{PFX}/Microsoft.Storage/storageAccounts/plantexamplesr"
NOT_FOUND = dict(rc=3, stderr="(ResourceNotFound) The Resource was not found.")
PRINCIPAL = "7f3c2a55-9d1e-4b8a-8c6f-2a1b3c4d5e6f"
MUTATING = (["storage", "account", "create"], ["storage", "container", "create"], ["iot", "ops", "schema"],
            ["iot", "ops", "ns"], ["iot", "ops", "init"], ["iot", "ops", "create"], ["role", "assignment", "create"],
            ["extension", "add"], ["resource", "create"])


def quiet(_m):
    pass


def mutating(cli: FakeCli) -> list[list[str]]:
    out = []
    for a in cli.calls("az"):
        if a[:3] == ["iot", "ops", "schema"] and a[4] != "create":
            continue
        if a[:3] == ["iot", "ops", "ns"] and a[3] != "create":
            continue
        if any(a[:len(m)] == m for m in MUTATING):
            out.append(["az"] + a)
    return out


def fresh(cli: FakeCli, reads_before_principal: int = 6) -> FakeCli:
    cli.on("az", "connectedk8s", "show", stdout={"properties": {"connectivityStatus": "Connected"}})
    cli.on("az", "extension", "show", stdout={"name": "azure-iot-ops", "version": "1.1.0"})
    cli.on("az", "storage", "account", "show", **NOT_FOUND)
    cli.on("az", "iot", "ops", "schema", "registry", "show", times=reads_before_principal, **NOT_FOUND)
    cli.on("az", "iot", "ops", "schema", "registry", "show",
           stdout={"id": "x", "identity": {"principalId": PRINCIPAL}})
    cli.on("az", "iot", "ops", "ns", "show", **NOT_FOUND)
    cli.on("az", "k8s-extension", "list", stdout=[])
    cli.on("az", "iot", "ops", "show", **NOT_FOUND)
    cli.on("az", "resource", "show", **NOT_FOUND)
    for m in MUTATING:
        cli.on("az", *m, stdout="{}")
    return cli


def in_place(cli: FakeCli, hns=True, instance_state="Succeeded") -> FakeCli:
    cli.on("az", "connectedk8s", "show", stdout={"properties": {"connectivityStatus": "Connected"}})
    cli.on("az", "extension", "show", stdout={"version": "1.2.0"})
    cli.on("az", "storage", "account", "show", stdout={"id": SA_ID, "isHnsEnabled": hns})
    cli.on("az", "storage", "container", "exists", stdout={"exists": True})
    cli.on("az", "iot", "ops", "schema", "registry", "show",
           stdout={"id": "sr", "identity": {"principalId": PRINCIPAL}, "properties": {"provisioningState": "Succeeded"}})
    cli.on("az", "role", "assignment", "list", stdout=[{"id": "ra"}])
    cli.on("az", "iot", "ops", "ns", "show", stdout={"id": "ns", "properties": {"provisioningState": "Succeeded"}})
    cli.on("az", "k8s-extension", "list", stdout=[
        {"extensionType": "microsoft.certmanagement", "provisioningState": "Succeeded"},
        {"extensionType": "microsoft.azure.secretstore", "provisioningState": "Succeeded"},
        {"extensionType": "microsoft.iotoperations", "provisioningState": "Succeeded"}])
    cli.on("az", "iot", "ops", "show", stdout={"id": "i", "properties": {"provisioningState": instance_state}})
    cli.on("az", "resource", "show", stdout={"id": "listener", "properties": {"provisioningState": "Succeeded"}})
    for m in MUTATING:
        cli.on("az", *m, stdout="{}")
    return cli


@pytest.fixture
def cli(tmp_path, monkeypatch):
    return FakeCli(tmp_path, monkeypatch)


def test_plan_of_a_fresh_site_lists_the_exact_commands(cli):
    fresh(cli)
    site = example_site(aio={"cli_version": "1.2.0"})
    p = aio.plan(site, runner=Runner())
    assert p.steps[0].action == "pin azure-iot-ops CLI" and not p.steps[0].skip
    assert p.steps[0].detail == "az extension add --upgrade --name azure-iot-ops --version 1.2.0"
    actions = ["create storage account", "create container", "create schema registry", "create ADR namespace",
               "assign Storage Blob Data Contributor", "init (enablement)", "create instance"]
    assert [(s.level, s.action) for s in p.steps[1:]] == [(lv, a) for lv in ("level4", "level3", "level2")
                                                          for a in actions]
    by = {(s.level, s.action): s for s in p.steps}
    sa4, sa3 = by[("level4", "create storage account")], by[("level3", "create storage account")]
    assert shlex.split(sa4.detail) == ["az", "storage", "account", "create", "-n", "plantexamplesr", "-g", RG,
                                       "--location", "eastus", "--sku", "Standard_LRS", "--kind", "StorageV2",
                                       "--enable-hierarchical-namespace", "true"]
    assert not sa4.skip and sa3.skip and sa3.reason == "created by the level4 step"
    assert by[("level3", "create container")].detail == (
        "az storage container create -n aio-plant-l3-schemas --account-name plantexamplesr --auth-mode login")
    assert shlex.split(by[("level4", "create schema registry")].detail) == [
        "az", "iot", "ops", "schema", "registry", "create", "-g", RG, "-n", "aio-plant-l4-sr",
        "--registry-namespace", "aio-plant-l4-sr", "--sa-resource-id", SA_ID, "--sa-container", "aio-plant-l4-schemas"]
    assert by[("level2", "create ADR namespace")].detail == f"az iot ops ns create -n aio-plant-l2-ns -g {RG}"
    assert by[("level4", "init (enablement)")].detail == f"az iot ops init -g {RG} --cluster aio-plant-l4"
    assert shlex.split(by[("level4", "create instance")].detail) == [
        "az", "iot", "ops", "create", "-g", RG, "--cluster", "aio-plant-l4", "--custom-location", "aio-plant-l4-cl",
        "-n", "aio-plant-l4-ops",
        "--sr-resource-id", f"{PFX}/Microsoft.DeviceRegistry/schemaRegistries/aio-plant-l4-sr",
        "--ns-resource-id", f"{PFX}/Microsoft.DeviceRegistry/namespaces/aio-plant-l4-ns",
        "--broker-frontend-replicas", "1", "--broker-frontend-workers", "1", "--broker-backend-part", "1",
        "--broker-backend-workers", "1", "--broker-backend-rf", "2", "--broker-mem-profile", "Low",
        "--add-insecure-listener"]
    role = by[("level4", "assign Storage Blob Data Contributor")]
    assert "<principal id of schema registry aio-plant-l4-sr>" in role.detail
    assert role.target == f"{SA_ID}/blobServices/default/containers/aio-plant-l4-schemas"
    # `schema registry create` assigns it by default: planned once, as part of that step
    assert role.skip and role.reason.startswith("made by the create schema registry step")
    assert mutating(cli) == []


def test_site_values_reach_the_create_command(cli):
    fresh(cli)
    site = example_site(aio={"levels": {"level3": {
        "instance": "l3-ops", "custom_location": "l3-cl", "adr_namespace": "l3-ns", "listener": "tls",
        "schema_registry": {"name": "l3-sr", "namespace": "l3-reg", "storage_account": "l3schemas", "container": "l3c"},
        "broker": {"frontend_replicas": 2, "frontend_workers": 3, "backend_partitions": 4, "backend_workers": 5,
                   "backend_redundancy_factor": 3, "memory_profile": "Medium"}}}})
    p = aio.plan(site, runner=Runner())
    by = {(s.level, s.action): s for s in p.steps}
    create = shlex.split(by[("level3", "create instance")].detail)
    assert create[create.index("-n") + 1] == "l3-ops" and create[create.index("--custom-location") + 1] == "l3-cl"
    assert create[create.index("--broker-frontend-replicas"):] == [
        "--broker-frontend-replicas", "2", "--broker-frontend-workers", "3", "--broker-backend-part", "4",
        "--broker-backend-workers", "5", "--broker-backend-rf", "3", "--broker-mem-profile", "Medium"]
    assert "--add-insecure-listener" not in create
    assert not by[("level3", "create storage account")].skip     # its own account
    assert "--registry-namespace l3-reg" in by[("level3", "create schema registry")].detail


def test_apply_runs_the_changes_in_order_and_fills_in_the_principal(cli, tmp_path):
    fresh(cli)
    site = example_site()
    p = aio.plan(site, runner=Runner())
    rows = aio.apply(p, site, run_dir=tmp_path, runner=Runner(), progress=quiet)
    ran = [shlex.join(a) for a in mutating(cli)]
    assert ran == [s.detail for s in p.changes]
    assert len(rows) == len(p.changes) == 16
    # on a fresh site the registry's create makes the role assignment: no second one (ARM: 409 RoleAssignmentExists)
    assert not [a for a in mutating(cli) if a[1] == "role"]
    assert (tmp_path / "aio").is_dir() and len(list((tmp_path / "aio").glob("*.cmd"))) > 16
    for argv in cli.calls("az"):
        assert secret_in(argv) is None


def test_everything_in_place_is_an_empty_plan(cli):
    in_place(cli)
    site = example_site(aio={"cli_version": "1.2.0"})
    p = aio.plan(site, runner=Runner())
    assert p.empty, p.table()
    assert aio.apply(p, site, runner=Runner(), progress=quiet) == []
    assert mutating(cli) == []


def test_an_instance_that_is_not_succeeded_is_created_again(cli):
    in_place(cli, instance_state="Failed")
    p = aio.plan(example_site(), runner=Runner())
    assert [(s.level, s.action) for s in p.changes] == [(lv, "create instance") for lv in ("level4", "level3", "level2")]
    assert p.changes[0].reason == "exists but Failed"


def test_a_storage_account_without_hierarchical_namespace_stops_the_plan(cli):
    in_place(cli, hns=False)
    with pytest.raises(StageFailed, match="exists without hierarchical namespace.*aio.levels.level4.schema_registry"):
        aio.plan(example_site(), runner=Runner())


def test_drift_and_failures(cli, tmp_path):
    fresh(cli)
    site = example_site()
    p = aio.plan(site, runner=Runner())
    cli.rules = [r for r in cli.rules if r["match"][:3] != ["iot", "ops", "show"]]
    cli.on("az", "iot", "ops", "show", stdout={"id": "i", "properties": {"provisioningState": "Succeeded"}})
    with pytest.raises(DriftError):
        aio.apply(p, site, runner=Runner(), progress=quiet)
    assert mutating(cli) == []
    # a failing init stops the stage at that step and says where the outputs are
    cli.rules = []
    fresh(cli)
    cli.rules = [r for r in cli.rules if r["match"][:3] != ["iot", "ops", "init"]]
    cli.on("az", "iot", "ops", "init", rc=1, stderr="(InvalidTemplateDeployment) extension failed")
    cli.log.write_text("")
    p = aio.plan(site, runner=Runner())
    with pytest.raises(StageFailed, match=r"level4: init \(enablement\) aio-plant-l4 failed .*InvalidTemplateDeployment"):
        aio.apply(p, site, run_dir=tmp_path, runner=Runner(sleep=lambda s: None), progress=quiet)
    assert not [a for a in mutating(cli) if a[1:4] == ["iot", "ops", "create"]]
    assert (tmp_path / "aio").is_dir()


# ----------------------------------------------------------------------------------------------- the aio section
def test_aio_section_errors_name_their_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        example_site(aio={"executor": "bicep", "levels": {"level3": {
            "instance": "L3_Ops", "listener": "mqtts",
            "schema_registry": {"storage_account": "Has-Caps", "container": "a--b"},
            "broker": {"frontend_workers": 0, "memory_profile": "Huge"}}},
            "templates": {"instance_url": "http://x/y.json", "instance_sha256": "abc"}})
    locs = {".".join(str(x) for x in e["loc"]) for e in info.value.errors()}
    assert locs == {"aio.executor", "aio.levels.level3.instance", "aio.levels.level3.listener",
                    "aio.levels.level3.schema_registry.storage_account", "aio.levels.level3.schema_registry.container",
                    "aio.levels.level3.broker.frontend_workers", "aio.levels.level3.broker.memory_profile",
                    "aio.templates.instance_url", "aio.templates.instance_sha256"}


def test_aio_cross_checks():
    from layernet.site.checks import aio as aio_check, aio_names
    from layernet.site.checks.doc import Doc

    def doc(site):
        return Doc("x.yaml", site.model_dump(mode="json"), site)

    site = example_site(aio={"executor": "arm", "levels": {"level9": {}, "level3": {"instance": "x-ops"},
                                                            "level2": {"instance": "x-ops"}}},
                        azure={"schema_registry_storage": None})
    got = {p.path: p.expected for p in aio_check.check(doc(site))}
    assert set(got) == {"aio.levels.level9", "aio.levels.level4.schema_registry.storage_account",
                        "aio.levels.level3.schema_registry.storage_account",
                        "aio.levels.level2.schema_registry.storage_account",
                        "aio.templates.enablement_url", "aio.templates.instance_url"}
    assert aio_check.check(doc(example_site())) == []
    # names resolved with their defaults: two levels sharing one (checks.aio_names, on the valid site)
    clash = example_site(aio={"levels": {"level3": {"instance": "x-ops"}, "level2": {"instance": "x-ops"}}})
    got = {p.path: p.expected for p in aio_names.check(doc(clash))}
    assert set(got) == {"aio.levels.level2.instance"} and "aio.levels.level3.instance" in got["aio.levels.level2.instance"]
    assert aio_names.check(doc(example_site())) == []
    tagged = example_site(aio={"executor": "arm", "release_tag": "v1.2.36"})
    assert aio_check.check(doc(tagged)) == []
    assert tagged.aio.template_url("instance") == (
        "https://github.com/Azure/azure-iot-operations/releases/download/v1.2.36/azure-iot-operations-instance.json")


def test_an_unreadable_container_is_created_idempotently(cli):
    in_place(cli)
    cli.rules = [r for r in cli.rules if r["match"][:3] != ["storage", "container", "exists"]]
    cli.on("az", "storage", "container", "exists", rc=1,
           stderr="ERROR: (AuthorizationPermissionMismatch) This request is not authorized to perform this operation.")
    p = aio.plan(example_site(), runner=Runner(sleep=lambda s: None))
    assert [(s.level, s.action) for s in p.changes] == [(lv, "create container") for lv in ("level4", "level3", "level2")]
    assert "AuthorizationPermissionMismatch" in p.changes[0].reason
    assert "create leaves an existing container alone" in p.changes[0].reason


def test_a_failing_read_is_a_stage_failure_with_the_command(cli):
    in_place(cli)
    cli.rules = [r for r in cli.rules if r["match"][:3] != ["iot", "ops", "show"]]
    cli.on("az", "iot", "ops", "show", rc=1, stderr="(AuthorizationFailed) The client cannot read instances")
    with pytest.raises(StageFailed, match=r"az iot ops show -n aio-plant-l4-ops .*failed .*AuthorizationFailed"):
        aio.plan(example_site(), runner=Runner(sleep=lambda s: None))


def test_levels_must_be_arc_connected_first(cli):
    cli.on("az", "connectedk8s", "show", "-n", "aio-plant-l3", stdout={"properties": {"connectivityStatus": "Offline"}})
    cli.on("az", "connectedk8s", "show", "-n", "aio-plant-l2", **NOT_FOUND)
    fresh(cli)
    with pytest.raises(StageFailed, match=r"not Connected: level3 \(Offline\), level2 \(absent\)\. Run stage 02"):
        aio.plan(example_site(), runner=Runner())
    assert mutating(cli) == []


def test_an_existing_instance_without_the_insecure_listener_gets_it(cli):
    cli.on("az", "resource", "show", "--ids",
           f"{PFX}/Microsoft.IoTOperations/instances/aio-plant-l3-ops/brokers/default/listeners/default-insecure",
           **NOT_FOUND)
    in_place(cli)
    p = aio.plan(example_site(), runner=Runner())
    assert [(s.level, s.action) for s in p.changes] == [("level3", "add insecure listener")]
    argv = shlex.split(p.changes[0].detail)
    assert argv[:9] == ["az", "resource", "create", "--id",
                        f"{PFX}/Microsoft.IoTOperations/instances/aio-plant-l3-ops/brokers/default/listeners/default-insecure",
                        "--api-version", "2026-07-01", "--is-full-object", "--properties"]
    assert json.loads(argv[9]) == {
        "extendedLocation": {"name": f"{PFX}/Microsoft.ExtendedLocation/customLocations/aio-plant-l3-cl",
                             "type": "CustomLocation"},
        "properties": {"ports": [{"port": 1883, "protocol": "Mqtt"}], "serviceName": "aio-broker-insecure",
                       "serviceType": "LoadBalancer"}}
    aio.apply(p, example_site(), runner=Runner(), progress=quiet)
    assert [shlex.join(a) for a in mutating(cli)] == [p.changes[0].detail]
    # a TLS-only level neither reads nor adds it
    cli.log.write_text("")
    p = aio.plan(example_site(aio={"levels": {"level3": {"listener": "tls"}}}), runner=Runner())
    assert p.empty and not [a for a in cli.calls("az") if a[:2] == ["resource", "show"] and "aio-plant-l3-ops" in a[3]]
