"""The node agent of a lab level: what the kubelet is to a K3s node, for the images the lab knows.

Run inside the level's network namespace (`python -m layernet.lab.clusters.node --folder DIR --node NAME --ip IP
--namespace NS --ca CA`), with the node's client certificate (CN system:node:NAME, group system:nodes), so the API
server's Node authorizer limits it to what a kubelet may do. It

- registers the node (InternalIP = the level's node address, Ready) and renews its Lease in kube-node-lease;
- watches the pods bound to it; an image its pull policy says to pull (`images.must_pull`: not `Never`, not one of
  K3s's airgap images under `IfNotPresent`) is fetched first, its manifest from the image's registry through the
  level's own DNS and proxies (so pulls are connections in the proxy logs), and a registry it cannot reach leaves
  the pod in ImagePullBackOff with the host in an event;
- runs each container of a known image (lab/clusters/images.py) as a process in the namespace, with its
  ConfigMap, Secret and emptyDir volumes as folders of the pod whose paths the container's arguments and files
  name instead of its mount paths (lab/clusters/volumes.py; ConfigMaps and Secrets follow their objects while it
  runs); restarts it per restartPolicy (restartCount counts it;
  between restarts it waits in CrashLoopBackOff, as a kubelet reports it); runs its readiness probe against the
  pod's address (lab/clusters/readiness.py), so a container with one is ready once it passes and the pod's Ready
  condition follows; reports pod status, exit codes and events as API objects;
- serves the containers' logs on the node address at 10250 (HTTPS, client certificates from the lab CA), which
  is where the API server reads `kubectl logs`.

One difference from a K3s node, and why: K3s gives every pod its own address; here every pod of the node runs in
the node's network namespace (as with hostNetwork), so a Deployment's new pod cannot bind the ports its old pod
holds. A rollout on the lab's one node therefore goes like `Recreate`: before the first container of a pod owned
by a ReplicaSet starts, the agent stops the containers of this node's pods of the same Deployment with another
pod-template-hash (lab/clusters/rollout.py, `Agent.supersede`) and does not restart them; they stay, not ready, waiting with reason
`Superseded` naming the newer pod, until the Deployment controller scales their ReplicaSet down and deletes them
as usual. A pod that finds a newer pod of its Deployment already here does not start at all.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlparse

import requests

from layernet.lab.clusters import KUBELET_PORT, images, servicelb, volumes
from layernet.lab.clusters.readiness import Readiness, check
from layernet.lab.clusters.rollout import rivals

LEASE_SECONDS = 40
RENEW_EVERY = 10.0
BACKOFF_MAX = 10.0        # seconds between restarts of a crashing container (the kubelet's is 5 min)
VOLUME_REFRESH = 5.0      # seconds between refreshes of a running pod's ConfigMap and Secret volumes (a kubelet's
                          # sync period is a minute; a change shows up within that, plus its cache)
VERSION = "v1.37.2-layernet"
IP = shutil.which("ip") or "/usr/sbin/ip"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Api:
    """The API server as the node sees it: its own client certificate, the lab CA."""

    def __init__(self, server: str, cert: Path, key: Path, ca: str):
        self.server = server.rstrip("/")
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.cert, self.http.verify = (str(cert), str(key)), ca

    def call(self, method: str, path: str, body=None, ok=(200, 201), ctype="application/json", **kw):
        data = json.dumps(body) if body is not None else None
        r = self.http.request(method, self.server + path, data=data, timeout=kw.pop("timeout", 10),
                              headers={"Content-Type": ctype} if data else {}, **kw)
        if r.status_code not in ok:
            raise RuntimeError(f"{method} {path}: HTTP {r.status_code} {r.text[:300]}")
        return r.json() if r.content else None

    def get(self, path: str) -> Optional[dict]:
        """An object, None when the API server says it does not exist (404)."""
        r = self.http.get(self.server + path, timeout=10)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise RuntimeError(f"GET {path}: HTTP {r.status_code} {r.text[:300]}")
        return r.json()


class Container:
    def __init__(self, pod: "Pod", spec: dict):
        self.pod, self.spec, self.name = pod, spec, spec["name"]
        self.proc: Optional[subprocess.Popen] = None
        self.restarts, self.started_at = 0, None
        self.last: Optional[dict] = None       # lastState after a restart
        self.exit: Optional[dict] = None       # terminated state when it will not run again
        self.next_start = 0.0                  # when a crashed container starts again (0: not backing off)
        self.backoff = 0.0
        self.log = pod.folder / f"{self.name}.log"
        self.env: dict[str, str] = {}          # resolved before each start (Agent.environment)
        self.readiness = Readiness(spec.get("readinessProbe"))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def ready(self) -> bool:
        return self.running and self.readiness.ready

    def state(self) -> dict:
        if self.pod.superseded_by:
            return {"waiting": {"reason": "Superseded", "message": (
                f"stopped for the newer pod {self.pod.superseded_by} of its Deployment: every pod of the lab's node "
                f"shares the node's network, so the old pod gives its ports up first")}}
        if self.running:
            return {"running": {"startedAt": self.started_at}}
        if self.exit is not None:
            return {"terminated": self.exit}
        if self.next_start:                    # exited, to be restarted: the kubelet's CrashLoopBackOff
            pod = self.pod
            return {"waiting": {"reason": "CrashLoopBackOff", "message": (
                f"back-off {self.backoff:g}s restarting failed container={self.name} "
                f"pod={pod.name}_{pod.ns}({pod.uid})")}}
        if self.pod.waiting:
            return {"waiting": self.pod.waiting}
        return {"waiting": {"reason": "ContainerCreating"}}


class Pod:
    def __init__(self, agent: "Agent", obj: dict):
        meta = obj["metadata"]
        self.agent, self.obj = agent, obj
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.folder = agent.folder / "pods" / f"{self.ns}_{self.name}_{self.uid[:8]}"
        self.containers = [Container(self, c) for c in obj["spec"]["containers"]]
        self.waiting: Optional[dict] = None
        self.pulled = False
        self.started = False                    # has any container of it started yet
        self.mounts: Optional[dict[str, Path]] = None    # mountPath -> folder, once the volumes are made
        self.superseded_by = ""                 # the newer pod of its Deployment that took its place
        self.superseded_uid = ""
        self.retry_at = 0.0                     # when a failed pull or volume is tried again
        self.refresh_at = 0.0                   # when its ConfigMap and Secret volumes are read again
        self.ready_since: tuple[str, str] = ("", now())  # (Ready status, since when)
        self.phase = "Pending"
        self.reported: Optional[str] = None

    @property
    def policy(self) -> str:
        return self.obj["spec"].get("restartPolicy", "Always")

    def status(self, ip: str) -> dict:
        """The pod's status as a kubelet reports it (`ip`: the pod's address, the node's)."""
        statuses, running, done, failed = [], 0, 0, 0
        for c in self.containers:
            st = c.state()
            running += "running" in st
            if "terminated" in st:
                done += 1
                failed += st["terminated"]["exitCode"] != 0
            cs = {"name": c.name, "image": c.spec.get("image", ""), "imageID": "", "state": st,
                  "ready": c.ready and "running" in st, "restartCount": c.restarts, "started": "running" in st,
                  "containerID": f"layernet://{c.proc.pid}" if c.proc is not None else ""}
            if c.last:
                cs["lastState"] = c.last
            statuses.append(cs)
        n = len(self.containers)
        # a container between restarts keeps its pod Running, as on a kubelet (Pending: nothing has started yet);
        # a superseded pod stays Running too (as Failed, its ReplicaSet would make it again)
        restarting = any(c.next_start for c in self.containers) or bool(self.superseded_by and self.started)
        phase = ("Failed" if failed else "Succeeded") if done == n else ("Running" if running or restarting else "Pending")
        ready = "True" if all(cs["ready"] for cs in statuses) else "False"
        if self.ready_since[0] != ready:
            self.ready_since = (ready, now())
        since = self.ready_since[1]
        return {"phase": phase, "hostIP": ip, "hostIPs": [{"ip": ip}], "podIP": ip, "podIPs": [{"ip": ip}],
                "containerStatuses": statuses,
                "startTime": (self.obj.get("status") or {}).get("startTime") or now(),
                "conditions": [{"type": "PodScheduled", "status": "True"},
                               {"type": "Initialized", "status": "True"},
                               {"type": "ContainersReady", "status": ready, "lastTransitionTime": since},
                               {"type": "Ready", "status": ready, "lastTransitionTime": since}]}


