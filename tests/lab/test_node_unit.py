"""The lab node agent's decisions, without a lab: whether it pulls, what a ConfigMap or Secret volume becomes, how a
container's paths point at its pod's folders, readiness probes against real listeners on 127.0.0.1, and which pods
a Deployment's newer pod supersedes on the node's one network."""
from __future__ import annotations

import base64
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from layernet.lab.clusters import images, node, volumes
from layernet.lab.clusters.rollout import deployment_of, rivals
from layernet.lab.clusters.readiness import MIN_PERIOD, Readiness, check, port_of
from layernet.telemetry.loopback import free_port

COREDNS = "rancher/mirrored-coredns-coredns:1.12.3"
ENVOY = "mcr.microsoft.com/oss/v2/envoyproxy/envoy:v1.34.10"


# ------------------------------------------------------------------------------------------------ pulls
@pytest.mark.parametrize("container, pulls", [
    ({"image": ENVOY, "imagePullPolicy": "Never"}, False),                 # imported on the node: never pulled
    ({"image": "ghcr.io/example/unknown:1.0", "imagePullPolicy": "Never"}, False),
    ({"image": COREDNS, "imagePullPolicy": "IfNotPresent"}, False),        # K3s's airgap images are on the node
    ({"image": "docker.io/rancher/mirrored-pause:3.6", "imagePullPolicy": "IfNotPresent"}, False),
    ({"image": "rancher/local-path-provisioner:v0.0.31"}, False),          # a tag: IfNotPresent by default
    ({"image": "rancher/mirrored-library-busybox:1.36.1"}, False),
    ({"image": COREDNS, "imagePullPolicy": "Always"}, True),
    ({"image": ENVOY, "imagePullPolicy": "IfNotPresent"}, True),
    ({"image": ENVOY}, True),
    ({"image": "ghcr.io/rancher/mirrored-coredns-coredns:1.12.3", "imagePullPolicy": "IfNotPresent"}, True),
    ({"image": "rancher/mirrored-coredns-coredns", "imagePullPolicy": "IfNotPresent"}, True),   # no tag: latest
    ({"image": "docker.io/library/busybox:1.36", "imagePullPolicy": "IfNotPresent"}, True),
])
def test_the_node_pulls_what_its_pull_policy_and_its_preloaded_images_say(container, pulls):
    assert images.must_pull(container) is pulls


def test_the_default_pull_policy_is_always_for_latest_or_no_tag():
    assert images.pull_policy({"image": ENVOY}) == "IfNotPresent"
    assert images.pull_policy({"image": "busybox"}) == "Always"
    assert images.pull_policy({"image": "docker.io/library/busybox:latest"}) == "Always"
    assert images.pull_policy({"image": "busybox", "imagePullPolicy": "Never"}) == "Never"


def test_k3s_coredns_image_runs_the_labs_coredns_with_its_paths_in_the_pods_folders(tmp_path, monkeypatch):
    fake = tmp_path / "coredns-binary"
    fake.write_text("")
    monkeypatch.setenv("LAYERNET_COREDNS", str(fake))
    container = {"name": "coredns", "image": COREDNS, "args": ["-conf", "/etc/coredns/Corefile"]}
    assert images.known(container)
    mounts = {"/etc/coredns": tmp_path / "config", "/etc/coredns/custom": tmp_path / "custom"}
    assert images.command(container, mounts) == [str(fake), "-conf", f"{tmp_path}/config/Corefile"]
    assert images.command({**container, "args": ["--conf=/etc/coredns/custom/x.server"]}, mounts)[1] == \
        f"--conf={tmp_path}/custom/x.server"


# ------------------------------------------------------------------------------------------------ volumes
def test_an_optional_configmap_that_is_absent_is_an_empty_folder():
    vol = {"name": "custom-config-volume", "configMap": {"name": "coredns-custom", "optional": True}}
    assert volumes.volume_files(vol, None) == {}


