"""Kubernetes objects that run a level's Envoy: Namespace, ConfigMap, Deployment, Service.

- the Deployment's pod template carries ``layernet/config-sha256`` (sha256 of envoy.yaml), so a changed
  bootstrap rolls the pods without a manual delete;
- Envoy runs as a non-root user; ``net.ipv4.ip_unprivileged_port_start=0`` (a namespaced, safe sysctl)
  lets it bind 443 without extra capabilities;
- the image comes from the site (``images.envoy``, default from `layernet.images.DEFAULTS`); a level whose
  ``images.mode`` is ``import`` gets ``imagePullPolicy: Never``, so a missing import fails at once
  (ErrImageNeverPull) instead of waiting on a pull that cannot reach a registry;
- the LoadBalancer Service publishes the listener ports only (the admin port stays on 127.0.0.1 inside the
  pod) with ``externalTrafficPolicy: Local``, so Envoy sees the real client address that its
  source-range filter chains check.
"""
from __future__ import annotations

import hashlib

from layernet.render.envoy import ENVOY_ARGS
from layernet.render.util import dump_yaml_all

NAMESPACE = "layernet"
APP = "layernet-envoy"
CONTAINER = "envoy"
SELECTOR = {"app.kubernetes.io/name": APP}
CONFIG_ANNOTATION = "layernet/config-sha256"
ENVOY_UID = 101


def config_sha256(envoy_yaml: str) -> str:
    return hashlib.sha256(envoy_yaml.encode()).hexdigest()


def pull_policy(site, level) -> str:
    return "Never" if site.images.mode_of(level.name) == "import" else "IfNotPresent"


def envoy_objects(site, level, envoy_yaml: str, listener_ports: list[int]) -> list[dict]:
    labels = {"app.kubernetes.io/name": APP, "app.kubernetes.io/managed-by": "layernet", "layernet/level": level.name}
    selector = SELECTOR
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": dict(labels)}}
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": APP, "namespace": NAMESPACE, "labels": dict(labels)},
        "data": {"envoy.yaml": envoy_yaml},
    }
    container = {
        "name": CONTAINER,
        "image": site.images.reference("envoy", site.azure.cloud),
        "imagePullPolicy": pull_policy(site, level),
        "command": ["envoy"],
        "args": ["-c", "/etc/envoy/envoy.yaml", *ENVOY_ARGS, "--log-level", "info"],
        "ports": [{"name": f"tls-{p}", "containerPort": p, "protocol": "TCP"} for p in listener_ports],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "config", "mountPath": "/etc/envoy", "readOnly": True}],
    }
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP, "namespace": NAMESPACE, "labels": dict(labels)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(selector)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {CONFIG_ANNOTATION: config_sha256(envoy_yaml)},
                },
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": ENVOY_UID,
                        "runAsGroup": ENVOY_UID,
                        "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
                    },
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": APP}}],
                },
            },
        },
    }
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": APP, "namespace": NAMESPACE, "labels": dict(labels)},
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",
            "selector": dict(selector),
            "ports": [{"name": f"tls-{p}", "protocol": "TCP", "port": p, "targetPort": p} for p in listener_ports],
        },
    }
    return [ns, cm, deploy, svc]


def render_envoy_manifests(site, level, envoy_yaml: str, listener_ports: list[int]) -> str:
    return dump_yaml_all(envoy_objects(site, level, envoy_yaml, listener_ports))
