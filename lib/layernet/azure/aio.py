"""Stage 03 on a real site: deploy Azure IoT Operations on every Arc-enabled level.

Two executors behind one plan shape:
- "az": the az CLI on the jump box (`az storage ...`, `az iot ops schema registry create`, `az iot ops ns create`,
  `az iot ops init`, `az iot ops create ...`, `az role assignment create`); each step skipped when the live
  state already matches.
- "arm": template deployments with azure-mgmt-resource-deployments. Per level three deployments: the
  prerequisites (storage account with hierarchical namespace, container, schema registry, ADR namespace, the
  registry's role on its container; a template this module writes), then the pinned release's enablement and
  instance templates, fetched at plan time on the jump box and kept in the run folder. What-if is the plan; a
  deployment whose what-if shows no change is a skip.
`verify_aio` is the check for both and for the lab: azure-mgmt-iotoperations (instance, broker, listeners,
dataflow profile and endpoint) and azure-mgmt-kubernetesconfiguration-extensions (extension states).
"""
from __future__ import annotations

import hashlib
import json
import shlex
import time
import urllib.request
import ssl
from pathlib import Path
from typing import Any, Callable, Optional

from layernet.apiversions import api_version
from layernet.azure import aio_sdk
from layernet.azure.aio_levels import BLOB_SUFFIX, DR_API, INSTANCE_EXTENSION, LISTENERS, PRINCIPAL_PLACEHOLDER, ROLE_EXISTS, \
    STORAGE_BLOB_DATA_CONTRIBUTOR, ids, levels, listener_names
from layernet.azure.aio_levels import insecure, listener_ports  # noqa: F401  (stage 03's facts, read as az_aio.*)
from layernet.azure.clients import Arm, as_dict, pick
from layernet.azure.runner import CommandFailed, Runner, az_json
from layernet.errors import StageFailed
from layernet.site.aio import AIO_NAMESPACE
from layernet.evidence import evidence
from layernet.plan import Step

# ----------------------------------------------------------------------------------------------- az: live state
class AzLive:
    def __init__(self, runner: Runner):
        self.runner = runner

    def cli_version(self) -> Optional[str]:
        data = az_json(self.runner, ["az", "extension", "show", "--name", "azure-iot-ops"], name="cli-version")
        return (data or {}).get("version")

    def level(self, site, r) -> dict:
        rg = site.azure.resource_group
        q = self.runner
        sa = az_json(q, ["az", "storage", "account", "show", "-n", r.storage_account, "-g", rg],
                     name=f"{r.level}-storage")
        container = None
        if sa:
            try:
                res = az_json(q, ["az", "storage", "container", "exists", "-n", r.container, "--account-name",
                                  r.storage_account, "--auth-mode", "login"], name=f"{r.level}-container")
                container = bool((res or {}).get("exists"))
            except CommandFailed as exc:    # e.g. no data-plane role for the operator: create is idempotent
                container = "unreadable: " + exc.result.tail(1)
        reg = az_json(q, ["az", "iot", "ops", "schema", "registry", "show", "-n", r.registry, "-g", rg],
                      name=f"{r.level}-registry")
        ns = az_json(q, ["az", "iot", "ops", "ns", "show", "-n", r.adr_namespace, "-g", rg], name=f"{r.level}-ns")
        exts = az_json(q, ["az", "k8s-extension", "list", "--cluster-name", r.cluster, "--cluster-type",
                           "connectedClusters", "-g", rg], name=f"{r.level}-extensions") or []
        inst = az_json(q, ["az", "iot", "ops", "show", "-n", r.instance, "-g", rg], name=f"{r.level}-instance")
        arc = az_json(q, ["az", "connectedk8s", "show", "-n", r.cluster, "-g", rg], name=f"{r.level}-arc")
        principal = pick(reg or {}, "identity", "principalId")
        role = None
        if principal:
            scope = ids(site, r)["container"]
            found = az_json(q, ["az", "role", "assignment", "list", "--assignee", principal, "--role",
                                STORAGE_BLOB_DATA_CONTRIBUTOR, "--scope", scope], name=f"{r.level}-role") or []
            role = bool(found)
        return {
            "storage": None if not sa else {"id": sa.get("id"), "hns": bool(sa.get("isHnsEnabled"))},
            "container": container,
            "registry": None if not reg else {"id": reg.get("id"), "principal": principal,
                                              "state": pick(reg, "properties", "provisioningState")},
            "namespace": None if not ns else {"id": ns.get("id"), "state": pick(ns, "properties", "provisioningState")},
            "extensions": sorted({(pick(e, "extensionType") or pick(e, "properties", "extensionType") or "").lower():
                                  (pick(e, "provisioningState") or pick(e, "properties", "provisioningState"))
                                  for e in exts}.items()),
            "instance": None if not inst else {"id": inst.get("id"),
                                               "state": pick(inst, "properties", "provisioningState")},
            "role": role,
            "arc": pick(arc or {}, "properties", "connectivityStatus") or pick(arc or {}, "connectivityStatus")
            or ("absent" if arc is None else "unknown"),
            "insecure_listener": (az_json(q, ["az", "resource", "show", "--ids", insecure_listener_id(site, r),
                                              "--api-version", LISTENER_API], name=f"{r.level}-listener") is not None)
            if inst and insecure(r) else None,
        }


