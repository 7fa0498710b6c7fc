"""THE model of allowed traffic: every flow that may reach a level's node, computed once from the site.

A `Flow` is (kind, source range, destination range, protocols, ports, the level whose boundary opens it, how it
is checked, why). `flows(site, allowlist)` returns them in a fixed order; everything that needs to know "what may
cross" reads this list and nothing else:

- render/firewall.py  the IP allow list (crossing flows) and each level's nftables (inbound: flows to the level's
                      node; outbound: flows from the level's node);
- lab/netns.py        the plant's router (crossing flows between the level networks, the admin network, the cloud);
- matrix.py           which levels probe through which proxy, on which ports;
- harden/checks.py    the isolation scan's expectation for every (source level, address, protocol, port);
- topology.py         the hops drawn between the levels.

Kinds today:
  kube-api     admin network (jump box) -> every level node on 6443/tcp: the level cluster's Kubernetes API
               (kubectl, the runbooks' apply, probe Jobs, logs for the audit)
  admin        admin network (jump box) -> every level node, any protocol
  proxy-local  a level's own network -> its proxy, on the proxied ports (does not cross a level boundary)
  dns-local    a level's own network -> its DNS override, 53/udp+tcp (does not cross)
  proxy        a child level's network -> this level's proxy, on the proxied ports (TLS, SNI checked by Envoy)
  dns          a child level's network -> this level's DNS override, 53/udp+tcp
  uplink       a level's node -> its parent's proxy, on the proxied ports
  egress       the egress level's node -> the internet, on the proxied ports (by name through the egress proxy)
  egress-dns   the egress level's node -> each of its DNS upstreams, 53/udp+tcp
  mqtt         a level's node -> its parent's node on the MQTT port (east-west, not through Envoy), when one of the
               level's dataflows sends to the parent's broker (telemetry.dataflows, telemetry.mqtt)
  kafka        the egress level's node -> the internet on 9093, when its dataflow sends to Event Hubs and 9093 is
               not already a proxied port

A new kind of traffic is one more block in `flows()`: every consumer above follows.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

from layernet.site.model import DNS_PORT, KUBE_API_PORT  # noqa: F401  (part of this module's interface)

KAFKA_PORT = 9093
ANY = ()      # protocols/ports: any


@dataclass(frozen=True)
class Flow:
    kind: str
    src_level: Optional[str]             # None: the admin network
    src: ipaddress.IPv4Network
    src_label: str
    dst_level: Optional[str]             # None: outside the plant (the internet, an upstream resolver)
    dst: Optional[ipaddress.IPv4Network]  # None: any address (the internet)
    dst_label: str
    protocols: tuple[str, ...]           # ("tcp",), ("udp", "tcp"); ANY
    ports: tuple[int, ...]               # ANY
    boundary: str                        # the level whose firewall opens this flow (IP allow list grouping)
    via: str                             # what checks it: "envoy (SNI)", "DNS override", "direct"
    purpose: str                         # the sentence of the IP allow list
    rule: str                            # the short comment on the nftables rule
    crosses: bool = True                 # False: inside one level's network

    @property
    def src_is_node(self) -> bool:
        return self.src.prefixlen == 32

    def allows(self, src_ip, dst_ip, proto: str, port: Optional[int]) -> bool:
        """Would this flow let a packet from src_ip to dst_ip (proto 'tcp'/'udp'/'icmp', port) through?"""
        src_ip, dst_ip = ipaddress.ip_address(src_ip), ipaddress.ip_address(dst_ip)
        if src_ip not in self.src:
            return False
        if self.dst is not None and dst_ip not in self.dst:
            return False
        if self.protocols and proto not in self.protocols:
            return False
        return not self.ports or port in self.ports

    def ports_text(self) -> str:
        return ", ".join(str(p) for p in self.ports) if self.ports else "any"

    def protocols_text(self) -> str:
        return ", ".join(sorted(self.protocols, key=lambda p: (p != "udp", p))) if self.protocols else "any"


def _host(ip) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"{ip}/32")


def proxy_ports(site, allowlist=None) -> tuple[int, ...]:
    """The ports every proxy listens on: the site's proxied ports that at least one allowed host uses."""
    ports = list(site.proxied_ports())
    if allowlist is not None:
        ports = [p for p in ports if allowlist.hosts_for_port(p)]
    return tuple(ports)