def test_an_absent_configmap_or_secret_that_is_not_optional_is_an_error_naming_it():
    with pytest.raises(volumes.VolumeError, match='configmap "coredns" not found \\(volume "config-volume"\\)'):
        volumes.volume_files({"name": "config-volume", "configMap": {"name": "coredns"}}, None)
    with pytest.raises(volumes.VolumeError, match='secret "tls" not found'):
        volumes.volume_files({"name": "certs", "secret": {"secretName": "tls", "optional": False}}, None)


def test_items_project_only_the_listed_keys_under_their_paths():
    cm = {"data": {"Corefile": ".:53 {}", "NodeHosts": "10.0.0.1 node", "extra": "x"},
          "binaryData": {"blob": base64.b64encode(b"\x00\xff").decode()}}
    vol = {"name": "config-volume", "configMap": {"name": "coredns", "items": [
        {"key": "Corefile", "path": "Corefile"}, {"key": "NodeHosts", "path": "hosts/NodeHosts"}]}}
    assert volumes.volume_files(vol, cm) == {"Corefile": b".:53 {}", "hosts/NodeHosts": b"10.0.0.1 node"}
    everything = volumes.volume_files({"name": "all", "configMap": {"name": "coredns"}}, cm)
    assert everything == {"Corefile": b".:53 {}", "NodeHosts": b"10.0.0.1 node", "extra": b"x", "blob": b"\x00\xff"}


def test_a_listed_key_the_object_lacks_is_an_error_unless_optional():
    cm = {"data": {"Corefile": "x"}}
    items = [{"key": "Corefile", "path": "Corefile"}, {"key": "NodeHosts", "path": "NodeHosts"}]
    with pytest.raises(volumes.VolumeError, match='configmap "coredns" references non-existent config key: NodeHosts'):
        volumes.volume_files({"name": "v", "configMap": {"name": "coredns", "items": items}}, cm)
    optional = {"name": "v", "configMap": {"name": "coredns", "items": items, "optional": True}}
    assert volumes.volume_files(optional, cm) == {"Corefile": b"x"}


def test_secret_volumes_decode_and_honour_items():
    sec = {"data": {"tls.crt": base64.b64encode(b"CERT").decode(), "tls.key": base64.b64encode(b"KEY").decode()}}
    vol = {"name": "certs", "secret": {"secretName": "tls", "items": [{"key": "tls.crt", "path": "server.pem"}]}}
    assert volumes.volume_files(vol, sec) == {"server.pem": b"CERT"}


def test_an_item_path_outside_its_volume_is_refused():
    with pytest.raises(volumes.VolumeError, match="must be a relative path"):
        volumes.volume_files({"name": "v", "configMap": {"name": "c", "items": [{"key": "a", "path": "../../x"}]}},
                             {"data": {"a": "1"}})


def test_mount_folders_per_mount_path_and_sub_path(tmp_path):
    spec = {"containers": [{"volumeMounts": [
        {"name": "config-volume", "mountPath": "/etc/coredns"},
        {"name": "custom-config-volume", "mountPath": "/etc/coredns/custom"},
        {"name": "config-volume", "mountPath": "/etc/hosts-file", "subPath": "NodeHosts"}]}]}
    assert volumes.mount_folders(spec, tmp_path) == {
        "/etc/coredns": tmp_path / "config-volume", "/etc/coredns/custom": tmp_path / "custom-config-volume",
        "/etc/hosts-file": tmp_path / "config-volume" / "NodeHosts"}


# ------------------------------------------------------------------------------------------------ paths
MOUNTS = {"/etc/coredns": Path("/pod/config"), "/etc/coredns/custom": Path("/pod/custom")}