def observe_az(site, live: AzLive, enablement: Optional[tuple] = None) -> dict:
    """`enablement`: the extension types of the release's enablement template (None: no template named)."""
    return {"cli": live.cli_version(), "levels": {r.level: live.level(site, r) for r in levels(site)},
            "enablement": list(enablement) if enablement is not None else None}


def release_enablement(site, dest: Path, verify: Any = True) -> Optional[tuple]:
    """The extension types `init` installs at the pinned release, read from its enablement template (fetched on
    the jump box, kept in `dest`); None when the site names no template (aio.release_tag / aio.templates)."""
    url = site.aio.template_url("enablement")
    if not url:
        return None
    tpl, _, _ = fetch_template(url, dest, site.aio.templates.enablement_sha256, verify)
    return extension_types(tpl)


# ----------------------------------------------------------------------------------------------- az: commands
def storage_argv(site, r) -> list[str]:
    return ["az", "storage", "account", "create", "-n", r.storage_account, "-g", site.azure.resource_group,
            "--location", site.azure.location, "--sku", "Standard_LRS", "--kind", "StorageV2",
            "--enable-hierarchical-namespace", "true"]


def container_argv(r) -> list[str]:
    return ["az", "storage", "container", "create", "-n", r.container, "--account-name", r.storage_account,
            "--auth-mode", "login"]


def registry_argv(site, r, sa_id: str) -> list[str]:
    """`schema registry create` also gives the registry's identity Storage Blob Data Contributor on the container
    (unless --skip-ra): the role is planned here, once, not as a second assignment."""
    argv = ["az", "iot", "ops", "schema", "registry", "create", "-g", site.azure.resource_group, "-n", r.registry,
            "--registry-namespace", r.registry_namespace, "--sa-resource-id", sa_id, "--sa-container", r.container]
    return argv if site.aio.schema_registry_role else argv + ["--skip-ra"]


def namespace_argv(site, r) -> list[str]:
    return ["az", "iot", "ops", "ns", "create", "-n", r.adr_namespace, "-g", site.azure.resource_group]


def role_argv(principal: str, scope: str) -> list[str]:
    return ["az", "role", "assignment", "create", "--assignee-object-id", principal, "--assignee-principal-type",
            "ServicePrincipal", "--role", STORAGE_BLOB_DATA_CONTRIBUTOR, "--scope", scope]


def init_argv(site, r) -> list[str]:
    return ["az", "iot", "ops", "init", "-g", site.azure.resource_group, "--cluster", r.cluster]


def create_argv(site, r, sr_id: str, ns_id: str) -> list[str]:
    b = r.broker
    argv = ["az", "iot", "ops", "create", "-g", site.azure.resource_group, "--cluster", r.cluster,
            "--custom-location", r.custom_location, "-n", r.instance, "--sr-resource-id", sr_id,
            "--ns-resource-id", ns_id,
            "--broker-frontend-replicas", str(b.frontend_replicas), "--broker-frontend-workers", str(b.frontend_workers),
            "--broker-backend-part", str(b.backend_partitions), "--broker-backend-workers", str(b.backend_workers),
            "--broker-backend-rf", str(b.backend_redundancy_factor), "--broker-mem-profile", b.memory_profile]
    if insecure(r):
        argv.append("--add-insecure-listener")
    return argv


def require_arc(site, status: dict[str, Optional[str]]) -> None:
    """AIO goes onto Arc-connected clusters: refuse to plan while a level is not Connected."""
    bad = [f"{lv} ({s})" for lv, s in status.items() if s != "Connected"]
    if bad:
        raise StageFailed("stage 03 needs every level's cluster Connected to Azure Arc; not Connected: "
                          + ", ".join(bad) + ". Run stage 02 (arc) first and check its verify table.")


