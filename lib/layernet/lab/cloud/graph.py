"""Microsoft Graph stand-in (graph.microsoft.com): service principal lookup, and nothing else.

What the az CLI asks Graph for in the steps the az executor runs: `az ad sp show --id <app id or object id>`
(the Custom Locations object id, stage 02) and the assignee lookup of `az role assignment create/list`
(stage 03). Served, with Graph's shapes:

- ``GET /v1.0/servicePrincipals?$filter=servicePrincipalNames/any(c:c eq '<name>')`` (also ``appId eq '<id>'``):
  ``{"@odata.context", "value": [...]}``;
- ``GET /v1.0/servicePrincipals/{object id}`` and ``/v1.0/servicePrincipals(appId='<app id>')``; an unknown
  one is 404 ``Request_ResourceNotFound``;
- ``POST /v1.0/directoryObjects/getByIds`` ``{"ids": [...], "types": [...]}``: the known ones among the ids.

The principals it knows are the lab's Entra directory (`entra.Directory`): each client is a service principal
(object id `entra.service_principal_oid`), each managed identity one of type ManagedIdentity (its principal id,
its client id and resource id as names); the system-assigned identities the lab's ARM gave its resources (as on
Azure, creating a resource with one creates its service principal); and the first-party apps the project looks up
(`FIRST_PARTY`: the Custom Locations resource provider, with the lab's object id for it). Anything else is 404 as
Graph answers.
Every call needs a bearer token from the lab's Entra for Graph (401 InvalidAuthenticationToken otherwise).

On a real site only the jump box calls Graph (the operator's az); the plant's levels need it only for Azure RBAC
on a cluster (`graph.microsoft.com`, group arc-optional in data/endpoints.yaml). The jump box is outside the plant:
no allow list applies to it.
"""
from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from typing import Optional

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from layernet.lab.cloud import entra
from layernet.site.arc import CUSTOM_LOCATIONS_APP_ID
from layernet.site.defaults import LAB_CUSTOM_LOCATIONS_OID

HOST = "graph.microsoft.com"
AUDIENCES = ["https://graph.microsoft.com", "https://graph.microsoft.com/", "00000003-0000-0000-c000-000000000000"]
MICROSOFT_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"     # the tenant Microsoft's first-party apps belong to
# first-party apps: app id -> (object id in the lab tenant, display name)
FIRST_PARTY = {CUSTOM_LOCATIONS_APP_ID: (LAB_CUSTOM_LOCATIONS_OID, "Custom Locations RP")}
_FILTER_NAME = re.compile(r"^servicePrincipalNames/any\(\w+:\w+ eq '([^']*)'\)$", re.I)
_FILTER_APPID = re.compile(r"^appId eq '([^']*)'$", re.I)
_BY_APPID = re.compile(r"^servicePrincipals\(appId='([^']*)'\)$", re.I)
_NO_LOCK = contextlib.nullcontext()


def _sp(oid: str, app_id: str, name: str, kind: str, names: list[str], owner: str) -> dict:
    return {"@odata.type": "#microsoft.graph.servicePrincipal", "id": oid, "appId": app_id, "displayName": name,
            "accountEnabled": True, "servicePrincipalType": kind, "servicePrincipalNames": names,
            "appOwnerOrganizationId": owner, "deletedDateTime": None}


def principals(directory: entra.Directory, store=None) -> list[dict]:
    """Every service principal the lab's tenant holds (Graph's servicePrincipal shape); `store`: the lab ARM's
    store, whose resources' system-assigned identities are service principals too."""
    directory.refresh()
    out = [_sp(entra.service_principal_oid(cid), cid, f"layernet lab client {cid[:8]}", "Application", [cid],
               directory.tenant_id) for cid in directory.clients]
    for cid, ident in directory.identities.items():
        res = str(ident.get("resource_id") or "")
        out.append(_sp(ident["principal_id"], cid, res.rsplit("/", 1)[-1] or cid, "ManagedIdentity",
                       [cid] + ([res] if res else []), directory.tenant_id))
    seen = {p["id"].lower() for p in out}
    with (store.lock if store is not None else _NO_LOCK):
        resources = list(store.values("resources")) if store is not None else []
    for res in resources:
        ident = res.get("identity") if isinstance(res.get("identity"), dict) else {}
        oid = str(ident.get("principalId") or "")
        if "SystemAssigned" in str(ident.get("type", "")) and oid and oid.lower() not in seen:
            seen.add(oid.lower())
            cid = entra.identity_client_id(oid)
            out.append(_sp(oid, cid, res.get("name") or cid, "ManagedIdentity", [cid, res["id"]], directory.tenant_id))
    for app_id, (oid, name) in FIRST_PARTY.items():
        out.append(_sp(oid, app_id, name, "Application", [app_id], MICROSOFT_TENANT))
    return out


