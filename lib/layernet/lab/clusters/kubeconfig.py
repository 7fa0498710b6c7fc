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


def client(site, level: str):
    """A kubernetes ApiClient for the level's cluster, from the jump box's kubeconfig (route checked first)."""
    from kubernetes import config as k8s_config
    layout.check_route(site, site.level(level).node_ip)
    return k8s_config.new_client_from_config(config_file=str(path(site)), context=context_name(site, level))