def az_steps(site, state: dict) -> list[Step]:
    steps: list[Step] = []
    pin = site.aio.cli_version
    if pin:
        have = state.get("cli")
        argv = ["az", "extension", "add", "--upgrade", "--name", "azure-iot-ops", "--version", pin]
        steps.append(Step("site", "pin azure-iot-ops CLI", "azure-iot-ops", shlex.join(argv), skip=have == pin,
                          reason=f"version {have}" if have == pin else f"have {have or 'none'}, want {pin}"))
    made_storage: dict[str, str] = {}
    require_arc(site, {lv: v.get("arc") for lv, v in state["levels"].items()})
    for r in levels(site):
        live = state["levels"][r.level]
        i = ids(site, r)
        sa = live["storage"]
        if sa and not sa["hns"]:
            raise StageFailed(f"{r.level}: storage account {r.storage_account} exists without hierarchical namespace, "
                              "which cannot be turned on later: name another account in "
                              f"aio.levels.{r.level}.schema_registry.storage_account")
        if sa or r.storage_account in made_storage:
            why = "exists (hierarchical namespace)" if sa else f"created by the {made_storage[r.storage_account]} step"
            steps.append(Step(r.level, "create storage account", r.storage_account,
                              shlex.join(storage_argv(site, r)), skip=True, reason=why))
        else:
            made_storage[r.storage_account] = r.level
            steps.append(Step(r.level, "create storage account", r.storage_account, shlex.join(storage_argv(site, r)),
                              reason="missing"))
        have_c = live["container"]
        steps.append(Step(r.level, "create container", f"{r.storage_account}/{r.container}",
                          shlex.join(container_argv(r)), skip=have_c is True,
                          reason="exists" if have_c is True else
                          f"{have_c} (create leaves an existing container alone)" if isinstance(have_c, str)
                          else "missing"))
        sa_id = (sa or {}).get("id") or i["storage"]
        reg = live["registry"]
        steps.append(Step(r.level, "create schema registry", r.registry, shlex.join(registry_argv(site, r, sa_id)),
                          skip=reg is not None, reason=f"exists ({reg['state']})" if reg else "missing"))
        sr_id = (reg or {}).get("id") or i["registry"]
        ns = live["namespace"]
        steps.append(Step(r.level, "create ADR namespace", r.adr_namespace, shlex.join(namespace_argv(site, r)),
                          skip=ns is not None, reason=f"exists ({ns['state']})" if ns else "missing"))
        ns_id = (ns or {}).get("id") or i["namespace"]
        if site.aio.schema_registry_role:
            principal = (reg or {}).get("principal")
            shown = principal or PRINCIPAL_PLACEHOLDER.format(name=r.registry)
            has = bool(live["role"])
            if reg is None:     # `schema registry create` assigns it (its default): a second one would be 409
                skip, why = True, "made by the create schema registry step (az iot ops schema registry create " \
                                  "assigns it unless --skip-ra)"
            else:
                skip, why = has, "assigned" if has else ("missing on the existing registry" if principal else
                                                         "missing; the registry's principal id is read at apply")
            steps.append(Step(r.level, "assign Storage Blob Data Contributor", i["container"],
                              shlex.join(role_argv(shown, i["container"])), skip=skip, reason=why))
        exts = dict(live["extensions"])
        inst = live["instance"]
        ok, why = init_done(state.get("enablement"), exts, inst)
        steps.append(Step(r.level, "init (enablement)", r.cluster, shlex.join(init_argv(site, r)), skip=ok,
                          reason=why))
        done = bool(inst) and inst.get("state") == "Succeeded"
        steps.append(Step(r.level, "create instance", r.instance, shlex.join(create_argv(site, r, sr_id, ns_id)),
                          skip=done, reason="exists (Succeeded)" if done else
                          (f"exists but {inst.get('state')}" if inst else "missing")))
        if insecure(r) and inst:
            # an instance created earlier without --add-insecure-listener: the listener is its own resource
            have_l = live.get("insecure_listener")
            steps.append(Step(r.level, "add insecure listener", insecure_listener_id(site, r),
                              shlex.join(listener_argv(site, r)), skip=bool(have_l),
                              reason="exists" if have_l else "missing on the existing instance"))
    return steps


LISTENER_API = api_version("Microsoft.IoTOperations/instances/brokers/listeners")


def init_done(enablement: Optional[list], exts: dict, inst: Optional[dict]) -> tuple[bool, str]:
    """(skip init, reason). With the release's enablement template: its extension types all Succeeded. Without
    one: an instance exists (create ran, so init had completed) and every other extension on the cluster is
    Succeeded; otherwise init runs again (it is idempotent)."""
    if enablement is not None:
        ok = bool(enablement) and all(exts.get(t) == "Succeeded" for t in enablement)
        return ok, ("extensions Succeeded: " + ", ".join(enablement) if ok else
                    "extensions of the release's enablement: " + ", ".join(f"{t} {exts.get(t, 'missing')}"
                                                                           for t in enablement))
    others = {t: st for t, st in exts.items() if t != INSTANCE_EXTENSION}
    bad = {t: st for t, st in others.items() if st != "Succeeded"}
    ok = bool(inst) and bool(others) and not bad
    if ok:
        return True, "instance exists and every enablement extension Succeeded: " + ", ".join(sorted(others))
    return False, ("extensions not Succeeded: " + ", ".join(f"{t} {st}" for t, st in sorted(bad.items())) if bad else
                   "no enablement extension on the cluster" if not others else "no instance yet") + \
        " (no release template named to compare with: init is idempotent)"


def insecure_listener_id(site, r) -> str:
    return f"{ids(site, r)['instance']}/brokers/default/listeners/default-insecure"


def listener_argv(site, r) -> list[str]:
    res = listener_template(site, r)["resources"][0]     # the same resource the arm executor deploys
    body = {"extendedLocation": res["extendedLocation"], "properties": res["properties"]}
    return ["az", "resource", "create", "--id", insecure_listener_id(site, r), "--api-version", LISTENER_API,
            "--is-full-object", "--properties", json.dumps(body, sort_keys=True, separators=(",", ":"))]


