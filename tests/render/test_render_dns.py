"""DNS override: unbound (checked by unbound-checkconf and queried live) and CoreDNS (structure + regexes)."""
from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import threading

import pytest
import yaml

from render_helpers import free_port, stop, wait_until
from dnsclient import query
from layernet.render.dns import (COREDNS_EXTERNAL_PORT, COREDNS_SERVER_KEY, dns_plan, name_regexes,
                                 render_coredns, render_unbound, rpz_records)

UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"
CHECKCONF = shutil.which("unbound-checkconf") or "/usr/sbin/unbound-checkconf"
PARENT_IP = {"level3": "192.168.104.10", "level2": "192.168.103.10"}


def probe_names(site, allowlist) -> list[str]:
    """Names around every allow-list host: itself, below it, its apex, look-alikes, plus refused names."""
    names: set[str] = set()
    for e in allowlist.entries:
        h = e.host
        if h.startswith("*."):
            x = h[2:]
            names |= {f"a.{x}", f"a.b.{x}", x, f"x{x}", f"{x}.evil.example", f"A.{x.upper()}"}
        else:
            names |= {h, f"sub.{h}", f"x{h}", f"{h}.evil.example", h.upper(), h.split(".", 1)[1]}
    names |= set(site.lab.refused_hosts)
    return sorted(names)


def _write(tmp_path, site, allowlist, level, **kw):
    conf, zone = render_unbound(site, allowlist, site.level(level), state_dir=tmp_path, **kw)
    d = tmp_path / level
    d.mkdir(exist_ok=True)
    (d / "unbound.conf").write_text(conf)
    (d / "unbound-redirect.rpz").write_text(zone)
    return d / "unbound.conf"


