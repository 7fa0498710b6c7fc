"""Every lab level is a K3s-shaped cluster: a real kube-apiserver (kine, controller-manager, scheduler) on the level's
node address at 6443, reached from the jump box through the kubeconfig the lab writes, and a node agent that runs
the pods bound to it. The kube target (what a plant runs) is exercised against these API servers."""
from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from layernet.lab import layout
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
    contexts = {lv.name: kubeconfig.context_name(lab_site, lv.name) for lv in lab_site.levels}
    return KubeTarget(lab_site, clients=clients, poll_interval=0.2, job_timeout=60, rollout_timeout=60,
                      contexts=contexts)


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

    ns = layout.namespace(site, "level3")
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
    pulls = [json.loads(line) for line in lab.logs("level3") if '"mcr.microsoft.com"' in line]   # the Envoy pod's log
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
    text = str(err.value)
    assert text.startswith("level4: layernet/Deployment/broken: the API server refused PATCH (server-side apply) "
                           "(HTTP 422 Invalid): spec.template.metadata.labels: "), text
    assert text.endswith("fix these fields in the rendered manifest (or the site), then plan again")


def test_rbac_forbidden_names_the_verb_the_resource_and_the_namespace(site, kube, tmp_path):
    from kubernetes import config as k8s_config

    from layernet.lab import pki

    d = controlplane.cluster_dir(site, "level3")
    cert, key = pki.issue_cert(commands.state_dir(site) / "ca", tmp_path, "viewer", "plant-viewer", server=False,
                               client=True)
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(controlplane.kubeconfig_text(controlplane.api_url(site, "level3"), layout.ca_cert_path(site),
                                                cert, key, "viewer"))
    limited = Api(k8s_config.new_client_from_config(config_file=str(cfg)))
    with pytest.raises(KubeError) as err:
        limited.call("POST", "/api/v1/namespaces/kube-system/configmaps",
                     body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    text = str(err.value)
    assert "403" in text and '"plant-viewer" cannot create resource "configmaps"' in text and "kube-system" in text
    assert d.exists()

    # the same user with the cluster's `view` role in default: the kube target plans (reading is allowed; the dry
    # run that looks for immutable fields is not, so the change stays an update) and apply names what is missing
    admin = kube.api("level3")
    cm_path = "/api/v1/namespaces/default/configmaps/viewer-demo"
    rb_path = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/plant-viewer-view"
    admin.call("POST", "/api/v1/namespaces/default/configmaps", body={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "viewer-demo"}, "data": {"v": "1"}})
    admin.call("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", body={
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "plant-viewer-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "plant-viewer"}]})
    try:
        assert wait(lambda: limited.request("GET", cm_path)[0] == 200, timeout=10)
        as_viewer = KubeTarget(site, clients={"level3": limited.client}, contexts=kube._contexts, poll_interval=0.2)
        arts = [Art("level3", "envoy-manifests.yaml", _docs(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "viewer-demo", "namespace": "default"},
             "data": {"v": "2"}}))]
        planned = as_viewer.plan(arts)
        assert [(c.target, c.action) for c in planned.steps] == [("default/ConfigMap/viewer-demo", "update")]
        with pytest.raises(KubeError) as err:
            as_viewer.apply(arts, plan=planned)
        text = str(err.value)
        assert text.startswith("level3: default/ConfigMap/viewer-demo: forbidden (HTTP 403): "), text
        assert 'User "plant-viewer" cannot patch resource "configmaps"' in text and 'namespace "default"' in text
        assert "the kubeconfig's user for context aio-l3 needs that permission" in text
        assert admin.get(cm_path)["data"] == {"v": "1"}
    finally:
        admin.request("DELETE", rb_path)
        admin.request("DELETE", cm_path)


def _docs(*docs: dict) -> str:
    import yaml

    return yaml.safe_dump_all(list(docs), sort_keys=False)


