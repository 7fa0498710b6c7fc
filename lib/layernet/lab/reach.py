"""The hosts a role requires (the catalog's `needs`), as the lab's stand-ins contact them and as evidence.

Each stand-in of a role (lab/arcagent.py: arc-agents, lab/aioext.py: aio-extensions) gets in its config the
hosts the allow-list catalog marks required for its role on the site (`targets`, before the site's drops: a
dropped host must still be tried, or dropping it would go unnoticed). Its own calls cover most of them; for the
rest (`reach_calls`) it opens a TLS connection by name through the level's DNS and proxies, offering the cloud
front's echo protocol, so the front answers whatever app serves the name, with the peer the connection came
from. `row` turns what a stand-in recorded (its status file's calls: host, port, ok, observed) into one
evidence row per level and role that names every required host not reached, and the role.
"""
from __future__ import annotations

import json
import socket
import ssl
from typing import Iterable, Optional

from layernet.allowlist import effective_allowlist, host_matches, role_needs
from layernet.evidence import evidence

ECHO_ALPN = "layernet-echo"            # the cloud front's echo (lab/cloud/front.py): it answers whatever the name


def targets(site, role: str) -> list[dict]:
    """[{"host": pattern, "ports": [...], "purpose"}] the catalog marks required for `role` on the site."""
    return [{"host": n.host, "ports": list(n.ports), "purpose": n.purpose}
            for n in role_needs(site, role, required_only=True)]


def covers(pattern: str, port: int, contacted: Iterable[tuple[str, int]]) -> bool:
    """Does one of the contacted (name, port) pairs use the catalog host `pattern` on `port`?"""
    return any(p == port and host_matches(pattern, h) for h, p in contacted)


def uncovered(required: list[dict], contacted: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """(pattern, port) of the required hosts that no contacted (name, port) uses."""
    contacted = list(contacted)
    return [(t["host"], p) for t in required for p in t["ports"] if not covers(t["host"], p, contacted)]


def sample_name(pattern: str) -> str:
    """A name to contact for a catalog host: the host itself, or a fixed label under a wildcard."""
    return "layernet-probe" + pattern[1:] if pattern.startswith("*.") else pattern


def reach_calls(required: list[dict], contacted: Iterable[tuple[str, int]]) -> list[dict]:
    """One REACH call (TLS by name, the front's echo) per required host the stand-in's own calls do not use."""
    return [{"step": f"reach {pattern}", "method": "REACH", "url": f"{sample_name(pattern)}:{port}", "need": pattern}
            for pattern, port in uncovered(required, contacted)]


def echo(host: str, port: int, ca_file: str, timeout: float) -> tuple[bool, str, Optional[str]]:
    """Open TLS to host:port by name (the level's DNS, then its proxies), verify the lab CA's certificate for the
    name, and read the front's echo line: (ok, observed, peer the cloud saw)."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.set_alpn_protocols([ECHO_ALPN])
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            tls.settimeout(timeout)
            line = tls.recv(4096).decode("utf-8", "replace").strip()
    info = json.loads(line) if line.startswith("{") else {}
    ok = info.get("host", "").lower() == host.lower()
    return ok, ("TLS by name, answered by the cloud" if ok else f"unexpected answer {line[:80]!r}"), info.get("peer")


def row(site, role: str, level: str, calls: Optional[list[dict]], who: str, blocked_on: Optional[str] = None) -> dict:
    """The evidence row of `level` for `role`: every required host reached by the stand-in (`calls`: its status
    rows {host, port, ok, observed}), or the ones that were not, by name, with the role (`who` says it in words)."""
    required = targets(site, role)
    calls = calls or []
    missing = []
    for t in required:
        for port in t["ports"]:
            tried = [c for c in calls if c.get("port") == port and covers(t["host"], port, [(c.get("host", ""), port)])]
            if any(c.get("ok") for c in tried):
                continue
            why = tried[-1].get("observed") if tried else "not tried yet" + (f" (blocked on {blocked_on})"
                                                                              if blocked_on else "")
            missing.append(f"{t['host']}:{port} ({why})")
    n = sum(len(t["ports"]) for t in required)
    check = f"hosts required by {role}"
    expected = f"all {n} reached through the proxies"
    if not missing:
        return evidence(level, check, expected, f"{n} of {n} reached", True)
    al = effective_allowlist(site)
    dropped = [f"{t['host']}:{p}" for t in required for p in t["ports"] if not al.allows(sample_name(t["host"]), p)]
    hint = (f"the allow list marks these hosts required for {who} ({role}) and {level}'s {who} did not reach: "
            + "; ".join(missing)
            + (f". Not on the site's allow list: {', '.join(dropped)} (allowlist.drop_hosts: stop dropping it)"
               if dropped else ""))
    return evidence(level, check, expected, f"not reached: {', '.join(m.split(' (')[0] for m in missing)}", False,
                    hint)