class Agent:
    def __init__(self, folder: Path, node: str, ip: str, netns: str, ca: str):
        self.folder, self.node, self.ip, self.netns, self.ca = folder, node, ip, netns, ca
        kc = folder / "pki"
        self.api = Api(f"https://{ip}:6443", kc / "node.crt", kc / "node.key", ca)
        self.pods: dict[str, Pod] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.pull = requests.Session()
        self.pull.trust_env = False
        self.pull.verify = ca

    # ---------------------------------------------------------------- node and lease
    def node_status(self) -> dict:
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "the lab's node agent is ready",
                 "lastHeartbeatTime": now(), "lastTransitionTime": self._since}
        pressure = [{"type": t, "status": "False", "reason": f"KubeletHas{r}", "lastHeartbeatTime": now(),
                     "lastTransitionTime": self._since}
                    for t, r in (("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"),
                                 ("PIDPressure", "SufficientPID"))]
        res = {"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"}
        return {"conditions": pressure + [ready], "capacity": res, "allocatable": res,
                "addresses": [{"type": "InternalIP", "address": self.ip}, {"type": "Hostname", "address": self.node}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
                "nodeInfo": {"kubeletVersion": VERSION, "kubeProxyVersion": VERSION, "operatingSystem": "linux",
                             "architecture": "amd64", "containerRuntimeVersion": "layernet-lab://1",
                             "osImage": "layernet lab node", "kernelVersion": os.uname().release,
                             "machineID": "", "systemUUID": "", "bootID": ""}}

    def register(self) -> None:
        self._since = now()
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node, "labels": {
                    "kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                    "node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/master": "true"}},
                "status": self.node_status()}
        while not self.stopping.is_set():
            try:
                self.api.call("POST", "/api/v1/nodes", body, ok=(201, 409))
                self.api.call("PATCH", f"/api/v1/nodes/{self.node}/status", {"status": self.node_status()},
                              ctype="application/strategic-merge-patch+json")
                break
            except (requests.RequestException, RuntimeError):
                time.sleep(0.2)       # the API server is still starting
        self.renew()
        (self.folder / "node.ready").write_text(now())

    def renew(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.node, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": self.node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_micro()}}
        try:
            self.api.call("PATCH", path + "?fieldManager=layernet-node&force=true", body,
                          ctype="application/apply-patch+yaml")
        except (requests.RequestException, RuntimeError):
            pass

    def heartbeat(self) -> None:
        while not self.stopping.wait(RENEW_EVERY):
            self.renew()
            try:
                self.api.call("PATCH", f"/api/v1/nodes/{self.node}/status", {"status": self.node_status()},
                              ctype="application/strategic-merge-patch+json")
            except (requests.RequestException, RuntimeError):
                pass

    # ---------------------------------------------------------------- events
    def event(self, pod: Pod, reason: str, message: str, kind: str = "Normal") -> None:
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{pod.name}.", "namespace": pod.ns},
                "involvedObject": {"kind": "Pod", "namespace": pod.ns, "name": pod.name, "uid": pod.uid,
                                   "apiVersion": "v1"},
                "reason": reason, "message": message, "type": kind, "count": 1,
                "firstTimestamp": now(), "lastTimestamp": now(), "source": {"component": "kubelet", "host": self.node},
                "reportingComponent": "kubelet", "reportingInstance": self.node}
        try:
            self.api.call("POST", f"/api/v1/namespaces/{pod.ns}/events", body)
        except (requests.RequestException, RuntimeError):
            pass

    # ---------------------------------------------------------------- pods
    def watch(self) -> None:
        """Follow the pods bound to this node (list, then watch from that version; relist on any break)."""
        sel = f"spec.nodeName={self.node}"
        while not self.stopping.is_set():
            try:
                items = self.api.call("GET", f"/api/v1/pods?fieldSelector={sel}")
                self.sync([p for p in items["items"]])
                rv = items["metadata"]["resourceVersion"]
                with self.api.http.get(f"{self.api.server}/api/v1/pods", stream=True, timeout=(5, 90),
                                       params={"fieldSelector": sel, "watch": "1", "resourceVersion": rv,
                                               "timeoutSeconds": "60", "allowWatchBookmarks": "false"}) as r:
                    for line in r.iter_lines():
                        if self.stopping.is_set():
                            return
                        ev = json.loads(line)
                        if ev.get("type") == "ERROR":
                            break
                        self.update(ev["type"], ev["object"])
            except (requests.RequestException, RuntimeError, ValueError):
                time.sleep(0.5)

    def sync(self, objs: list[dict]) -> None:
        seen = set()
        for obj in objs:
            seen.add(obj["metadata"]["uid"])
            self.update("MODIFIED", obj)
        with self.lock:
            gone = [uid for uid in self.pods if uid not in seen]
        for uid in gone:
            self.forget(uid)

    def update(self, kind: str, obj: dict) -> None:
        uid = obj["metadata"]["uid"]
        with self.lock:
            pod = self.pods.get(uid)
            if kind == "DELETED":
                pass
            elif pod is None:
                pod = self.pods[uid] = Pod(self, obj)
            else:
                pod.obj = obj
        if kind == "DELETED":
            self.forget(uid)
        elif obj["metadata"].get("deletionTimestamp"):
            self.terminate(pod)

    def forget(self, uid: str) -> None:
        with self.lock:
            pod = self.pods.pop(uid, None)
        if pod is not None:
            for c in pod.containers:
                _stop(c.proc)

    def terminate(self, pod: Pod) -> None:
        """A pod being deleted: stop its processes, then remove it (the kubelet's last word)."""
        for c in pod.containers:
            _stop(c.proc)
        grace = {"gracePeriodSeconds": 0, "preconditions": {"uid": pod.uid}}
        try:
            self.api.call("DELETE", f"/api/v1/namespaces/{pod.ns}/pods/{pod.name}", grace, ok=(200, 202, 404, 409))
        except (requests.RequestException, RuntimeError):
            pass
        with self.lock:
            self.pods.pop(pod.uid, None)

    def pull_image(self, pod: Pod) -> bool:
        """The image manifest of every container, from its registry, through this level's DNS and proxies."""
        for c in pod.containers:
            image = c.spec.get("image", "")
            if not images.must_pull(c.spec):
                self.event(pod, "Pulled", f"Container image \"{image}\" already present on machine")
                continue
            ok, detail = images.fetch_manifest(self.pull, image)
            if not ok:
                pod.waiting = {"reason": "ImagePullBackOff", "message": f"Back-off pulling image {image!r}: {detail}"}
                self.event(pod, "Failed", f"Failed to pull image {image!r}: {detail}", "Warning")
                return False
            self.event(pod, "Pulled", f"Successfully pulled image {image!r} ({detail})")
        pod.pulled, pod.waiting = True, None
        return True

    def volumes(self, pod: Pod) -> dict[str, Path]:
        """mountPath -> folder on this machine, for the pod's volumes (made once: ConfigMaps and Secrets read, their
        files written with the pod's mount paths pointing at its folders); raises VolumeError naming what is missing."""
        if pod.mounts is not None:
            return pod.mounts
        root = pod.folder / "volumes"
        mounts = volumes.mount_folders(pod.obj["spec"], root)
        files: dict[str, dict[str, bytes]] = {}
        for v in pod.obj["spec"].get("volumes") or []:
            src = volumes.source(v)
            obj = self.api.get(f"/api/v1/namespaces/{pod.ns}/{src[0]}/{src[1]}") if src else None
            files[v["name"]] = volumes.volume_files(v, obj)
        for name, content in files.items():
            volumes.write(root / name, content, mounts)
        pod.mounts = mounts
        pod.refresh_at = time.monotonic() + VOLUME_REFRESH
        return mounts

    def refresh(self, pod: Pod) -> None:
        """Bring a started pod's ConfigMap and Secret volumes up to date with their objects (not those mounted with a
        subPath; an object that went, or an API that does not answer, leaves the files as they were), as a kubelet
        does, so a program that reloads its files (CoreDNS's `reload`) sees the change."""
        if pod.mounts is None or time.monotonic() < pod.refresh_at or not any(c.running for c in pod.containers):
            return
        pod.refresh_at = time.monotonic() + VOLUME_REFRESH
        for v in volumes.refreshed(pod.obj["spec"]):
            plural, name, _ = volumes.source(v)
            try:
                files = volumes.volume_files(v, self.api.get(f"/api/v1/namespaces/{pod.ns}/{plural}/{name}"))
            except (requests.RequestException, RuntimeError, volumes.VolumeError):
                continue
            volumes.write(pod.folder / "volumes" / v["name"], files, pod.mounts)

    def start(self, c: Container, mounts: dict[str, Path]) -> None:
        if self.stopping.is_set():          # the node is going down: nothing starts (or restarts) any more
            return
        # in a mount namespace of its own with the level's /etc/netns files over /etc, as a kubelet gives each pod its
        # own /etc/hosts: a file the lab changes later (a rehearsal's hosts) reaches the pods started afterwards
        # (no namespace name: this process's own network, as in unit tests)
        argv = ([IP, "netns", "exec", self.netns] if self.netns else []) + images.command(c.spec, mounts)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(c.pod.folder)}
        env.update(c.env)
        with open(c.log, "ab") as out:
            c.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      cwd=c.pod.folder, env=env, start_new_session=True)
        c.started_at, c.exit, c.pod.started = now(), None, True
        c.readiness.started(time.monotonic())
        self.event(c.pod, "Started", f"Started container {c.name}")

    def environment(self, pod: Pod, spec: dict) -> dict[str, str]:
        """The container's variables: envFrom (ConfigMaps, Secrets), then env (values, secretKeyRef,
        configMapKeyRef), as the kubelet resolves them; a missing object that is not `optional` is an error naming it
        (the pod then waits in CreateContainerConfigError)."""
        out: dict[str, str] = {}

        def data(kind: str, name: str, optional: bool = False) -> dict[str, str]:
            obj = self.api.get(f"/api/v1/namespaces/{pod.ns}/{kind}/{name}")
            if obj is None and optional:
                return {}
            if obj is None:
                raise RuntimeError(f'{kind[:-1]} "{name}" not found')
            raw = obj.get("data") or {}
            return {k: base64.b64decode(v).decode() for k, v in raw.items()} if kind == "secrets" else dict(raw)

        for src in spec.get("envFrom") or []:
            if "secretRef" in src:
                out.update(data("secrets", src["secretRef"]["name"], bool(src["secretRef"].get("optional"))))
            elif "configMapRef" in src:
                out.update(data("configmaps", src["configMapRef"]["name"], bool(src["configMapRef"].get("optional"))))
        for e in spec.get("env") or []:
            ref = e.get("valueFrom") or {}
            if "value" in e:
                out[e["name"]] = e["value"]
            for kind, key in (("secrets", "secretKeyRef"), ("configmaps", "configMapKeyRef")):
                if key in ref:
                    sel = ref[key]
                    got = data(kind, sel["name"], bool(sel.get("optional")))
                    if sel["key"] in got:
                        out[e["name"]] = got[sel["key"]]
                    elif not sel.get("optional"):
                        raise RuntimeError(f'couldn\'t find key {sel["key"]} in {kind[:-1]} {pod.ns}/{sel["name"]}')
        return out

    # ---------------------------------------------------------------- rollouts on one shared network
    def supersede(self, pod: Pod) -> bool:
        """Before a pod's first start: stop the older pods of its Deployment here (True), or find that a newer
        one is here and give way to it (False)."""
        with self.lock:
            others = {p.uid: p for p in self.pods.values() if p.uid != pod.uid}
        older, newer = rivals(pod.obj, [p.obj for p in others.values()])
        if newer:
            winner = others[newer[-1]["metadata"]["uid"]]
            pod.superseded_by, pod.superseded_uid = f"{winner.ns}/{winner.name}", winner.uid
            return False
        for obj in older:
            old = others[obj["metadata"]["uid"]]
            if old.superseded_by:
                continue
            old.superseded_by, old.superseded_uid = f"{pod.ns}/{pod.name}", pod.uid
            for c in old.containers:
                _stop(c.proc)
            self.event(old, "Killing", f"Stopping its containers for the newer pod {pod.ns}/{pod.name} of its "
                                       f"Deployment (the lab's node shares one network between its pods)")
            self.report(old)
        return True

    def step(self, pod: Pod) -> None:
        """Move one pod on: pull, create volumes, start, restart or finish its containers."""
        if pod.obj["metadata"].get("deletionTimestamp"):
            return
        if not pod.pulled:
            unknown = [c.spec.get("image", "") for c in pod.containers if not images.known(c.spec)]
            if unknown:
                pod.waiting = {"reason": "ImageNotRunnable", "message":
                               f"the lab's node cannot run image {unknown[0]!r} (it runs: {images.summary()})"}
                if pod.reported != "unknown":
                    self.event(pod, "Failed", pod.waiting["message"], "Warning")
                return self.report(pod, "unknown")
            if time.monotonic() < pod.retry_at:
                return
            if not self.pull_image(pod):
                pod.retry_at = time.monotonic() + 5.0
                return self.report(pod, "pull-failed")
            pod.folder.mkdir(parents=True, exist_ok=True)
        if pod.superseded_by:
            with self.lock:
                still = pod.superseded_uid in self.pods
            if still:
                return self.report(pod)
            pod.superseded_by = pod.superseded_uid = ""      # the newer pod went: this one runs again
            for c in pod.containers:
                if c.proc is not None:
                    c.restarts, c.proc, c.next_start = c.restarts + 1, None, 0.0
        if pod.mounts is None and time.monotonic() < pod.retry_at:
            return
        try:
            mounts = self.volumes(pod)
            envs = {c.name: self.environment(pod, c.spec) for c in pod.containers}
        except (requests.RequestException, RuntimeError, volumes.VolumeError) as exc:
            waiting = {"reason": "CreateContainerConfigError", "message": str(exc)[:300]}
            if pod.waiting != waiting:
                self.event(pod, "Failed", f"Error: {waiting['message']}", "Warning")
            pod.waiting, pod.retry_at = waiting, time.monotonic() + 1.0
            return self.report(pod, "config")
        pod.waiting = None
        if not pod.started and not self.supersede(pod):
            return self.report(pod)
        for c in pod.containers:
            c.env = envs[c.name]
            if c.proc is None and c.exit is None:
                self.start(c, mounts)
            elif c.proc is not None and c.proc.poll() is not None and c.exit is None:
                code = c.proc.returncode
                term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                        "startedAt": c.started_at, "finishedAt": now()}
                if pod.policy == "Always" or (pod.policy == "OnFailure" and code != 0):
                    if c.next_start == 0.0:
                        delay = c.backoff = min(BACKOFF_MAX, 0.5 * 2 ** c.restarts)
                        c.next_start = time.monotonic() + delay
                        c.last = {"terminated": term}
                        self.event(pod, "BackOff", f"Back-off restarting container {c.name} (exit {code})", "Warning")
                    elif time.monotonic() >= c.next_start:
                        c.restarts += 1
                        c.next_start = 0.0
                        self.start(c, mounts)
                else:
                    c.exit, c.proc = term, None
        self.refresh(pod)
        self.report(pod)

    def report(self, pod: Pod, key: Optional[str] = None) -> None:
        """Send the pod's status when it changed (phase, containers, readiness) since the last report."""
        status = pod.status(self.ip)
        ready = status["conditions"][-1]["status"]
        digest = json.dumps([status["phase"], status["containerStatuses"], ready, key], sort_keys=True, default=str)
        if digest == pod.reported:
            return
        try:
            self.api.call("PATCH", f"/api/v1/namespaces/{pod.ns}/pods/{pod.name}/status", {"status": status},
                          ctype="application/strategic-merge-patch+json")
            pod.reported = digest
        except (requests.RequestException, RuntimeError):
            pass

    def loop(self) -> None:
        while not self.stopping.wait(0.2):
            with self.lock:
                pods = list(self.pods.values())
            for pod in pods:
                try:
                    self.step(pod)
                except Exception as exc:  # noqa: BLE001 - one pod's trouble must not stop the node
                    pod.waiting = {"reason": "RunContainerError", "message": f"{type(exc).__name__}: {exc}"[:300]}
                    self.report(pod, "error")

    def probe(self) -> None:
        """Run the readiness probes that are due (one thread for the node; a probe waits at most its timeout)."""
        while not self.stopping.wait(0.1):
            with self.lock:
                pods = list(self.pods.values())
            for pod in pods:
                for c in pod.containers:
                    if not c.running or not c.readiness.due(time.monotonic()):
                        continue
                    passed, detail = check(c.readiness.probe, c.spec, self.ip, pod.mounts)
                    c.readiness.record(passed, detail, time.monotonic())
                    if not passed and c.readiness.failing:
                        self.event(pod, "Unhealthy", f"Readiness probe failed: {detail}", "Warning")

    def container_log(self, ns: str, pod_name: str, container: str) -> Optional[Path]:
        with self.lock:
            for pod in self.pods.values():
                if pod.ns == ns and pod.name == pod_name:
                    return next((c.log for c in pod.containers if c.name == container), None)
        hits = sorted((self.folder / "pods").glob(f"{ns}_{pod_name}_*/{container}.log"))
        return hits[-1] if hits else None

    def shutdown(self) -> None:
        self.stopping.set()
        with self.lock:
            pods = list(self.pods.values())
        for pod in pods:
            for c in pod.containers:
                _stop(c.proc)


