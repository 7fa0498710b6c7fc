"""The stages' crossings follow a connection from proxy to proxy with the audit's hop join (`hops.link`): a client
port the child proxy reuses is joined to its own upper connection, and the audit's paths and the crossings agree
on the same records."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from layernet import crossings
from layernet.audit import findings
from layernet.audit.parse import parse_logs
from layernet.site import load_site

ROOT = Path(__file__).resolve().parents[1]
L3 = "192.168.103.10"                         # level3's proxy: the source of what it forwards to level4
T = "2025-03-01T08:00:{:06.3f}Z".format


@pytest.fixture(scope="module")
def site():
    return load_site(ROOT / "params" / "lab.yaml")


def rec(t: float, level: str, source: str, sni: str, local: str | None = None, refused: bool = False) -> dict:
    """An access-log record (render/envoy.py ACCESS_LOG_FORMAT); `local` the upstream local address it used."""
    up = "192.168.104.10:443" if level == "level3" else "198.51.100.10:443"
    return {"time": T(t), "level": level, "listener_port": 443, "source": source, "sni": sni,
            "filter_chain": None if refused else "allowed", "upstream_host": None if refused else up,
            "upstream_cluster": None if refused else "parent_443", "upstream_local": local,
            "bytes_in": 100, "bytes_out": 0 if refused else 200, "duration_ms": 10,
            "response_flags": "NR" if refused else "-", "details": None, "transport_failure": None,
            "connection_id": int(t * 1000)}


def reused_port() -> dict[str, list[dict]]:
    """level3 uses the client port 40000 twice, half a minute apart: a.example.com goes out, b.example.com is
    refused at level4 (the later use)."""
    return {
        "level3": [rec(1, "level3", "192.168.102.20:5000", "a.example.com", local=f"{L3}:40000"),
                   rec(30, "level3", "192.168.102.21:5001", "b.example.com", local=f"{L3}:40000")],
        "level4": [rec(1.002, "level4", f"{L3}:40000", "a.example.com"),
                   rec(30.002, "level4", f"{L3}:40000", "b.example.com", refused=True)],
    }


def by_host(rows: list[dict]) -> dict[str, tuple[str, str]]:
    return {r["host"]: (r["hops"], r["outcome"]) for r in rows}


def test_a_reused_client_port_is_joined_to_its_own_upper_connection(site):
    got = by_host(crossings.join(site, reused_port()))
    assert got == {"a.example.com": ("level3 ✓ → level4 ✓", "reached Azure"),
                   "b.example.com": ("level3 ✓ → level4 ✕", "refused at level4")}


def mixed() -> dict[str, list[dict]]:
    """The reused port above, a port reused within the join window (nearest in time wins), a record without the
    upstream local address (joined by name, port and time), a refusal at level3 and a connection that starts at
    level4 (a level3 workload that is not the proxy)."""
    logs = reused_port()
    logs["level3"] += [rec(40, "level3", "192.168.102.22:6000", "c.example.com", local=f"{L3}:40001"),
                       rec(41, "level3", "192.168.102.23:6001", "d.example.com", local=f"{L3}:40001"),
                       rec(45, "level3", "192.168.102.24:6002", "evil.example", refused=True),
                       rec(50, "level3", "192.168.102.25:6003", "g.example.com")]
    logs["level4"] += [rec(40.003, "level4", f"{L3}:40001", "c.example.com"),
                       rec(41.001, "level4", f"{L3}:40001", "d.example.com", refused=True),
                       rec(47, "level4", "192.168.103.50:7000", "f.example.com"),
                       rec(50.004, "level4", f"{L3}:40100", "g.example.com")]
    return logs


def test_the_audit_and_the_crossings_join_the_same_records_alike(site):
    logs = mixed()
    lines = {lv: [json.dumps(r) for r in recs] for lv, recs in logs.items()}
    p = findings.paths(parse_logs(lines, sources_are_levels=True), site)
    audit = {(r.name, tuple(str(r.path).split(" > ")), r.refused_at) for r in p.itertuples()}
    cx = {(r["host"], tuple(h.rsplit(" ", 1)[0] for h in r["hops"].split(" → ")), r["refused_at"])
          for r in crossings.join(site, logs)}
    assert cx == audit
    assert cx == {("a.example.com", ("level3", "level4"), ""), ("b.example.com", ("level3", "level4"), "level4"),
                  ("c.example.com", ("level3", "level4"), ""), ("d.example.com", ("level3", "level4"), "level4"),
                  ("evil.example", ("level3",), "level3"), ("f.example.com", ("level4",), ""),
                  ("g.example.com", ("level3", "level4"), "")}
