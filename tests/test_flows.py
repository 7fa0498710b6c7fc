"""flows.py: the one model of allowed traffic, and every consumer following it."""
from __future__ import annotations

import re

import pytest

from layernet import flows
from layernet.allowlist import effective_allowlist
from layernet.harden.checks import scan_plan
from layernet.lab import netns
from layernet.matrix import build_matrix
from layernet.render.firewall import firewall_rows, render_nftables
from layernet.site import load_site
from layernet.topology import topology_svg

LAB = "params/lab.yaml"
NO_TELEMETRY = ["telemetry.dataflows=[]"]
L4, L3, L2 = "192.168.104.10", "192.168.103.10", "192.168.102.10"


@pytest.fixture(scope="module")
def plain():
    return load_site(LAB, NO_TELEMETRY)


@pytest.fixture(scope="module")
def with_mqtt():
    return load_site(LAB)


def kinds(site, level=None):
    return [(f.kind, f.src_level, f.dst_level) for f in flows.flows(site) if level in (None, f.boundary)]


def test_the_flows_of_a_three_level_site(plain):
    assert kinds(plain) == [
        ("kube-api", None, "level4"), ("admin", None, "level4"), ("proxy-local", "level4", "level4"), ("proxy", "level3", "level4"),
        ("egress", "level4", None), ("egress-dns", "level4", None),
        ("kube-api", None, "level3"), ("admin", None, "level3"), ("proxy-local", "level3", "level3"), ("dns-local", "level3", "level3"),
        ("proxy", "level2", "level3"), ("dns", "level2", "level3"), ("uplink", "level3", "level4"),
        ("kube-api", None, "level2"), ("admin", None, "level2"), ("dns-local", "level2", "level2"), ("uplink", "level2", "level3"),
    ]
    api = [f for f in flows.flows(plain) if f.kind == "kube-api"]
    assert {(str(f.src), str(f.dst), f.protocols, f.ports) for f in api} == {
        (str(plain.admin.network), f"{ip}/32", ("tcp",), (6443,)) for ip in (L4, L3, L2)}
    up = next(f for f in flows.flows(plain) if f.kind == "uplink" and f.src_level == "level2")
    assert (str(up.src), str(up.dst), up.protocols, up.ports) == (f"{L2}/32", f"{L3}/32", ("tcp",), (443, 8084, 9093))


@pytest.mark.parametrize("src, dst, proto, port, expected", [
    ("level2", L3, "tcp", 443, True),       # uplink through the level3 proxy
    ("level2", L3, "tcp", 22, False),
    ("level2", L3, "udp", 53, False),       # level2 resolves with its own override, never its parent's
    ("level2", L4, "tcp", 443, False),      # never skips a level
    ("level2", "198.51.100.10", "tcp", 443, False),
    ("level3", L4, "tcp", 8084, True),
    ("level3", L2, "tcp", 443, False),      # never downwards
    ("level4", L3, "tcp", 443, False),      # the egress flow goes out, not into a child's node
    ("level4", "198.51.100.10", "tcp", 9093, True),
    ("level4", "198.51.100.10", "udp", 443, False),
    ("level4", "198.51.100.53", "udp", 53, True),
    ("level4", "198.51.100.10", "udp", 53, False),
    ("level4", "198.51.100.10", "icmp", None, False),
])
def test_reaches(plain, src, dst, proto, port, expected):
    assert flows.reaches(plain, src, dst, proto, port) is expected