@pytest.mark.parametrize("text, expected", [
    ("hosts /etc/coredns/NodeHosts {", "hosts /pod/config/NodeHosts {"),
    ("import /etc/coredns/custom/*.server", "import /pod/custom/*.server"),       # the longest mount path first
    ("/etc/coredns/customX", "/pod/config/customX"),                              # a file named customX
    ("/etc/coredns/custom", "/pod/custom"),                                       # the end of the text
    ("path: '/etc/coredns/custom'\n", "path: '/pod/custom'\n"),
    ('"/etc/coredns"', '"/pod/config"'),
    ("conf /etc/coredns\tnext", "conf /pod/config\tnext"),
    ("/etc/corednsX/Corefile", "/etc/corednsX/Corefile"),                        # not a path boundary
    ("/etc/coredns.bak", "/etc/coredns.bak"),
    ("/opt/etc/coredns/Corefile", "/opt/etc/coredns/Corefile"),                  # the middle of another path
    ("--conf=/etc/coredns/Corefile", "--conf=/pod/config/Corefile"),
])
def test_mount_paths_in_text_point_at_the_pods_folders_only_at_a_path_boundary(text, expected):
    assert volumes.rewrite(text, MOUNTS) == expected


def test_a_rewritten_folder_is_not_rewritten_again():
    mounts = {"/a": Path("/a/b"), "/a/b": Path("/x")}
    assert volumes.rewrite("/a/c /a/b/c", mounts) == "/a/b/c /x/c"


def test_files_written_into_a_volume_name_the_pods_folders(tmp_path):
    corefile = (".:53 {\n    hosts /etc/coredns/NodeHosts {\n        ttl 60\n    }\n"
                "    import /etc/coredns/custom/*.override\n}\nimport /etc/coredns/custom/*.server\n")
    spec = {"containers": [{"volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns"},
                                             {"name": "custom-config-volume", "mountPath": "/etc/coredns/custom"}]}]}
    mounts = volumes.mount_folders(spec, tmp_path)
    volumes.write(tmp_path / "config-volume", {"Corefile": corefile.encode(), "bin": b"\xff/etc/coredns"}, mounts)
    volumes.write(tmp_path / "custom-config-volume", {}, mounts)
    text = (tmp_path / "config-volume" / "Corefile").read_text()
    assert f"hosts {tmp_path}/config-volume/NodeHosts {{" in text
    assert f"import {tmp_path}/custom-config-volume/*.override" in text
    assert f"import {tmp_path}/custom-config-volume/*.server" in text and "/etc/coredns" not in text
    assert (tmp_path / "config-volume" / "bin").read_bytes() == b"\xff/etc/coredns"     # binary data untouched
    assert (tmp_path / "custom-config-volume").is_dir()



def test_a_refresh_writes_only_what_changed_whole_and_removes_keys_that_went(tmp_path):
    folder = tmp_path / "v"
    assert volumes.write(folder, {"a": b"1", "sub/b": b"2"}, {}) is True
    before = (folder / "a").stat().st_ino
    assert volumes.write(folder, {"a": b"1", "sub/b": b"2"}, {}) is False           # nothing to do
    assert volumes.write(folder, {"a": b"one"}, {}) is True
    assert (folder / "a").read_bytes() == b"one" and (folder / "a").stat().st_ino != before   # replaced, not rewritten
    assert not (folder / "sub" / "b").exists()
    assert sorted(f.name for f in folder.rglob("*") if f.is_file()) == ["a"]        # no temporary file left


def test_the_volumes_a_running_pod_refreshes_are_its_configmaps_and_secrets_without_a_subpath():
    spec = {"containers": [{"volumeMounts": [{"name": "cm", "mountPath": "/c"}, {"name": "pinned", "mountPath": "/p/f",
                                                                                 "subPath": "f"}]},
                           {"volumeMounts": [{"name": "sec", "mountPath": "/s"}, {"name": "scratch", "mountPath": "/t"}]}],
            "volumes": [{"name": "cm", "configMap": {"name": "a"}}, {"name": "pinned", "configMap": {"name": "a"}},
                        {"name": "sec", "secret": {"secretName": "b"}}, {"name": "scratch", "emptyDir": {}}]}
    assert [v["name"] for v in volumes.refreshed(spec)] == ["cm", "sec"]


