"""The cloud's apps in a real lab (prefix `cc`, address plan 10.66.0.0/16): the real SDK clients run inside
level2, resolve the real names through level2's DNS, cross Envoy at level3 and level4, and the apps see the
egress node as their peer; a heartbeat through that chain makes the connected cluster Connected."""
from __future__ import annotations

import json
import os
import time
import subprocess
import sys
from pathlib import Path

import pytest

import labs
from layernet.lab import layout
from layernet.lab import commands

from layernet.lab.cloud import reqlog

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.lab      # builds a lab: make test's lab pass, under the lab lock
PREFIX = labs.plan(__file__).prefix

CLIENT = r"""
import json, os, sys
import requests
from azure.identity import ClientSecretCredential
from layernet.azure.clients import Arm, as_dict, pick
ca, tenant, region = sys.argv[1:4]
cred = ClientSecretCredential(tenant, os.environ["LAB_CLIENT_ID"], os.environ["LAB_CLIENT_SECRET"], connection_verify=ca)
token = cred.get_token("https://management.azure.com/.default").token
subs = requests.get("https://management.azure.com/subscriptions?api-version=2022-12-01", verify=ca, timeout=10,
                    headers={"Authorization": "Bearer " + token}).json()["value"]
sub = subs[0]["subscriptionId"]                                   # the lab's subscription, whatever the site says
arm = Arm(sub, cred, verify=ca, extra={"polling_interval": 0.1})
rc = arm.resources()
rc.providers.register("Microsoft.Kubernetes")
rc.resource_groups.create_or_update("rg-cc", {"location": region})
ck = arm.connected_kubernetes()
cc = as_dict(ck.connected_cluster.begin_create_or_replace("rg-cc", "level2", {"location": region,
     "identity": {"type": "SystemAssigned"}, "properties": {"agentPublicKeyCertificate": "x", "distribution": "k3s"}}).result())
before = pick(cc, "properties", "connectivityStatus")
hb = requests.post(f"https://{region}.dp.kubernetesconfiguration.azure.com/azure-arc-k8sagents/heartbeat",
                   json={"clusterResourceId": cc["id"], "agentVersion": "1.0.0"}, verify=ca, timeout=10).json()
after = pick(as_dict(ck.connected_cluster.get("rg-cc", "level2")), "properties", "connectivityStatus")
print(json.dumps({"before": before, "heartbeat": hb, "after": after}))
"""


@pytest.fixture(scope="module")
def site():
    return labs.site(__file__)         # the cloud stand-ins and the level chain; no level cluster is used here


@pytest.fixture(scope="module")
def lab(site):
    with labs.running(site) as target:
        yield target


def test_sdk_in_level2_reaches_the_apps_through_the_chain_and_they_see_the_egress_node(lab, site):
    state = commands.state_dir(site) / "cloud"
    entra = json.loads((state / "entra.json").read_text())
    cid, secret = next(iter(entra["clients"].items()))
    env = dict(os.environ, LAB_CLIENT_ID=cid, LAB_CLIENT_SECRET=secret)
    ns = layout.namespace(site, "level2")
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, str(layout.ca_cert_path(site)),
                           entra["tenant_id"], site.azure.location], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert secret not in proc.stdout + proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    egress = str(site.egress.node_ip)
    assert out["before"] == "Connecting" and out["after"] == "Connected", out
    assert out["heartbeat"]["peer"].split(":")[0] == egress
    for app in ("entra", "arm", "dataplane"):
        rows = reqlog.read(state / "requests" / f"{app}.jsonl")
        assert rows and {r["peer"].split(":")[0] for r in rows} == {egress}, (app, rows[-3:])
    arm_rows = reqlog.read(state / "requests" / "arm.jsonl")
    assert any(r["method"] == "PUT" and r["status"] == 201 and r["path"].endswith("/connectedClusters/level2") for r in arm_rows)
    # the proxies logged the same names: the calls crossed level3 and level4
    # (a proxy logs a connection when it closes and flushes its log every 200 ms: give it a moment)
    for level in ("level3", "level4"):
        deadline = time.monotonic() + 5
        while True:
            text = "\n".join(lab.logs(level))
            if ("management.azure.com" in text and "login.microsoftonline.com" in text) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert "management.azure.com" in text and "login.microsoftonline.com" in text, level