class AzExecutor:
    name = "az"

    def __init__(self, site, runner: Runner, echo: Optional[Callable[[str], None]] = None):
        self.site, self.runner, self.echo = site, runner, echo

    def run(self, step: Step) -> dict:
        argv = shlex.split(step.detail)
        if step.action.startswith("assign") and any(a.startswith("<principal id") for a in argv):
            r = next(x for x in levels(self.site) if x.level == step.level)
            reg = az_json(self.runner, ["az", "iot", "ops", "schema", "registry", "show", "-n", r.registry, "-g",
                                        self.site.azure.resource_group], name=f"{r.level}-registry-principal")
            principal = pick(reg or {}, "identity", "principalId")
            if not principal:
                raise StageFailed(f"{step.level}: schema registry {r.registry} has no managed identity principal; "
                                  "cannot assign its storage role")
            argv = [principal if a.startswith("<principal id") else a for a in argv]
        if step.action.startswith("assign"):
            principal = argv[argv.index("--assignee-object-id") + 1]
            found = az_json(self.runner, ["az", "role", "assignment", "list", "--assignee", principal, "--role",
                                          STORAGE_BLOB_DATA_CONTRIBUTOR, "--scope", step.target],
                            name=f"{step.level}-role-before") or []
            if found:       # an identical assignment (principal, role, scope) is the desired state: done
                return {"rc": 0, "attempts": 0, "seconds": 0.0, "retried_for": "", "ok": True,
                        "output": f"already assigned ({pick(found[0], 'name') or pick(found[0], 'id') or 'exists'})"}
        echo = (lambda line: self.echo(f"  {step.level} | {line}")) if self.echo else None
        res = self.runner.run(argv, name=f"{step.level}-{step.action}", echo=echo)
        ok, out = res.ok, res.tail(3)
        if not ok and step.action.startswith("assign") and ROLE_EXISTS in (res.stdout + res.stderr):
            ok, out = True, "already assigned (ARM: RoleAssignmentExists)"
        return {"rc": 0 if ok else res.rc, "attempts": res.attempts, "seconds": res.seconds,
                "retried_for": ", ".join(res.retried_for), "ok": ok, "output": out}



