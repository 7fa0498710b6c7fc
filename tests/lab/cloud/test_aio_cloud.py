"""Stage 03's sdk executor against the lab cloud on loopback: the real SDK clients (iotoperations, deviceregistry,
extensions, generic resources) PUT every resource, the extensions hook waits for the cluster's report, and the
same verification code reads the states back."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests
from azure.identity import ClientSecretCredential

from cloud_helpers import REGION, SUB, TENANT
from layernet import apiversions
from layernet.azure import aio as az_aio
from layernet.azure import aio_sdk
from layernet.azure.clients import Arm, as_dict, pick
from layernet.lab.cloud import aio as cloud_aio
from layernet.lab.cloud.arm import hooks
from layernet.site import load_site
from layernet.plan import Plan

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
STATUS_URL = f"https://{REGION}.dp.kubernetesconfiguration.azure.com{cloud_aio.STATUS_PATH}"


def make_site(*extra: str):
    given = {e.split("=", 1)[0] for e in extra}
    defaults = [d for d in (f"azure.location={REGION}", "azure.resource_group=rg-aio", "lab.prefix=ac")
                if d.split("=", 1)[0] not in given]     # a field is overridden once (the site loader refuses twice)
    return load_site(ROOT / "params" / "lab.yaml", defaults + list(extra))


@pytest.fixture(scope="module")
def arm(lcloud):
    cid, secret = lcloud.client
    cred = ClientSecretCredential(TENANT, cid, secret, connection_verify=str(lcloud.ca))
    a = Arm(SUB, cred, verify=str(lcloud.ca), extra={"polling_interval": 0.05})
    res = a.resources()
    res.resource_groups.create_or_update("rg-aio", {"location": REGION})
    res.providers.register("Microsoft.Kubernetes")
    for lv in ("aio-l4", "aio-l3", "aio-l2"):
        res.resources.begin_create_or_update_by_id(
            f"/subscriptions/{SUB}/resourceGroups/rg-aio/providers/Microsoft.Kubernetes/connectedClusters/{lv}",
            {"location": REGION, "identity": {"type": "SystemAssigned"}, "properties": {"agentPublicKeyCertificate": ""}},
            api_version=apiversions.api_version("Microsoft.Kubernetes/connectedClusters")).result()
    return a


class Cluster:
    """What a level's extension manager does, reduced to its report: Installed, or Failed with a message."""

    def __init__(self, ca: str, fail: dict | None = None, silent: set | None = None):
        self.ca, self.fail, self.silent = ca, fail or {}, silent or set()
        self.calls: list[tuple[str, str]] = []
        self.listeners: dict[str, list] = {}

    def on_extension(self, level: str, cluster_id: str, ext: dict) -> str:
        self.calls.append((level, ext["type"]))
        if level in self.silent:
            return "nothing reports"

        def report():
            time.sleep(0.1)
            msg = self.fail.get(level)
            body = {"extensionResourceId": ext["id"], "status": "Failed" if msg else "Installed", "message": msg or ""}
            requests.post(STATUS_URL, json=body, verify=self.ca, timeout=5).raise_for_status()

        threading.Thread(target=report, daemon=True).start()
        return "reported"

    def on_listeners(self, level: str, listeners: list, authentications: list) -> str:
        self.listeners[level] = (listeners, authentications)
        return f"{len(listeners)} listener(s)"


def plan_of(site, arm) -> Plan:
    state = aio_sdk.observe(site, arm)
    return Plan("aio", aio_sdk.steps(site, arm, state), executor="sdk")


