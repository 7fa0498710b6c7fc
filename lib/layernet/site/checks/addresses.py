"""Networks and addresses: the jump box and every node inside their networks (and not their network or broadcast
address), networks that do not overlap (pod and service networks included), DNS upstreams that can answer, and the
lab's cloud network beside the plant with the lab's internet DNS inside it."""
from __future__ import annotations

import ipaddress
from typing import Any

from layernet.site.checks import levels as level_checks
from layernet.site.checks.doc import Doc, ip, items, mapping, net
from layernet.site.model import LAB_CLOUD_DNS_HOST, LAB_CLOUD_TLS_HOST
from layernet.site.problems import Problem


def check(doc: Doc) -> list[Problem]:
    raw = doc.raw
    good = level_checks.read(doc).good
    P: list[Problem] = []

    def add(path: str, value: Any, expected: str) -> None:
        P.append(Problem(doc.file, path, value, expected))

    admin = mapping(raw.get("admin"))
    nets: list[tuple[str, ipaddress.IPv4Network]] = []
    anet = net(admin.get("network"))
    if anet:
        nets.append(("admin.network", anet))
        jb = ip(admin.get("jump_box_ip"))
        if jb and jb not in anet:
            add("admin.jump_box_ip", str(jb), f"an address inside admin.network {anet}")
        elif jb and anet.prefixlen < 31 and jb in (anet.network_address, anet.broadcast_address):
            add("admin.jump_box_ip", str(jb), f"a host address of {anet}, not its network or broadcast address")
    cluster_nets: list[tuple[str, ipaddress.IPv4Network]] = []
    for i, lv in enumerate(items(raw.get("levels"), 6)):
        if not isinstance(lv, dict):
            continue
        lnet, node = net(lv.get("network")), ip(lv.get("node_ip"))
        if lnet:
            nets.append((f"levels[{i}].network", lnet))
        if lnet and node:
            if node not in lnet:
                add(f"levels[{i}].node_ip", str(node), f"an address inside the level's network {lnet}")
            elif lnet.prefixlen < 31 and node in (lnet.network_address, lnet.broadcast_address):
                add(f"levels[{i}].node_ip", str(node), f"a host address of {lnet}, not its network or broadcast address")
        pod = net(lv.get("pod_cidr", "10.42.0.0/16"))
        svc = net(lv.get("service_cidr", "10.43.0.0/16"))
        if pod:
            cluster_nets.append((f"levels[{i}].pod_cidr", pod))
        if svc:
            cluster_nets.append((f"levels[{i}].service_cidr", svc))
        if pod and svc and pod.overlaps(svc):
            add(f"levels[{i}].service_cidr", str(svc), f"a service network that does not overlap the level's pod network {pod}")
    for npath, nnet in nets:
        if nnet.prefixlen > 30:
            add(npath, str(nnet), "a network of at least 4 addresses (prefix /30 or shorter): it holds a node, "
                "a router and its network and broadcast addresses")
    for a in range(len(nets)):
        for b in range(a + 1, len(nets)):
            if nets[a][1].overlaps(nets[b][1]):
                add(nets[b][0], str(nets[b][1]), f"a network that does not overlap {nets[a][0]} ({nets[a][1]})")
    # pod and service networks live inside each cluster (every cluster may use the same ones), but must not
    # hide a level or admin network: traffic to it would stay inside the cluster
    for cpath, cnet in cluster_nets:
        for npath, nnet in nets:
            if cnet.overlaps(nnet):
                what = "pod" if cpath.endswith("pod_cidr") else "service"
                own = npath == cpath.rsplit(".", 1)[0] + ".network"
                where = f"its own level network ({nnet})" if own else f"{npath} ({nnet})"
                add(cpath, str(cnet), f"a {what} network that does not overlap {where}")
    # DNS upstreams: a resolver that can answer, not a network's own network or broadcast address
    for i, lv in good:
        for k, up in enumerate(items(lv.get("dns_upstream"))):
            addr = ip(up)
            if addr is None:
                continue
            bad = ""
            if addr.is_unspecified or addr == ipaddress.IPv4Address("255.255.255.255"):
                bad = "it is the unspecified or broadcast address"
            elif addr.is_multicast or addr.is_reserved:
                bad = "it is a multicast or reserved address"
            else:
                for npath, nnet in nets:
                    if nnet.prefixlen < 31 and addr in (nnet.network_address, nnet.broadcast_address):
                        bad = f"it is the network or broadcast address of {npath} ({nnet})"
            if bad:
                add(f"levels[{i}].dns_upstream[{k}]", str(addr), f"the address of a DNS resolver; {bad}")
    # the lab's cloud network stands in for the internet: it must not overlap the plant (a real site has no lab
    # cloud, so its plan may use those addresses)
    lab = mapping(raw.get("lab"))
    cloud_net = net(lab.get("cloud_network", "198.51.100.0/24")) if raw.get("target") == "lab" else None
    if cloud_net and cloud_net.prefixlen > 30:
        add("lab.cloud_network", str(cloud_net), "a network of at least 4 addresses (prefix /30 or shorter)")
    elif cloud_net:
        for npath, nnet in nets:
            if cloud_net.overlaps(nnet):
                add("lab.cloud_network", str(cloud_net), f"a network that does not overlap {npath} ({nnet}): the lab's cloud stands in for the internet")
                break
        P += _lab_dns_upstreams(doc, cloud_net)
    return P


def _lab_dns_upstreams(doc: Doc, cloud_net: ipaddress.IPv4Network) -> list[Problem]:
    """target: lab: the egress level resolves with the lab's internet DNS, which runs at one address inside
    lab.cloud_network (the first dns_upstream there; see lab.netns.topology). Any other upstream answers nothing."""
    egress = doc.raw.get("egress_level")
    out: list[Problem] = []
    tls_ip = cloud_net.network_address + LAB_CLOUD_TLS_HOST
    example = cloud_net.network_address + LAB_CLOUD_DNS_HOST
    for i, lv in enumerate(items(doc.raw.get("levels"), 6)):
        if not isinstance(lv, dict) or lv.get("name") != egress:
            continue
        ups = [(k, ip(u)) for k, u in enumerate(items(lv.get("dns_upstream"), 8))]
        inside = [a for _, a in ups if a is not None and a in cloud_net
                  and a not in (tls_ip, cloud_net.network_address, cloud_net.broadcast_address)]
        for k, addr in ups:
            if addr is None:
                continue
            where = f"levels[{i}].dns_upstream[{k}]"
            fix = (f"the lab's internet DNS: an address inside lab.cloud_network {cloud_net}, e.g. {example} "
                   f"(target: lab; a real site's resolver is set in a copy with target: kube)")
            if addr not in cloud_net:
                out.append(Problem(doc.file, where, str(addr), f"{fix}; {addr} is outside it, so the egress proxy "
                                   "could resolve nothing in the lab"))
            elif addr == tls_ip or addr in (cloud_net.network_address, cloud_net.broadcast_address):
                out.append(Problem(doc.file, where, str(addr), f"{fix}; {addr} is the cloud's "
                                   f"{'TLS front' if addr == tls_ip else 'network or broadcast address'}, not its DNS"))
            elif inside and addr != inside[0]:
                out.append(Problem(doc.file, where, str(addr), f"{fix}: the lab runs one internet DNS, at "
                                   f"{inside[0]} (the first upstream); drop this one"))
    return out
