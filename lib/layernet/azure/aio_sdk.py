"""Stage 03 through the Azure SDK ("sdk" executor): the plan's steps as ARM PUTs, one resource per step.

The same resources `az iot ops` and the release templates create, each PUT through its own SDK client:

  storage account, its blob container          azure-mgmt-resource (generic resources client, by id)
  schema registry, ADR namespace               azure-mgmt-deviceregistry
  the registry's role on its container         azure-mgmt-resource (generic, Microsoft.Authorization/roleAssignments)
  init: cert-manager and secret store          azure-mgmt-kubernetesconfiguration-extensions
  create: the AIO extension                    azure-mgmt-kubernetesconfiguration-extensions
          custom location                      azure-mgmt-resource (generic, Microsoft.ExtendedLocation)
          instance, broker, authentication,    azure-mgmt-iotoperations
          listeners, dataflow profile and
          endpoint, registry endpoint

Every step reads the resource first: a resource that exists, is Succeeded and already holds every desired field
is a skip, so a second plan is empty. Apply runs the provider registrations and the account(s) shared between
levels first, then the levels side by side (they are separate clusters); within a level in waves (`WAVES`): a
resource starts once what it needs (its parent, the resources it references, init before create) succeeded, and
the resources of one wave are PUT together. A level whose step fails
stops there (the later steps of that level need it) while the other levels go on; the failures are reported
together at the end.

`on_extension(level, cluster_id, extension)` runs when an extension's PUT is accepted and `on_listeners(level,
listeners, authentications)` after a listener is provisioned (with every listener and authentication of the broker
read back from ARM): on a real site
the cluster does this itself; the lab starts its AIO extension stand-in and hands it the listeners.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from layernet.azure.aio_levels import INSTANCE_EXTENSION, LISTENERS, ROLE_EXISTS, STORAGE_BLOB_DATA_CONTRIBUTOR, \
    levels, listener_names
from layernet import rbac
from layernet.site.aio import AIO_NAMESPACE
from layernet.apiversions import api_version
from layernet.azure.clients import Arm, as_dict, pick
from layernet.resource_ids import rid
from layernet.plan import Step

STORAGE_API = api_version("Microsoft.Storage/storageAccounts")        # the one table (layernet.apiversions)
ROLE_API = api_version("Microsoft.Authorization/roleAssignments")
CUSTOM_LOCATION_API = api_version("Microsoft.ExtendedLocation/customLocations")
EXTENSIONS = {   # extension type -> (extension name, release namespace); the AIO extension's name gets a suffix
    "microsoft.certmanagement": ("cert-manager", "cert-manager"),
    "microsoft.azure.secretstore": ("azure-secret-store", "azure-secret-store"),
    INSTANCE_EXTENSION: ("azure-iot-operations", AIO_NAMESPACE),
}
# what this executor's init installs: the enablement of the 1.2 release (others differ: the az and arm executors read
# the types from the release's enablement template)
ENABLEMENT_TYPES = ("microsoft.certmanagement", "microsoft.azure.secretstore")


def extension_name(ext_type: str, cluster_id: str) -> str:
    """The name an installer gives a new extension: the AIO extension is `azure-iot-operations-<suffix>` with a
    per-cluster suffix of five characters, as `az iot ops create` and the release templates name it (they take
    five characters of ARM's uniqueString of the cluster id; this takes them from its SHA-256). Existing
    extensions are always found by type (`existing_extensions`), never by this name."""
    import base64
    import hashlib

    base = EXTENSIONS[ext_type][0]
    if ext_type != INSTANCE_EXTENSION:
        return base
    digest = hashlib.sha256(cluster_id.lower().encode()).digest()
    return f"{base}-{base64.b32encode(digest).decode().lower()[:5]}"
PROVIDERS = ("Microsoft.Storage", "Microsoft.DeviceRegistry", "Microsoft.KubernetesConfiguration",
             "Microsoft.ExtendedLocation", "Microsoft.IoTOperations")


@dataclass
class Resource:
    """One ARM resource of one level as the site wants it, and how to read and PUT it."""
    level: str
    action: str                 # the step's verb phrase
    name: str                   # what the plan shows as target
    id: str
    kind: str                   # which client call: generic | registry | adr | extension | instance | broker | ...
    body: dict
    api: str = ""               # api-version (generic client only)
    args: tuple = ()            # the typed client's path arguments after the resource group
    shared: bool = False        # used by several levels (a storage account named in more than one level)
    wave: int = 0               # apply order within a level: a wave starts when the one before it succeeded

    def call(self) -> str:
        return f"PUT {self.id}" + (f"?api-version={self.api}" if self.api else "") + " " + \
            json.dumps(self.body, sort_keys=True, separators=(",", ":"))


def _ext_id(cluster_id: str, name: str) -> str:
    return f"{cluster_id}/providers/Microsoft.KubernetesConfiguration/extensions/{name}"


WAVES = {  # what a resource needs before it: parents, references, and init before create
    "create container": 1, "create schema registry": 1, "create ADR namespace": 1,
    "init: extension microsoft.certmanagement": 1, "init: extension microsoft.azure.secretstore": 1,
    "assign Storage Blob Data Contributor": 2, "create: extension microsoft.iotoperations": 2,
    "create: custom location": 3, "create: instance": 4,
    "create: broker": 5, "create: dataflow profile": 5, "create: dataflow endpoint": 5, "create: registry endpoint": 5,
    "create: broker authentication": 6, "create: broker listener": 6,
}


def desired(site, sub: str, existing: Optional[dict] = None) -> list[Resource]:
    """Every resource of every Arc-enabled level, in the order they are created (egress level first).
    `existing`: {cluster id (lower case): {extension type: name}} of extensions already on the clusters (any
    installer's names): those are adopted under their own names."""
    out = _desired(site, sub, existing or {})
    for res in out:
        res.wave = WAVES.get(res.action, 0)
    return out


def _desired(site, sub: str, existing: dict) -> list[Resource]:
    rg, loc = site.azure.resource_group, site.azure.location
    out: list[Resource] = []
    first_account: dict[str, str] = {}
    for r in levels(site):
        sa_id = rid(sub, rg, "Microsoft.Storage", "storageAccounts", r.storage_account)
        container_id = f"{sa_id}/blobServices/default/containers/{r.container}"
        cluster_id = rid(sub, rg, "Microsoft.Kubernetes", "connectedClusters", r.cluster)
        cl_id = rid(sub, rg, "Microsoft.ExtendedLocation", "customLocations", r.custom_location)
        sr_id = rid(sub, rg, "Microsoft.DeviceRegistry", "schemaRegistries", r.registry)
        ns_id = rid(sub, rg, "Microsoft.DeviceRegistry", "namespaces", r.adr_namespace)
        inst_id = rid(sub, rg, "Microsoft.IoTOperations", "instances", r.instance)
        L = r.level
        if r.storage_account not in first_account:
            first_account[r.storage_account] = L
            out.append(Resource(L, "create storage account", r.storage_account, sa_id, "generic", {
                "location": loc, "sku": {"name": "Standard_LRS"}, "kind": "StorageV2",
                "properties": {"isHnsEnabled": True, "minimumTlsVersion": "TLS1_2", "allowBlobPublicAccess": False}},
                STORAGE_API, shared=True))
        out.append(Resource(L, "create container", f"{r.storage_account}/{r.container}", container_id, "generic",
                            {"properties": {"publicAccess": "None"}}, STORAGE_API))
        out.append(Resource(L, "create schema registry", r.registry, sr_id, "registry", {
            "location": loc, "identity": {"type": "SystemAssigned"},
            "properties": {"namespace": r.registry_namespace,
                           "storageAccountContainerUrl": f"https://{r.storage_account}.blob.core.windows.net/{r.container}"}},
            args=(r.registry,)))
        out.append(Resource(L, "create ADR namespace", r.adr_namespace, ns_id, "adr",
                            {"location": loc, "properties": {}}, args=(r.adr_namespace,)))
        if site.aio.schema_registry_role:
            role = rbac.assignment(sub, container_id, STORAGE_BLOB_DATA_CONTRIBUTOR, f"<principal id of {sr_id}>",
                                   holder=r.registry)     # the registry's identity: read at apply
            out.append(Resource(L, "assign Storage Blob Data Contributor", container_id, role["id"], "role",
                                role["body"], ROLE_API, args=(sr_id,)))
        ext_ids = []
        on_cluster = existing.get(cluster_id.lower()) or {}
        for ext_type in ENABLEMENT_TYPES + (INSTANCE_EXTENSION,):
            release_ns = EXTENSIONS[ext_type][1]
            name = on_cluster.get(ext_type) or extension_name(ext_type, cluster_id)
            ext_ids.append(_ext_id(cluster_id, name))
            body: dict = {"properties": {"extensionType": ext_type, "autoUpgradeMinorVersion": False,
                                         "releaseTrain": "stable",
                                         "scope": {"cluster": {"releaseNamespace": release_ns}},
                                         "configurationSettings": {}}}
            if ext_type == INSTANCE_EXTENSION:
                body["identity"] = {"type": "SystemAssigned"}
                body["properties"]["configurationSettings"] = {
                    "AgentOperationTimeoutInMinutes": "120", "trustSource": "SelfSigned",
                    "aioRelease": site.aio.release}
            phase = "create" if ext_type == INSTANCE_EXTENSION else "init"
            out.append(Resource(L, f"{phase}: extension {ext_type}", f"{r.cluster}/{name}", ext_ids[-1], "extension",
                                body, args=(r.cluster, name)))
        out.append(Resource(L, "create: custom location", r.custom_location, cl_id, "generic", {
            "location": loc, "properties": {"hostResourceId": cluster_id, "namespace": AIO_NAMESPACE,
                                            "displayName": r.custom_location, "hostType": "Kubernetes",
                                            "clusterExtensionIds": ext_ids}}, CUSTOM_LOCATION_API))
        ext_loc = {"name": cl_id, "type": "CustomLocation"}
        out.append(Resource(L, "create: instance", r.instance, inst_id, "instance", {
            "location": loc, "extendedLocation": ext_loc,
            "properties": {"description": f"layernet {L}", "schemaRegistryRef": {"resourceId": sr_id},
                           "adrNamespaceRef": {"resourceId": ns_id}}}, args=(r.instance,)))
        b = r.broker
        out.append(Resource(L, "create: broker", f"{r.instance}/default", f"{inst_id}/brokers/default", "broker", {
            "extendedLocation": ext_loc,
            "properties": {"memoryProfile": b.memory_profile,
                           "cardinality": {"frontend": {"replicas": b.frontend_replicas, "workers": b.frontend_workers},
                                           "backendChain": {"partitions": b.backend_partitions,
                                                            "redundancyFactor": b.backend_redundancy_factor,
                                                            "workers": b.backend_workers}}}},
            args=(r.instance, "default")))
        out.append(Resource(L, "create: broker authentication", f"{r.instance}/default/default",
                            f"{inst_id}/brokers/default/authentications/default", "authentication", {
                                "extendedLocation": ext_loc,
                                "properties": {"authenticationMethods": [{
                                    "method": "ServiceAccountToken",
                                    "serviceAccountTokenSettings": {"audiences": ["aio-internal"]}}]}},
                            args=(r.instance, "default", "default")))
        for lname in listener_names(r):
            out.append(Resource(L, "create: broker listener", f"{r.instance}/default/{lname}",
                                f"{inst_id}/brokers/default/listeners/{lname}", "listener",
                                {"extendedLocation": ext_loc, "properties": LISTENERS[lname]},
                                args=(r.instance, "default", lname)))
        out.append(Resource(L, "create: dataflow profile", f"{r.instance}/default", f"{inst_id}/dataflowProfiles/default",
                            "dataflow profile", {"extendedLocation": ext_loc, "properties": {"instanceCount": 1}},
                            args=(r.instance, "default")))
        out.append(Resource(L, "create: dataflow endpoint", f"{r.instance}/default",
                            f"{inst_id}/dataflowEndpoints/default", "dataflow endpoint", {
                                "extendedLocation": ext_loc,
                                "properties": {"endpointType": "Mqtt", "mqttSettings": {
                                    "host": f"aio-broker.{AIO_NAMESPACE}:{LISTENERS['default']['ports'][0]['port']}",
                                    "authentication": {"method": "ServiceAccountToken",
                                                       "serviceAccountTokenSettings": {"audience": "aio-internal"}},
                                    "tls": {"mode": "Enabled",
                                            "trustedCaCertificateConfigMapRef": "azure-iot-operations-aio-ca-trust-bundle"}}}},
                            args=(r.instance, "default")))
        out.append(Resource(L, "create: registry endpoint", f"{r.instance}/default",
                            f"{inst_id}/registryEndpoints/default", "registry endpoint", {
                                "extendedLocation": ext_loc,
                                "properties": {"host": "mcr.microsoft.com",
                                               "authentication": {"method": "Anonymous", "anonymousSettings": {}}}},
                            args=(r.instance, "default")))
    return out


# ----------------------------------------------------------------------------------------------- compare
def differences(want: Any, have: Any, path: str = "") -> list[str]:
    """Paths where `have` does not hold `want` (a field of `have` that `want` does not name is not a difference)."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return [path or "(resource)"]
        out = []
        for k, v in want.items():
            sub = f"{path}.{k}" if path else k
            if k == "location" and isinstance(v, str):
                if str(have.get(k, "")).lower().replace(" ", "") != v.lower().replace(" ", ""):
                    out.append(sub)
                continue
            out += differences(v, have.get(k), sub)
        return out
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) != len(want):
            return [path]
        return [d for i, (w, h) in enumerate(zip(want, have)) for d in differences(w, h, f"{path}[{i}]")]
    return [] if want == have else [path]


def _comparable(res: Resource, principal: Optional[str]) -> dict:
    body = json.loads(json.dumps(res.body))
    if res.kind == "role":
        if principal:
            body["properties"]["principalId"] = principal
        else:
            body["properties"].pop("principalId")
    if res.kind == "registry":     # the service fills identity.principalId/tenantId
        body["identity"] = {"type": body["identity"]["type"]}
    return body


# ----------------------------------------------------------------------------------------------- live
class SdkClients:
    """The SDK clients a level's steps use (one set per thread: the clients are not shared across threads)."""

    def __init__(self, arm: Arm, rg: str):
        self.arm, self.rg = arm, rg
        self._c: dict[str, Any] = {}

    def _get(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._c:
            self._c[name] = make()
        return self._c[name]

    @property
    def res(self):
        return self._get("res", self.arm.resources)

    @property
    def io(self):
        return self._get("io", self.arm.iotoperations)

    @property
    def ext(self):
        return self._get("ext", self.arm.extensions)

    @property
    def dr(self):
        return self._get("dr", self.arm.deviceregistry)

    def _ops(self, kind: str):
        io = self.io if kind in ("instance", "broker", "authentication", "listener", "dataflow profile",
                                 "dataflow endpoint", "registry endpoint") else None
        return {"instance": lambda: io.instance, "broker": lambda: io.broker,
                "authentication": lambda: io.broker_authentication, "listener": lambda: io.broker_listener,
                "dataflow profile": lambda: io.dataflow_profile, "dataflow endpoint": lambda: io.dataflow_endpoint,
                "registry endpoint": lambda: io.registry_endpoint}[kind]()

    def get(self, res: Resource) -> Optional[dict]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            if res.kind in ("generic", "role"):
                return as_dict(self.res.resources.get_by_id(res.id, api_version=res.api))
            if res.kind == "registry":
                return as_dict(self.dr.schema_registries.get(self.rg, *res.args))
            if res.kind == "adr":
                return as_dict(self.dr.namespaces.get(self.rg, *res.args))
            if res.kind == "extension":
                return as_dict(self.ext.extensions.get(self.rg, "Microsoft.Kubernetes", "connectedClusters", *res.args))
            return as_dict(self._ops(res.kind).get(self.rg, *res.args))
        except ResourceNotFoundError:
            return None

    def begin_put(self, res: Resource, body: dict):
        if res.kind in ("generic", "role"):
            return self.res.resources.begin_create_or_update_by_id(res.id, body, api_version=res.api)
        if res.kind == "registry":
            return self.dr.schema_registries.begin_create_or_replace(self.rg, *res.args, body)
        if res.kind == "adr":
            return self.dr.namespaces.begin_create_or_replace(self.rg, *res.args, body)
        if res.kind == "extension":
            return self.ext.extensions.begin_create(self.rg, "Microsoft.Kubernetes", "connectedClusters", *res.args, body)
        return self._ops(res.kind).begin_create_or_update(self.rg, *res.args, body)

    def listeners(self, instance: str) -> list[dict]:
        return [as_dict(x) for x in self.io.broker_listener.list_by_resource_group(self.rg, instance, "default")]

    def authentications(self, instance: str) -> list[dict]:
        return [as_dict(x) for x in self.io.broker_authentication.list_by_resource_group(self.rg, instance, "default")]

    def extensions_by_type(self, cluster: str) -> dict[str, str]:
        """{extension type (lower case): name} of the extensions on a connected cluster ({} when it is absent)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            exts = [as_dict(e) for e in self.ext.extensions.list(self.rg, "Microsoft.Kubernetes", "connectedClusters",
                                                                 cluster)]
        except ResourceNotFoundError:
            return {}
        # two of one type (a failed attempt beside a good one): the Succeeded one is the cluster's
        exts.sort(key=lambda e: (pick(e, "properties", "provisioningState") == "Succeeded", e.get("name") or ""),
                  reverse=True)
        out: dict[str, str] = {}
        for e in exts:
            t = (pick(e, "properties", "extensionType") or "").lower()
            if t and e.get("name"):
                out.setdefault(t, e["name"])
        return out

    def role_assignments(self, scope: str) -> list[dict]:
        """The role assignments on `scope` (ARM lists those of the scope and above; the caller compares)."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.core.rest import HttpRequest

        url = f"{self.arm.url}{scope}/providers/Microsoft.Authorization/roleAssignments?api-version={ROLE_API}"
        try:
            resp = self.res._client.send_request(HttpRequest("GET", url))
            if resp.status_code == 404:
                return []
            resp.raise_for_status()
        except ResourceNotFoundError:
            return []
        return list((resp.json() or {}).get("value") or [])


def existing_extensions(site, arm: Arm, c: Optional["SdkClients"] = None) -> dict[str, dict[str, str]]:
    """{cluster id (lower case): {extension type: name}} for every Arc-enabled level's cluster."""
    c = c or SdkClients(arm, site.azure.resource_group)
    out = {}
    for r in levels(site):
        cid = rid(arm.subscription_id, site.azure.resource_group, "Microsoft.Kubernetes", "connectedClusters", r.cluster)
        out[cid.lower()] = c.extensions_by_type(r.cluster)
    return out


def identical_assignment(assignments: list[dict], principal: str, role: str, scope: str) -> Optional[dict]:
    """The assignment of `role` to `principal` exactly on `scope`, whatever its name (ARM refuses a second one
    with 409 RoleAssignmentExists)."""
    for a in assignments:
        props = a.get("properties") or {}
        if str(props.get("principalId", "")).lower() == principal.lower() and rbac.role_of(a) == role.lower() \
                and str(props.get("scope") or rbac.scope_of(a.get("id", ""))).lower() == scope.lower():
            return a
    return None


def observe(site, arm: Arm) -> dict:
    """{"providers": {namespace: registrationState}, "resources": {resource id: {"state", "missing": [field paths]}
    or None}} for every desired resource (each level read in its own thread)."""
    from azure.core.exceptions import ResourceNotFoundError

    rg = site.azure.resource_group
    c0 = SdkClients(arm, rg)
    providers = {}
    for ns in PROVIDERS:
        try:
            providers[ns] = pick(as_dict(c0.res.providers.get(ns)), "registrationState") or "NotRegistered"
        except ResourceNotFoundError:
            providers[ns] = "NotRegistered"
    existing = existing_extensions(site, arm, c0)
    wanted = desired(site, arm.subscription_id, existing)
    local = threading.local()

    def get(res: Resource) -> Optional[dict]:
        if not hasattr(local, "c"):
            local.c = SdkClients(arm, rg)
        return local.c.get(res)

    from concurrent.futures import ThreadPoolExecutor

    out: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:        # roles need their registry's principal: read them last
        first = [r for r in wanted if r.kind != "role"]
        lives = dict(zip([r.id for r in first], pool.map(get, first)))
        roles = [r for r in wanted if r.kind == "role"]
        lives.update(zip([r.id for r in roles], pool.map(get, roles)))
    for res in wanted:
        live = lives[res.id]
        principal = pick(lives.get(res.args[0]) or {}, "identity", "principalId") if res.kind == "role" else None
        if live is None and res.kind == "role" and principal:
            # the same assignment made under another name (`az iot ops schema registry create` makes one)
            scope = res.id.split("/providers/Microsoft.Authorization/")[0]
            same = identical_assignment(c0.role_assignments(scope), principal, STORAGE_BLOB_DATA_CONTRIBUTOR, scope)
            if same is not None:
                out[res.id] = {"state": pick(same, "properties", "provisioningState") or "Succeeded", "missing": [],
                               "adopted": same.get("name") or same.get("id")}
                continue
        if live is None:
            out[res.id] = None
            continue
        out[res.id] = {"state": pick(live, "properties", "provisioningState")
                       or ("Succeeded" if res.kind == "role" else "unknown"),     # ARM's assignments have none
                       "missing": differences(_comparable(res, principal), live)}
    return {"providers": providers, "resources": {r.id: out.get(r.id) for r in wanted}, "extensions": existing}


REPAIR = "restart extensions in the cluster"



def resource_skip(live: Optional[dict]) -> tuple[bool, str]:
    """(skip, reason) for a resource in the plan, from what ARM holds: {"state", "missing": [fields]} or None."""
    if live is None:
        return False, "missing"
    if live["state"] != "Succeeded":
        return False, f"exists but {live['state']}: PUT again"
    if live["missing"]:
        return False, "differs in " + ", ".join(live["missing"][:4])
    return True, "in the desired state (Succeeded)"

def steps(site, arm: Arm, state: dict) -> list[Step]:
    """The plan. `state["running"]` ({level: bool}, where the target can tell) adds a repair step for a level whose
    extensions ARM shows installed while nothing in the cluster runs them (the lab: a stopped stand-in)."""
    out = []
    for ns, reg in state["providers"].items():
        out.append(Step("site", "register provider", ns, f"POST /subscriptions/{arm.subscription_id}/providers/{ns}/register",
                        skip=reg == "Registered", reason=reg))
    wanted = desired(site, arm.subscription_id, state.get("extensions"))
    for res in wanted:
        skip, why = resource_skip(state["resources"].get(res.id))
        if skip and res.kind == "role" and (state["resources"].get(res.id) or {}).get("adopted"):
            why = f"assigned already as {state['resources'][res.id]['adopted']} (same principal, role and scope)"
        out.append(Step(res.level, res.action, res.name, res.call(), skip=skip, reason=why))
    running = state.get("running") or {}
    for level, up in running.items():
        exts = [r for r in wanted if r.level == level and r.kind == "extension"]
        installed = exts and all((state["resources"].get(r.id) or {}).get("state") == "Succeeded" for r in exts)
        if up is False and installed:
            at = next(i for i, st in enumerate(out) if st.level == level) if any(st.level == level for st in out) \
                else len(out)
            out.insert(at, Step(level, REPAIR, f"{level}: " + ", ".join(r.args[1] for r in exts),
                                "hand each installed extension and the broker's listeners (read from ARM) to the "
                                "cluster again", reason="ARM shows them installed, nothing runs them in the cluster"))
    return out


# ----------------------------------------------------------------------------------------------- apply
@dataclass
class SdkExecutor:
    """Runs the plan's changes as ARM PUTs (see the module docstring for the order)."""
    site: Any
    arm: Arm
    on_extension: Optional[Callable[[str, str, dict], Any]] = None
    on_listeners: Optional[Callable[[str, list, list], Any]] = None
    record: Optional[Path] = None
    name: str = "sdk"
    existing: Optional[dict] = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _resources(self) -> dict[tuple, Resource]:
        if self.existing is None:       # the extensions' names as the plan saw them (adopted by type)
            self.existing = existing_extensions(self.site, self.arm)
        return {(r.level, r.action, r.name): r for r in desired(self.site, self.arm.subscription_id, self.existing)}

    def _write(self, res: Resource, body: dict, result: Optional[dict]) -> str:
        if not self.record:
            return ""
        d = self.record / "resources" / res.level
        d.mkdir(parents=True, exist_ok=True)
        stem = res.id.split("/providers/", 1)[-1].replace("/", "~")
        path = d / f"{stem}.json"
        path.write_text(json.dumps({"id": res.id, "request": body, "response": result}, indent=1, sort_keys=True))
        return str(path)

    def register(self, c: SdkClients, ns: str, timeout: float = 120.0) -> dict:
        t0 = time.monotonic()
        c.res.providers.register(ns)
        while True:
            state = pick(as_dict(c.res.providers.get(ns)), "registrationState")
            if state == "Registered":
                return {**_row(t0, True, ""), "state": state, "file": ""}
            if time.monotonic() - t0 > timeout:
                return {**_row(t0, False, f"{ns} still {state} after {timeout:.0f} s"), "state": state, "file": ""}
            time.sleep(min(2.0, self.arm.extra.get("polling_interval", 2.0)))

    def repair(self, c: SdkClients, level: str) -> dict:
        t0 = time.monotonic()
        done = []
        for res in self._resources().values():
            if res.level == level and res.kind == "extension" and self.on_extension is not None:
                cluster_id = res.id.split("/providers/Microsoft.KubernetesConfiguration/")[0]
                done.append(self.on_extension(level, cluster_id, {"id": res.id, "name": res.args[1],
                                                                  "type": res.body["properties"]["extensionType"]}))
        inst = next((r.args[0] for r in self._resources().values() if r.level == level and r.kind == "listener"), None)
        if inst and self.on_listeners is not None:
            done.append(self.on_listeners(level, c.listeners(inst), c.authentications(inst)))
        return {**_row(t0, True, "; ".join(d for d in done if d)), "state": "repaired", "file": ""}

    def run_one(self, c: SdkClients, step: Step) -> dict:
        if step.action == "register provider":
            return self.register(c, step.target)
        if step.action == REPAIR:
            return self.repair(c, step.level)
        t0 = time.monotonic()
        res = self._resources()[(step.level, step.action, step.target)]
        body = json.loads(json.dumps(res.body))
        if res.kind == "role":
            reg = c.dr.schema_registries.get(c.rg, res.args[0].rsplit("/", 1)[-1])
            principal = pick(as_dict(reg), "identity", "principalId")
            if not principal:
                return _row(t0, False, f"schema registry {res.args[0]} has no managed identity principal")
            body["properties"]["principalId"] = principal
        try:
            poller = c.begin_put(res, body)
            if res.kind == "extension" and self.on_extension is not None:
                cluster_id = res.id.split("/providers/Microsoft.KubernetesConfiguration/")[0]
                self.on_extension(res.level, cluster_id, {"id": res.id, "name": res.args[1],
                                                          "type": body["properties"]["extensionType"]})
            result = as_dict(poller.result())
        except Exception as exc:  # noqa: BLE001 - an ARM error is the step's outcome, named in the report
            msg = getattr(exc, "message", None) or str(exc)
            path = self._write(res, body, {"error": msg})
            if res.kind == "role" and ROLE_EXISTS in str(msg):   # the same assignment under another name: done
                return {**_row(t0, True, "already assigned (ARM: RoleAssignmentExists)"), "state": "Succeeded",
                        "file": path}
            return {**_row(t0, False, " ".join(str(msg).split())[:400]), "state": "Failed", "file": path}
        path = self._write(res, body, result)
        state = pick(result, "properties", "provisioningState")
        if state != "Succeeded":
            return {**_row(t0, False, f"{res.name} is {state}"), "state": state, "file": path}
        note = ""
        if res.kind == "listener" and self.on_listeners is not None:
            note = self.on_listeners(res.level, c.listeners(res.args[0]), c.authentications(res.args[0])) or ""
        return {**_row(t0, True, note), "state": state, "file": path}

    def run(self, step: Step) -> dict:
        return self.run_one(SdkClients(self.arm, self.site.azure.resource_group), step)

    def run_all(self, changes: list[Step], progress: Callable[[str], None]) -> list[dict]:
        """Shared accounts first, then each level in its own thread; returns rows in plan order."""
        total = len(changes)
        index = {id(s): i for i, s in enumerate(changes, 1)}
        rows: dict[int, dict] = {}
        shared_actions = {(r.level, r.action, r.name) for r in self._resources().values() if r.shared}
        first = [s for s in changes if (s.level, s.action, s.target) in shared_actions or s.level == "site"]
        rest = [s for s in changes if s not in first]

        def go(c: SdkClients, step: Step) -> bool:
            i = index[id(step)]
            with self._lock:
                progress(f"[{i}/{total}] {step.level}: {step.action} {step.target}")
            out = self.run_one(c, step)
            rows[i] = {"level": step.level, "action": step.action, "target": step.target, **out}
            with self._lock:
                progress(f"[{i}/{total}] {step.level}: {step.action} " +
                         (f"done in {out['seconds']} s" if out["ok"] else f"FAILED: {out['output']}"))
            return out["ok"]

        c0 = SdkClients(self.arm, self.site.azure.resource_group)
        failed_levels: set[str] = set()
        for step in first:
            if not go(c0, step):
                failed_levels.add(step.level)
        if "site" in failed_levels:
            failed_levels.update(s.level for s in rest)
        by_level: dict[str, list[Step]] = {}
        for s in rest:
            by_level.setdefault(s.level, []).append(s)

        waves = {(r.level, r.action, r.name): r.wave for r in self._resources().values()}

        def one(step: Step, level: str) -> bool:
            try:
                return go(SdkClients(self.arm, self.site.azure.resource_group), step)
            except Exception as exc:  # noqa: BLE001 - keep the other steps and levels going
                rows[index[id(step)]] = {"level": level, "action": step.action, "target": step.target,
                                         **_row(time.monotonic(), False, f"{type(exc).__name__}: {exc}")}
                return False

        def level_thread(level: str, todo: list[Step]) -> None:
            by_wave: dict[int, list[Step]] = {}
            for step in todo:
                by_wave.setdefault(waves.get((step.level, step.action, step.target), 0), []).append(step)
            for wave in sorted(by_wave):
                if level in failed_levels:
                    for step in by_wave[wave]:
                        rows[index[id(step)]] = {"level": level, "action": step.action, "target": step.target,
                                                 **_row(time.monotonic(), False,
                                                        "not run: an earlier step of this level failed", rc=None)}
                    continue
                results: list[bool] = []
                ts = [threading.Thread(target=lambda st=st: results.append(one(st, level)), daemon=True)
                      for st in by_wave[wave]]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                if not all(results):
                    failed_levels.add(level)

        threads = [threading.Thread(target=level_thread, args=(lvl, todo), name=f"aio-{lvl}", daemon=True)
                   for lvl, todo in by_level.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [rows[i] for i in sorted(rows)]


def _row(t0: float, ok: bool, output: str, rc: Optional[int] = -1) -> dict:
    return {"rc": (0 if ok else 1) if rc == -1 else rc, "attempts": 1 if rc is not None else 0,
            "seconds": round(time.monotonic() - t0, 3), "retried_for": "", "ok": ok, "output": output}
