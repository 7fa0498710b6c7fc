"""Load through the full chain on the lab: N clients open new verified TLS connections from the lowest level
through every proxy to the cloud for T seconds; latency percentiles and Envoy memory before and after."""
from __future__ import annotations

from typing import Optional

from layernet.lab import layout
from layernet.allowlist import effective_allowlist
from layernet.harden import lab as hl
from layernet.lab import LabError, procs
from layernet.lab.clusters import admin
from layernet.render import manifests

MAX_CLIENTS, MAX_SECONDS = 256, 300.0


def envoy_rss_mb(site) -> dict[str, Optional[float]]:
    """Resident memory (VmRSS, MB) of each level's Envoy (its pod's process); None when it is not running."""
    selector = ",".join(f"{k}={v}" for k, v in manifests.SELECTOR.items())
    pids = {f"{lv.name}/envoy": admin.pod_pids(site, lv.name, manifests.NAMESPACE, selector)
            for lv in site.levels if lv.proxy}
    return {name: procs.rss_mb(p[0]) if p else None for name, p in sorted(pids.items())}


def _pct(vals: list, q: float) -> Optional[float]:
    if not vals:
        return None
    return round(vals[min(len(vals) - 1, int(q * len(vals)))], 2)


def chain_hosts(site, port: int = 443) -> list[str]:
    return sorted({e.sample_name() for e in effective_allowlist(site).entries if port in e.ports})


def run(site, clients: int = 64, seconds: float = 30.0, port: int = 443) -> dict:
    """Load from the lowest level of the chain to its parent's proxy (and on through every proxy)."""
    if not 1 <= clients <= MAX_CLIENTS or not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"clients 1-{MAX_CLIENTS} and seconds up to {MAX_SECONDS:g}: got {clients}, {seconds}")
    low = site.chain[-1]
    parent = site.parent(low)
    if parent is None or not parent.proxy:
        raise LabError(f"the lowest level {low.name} sends through no proxy")
    ns, ip = layout.namespace(site, low.name), str(parent.node_ip)
    hl.check_addresses(site, ns, [ip])
    before = envoy_rss_mb(site)
    stats = hl.run_wire(ns, {"op": "load", "connect_ip": ip, "port": port, "hosts": chain_hosts(site, port),
                             "ca_file": str(layout.ca_cert_path(site)), "clients": clients, "seconds": seconds},
                        timeout=seconds + 120)
    after = envoy_rss_mb(site)
    c, h = stats["connect_ms"], stats["handshake_ms"]
    return {"from": low.name, "to": f"{parent.name} {ip}:{port}", "clients": stats["clients"],
            "seconds": stats["seconds"], "connections": stats["connections"], "failed": stats["failed"],
            "per_second": round(stats["connections"] / stats["seconds"], 1) if stats["seconds"] else None,
            "connect_p50_ms": _pct(c, 0.5), "connect_p99_ms": _pct(c, 0.99),
            "handshake_p50_ms": _pct(h, 0.5), "handshake_p99_ms": _pct(h, 0.99),
            "rss_before_mb": before, "rss_after_mb": after, "errors": stats["errors"]}
