"""Isolation rules per level: an nftables ruleset and the human-readable "IP allow list".

What crosses a level boundary, and nothing else:

- the child network -> this level's node on the proxied ports (when this level runs a proxy) and on DNS
  53/udp+tcp (when this level runs a DNS override);
- this level's node -> the parent level's node on the proxied ports;
- the egress level's node -> any address on the proxied ports and its DNS upstreams on 53/udp+tcp;
- the admin network (jump box) -> every level node;
- replies to all of the above (connection tracking).

The ruleset (table ``inet layernet``) is written for a level's own network namespace or host firewall, or
for the router in front of the level. It drops and counts everything else, so on a K3s node it must be
merged with the cluster's own traffic (pods, service network, API server) before it is loaded there.
"""
from __future__ import annotations

from typing import Optional

TABLE = "layernet"
DNS_PORT = 53


def _ports(site, allowlist=None) -> list[int]:
    ports = list(site.proxied_ports())
    if allowlist is not None:
        ports = [p for p in ports if allowlist.hosts_for_port(p)]
    return ports


def _set(ports: list[int]) -> str:
    return str(ports[0]) if len(ports) == 1 else "{ " + ", ".join(str(p) for p in ports) + " }"


def firewall_rows(site, allowlist=None) -> list[dict]:
    """The rules a network team implements, one row per (from, to, protocol, ports).

    Keys: level (whose boundary the row opens), from, to, protocol, ports, purpose.
    """
    ports = ", ".join(str(p) for p in _ports(site, allowlist))
    rows: list[dict] = []

    def add(level, src, dst, proto, prt, purpose):
        rows.append({"level": level, "from": src, "to": dst, "protocol": proto, "ports": prt, "purpose": purpose})

    for lv in site.chain:
        child = site.child(lv)
        parent = site.parent(lv)
        add(lv.name, f"{site.admin.network} (admin network)", f"{lv.node_ip} ({lv.name} node)", "any", "any",
            "administration from the jump box (kubectl, ssh)")
        if child is not None and lv.proxy:
            add(lv.name, f"{child.network} ({child.name} network)", f"{lv.node_ip} ({lv.name} node)", "tcp", ports,
                f"TLS from {child.name} to the {lv.name} proxy (SNI checked against the allow list)")
        if child is not None and lv.dns_override:
            add(lv.name, f"{child.network} ({child.name} network)", f"{lv.node_ip} ({lv.name} node)", "udp, tcp",
                str(DNS_PORT), f"DNS from {child.name} to the {lv.name} DNS override")
        if parent is not None:
            add(lv.name, f"{lv.node_ip} ({lv.name} node)", f"{parent.node_ip} ({parent.name} node)", "tcp", ports,
                f"TLS from {lv.name} to the {parent.name} proxy")
        if lv.name == site.egress_level:
            add(lv.name, f"{lv.node_ip} ({lv.name} node)", "any (internet)", "tcp", ports,
                "allow-listed Azure endpoints, by name through the egress proxy")
            for up in lv.dns_upstream:
                add(lv.name, f"{lv.node_ip} ({lv.name} node)", f"{up} (DNS upstream)", "udp, tcp", str(DNS_PORT),
                    "name resolution for the egress proxy")
    return rows


def render_nftables(site, level, allowlist=None) -> str:
    ports = _ports(site, allowlist)
    child = site.child(level)
    parent = site.parent(level)
    node = str(level.node_ip)
    I = [
        "ct state established,related accept",
        "ct state invalid drop",
        'iifname "lo" accept',
        f'ip saddr {site.admin.network} ip daddr {node} accept comment "admin network (jump box)"',
    ]
    sources = [(level.network, "own network")]
    if child is not None:
        sources.append((child.network, f"{child.name} network"))
    for net, what in sources:
        if level.proxy and ports:
            I.append(f'ip saddr {net} ip daddr {node} tcp dport {_set(ports)} accept comment "{what} to the proxy"')
        if level.dns_override:
            I.append(f'ip saddr {net} ip daddr {node} meta l4proto {{ udp, tcp }} th dport {DNS_PORT} accept comment "{what} to DNS"')
    I.append('counter drop comment "everything else"')
    O = [
        "ct state established,related accept",
        'oifname "lo" accept',
    ]
    if parent is not None and ports:
        O.append(f'ip daddr {parent.node_ip} tcp dport {_set(ports)} accept comment "to the {parent.name} proxy"')
    if level.name == site.egress_level:
        if ports:
            O.append(f'tcp dport {_set(ports)} accept comment "egress proxy to allow-listed endpoints"')
        if level.dns_upstream:
            ups = _set([str(u) for u in level.dns_upstream])  # type: ignore[list-item]
            O.append(f'ip daddr {ups} meta l4proto {{ udp, tcp }} th dport {DNS_PORT} accept comment "DNS upstream"')
    O.append('counter drop comment "everything else"')
    L = [
        f"# nftables for {site.name}/{level.name} ({level.node_ip}), rendered by layernet (do not edit).",
        f"# Load: nft -f nftables.nft   (replaces nothing else; delete table inet {TABLE} first to reload)",
        f"table inet {TABLE} {{",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy drop;",
        *[f"\t\t{r}" for r in I],
        "\t}",
        "",
        "\tchain output {",
        "\t\ttype filter hook output priority filter; policy drop;",
        *[f"\t\t{r}" for r in O],
        "\t}",
        "}",
    ]
    return "\n".join(L) + "\n"


def render_allow_list_md(site, level: Optional[object] = None, allowlist=None) -> str:
    rows = firewall_rows(site, allowlist)
    title = f"IP allow list: {site.name}"
    if level is not None:
        rows = [r for r in rows if r["level"] == level.name]
        title += f" / {level.name}"
    L = [f"# {title}", "",
         "Traffic the routers and firewalls between the levels must allow; everything else is dropped.", "",
         "| from | to | protocol | ports | purpose |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        L.append(f"| {r['from']} | {r['to']} | {r['protocol']} | {r['ports']} | {r['purpose']} |")
    return "\n".join(L) + "\n"
