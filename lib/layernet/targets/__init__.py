"""Where a site's artifacts are put in place and probed: one `Target` per site (base.py), chosen here.

`lab` runs the site's levels as network namespaces on this machine (lab.py); `kube` reaches one Kubernetes context
per level (kube.py). Callers ask `get_target(site)` and never branch on the kind.
"""
from __future__ import annotations

from layernet.targets.base import Target
from layernet.targets.kube import KubeTarget
from layernet.targets.lab import LabTarget

TARGETS: dict[str, type[Target]] = {"lab": LabTarget, "kube": KubeTarget}


def target_class(site) -> type[Target]:
    """The Target class of the site (its class attributes answer without connecting to anything)."""
    return TARGETS[site.target]


def get_target(site) -> Target:
    return target_class(site)(site)
