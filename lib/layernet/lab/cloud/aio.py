"""Stage 03's behaviour in the lab cloud: cluster extensions that finish only when the cluster says so, and the
blob service a storage account comes with.

- ``Microsoft.KubernetesConfiguration/extensions``: after the PUT the extension is ``Creating`` with the status
  "Installing"; it turns ``Succeeded`` when the level's extension stand-in (lab/aioext.py) reports it installed,
  ``Failed`` (ARM error ``ExtensionOperationFailed``, the stand-in's message: which image, which host refused)
  when it reports a failure, and ``Failed`` (``ExtensionOperationTimedOut``) when no report came within
  `NO_REPORT_AFTER` seconds. The stand-in reports from inside its level through the proxy chain, as the Arc
  extension manager does, to the configuration data plane:
  ``POST https://{region}.dp.kubernetesconfiguration.azure.com/azure-arc-k8sagents/extensionStatus``
  ``{"extensionResourceId", "status": "Installing" | "Installed" | "Failed", "message", "images"}``.
- ``Microsoft.Storage/storageAccounts``: a new account gets its ``blobServices/default`` child, so containers
  (``.../blobServices/default/containers/{name}``) find their parent, as on Azure; its create answers 202 with a
  ``Location`` to poll (the Storage provider's contract: az storage account create accepts 200 or 202 only).
"""
from __future__ import annotations

import json
import threading
import time

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from layernet import clock
from layernet.lab.cloud.arm import hooks

EXTENSIONS = "Microsoft.KubernetesConfiguration/extensions"
STORAGE_ACCOUNTS = "Microsoft.Storage/storageAccounts"
STATUS_PATH = "/azure-arc-k8sagents/extensionStatus"
NO_REPORT_AFTER = 30.0
REPORTS: dict[str, dict] = {}           # extension id (lower case) -> the latest report
_LOCK = threading.Lock()


def _started(op: dict) -> float:
    try:
        return clock.parse(op.get("startTime", "")).timestamp()
    except ValueError:
        return time.time()


def _status(report: dict) -> list[dict]:
    level = {"Installed": "Information", "Installing": "Information", "Failed": "Error"}[report["status"]]
    return [{"code": report["status"], "displayStatus": report["status"], "level": level,
             "message": report.get("message", ""), "time": clock.iso(report["time"])}]


def report_for(ext_id: str) -> dict | None:
    with _LOCK:
        return dict(REPORTS[ext_id.lower()]) if ext_id.lower() in REPORTS else None


class ExtensionHook(hooks.Hook):
    """Creating (Installing) until the cluster reports; see the module docstring."""
    in_progress_state = "Creating"

    def __init__(self, no_report_after: float = NO_REPORT_AFTER):
        self.no_report_after = no_report_after

    def on_put(self, ctx: hooks.HookContext) -> None:
        p = ctx.resource.setdefault("properties", {})
        p["statuses"] = [{"code": "Installing", "displayStatus": "Installing", "level": "Information",
                          "message": "waiting for the cluster's extension manager", "time": clock.iso(time.time())}]
        with _LOCK:     # a new PUT starts a new installation: an older report does not count for it
            old = REPORTS.get(ctx.resource["id"].lower())
            if old and old["status"] != "Installing" and old["time"] < time.time() - 0.5:
                REPORTS.pop(ctx.resource["id"].lower(), None)

    def on_poll(self, ctx: hooks.HookContext):
        rep = report_for(ctx.resource["id"])
        p = ctx.resource.setdefault("properties", {})
        if rep:
            p["statuses"] = _status(rep)
            if rep["status"] == "Installed":
                return hooks.SUCCEEDED
            if rep["status"] == "Failed":
                return hooks.Failed("ExtensionOperationFailed", rep.get("message") or "the installation failed")
        waited = time.time() - _started(ctx.op or {})
        if waited > self.no_report_after:
            return hooks.Failed("ExtensionOperationTimedOut",
                                f"no installation status from the cluster within {self.no_report_after:.0f} s "
                                "(its extension manager cannot reach the configuration data plane)")
        return hooks.IN_PROGRESS

    def on_get(self, ctx: hooks.HookContext) -> None:
        rep = report_for(ctx.resource["id"])
        if rep:
            ctx.resource.setdefault("properties", {})["statuses"] = _status(rep)


class StorageAccountHook(hooks.Hook):
    accepted = True

    def on_put(self, ctx: hooks.HookContext) -> None:
        child = ctx.resource["id"] + "/blobServices/default"
        if ctx.store.get("resources", child) is None:
            ctx.store.put("resources", child, {"id": child, "name": "default",
                                               "type": "Microsoft.Storage/storageAccounts/blobServices",
                                               "properties": {"provisioningState": "Succeeded"}})


def register_hooks() -> None:
    for rtype, hook in ((EXTENSIONS, ExtensionHook()), (STORAGE_ACCOUNTS, StorageAccountHook())):
        if hooks.hook_for(rtype) is hooks.DEFAULT:
            hooks.register(rtype, hook)


def with_extension_status(app, store):
    """Add the extension status report to the data plane app (`app`, a Starlette app)."""

    async def status(request: Request):
        try:
            body = json.loads(await request.body() or b"{}")
            ext_id = str(body["extensionResourceId"])
            state = str(body["status"])
            if state not in ("Installing", "Installed", "Failed"):
                raise ValueError(state)
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": {"code": "BadRequest", "message":
                                           "expected JSON {extensionResourceId, status: Installing|Installed|Failed, "
                                           "message?, images?}"}}, status_code=400)
        rep = {"status": state, "message": str(body.get("message") or "")[:2000], "time": time.time(),
               "images": body.get("images") or [], "peer": getattr(request.state, "peer", "")}
        with _LOCK:
            REPORTS[ext_id.lower()] = rep
        provisioning = None
        with store.lock:
            res = store.get("resources", ext_id)
            if res is not None:
                res.setdefault("properties", {})["statuses"] = _status(rep)
                provisioning = res["properties"].get("provisioningState")
                store.save()
        return JSONResponse({"extensionResourceId": ext_id, "peer": rep["peer"], "provisioningState": provisioning})

    app.router.routes.insert(0, Route(STATUS_PATH, status, methods=["POST"]))
    return app