def mqtt_up(site, level: str) -> Optional[int]:
    """The MQTT port on which `level`'s dataflows send to the parent's broker, or None when none does."""
    tel = getattr(site, "telemetry", None)
    if tel is None or not any(d.level == level and d.destination == "parent" for d in tel.dataflows):
        return None
    return tel.mqtt.effective_port


def kafka_out(site, level: str) -> bool:
    """Does `level` run a dataflow whose destination is Event Hubs (Kafka on 9093)?"""
    tel = getattr(site, "telemetry", None)
    return tel is not None and any(d.level == level and d.destination == "eventhubs" for d in tel.dataflows)


def flows(site, allowlist=None) -> list[Flow]:
    """Every allowed flow, in a fixed order: per level from the egress level down, inbound then outbound."""
    ports = proxy_ports(site, allowlist)
    out: list[Flow] = []
    for lv in site.chain:
        child, parent = site.child(lv), site.parent(lv)
        node, nlabel = _host(lv.node_ip), f"{lv.node_ip} ({lv.name} node)"
        out.append(Flow("kube-api", None, site.admin.network, f"{site.admin.network} (admin network)", lv.name, node,
                        nlabel, ("tcp",), (KUBE_API_PORT,), lv.name, "direct",
                        f"the Kubernetes API of the {lv.name} cluster from the jump box (kubectl, the runbooks)",
                        "admin network to the Kubernetes API"))
        out.append(Flow("admin", None, site.admin.network, f"{site.admin.network} (admin network)", lv.name, node,
                        nlabel, ANY, ANY, lv.name, "direct", "administration from the jump box (kubectl, ssh)",
                        "admin network (jump box)"))
        sources = [(lv, "own network", False)] + ([(child, f"{child.name} network", True)] if child else [])
        for src, what, crosses in sources:
            slabel = f"{src.network} ({src.name} network)"
            if lv.proxy and ports:
                out.append(Flow("proxy" if crosses else "proxy-local", src.name, src.network, slabel, lv.name, node,
                                nlabel, ("tcp",), ports, lv.name, "envoy (SNI)",
                                f"TLS from {src.name} to the {lv.name} proxy (SNI checked against the allow list)",
                                f"{what} to the proxy", crosses))
            if lv.dns_override:
                out.append(Flow("dns" if crosses else "dns-local", src.name, src.network, slabel, lv.name, node,
                                nlabel, ("udp", "tcp"), (DNS_PORT,), lv.name, "DNS override",
                                f"DNS from {src.name} to the {lv.name} DNS override", f"{what} to DNS", crosses))
        mqtt_in = mqtt_up(site, child.name) if child is not None else None
        if mqtt_in is not None:
            out.append(Flow("mqtt", child.name, _host(child.node_ip), f"{child.node_ip} ({child.name} node)", lv.name,
                            node, nlabel, ("tcp",), (mqtt_in,), lv.name, "direct",
                            f"MQTT from the {child.name} broker's dataflow to the {lv.name} broker (east-west)",
                            f"{child.name} node to the MQTT broker"))
        if parent is not None and ports:
            out.append(Flow("uplink", lv.name, node, nlabel, parent.name, _host(parent.node_ip),
                            f"{parent.node_ip} ({parent.name} node)", ("tcp",), ports, lv.name, "envoy (SNI)",
                            f"TLS from {lv.name} to the {parent.name} proxy", f"to the {parent.name} proxy"))
        mqtt_out = mqtt_up(site, lv.name) if parent is not None else None
        if mqtt_out is not None:
            out.append(Flow("mqtt", lv.name, node, nlabel, parent.name, _host(parent.node_ip),
                            f"{parent.node_ip} ({parent.name} node)", ("tcp",), (mqtt_out,), lv.name, "direct",
                            f"MQTT from {lv.name} to the {parent.name} broker (east-west)",
                            f"to the {parent.name} MQTT broker"))
        if lv.name == site.egress_level:
            if ports:
                out.append(Flow("egress", lv.name, node, nlabel, None, None, "any (internet)", ("tcp",), ports,
                                lv.name, "envoy (SNI)", "allow-listed Azure endpoints, by name through the egress proxy",
                                "egress proxy to allow-listed endpoints"))
            if kafka_out(site, lv.name) and KAFKA_PORT not in ports:
                out.append(Flow("kafka", lv.name, node, nlabel, None, None, "any (internet)", ("tcp",), (KAFKA_PORT,),
                                lv.name, "direct", "Kafka to Event Hubs (<namespace>.servicebus.windows.net) from the "
                                "egress level's dataflow", "dataflow to Event Hubs (Kafka)"))
            for up in lv.dns_upstream:
                out.append(Flow("egress-dns", lv.name, node, nlabel, None, _host(up), f"{up} (DNS upstream)",
                                ("udp", "tcp"), (DNS_PORT,), lv.name, "direct", "name resolution for the egress proxy",
                                "DNS upstream"))
    return out