@pytest.mark.parametrize("level", ["level3", "level2"])
def test_unbound_checkconf(site, allowlist, level, tmp_path):
    path = _write(tmp_path, site, allowlist, level)
    res = subprocess.run([CHECKCONF, str(path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no errors" in res.stdout


def test_unbound_checkconf_rejects_a_broken_file(tmp_path):
    (tmp_path / "bad.conf").write_text("server:\n  local-zone: \"x.\" nosuchtype\n")
    assert subprocess.run([CHECKCONF, str(tmp_path / "bad.conf")], capture_output=True).returncode != 0


class _Unbound:
    def __init__(self, conf, host, port):
        self.host, self.port = host, port
        self.proc = subprocess.Popen([UNBOUND, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: query(host, port, "localhost", "A", timeout=0.3), what="unbound to answer")
        except BaseException:
            stop(self.proc)
            raise

    def q(self, name, qtype="A", tcp=False):
        return query(self.host, self.port, name, qtype, timeout=2.0, tcp=tcp)


class FakeUpstream:
    """A UDP DNS server that answers every A query with 203.0.113.7 and records the names it was asked."""

    def __init__(self, host):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.addr = self.sock.getsockname()
        self.asked: list[str] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                msg, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            qid = msg[:2]
            off, labels = 12, []
            while msg[off]:
                labels.append(msg[off + 1:off + 1 + msg[off]].decode())
                off += 1 + msg[off]
            qend = off + 5
            qtype = struct.unpack("!H", msg[off + 1:off + 3])[0]
            self.asked.append(".".join(labels).lower())
            question = msg[12:qend]
            if qtype == 1:
                ans = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + socket.inet_aton("203.0.113.7")
                head = qid + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
            else:
                ans = b""
                head = qid + struct.pack("!HHHHH", 0x8180, 1, 0, 0, 0)
            self.sock.sendto(head + question + ans, peer)

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("level", ["level3", "level2"])
def test_unbound_answers_like_the_allow_list(site, allowlist, level, tmp_path):
    """Real unbound with the rendered config, queried for names around every allow-list host.

    No upstream (the lab's inner levels): allowed names answer the parent's IP with the question as owner;
    every other name is answered at once without that IP, and names outside the allow-list zones are REFUSED.
    """
    host = "127.0.0.71" if level == "level3" else "127.0.0.72"
    port = free_port(host)
    conf = _write(tmp_path, site, allowlist, level, interfaces=[host], port=port)
    ub = _Unbound(conf, host, port)
    try:
        parent = PARENT_IP[level]
        zones = dns_plan(site, allowlist, site.level(level)).zones()
        for name in probe_names(site, allowlist):
            r = ub.q(name)
            assert r.seconds < 1.0, (name, r.seconds)
            if allowlist.match(name) is not None:
                assert r.rcode == "NOERROR" and r.addresses() == [parent], (name, r)
                assert [a.name for a in r.answers] == [name + "."], (name, r.answers)
                aaaa = ub.q(name, "AAAA")
                assert aaaa.rcode == "NOERROR" and aaaa.answers == [], (name, aaaa)
            else:
                assert parent not in r.addresses(), (name, r)
                inside = any(name.lower() == z or name.lower().endswith("." + z) for z in zones)
                if not inside:
                    assert r.rcode == "REFUSED", (name, r)
                else:
                    assert r.rcode in ("NXDOMAIN", "NOERROR") and r.answers == [], (name, r)
        # the named cases of the contract
        r = ub.q("management.azure.com")
        assert r.addresses() == [parent] and r.answers[0].name == "management.azure.com."
        r = ub.q("ns1.servicebus.windows.net")
        assert r.addresses() == [parent] and r.answers[0].name == "ns1.servicebus.windows.net."
        r = ub.q("servicebus.windows.net")        # apex of a wildcard-only zone: not redirected
        assert r.rcode == "NOERROR" and r.answers == []
        r = ub.q("sub.management.azure.com")      # below an exact name: not redirected
        assert r.rcode == "NXDOMAIN" and r.answers == []
        assert ub.q("evil.example").rcode == "REFUSED"
        assert ub.q("xmanagement.azure.com").rcode == "REFUSED"
        assert ub.q("management.azure.com", "HTTPS").answers == []
        assert ub.q("management.azure.com", tcp=True).addresses() == [parent]
    finally:
        stop(ub.proc)
    logtext = (tmp_path / level / "unbound.log").read_text()
    assert "management.azure.com. A IN" in logtext          # log-queries
    assert "rpz: applied [layernet]" in logtext             # the RPZ answered
    assert "evil.example. A IN" in logtext and "refuse" in logtext


def test_unbound_forwards_other_names_to_the_upstream(site, allowlist, tmp_path):
    """With dns_upstream, names outside the allow list are forwarded; allowed names never leave the level."""
    host = "127.0.0.73"
    up = FakeUpstream("127.0.0.74")
    lv = site.level("level3").model_copy(update={"dns_upstream": ["127.0.0.74"]})
    fwd_site = site.model_copy(update={"levels": [site.level("level4"), lv, site.level("level2")]})
    port = free_port(host)
    conf = _write(tmp_path, fwd_site, allowlist, "level3", interfaces=[host], port=port, upstream_port=up.addr[1])
    assert f"forward-addr: 127.0.0.74@{up.addr[1]}" in conf.read_text()
    ub = _Unbound(conf, host, port)
    try:
        for name in ("evil.example", "servicebus.windows.net", "sub.management.azure.com", "azure.com"):
            r = ub.q(name)
            assert r.rcode == "NOERROR" and r.addresses() == ["203.0.113.7"], (name, r)
        for name in ("management.azure.com", "ns1.servicebus.windows.net", "x.gbl.his.arc.azure.com"):
            assert ub.q(name).addresses() == ["192.168.104.10"], name
            assert ub.q(name, "AAAA").answers == []
    finally:
        stop(ub.proc)
        up.close()
    asked = set(up.asked)
    assert {"evil.example", "servicebus.windows.net", "sub.management.azure.com", "azure.com"} <= asked
    assert not asked & {"management.azure.com", "ns1.servicebus.windows.net", "x.gbl.his.arc.azure.com", "localhost"}


def test_unbound_conf_shape(site, allowlist, tmp_path):
    conf, zone = render_unbound(site, allowlist, site.level("level2"), state_dir=tmp_path)
    for line in ('interface: 192.168.102.10', 'interface: 127.0.0.1', 'port: 53', 'do-daemonize: no',
                 'username: ""', 'chroot: ""', 'pidfile: ""', 'log-queries: yes', 'local-zone: "." refuse',
                 'access-control: 192.168.102.0/24 allow', 'access-control: 10.42.0.0/16 allow',
                 'access-control: 127.0.0.0/8 allow', 'access-control: 0.0.0.0/0 refuse'):
        assert f"  {line}\n" in conf, line
    assert "trust-anchor" not in conf and "forward-zone" not in conf
    # no redirect zones: they would also answer the names below an exact name and a wildcard's apex
    assert not re.search(r"local-zone: .* redirect", conf)
    assert "*.servicebus.windows.net A 192.168.103.10" in zone


def test_rpz_records_for_nested_names(site, allowlist):
    """Exact names below a wildcard, a wildcard apex that is also exact, and wildcard apexes that are not."""
    recs = rpz_records(dns_plan(site, allowlist, site.level("level3")))
    assert "his.arc.azure.com CNAME *." in recs
    assert "*.his.arc.azure.com A 192.168.104.10" in recs
    assert "gbl.his.arc.azure.com A 192.168.104.10" in recs
    assert "*.gbl.his.arc.azure.com A 192.168.104.10" in recs    # still under *.his.arc.azure.com
    assert "guestnotificationservice.azure.com A 192.168.104.10" in recs
    assert "*.management.azure.com CNAME ." in recs


# ----------------------------------------------------------------------------------------------- CoreDNS
def test_coredns_custom_configmap(site, allowlist):
    custom, external = render_coredns(site, allowlist, site.level("level2"))
    cm = yaml.safe_load(custom)
    assert (cm["kind"], cm["metadata"]["name"], cm["metadata"]["namespace"]) == ("ConfigMap", "coredns-custom", "kube-system")
    assert list(cm["data"]) == [COREDNS_SERVER_KEY] and COREDNS_SERVER_KEY.endswith(".server")
    core = cm["data"][COREDNS_SERVER_KEY]
    assert core.count("{") == core.count("}")
    assert 'answer "{{ .Name }} 60 IN A 192.168.103.10"' in core
    assert "rcode NOERROR" in core and "rcode REFUSED" in core and "forward" not in core
    assert "rewrite" not in core and "hosts" not in core
    assert f".:{COREDNS_EXTERNAL_PORT} {{" in core
    svc = yaml.safe_load(external)
    assert svc["spec"]["type"] == "LoadBalancer"
    assert {(p["protocol"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {
        ("UDP", 53, COREDNS_EXTERNAL_PORT), ("TCP", 53, COREDNS_EXTERNAL_PORT)}


def test_coredns_with_upstream_forwards(site, allowlist):
    lv = site.level("level3").model_copy(update={"dns_upstream": ["10.0.0.53", "10.0.0.54"]})
    s2 = site.model_copy(update={"levels": [site.level("level4"), lv, site.level("level2")]})
    core = yaml.safe_load(render_coredns(s2, allowlist, lv)[0])["data"][COREDNS_SERVER_KEY]
    assert core.count("forward . 10.0.0.53 10.0.0.54") == 2 and "rcode REFUSED" not in core


def test_coredns_regexes_agree_with_host_matching(site, allowlist):
    """The template regexes (RE2 subset, same in Python) match exactly the names host_matches allows."""
    regexes = [re.compile(r) for r in name_regexes(dns_plan(site, allowlist, site.level("level2")))]
    for name in probe_names(site, allowlist):
        redirected = any(r.match(name + ".") for r in regexes)
        assert redirected == (allowlist.match(name) is not None), name


def test_coredns_zone_blocks_cover_every_redirected_name(site, allowlist):
    plan = dns_plan(site, allowlist, site.level("level3"))
    zones = plan.zones()
    assert "servicebus.windows.net" in zones and "layernet-lab-ehns.servicebus.windows.net" not in zones
    for name in probe_names(site, allowlist):
        if allowlist.match(name):
            assert any(name.lower() == z or name.lower().endswith("." + z) for z in zones), name
