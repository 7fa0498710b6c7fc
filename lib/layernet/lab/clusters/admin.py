"""The lab admin's own calls to a level's cluster (what K3s's deploy controller and an operator do as cluster admin):
server-side apply, delete and wait, reads for `lab status`. Requests as the lab's cluster admin, route checked
first, from the jump box's admin side (netns.in_root: also when the caller runs on its internet side). The stages
never use this: they reach the clusters through the kube target and the cluster side."""
from __future__ import annotations

import json
import time
from typing import Optional

import requests

import functools

from layernet.lab import LabError, layout, netns
from layernet.lab.clusters import controlplane

PLURALS = {"ServiceAccount": "serviceaccounts", "ConfigMap": "configmaps", "Service": "services",
           "Deployment": "deployments", "Secret": "secrets", "Namespace": "namespaces"}


def admin_side(func):
    """Run the call on the jump box's admin side, whichever side called it."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return netns.in_root(func, *args, **kwargs)
    return wrapper


_SESSIONS: dict[tuple, requests.Session] = {}


def admin_session(site, level: str):
    """(requests session signed in as the lab's cluster admin, the level's API URL); route checked first. One
    session (its TLS connections kept) per cluster as built: a rebuilt cluster has new keys, and a new session."""
    pki = controlplane.cluster_dir(site, level) / "pki"
    crt = pki / "admin.crt"
    server = controlplane.api_url(site, level)
    key = (server, str(crt), crt.stat().st_mtime_ns if crt.exists() else 0)
    http = _SESSIONS.get(key)
    if http is None:
        layout.check_route(site, site.level(level).node_ip)
        http = requests.Session()
        http.trust_env, http.verify = False, str(layout.ca_cert_path(site))
        http.cert = (str(crt), str(pki / "admin.key"))
        _SESSIONS[key] = http
    return http, server


@admin_side
def deployment_cell(site, level: str, namespace: str, name: str) -> tuple[str, bool]:
    """A Deployment of the level's cluster as `lab status` shows it: ready replicas, its pod's restarts."""
    try:
        http, server = admin_session(site, level)
        r = http.get(f"{server}/apis/apps/v1/namespaces/{namespace}/deployments/{name}", timeout=5)
        if r.status_code == 404:
            return "no deployment", False
        dep = r.json()
        want, ready = dep["spec"].get("replicas", 1), (dep.get("status") or {}).get("readyReplicas", 0)
        sel = ",".join(f"{k}={v}" for k, v in sorted(dep["spec"]["selector"]["matchLabels"].items()))
        pods = http.get(f"{server}/api/v1/namespaces/{namespace}/pods", params={"labelSelector": sel},
                        timeout=5).json().get("items") or []
    except (requests.RequestException, ValueError, KeyError) as exc:
        return f"API unreachable ({type(exc).__name__})", False
    restarts = sum(cs.get("restartCount", 0) for p in pods for cs in (p.get("status") or {}).get("containerStatuses") or [])
    return f"pod {ready}/{want} ready" + (f", {restarts} restart(s)" if restarts else ""), ready >= want


def path(obj: dict) -> str:
    """REST path of a namespaced object (or of a Namespace)."""
    meta, plural = obj["metadata"], PLURALS[obj["kind"]]
    base = "/api/v1" if obj["apiVersion"] == "v1" else f"/apis/{obj['apiVersion']}"
    if obj["kind"] == "Namespace":
        return f"{base}/namespaces/{meta['name']}"
    return f"{base}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"


@admin_side
def apply(site, level: str, objs: list[dict], manager: str) -> int:
    """Server-side apply of `objs` to the level's cluster as `manager`; returns how many."""
    http, server = admin_session(site, level)
    for obj in objs:
        r = http.patch(server + path(obj), data=json.dumps(obj), timeout=10,
                       params={"fieldManager": manager, "force": "true"},
                       headers={"Content-Type": "application/apply-patch+yaml"})
        if r.status_code not in (200, 201):
            raise LabError(f"{level}: {obj['kind']}/{obj['metadata']['name']} refused: HTTP {r.status_code} "
                           f"{r.text[:300]}")
    return len(objs)


@admin_side
def get(site, level: str, api_path: str, params: Optional[dict] = None) -> Optional[dict]:
    http, server = admin_session(site, level)
    r = http.get(server + api_path, params=params, timeout=10)
    if r.status_code == 404:
        return None
    if r.status_code != 200:
        raise LabError(f"{level}: GET {api_path}: HTTP {r.status_code} {r.text[:300]}")
    return r.json()


@admin_side
def delete(site, level: str, api_path: str, wait: float = 30.0) -> bool:
    """Delete in the foreground and wait until it is gone (`wait` 0: do not wait); False when it was not there."""
    http, server = admin_session(site, level)
    r = http.delete(server + api_path, params={"propagationPolicy": "Foreground"}, timeout=10)
    if r.status_code == 404:
        return False
    if r.status_code not in (200, 202):
        raise LabError(f"{level}: DELETE {api_path}: HTTP {r.status_code} {r.text[:300]}")
    deadline = time.monotonic() + wait
    while wait and http.get(server + api_path, timeout=10).status_code != 404:
        if time.monotonic() > deadline:
            raise LabError(f"{level}: {api_path} still there {wait:g} s after its deletion")
        time.sleep(0.1)
    return True


@admin_side
def pod_pids(site, level: str, namespace: str, selector: str) -> list[int]:
    """The process ids of the running containers of the pods `selector` picks (the node runs each as a process)."""
    try:
        pods = (get(site, level, f"/api/v1/namespaces/{namespace}/pods", {"labelSelector": selector}) or {}).get("items")
    except (LabError, requests.RequestException):
        return []
    return [int(cs["containerID"].split("//", 1)[1]) for p in pods or []
            for cs in (p.get("status") or {}).get("containerStatuses") or []
            if "running" in (cs.get("state") or {}) and str(cs.get("containerID", "")).startswith("layernet://")]
