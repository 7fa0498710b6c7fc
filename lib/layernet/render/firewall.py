"""Isolation rules per level: an nftables ruleset and the human-readable "IP allow list".

What crosses a level boundary is exactly the flows model (layernet.flows): the IP allow list is its crossing
flows; a level's input chain is the flows that end at its node, its output chain the flows its node starts;
replies to all of them pass by connection tracking.

The ruleset (table ``inet layernet``) is written for a level's own network namespace or host firewall, or
for the router in front of the level. It drops and counts everything else, so on a K3s node it must be
merged with the cluster's own traffic (pods, service network, API server) before it is loaded there.
"""
from __future__ import annotations

from typing import Optional

from layernet import flows as flows_model
from layernet.flows import DNS_PORT, Flow  # noqa: F401  (DNS_PORT is part of this module's interface)

TABLE = "layernet"


def _set(items: list) -> str:
    return str(items[0]) if len(items) == 1 else "{ " + ", ".join(str(p) for p in items) + " }"


def _addr(net) -> str:
    return str(net.network_address) if net.prefixlen == 32 else str(net)


def _match(f: Flow) -> str:
    """The nftables protocol/port match of a flow ("" for any protocol)."""
    if not f.protocols:
        return ""
    if f.protocols == ("tcp",) or f.protocols == ("udp",):
        return f"{f.protocols[0]} dport {_set(list(f.ports))}" if f.ports else f"meta l4proto {f.protocols[0]}"
    proto = "meta l4proto { " + ", ".join(f.protocols) + " }"
    return f"{proto} th dport {_set(list(f.ports))}" if f.ports else proto


def _rule(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def firewall_rows(site, allowlist=None) -> list[dict]:
    """The rules a network team implements, one row per crossing flow (see layernet.flows).

    Keys: level (whose boundary the row opens), from, to, protocol, ports, purpose.
    """
    return [{"level": f.boundary, "from": f.src_label, "to": f.dst_label, "protocol": f.protocols_text(),
             "ports": f.ports_text(), "purpose": f.purpose} for f in flows_model.crossing(site, allowlist)]


def render_nftables(site, level, allowlist=None) -> str:
    node = str(level.node_ip)
    I = [
        "ct state established,related accept",
        "ct state invalid drop",
        'iifname "lo" accept',
    ]
    for f in flows_model.inbound(site, level.name, allowlist):
        I.append(_rule(f"ip saddr {_addr(f.src)} ip daddr {node}", _match(f), f'accept comment "{f.rule}"'))
    I.append('counter drop comment "everything else"')
    O = [
        "ct state established,related accept",
        'oifname "lo" accept',
    ]
    for f in flows_model.outbound(site, level.name, allowlist):
        O.append(_rule(f"ip daddr {_addr(f.dst)}" if f.dst is not None else "", _match(f), f'accept comment "{f.rule}"'))
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