def _stop(proc: Optional[subprocess.Popen], timeout: float = 2.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def serve_logs(agent: Agent) -> ThreadingHTTPServer:
    """GET /containerLogs/<ns>/<pod>/<container>[?tailLines=N] over HTTPS with client certificates (the API server's)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            url = urlparse(self.path)
            parts = url.path.strip("/").split("/")
            if len(parts) != 4 or parts[0] != "containerLogs":
                return self.send_error(404)
            path = agent.container_log(*parts[1:])
            if path is None or not path.exists():
                return self.send_error(404, "no such container")
            data = path.read_bytes()
            tail = parse_qs(url.query).get("tailLines")
            if tail and tail[0].isdigit():
                data = b"".join(data.splitlines(True)[-int(tail[0]):])
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer((agent.ip, KUBELET_PORT), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(agent.folder / "pki" / "node.crt", agent.folder / "pki" / "node.key")
    ctx.load_verify_locations(agent.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="layernet.lab.clusters.node")
    for flag in ("--folder", "--node", "--ip", "--namespace", "--ca"):
        ap.add_argument(flag, required=True)
    a = ap.parse_args(argv)
    folder = Path(a.folder)
    shutil.rmtree(folder / "pods", ignore_errors=True)
    (folder / "node.ready").unlink(missing_ok=True)
    agent = Agent(folder, a.node, a.ip, a.namespace, a.ca)
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    server = serve_logs(agent)
    agent.register()
    threading.Thread(target=agent.heartbeat, daemon=True).start()
    threading.Thread(target=agent.watch, daemon=True).start()
    threading.Thread(target=agent.probe, daemon=True).start()
    pki = folder / "pki"
    as_admin = Api(agent.api.server, pki / "admin.crt", pki / "admin.key", a.ca)
    threading.Thread(target=servicelb.run, args=(as_admin, a.ip, agent.stopping), daemon=True).start()
    try:
        agent.loop()
    finally:
        agent.shutdown()
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
