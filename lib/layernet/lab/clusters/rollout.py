"""Which pods of a Deployment a newer pod takes the place of on the lab's node.

Every pod of a lab node runs in the node's network namespace, so a Deployment's new pod cannot bind the ports its
old pod holds: before the new pod starts, the node agent stops the pods `rivals` calls older (node.py says why and
what they report). Pure functions of pod objects.
"""
from __future__ import annotations

from typing import Optional


def deployment_of(obj: dict) -> Optional[tuple[str, str, str]]:
    """(namespace, Deployment, pod-template-hash) of a pod a Deployment's ReplicaSet owns (the ReplicaSet is named
    `<deployment>-<pod-template-hash>`); None for any other pod."""
    meta = obj.get("metadata") or {}
    digest = (meta.get("labels") or {}).get("pod-template-hash")
    rs = next((o.get("name") or "" for o in meta.get("ownerReferences") or [] if o.get("kind") == "ReplicaSet"), "")
    if not digest or not rs.endswith("-" + digest) or len(rs) == len(digest) + 1:
        return None
    return meta.get("namespace") or "", rs[:-len(digest) - 1], digest


def rivals(obj: dict, others: list[dict]) -> tuple[list[dict], list[dict]]:
    """(older, newer), each oldest first: the pods among `others` of `obj`'s Deployment with another
    pod-template-hash and not being deleted, created no later than `obj` / after it."""
    mine = deployment_of(obj)
    if mine is None:
        return [], []
    born = obj["metadata"].get("creationTimestamp") or ""
    older, newer = [], []
    for other in sorted(others, key=lambda o: o["metadata"].get("creationTimestamp") or ""):
        theirs, meta = deployment_of(other), other["metadata"]
        if theirs is None or theirs[:2] != mine[:2] or theirs[2] == mine[2] or meta.get("deletionTimestamp") \
                or meta.get("uid") == obj["metadata"].get("uid"):
            continue
        (newer if (meta.get("creationTimestamp") or "") > born else older).append(other)
    return older, newer