def crossing(site, allowlist=None) -> list[Flow]:
    return [f for f in flows(site, allowlist) if f.crosses]


def inbound(site, level: str, allowlist=None) -> list[Flow]:
    """Flows that end at the level's node (its firewall's input chain)."""
    return [f for f in flows(site, allowlist) if f.dst_level == level and f.boundary == level]


def outbound(site, level: str, allowlist=None) -> list[Flow]:
    """Flows the level's node starts (its firewall's output chain)."""
    return [f for f in flows(site, allowlist) if f.src_level == level and f.src_is_node and f.boundary == level]


def allowed(site, src_ip, dst_ip, proto: str, port: Optional[int], allowlist=None) -> list[Flow]:
    """The flows that would let this packet through (empty: it must be dropped)."""
    return [f for f in flows(site, allowlist) if f.allows(src_ip, dst_ip, proto, port)]


def hops(site, allowlist=None) -> list[dict]:
    """For the picture: one entry per (from level, to level or "internet") with the crossing flows' labels."""
    order: dict[tuple, list[str]] = {}
    for f in crossing(site, allowlist):
        if f.src_level is None or f.src_level == f.dst_level:      # the admin network's flows: admin_labels()
            continue
        if f.kind in ("proxy", "dns"):      # the same traffic as the child's uplink, seen from the parent
            continue
        key = (f.src_level, f.dst_level or "internet")
        label = {"uplink": f"TLS {f.ports_text()} (SNI)", "egress": f"TLS {f.ports_text()} (SNI)",
                 "egress-dns": "DNS 53", "mqtt": f"MQTT {f.ports_text()}"}.get(f.kind, f"{f.kind} {f.ports_text()}")
        labels = order.setdefault(key, [])
        if label not in labels:
            labels.append(label)
    tls_first = lambda label: not label.startswith("TLS")  # noqa: E731
    return [{"from": a, "to": b, "labels": sorted(labels, key=tls_first)} for (a, b), labels in order.items()]


def reaches(site, src_level: str, dst_ip, proto: str, port: Optional[int], allowlist=None) -> bool:
    """Would a packet from `src_level`'s node to dst_ip get through every firewall on its way?

    It must leave the source (an outbound flow of the source level), pass the router (a crossing flow), and,
    when it ends at a level's node, be let in there (an inbound flow of that level)."""
    everything = flows(site, allowlist)
    src_ip = site.level(src_level).node_ip
    dst = ipaddress.ip_address(dst_ip)
    out_ok = any(f.allows(src_ip, dst, proto, port) for f in everything
                 if f.src_level == src_level and f.src_is_node and f.boundary == src_level)
    target = next((lv for lv in site.levels if lv.node_ip == dst), None)
    if target is None:
        return out_ok
    return out_ok and any(f.allows(src_ip, dst, proto, port) for f in everything
                          if f.dst_level == target.name and f.boundary == target.name)


def admin_labels(site, level: str, allowlist=None) -> list[str]:
    """For the picture: what the jump box reaches on the level's node (its admin-network flows)."""
    out = []
    for f in flows(site, allowlist):
        if f.src_level is None and f.dst_level == level:
            out.append("any" if f.kind == "admin" else f"{'Kubernetes API' if f.kind == 'kube-api' else f.kind} "
                                                        f"{f.ports_text()}")
    return out
