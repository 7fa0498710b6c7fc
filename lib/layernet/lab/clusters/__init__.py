"""The lab's K3s-shaped clusters: a real Kubernetes control plane per level (kine on SQLite; kube-apiserver,
kube-controller-manager and kube-scheduler in one process as K3s runs them, built from their Go modules by
`make setup`) inside the level's network
namespace, listening on the level's node address at 6443 as K3s does, and a node agent that registers the level's
node and runs the pods bound to it as processes in the namespace.

- controlplane.py  certificates, kubeconfigs and the processes of one level's control plane
- kubeconfig.py    the jump box's kubeconfig: one context per level, named after the site's cluster
- node.py          the node agent (`python -m layernet.lab.clusters.node`)
"""
from __future__ import annotations

from pathlib import Path

KUBE_BUILD = Path(__file__).resolve().parents[4] / ".tools" / "kube"
API_PORT = 6443            # K3s's API port
KUBELET_PORT = 10250       # where the API server reads pod logs from the node
SERVICE_CIDR = "10.43.0.0/16"        # K3s's
SERVICE_IP = "10.43.0.1"             # the `kubernetes` Service


def binary(name: str) -> Path:
    """`kube` (apiserver, controller-manager, scheduler in one binary) or `kine` from the build folder."""
    return KUBE_BUILD / name


def missing() -> str:
    """Why the lab cannot run clusters on this machine ("" when it can)."""
    absent = [n for n in ("kube", "kine") if not binary(n).exists()]
    if absent:
        return (f"the lab's Kubernetes control plane is not built ({', '.join(absent)} missing in {KUBE_BUILD}): "
                f"run `make setup`")
    return ""