def _error(status: int, code: str, message: str) -> JSONResponse:
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    rid = str(uuid.uuid4())
    return JSONResponse({"error": {"code": code, "message": message,
                                   "innerError": {"date": now, "request-id": rid, "client-request-id": rid}}},
                        status_code=status)


def _not_found(what: str) -> JSONResponse:
    return _error(404, "Request_ResourceNotFound", f"Resource '{what}' does not exist or one of its queried "
                                                   "reference-property objects are not present.")


def build(directory: entra.Directory, signer: Optional[entra.Signer], store=None) -> Starlette:
    """`signer`: the lab Entra's key, which must have signed the caller's Graph token (None: no check); `store`: the
    lab ARM's store (its resources' system-assigned identities)."""

    def denied(request: Request) -> Optional[JSONResponse]:
        if signer is None:
            return None
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return _error(401, "InvalidAuthenticationToken", "Access token is empty.")
        try:
            claims = signer.verify(auth[7:].strip(), AUDIENCES)
        except Exception as exc:  # noqa: BLE001 - any token problem is a 401 naming it
            return _error(401, "InvalidAuthenticationToken", f"Access token validation failure: {type(exc).__name__}.")
        request.state.log_note = f"appid {claims.get('appid', '')}"
        return None

    def listing(items: list[dict], what: str) -> JSONResponse:
        return JSONResponse({"@odata.context": f"https://{HOST}/v1.0/$metadata#{what}", "value": items})

    async def service_principals(request: Request):
        bad = denied(request)
        if bad:
            return bad
        flt = (request.query_params.get("$filter") or "").strip()
        known = principals(directory, store)
        if not flt:
            return listing(known, "servicePrincipals")
        m = _FILTER_NAME.match(flt)
        if m:
            return listing([p for p in known if any(n.lower() == m.group(1).lower()
                                                    for n in p["servicePrincipalNames"])], "servicePrincipals")
        m = _FILTER_APPID.match(flt)
        if m:
            return listing([p for p in known if p["appId"].lower() == m.group(1).lower()], "servicePrincipals")
        return _error(400, "Request_UnsupportedQuery", f"Unsupported or invalid query filter clause specified: {flt!r}.")

    async def service_principal(request: Request):
        bad = denied(request)
        if bad:
            return bad
        key = request.path_params["key"]
        if not key.lower().startswith("serviceprincipals"):
            return _error(400, "BadRequest", f"Resource not found for the segment '{key.split('/')[0]}'.")
        m = _BY_APPID.match(key)
        if m:
            found = next((p for p in principals(directory, store) if p["appId"].lower() == m.group(1).lower()), None)
        else:
            found = next((p for p in principals(directory, store) if p["id"].lower() == key.removeprefix(
                "servicePrincipals/").lower()), None)
        return JSONResponse(found) if found else _not_found(m.group(1) if m else key.removeprefix("servicePrincipals/"))

    async def by_ids(request: Request):
        bad = denied(request)
        if bad:
            return bad
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, "BadRequest", "Unable to read JSON request payload.")
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return _error(400, "Request_BadRequest", "Invalid value specified for property 'ids' of resource "
                                                     "'DirectoryObjectReferenceList'.")
        types = [str(t).lower() for t in body.get("types") or []]
        if types and "serviceprincipal" not in types:
            return listing([], "directoryObjects")
        want = {i.lower() for i in ids}
        return listing([p for p in principals(directory, store) if p["id"].lower() in want], "directoryObjects")

    return Starlette(routes=[
        Route("/v1.0/servicePrincipals", service_principals),
        Route("/v1.0/directoryObjects/getByIds", by_ids, methods=["POST"]),
        Route("/v1.0/{key:path}", service_principal),
    ])
