"""The jump box's kubeconfig for the lab's clusters: `<state>/kubeconfig`, one context per level.

A context is named after the level's cluster as the site names it (`levels[].kube_context` when given, else
`azure.clusters[level]`, else `<site>-<level>`), reaches the level's API on its node address at 6443 over the
admin network, trusts the lab CA and signs in with the lab admin's client certificate. `kubectl --kubeconfig
<state>/kubeconfig --context aio-l3 get nodes` works from the jump box.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from layernet.lab import layout
from layernet.lab.clusters import controlplane

FILE = "kubeconfig"


def context_name(site, level: str) -> str:
    lv = site.level(level)
    if lv.kube_context:
        return lv.kube_context
    clusters = getattr(getattr(site, "azure", None), "clusters", None) or {}
    return clusters.get(level) or f"{site.name}-{level}"


def path(site) -> Path:
    return layout.state_dir(site) / FILE


def write(site) -> Path:
    """The kubeconfig of every level's cluster (mode 0600: it holds the admin's key path)."""
    ca = str(layout.ca_cert_path(site))
    clusters, users, contexts = [], [], []
    for lv in site.chain:
        name = context_name(site, lv.name)
        pki = controlplane.cluster_dir(site, lv.name) / "pki"
        clusters.append({"name": name, "cluster": {"server": controlplane.api_url(site, lv.name),
                                                   "certificate-authority": ca}})
        users.append({"name": f"{name}-admin", "user": {"client-certificate": str(pki / "admin.crt"),
                                                        "client-key": str(pki / "admin.key")}})
        contexts.append({"name": name, "context": {"cluster": name, "user": f"{name}-admin"}})
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": contexts[0]["name"] if contexts else "",
           "clusters": clusters, "users": users, "contexts": contexts}
    out = path(site)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(yaml.safe_dump(doc, sort_keys=False))
    return out


def admin_session(site, level: str):
    """(requests session signed in as the lab's cluster admin, the level's API URL); route checked first."""
    import requests

    layout.check_route(site, site.level(level).node_ip)
    pki = controlplane.cluster_dir(site, level) / "pki"
    http = requests.Session()
    http.trust_env, http.verify = False, str(layout.ca_cert_path(site))
    http.cert = (str(pki / "admin.crt"), str(pki / "admin.key"))
    return http, controlplane.api_url(site, level)


def deployment_cell(site, level: str, namespace: str, name: str) -> tuple[str, bool]:
    """A Deployment of the level's cluster as `lab status` shows it: ready replicas, its pod's restarts."""
    import requests

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


def client(site, level: str):
    """A kubernetes ApiClient for the level's cluster, from the jump box's kubeconfig (route checked first)."""
    from kubernetes import config as k8s_config
    layout.check_route(site, site.level(level).node_ip)
    return k8s_config.new_client_from_config(config_file=str(path(site)), context=context_name(site, level))