# ----------------------------------------------------------------------------------------------- arm executor
def fetch_template(url: str, dest: Path, sha256: Optional[str] = None, verify: Any = True,
                   timeout: float = 60) -> tuple[dict, str, Path]:
    """Download a template on the jump box, check its digest when pinned, keep the copy in `dest`."""
    ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            data = resp.read()
    except OSError as exc:
        raise StageFailed(f"could not fetch the template {url} on this jump box: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if sha256 and digest != sha256:
        raise StageFailed(f"the template {url} has sha256 {digest}, the site pins {sha256}: nothing was deployed; "
                          "check the release tag and the pinned digest")
    try:
        template = json.loads(data)
    except json.JSONDecodeError:
        raise StageFailed(f"the template {url} is not JSON (a release asset URL must point at the .json file)") from None
    dest.mkdir(parents=True, exist_ok=True)
    name = url.rstrip("/").rsplit("/", 1)[-1] or "template.json"
    path = dest / f"{digest[:12]}-{name}"
    path.write_bytes(data)
    return template, digest, path


def prereq_template(site, r, role: bool = True) -> dict:
    """The prerequisites of one level as an ARM template: storage account (hierarchical namespace), its
    container, the schema registry (system identity), the ADR namespace and the registry's role on the container
    (`role` False: an identical assignment exists already under another name; ARM would refuse a second one)."""
    loc = site.azure.location
    sa_type = "Microsoft.Storage/storageAccounts"
    res: list[dict] = [
        {"type": sa_type, "apiVersion": api_version(sa_type), "name": r.storage_account, "location": loc,
         "sku": {"name": "Standard_LRS"}, "kind": "StorageV2",
         "properties": {"isHnsEnabled": True, "minimumTlsVersion": "TLS1_2", "allowBlobPublicAccess": False}},
        {"type": f"{sa_type}/blobServices/containers", "apiVersion": api_version(f"{sa_type}/blobServices/containers"),
         "name": f"{r.storage_account}/default/{r.container}",
         "dependsOn": [f"[resourceId('{sa_type}', '{r.storage_account}')]"], "properties": {}},
        {"type": "Microsoft.DeviceRegistry/schemaRegistries", "apiVersion": DR_API, "name": r.registry,
         "location": loc, "identity": {"type": "SystemAssigned"},
         "dependsOn": [f"[resourceId('{sa_type}/blobServices/containers', '{r.storage_account}', 'default', '{r.container}')]"],
         "properties": {"namespace": r.registry_namespace,
                        "storageAccountContainerUrl": f"https://{r.storage_account}.{BLOB_SUFFIX[site.azure.cloud]}/{r.container}"}},
        {"type": "Microsoft.DeviceRegistry/namespaces", "apiVersion": DR_API, "name": r.adr_namespace,
         "location": loc, "properties": {}},
    ]
    if site.aio.schema_registry_role and role:
        scope = f"{sa_type}/{r.storage_account}/blobServices/default/containers/{r.container}"
        res.append({
            "type": "Microsoft.Authorization/roleAssignments", "apiVersion": api_version("Microsoft.Authorization/roleAssignments"),
            "scope": scope,
            "name": f"[guid('{scope}', '{r.registry}', '{STORAGE_BLOB_DATA_CONTRIBUTOR}')]",
            "dependsOn": [f"[resourceId('Microsoft.DeviceRegistry/schemaRegistries', '{r.registry}')]"],
            "properties": {
                "roleDefinitionId": f"[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '{STORAGE_BLOB_DATA_CONTRIBUTOR}')]",
                "principalId": f"[reference(resourceId('Microsoft.DeviceRegistry/schemaRegistries', '{r.registry}'), '{DR_API}', 'full').identity.principalId]",
                "principalType": "ServicePrincipal"}})
    return {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
            "contentVersion": "1.0.0.0", "resources": res}


def listener_template(site, r) -> dict:
    """The sample's east-west listener (what `az iot ops create --add-insecure-listener` adds): no TLS, no
    authentication, port 1883 on a LoadBalancer service. The release templates do not create it."""
    return {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
            "contentVersion": "1.0.0.0",
            "resources": [{
                "type": "Microsoft.IoTOperations/instances/brokers/listeners", "apiVersion": LISTENER_API,
                "name": f"{r.instance}/default/default-insecure",
                "extendedLocation": {"name": ids(site, r)["custom_location"], "type": "CustomLocation"},
                "properties": {**LISTENERS["default-insecure"], "ports": [
                    {**p, "protocol": "Mqtt"} for p in LISTENERS["default-insecure"]["ports"]]}}]}


def candidate_parameters(site, r, kind: str) -> dict:
    """Values this site gives for the parameters the release templates may declare (only declared ones are sent)."""
    i = ids(site, r)
    b = r.broker
    common = {"clusterName": r.cluster, "clusterLocation": site.azure.location, "location": site.azure.location,
              "kubernetesDistro": "K3s", "trustConfig": {"source": "SelfSigned"}}
    if kind == "enablement":
        return {**common, "schemaRegistryId": i["registry"]}
    return {**common, "customLocationName": r.custom_location, "instanceName": r.instance, "aioInstanceName": r.instance,
            "clusterNamespace": "azure-iot-operations", "schemaRegistryId": i["registry"],
            "adrNamespaceId": i["namespace"], "namespaceResourceId": i["namespace"],
            "deployResourceSyncRules": False,
            "brokerConfig": {"frontendReplicas": b.frontend_replicas, "frontendWorkers": b.frontend_workers,
                             "backendPartitions": b.backend_partitions, "backendWorkers": b.backend_workers,
                             "backendRedundancyFactor": b.backend_redundancy_factor,
                             "memoryProfile": b.memory_profile, "serviceType": "ClusterIp"}}


# parameters only known once the enablement deployment has run: the ids of the extensions it installed
AFTER_ENABLEMENT = ("clExtentionIds", "clExtensionIds")


def parameters_for(template: dict, candidates: dict, what: str) -> tuple[dict, list[str]]:
    """The declared parameters this site fills, and the required ones still pending (value None for now)."""
    declared = template.get("parameters") or {}
    params = {k: {"value": candidates[k]} for k in declared if candidates.get(k) is not None}
    missing = [k for k, spec in declared.items() if k not in candidates and "defaultValue" not in (spec or {})
               and not (spec or {}).get("nullable")]
    if missing:
        raise StageFailed(f"the {what} template requires parameter(s) {', '.join(sorted(missing))} that layernet does "
                          "not know how to fill: check the pinned release (aio.release_tag) against this version")
    pending = [k for k, spec in declared.items() if k in candidates and candidates[k] is None
               and "defaultValue" not in (spec or {}) and not (spec or {}).get("nullable")]
    return params, pending


def deployment_body(template: dict, parameters: dict) -> dict:
    return {"properties": {"mode": "Incremental", "template": template, "parameters": parameters}}


# ARM what-if change types (azure-mgmt-resource-deployments ChangeType): which leave the resource as it is
NO_CHANGE = {"NoChange", "Ignore"}
CHANGES = {"Create", "Delete", "Modify", "Deploy"}
UNSUPPORTED = "Unsupported"       # what-if cannot tell: the deployment runs (its reason is shown)


def change_kind(change: dict) -> str:
    """The change type of one what-if change, with a Modify whose every property change is NoEffect (the
    service will not set them) counted as NoChange."""
    t = pick(change, "changeType") or "Unknown"
    if t == "Modify":
        delta = pick(change, "delta") or []
        if delta and all((pick(d, "propertyChangeType") or "") == "NoEffect" for d in delta):
            return "NoChange"
    return t


def summarize_what_if(result: Any) -> tuple[bool, str]:
    """(nothing would change, the summary): NoChange and Ignore (and NoEffect-only changes) leave the
    resources alone; Create, Delete, Modify, Deploy change them; Unsupported (what-if cannot predict, with its
    reason) and a type this version does not know count as changes, so the deployment runs."""
    d = as_dict(result)
    changes = pick(d, "properties", "changes") or pick(d, "changes") or []
    counts: dict[str, int] = {}
    reasons: list[str] = []
    for c in changes:
        t = change_kind(c)
        counts[t] = counts.get(t, 0) + 1
        if t == UNSUPPORTED:
            rid_ = (pick(c, "resourceId") or "").rsplit("/", 2)
            reasons.append(f"{'/'.join(rid_[-2:]) if len(rid_) > 2 else rid_[-1]}: "
                           f"{pick(c, 'unsupportedReason') or 'no reason given'}")
    error = pick(d, "error") or pick(d, "properties", "error")
    if error:
        raise StageFailed(f"what-if failed: {pick(error, 'code')}: {pick(error, 'message')}")
    text = ", ".join(f"{n} {t}" + ("" if t in NO_CHANGE | CHANGES | {UNSUPPORTED} else " (a change type this "
                                   "version does not know: deployed)") for t, n in sorted(counts.items())) \
        or "no resources"
    if reasons:
        text += "; what-if cannot predict " + "; ".join(reasons[:3])
    return all(t in NO_CHANGE for t in counts), text


EXTENSION_TYPE = "microsoft.kubernetesconfiguration/extensions"


def template_resources(template: dict) -> list[dict]:
    """Every resource of a template, nested deployments' templates included (resources as a list, or as the
    symbolic-name object of languageVersion 2.0)."""
    res = template.get("resources") or []
    items = list(res.values()) if isinstance(res, dict) else list(res)
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        out.append(item)
        inner = pick(item, "properties", "template")
        if str(item.get("type", "")).lower() == "microsoft.resources/deployments" and isinstance(inner, dict):
            out += template_resources(inner)
    return out


def extension_types(template: dict) -> tuple[str, ...]:
    """The cluster extension types a template installs (lower case, in template order): for the enablement
    template these are what `init` must have left Succeeded; they differ between releases."""
    out: list[str] = []
    for item in template_resources(template):
        t = pick(item, "properties", "extensionType")
        if str(item.get("type", "")).lower() == EXTENSION_TYPE and isinstance(t, str) and not t.startswith("["):
            if t.lower() not in out:
                out.append(t.lower())
    return tuple(out)


class ArmDeployments:
    """The arm executor's plan and apply: one deployment per (level, part), what-if first."""
    name = "arm"

    def __init__(self, site, arm: Arm, template_dir: Path, verify_fetch: Any = True):
        self.site, self.arm, self.dir, self.verify_fetch = site, arm, Path(template_dir), verify_fetch
        self._client = None
        self.bodies: dict[str, dict] = {}      # deployment name -> the exact request body (no secrets)
        self.templates: dict[str, tuple[str, str]] = {}   # kind -> (sha256, kept copy)
        self.pending: dict[str, list[str]] = {}   # deployment name -> parameters known after the enablement
        self.save_dir: Optional[Path] = None      # where completed request bodies are kept (the run folder)
        self.enablement: Optional[tuple] = None   # extension types of the fetched enablement template

    @property
    def client(self):
        self._client = self._client or self.arm.deployments()
        return self._client

    def fetch(self) -> dict[str, dict]:
        out = {}
        for kind in ("enablement", "instance"):
            url = self.site.aio.template_url(kind)
            if not url:
                raise StageFailed(f"no template URL for the {kind} template: set aio.release_tag or "
                                  f"aio.templates.{kind}_url (executor: arm)")
            pin = getattr(self.site.aio.templates, f"{kind}_sha256")
            tpl, digest, path = fetch_template(url, self.dir, pin, self.verify_fetch)
            self.templates[kind] = (digest, str(path))
            out[kind] = tpl
        self.enablement = extension_types(out["enablement"])
        return out

    def deployments(self) -> list[tuple[str, str, str, dict, list[str]]]:
        """(level, part, deployment name, body, pending parameters) in order."""
        fetched = self.fetch()
        out = []
        for r in levels(self.site):
            pre = prereq_template(self.site, r, role=not self.role_assigned(r))
            out.append((r.level, "prerequisites", f"layernet-aio-prereq-{r.level}", deployment_body(pre, {}), []))
            for kind in ("enablement", "instance"):
                tpl = fetched[kind]
                params, pending = parameters_for(tpl, self.candidates(r, kind), kind)
                out.append((r.level, kind, f"layernet-aio-{kind}-{r.level}", deployment_body(tpl, params), pending))
            if insecure(r):
                out.append((r.level, "insecure listener", f"layernet-aio-listener-{r.level}",
                            deployment_body(listener_template(self.site, r), {}), []))
        return out

    def role_assigned(self, r) -> bool:
        """Whether the registry's identity already holds Storage Blob Data Contributor on its container under a
        name the template would not give it (e.g. made by `az iot ops schema registry create`)."""
        from azure.core.exceptions import ResourceNotFoundError

        if not self.site.aio.schema_registry_role:
            return False
        c = aio_sdk.SdkClients(self.arm, self.site.azure.resource_group)
        try:
            reg = as_dict(c.dr.schema_registries.get(self.site.azure.resource_group, r.registry))
        except ResourceNotFoundError:
            return False
        principal = pick(reg, "identity", "principalId")
        scope = ids(self.site, r)["container"]
        if not principal:
            return False
        same = aio_sdk.identical_assignment(c.role_assignments(scope), principal, STORAGE_BLOB_DATA_CONTRIBUTOR, scope)
        return same is not None

    def candidates(self, r, kind: str) -> dict:
        cands = candidate_parameters(self.site, r, kind)
        if kind == "instance":
            ids_ = self.extension_ids(r)
            for k in AFTER_ENABLEMENT:
                cands[k] = ids_
        return cands

    def extension_ids(self, r) -> Optional[list[str]]:
        """Ids of the enablement template's extensions on the level's cluster, found by extension type (None
        until every one is installed)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            exts = [as_dict(e) for e in self.arm.extensions().extensions.list(
                self.site.azure.resource_group, "Microsoft.Kubernetes", "connectedClusters", r.cluster)]
        except ResourceNotFoundError:
            return None
        by_type = {(pick(e, "properties", "extensionType") or "").lower(): e.get("id") for e in exts}
        if self.enablement is None:     # apply in another process: the planned enablement body holds the template
            body = next((b for n, b in self.bodies.items() if n.startswith("layernet-aio-enablement-")), None)
            self.enablement = extension_types(body["properties"]["template"]) if body else None
        if self.enablement is None:
            self.fetch()
        ids_ = [by_type.get(t) for t in self.enablement or ()]
        return ids_ if ids_ and all(ids_) else None

    def complete(self, step: Step, pending: list[str]) -> dict:
        """The body of a deployment whose parameters waited for the enablement deployment."""
        r = next(x for x in levels(self.site) if x.level == step.level)
        body = self.bodies[step.target]
        kind = step.action.removeprefix("deploy ")
        cands = self.candidates(r, kind)
        missing = [k for k in pending if cands.get(k) is None]
        if missing:
            raise StageFailed(f"{step.level}: {', '.join(missing)} not known: the enablement extensions "
                              f"({', '.join(self.enablement or ())}) are not installed on {r.cluster}")
        params = dict(body["properties"]["parameters"], **{k: {"value": cands[k]} for k in pending})
        return deployment_body(body["properties"]["template"], params)

    def what_if(self, name: str, body: dict) -> tuple[bool, str]:
        poller = self.client.deployments.begin_what_if(self.site.azure.resource_group, name, body)
        return summarize_what_if(poller.result())

    def arc_status(self) -> dict[str, Optional[str]]:
        from azure.core.exceptions import ResourceNotFoundError

        ck, out = self.arm.connected_kubernetes(), {}
        for r in levels(self.site):
            try:
                c = as_dict(ck.connected_cluster.get(self.site.azure.resource_group, r.cluster))
                out[r.level] = pick(c, "properties", "connectivityStatus") or "unknown"
            except ResourceNotFoundError:
                out[r.level] = "absent"
        return out

    def plan_steps(self) -> tuple[list[Step], dict]:
        require_arc(self.site, self.arc_status())
        steps, observed = [], {}
        for level, part, name, body, pending in self.deployments():
            self.bodies[name] = body
            params = {k: v["value"] for k, v in body["properties"]["parameters"].items()}
            params.update({k: "<from the enablement deployment>" for k in pending})
            tpl = (f"{part} template sha256 {self.templates[part][0][:12]}" if part in self.templates
                   else "generated")
            detail = f"deployment {name} in {self.site.azure.resource_group}: {tpl}; parameters {json.dumps(params, sort_keys=True)}"
            if pending:
                self.pending[name] = pending
                observed[name] = "pending"
                steps.append(Step(level, f"deploy {part}", name, detail,
                                  reason=f"what-if after the enablement deployment: {', '.join(pending)} come from it"))
                continue
            same, text = self.what_if(name, body)
            observed[name] = text
            steps.append(Step(level, f"deploy {part}", name, detail, skip=same, reason=f"what-if: {text}"))
        return steps, observed

    def run(self, step: Step) -> dict:
        t0 = time.monotonic()
        body = self.bodies[step.target]
        if step.target in self.pending:
            body = self.complete(step, self.pending[step.target])
            self.bodies[step.target] = body
            if self.save_dir:      # the kept request is the one actually sent
                self.save_dir.mkdir(parents=True, exist_ok=True)
                (self.save_dir / f"{step.target}.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        poller = self.client.deployments.begin_create_or_update(self.site.azure.resource_group, step.target, body)
        res = as_dict(poller.result())
        state = pick(res, "properties", "provisioningState")
        ok = state == "Succeeded"
        err = pick(res, "properties", "error") or {}
        return {"rc": 0 if ok else 1, "attempts": 1, "seconds": round(time.monotonic() - t0, 3), "retried_for": "",
                "ok": ok, "output": "" if ok else f"{state}: {pick(err, 'code')}: {pick(err, 'message')}"}


# ----------------------------------------------------------------------------------------------- verify
def _state_of(obj: Optional[dict]) -> str:
    return pick(obj or {}, "properties", "provisioningState") or ("absent" if obj is None else "unknown")


def _error_of(obj: Optional[dict]) -> str:
    err = pick(obj or {}, "properties", "error") or {}
    msg = pick(err, "message")
    if not msg:
        for s in pick(obj or {}, "properties", "statuses") or []:
            if pick(s, "level") in ("Error", "Warning") or pick(s, "code"):
                msg = pick(s, "message")
                break
    return msg or ""


def read_level(site, arm_clients: tuple, r, enablement: Optional[tuple] = None) -> list[tuple[str, str, Optional[dict], str]]:
    """(check, resource path, resource or None, error) for one level. Extensions are found by extension type:
    the AIO extension, the enablement's (`enablement`: the types the release installs; without it, every other
    extension on the cluster)."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    io, ext = arm_clients
    rg = site.azure.resource_group
    out = []

    def get(check: str, what: str, fn, *args):
        try:
            out.append((check, what, as_dict(fn(*args)), ""))
        except ResourceNotFoundError:
            out.append((check, what, None, "not found"))
        except HttpResponseError as exc:
            out.append((check, what, None, f"ARM answered {exc.status_code}: {getattr(exc, 'message', exc)}"))

    get("instance", f"instances/{r.instance}", io.instance.get, rg, r.instance)
    get("broker", f"instances/{r.instance}/brokers/default", io.broker.get, rg, r.instance, "default")
    for name in listener_names(r):
        get(f"listener {name}", f"brokers/default/listeners/{name}", io.broker_listener.get, rg, r.instance,
            "default", name)
    get("dataflow profile", f"instances/{r.instance}/dataflowProfiles/default", io.dataflow_profile.get, rg,
        r.instance, "default")
    get("dataflow endpoint", f"instances/{r.instance}/dataflowEndpoints/default", io.dataflow_endpoint.get, rg,
        r.instance, "default")
    try:
        exts = [as_dict(e) for e in ext.extensions.list(rg, "Microsoft.Kubernetes", "connectedClusters", r.cluster)]
        err = ""
    except HttpResponseError as exc:
        exts, err = [], f"ARM answered {exc.status_code}: {getattr(exc, 'message', exc)}"
    by_type = {(pick(e, "properties", "extensionType") or "").lower(): e for e in exts}
    others = tuple(enablement) if enablement is not None else tuple(t for t in by_type if t != INSTANCE_EXTENSION)
    for t in others + (INSTANCE_EXTENSION,):
        e = by_type.get(t)
        name = pick(e or {}, "name") or t
        out.append((f"extension {t}", f"connectedClusters/{r.cluster}/extensions/{name}", e,
                    err or ("" if e else "not installed")))
    return out


