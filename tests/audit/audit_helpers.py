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
