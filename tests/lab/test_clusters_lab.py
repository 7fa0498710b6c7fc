"""Every lab level is a K3s-shaped cluster: a real kube-apiserver (kine, controller-manager, scheduler) on the level's
node address at 6443, reached from the jump box through the kubeconfig the lab writes, and a node agent that runs
the pods bound to it. The kube target (what a plant runs) is exercised against these API servers."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from layernet.lab import commands
from layernet.lab.clusters import controlplane, kubeconfig
from layernet.targets.kube import Api, KubeError, KubeTarget

pytestmark = pytest.mark.lab


@pytest.fixture
def site(lab_site):
    return lab_site


@pytest.fixture
def lab(lab_session):
    """The module's lab (tests/lab/conftest.py), clusters included."""
    return lab_session


@pytest.fixture(scope="module")
def kube(lab_site, lab_session):
    clients = {lv.name: kubeconfig.client(lab_site, lv.name) for lv in lab_site.levels}
    return KubeTarget(lab_site, clients=clients, poll_interval=0.2, job_timeout=60, rollout_timeout=60)


def wait(predicate, timeout=30.0, every=0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return predicate()


def test_every_level_is_a_cluster_reached_from_the_jump_box(site, kube):
    for lv in site.levels:
        api = kube.api(lv.name)
        assert api.request("GET", "/readyz", parse=False) == (200, "ok")
        assert api.client.configuration.host == f"https://{lv.node_ip}:6443"
        nodes = api.call("GET", "/api/v1/nodes")["items"]
        assert [n["metadata"]["name"] for n in nodes] == [controlplane.node_name(site, lv.name)]
        st = nodes[0]["status"]
        assert {"type": "InternalIP", "address": str(lv.node_ip)} in st["addresses"]
        assert next(c for c in st["conditions"] if c["type"] == "Ready")["status"] == "True"
    contexts = [c["name"] for c in __import__("yaml").safe_load(kubeconfig.path(site).read_text())["contexts"]]
    assert contexts == [kubeconfig.context_name(site, lv.name) for lv in site.chain] == ["aio-l4", "aio-l3", "aio-l2"]


def test_the_api_listens_on_the_node_address_only(site, lab):
    from layernet.lab import netns

    ns = commands.namespace(site, "level3")
    listening = netns.ns_exec(ns, ["ss", "-Htln"], check=False).stdout
    assert f"{site.level('level3').node_ip}:6443" in listening
    assert "0.0.0.0:6443" not in listening and "*:6443" not in listening


def test_a_probe_job_runs_on_level2_through_the_kube_path(site, lab, kube):
    """The kube target's probe (a ConfigMap and a Job, the pod pulled and run by the node, its log read through the
    API server from the node at 10250) on the lab's level2: the image manifest comes from MCR through level3 and
    level4, the DNS answer is level2's override."""
    from layernet.allowlist import effective_allowlist
    from layernet.matrix import build_matrix

    checks = build_matrix(site, effective_allowlist(site), **lab.probe_inputs())["level2"]
    rows = kube.probe("level2", checks)
    assert len(rows) == len(checks) > 10
    assert [r for r in rows if not r["ok"]] == []
    assert {r["check"] for r in rows} >= {"dns", "tls"}
    log = (commands.level_dir(site, "level3") / "envoy-access.log").read_text()
    pulls = [json.loads(line) for line in log.splitlines() if '"mcr.microsoft.com"' in line]
    assert pulls, "the probe image's pull did not cross level3's proxy"


def test_a_killed_container_restarts_and_is_counted(site, kube):
    api = kube.api("level3")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper", "namespace": "default"},
           "spec": {"restartPolicy": "Always", "containers": [{
               "name": "main", "image": "mcr.microsoft.com/azurelinux/base/python:3.12",
               "command": ["python3", "-c", "import time; time.sleep(3600)"]}]}}
    api.call("POST", "/api/v1/namespaces/default/pods", body=pod)
    path = "/api/v1/namespaces/default/pods/sleeper"

    def running():
        st = (api.get(path) or {}).get("status") or {}
        cs = (st.get("containerStatuses") or [{}])[0]
        return cs if st.get("phase") == "Running" and "running" in (cs.get("state") or {}) else None

    first = wait(running)
    assert first and first["restartCount"] == 0
    os.kill(int(first["containerID"].split("://")[1]), signal.SIGKILL)
    again = wait(lambda: (lambda cs: cs if cs and cs["restartCount"] == 1 else None)(running()))
    assert again, api.get(path)["status"]
    assert again["lastState"]["terminated"]["exitCode"] == -9 or again["lastState"]["terminated"]["exitCode"] == 137
    api.call("DELETE", path)


