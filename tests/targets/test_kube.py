"""The kube target against KubeApiDouble (a test double of the API server on 127.0.0.1): the exact requests
of plan, apply, a second apply, the CoreDNS restart, rollout waits, logs and the probe Job."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from kube_double import KubeApiDouble

from layernet import probe
from layernet.plan import Plan
from layernet.site import load_site
from layernet.targets.kube import APPLY, KubeError, KubeTarget

LAB = Path(__file__).resolve().parents[2] / "params" / "lab.yaml"
CTX = {f"levels.{n}.kube_context": n for n in ("level4", "level3", "level2")}
APPLY_QUERY = {"fieldManager": "layernet", "force": "true"}
DRY_RUN = dict(APPLY_QUERY, dryRun="All")      # the plan asks the server whether a changed object applies in place

CM = "/api/v1/namespaces/layernet/configmaps/envoy-config"
DEP = "/apis/apps/v1/namespaces/layernet/deployments/envoy"
SVC = "/api/v1/namespaces/layernet/services/envoy"
NS = "/api/v1/namespaces/layernet"
DNS_CM = "/api/v1/namespaces/kube-system/configmaps/coredns-custom"
DNS_SVC = "/api/v1/namespaces/kube-system/services/coredns-external"
COREDNS = "/apis/apps/v1/namespaces/kube-system/deployments/coredns"
OBJECTS = [NS, DNS_CM, DNS_SVC, CM, DEP, SVC]     # the DNS override first: a proxy pulled through it resolves


@dataclass(frozen=True)
class Artifact:  # the renderer's shape: level, name, kind, content
    level: str
    name: str
    kind: str
    content: str


def envoy_docs(config: str = "listeners: []", replicas: int = 1) -> list[dict]:
    labels = {"app": "envoy"}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "envoy-config", "namespace": "layernet"},
         "data": {"envoy.yaml": config}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "envoy", "namespace": "layernet"},
         "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels, "annotations": {"layernet/config-sha256": str(hash(config))}},
                               "spec": {"containers": [{"name": "envoy", "image": "envoyproxy/envoy:v1.36.0",
                                                        "ports": [{"containerPort": 443}]}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "envoy", "namespace": "layernet"},
         "spec": {"type": "LoadBalancer", "selector": labels, "ports": [{"name": "https", "port": 443, "targetPort": 443}]}},
    ]


def artifacts(level: str = "level3", config: str = "listeners: []", dns: str = "example.server: |\n  # v1\n"):
    dns_cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns-custom", "namespace": "kube-system"},
              "data": yaml.safe_load(dns)}
    dns_svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "coredns-external", "namespace": "kube-system"},
               "spec": {"type": "LoadBalancer", "selector": {"k8s-app": "kube-dns"},
                        "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}]}}
    return [
        Artifact(level, "envoy.yaml", "envoy", config),  # not a Kubernetes object: ignored by the kube target
        Artifact(level, "envoy-manifests.yaml", "kube", yaml.safe_dump_all(envoy_docs(config))),
        Artifact(level, "coredns-custom.yaml", "kube", yaml.safe_dump(dns_cm)),
        Artifact(level, "coredns-external.yaml", "kube", yaml.safe_dump(dns_svc)),
    ]


def coredns_deployment() -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
                     "template": {"metadata": {"labels": {"k8s-app": "kube-dns"}},
                                  "spec": {"containers": [{"name": "coredns", "image": "rancher/mirrored-coredns-coredns"}]}}}}


@pytest.fixture
def site():
    return load_site(LAB, dict(CTX, target="kube"))


@pytest.fixture
def double():
    d = KubeApiDouble()
    d.store(COREDNS, coredns_deployment())  # K3s ships CoreDNS
    yield d
    d.close()


@pytest.fixture
def target(site, double):
    return KubeTarget(site, configuration=double.configuration(), poll_interval=0.01, rollout_timeout=2)


def shorts(double):
    return [r.short() for r in double.requests]


# ----------------------------------------------------------------------------------------------- plan
def test_plan_reads_every_object_and_changes_nothing(target, double):
    changes = target.plan(artifacts()).steps
    assert shorts(double) == [("GET", p, {}) for p in OBJECTS]
    assert [(c.level, c.target, c.action) for c in changes] == [
        ("level3", "Namespace/layernet", "create"),
        ("level3", "kube-system/ConfigMap/coredns-custom", "create"),
        ("level3", "kube-system/Deployment/coredns", "restart"),     # the plan shows the restart apply will do
        ("level3", "kube-system/Service/coredns-external", "create"),
        ("level3", "layernet/ConfigMap/envoy-config", "create"),
        ("level3", "layernet/Deployment/envoy", "create"),
        ("level3", "layernet/Service/envoy", "create"),
    ]
    assert changes[4].detail.splitlines()[:2] == ["--- live/layernet/ConfigMap/envoy-config",
                                                "+++ desired/layernet/ConfigMap/envoy-config"]
    assert "+kind: ConfigMap" in changes[4].detail


def test_requests_carry_the_token(target, double):
    target.plan(artifacts())
    assert {r.authorization for r in double.requests} == {"Bearer test-token"}


# ----------------------------------------------------------------------------------------------- apply
def test_first_apply_server_side_applies_everything_and_restarts_coredns(target, double):
    arts = artifacts()
    changes = target.apply(arts)
    desired = {NS: {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "layernet"}}}
    docs = envoy_docs()
    desired.update({CM: docs[0], DEP: docs[1], SVC: docs[2]})
    desired[DNS_CM] = yaml.safe_load(arts[2].content)
    desired[DNS_SVC] = yaml.safe_load(arts[3].content)
    expected = [("GET", p, {}) for p in OBJECTS]          # the level's live state is read before anything changes
    expected += [("PATCH", NS, APPLY_QUERY), ("PATCH", DNS_CM, APPLY_QUERY)]
    # CoreDNS rolled and ready with the override before anything else of the level is applied
    expected += [("PATCH", COREDNS, {"fieldManager": "layernet"}), ("GET", COREDNS, {})]
    expected += [("PATCH", p, APPLY_QUERY) for p in (DNS_SVC, CM, DEP, SVC)] + [("GET", DEP, {})]
    assert shorts(double) == expected
    patches = [r for r in double.requests if r.method == "PATCH"]
    restart = patches[2]
    for r in patches[:2] + patches[3:]:
        assert r.content_type == APPLY
        assert r.body == desired[r.path]
    assert restart.content_type == "application/strategic-merge-patch+json"
    annotations = restart.body["spec"]["template"]["metadata"]["annotations"]
    assert list(annotations) == ["kubectl.kubernetes.io/restartedAt"]
    assert restart.body == {"spec": {"template": {"metadata": {"annotations": annotations}}}}
    assert [c.action for c in changes] == ["create"] * 2 + ["restart"] + ["create"] * 4
    assert changes[2].target == "kube-system/Deployment/coredns"


def test_second_apply_sends_no_patch(target, double):
    target.apply(artifacts())
    double.requests.clear()
    changes = target.apply(artifacts())
    assert shorts(double) == [("GET", p, {}) for p in OBJECTS]
    assert {c.action for c in changes} == {"unchanged"} and all(c.detail == "" for c in changes)
    assert target.plan(artifacts()).steps == changes


def test_envoy_change_patches_only_envoy_objects_and_waits_for_the_rollout(target, double):
    target.apply(artifacts())
    double.requests.clear()
    changes = target.apply(artifacts(config="listeners: [changed]"))
    assert [r.short() for r in double.requests if r.method != "GET"] == [
        ("PATCH", CM, DRY_RUN), ("PATCH", DEP, DRY_RUN), ("PATCH", CM, APPLY_QUERY), ("PATCH", DEP, APPLY_QUERY)]
    assert double.requests[-1].short() == ("GET", DEP, {})  # the rollout wait, no CoreDNS restart
    update = [c for c in changes if c.action == "update"]
    assert [c.target for c in update] == ["layernet/ConfigMap/envoy-config", "layernet/Deployment/envoy"]
    assert "-  envoy.yaml: 'listeners: []'\n+  envoy.yaml: 'listeners: [changed]'" in update[0].detail


def test_coredns_change_restarts_coredns_only(target, double):
    target.apply(artifacts())
    double.requests.clear()
    target.apply(artifacts(dns="example.server: |\n  # v2\n"))
    assert [r.short() for r in double.requests if r.method != "GET"] == [
        ("PATCH", DNS_CM, DRY_RUN), ("PATCH", DNS_CM, APPLY_QUERY), ("PATCH", COREDNS, {"fieldManager": "layernet"})]
    assert double.requests[-1].short() == ("GET", COREDNS, {})


def test_drift_made_by_hand_shows_in_the_plan(target, double):
    target.apply(artifacts())
    live = double.objects[DNS_CM]
    double.objects[DNS_CM] = dict(live, data={"example.server": "# edited by hand\n"})
    changes = {c.target: c for c in target.plan(artifacts()).steps}
    c = changes["kube-system/ConfigMap/coredns-custom"]
    assert c.action == "update"
    assert "-    # edited by hand\n+    # v1\n" in c.detail        # a multi-line value diffs line by line
    assert changes["kube-system/Deployment/coredns"].action == "restart"
    assert all(x.action == "unchanged" for k, x in changes.items() if k not in (c.target, "kube-system/Deployment/coredns"))


def test_rollout_timeout_says_what_to_look_at(target, double):
    target.rollout_timeout = 0.1
    target.apply(artifacts())
    double.stuck_rollouts.add(DEP)
    with pytest.raises(KubeError) as err:
        target.apply(artifacts(config="listeners: [v2]"))
    assert str(err.value).startswith("level3: deployment layernet/envoy not rolled out after 0.1s (updated 0/1, available 0/1)")
    assert "kubectl --context level3 -n layernet describe deployment envoy" in str(err.value)


def test_each_level_uses_its_own_client(site):
    from kubernetes.client import ApiClient

    doubles = {lv: KubeApiDouble() for lv in ("level3", "level2")}
    try:
        for d in doubles.values():
            d.store(COREDNS, coredns_deployment())
        clients = {lv: ApiClient(d.configuration()) for lv, d in doubles.items()}
        t = KubeTarget(site, clients=clients, poll_interval=0.01)
        changes = t.plan(artifacts("level3") + artifacts("level2")).steps
        assert [c.level for c in changes] == ["level3"] * 7 + ["level2"] * 7     # 6 objects + the CoreDNS restart
        assert [len(d.requests) for d in doubles.values()] == [6, 6]
    finally:
        for d in doubles.values():
            d.close()


def test_client_from_kube_context(site, monkeypatch, tmp_path):
    """Each level's client comes from its own context of the kubeconfig named by $KUBECONFIG at call time."""
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: level4\n"
        "clusters:\n"
        "- {name: c2, cluster: {server: 'https://127.0.0.1:16442'}}\n"
        "- {name: c4, cluster: {server: 'https://127.0.0.1:16444'}}\n"
        "users: [{name: u, user: {token: not-a-real-token}}]\n"
        "contexts:\n"
        "- {name: level2, context: {cluster: c2, user: u}}\n"
        "- {name: level4, context: {cluster: c4, user: u}}\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    target = KubeTarget(site)
    assert target.api("level2").client.configuration.host == "https://127.0.0.1:16442"
    assert target.api("level4").client.configuration.host == "https://127.0.0.1:16444"