# ------------------------------------------------------------------------------------------------ readiness
@pytest.fixture
def tcp_port():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv.getsockname()[1]
    srv.close()


def test_a_tcp_probe_passes_on_a_listening_port_by_number_or_name(tcp_port):
    container = {"ports": [{"name": "dns-tcp", "containerPort": tcp_port}]}
    assert check({"tcpSocket": {"port": tcp_port}}, container, "127.0.0.1")[0] is True
    assert check({"tcpSocket": {"port": "dns-tcp"}}, container, "127.0.0.1")[0] is True
    passed, detail = check({"tcpSocket": {"port": free_port(["127.0.0.1"])}, "timeoutSeconds": 1}, container, "127.0.0.1")
    assert passed is False and "ConnectionRefusedError" in detail


def test_a_named_port_the_container_lacks_fails_the_probe():
    passed, detail = check({"tcpSocket": {"port": "metrics"}}, {"ports": []}, "127.0.0.1")
    assert passed is False and "'metrics' is not a number nor the name" in detail
    assert port_of("8181", {}) == 8181


@pytest.fixture
def http_port():
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            code = {"/ready": 200, "/moved": 302}.get(self.path, 503)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_an_http_probe_passes_on_2xx_and_3xx_only(http_port):
    container = {"ports": [{"name": "ready", "containerPort": http_port}]}
    assert check({"httpGet": {"path": "/ready", "port": http_port, "scheme": "HTTP"}}, container, "127.0.0.1")[0]
    assert check({"httpGet": {"path": "/moved", "port": "ready"}}, container, "127.0.0.1")[0]
    passed, detail = check({"httpGet": {"path": "/health", "port": http_port}}, container, "127.0.0.1")
    assert passed is False and detail.startswith("HTTP probe failed with statuscode: 503")
    assert check({"httpGet": {"path": "/ready", "port": free_port(["127.0.0.1"])}}, container, "127.0.0.1")[0] is False


def test_an_exec_probe_runs_its_command_and_a_grpc_probe_is_named_as_unsupported(tmp_path):
    (tmp_path / "healthy").write_text("")
    mounts = {"/tmp/state": tmp_path}
    assert check({"exec": {"command": ["test", "-f", "/tmp/state/healthy"]}}, {}, "127.0.0.1", mounts)[0] is True
    assert check({"exec": {"command": ["test", "-f", "/tmp/state/absent"]}}, {}, "127.0.0.1", mounts)[0] is False
    passed, detail = check({"grpc": {"port": 9000}, "periodSeconds": 1}, {}, "127.0.0.1")
    assert passed is False and detail.endswith("not grpc")


def test_without_a_probe_a_container_is_ready_and_never_checked():
    r = Readiness(None)
    r.started(0.0)
    assert r.ready and not r.due(100.0)


def test_readiness_waits_for_its_initial_delay_and_period_and_follows_the_thresholds():
    r = Readiness({"httpGet": {"port": 1}, "initialDelaySeconds": 2, "periodSeconds": 0.1,
                   "successThreshold": 2, "failureThreshold": 2})
    r.started(10.0)
    assert not r.ready and not r.due(11.9) and r.due(12.0)
    assert r.record(True, "ok", 12.0) is False and not r.ready        # one success of the two needed
    assert not r.due(12.0 + MIN_PERIOD - 0.01) and r.due(12.0 + MIN_PERIOD)   # the period is at least MIN_PERIOD
    assert r.record(True, "ok", 12.5) is True and r.ready
    assert r.record(False, "refused", 13.0) is False and r.ready      # one failure of the two allowed
    assert not r.failing
    assert r.record(False, "refused", 13.5) is True and not r.ready and r.failing
    r.started(20.0)                                                    # a restart: not ready until it passes again
    assert not r.ready and r.due(22.0)