def test_every_resource_is_put_through_the_sdk_then_the_second_plan_is_empty(lcloud, arm, tmp_path):
    site = make_site()
    p = plan_of(site, arm)
    kinds = {(s.level, s.action) for s in p.changes}
    assert ("site", "register provider") in kinds
    for lv in ("level4", "level3", "level2"):
        for action in ("create container", "create schema registry", "create ADR namespace",
                       "assign Storage Blob Data Contributor", "init: extension microsoft.certmanagement",
                       "init: extension microsoft.azure.secretstore", "create: extension microsoft.iotoperations",
                       "create: custom location", "create: instance", "create: broker", "create: broker authentication",
                       "create: broker listener", "create: dataflow profile", "create: dataflow endpoint",
                       "create: registry endpoint"):
            assert (lv, action) in kinds, (lv, action)
    # one storage account named by every level: created once, by the egress level
    assert [(s.level) for s in p.changes if s.action == "create storage account"] == ["level4"]

    cluster = Cluster(str(lcloud.ca))
    ex = aio_sdk.SdkExecutor(site, arm, on_extension=cluster.on_extension, on_listeners=cluster.on_listeners,
                             record=tmp_path)
    lines: list[str] = []
    rows = ex.run_all(p.changes, lines.append)
    assert [r for r in rows if not r["ok"]] == [], rows
    assert len(rows) == len(p.changes)
    assert {r["state"] for r in rows if r["level"] != "site"} == {"Succeeded"}
    assert {r["state"] for r in rows if r["level"] == "site"} == {"Registered"}
    assert sorted(cluster.calls) == sorted((lv, t) for lv in ("level4", "level3", "level2")
                                           for t in aio_sdk.EXTENSIONS)
    # the stand-in gets the listeners and authentications as ARM holds them: both listeners, with their ports and
    # what authenticates their clients
    ports = __import__("layernet.lab.aioext", fromlist=["x"]).listener_ports(*cluster.listeners["level2"])
    assert [(p["port"], p["auth"]) for p in ports] == [(1883, "anonymous"), (18883, "unmodelled")]

    # what was PUT is what ARM holds: the broker sizing from the site, the role with the registry's principal
    io = arm.iotoperations()
    broker = as_dict(io.broker.get("rg-aio", "aio-l3-ops", "default"))
    assert pick(broker, "properties", "cardinality", "backendChain", "redundancyFactor") == 2
    assert pick(broker, "properties", "memoryProfile") == "Low"
    reg = as_dict(arm.resources().resources.get_by_id(
        f"/subscriptions/{SUB}/resourceGroups/rg-aio/providers/Microsoft.DeviceRegistry/schemaRegistries/aio-l2-sr",
        api_version=apiversions.api_version("Microsoft.DeviceRegistry/schemaRegistries")))
    role = json.loads(next((tmp_path / "resources" / "level2").glob("*roleAssignments*")).read_text())
    assert role["request"]["properties"]["principalId"] == reg["identity"]["principalId"]
    assert role["response"]["properties"]["provisioningState"] == "Succeeded"

    again = plan_of(site, arm)
    assert again.empty, [(s.level, s.action, s.reason) for s in again.changes]

    rows = az_aio.verify_aio(site, arm)
    assert rows and all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
    assert {r["check"] for r in rows} >= {"instance", "broker", "listener default", "listener default-insecure",
                                          "extension microsoft.iotoperations"}


def test_a_changed_field_is_a_change_and_only_that_resource(lcloud, arm):
    site = make_site("aio.levels={level3: {broker: {memory_profile: Medium}}}")
    p = plan_of(site, arm)
    assert [(s.level, s.action) for s in p.changes] == [("level3", "create: broker")]
    assert "properties.memoryProfile" in p.changes[0].reason