def test_a_missing_namespace_is_created_first_and_a_kind_without_its_crd_is_named(site, kube):
    """A manifest in a namespace the cluster does not have: the plan creates the namespace first and apply does it.
    A kind whose CRD is not installed (AIO's Broker on a cluster without AIO): the stage's plan fails with the
    kind, its apiVersion and the fix, before anything changes, and a notebook shows the message, not a traceback."""
    from layernet.stages import infrastructure as infra

    api = kube.api("level2")
    assert api.get("/api/v1/namespaces/plant-extra") is None
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "plant-extra"},
          "data": {"mode": "plant"}}
    arts = [Art("level2", "envoy-manifests.yaml", _docs(cm))]
    try:
        assert [(c.target, c.action) for c in infra.plan(kube, arts).steps] == [
            ("Namespace/plant-extra", "create"), ("plant-extra/ConfigMap/settings", "create")]
        infra.apply(kube, arts, dry_run=False, planned=infra.plan(kube, arts))
        assert api.get("/api/v1/namespaces/plant-extra")["status"]["phase"] == "Active"
        assert api.get("/api/v1/namespaces/plant-extra/configmaps/settings")["data"] == {"mode": "plant"}

        broker = {"apiVersion": "mqttbroker.iot.azure.com/v1", "kind": "Broker",
                  "metadata": {"name": "default", "namespace": "plant-extra"}, "spec": {"memoryProfile": "Low"}}
        with pytest.raises(KubeError) as err:
            infra.plan(kube, [Art("level2", "envoy-manifests.yaml", _docs(cm, broker))])
        text = str(err.value)
        assert text.startswith("level2: plant-extra/Broker/default: kind Broker (apiVersion mqttbroker.iot.azure.com/v1) "
                               "is not installed"), text
        assert "install Azure IoT Operations on this cluster first" in text and "404" not in text
        assert "(check: kubectl --context aio-l2 api-resources --api-group=mqttbroker.iot.azure.com)" in text
        assert err.value._render_traceback_() == [f"KubeError: {text}"]     # what the stage's notebook shows
    finally:
        api.request("DELETE", "/api/v1/namespaces/plant-extra")


def test_an_immutable_field_change_is_a_replace_in_the_plan_and_in_apply(site, kube, capsys):
    """A Deployment's selector, a Service's clusterIP and a Job's template cannot change in place: the plan says
    `replace` naming the field (the API server's dry run says so), apply deletes each (the old pods go first), waits,
    and creates it again; the next plan is empty."""
    api = kube.api("level4")
    image = "mcr.microsoft.com/azurelinux/base/python:3.12"

    def objects(version: str, cluster_ip: str, code: str) -> list:
        labels = {"app": f"mover-{version}"}
        return [Art("level4", "envoy-manifests.yaml", _docs(
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mover", "namespace": "replace-demo"},
             "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
                 "containers": [{"name": "main", "image": image,
                                 "command": ["python3", "-c", "import time; time.sleep(3600)"]}]}}}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mover", "namespace": "replace-demo"},
             "spec": {"clusterIP": cluster_ip, "selector": labels, "ports": [{"port": 8080}]}},
            {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once", "namespace": "replace-demo"},
             "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{
                 "name": "main", "image": image, "command": ["python3", "-c", code]}]}}}}))]

    dep_path = "/apis/apps/v1/namespaces/replace-demo/deployments/mover"
    try:
        kube.apply(objects("v1", "10.43.200.10", "pass"))
        old_uid = api.get(dep_path)["metadata"]["uid"]
        arts = objects("v2", "10.43.200.11", "print('v2')")
        from layernet.stages import infrastructure as infra

        capsys.readouterr()
        reviewed = infra.plan(kube, arts)                               # the stage's plan step
        planned = {c.target: c for c in reviewed.steps}
        assert "plan: 3 change(s) of 4 object(s), 3 to be replaced (deleted and created" in capsys.readouterr().out
        assert {k: c.action for k, c in planned.items()} == {
            "Namespace/replace-demo": "unchanged", "replace-demo/Deployment/mover": "replace",
            "replace-demo/Service/mover": "replace", "replace-demo/Job/once": "replace"}
        assert planned["replace-demo/Deployment/mover"].detail.startswith(
            "# replace: spec.selector cannot change in place (the API server's dry run: field is immutable); ")
        assert planned["replace-demo/Service/mover"].detail.startswith(
            "# replace: spec.clusterIPs[0] cannot change in place (the API server's dry run: may not change once set)")
        assert planned["replace-demo/Job/once"].detail.startswith(
            "# replace: spec.template cannot change in place (the API server's dry run: field is immutable)")
        assert "+      app: mover-v2" in planned["replace-demo/Deployment/mover"].detail

        applied = kube.apply(arts, plan=reviewed)
        assert [c.action for c in applied] == ["unchanged", "replace", "replace", "replace"]
        dep = api.get(dep_path)
        assert dep["metadata"]["uid"] != old_uid and dep["spec"]["selector"]["matchLabels"] == {"app": "mover-v2"}
        old_pods = api.call("GET", "/api/v1/namespaces/replace-demo/pods", query={"labelSelector": "app=mover-v1"})
        assert old_pods["items"] == []
        assert api.get("/api/v1/namespaces/replace-demo/services/mover")["spec"]["clusterIP"] == "10.43.200.11"
        assert {c.action for c in kube.plan(arts).steps} == {"unchanged"}
    finally:
        api.request("DELETE", "/api/v1/namespaces/replace-demo")