def verify_aio(site, arm: Arm, refused: Optional[dict[str, list[str]]] = None, timeout: float = 0,
               interval: float = 10, sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.monotonic, progress: Optional[Callable[[str], None]] = None,
               enablement: Optional[tuple] = None) -> list[dict]:
    """Evidence rows per level; with `timeout`, polls until every resource is Succeeded, one Failed, or time is up.
    `enablement`: the extension types the release's enablement installs (see read_level)."""
    clients = (arm.iotoperations(), arm.extensions())
    start = clock()
    while True:
        seen = {r.level: (r, read_level(site, clients, r, enablement)) for r in levels(site)}
        states = [_state_of(obj) for _, reads in seen.values() for _, _, obj, _ in reads]
        settled = all(s in ("Succeeded", "Failed", "Canceled") for s in states)
        if settled or clock() - start >= timeout:
            break
        if progress:
            waiting = sum(s not in ("Succeeded", "Failed", "Canceled") for s in states)
            progress(f"{waiting} resource(s) still provisioning after {clock() - start:.0f} s")
        sleep(interval)
    rows = []
    for level, (r, reads) in seen.items():
        hosts = sorted(set((refused or {}).get(level, [])))
        for check, what, obj, err in reads:
            state = _state_of(obj)
            ok = state == "Succeeded"
            why = err or _error_of(obj)
            hint = f"{what} is {state}" + (f": {why}" if why else "")
            hint += (f"; the proxies refused at {level}: {', '.join(hosts)}" if hosts else
                     f"; no refused host seen at {level} in the audit window")
            rows.append(evidence(level, check, "Succeeded", state, ok, hint))
    return rows