def test_readiness_defaults_a_kubelets_period_and_thresholds():
    r = Readiness({"tcpSocket": {"port": 53}})
    r.started(0.0)
    assert r.due(0.0) and r.record(True, "ok", 0.0) and r.ready         # successThreshold 1
    assert not r.due(9.9) and r.due(10.0)                               # periodSeconds 10
    assert not r.record(False, "x", 10.0) and not r.record(False, "x", 20.0) and r.record(False, "x", 30.0)


# ------------------------------------------------------------------------------------------------ rollouts
def _pod(name: str, digest: str, created: str, deployment: str = "coredns", ns: str = "kube-system", **meta) -> dict:
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "creationTimestamp": created,
                         "labels": {"k8s-app": "kube-dns", "pod-template-hash": digest},
                         "ownerReferences": [{"kind": "ReplicaSet", "name": f"{deployment}-{digest}",
                                              "controller": True}], **meta}}


def test_the_deployment_of_a_pod_is_its_replicasets_name_without_the_hash():
    assert deployment_of(_pod("layernet-envoy-7d9f-x", "7d9f", "t", deployment="layernet-envoy", ns="layernet")) \
        == ("layernet", "layernet-envoy", "7d9f")
    bare = {"metadata": {"name": "sleeper", "namespace": "default"}}
    assert deployment_of(bare) is None
    job = {"metadata": {"name": "probe-x", "namespace": "default", "labels": {"pod-template-hash": "abc"},
                        "ownerReferences": [{"kind": "Job", "name": "probe-abc"}]}}
    assert deployment_of(job) is None
    odd = _pod("x", "abc", "t")
    odd["metadata"]["ownerReferences"][0]["name"] = "standalone-rs"          # a ReplicaSet no Deployment made
    assert deployment_of(odd) is None


def test_a_newer_pod_supersedes_the_older_pods_of_its_deployment_only():
    new = _pod("coredns-b-1", "bbb", "2026-12-05T17:00:10Z")
    old = _pod("coredns-a-1", "aaa", "2026-12-05T17:00:00Z")
    same_hash = _pod("coredns-b-2", "bbb", "2026-12-05T17:00:05Z")
    other_deployment = _pod("metrics-a-1", "aaa", "2026-12-05T16:00:00Z", deployment="metrics")
    other_namespace = _pod("coredns-c-1", "ccc", "2026-12-05T16:00:00Z", ns="default")
    going = _pod("coredns-d-1", "ddd", "2026-12-05T16:59:00Z", deletionTimestamp="2026-12-05T17:00:09Z")
    bare = {"metadata": {"name": "sleeper", "namespace": "kube-system", "creationTimestamp": "2026-12-05T15:00:00Z"}}
    older, newer = rivals(new, [old, same_hash, other_deployment, other_namespace, going, bare, new])
    assert [p["metadata"]["name"] for p in older] == ["coredns-a-1"] and newer == []
    # seen from the old pod (a node agent that restarts in the middle of a rollout): it gives way
    older, newer = rivals(old, [new, same_hash, going])
    assert older == [] and [p["metadata"]["name"] for p in newer] == ["coredns-b-2", "coredns-b-1"]
    assert rivals(bare, [old, new]) == ([], [])


# ------------------------------------------------------------------------------------------------ the agent itself
# Its containers are real processes on 127.0.0.1; its API server is an address where nothing listens (every event and
# status it sends fails and is dropped, as when the API server is away), so these tests read the pods' status here.
PYTHON = "mcr.microsoft.com/azurelinux/base/python:3.12"
LISTEN = ("import socket, sys, time\n"
          "time.sleep(float(sys.argv[2]))\n"
          "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(8); time.sleep(60)\n")


