"""The probe matrix: which checks each level runs to prove that exactly the allowed traffic crosses.

`build_matrix(site, allowlist, ca_file)` returns ``{level name: [check, ...]}`` in the JSON form that
`layernet.probe` runs (see its docstring for the check kinds).

Allowed traffic, for every allowed (sample name, port) where the port is a proxied port:
- at a DNS-override level: `dns` (the level's own DNS answers the parent proxy's node IP) and `tls` through
  the chain (connect to the DNS answer; the far end must see the connection come from the egress node);
- at the egress level: `dns` against its upstream resolver (expecting `cloud_ip` when known) and `tls`
  directly to whatever that resolver answers.
A level that neither egresses nor overrides DNS (reaches_azure: false) runs no allowed checks.

Refused traffic, for the site's refused hosts, look-alikes of allowed names, the bare apex of each wildcard,
a ClientHello without SNI and non-TLS bytes (every name checked with `AllowList.allows`, so a look-alike that
happens to be allowed is never expected to fail):
- from each child level, `refused` against its parent proxy's node IP on every proxied port;
- at each DNS-override level without an upstream resolver, `dns-refused` for every refused name.

Every other flow of the flows model that leaves a level's node directly for another level's node (no proxy: MQTT
between the brokers) gets a `path` check per port: the TCP path must be open.
"""
from __future__ import annotations

from typing import Optional

from layernet import flows as flows_model
from layernet.allowlist import AllowList, is_wildcard
from layernet.probe import NO_SNI, NON_TLS


def refused_names(site, allowlist: AllowList) -> list[str]:
    """Names no proxy may let through on any proxied port: the site's list plus look-alikes of the allow list."""
    exact = [e.host for e in allowlist.entries if not is_wildcard(e.host)]
    model = "management.azure.com" if "management.azure.com" in exact else (exact[0] if exact else None)
    names = list(site.lab.refused_hosts)
    if model:
        names += [f"{model}.evil.example", f"x{model}"]
    names += [e.host[2:] for e in allowlist.entries if is_wildcard(e.host)]
    out: list[str] = []
    for name in names:
        name = name.lower()
        if name not in out and not any(allowlist.allows(name, p) for p in site.proxied_ports()):
            out.append(name)
    return out


def allowed_targets(site, allowlist: AllowList) -> list[tuple[str, int]]:
    """(sample name, port) for every allow-list entry and each of its ports the proxies listen on."""
    ports = set(site.proxied_ports())
    seen: list[tuple[str, int]] = []
    for e in allowlist.entries:
        for port in e.ports:
            item = (e.sample_name(), port)
            if port in ports and item not in seen:
                seen.append(item)
    return seen


def build_matrix(site, allowlist: AllowList, ca_file: Optional[str], cloud_ip: Optional[str] = None,
                 egress_peer: Optional[str] = None, echo: bool = True) -> dict[str, list[dict]]:
    """`echo`: the far end names the SNI and peer it saw (the lab's cloud); real endpoints do not, so with
    echo=False a verified handshake is the proof and the egress peer is not checked."""
    egress = site.egress
    peer = (egress_peer or str(egress.node_ip)) if echo else None
    ca = str(ca_file) if ca_file else None
    targets = allowed_targets(site, allowlist)
    refused = refused_names(site, allowlist)
    matrix: dict[str, list[dict]] = {}
    for level in site.chain:
        parent = site.parent(level)
        checks: list[dict] = []
        if level.name == egress.name:
            server, expect, via = (str(level.dns_upstream[0]) if level.dns_upstream else None), cloud_ip, None
        elif level.dns_override and parent is not None:
            server, expect, via = str(level.node_ip), str(parent.node_ip), parent.name
        else:
            server = None
        if server:
            for host in dict.fromkeys(h for h, _ in targets):
                checks.append({"kind": "dns", "host": host, "server": server, "expect_ip": expect, "parent": via})
            for host, port in targets:
                check = {"kind": "tls", "host": host, "port": port, "server": server, "ca_file": ca,
                         "expect_peer": peer, "proxy": via}
                checks.append(check if echo else dict(check, expect_echo=False))
        if parent is not None and parent.proxy:
            for name in refused + [NO_SNI, NON_TLS]:
                for port in site.proxied_ports():
                    checks.append({"kind": "refused", "host": name, "port": port,
                                   "connect_ip": str(parent.node_ip), "proxy": parent.name})
        if level.dns_override and not level.dns_upstream:
            for name in refused:
                checks.append({"kind": "dns-refused", "host": name, "server": str(level.node_ip)})
        for flow in flows_model.outbound(site, level.name, allowlist):
            if flow.via == "direct" and flow.dst_level is not None:
                for port in flow.ports:
                    checks.append({"kind": "path", "host": flow.dst_label, "port": port,
                                   "connect_ip": str(flow.dst.network_address), "flow": flow.purpose})
        matrix[level.name] = checks
    return matrix