# ----------------------------------------------------------------------------------------------- logs
def test_logs_reads_the_envoy_pods_json_lines(target, double):
    target.apply(artifacts())
    pod = "/api/v1/namespaces/layernet/pods/envoy-6d9f-abcde"
    target.envoy_deployment = "envoy"  # the name in this test's manifests
    double.objects[pod] = {"kind": "Pod", "metadata": {"name": "envoy-6d9f-abcde", "namespace": "layernet",
                                                        "labels": {"app": "envoy", "pod-template-hash": "6d9f"}},
                           "spec": {"containers": [{"name": "envoy"}]}}
    double.logs[pod] = '[info] starting\n{"sni":"management.azure.com"}\n{"sni":"evil.example"}\n'
    double.requests.clear()
    lines = target.logs("level3", since=datetime.now(timezone.utc) - timedelta(seconds=90))
    assert lines == ['{"sni":"management.azure.com"}', '{"sni":"evil.example"}']
    log_req = double.requests[-1]
    assert shorts(double)[:2] == [("GET", DEP, {}), ("GET", "/api/v1/namespaces/layernet/pods",
                                                     {"labelSelector": "app=envoy"})]
    assert log_req.path == pod + "/log" and log_req.query["container"] == "envoy"
    assert 90 <= int(log_req.query["sinceSeconds"]) <= 95