def test_a_rollout_that_never_becomes_ready_names_the_pod_its_state_and_its_event(site, kube):
    """A Deployment whose container keeps exiting: the wait ends at its timeout with the pod, CrashLoopBackOff and
    the restart count, the latest event, the container's last log line and how to read more."""
    api = kube.api("level3")
    crasher = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "crasher", "namespace": "default"},
               "spec": {"minReadySeconds": 5, "selector": {"matchLabels": {"app": "crasher"}},
                        "template": {"metadata": {"labels": {"app": "crasher"}}, "spec": {"containers": [{
                            "name": "main", "image": "mcr.microsoft.com/azurelinux/base/python:3.12",
                            "command": ["python3", "-c", "import sys; print('missing setting: broker.host'); "
                                                         "sys.exit(3)"]}]}}}}
    short = KubeTarget(site, clients=kube._clients, poll_interval=0.2, rollout_timeout=8, contexts=kube._contexts)
    started = time.monotonic()
    try:
        with pytest.raises(KubeError) as err:
            short.apply([Art("level3", "envoy-manifests.yaml", _docs(crasher))])
        took = time.monotonic() - started
        text = str(err.value)
        pod = api.call("GET", "/api/v1/namespaces/default/pods", query={"labelSelector": "app=crasher"})["items"][0]
        assert took < 8 + 4, took
        assert text.startswith("level3: deployment default/crasher not rolled out after 8s"), text
        # between restarts the container waits in CrashLoopBackOff; it is Running only for the instant it runs
        name = pod["metadata"]["name"]
        state = re.search(rf"pod default/{name} is not ready: container main (.*?), restartCount (\d+), "
                          r"last exit code 3;", text)
        assert state, text
        assert state[1] == "running" or state[1].startswith(
            "CrashLoopBackOff (back-off ") and f"s restarting failed container=main pod={name}_default(" in state[1], state[1]
        assert int(state[2]) >= 1
        assert pod["status"]["phase"] == "Running"             # a kubelet keeps a crash-looping pod Running
        assert "latest event: BackOff: Back-off restarting container main (exit 3)" in text
        assert "its log ends with: missing setting: broker.host" in text
        assert f"read why with kubectl --context aio-l3 -n default logs {name} --previous" in text
    finally:
        api.request("DELETE", "/apis/apps/v1/namespaces/default/deployments/crasher",
                    query={"propagationPolicy": "Foreground"})


