"""Lab pieces that need no root: addresses, router rules, certificates, the cloud stand-in on loopback."""
from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import sys

import pytest
from cryptography import x509

from layernet.allowlist import effective_allowlist
from layernet.lab import netns, pki

pytestmark = pytest.mark.lab


def test_topology_addresses(lab_site):
    topo = netns.topology(lab_site)
    assert topo.level_ns == {"level4": "lt-level4", "level3": "lt-level3", "level2": "lt-level2"}
    assert set(topo.namespaces) == {"lt-rtr", "lt-cloud", "lt-level4", "lt-level3", "lt-level2", "lt-jumpbox"}
    jb = topo.link_of("lt-jumpbox")           # the jump box's internet side: a free 100.64.x.0/29
    assert (str(jb.network), str(jb.router_ip), str(jb.addrs[0])) == ("100.64.0.0/29", "100.64.0.1", "100.64.0.2")
    l3 = topo.link_of("lt-level3")
    assert (str(l3.router_ip), [str(a) for a in l3.addrs]) == ("192.168.103.1", ["192.168.103.10"])
    assert str(topo.cloud_tls_ip) == "198.51.100.10"
    assert str(topo.cloud_dns_ip) == "198.51.100.53"          # the egress level's dns_upstream
    jump = topo.link_of(None)
    assert (jump.ifname, str(jump.addrs[0]), str(jump.router_ip)) == ("lt-jump", "192.168.0.50", "192.168.0.1")
    assert all(len(l.router_if) <= 15 and len(l.ifname) <= 15 for l in topo.links)


def test_router_ruleset_forwards_exactly_the_crossing_flows(lab_site):
    rules = netns.router_ruleset(lab_site, netns.topology(lab_site))
    accepts = [l.strip() for l in rules.splitlines() if l.strip().endswith('"') and " accept comment " in l]
    got = {(l.split("ip saddr ")[1].split()[0], l.split("ip daddr ")[1].split()[0],
            l.split("ip daddr ")[1].split(" ", 1)[1].split(" accept")[0] if " dport " in l else "any") for l in accepts}
    ports, dns = "tcp dport { 443, 8084, 9093 }", "meta l4proto { udp, tcp } th dport 53"
    assert got == {
        ("192.168.0.0/24", "192.168.104.10", "any"), ("192.168.0.0/24", "192.168.103.10", "any"),
        ("192.168.0.0/24", "192.168.102.10", "any"),
        # the jump box's Kubernetes API calls to each level's cluster
        ("192.168.0.0/24", "192.168.104.10", "tcp dport 6443"), ("192.168.0.0/24", "192.168.103.10", "tcp dport 6443"),
        ("192.168.0.0/24", "192.168.102.10", "tcp dport 6443"),
        ("192.168.103.0/24", "192.168.104.10", ports), ("192.168.103.10", "192.168.104.10", ports),
        ("192.168.102.0/24", "192.168.103.10", ports), ("192.168.102.10", "192.168.103.10", ports),
        ("192.168.102.0/24", "192.168.103.10", dns),
        ("192.168.104.10", "198.51.100.0/24", ports), ("192.168.104.10", "198.51.100.53", dns),
        # the lab's telemetry dataflows send up between the brokers (east-west MQTT over TLS, not through Envoy)
        ("192.168.102.10", "192.168.103.10", "tcp dport 8883"), ("192.168.103.10", "192.168.104.10", "tcp dport 8883"),
        # the lab's jump box reaches Azure (the cloud) on HTTPS and DNS only; it is outside the plant
        ("100.64.0.0/29", "198.51.100.0/24", "tcp dport 443"),
        ("100.64.0.0/29", "198.51.100.0/24", "tcp dport 9093"),      # the Event Hubs consumer of stage 04
        ("100.64.0.0/29", "198.51.100.53", "meta l4proto { udp, tcp } th dport 53"),
    }
    # nothing flows downwards or skips a level: a parent never opens a connection into its child's network
    assert not any("ip saddr 192.168.104" in l and "ip daddr 192.168.10" in l for l in accepts)
    assert not any("192.168.102" in l and ("192.168.104" in l or "198.51.100" in l) for l in accepts)
    assert "policy drop" in rules and 'log prefix "layernet-rtr drop " counter drop' in rules


def test_check_route_refuses_the_host_network(lab_site):
    topo = netns.topology(lab_site)
    with pytest.raises(netns.RouteError):
        netns.check_route("192.0.2.1", jump_if=topo.jump_if)      # the host's own network: never ours
    assert netns.check_route("127.0.0.1", jump_if=topo.jump_if)["dev"] == "lo"
    with pytest.raises(netns.RouteError):
        netns.check_route("198.51.100.10", jump_if=topo.jump_if, ns="ln-elsewhere", prefix="lt")


def test_ca_and_server_certificate(tmp_path, lab_site):
    names = [e.host for e in effective_allowlist(lab_site).entries] + list(lab_site.lab.refused_hosts)
    cert_path, key_path = pki.issue_server_cert(tmp_path / "ca", tmp_path / "cloud", names)
    assert stat.S_IMODE(os.stat(tmp_path / "ca" / "ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    sans = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
    assert "management.azure.com" in sans and "*.servicebus.windows.net" in sans and "evil.example" in sans
    ca_before = (tmp_path / "ca" / "ca.crt").read_bytes()
    pki.issue_server_cert(tmp_path / "ca", tmp_path / "cloud", ["x.example"])
    assert (tmp_path / "ca" / "ca.crt").read_bytes() == ca_before       # the CA is kept while valid


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_cloud_server_reports_sni_port_and_peer(tmp_path):
    cert, key = pki.issue_server_cert(tmp_path / "ca", tmp_path / "cloud", ["management.azure.com", "*.servicebus.windows.net"])
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "layernet.lab.cloud", "--addr", "127.0.0.1", "--ports", str(port),
                             "--cert", str(cert), "--key", str(key)], stdout=subprocess.PIPE, text=True)
    try:
        assert "TLS on 127.0.0.1" in proc.stdout.readline()
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca" / "ca.crt"))
        for host in ("management.azure.com", "ns1.servicebus.windows.net"):
            with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
                local = s.getsockname()
                with ctx.wrap_socket(s, server_hostname=host) as tls:
                    reply = json.loads(tls.recv(4096))
            assert reply == {"host": host, "port": port, "peer": f"{local[0]}:{local[1]}"}
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_every_level_is_a_cluster_unless_the_site_says_otherwise():
    from pathlib import Path

    from layernet.lab import registry
    from layernet.site import load_site

    lab = Path(__file__).resolve().parents[2] / "params" / "lab.yaml"
    full = {s.name for s in registry.level_services(load_site(lab))}
    for lv in ("level4", "level3", "level2"):
        assert {f"{lv}/{x}" for x in ("kine", "kube-server", "node")} <= full
    assert all(s.short in ("kine", "kube-server", "node") for s in registry.level_services(load_site(lab)))
