"""ARM semantics without HTTP: `Arm.handle(method, path, query, body, base_url, peer) -> Reply`.

What it serves (every call needs ``api-version``, else 400 MissingApiVersionParameter):

- ``GET /metadata/endpoints``: the cloud's endpoints (a list for api-version >= 2022-09-01, as az asks);
- ``GET /subscriptions``, ``/subscriptions/{s}``; an unknown subscription is 404 SubscriptionNotFound;
  ``GET /tenants``: the lab's tenant (what `az login` and `az account tenant list` read);
- ``POST /subscriptions/{s}/providers/Microsoft.Storage/checkNameAvailability`` (`az storage account create`
  asks first): storage account names are global, a taken or malformed one is ``nameAvailable: false`` with
  Azure's reason;
- providers: ``GET /subscriptions/{s}/providers[/{ns}]``, ``POST .../providers/{ns}/register`` (Registering,
  then Registered after `register_seconds`); writes to a namespace that is not registered get 409
  MissingSubscriptionRegistration, which makes azure-mgmt-core register it on its own;
- resource groups: PUT (200/201), GET, HEAD (204/404), PATCH, list, DELETE (202 + Location, removes what the
  group holds), ``GET .../resourceGroups/{rg}/resources``;
- any resource ``.../providers/{ns}/{type}/{name}[/{type}/{name}...]`` (also extension resources whose scope
  is another resource): PUT is a long-running operation (201 new / 200 update, ``Azure-AsyncOperation`` and
  ``Retry-After``, body provisioningState Accepted); the status URL
  ``/subscriptions/{s}/providers/{ns}/locations/{loc}/operationStatuses/{op}`` answers
  ``{"status": "InProgress"}`` until the type's hook says Succeeded or Failed (with ARM's error); GET;
  PATCH (tags, properties; synchronous); DELETE (202 + Location + Azure-AsyncOperation; a missing resource
  is 204); collections ``{"value": [...], "nextLink": ...}`` paged by `page_size`; POST ``{id}/{action}``
  goes to the type's hook. Ids are case-insensitive; answers keep the casing of the first PUT.

Errors are ARM's shape ``{"error": {"code", "message"}}``.

The contract of the pinned api-versions (`contract`, read from the SDK models; `layernet.apiversions`): a resource
type of the table answers any other api-version with 400 ``InvalidApiVersionParameter``; a PUT body with an
unknown, read-only or wrongly typed property, a missing required one or a value outside an enum gets 400
``InvalidRequestContent`` naming the property path (``target``, ``details``); a role assignment for a principal,
role and scope that already have one (under another name) gets 409 ``RoleAssignmentExists``.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlencode

from layernet import apiversions
from layernet.lab.cloud.arm import contract, hooks
from layernet.lab.cloud.arm.ids import Rid, parse, segments
from layernet.lab.cloud.arm.store import Store

NOT_FOUND_FIX = "For more details please go to https://aka.ms/ARMResourceNotFoundFix"
KNOWN_PROVIDERS = {
    "Microsoft.Kubernetes": ["connectedClusters"],
    "Microsoft.KubernetesConfiguration": ["extensions", "fluxConfigurations"],
    "Microsoft.ExtendedLocation": ["customLocations"],
    "Microsoft.IoTOperations": ["instances", "instances/brokers", "instances/brokers/listeners",
                                "instances/brokers/authentications", "instances/brokers/authorizations",
                                "instances/dataflowProfiles", "instances/dataflowProfiles/dataflows",
                                "instances/dataflowEndpoints", "instances/registryEndpoints"],
    "Microsoft.DeviceRegistry": ["schemaRegistries", "namespaces", "namespaces/devices", "namespaces/assets"],
    "Microsoft.SecretSyncController": ["azureKeyVaultSecretProviderClasses", "secretSyncs"],
    "Microsoft.Storage": ["storageAccounts", "storageAccounts/blobServices/containers"],
    "Microsoft.EventHub": ["namespaces", "namespaces/eventhubs"],
    "Microsoft.Authorization": ["roleAssignments"],
    "Microsoft.Resources": ["resourceGroups", "deployments"],
}
ROLE_ASSIGNMENTS = "microsoft.authorization/roleassignments"
TOP_LEVEL = ("location", "tags", "identity", "sku", "kind", "extendedLocation", "plan", "zones", "managedBy")


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict = field(default_factory=dict)


def error(status: int, code: str, message: str, headers: Optional[dict] = None) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}}, headers or {})


@dataclass
class ArmSettings:
    tenant_id: str = "00000000-0000-0000-0000-00000000000a"
    subscriptions: dict = field(default_factory=lambda: {"00000000-0000-0000-0000-000000000001": "layernet lab"})
    location: str = "westeurope"
    retry_after: str = "1"                 # seconds; "0.05" (sub-second) is sent as Retry-After-Ms
    register_seconds: float = 0.0
    page_size: int = 100
    preregistered: tuple = ("Microsoft.Resources", "Microsoft.Authorization", "Microsoft.Features")
    login_endpoint: str = "https://login.microsoftonline.com/"
    egress_ip: str = ""                    # heartbeats must come from here (the egress level's node address)
    offline_after: float = 60.0            # seconds without a heartbeat before a cluster is Offline
    contract: bool = True                  # enforce the pinned api-versions and models (off: the generic store only)


def _now_iso(t: Optional[float] = None) -> str:
    return dt.datetime.fromtimestamp(t if t is not None else time.time(), dt.timezone.utc).isoformat().replace("+00:00", "Z")


class Arm:
    def __init__(self, store: Store, settings: ArmSettings, events: Optional[Path] = None):
        """`events`: a JSON-lines file that gets one row per accepted write and per finished operation
        (time, event, id, type, status, peer), for lab services that react to resources (e.g. start a level's
        agent when its connected cluster is created)."""
        self.store, self.settings = store, settings
        self.events = Path(events) if events else None

    def _event(self, event: str, rid: str, rtype: str, status: str = "", peer: str = "") -> None:
        if self.events is None:
            return
        row = {"time": round(time.time(), 3), "event": event, "id": rid, "type": rtype, "status": status, "peer": peer}
        with open(self.events, "a") as f:
            f.write(json.dumps(row) + "\n")

    # ------------------------------------------------------------------------------------------- entry
    def handle(self, method: str, path: str, query: dict, body: Any, base_url: str, peer: str = "") -> Reply:
        method = method.upper()
        if not query.get("api-version"):
            return error(400, "MissingApiVersionParameter",
                         "The api-version query parameter (?api-version=) is required for all requests.")
        segs = segments(path)
        low = [s.lower() for s in segs]
        ctx = _Call(method, segs, low, query, body, base_url.rstrip("/"), peer)
        with self.store.lock:
            reply = self._route(ctx)
            if method != "GET" or ctx.changed:
                self.store.save()
        return reply

    def _route(self, c: "_Call") -> Reply:
        low, segs = c.low, c.segs
        if low == ["metadata", "endpoints"]:
            return self._metadata(c)
        if low == ["tenants"]:
            return self._list(c, [self._tenant()]) if c.method == "GET" else _method_not_allowed(c)
        if not low or low[0] != "subscriptions":
            return error(404, "InvalidResourceType", f"The resource type '{'/'.join(segs) or '/'}' could not be found.")
        if len(low) == 1:
            return self._list(c, [self._subscription(s) for s in self.settings.subscriptions])
        sub = self._sub_id(segs[1])
        if sub is None:
            return error(404, "SubscriptionNotFound", f"The subscription '{segs[1]}' could not be found.")
        rest = low[2:]
        if not rest:
            return Reply(200, self._subscription(sub)) if c.method == "GET" else _method_not_allowed(c)
        if rest[:2] == ["providers", "microsoft.storage"] and rest[2:] == ["checknameavailability"]:
            return self._storage_name(c) if c.method == "POST" else _method_not_allowed(c)
        if rest[0] == "providers" and (len(rest) <= 2 or (len(rest) == 3 and rest[2] in ("register", "unregister"))):
            return self._providers(c, sub)
        if rest[0] == "providers" and len(rest) == 6 and rest[2] == "locations" and rest[4] in ("operationstatuses", "operationresults"):
            return self._operation(c, segs[7], results=rest[4] == "operationresults")
        if rest[0] == "resourcegroups" and len(rest) <= 3 and (len(rest) < 3 or rest[2] == "resources"):
            return self._groups(c, sub)
        rid = parse("/".join(segs))
        if rid is None:
            return error(404, "InvalidResourceType", f"No route for '/{'/'.join(segs)}'.")
        return self._resource(c, rid)

    # ------------------------------------------------------------------------------------------- metadata
    def _metadata(self, c: "_Call") -> Reply:
        arm = c.base_url + "/"
        login = self.settings.login_endpoint
        doc = {
            "name": "AzureCloud", "resourceManager": arm, "portal": "https://portal.azure.com",
            "authentication": {"loginEndpoint": login, "audiences": ["https://management.core.windows.net/",
                                                                     "https://management.azure.com/"],
                               "tenant": "common", "identityProvider": "AAD"},
            "graph": "https://graph.windows.net/", "graphAudience": "https://graph.windows.net/",
            "microsoftGraphResourceId": "https://graph.microsoft.com/", "media": "https://rest.media.azure.net",
            "activeDirectoryDataLake": "https://datalake.azure.net/", "batch": "https://batch.core.windows.net/",
            "gallery": "https://gallery.azure.com/", "sqlManagement": "https://management.core.windows.net:8443/",
            "vmImageAliasDoc": "", "appInsightsResourceId": "https://api.applicationinsights.io",
            "appInsightsTelemetryChannelResourceId": "https://dc.applicationinsights.azure.com/v2/track",
            "logAnalyticsResourceId": "https://api.loganalytics.io", "ossrDbmsResourceId": "https://ossrdbms-aad.database.windows.net",
            "suffixes": {"acrLoginServer": "azurecr.io", "keyVaultDns": "vault.azure.net", "storage": "core.windows.net",
                         "storageSyncEndpointSuffix": "afs.azure.net", "sqlServerHostname": "database.windows.net",
                         "mhsmDns": "managedhsm.azure.net", "mysqlServerEndpoint": "mysql.database.azure.com",
                         "postgresqlServerEndpoint": "postgres.database.azure.com", "attestationEndpoint": "attest.azure.net",
                         "synapseAnalytics": "dev.azuresynapse.net", "azureDatalakeStoreFileSystem": "azuredatalakestore.net",
                         "azureDatalakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.net"},
        }
        if c.query.get("api-version", "") >= "2022-09-01":
            return Reply(200, [doc])
        return Reply(200, {"galleryEndpoint": doc["gallery"], "graphEndpoint": doc["graph"], "portalEndpoint": doc["portal"],
                           "authentication": {"loginEndpoint": login, "audiences": doc["authentication"]["audiences"]}})

    # ------------------------------------------------------------------------------------------- subscriptions
    def _sub_id(self, text: str) -> Optional[str]:
        return next((s for s in self.settings.subscriptions if s.lower() == text.lower()), None)

    def _subscription(self, sub: str) -> dict:
        return {"id": f"/subscriptions/{sub}", "subscriptionId": sub, "tenantId": self.settings.tenant_id,
                "displayName": self.settings.subscriptions[sub], "state": "Enabled",
                "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "PayAsYouGo_2014-09-01",
                                         "spendingLimit": "Off"}, "authorizationSource": "RoleBased"}

    def _tenant(self) -> dict:
        tid = self.settings.tenant_id
        return {"id": f"/tenants/{tid}", "tenantId": tid, "tenantCategory": "Home", "countryCode": "US",
                "displayName": "layernet lab", "domains": ["layernetlab.onmicrosoft.com"],
                "defaultDomain": "layernetlab.onmicrosoft.com", "tenantType": "AAD"}

    def _storage_name(self, c: "_Call") -> Reply:
        """Storage account names are global (one namespace over every subscription): Azure's answer for a name."""
        body = c.body if isinstance(c.body, dict) else {}
        name, rtype = str(body.get("name") or ""), str(body.get("type") or "")
        if rtype.lower() != "microsoft.storage/storageaccounts":
            return error(400, "InvalidRequestContent", "The request content must name 'type': "
                                                       "'Microsoft.Storage/storageAccounts'.")
        if not (3 <= len(name) <= 24 and name.isascii() and name.isalnum() and name == name.lower()):
            return Reply(200, {"nameAvailable": False, "reason": "AccountNameInvalid",
                               "message": f"{name} is not a valid storage account name. Storage account name must be "
                                          "between 3 and 24 characters in length and use numbers and lower-case "
                                          "letters only."})
        taken = any(str(r.get("type", "")).lower() == "microsoft.storage/storageaccounts"
                    and str(r.get("name", "")).lower() == name for r in self.store.values("resources"))
        if taken:
            return Reply(200, {"nameAvailable": False, "reason": "AlreadyExists",
                               "message": f"The storage account named {name} is already taken."})
        return Reply(200, {"nameAvailable": True})

    # ------------------------------------------------------------------------------------------- providers
    def _provider_state(self, sub: str, ns: str) -> tuple[str, str]:
        """(canonical namespace, registrationState)."""
        canon = next((k for k in KNOWN_PROVIDERS if k.lower() == ns.lower()), ns)
        if any(p.lower() == ns.lower() for p in self.settings.preregistered):
            return canon, "Registered"
        rec = self.store.get("providers", f"{sub}/{ns}")
        if not rec:
            return canon, "NotRegistered"
        if rec["state"] == "Registering" and time.time() >= rec["since"] + self.settings.register_seconds:
            rec["state"] = "Registered"
            self.store.save()
        return rec.get("namespace", canon), rec["state"]

    def registered(self, sub: str, ns: str) -> bool:
        return self._provider_state(sub, ns)[1] == "Registered"

    def _provider(self, sub: str, ns: str) -> dict:
        canon, state = self._provider_state(sub, ns)
        types = KNOWN_PROVIDERS.get(canon, [])
        return {"id": f"/subscriptions/{sub}/providers/{canon}", "namespace": canon, "registrationState": state,
                "registrationPolicy": "RegistrationRequired",
                "resourceTypes": [{"resourceType": t, "locations": [self.settings.location],
                                   "apiVersions": list(apiversions.served(f"{canon}/{t}")) or ["2024-01-01"],
                                   "capabilities": "None"} for t in types]}

    def _providers(self, c: "_Call", sub: str) -> Reply:
        rest = c.segs[2:]
        if len(rest) == 1:
            if c.method != "GET":
                return _method_not_allowed(c)
            names = list(KNOWN_PROVIDERS) + [r["namespace"] for r in self.store.values("providers")
                                              if r["sub"] == sub and r["namespace"] not in KNOWN_PROVIDERS]
            return self._list(c, [self._provider(sub, n) for n in names])
        ns = rest[1]
        if len(rest) == 2:
            return Reply(200, self._provider(sub, ns)) if c.method == "GET" else _method_not_allowed(c)
        action = c.low[4]
        if c.method != "POST" or action not in ("register", "unregister"):
            return error(404, "InvalidResourceType", f"No route for '{'/'.join(c.segs)}'.")
        canon = self._provider(sub, ns)["namespace"]
        if action == "register":
            if not self.registered(sub, ns):
                self.store.put("providers", f"{sub}/{ns}", {"sub": sub, "namespace": canon, "state": "Registering",
                                                            "since": time.time()})
        else:
            self.store.put("providers", f"{sub}/{ns}", {"sub": sub, "namespace": canon, "state": "NotRegistered",
                                                        "since": time.time()})
        return Reply(200, self._provider(sub, ns))

    # ------------------------------------------------------------------------------------------- groups
    def _group_id(self, sub: str, rg: str) -> str:
        return f"/subscriptions/{sub}/resourceGroups/{rg}"

    def _groups(self, c: "_Call", sub: str) -> Reply:
        rest = c.segs[2:]
        if len(rest) == 1:
            if c.method != "GET":
                return _method_not_allowed(c)
            prefix = f"/subscriptions/{sub}/".lower()
            return self._list(c, [g for g in self.store.values("groups") if g["id"].lower().startswith(prefix)])
        rg = rest[1]
        gid = self._group_id(sub, rg)
        group = self.store.get("groups", gid)
        if len(rest) == 3:                                  # .../resources
            if group is None:
                return _rg_not_found(rg)
            prefix = gid.lower() + "/"
            return self._list(c, [self._view(r, c) for r in self.store.values("resources") if r["id"].lower().startswith(prefix)])
        if c.method in ("GET", "HEAD"):
            if group is None:
                return Reply(404) if c.method == "HEAD" else _rg_not_found(rg)
            return Reply(204) if c.method == "HEAD" else Reply(200, group)
        bad = self._version_error("Microsoft.Resources/resourceGroups", c)
        if bad:
            return Reply(400, bad)
        if c.method == "PUT" and self.settings.contract:
            bad = contract.body_error("Microsoft.Resources/resourceGroups", c.body)
            if bad:
                return Reply(400, bad)
        if c.method in ("PUT", "PATCH"):
            body = c.body if isinstance(c.body, dict) else None
            if body is None:
                return error(400, "InvalidRequestContent", "The request content must be a JSON object.")
            if c.method == "PATCH":
                if group is None:
                    return _rg_not_found(rg)
                if "tags" in body:
                    group["tags"] = body["tags"]
                return Reply(200, group)
            if not body.get("location"):
                return error(400, "LocationRequired", "The location property is required for this definition.")
            new = {"id": group["id"] if group else gid, "name": group["name"] if group else rg,
                   "type": "Microsoft.Resources/resourceGroups", "location": str(body["location"]).lower().replace(" ", ""),
                   "tags": body.get("tags") or (group or {}).get("tags") or {},
                   "properties": {"provisioningState": "Succeeded"}}
            if body.get("managedBy"):
                new["managedBy"] = body["managedBy"]
            self.store.put("groups", gid, new)
            return Reply(200 if group else 201, new)
        if c.method == "DELETE":
            if group is None:
                return _rg_not_found(rg)
            op = self._new_op("delete-group", gid, "Microsoft.Resources", self.settings.location, c)
            return Reply(202, None, self._op_headers(op, c, location=True, async_op=False))
        return _method_not_allowed(c)

    # ------------------------------------------------------------------------------------------- resources
    def _resource(self, c: "_Call", rid: Rid) -> Reply:
        if rid.resource_group and self.store.get("groups", self._group_id(rid.subscription, rid.resource_group)) is None:
            return _rg_not_found(rid.resource_group)
        vtype = rid.type if not (c.method == "POST" and rid.is_collection) else \
            Rid(rid.subscription, rid.resource_group, rid.scope, rid.namespace, rid.pairs[:-1]).type
        # an unregistered namespace is refused first (409 MissingSubscriptionRegistration, below), as ARM does
        bad = self._version_error(vtype, c) if self.registered(rid.subscription, rid.namespace) else None
        if bad:
            return Reply(400, bad)
        if rid.is_collection:
            if c.method == "POST":
                return self._action(c, rid)
            if c.method != "GET":
                return _method_not_allowed(c)
            return self._list_collection(c, rid)
        existing = self.store.get("resources", rid.key)
        if c.method == "GET":
            return Reply(200, self._view(existing, c)) if existing else self._not_found(rid)
        if c.method == "HEAD":
            return Reply(204 if existing else 404)
        if c.method == "PUT":
            return self._put(c, rid, existing)
        if c.method == "PATCH":
            if not existing:
                return self._not_found(rid)
            body = c.body if isinstance(c.body, dict) else {}
            for k in TOP_LEVEL:
                if k in body and k != "location":
                    existing[k] = body[k]
            if isinstance(body.get("properties"), dict):
                existing.setdefault("properties", {}).update(body["properties"])
            existing.setdefault("systemData", {})["lastModifiedAt"] = _now_iso()
            return Reply(200, self._view(existing, c))
        if c.method == "DELETE":
            if not existing:
                return Reply(204)
            if not self.registered(rid.subscription, rid.namespace):
                return _not_registered(rid.namespace)
            existing.setdefault("properties", {})["provisioningState"] = "Deleting"
            op = self._new_op("delete", rid.id, rid.namespace, existing.get("location") or self.settings.location, c)
            self._event("delete", existing["id"], existing["type"], "Deleting", c.peer)
            return Reply(202, None, self._op_headers(op, c, location=True, async_op=True))
        return _method_not_allowed(c)

    def _action(self, c: "_Call", rid: Rid) -> Reply:
        """POST {resource id}/{action}: parsed as a collection whose last 'type' is the action name."""
        target = Rid(rid.subscription, rid.resource_group, rid.scope, rid.namespace, rid.pairs[:-1])
        if not target.pairs:
            return _method_not_allowed(c)
        res = self.store.get("resources", target.key)
        if res is None:
            return self._not_found(target)
        hook = hooks.hook_for(target.type)
        out = hook.action(self._hctx(res, c), rid.pairs[-1][0], c.body)
        if out is None:
            return error(404, "InvalidResourceType", f"The action '{rid.pairs[-1][0]}' is not supported on '{target.type}'.")
        status, body = out
        self.store.save()
        return Reply(status, body)

    def _put(self, c: "_Call", rid: Rid, existing: Optional[dict]) -> Reply:
        if not self.registered(rid.subscription, rid.namespace):
            return _not_registered(rid.namespace)
        parent = rid.parent_id
        if parent and self.store.get("resources", parent) is None:
            return error(404, "ParentResourceNotFound",
                         f"Can not perform requested operation on nested resource. Parent resource '{parent}' not found.")
        body = c.body
        if not isinstance(body, dict):
            return error(400, "InvalidRequestContent", "The request content must be a JSON object.")
        bad = contract.body_error(rid.type, body) if self.settings.contract else None
        if bad:
            return Reply(400, bad)
        if rid.type.lower() == ROLE_ASSIGNMENTS and existing is None:
            twin = self._same_assignment(rid, body)
            if twin:
                return error(409, "RoleAssignmentExists", f"The role assignment already exists. The ID of the existing "
                                                          f"role assignment is {twin.rsplit('/', 1)[-1]}.")
        props = body.get("properties", {})
        if props is not None and not isinstance(props, dict):
            return error(400, "InvalidRequestContent", "'properties' must be a JSON object.")
        hook = hooks.hook_for(rid.type)
        now = _now_iso()
        res = {"id": existing["id"] if existing else rid.id, "name": existing["name"] if existing else rid.name,
               "type": existing["type"] if existing else rid.type}
        for k in TOP_LEVEL:
            if k in body:
                res[k] = copy.deepcopy(body[k])
        if isinstance(res.get("location"), str):
            res["location"] = res["location"].lower().replace(" ", "")
        ident = res.get("identity")
        if isinstance(ident, dict) and "SystemAssigned" in str(ident.get("type", "")):
            ident.setdefault("principalId", system_principal(res["id"]))
            ident.setdefault("tenantId", self.settings.tenant_id)
        res["properties"] = copy.deepcopy(props or {})
        accepted = getattr(hook, "accepted", False) and existing is None
        sync = getattr(hook, "synchronous", False) or (getattr(hook, "accepted", False) and existing is not None)
        res["properties"]["provisioningState"] = "Succeeded" if sync else "Accepted"
        created = (existing or {}).get("systemData", {}).get("createdAt", now)
        res["systemData"] = {"createdAt": created, "createdByType": "Application", "lastModifiedAt": now,
                             "lastModifiedByType": "Application"}
        self.store.put("resources", rid.key, res)
        ctx = self._hctx(res, c)
        hook.on_put(ctx)
        self._event("put", res["id"], res["type"], res["properties"]["provisioningState"], c.peer)
        status = 200 if existing else 201
        if sync:
            return Reply(status, self._view(res, c))
        op = self._new_op("put", res["id"], rid.namespace, res.get("location") or self.settings.location, c)
        if accepted:       # 202, no body, Location to poll (the Storage resource provider's create)
            return Reply(202, None, self._op_headers(op, c, location=True, async_op=False))
        return Reply(status, copy.deepcopy(res), self._op_headers(op, c, location=False, async_op=True))

    def _version_error(self, rtype: str, c: "_Call") -> Optional[dict]:
        return contract.version_error(rtype, c.query.get("api-version", "")) if self.settings.contract else None

    def _same_assignment(self, rid: Rid, body: dict) -> Optional[str]:
        """The id of another assignment of the same role to the same principal on the same scope."""
        props = body.get("properties") or {}
        principal = str(props.get("principalId", "")).lower()
        role = str(props.get("roleDefinitionId", "")).rstrip("/").rsplit("/", 1)[-1].lower()
        scope = rid.scope.lower()
        for r in self.store.values("resources"):
            if str(r.get("type", "")).lower() != ROLE_ASSIGNMENTS:
                continue
            p = r.get("properties") or {}
            if r["id"].lower().split("/providers/microsoft.authorization/roleassignments/")[0] == scope \
                    and str(p.get("principalId", "")).lower() == principal \
                    and str(p.get("roleDefinitionId", "")).rstrip("/").rsplit("/", 1)[-1].lower() == role:
                return r["id"]
        return None

    def _view(self, res: dict, c: "_Call") -> dict:
        hook = hooks.hook_for(res["type"])
        before = copy.deepcopy(res)
        hook.on_get(self._hctx(res, c))
        if res != before:
            c.changed = True
        return copy.deepcopy(res)

    def _list_collection(self, c: "_Call", rid: Rid) -> Reply:
        if len(rid.pairs) >= 1:
            want = rid.key
            sub_scope = rid.resource_group is None and rid.scope.lower() == f"/subscriptions/{rid.subscription}".lower()
            out = []
            for r in self.store.values("resources"):
                p = parse(r["id"])
                if p is None:
                    continue
                if p.collection().key == want or (sub_scope and len(rid.pairs) == 1 and p.type.lower() == rid.type.lower()
                                                   and p.subscription.lower() == rid.subscription.lower()):
                    out.append(r)
            if not out and len(rid.pairs) >= 2:
                parent = Rid(rid.subscription, rid.resource_group, rid.scope, rid.namespace, rid.pairs[:-1])
                if self.store.get("resources", parent.key) is None:
                    return self._not_found(parent)
            return self._list(c, [self._view(r, c) for r in sorted(out, key=lambda r: r["id"].lower())])
        return _method_not_allowed(c)

    def _not_found(self, rid: Rid) -> Reply:
        where = f" under resource group '{rid.resource_group}'" if rid.resource_group else ""
        return error(404, "ResourceNotFound", f"The Resource '{rid.type}/{rid.name}'{where} was not found. {NOT_FOUND_FIX}")

    def _hctx(self, res: dict, c: "_Call", op: Optional[dict] = None) -> hooks.HookContext:
        return hooks.HookContext(store=self.store, resource=res, op=op, peer=c.peer if c else "", settings=self.settings)

    # ------------------------------------------------------------------------------------------- lists
    def _list(self, c: "_Call", items: list) -> Reply:
        size = max(1, int(self.settings.page_size))
        try:
            start = int(c.query.get("$skiptoken", "0"))
        except ValueError:
            return error(400, "InvalidSkipToken", f"The $skiptoken '{c.query.get('$skiptoken')}' is not valid.")
        page = items[start:start + size]
        next_link = None
        if start + size < len(items):
            q = {k: v for k, v in c.query.items() if k != "$skiptoken"}
            q["$skiptoken"] = str(start + size)
            next_link = f"{c.base_url}/{'/'.join(c.segs)}?{urlencode(q)}"
        return Reply(200, {"value": page, "nextLink": next_link})

    # ------------------------------------------------------------------------------------------- operations
    def _new_op(self, kind: str, target_id: str, ns: str, location: str, c: "_Call") -> dict:
        sub = segments(target_id)[1]
        op = {"id": str(uuid.uuid4()), "kind": kind, "target": target_id, "sub": sub, "namespace": ns,
              "location": location, "status": "InProgress", "polls": 0, "startTime": _now_iso(),
              "apiVersion": c.query.get("api-version")}
        self.store.put("operations", op["id"], op)
        return op

    def _op_url(self, op: dict, c: "_Call", results: bool) -> str:
        what = "operationResults" if results else "operationStatuses"
        return (f"{c.base_url}/subscriptions/{op['sub']}/providers/{op['namespace']}/locations/{op['location']}/"
                f"{what}/{op['id']}?api-version={op['apiVersion']}")

    def _retry_headers(self) -> dict:
        """ARM's `Retry-After` (whole seconds); a sub-second lab setting goes out as `Retry-After-Ms`, which
        azure-core also honours (clients parse Retry-After as an integer)."""
        text = str(self.settings.retry_after)
        if text.isdigit():
            return {"Retry-After": text}
        return {"Retry-After-Ms": str(max(1, int(round(float(text) * 1000))))}

    def _op_headers(self, op: dict, c: "_Call", location: bool, async_op: bool) -> dict:
        h = self._retry_headers()
        if async_op:
            h["Azure-AsyncOperation"] = self._op_url(op, c, results=False)
        if location:
            h["Location"] = self._op_url(op, c, results=True)
        return h

    def _advance(self, op: dict, c: "_Call") -> None:
        if op["status"] != "InProgress":
            return
        op["polls"] += 1
        c.changed = True
        if op["kind"] == "delete-group":
            if op["polls"] >= 2:
                self._delete_group(op["target"])
                self._finish(op, "Succeeded")
            return
        res = self.store.get("resources", op["target"])
        if res is None:
            self._finish(op, "Succeeded" if op["kind"] == "delete" else "Failed",
                         None if op["kind"] == "delete" else {"code": "ResourceNotFound", "message": "the resource was deleted"})
            return
        hook = hooks.hook_for(res["type"])
        ctx = self._hctx(res, c, op)
        outcome = hook.on_poll(ctx)
        if isinstance(outcome, hooks.Failed):
            err = {"code": outcome.code, "message": outcome.message}
            res.setdefault("properties", {})["provisioningState"] = "Failed"
            self._finish(op, "Failed", err)
        elif outcome == hooks.SUCCEEDED:
            if op["kind"] == "delete":
                self._delete_tree(res["id"])
                hook.on_delete(ctx)
            else:
                res.setdefault("properties", {})["provisioningState"] = "Succeeded"
            self._finish(op, "Succeeded")
        elif op["kind"] == "put" and res.get("properties", {}).get("provisioningState") == "Accepted":
            res["properties"]["provisioningState"] = getattr(hook, "in_progress_state", "Provisioning")

    def _finish(self, op: dict, status: str, err: Optional[dict] = None) -> None:
        op["status"], op["endTime"] = status, _now_iso()
        if err:
            op["error"] = err
        res = self.store.get("resources", op["target"])
        self._event(op["kind"] + "-done", op["target"], (res or {}).get("type", ""), status)

    def _operation(self, c: "_Call", op_id: str, results: bool) -> Reply:
        if c.method != "GET":
            return _method_not_allowed(c)
        op = self.store.get("operations", op_id)
        if op is None:
            return error(404, "OperationNotFound", f"The operation '{op_id}' was not found.")
        self._advance(op, c)
        if results:
            if op["status"] == "InProgress":
                return Reply(202, None, self._op_headers(op, c, location=True, async_op=False))
            if op["status"] == "Failed":
                return Reply(400, {"error": op.get("error") or {"code": "Failed", "message": "the operation failed"}})
            if op["kind"] == "put":
                res = self.store.get("resources", op["target"])
                return Reply(200, self._view(res, c)) if res else Reply(204)
            return Reply(204)
        body = {"id": f"/subscriptions/{op['sub']}/providers/{op['namespace']}/locations/{op['location']}/operationStatuses/{op['id']}",
                "name": op["id"], "resourceId": op["target"], "status": op["status"], "startTime": op["startTime"]}
        if op.get("endTime"):
            body["endTime"] = op["endTime"]
        if op.get("error"):
            body["error"] = op["error"]
        headers = self._retry_headers() if op["status"] == "InProgress" else {}
        return Reply(200, body, headers)

    def _delete_tree(self, rid: str) -> None:
        prefix = rid.lower() + "/"
        for key in [k for k in self.store.data["resources"] if k == rid.lower() or k.startswith(prefix)]:
            self.store.data["resources"].pop(key, None)

    def _delete_group(self, gid: str) -> None:
        prefix = gid.lower() + "/"
        for key in [k for k in self.store.data["resources"] if k.startswith(prefix)]:
            self.store.data["resources"].pop(key, None)
        self.store.delete("groups", gid)


@dataclass
class _Call:
    method: str
    segs: list
    low: list
    query: dict
    body: Any
    base_url: str
    peer: str
    changed: bool = False


def system_principal(resource_id: str) -> str:
    """The object id of a resource's system-assigned identity in the lab (stable per resource id)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, resource_id.lower()))


def _rg_not_found(rg: str) -> Reply:
    return error(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")


def _not_registered(ns: str) -> Reply:
    return error(409, "MissingSubscriptionRegistration",
                 f"The subscription is not registered to use namespace '{ns}'. See https://aka.ms/rps-not-found for "
                 f"how to register subscriptions.")


def _method_not_allowed(c: "_Call") -> Reply:
    return error(405, "MethodNotAllowed", f"The HTTP method '{c.method}' is not supported on '/{'/'.join(c.segs)}'.")
