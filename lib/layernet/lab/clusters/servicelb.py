"""The level's service load balancer, what K3s's ServiceLB is to a K3s node: a Service of type LoadBalancer gets
the node's address as its ingress, because every lab pod listens on the node's own network.

K3s runs this controller in its server process with the server's credentials (a node's own identity may not write
a Service's status); the lab runs it beside the node agent, as the cluster admin.
"""
from __future__ import annotations

import threading

import requests

EVERY = 1.0     # seconds between two looks at the Services


def ingress_patches(services: list[dict], ip: str) -> list[tuple[str, dict]]:
    """(status path, merge patch) for every LoadBalancer Service whose ingress is not the node's address."""
    out = []
    want = [{"ip": ip, "ipMode": "VIP"}]
    for svc in services:
        spec, meta = svc.get("spec") or {}, svc["metadata"]
        if spec.get("type") != "LoadBalancer":
            continue
        have = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if [i.get("ip") for i in have] != [ip]:
            out.append((f"/api/v1/namespaces/{meta['namespace']}/services/{meta['name']}/status",
                        {"status": {"loadBalancer": {"ingress": want}}}))
    return out


def run(api, ip: str, stopping: threading.Event) -> None:
    """Until `stopping`: give every LoadBalancer Service the node's address (api: node.Api as the admin)."""
    while not stopping.wait(EVERY):
        try:
            items = (api.get("/api/v1/services") or {}).get("items") or []
            for path, patch in ingress_patches(items, ip):
                api.call("PATCH", path, patch, ctype="application/merge-patch+json")
        except (requests.RequestException, RuntimeError, ValueError):
            continue
