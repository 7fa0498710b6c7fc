"""Where a level's Envoy and CoreDNS keep their files on this machine: the pod folders of the level's node
(lab/clusters/node.py: `<cluster>/pods/<namespace>_<pod>_<uid>/`, a container's output in `<container>.log`, volumes
in `volumes/<name>/`). Only the lab's own proofs read them (the hardening checks); stages read logs through the
target."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from layernet.lab import layout
from layernet.lab.clusters import controlplane
from layernet.render import manifests
from layernet.render.dns import COREDNS_NAMESPACE

ENVOY_POD = f"{manifests.NAMESPACE}_{manifests.APP}-"
COREDNS_POD = f"{COREDNS_NAMESPACE}_coredns-"


def _newest_pod(site, level: str, prefix: str) -> Optional[Path]:
    pods = controlplane.cluster_dir(site, level) / "pods"
    found = sorted(pods.glob(f"{prefix}*"), key=lambda p: p.stat().st_mtime) if pods.is_dir() else []
    return found[-1] if found else None


def envoy_access_log(site, level: str) -> Path:
    """The file the level's Envoy writes its JSON access log to (mixed with its own output on a cluster)."""
    pod = _newest_pod(site, level, ENVOY_POD)
    return pod / f"{manifests.CONTAINER}.log" if pod else layout.level_dir(site, level) / "no-envoy-pod.log"


def coredns_log(site, level: str) -> Path:
    """The level's CoreDNS query log (its `log` plugin's output)."""
    pod = _newest_pod(site, level, COREDNS_POD)
    return pod / "coredns.log" if pod else layout.level_dir(site, level) / "no-coredns-pod.log"


def coredns_config(site, level: str) -> list[Path]:
    """The level's Corefile and the coredns-custom keys it imports."""
    pod = _newest_pod(site, level, COREDNS_POD)
    if pod is None:
        return []
    vols = pod / "volumes"
    return [vols / "config-volume" / "Corefile", *sorted((vols / "custom-config-volume").glob("*"))]


def container_log(site, level: str, pod: dict, container: str) -> Path:
    """The file a pod's container writes its output to, on the level's node."""
    meta = pod["metadata"]
    folder = f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
    return controlplane.cluster_dir(site, level) / "pods" / folder / f"{container}.log"