def test_a_replace_whose_old_object_does_not_go_says_what_holds_it(site, kube):
    """A ConfigMap marked immutable whose data changes is a replace; when the old one does not go (a finalizer
    nobody removes), apply stops at its timeout naming the object and how to look at it, and creates nothing."""
    api = kube.api("level2")
    path = "/api/v1/namespaces/default/configmaps/frozen"

    def frozen(value: str) -> list:
        return [Art("level2", "envoy-manifests.yaml", _docs(
            {"apiVersion": "v1", "kind": "ConfigMap", "immutable": True, "data": {"v": value},
             "metadata": {"name": "frozen", "namespace": "default", "finalizers": ["layernet.example/hold"]}}))]

    short = KubeTarget(site, clients=kube._clients, poll_interval=0.2, rollout_timeout=2, contexts=kube._contexts)
    try:
        short.apply(frozen("1"))
        planned = short.plan(frozen("2"))
        assert [c.action for c in planned.steps] == ["replace"]
        assert planned.steps[0].detail.startswith("# replace: data cannot change in place (the API server's dry run: "
                                                  "field is immutable when `immutable` is set)"), planned.steps[0].detail
        with pytest.raises(KubeError) as err:
            short.apply(frozen("2"), plan=planned)
        assert str(err.value) == ("level2: default/ConfigMap/frozen: deleted to be replaced, but still there after 2s "
                                  "(a finalizer or a dependent that does not go?); see: kubectl --context aio-l2 -n "
                                  "default get configmap frozen -o yaml")
        live = api.get(path)
        assert live["data"] == {"v": "1"} and live["metadata"].get("deletionTimestamp")
    finally:
        api.request("PATCH", path, body={"metadata": {"finalizers": None}}, content_type="application/merge-patch+json")
        api.request("DELETE", path)


def test_a_running_pods_configmap_volume_follows_the_configmap_except_under_a_subpath(site, kube):
    """As a kubelet keeps them: the file a running container reads changes when its ConfigMap does (a key that
    goes is removed); the same key mounted with a subPath keeps what it got at start."""
    api = kube.api("level2")
    ns, cm = "default", "greeting"
    api.call("POST", f"/api/v1/namespaces/{ns}/configmaps",
             body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm, "namespace": ns},
                   "data": {"word": "hello", "extra": "x"}})
    reader = ("import os, time\n"
              "while True:\n"
              "    print(open('/etc/greeting/word').read(), open('/etc/pinned/word').read(),"
              " os.path.exists('/etc/greeting/extra'), flush=True)\n"
              "    time.sleep(0.3)\n")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reader", "namespace": ns},
           "spec": {"restartPolicy": "Always", "containers": [{
               "name": "main", "image": "mcr.microsoft.com/azurelinux/base/python:3.12",
               "command": ["python3", "-c", reader],
               "volumeMounts": [{"name": "g", "mountPath": "/etc/greeting"},
                                {"name": "p", "mountPath": "/etc/pinned/word", "subPath": "word"}]}],
               "volumes": [{"name": "g", "configMap": {"name": cm}}, {"name": "p", "configMap": {"name": cm}}]}}
    api.call("POST", f"/api/v1/namespaces/{ns}/pods", body=pod)
    log = f"/api/v1/namespaces/{ns}/pods/reader/log"

    def last_line():
        try:
            lines = api.call("GET", log, parse=False).strip().splitlines()
        except KubeError:
            return ""
        return lines[-1] if lines else ""

    try:
        assert wait(lambda: last_line() == "hello hello True"), last_line()
        api.call("PUT", f"/api/v1/namespaces/{ns}/configmaps/{cm}",
                 body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm, "namespace": ns},
                       "data": {"word": "goodbye"}})
        assert wait(lambda: last_line() == "goodbye hello False", timeout=20), last_line()
        st = api.get(f"/api/v1/namespaces/{ns}/pods/reader")["status"]["containerStatuses"][0]
        assert st["restartCount"] == 0            # refreshed in place, not restarted
    finally:
        api.call("DELETE", f"/api/v1/namespaces/{ns}/pods/reader")
        api.call("DELETE", f"/api/v1/namespaces/{ns}/configmaps/{cm}")
