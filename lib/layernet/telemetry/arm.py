"""Stage 04's ARM client: reads and writes its records by id through the generic resource client, finds the AIO
extension's identity, and observes the live state the plan is made from (runs where the target makes its Azure
calls: the lab's jump box, a real site's machine)."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from layernet import context
from layernet.azure import aio_sdk, eventhubs_access as access
from layernet.azure.aio import INSTANCE_EXTENSION
from layernet.azure.clients import Arm, as_dict, pick
from layernet.telemetry.records import ADOPTED, SENDER_ACTION, adoption_notes, desired, receiver_scope

PROVIDERS = ("Microsoft.EventHub", "Microsoft.DeviceRegistry", "Microsoft.IoTOperations")


class Live:
    """Reads and writes records by id through the generic resource client (one client per thread)."""

    def __init__(self, arm: Arm):
        self.arm = arm
        self._local = threading.local()

    @property
    def client(self):
        if not hasattr(self._local, "c"):
            self._local.c = self.arm.resources()
        return self._local.c

    def get(self, rid: str, api: str) -> Optional[dict]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return as_dict(self.client.resources.get_by_id(rid, api_version=api))
        except ResourceNotFoundError:
            return None

    def put(self, rid: str, api: str, body: dict) -> dict:
        return as_dict(self.client.resources.begin_create_or_update_by_id(rid, api_version=api, parameters=body).result())

    def extension_of_type(self, site, level: str, ext_type: str) -> Optional[dict]:
        """The level's cluster extension of `ext_type` (found by type, never by name), or None."""
        from azure.core.exceptions import ResourceNotFoundError

        if not hasattr(self._local, "ext"):
            self._local.ext = self.arm.extensions()
        cluster = site.aio.for_level(site, level).cluster
        try:
            exts = [as_dict(e) for e in self._local.ext.extensions.list(
                site.azure.resource_group, "Microsoft.Kubernetes", "connectedClusters", cluster)]
        except ResourceNotFoundError:
            return None
        return next((e for e in exts if (pick(e, "properties", "extensionType") or "").lower() == ext_type), None)


def principals(site, live: Live) -> dict[str, str]:
    """The AIO extension's managed identity per level that sends to Event Hubs (read from ARM)."""
    out = {}
    for lv in site.chain:
        if any(f.level == lv.name and f.destination == "eventhubs" for f in site.telemetry.dataflows):
            ext = live.extension_of_type(site, lv.name, INSTANCE_EXTENSION) or {}
            p = pick(ext, "identity", "principalId")
            if p:
                out[lv.name] = p
    return out


def observe(site, arm: Arm) -> dict:
    """{"principals", "resources": {id: {"state", "missing"} | None}, "listeners": {id: live}, "running"}.
    `site` carries the subscription `arm` talks to (the ids of the records name it)."""
    live = Live(arm)
    providers = {}
    for ns in PROVIDERS:
        try:
            providers[ns] = pick(as_dict(live.client.providers.get(ns)), "registrationState") or "NotRegistered"
        except Exception:  # noqa: BLE001 - an unknown namespace reads as not registered
            providers[ns] = "NotRegistered"
    found = principals(site, live)
    operator = access.operator(arm) if receiver_scope(site) else None
    wanted = desired(site, found, operator)
    # the brokers' other listeners (stage 03's), to see whether a port is already served
    others = {}
    for r in wanted:
        if r["action"] == "create broker listener":
            base = r["id"].rsplit("/", 1)[0]
            for name in aio_sdk.LISTENERS:
                others[f"{base}/{name}"] = r["apiVersion"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda r: live.get(r["id"], r["apiVersion"]), wanted))
        listeners = dict(zip(others, pool.map(lambda i: live.get(i, others[i]), others)))
    out = {}
    for r, have in zip(wanted, got):
        if have is None:
            out[r["id"]] = None
            continue
        if r["action"] in ADOPTED:      # an existing namespace or hub is adopted, compared, never changed
            out[r["id"]] = {"state": pick(have, "properties", "provisioningState") or "unknown", "missing": [],
                            "adopted": adoption_notes(r, have)}
            continue
        want = json.loads(json.dumps(r["body"]))
        if r["action"] == SENDER_ACTION and found.get(r["level"]) is None:
            want["properties"].pop("principalId", None)
        out[r["id"]] = {"state": pick(have, "properties", "provisioningState") or "unknown",
                        "missing": aio_sdk.differences(want, have)}
        if r["action"] == "create broker listener":
            listeners[r["id"]] = have
    return {"providers": providers, "principals": found, "operator": operator, "resources": out,
            "listeners": {k: pick(v, "properties", "ports") for k, v in listeners.items() if v},
            "running": context.of(site).cluster.telemetry_running()}
