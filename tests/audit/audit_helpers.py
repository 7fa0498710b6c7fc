"""Hand-written Envoy access-log lines for the audit tests (the keys of render/envoy.py ACCESS_LOG_FORMAT)."""
from __future__ import annotations

import json
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]


def rec(time="2025-03-01T08:00:00.000Z", level="level3", port=443, source="192.168.102.10:40000",
        sni="management.azure.com", chain="allowed", upstream_host="192.168.104.10:443", cluster="parent_443",
        bytes_in=100, bytes_out=200, duration=10, flags="-", details=None, tf=None, cid=1, **extra) -> str:
    d = {"time": time, "level": level, "listener_port": port, "source": source, "sni": sni, "filter_chain": chain,
         "upstream_host": upstream_host, "upstream_cluster": cluster, "bytes_in": bytes_in, "bytes_out": bytes_out,
         "duration_ms": duration, "response_flags": flags, "details": details, "transport_failure": tf,
         "connection_id": cid}
    d.update(extra)
    return json.dumps(d)


def refused_name(**kw) -> str:
    base = dict(chain=None, upstream_host=None, cluster=None, bytes_out=0, duration=0, flags="NR",
                details="filter_chain_not_found", cid=0, sni="evil.example")
    base.update(kw)
    return rec(**base)


def refused_source(**kw) -> str:
    base = dict(chain="refused-source", upstream_host=None, cluster="refused", bytes_out=0, duration=0, flags="UH",
                source="10.9.0.5:5000")
    base.update(kw)
    return rec(**base)


T = "2025-03-01T08:00:{:06.3f}Z".format
L3 = "192.168.103.10"


def small_log():
    return [
        rec(time=T(1), sni="management.azure.com", bytes_in=10, bytes_out=20),
        rec(time=T(1.001), level="level4", source=f"{L3}:50000", sni="management.azure.com",
            upstream_host="198.51.100.10:443", cluster="dynamic_forward_proxy", bytes_in=10, bytes_out=20),
        rec(time=T(2), sni="mcr.microsoft.com", port=443, bytes_in=5, bytes_out=7),
        rec(time=T(2.003), level="level4", source=f"{L3}:50001", sni="mcr.microsoft.com",
            upstream_host="198.51.100.10:443", cluster="dynamic_forward_proxy", bytes_in=5, bytes_out=7),
        refused_name(time=T(3), sni="evil.example", bytes_in=300),
        refused_name(time=T(4), sni="evil.example", port=8084, bytes_in=300),
        refused_name(time=T(5), sni="evil.example", source="192.168.102.11:1", bytes_in=300),
        refused_source(time=T(6), sni="management.azure.com", bytes_in=517),
        rec(time=T(7), level="level4", source="192.168.104.20:3000", sni="login.microsoftonline.com",
            upstream_host=None, cluster="dynamic_forward_proxy", flags="UF", bytes_in=517, bytes_out=0),
    ]
