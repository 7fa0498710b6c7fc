"""What K3s installs in every cluster on its own, installed in each lab cluster when it comes up: CoreDNS.

K3s ships its CoreDNS as a packaged manifest (kube-system: ServiceAccount, ConfigMap ``coredns`` with the Corefile
and NodeHosts, Deployment ``coredns``, Service ``kube-dns``), whose Corefile imports the optional
``coredns-custom`` ConfigMap. A plant's cluster has it before layernet arrives; stage 01 then applies only
``coredns-custom`` and ``coredns-external`` and rolls this Deployment, on the lab exactly as on a plant.

The lab's Corefile is K3s's default shape (`render.dns.k3s_corefile`) at K3s's paths (/etc/coredns), with
health and ready on the node address, where the node agent's readiness probe asks them (every lab pod shares
the node's network). The image is K3s's bundled one, present on the node without a pull (its airgap images).
"""
from __future__ import annotations

from pathlib import Path

from layernet.lab.clusters import admin
from layernet.render.dns import COREDNS_CUSTOM, COREDNS_NAMESPACE, COREDNS_SELECTOR, k3s_corefile, node_hosts

COREDNS_IMAGE = "rancher/mirrored-coredns-coredns:1.12.3"      # the image K3s bundles
KUBE_DNS_IP = "10.43.0.10"                                      # K3s's cluster DNS address
CONF_DIR = Path("/etc/coredns")
HEALTH_PORT, READY_PORT = 8080, 8181
FIELD_MANAGER = "k3s"


def coredns_objects(site, level) -> list[dict]:
    """K3s's CoreDNS add-on for the level's cluster, in apply order."""
    ip = str(level.node_ip)
    ns, labels = COREDNS_NAMESPACE, {**COREDNS_SELECTOR, "kubernetes.io/name": "CoreDNS"}
    corefile = k3s_corefile(site, level, CONF_DIR, health=f"{ip}:{HEALTH_PORT}", ready=f"{ip}:{READY_PORT}")
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": ns}}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": ns},
          "data": {"Corefile": corefile, "NodeHosts": node_hosts(site, level)}}
    container = {
        "name": "coredns", "image": COREDNS_IMAGE, "imagePullPolicy": "IfNotPresent",
        "args": ["-conf", str(CONF_DIR / "Corefile")],
        "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                  {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": READY_PORT, "scheme": "HTTP"},
                           "periodSeconds": 2, "successThreshold": 1, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "100m", "memory": "70Mi"}, "limits": {"memory": "170Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["all"]}},
        "volumeMounts": [{"name": "config-volume", "mountPath": str(CONF_DIR), "readOnly": True},
                         {"name": "custom-config-volume", "mountPath": str(CONF_DIR / "custom"), "readOnly": True}],
    }
    deploy = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": ns, "labels": dict(labels)},
        "spec": {
            "revisionHistoryLimit": 0,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "selector": {"matchLabels": dict(COREDNS_SELECTOR)},
            "template": {
                "metadata": {"labels": dict(COREDNS_SELECTOR)},
                "spec": {
                    "priorityClassName": "system-cluster-critical", "serviceAccountName": "coredns",
                    "dnsPolicy": "Default", "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [container],
                    "volumes": [
                        {"name": "config-volume", "configMap": {"name": "coredns", "items": [
                            {"key": "Corefile", "path": "Corefile"}, {"key": "NodeHosts", "path": "NodeHosts"}]}},
                        {"name": "custom-config-volume", "configMap": {"name": COREDNS_CUSTOM, "optional": True}},
                    ],
                },
            },
        },
    }
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "kube-dns", "namespace": ns, "labels": dict(labels)},
           "spec": {"selector": dict(COREDNS_SELECTOR), "clusterIP": KUBE_DNS_IP,
                    "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                              {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}}
    return [sa, cm, deploy, svc]


def install(site) -> int:
    """Apply the add-ons to every level's cluster as K3s's deploy controller does (server-side apply, as the
    cluster admin); returns how many objects. Does not wait: stage 01 waits for CoreDNS when it rolls it."""
    return sum(admin.apply(site, lv.name, coredns_objects(site, lv), FIELD_MANAGER) for lv in site.levels)