def test_a_new_flow_kind_reaches_every_consumer(plain, with_mqtt):
    """MQTT between the levels' brokers (telemetry dataflows sending to the parent) is one block in flows.py;
    the IP allow list, nftables, the router, the probe matrix, the isolation scan and the picture follow."""
    assert ("mqtt", "level2", "level3") not in kinds(plain)
    assert ("mqtt", "level2", "level3") in kinds(with_mqtt) and ("mqtt", "level3", "level4") in kinds(with_mqtt)
    port = with_mqtt.telemetry.mqtt.effective_port

    rows = [r for r in firewall_rows(with_mqtt) if r["ports"] == str(port)]
    assert {(r["from"].split()[0], r["to"].split()[0]) for r in rows} == {(L2, L3), (L3, L4)}
    assert not [r for r in firewall_rows(plain) if r["ports"] == str(port)]

    l3 = render_nftables(with_mqtt, with_mqtt.level("level3"))
    assert f"ip saddr {L2} ip daddr {L3} tcp dport {port} accept" in l3               # input from the child
    assert f"ip daddr {L4} tcp dport {port} accept" in l3                             # output to the parent
    assert f"dport {port}" not in render_nftables(plain, plain.level("level3"))

    router = netns.router_ruleset(with_mqtt, netns.topology(with_mqtt))
    assert f"ip saddr {L2} ip daddr {L3} tcp dport {port} accept" in router
    assert f"dport {port}" not in netns.router_ruleset(plain, netns.topology(plain))

    al = effective_allowlist(with_mqtt)
    paths = [c for c in build_matrix(with_mqtt, al, None)["level2"] if c["kind"] == "path"]
    assert [(c["connect_ip"], c["port"]) for c in paths] == [(L3, port)]
    assert not [c for lv in build_matrix(plain, al, None).values() for c in lv if c["kind"] == "path"]

    scan = {(t["ip"], t["proto"], t["port"]): t["expect"] for t in scan_plan(with_mqtt)["level2"]}
    assert scan[(L3, "tcp", port)] == "reachable" and scan[(L4, "tcp", port)] == "unreachable"
    assert {(t["ip"], t["proto"], t["port"]): t["expect"] for t in scan_plan(plain)["level2"]}[(L3, "tcp", port)] \
        == "unreachable"

    svg = topology_svg(with_mqtt)
    assert re.search(rf"to level3: TLS 443, 8084, 9093 \(SNI\) · MQTT {port} only", svg)
    assert f"MQTT {port}" not in topology_svg(plain)


def test_x509_hops_use_the_tls_port(with_mqtt):
    site = load_site(LAB, ["telemetry.mqtt.mode=x509"])
    assert {f.ports for f in flows.flows(site) if f.kind == "mqtt"} == {(8883,)}


def test_kafka_from_the_egress_level_only_when_a_dataflow_sends_there(plain):
    site = load_site(LAB, ["telemetry.eventhubs_from_levels=[]"])
    has_eh = any(d.destination == "eventhubs" and d.level == "level4" for d in site.telemetry.dataflows)
    kafka = [f for f in flows.flows(site) if f.kind == "kafka"]
    assert 9093 not in site.proxied_ports()
    assert bool(kafka) == has_eh
    if kafka:
        assert (kafka[0].src_level, kafka[0].dst, kafka[0].ports) == ("level4", None, (9093,))
        assert flows.reaches(site, "level4", "198.51.100.10", "tcp", 9093)
    assert not [f for f in flows.flows(plain) if f.kind == "kafka"]


def test_the_kube_api_flow_reaches_every_consumer(plain):
    """The jump box's flow to each level's Kubernetes API (6443) is in the IP allow list, each level's nftables, the
    router and the picture."""
    rows = [r for r in firewall_rows(plain) if r["ports"] == "6443"]
    assert {r["to"].split()[0] for r in rows} == {L4, L3, L2}
    assert all(r["from"].startswith(str(plain.admin.network)) for r in rows)
    for lv in ("level4", "level3", "level2"):
        ip = str(plain.level(lv).node_ip)
        assert f"ip saddr {plain.admin.network} ip daddr {ip} tcp dport 6443 accept" in render_nftables(plain, plain.level(lv))
    router = netns.router_ruleset(plain, netns.topology(plain))
    assert "tcp dport 6443 accept" in router
    assert topology_svg(plain).count("Kubernetes API 6443") == 3


def test_listener_ports_are_one_fact(plain):
    """A proxied port no allowed host uses has no listener anywhere: Envoy, its Kubernetes manifests and the flows
    (and so nftables, the router and the isolation scan) all read flows.proxy_ports."""
    import dataclasses

    import yaml

    from layernet.render import render_site
    from layernet.render.envoy import envoy_config

    full = effective_allowlist(plain)
    assert 8084 in flows.proxy_ports(plain, full)
    no8084 = dataclasses.replace(full, entries=tuple(
        dataclasses.replace(e, ports=tuple(p for p in e.ports if p != 8084)) for e in full.entries
        if [p for p in e.ports if p != 8084]))
    want = list(flows.proxy_ports(plain, no8084))
    assert 8084 not in want and 443 in want
    for lv in plain.chain:
        if not lv.proxy:
            continue
        cfg = envoy_config(plain, no8084, lv, target="kube")
        assert [x["address"]["socket_address"]["port_value"] for x in cfg["static_resources"]["listeners"]] == want
        proxy_flows = [f for f in flows.flows(plain, no8084) if f.kind.startswith("proxy") and f.dst_level == lv.name]
        assert proxy_flows and all(list(f.ports) == want for f in proxy_flows)
    for art in render_site(plain, no8084, target="kube"):
        if art.kind == "manifests":
            svc = [o for o in yaml.safe_load_all(art.content) if o and o["kind"] == "Service"]
            assert svc and [p["port"] for p in svc[0]["spec"]["ports"]] == want, art.level