def test_logs_read_a_naive_since_as_utc(target, double, monkeypatch):
    """The time policy (naive = UTC) holds for the logs a stage reads, whatever this machine's zone."""
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        target.apply(artifacts())
        pod = "/api/v1/namespaces/layernet/pods/envoy-6d9f-abcde"
        target.envoy_deployment = "envoy"
        double.objects[pod] = {"kind": "Pod", "metadata": {"name": "envoy-6d9f-abcde", "namespace": "layernet",
                                                            "labels": {"app": "envoy", "pod-template-hash": "6d9f"}},
                               "spec": {"containers": [{"name": "envoy"}]}}
        lines = [json.dumps({"time": t, "sni": "x"}) for t in
                 ("2025-03-01T07:59:59.000Z", "2025-03-01T08:00:00.000Z", "2025-03-01T12:30:00.000Z")]
        double.logs[pod] = "\n".join(lines) + "\n"
        naive, aware = datetime(2025, 3, 1, 8, 0), datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)
        assert target.logs("level3", since=naive) == target.logs("level3", since=aware) == lines[1:]
    finally:
        monkeypatch.undo()
        time.tzset()


# ----------------------------------------------------------------------------------------------- probe Job
def run_mounted_probe(tmp_path):
    """Plays the kubelet: writes the ConfigMap's keys where the Job mounts them and runs the Job's command."""
    def on_job(job, cm):
        container = job["spec"]["template"]["spec"]["containers"][0]
        mount = container["volumeMounts"][0]["mountPath"]
        for key, text in cm["data"].items():
            (tmp_path / key).write_text(text)
        argv = [str(tmp_path) + a[len(mount):] if a.startswith(mount + "/") else a for a in container["command"]]
        out = subprocess.run([sys.executable, "-I", "-S"] + argv[1:], capture_output=True, text=True, timeout=60)
        return out.stdout + out.stderr, out.returncode == 0
    return on_job


def closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_probe_runs_as_a_job_and_cleans_up(target, double, tmp_path):
    double.on_job = run_mounted_probe(tmp_path)
    port = closed_port()
    checks = [{"kind": "refused", "host": "evil.example", "port": port, "connect_ip": "127.0.0.1"}]
    rows = target.probe("level2", checks)
    assert [(r["level"], r["check"], r["ok"], r["observed"]) for r in rows] == [
        ("level2", "refused", False, "connect: connection refused")]

    assert shorts(double)[:2] == [("GET", NS, {}), ("PATCH", NS, APPLY_QUERY)]  # level2 has no Envoy namespace
    assert double.requests[1].body == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "layernet"}}
    del double.requests[:2]
    cm_post, job_post = double.requests[0], double.requests[1]
    name = cm_post.body["metadata"]["name"]
    assert name.startswith("layernet-probe-level2-")
    assert cm_post.short() == ("POST", "/api/v1/namespaces/layernet/configmaps", {})
    assert cm_post.body["data"]["probe.py"] == Path(probe.__file__).read_text()
    assert json.loads(cm_post.body["data"]["checks.json"]) == {"level": "level2", "checks": checks}
    assert job_post.short() == ("POST", "/apis/batch/v1/namespaces/layernet/jobs", {})
    spec = job_post.body["spec"]
    pod = spec["template"]["spec"]
    assert spec["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["image"] == target.site.images.reference("probe", target.site.azure.cloud)  # images.probe
    assert pod["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert pod["containers"][0]["command"] == ["python3", "/probe/probe.py", "/probe/checks.json"]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "probe", "mountPath": "/probe", "readOnly": True}]
    assert pod["volumes"] == [{"name": "probe", "configMap": {"name": name}}]
    assert shorts(double)[2:] == [
        ("GET", f"/apis/batch/v1/namespaces/layernet/jobs/{name}", {}),
        ("GET", "/api/v1/namespaces/layernet/pods", {"labelSelector": f"job-name={name}"}),
        ("GET", f"/api/v1/namespaces/layernet/pods/{name}-x7k2p/log", {"container": "probe"}),
        ("DELETE", f"/apis/batch/v1/namespaces/layernet/jobs/{name}", {"propagationPolicy": "Background"}),
        ("DELETE", f"/api/v1/namespaces/layernet/configmaps/{name}", {}),
    ]
    assert not any("/jobs/" in p or f"configmaps/{name}" in p for p in double.objects)


def test_probe_image_is_configurable_and_a_failed_job_is_an_error(site, double):
    double.on_job = lambda job, cm: ("Traceback: boom", False)
    t = KubeTarget(site, configuration=double.configuration(), probe_image="registry.plant.local/python:3.12",
                   poll_interval=0.01)
    double.store(NS, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "layernet"}})
    with pytest.raises(KubeError, match="failed; its log ends with: Traceback: boom"):
        t.probe("level3", [])
    assert [r.method for r in double.requests[:3]] == ["GET", "POST", "POST"]  # namespace exists: no PATCH
    assert double.requests[2].body["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.plant.local/python:3.12"
    assert [r.method for r in double.requests[-2:]] == ["DELETE", "DELETE"]


def test_rendered_site_applies_idempotently(site):
    """With the real renderer's output: apply, then a second apply sends no PATCH. One double per level, as
    each level is its own cluster."""
    from kubernetes.client import ApiClient

    from layernet.allowlist import effective_allowlist
    from layernet.targets.kube import KUBE_ARTIFACTS

    from layernet.render import render_site

    arts = render_site(site, effective_allowlist(site), target="kube")
    levels = sorted({a.level for a in arts if a.name in KUBE_ARTIFACTS})
    assert levels == ["level2", "level3", "level4"]
    doubles = {lv: KubeApiDouble() for lv in levels}
    try:
        for d in doubles.values():
            d.store(COREDNS, coredns_deployment())
        t = KubeTarget(site, clients={lv: ApiClient(d.configuration()) for lv, d in doubles.items()},
                       poll_interval=0.01, rollout_timeout=2)
        first = t.apply(arts)
        assert any(c.action == "create" for c in first)
        for d in doubles.values():
            d.requests.clear()
        second = t.apply(arts)
        assert {c.action for c in second} == {"unchanged"}
        assert [r for d in doubles.values() for r in d.requests if r.method != "GET"] == []
        # logs find the rendered Envoy Deployment's pods by its selector
        dep = next(o for o in doubles["level3"].objects.values() if o.get("kind") == "Deployment"
                   and o["metadata"]["namespace"] == "layernet")
        labels = dep["spec"]["selector"]["matchLabels"]
        pod = "/api/v1/namespaces/layernet/pods/envoy-0"
        doubles["level3"].objects[pod] = {"kind": "Pod", "metadata": {"name": "envoy-0", "labels": labels},
                                          "spec": {"containers": [{"name": "envoy"}]}}
        doubles["level3"].logs[pod] = '{"sni": "management.azure.com"}\n'
        assert t.logs("level3") == ['{"sni": "management.azure.com"}']
    finally:
        for d in doubles.values():
            d.close()


def test_apply_refuses_when_the_live_state_moved_since_the_plan(target, double):
    from layernet.errors import DriftError

    reviewed = Plan.from_dict(json.loads(target.plan(artifacts()).to_json()))   # as kept in a run folder
    assert reviewed.stage == "infrastructure" and reviewed.executor == "kube" and reviewed.observed
    target.apply(artifacts(), plan=reviewed)                              # exactly the reviewed plan: applied
    assert all(c.action == "unchanged" and c.skip for c in target.plan(artifacts()).steps)
    stale = target.plan(artifacts(config="listeners: [v2]"))
    double.objects[DNS_CM] = dict(double.objects[DNS_CM], data={"example.server": "# edited by hand\n"})
    before = len(double.requests)
    with pytest.raises(DriftError, match="coredns-custom: planned unchanged, now update"):
        target.apply(artifacts(config="listeners: [v2]"), plan=stale)
    written = [r for r in double.requests[before:] if r.method != "GET" and r.query.get("dryRun") != "All"]
    assert not written                                                    # nothing was written (dry runs store nothing)


def test_a_changed_selector_is_planned_as_replace_and_applied_as_delete_wait_create(target, double):
    target.apply(artifacts())
    docs = envoy_docs()
    docs[1]["spec"]["selector"]["matchLabels"] = docs[1]["spec"]["template"]["metadata"]["labels"] = {"app": "envoy-2"}
    arts = artifacts()
    arts[1] = Artifact("level3", "envoy-manifests.yaml", "kube", yaml.safe_dump_all(docs))
    reviewed = target.plan(arts)
    planned = {c.target: c for c in reviewed.steps}
    assert planned["layernet/Deployment/envoy"].action == "replace"
    assert planned["layernet/Deployment/envoy"].detail.startswith("# replace: spec.selector cannot change in place")
    double.requests.clear()
    target.apply(arts, plan=reviewed)
    assert [r.short() for r in double.requests if r.method != "GET" or r.path == DEP] == [
        ("GET", DEP, {}), ("PATCH", DEP, DRY_RUN),                         # the plan apply checks against
        ("DELETE", DEP, {"propagationPolicy": "Foreground"}), ("GET", DEP, {}),   # gone?
        ("PATCH", DEP, APPLY_QUERY), ("GET", DEP, {})]                     # create; the rollout wait
    assert double.objects[DEP]["spec"]["selector"] == {"matchLabels": {"app": "envoy-2"}}