def test_a_failed_install_fails_that_level_with_the_clusters_reason_and_the_others_go_on(lcloud, arm, tmp_path):
    site = make_site("azure.resource_group=rg-aio-f")
    arm.resources().resource_groups.create_or_update("rg-aio-f", {"location": REGION})
    for lv in ("aio-l4", "aio-l3", "aio-l2"):
        arm.resources().resources.begin_create_or_update_by_id(
            f"/subscriptions/{SUB}/resourceGroups/rg-aio-f/providers/Microsoft.Kubernetes/connectedClusters/{lv}",
            {"location": REGION, "identity": {"type": "SystemAssigned"}, "properties": {"agentPublicKeyCertificate": ""}},
            api_version=apiversions.api_version("Microsoft.Kubernetes/connectedClusters")).result()
    why = "image pull failed for mcr.microsoft.com/azureiotoperations/aio-operator:1.2.36: mcr.microsoft.com:443 (reset)"
    cluster = Cluster(str(lcloud.ca), fail={"level3": why})
    p = plan_of(site, arm)
    rows = aio_sdk.SdkExecutor(site, arm, on_extension=cluster.on_extension).run_all(p.changes, lambda _: None)
    bad = [r for r in rows if not r["ok"]]
    assert {r["level"] for r in bad} == {"level3"}
    first = next(r for r in bad if r["attempts"])
    assert first["action"].startswith("init: extension") and "mcr.microsoft.com:443" in first["output"]
    assert all(r["output"].startswith("not run") for r in bad if r["action"] == "create: instance")
    rows = az_aio.verify_aio(site, arm)
    l3 = {r["check"]: r for r in rows if r["level"] == "level3"}
    assert l3["extension microsoft.certmanagement"]["observed"] == "Failed"
    assert "mcr.microsoft.com:443" in l3["extension microsoft.certmanagement"]["hint"]
    assert l3["instance"]["observed"] == "absent"
    assert all(r["ok"] for r in rows if r["level"] != "level3")


def test_an_extension_without_any_report_times_out_as_failed(lcloud, arm):
    old = hooks.register(cloud_aio.EXTENSIONS, cloud_aio.ExtensionHook(no_report_after=0.5))
    try:
        ext = aio_sdk.SdkClients(arm, "rg-aio").ext
        body = {"properties": {"extensionType": "microsoft.certmanagement", "autoUpgradeMinorVersion": False}}
        poller = ext.extensions.begin_create("rg-aio", "Microsoft.Kubernetes", "connectedClusters", "aio-l4",
                                             "silent-one", body)
        with pytest.raises(Exception) as exc:
            poller.result()
        assert "ExtensionOperationTimedOut" in str(exc.value)
        got = as_dict(ext.extensions.get("rg-aio", "Microsoft.Kubernetes", "connectedClusters", "aio-l4", "silent-one"))
        assert pick(got, "properties", "provisioningState") == "Failed"
    finally:
        hooks.register(cloud_aio.EXTENSIONS, old)


def test_status_reports_are_checked(lcloud):
    r = requests.post(STATUS_URL, json={"extensionResourceId": "x", "status": "Done"}, verify=str(lcloud.ca), timeout=5)
    assert r.status_code == 400 and "Installing|Installed|Failed" in r.text


def test_apply_refuses_when_the_live_state_changed_since_the_plan(lcloud, arm):
    from layernet.errors import DriftError
    from layernet.stages import aio

    site = make_site()
    p = aio.plan(site, arm=arm)                       # the sdk executor reads ARM in this process when given an Arm
    assert p.executor == "sdk" and p.observed
    io = arm.iotoperations()
    broker = as_dict(io.broker.get("rg-aio", "aio-l4-ops", "default"))
    changed = {"extendedLocation": broker["extendedLocation"],
               "properties": {**broker["properties"], "memoryProfile": "High"}}
    changed["properties"].pop("provisioningState", None)
    io.broker.begin_create_or_update("rg-aio", "aio-l4-ops", "default", changed).result()
    try:
        with pytest.raises(DriftError, match="changed since the plan"):
            aio.apply(p, site, arm=arm, progress=lambda _: None)
        again = aio.plan(site, arm=arm)
        assert [(s.level, s.action) for s in again.changes] == [("level4", "create: broker")], [(s.action, s.reason) for s in again.changes]
    finally:
        changed["properties"]["memoryProfile"] = "Low"
        io.broker.begin_create_or_update("rg-aio", "aio-l4-ops", "default", changed).result()
