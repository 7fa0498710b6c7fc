"""The real Azure CLI against the lab: the az pinned in tools/az/requirements.txt (`make setup` installs it into
.tools/az) runs on the lab's jump box (prefix `zc`, address plan 10.91.0.0/16, no level cluster) exactly as an
operator runs it on a plant's jump box. The lab adds only what a plant has and a laptop lacks (layernet.lab.azcli:
the lab CA trusted, its own AZURE_CONFIG_DIR in the lab's state folder).

- `az login --service-principal` as the client the lab's Entra knows; a wrong secret is refused with Entra's
  AADSTS7000215 and az's exit code 1.
- The az executor's core-CLI steps, their command lines as the plans render them, run by the executors' own
  `run` through the project's Runner: stage 02's live reads (account, providers, group, the Custom Locations
  object id by `az ad sp show`, i.e. Microsoft Graph) and its site-wide steps (provider registration, resource
  group); stage 03's storage account (--enable-hierarchical-namespace) and the registry's Storage Blob Data
  Contributor assignment, whose second `az role assignment create` meets ARM's 409 RoleAssignmentExists and is
  done; stage 04's Event Hubs namespace and hub, whose plan lines are ARM PUTs (stage 04 has no az executor),
  sent with `az rest`.
- The assertions read the lab ARM's state and request log.

The steps that need az extensions (connectedk8s, azure-iot-ops, k8s-extension) are not part of the core CLI and
are not run here (the fake az of tests/doubles checks their flags).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import labs
from layernet.lab import azcli, commands, jumpbox
from layernet.lab.cloud import reqlog
from layernet.lab.cloud.arm.store import Store
from layernet.site.defaults import LAB_CUSTOM_LOCATIONS_OID

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "params" / "lab.yaml"
PREFIX = labs.plan(__file__).prefix
pytestmark = [pytest.mark.lab]

# what runs on the jump box: the executors' own rendering and `run`, the real az underneath
JUMPBOX = r"""
import json, shlex, sys
from layernet.azure import aio as az_aio, aio_levels, arc as az_arc
from layernet.azure.runner import Runner
from layernet.azure import aio_sdk
from layernet.azure.clients import as_dict, pick
from layernet.lab import azcli
from layernet.lab.azure import arm as lab_arm
from layernet.site import Site
from layernet.stages import telemetry
from layernet.stages.base import with_subscription

site = Site.model_validate_json(sys.stdin.read())
out = {"login_wrong": azcli.login(site, secret="not-the-secret"), "login": azcli.login(site)}
if out["login"]["rc"] != 0:
    print(json.dumps(out)); sys.exit(0)
runner = Runner(env=azcli.env(site), attempts=1)


class CoreLive(az_arc.AzLive):
    # the connected clusters are read with the connectedk8s extension, not the core CLI: none here
    def cluster(self, t):
        return None

    def features(self, t):
        return None


def run(executor, step):
    res = executor.run(step)
    return {"level": step.level, "action": step.action, "detail": step.detail, **res}

# stage 02: live state by az, the plan's steps rendered for the az executor, its site-wide changes run
live = CoreLive(runner)
account = live.account()
s = with_subscription(site, account)
state = az_arc.observe(s, live)
oid = live.oid()
steps = az_arc.build_steps(s, state, oid, "az")
arc = az_arc.AzExecutor(runner)
out["account"], out["oid"], out["state02"] = account, oid, state
out["ran"] = [run(arc, st) for st in steps if st.action in ("register provider", "create resource group") and not st.skip]

# stage 03: the egress level's schema registry and container are made as the stage's sdk executor makes them (`az iot
# ops schema registry create` is an extension command, `az storage container create --auth-mode login` a blob
# data-plane call the lab's cloud does not serve); the registry's identity is ARM's, known to Graph as on Azure. Then
# the az plan of a site whose clusters are Connected and whose registry exists without its storage role: its storage
# account and role steps run with az.
levels = aio_levels.levels(s)
first = levels[0].level          # the egress level's steps (every level's are the same commands)
records = {(x.level, x.action): x for x in aio_sdk.desired(s, account)}
sdk = aio_sdk.SdkClients(lab_arm(site), s.azure.resource_group)