# ----------------------------------------------------------------------------------------------- in the cluster


def kube_rows(site, api_for: Callable[[str], Any], refused: Optional[dict[str, list[str]]] = None) -> list[dict]:
    """A real site's view from inside each cluster (kube Api per level, see targets.kube.KubeTarget.api):
    every pod in azure-iot-operations Ready, the broker's services present with their ports (and the insecure
    listener's LoadBalancer address)."""
    rows = []
    for r in levels(site):
        hosts = sorted(set((refused or {}).get(r.level, [])))
        tail = (f"; the proxies refused at {r.level}: {', '.join(hosts)}" if hosts else "")
        try:
            api = api_for(r.level)
            pods = (api.get(f"/api/v1/namespaces/{AIO_NAMESPACE}/pods") or {}).get("items") or []
        except Exception as exc:     # an unreachable cluster is a failed row, not a crash of the report
            rows.append(evidence(r.level, "pods Ready", "all Ready", "unreachable", False,
                                 f"the cluster of {r.level} did not answer: {exc}"))
            continue
        bad = []
        for p in pods:
            name = p["metadata"]["name"]
            conds = {c.get("type"): c.get("status") for c in (p.get("status") or {}).get("conditions") or []}
            if conds.get("Ready") != "True" and (p.get("status") or {}).get("phase") != "Succeeded":
                waiting = [((cs.get("state") or {}).get("waiting") or {}).get("reason")
                           for cs in (p.get("status") or {}).get("containerStatuses") or []]
                why = ", ".join(w for w in waiting if w) or (p.get("status") or {}).get("phase") or "not Ready"
                bad.append(f"{name} ({why})")
        ready = len(pods) - len(bad)
        rows.append(evidence(r.level, "pods Ready", "all Ready", f"{ready}/{len(pods)} Ready",
                             bool(pods) and not bad,
                             ("no pods in namespace " + AIO_NAMESPACE if not pods else "not Ready: " + "; ".join(bad[:5]))
                             + tail))
        wanted = [(LISTENERS[n]["serviceName"], p["port"],
                   "LoadBalancer" if LISTENERS[n]["serviceType"] == "LoadBalancer" else None)
                  for n in listener_names(r) for p in LISTENERS[n]["ports"]]
        for svc_name, port, kind in wanted:
            svc = api.get(f"/api/v1/namespaces/{AIO_NAMESPACE}/services/{svc_name}")
            if svc is None:
                rows.append(evidence(r.level, f"service {svc_name}", f"port {port}", "absent", False,
                                     f"service {svc_name} does not exist in {AIO_NAMESPACE}" + tail))
                continue
            spec = svc.get("spec") or {}
            ports = [p.get("port") for p in spec.get("ports") or []]
            ingress = [i.get("ip") or i.get("hostname") for i in
                       ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]
            seen = f"{spec.get('type', 'ClusterIP')} {','.join(str(p) for p in ports)}" + (
                f" at {','.join(x for x in ingress if x)}" if ingress else "")
            ok = port in ports and (kind is None or (spec.get("type") == kind and bool(ingress)))
            rows.append(evidence(r.level, f"service {svc_name}", f"{kind or 'any type'} port {port}", seen, ok,
                                 f"service {svc_name} is {seen or 'without ports'}" +
                                 ("; a LoadBalancer needs an address (K3s ServiceLB)" if kind else "") + tail))
    return rows
