"""Where a site runs: its target, its clusters' own side and its Azure side, chosen here by `site.target`.

`lab` runs the site's levels as network namespaces on this machine with a K3s-shaped cluster each, reached through
the kube path (lab.py), with stand-ins for what the clusters and Azure
do (lab_cluster.py, lab_azure.py); `kube` reaches one Kubernetes context per level (kube.py), whose
clusters and Azure are the real ones (cluster.py, azure_side.py). Callers ask here and never branch on the kind.
"""
from __future__ import annotations

from layernet.targets.azure_side import AzureSide
from layernet.targets.base import Target
from layernet.targets.cluster import Cluster
from layernet.targets.kube import KubeTarget
from layernet.targets.lab import LabTarget
from layernet.targets.lab_azure import LabAzure
from layernet.targets.lab_cluster import LabCluster


def _plant_cluster(site, target: KubeTarget) -> Cluster:
    return Cluster(site, api=target.api)


def _lab_cluster(site, target: LabTarget) -> Cluster:
    return LabCluster(site)


# site.target -> (Target class, cluster side from (site, target), Azure side class)
SIDES = {
    "lab": (LabTarget, _lab_cluster, LabAzure),
    "kube": (KubeTarget, _plant_cluster, AzureSide),
}
TARGETS: dict[str, type[Target]] = {kind: sides[0] for kind, sides in SIDES.items()}


def target_class(site) -> type[Target]:
    """The Target class of the site (its class attributes answer without connecting to anything)."""
    return TARGETS[site.target]


def get_target(site) -> Target:
    return target_class(site)(site)


def sides(site, target: Target | None = None) -> tuple[Target, Cluster, AzureSide]:
    """The site's target, cluster side and Azure side (the given target, or a new one)."""
    _, make_cluster, make_azure = SIDES[site.target]
    target = target if target is not None else target_class(site)(site)
    return target, make_cluster(site, target), make_azure(site)