@pytest.fixture
def agent(tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    for name in ("node.crt", "node.key", "ca.crt"):
        (pki / name).write_text("")
    a = node.Agent(tmp_path, "level3", "127.0.0.1", "", str(pki / "ca.crt"))
    a.api = node.Api(f"https://127.0.0.1:{free_port(['127.0.0.1'], start=19830)}", pki / "node.crt",
                     pki / "node.key", str(pki / "ca.crt"))
    threading.Thread(target=a.probe, daemon=True).start()
    yield a
    a.shutdown()


def _web(name: str, digest: str, created: str, port: int, delay: float = 0.0) -> dict:
    pod = _pod(name, digest, created, deployment="web", ns="default")
    pod["spec"] = {"containers": [{
        "name": "main", "image": PYTHON, "imagePullPolicy": "Never", "command": ["python3", "-c", LISTEN],
        "args": [str(port), str(delay)], "ports": [{"name": "web", "containerPort": port}],
        "readinessProbe": {"tcpSocket": {"port": "web"}, "periodSeconds": 0.5, "failureThreshold": 1}}]}
    return pod


def _until(predicate, timeout: float = 10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.05)
    return predicate()


def _ready(pod: node.Pod) -> str:
    return next(c["status"] for c in pod.status("127.0.0.1")["conditions"] if c["type"] == "Ready")


def test_a_pod_is_ready_once_its_probe_passes_and_a_newer_pod_of_its_deployment_takes_its_port(agent):
    port = free_port(["127.0.0.1"], start=19840)
    agent.update("ADDED", _web("web-aaa-1", "aaa", "2026-12-05T17:00:00Z", port, delay=1.0))
    old = agent.pods["uid-web-aaa-1"]
    agent.step(old)
    assert old.containers[0].running
    assert _ready(old) == "False"                        # running, its port not open yet
    assert _until(lambda: _ready(old) == "True")
    assert old.status("127.0.0.1")["containerStatuses"][0]["ready"] is True

    agent.update("ADDED", _web("web-bbb-1", "bbb", "2026-12-05T17:00:10Z", port))
    new = agent.pods["uid-web-bbb-1"]
    agent.step(new)                                      # the old pod gives its port up before the new one starts
    status = old.status("127.0.0.1")
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "Superseded" and "default/web-bbb-1" in waiting["message"]
    assert status["phase"] == "Running" and _ready(old) == "False"
    assert not old.containers[0].running
    assert _until(lambda: _ready(new) == "True")         # it could bind the port the old pod held
    agent.step(old)
    assert not old.containers[0].running                 # not restarted while the newer pod is here

    agent.forget(new.uid)                                # the newer pod went (a rollback): the old one runs again
    agent.step(old)
    assert old.containers[0].running and old.containers[0].restarts == 1
    assert _ready(old) == "False"                        # started again: not ready until its probe passes again
    assert _until(lambda: _ready(old) == "True")


def test_a_pod_that_finds_a_newer_pod_of_its_deployment_does_not_start(agent):
    port = free_port(["127.0.0.1"], start=19860)
    agent.update("ADDED", _web("web-bbb-1", "bbb", "2026-12-05T17:00:10Z", port))
    agent.update("ADDED", _web("web-aaa-1", "aaa", "2026-12-05T17:00:00Z", port))
    newer, older = agent.pods["uid-web-bbb-1"], agent.pods["uid-web-aaa-1"]
    agent.step(newer)
    agent.step(older)
    assert newer.containers[0].running and older.containers[0].proc is None
    assert older.status("127.0.0.1")["phase"] == "Pending"
    assert older.status("127.0.0.1")["containerStatuses"][0]["state"]["waiting"]["reason"] == "Superseded"


def test_without_a_probe_a_running_container_is_ready(agent):
    pod = {"metadata": {"name": "sleeper", "namespace": "default", "uid": "uid-sleeper"},
           "spec": {"containers": [{"name": "main", "image": PYTHON, "imagePullPolicy": "Never",
                                    "command": ["python3", "-c", "import time; time.sleep(60)"]}]}}
    agent.update("ADDED", pod)
    agent.step(agent.pods["uid-sleeper"])
    assert _ready(agent.pods["uid-sleeper"]) == "True"