def test_a_registry_the_chain_refuses_is_an_image_pull_backoff_naming_the_host(site, kube):
    api = kube.api("level2")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "blocked", "namespace": "default"},
           "spec": {"restartPolicy": "Never", "containers": [{
               "name": "main", "image": "ghcr.io/example/python:3.12", "command": ["python3", "-c", "pass"]}]}}
    api.call("POST", "/api/v1/namespaces/default/pods", body=pod)

    def waiting():
        st = (api.get("/api/v1/namespaces/default/pods/blocked") or {}).get("status") or {}
        cs = (st.get("containerStatuses") or [{}])[0]
        return (cs.get("state") or {}).get("waiting")

    state = wait(lambda: (lambda w: w if w and w.get("reason") == "ImagePullBackOff" else None)(waiting()))
    assert state and "ghcr.io:443" in state["message"]
    events = api.call("GET", "/api/v1/namespaces/default/events",
                      query={"fieldSelector": "involvedObject.name=blocked"})["items"]
    assert any(e["reason"] == "Failed" and "ghcr.io:443" in e["message"] for e in events)
    api.call("DELETE", "/api/v1/namespaces/default/pods/blocked")


def test_an_image_the_lab_cannot_run_stays_pending_with_an_event(site, kube):
    api = kube.api("level4")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "strange", "namespace": "default"},
           "spec": {"containers": [{"name": "main", "image": "mcr.microsoft.com/example/unheard-of:1.0"}]}}
    api.call("POST", "/api/v1/namespaces/default/pods", body=pod)
    events = wait(lambda: [e for e in api.call("GET", "/api/v1/namespaces/default/events",
                                               query={"fieldSelector": "involvedObject.name=strange"})["items"]
                           if "cannot run image" in e["message"]])
    assert events
    assert api.get("/api/v1/namespaces/default/pods/strange")["status"]["phase"] == "Pending"
    api.call("DELETE", "/api/v1/namespaces/default/pods/strange")


# ------------------------------------------------------------------ what a plant's cluster refuses, as the user sees it
class Art:
    def __init__(self, level, name, content):
        self.level, self.name, self.content = level, name, content


def test_an_apply_the_api_server_refuses_names_the_field(site, kube):
    bad = ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: broken, namespace: layernet}\n"
           "spec:\n  selector: {matchLabels: {app: broken}}\n  template:\n    metadata: {labels: {app: other}}\n"
           "    spec: {containers: [{name: main, image: mcr.microsoft.com/azurelinux/base/python:3.12}]}\n")
    with pytest.raises(KubeError) as err:
        kube.apply([Art("level4", "envoy-manifests.yaml", bad)])
    assert "spec.template.metadata.labels" in str(err.value) and "422" in str(err.value)


def test_rbac_forbidden_names_the_verb_the_resource_and_the_namespace(site, kube, tmp_path):
    from kubernetes import config as k8s_config

    from layernet.lab import pki

    d = controlplane.cluster_dir(site, "level3")
    cert, key = pki.issue_cert(commands.state_dir(site) / "ca", tmp_path, "viewer", "plant-viewer", server=False,
                               client=True)
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(controlplane.kubeconfig_text(controlplane.api_url(site, "level3"), commands.ca_cert_path(site),
                                                cert, key, "viewer"))
    limited = Api(k8s_config.new_client_from_config(config_file=str(cfg)))
    with pytest.raises(KubeError) as err:
        limited.call("POST", "/api/v1/namespaces/kube-system/configmaps",
                     body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    text = str(err.value)
    assert "403" in text and '"plant-viewer" cannot create resource "configmaps"' in text and "kube-system" in text
    assert d.exists()