def sdk_put(action):
    rec = records[(first, action)]
    return as_dict(sdk.begin_put(rec, rec.body).result())


reg = sdk_put("create schema registry")
state03 = {"cli": None, "enablement": None, "levels": {r.level: {
    "storage": None, "container": True,
    "registry": {"id": reg["id"], "principal": pick(reg, "identity", "principalId"), "state": "Succeeded"}
    if r.level == first else None,
    "namespace": None, "extensions": [], "instance": None, "role": False, "arc": "Connected",
    "insecure_listener": None} for r in levels}}
aio = az_aio.AzExecutor(s, runner)
core = [st for st in az_aio.az_steps(s, state03) if st.level == first and st.action in (
    "create storage account", "assign Storage Blob Data Contributor")]
out["principal"] = pick(reg, "identity", "principalId")
out["planned03"] = [(st.level, st.action, st.skip, st.detail) for st in core]
out["ran"] += [run(aio, st) for st in core if st.action == "create storage account" and not st.skip]
sdk_put("create container")
role = next(st for st in core if st.action.startswith("assign"))
out["ran"].append(run(aio, role))
again = runner.run(shlex.split(role.detail), name="role-again")       # the same command line once more: ARM's 409
out["role_again"] = {"rc": again.rc, "stdout": again.stdout, "stderr": again.stderr[-2000:]}
out["role_again_executor"] = run(aio, role)                                # the executor: an identical one is done

# stage 04: the Event Hubs namespace and hub of the plan (ARM PUT lines), sent with az rest
tel = telemetry.steps(s, {"providers": {}, "principals": {}, "operator": {}, "resources": {}, "listeners": {},
                          "running": None})
for st in tel:
    if st.action in ("create Event Hubs namespace", "create event hub"):
        method, url, body = st.detail.split(" ", 2)
        res = runner.run(["az", "rest", "--method", method.lower(), "--url", url, "--body", body], name=st.action)
        out["ran"].append({"level": st.level, "action": st.action, "detail": st.detail, "rc": res.rc, "ok": res.ok,
                           "output": res.tail(3), "seconds": res.seconds})
out["seconds"] = [(h.argv[1:4], h.seconds) for h in runner.history]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def site():
    # the providers of stages 03 and 04 this test writes to (a plant's list holds them with the Arc ones)
    return labs.site(__file__, "arc.providers=[Microsoft.DeviceRegistry, Microsoft.Storage, Microsoft.EventHub]")


@pytest.fixture(scope="module")
def lab(site):
    labs.missing(None if azcli.installed() else f"the pinned az is not installed in {azcli.home()}: run `make setup`")
    assert azcli.installed_version() == azcli.pinned_version(), \
        f"{azcli.home()} holds azure-cli {azcli.installed_version()}, tools/az pins {azcli.pinned_version()}: run `make setup`"
    with labs.running(site) as target:
        yield target


@pytest.fixture(scope="module")
def ran(lab, site):
    t0 = time.monotonic()
    proc = subprocess.run(["ip", "netns", "exec", jumpbox.namespace(site), sys.executable, "-c", JUMPBOX],
                          input=site.model_dump_json(), capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    out["wall_s"] = round(time.monotonic() - t0, 1)
    print(f"az steps on the jump box: {out['wall_s']} s; per command: {out.get('seconds')}")
    return out


def _store(site) -> Store:
    return Store(commands.state_dir(site) / "cloud" / "arm-store.json")


def test_login_as_the_labs_service_principal_and_a_wrong_secret_refused(ran, site):
    _, client_id, secret = azcli.client(site)
    wrong = ran["login_wrong"]
    assert wrong["rc"] == 1 and "AADSTS7000215" in wrong["stderr"] and "Invalid client secret" in wrong["stderr"], wrong
    assert ran["login"]["rc"] == 0, ran["login"]
    subs = json.loads(ran["login"]["stdout"])
    assert [s["user"] for s in subs] == [{"name": client_id, "type": "servicePrincipal"}]
    assert ran["account"] == subs[0]["id"]
    text = json.dumps(ran)
    assert secret not in text
    # az's login state is the lab's, inside its state folder
    assert (azcli.config_dir(site) / "azureProfile.json").is_file()
    rows = reqlog.read(commands.state_dir(site) / "cloud" / "requests" / "entra.jsonl")
    tokens = [r for r in rows if r["path"].endswith("/oauth2/v2.0/token")]
    assert [r["status"] for r in tokens][:2] == [401, 200], tokens


def test_stage_02_core_steps_and_the_custom_locations_lookup(ran, site):
    assert ran["oid"] == LAB_CUSTOM_LOCATIONS_OID            # az ad sp show, answered by the lab's Graph
    assert ran["state02"]["group"] is False and set(ran["state02"]["providers"].values()) == {"NotRegistered"}
    done = {(r["action"], r["detail"]) for r in ran["ran"] if r["ok"]}
    rg = site.azure.resource_group
    assert ("create resource group", f"az group create -l {site.azure.location} -g {rg}") in done, ran["ran"]
    for ns in ("Microsoft.DeviceRegistry", "Microsoft.Storage", "Microsoft.EventHub"):
        assert ("register provider", f"az provider register -n {ns}") in done
    store = _store(site)
    sub = ran["account"]
    assert store.get("groups", f"/subscriptions/{sub}/resourceGroups/{rg}")["location"] == site.azure.location
    assert {p["namespace"] for p in store.values("providers") if p["state"] in ("Registering", "Registered")} >= {
        "Microsoft.DeviceRegistry", "Microsoft.Storage", "Microsoft.EventHub"}


def test_stage_03_storage_account_and_role_assignment_with_409_as_done(ran, site):
    storage = [p for p in ran["planned03"] if p[1] == "create storage account" and not p[2]]
    assert storage and all("--enable-hierarchical-namespace true" in p[3] for p in storage), ran["planned03"]
    results = {r["action"]: r for r in ran["ran"]}
    assert results["create storage account"]["ok"], results["create storage account"]["output"]
    assert results["assign Storage Blob Data Contributor"]["ok"], results["assign Storage Blob Data Contributor"]["output"]
    store = _store(site)
    accounts = [r for r in store.values("resources") if r["type"] == "Microsoft.Storage/storageAccounts"]
    assert [a["name"] for a in accounts] == [site.azure.schema_registry_storage]
    assert accounts[0]["properties"]["isHnsEnabled"] is True and accounts[0]["kind"] == "StorageV2"
    # the second create met 409 RoleAssignmentExists; az counts it as done (exit 0) and shows the existing one
    again = ran["role_again"]
    assert again["rc"] == 0, again
    rows = reqlog.read(commands.state_dir(site) / "cloud" / "requests" / "arm.jsonl")
    puts = [r for r in rows if r["method"] == "PUT" and "/roleAssignments/" in r["path"]]
    assert [r["status"] for r in puts] == [201, 409], puts
    assigned = [r for r in store.values("resources") if r["type"] == "Microsoft.Authorization/roleAssignments"]
    assert len(assigned) == 1 and json.loads(again["stdout"])["name"] == assigned[0]["name"]
    # to the identity ARM gave the registry, which az looked up in Microsoft Graph (the lab's stand-in)
    assert assigned[0]["properties"]["principalId"] == ran["principal"] and ran["principal"]
    graph = reqlog.read(commands.state_dir(site) / "cloud" / "requests" / "graph.jsonl")
    assert any(r["path"] == "/v1.0/directoryObjects/getByIds" and r["status"] == 200 for r in graph), graph
    assert ran["role_again_executor"]["ok"] and "already assigned" in ran["role_again_executor"]["output"]


def test_stage_04_event_hubs_namespace_and_hub(ran, site):
    results = {r["action"]: r for r in ran["ran"]}
    for action in ("create Event Hubs namespace", "create event hub"):
        assert results[action]["ok"], results[action]
    store = _store(site)
    ns = [r for r in store.values("resources") if r["type"] == "Microsoft.EventHub/namespaces"]
    hubs = [r for r in store.values("resources") if r["type"] == "Microsoft.EventHub/namespaces/eventhubs"]
    assert [n["name"] for n in ns] == [site.azure.eventhubs_namespace]
    assert ns[0]["sku"]["name"] == "Standard" and ns[0]["properties"]["kafkaEnabled"] is True
    assert [h["name"] for h in hubs] == [site.telemetry.eventhubs.hub] and hubs[0]["properties"]["partitionCount"] == 1
