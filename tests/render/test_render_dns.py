"""DNS override: the rendered coredns-custom keys, served by the real CoreDNS (the pinned build) with the lab's
K3s-shaped Corefile, each level in a network namespace of its own made for the test (root).

The differential test asks every DNS level several hundred names, for A and AAAA, on the port K3s's own block
listens on (53) and on the coredns-external port (1053), and compares rcode, addresses and owner with what
`allowlist.host_matches` decides.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dns_names import expected, probe_names
from layernet.lab import binaries
from layernet.allowlist import host_matches
from layernet.render.dns import (COREDNS_EXTERNAL_PORT, COREDNS_SERVER_KEY, CUSTOM_DIR, LAB_COREFILE, NODE_HOSTS,
                                 dns_plan, empty_nodes, internet_corefile, k3s_corefile, lab_coredns_files,
                                 name_regexes, render_coredns)

DNSCLIENT = Path(__file__).parent / "dnsclient.py"
PARENT_IP = {"level3": "192.168.104.10", "level2": "192.168.103.10"}
DNS_LEVELS = ["level3", "level2"]


# ----------------------------------------------------------------------------------------------- CoreDNS in a netns
def coredns_or_skip() -> str:
    from layernet.lab import LabError

    if os.geteuid() != 0:
        pytest.skip("CoreDNS tests run it in a network namespace of their own: root needed")
    try:
        return binaries.coredns_binary()
    except LabError as exc:
        pytest.skip(str(exc))


class NetnsDNS:
    """One CoreDNS in a fresh network namespace (loopback only): nothing it does can leave the namespace."""

    count = itertools.count()

    def __init__(self, binary: str, corefile: Path, ready_ports=(53,), server: str = "127.0.0.1"):
        self.ns = f"ldns-{os.getpid()}-{next(self.count)}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
        self.others: list[subprocess.Popen] = []
        self.log = corefile.parent / "coredns.out"
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, binary, "-conf", str(corefile)],
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 10
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"CoreDNS exited: {self.log.read_text()}")
                r = self.ask([["localhost", "A", 0]], ready_ports[-1], server, check=False)
                if r and r[0]["rcode"] in ("REFUSED", "NOERROR", "NXDOMAIN"):
                    break
                assert time.monotonic() < deadline, f"CoreDNS did not answer: {self.log.read_text()}"
                time.sleep(0.05)
        except BaseException:
            self.close()
            raise

    def run(self, argv, **kw):
        return subprocess.run(["ip", "netns", "exec", self.ns] + argv, **kw)

    def spawn(self, argv) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", self.ns] + argv, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        self.others.append(p)
        return p

    def ask(self, questions: list, port: int, server: str = "127.0.0.1", check: bool = True) -> list[dict]:
        res = self.run([sys.executable, str(DNSCLIENT), "batch", server, str(port)],
                       input=json.dumps(questions), capture_output=True, text=True, timeout=120)
        if check:
            assert res.returncode == 0, res.stderr
        return json.loads(res.stdout) if res.returncode == 0 else []

    def close(self):
        for p in [self.proc, *self.others]:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


def write_lab_files(site, allowlist, level: str, root: Path) -> Path:
    for name, content in lab_coredns_files(site, allowlist, site.level(level), state_dir=root):
        path = root / level / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root / level / LAB_COREFILE


@pytest.fixture(scope="module")
def level_dns(site, allowlist, tmp_path_factory):
    """CoreDNS per DNS level, each with the lab's files for that level."""
    binary = coredns_or_skip()
    root = tmp_path_factory.mktemp("dns")
    servers = {}
    try:
        for level in DNS_LEVELS:
            servers[level] = NetnsDNS(binary, write_lab_files(site, allowlist, level, root), (53, COREDNS_EXTERNAL_PORT))
        yield servers
    finally:
        for s in servers.values():
            s.close()


# ----------------------------------------------------------------------------------------------- live tests
@pytest.mark.lab
@pytest.mark.parametrize("level", DNS_LEVELS)
def test_differential_against_host_matches(site, allowlist, level_dns, level):
    """Every name x A/AAAA x both ports: rcode, addresses and owner as host_matches decides; fast answers."""
    names = probe_names(site, allowlist)
    assert len(names) >= 300
    hosts = [e.host for e in allowlist.entries]
    plan = dns_plan(site, allowlist, site.level(level))
    assert any(host_matches(h, n) for h in hosts for n in names) and not all(
        any(host_matches(h, n) for h in hosts) for n in names)
    questions = [[n, t, 0] for n in names for t in ("A", "AAAA")]
    failures = []
    for port in (53, COREDNS_EXTERNAL_PORT):
        replies = level_dns[level].ask(questions, port)
        assert len(replies) == len(questions)
        for (name, qtype, _), r in zip(questions, replies):
            want = expected(plan, hosts, name, qtype)
            got = (r["rcode"], r["answers"])
            if got != want or r["seconds"] is None or r["seconds"] > 0.5:
                failures.append((port, name, qtype, want, got, r["seconds"]))
    assert not failures, f"{len(failures)} of {2 * len(questions)} answers differ, first: {failures[:5]}"


@pytest.mark.lab
def test_named_cases_and_tcp(level_dns):
    dns, parent = level_dns["level2"], PARENT_IP["level2"]
    q = [["management.azure.com", "A", 1], ["MANAGEMENT.azure.COM", "A", 0], ["ns1.servicebus.windows.net", "A", 0],
         ["servicebus.windows.net", "A", 0], ["sub.management.azure.com", "A", 0], ["evil.example", "A", 1],
         ["management.azure.com", "HTTPS", 0], ["x.gbl.his.arc.azure.com", "A", 0], ["aio-l2", "A", 0],
         ["aio-l2", "AAAA", 0]]
    r = dns.ask(q, 53)
    assert r[0]["answers"] == [["management.azure.com.", 1, 60, parent]]                 # TCP
    assert r[1]["answers"] == [["MANAGEMENT.azure.COM.", 1, 60, parent]]                 # owner as asked
    assert r[2]["answers"] == [["ns1.servicebus.windows.net.", 1, 60, parent]]
    assert (r[3]["rcode"], r[3]["answers"]) == ("NOERROR", [])     # a wildcard's apex: exists, not redirected
    assert (r[4]["rcode"], r[4]["answers"]) == ("NXDOMAIN", [])    # below an exact name: not redirected
    assert r[5]["rcode"] == "REFUSED"
    assert (r[6]["rcode"], r[6]["answers"]) == ("NOERROR", [])     # other types: NODATA
    assert r[7]["answers"] == [["x.gbl.his.arc.azure.com.", 1, 60, parent]]
    assert r[8]["answers"][0][3] == "192.168.102.10"               # K3s's NodeHosts entry, from `hosts`
    assert (r[9]["rcode"], r[9]["answers"]) == ("NOERROR", [])


ONE_REPLY = r"""
import socket, struct, sys
sys.path.insert(0, sys.argv[1])
from dnsclient import _encode_name
out = []
for port in (53, 1053):
    for name in ("evil.example", "sub.management.azure.com", "servicebus.windows.net", "management.azure.com"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)
        s.sendto(struct.pack("!HHHHHH", 7, 0x100, 1, 0, 0, 0) + _encode_name(name) + struct.pack("!HH", 1, 1),
                 ("127.0.0.1", port))
        n = 0
        try:
            while True:
                s.recvfrom(4096); n += 1
        except socket.timeout:
            pass
        out.append(n)
    # two questions on one TCP connection: the second must get its own, correct answer
    c = socket.create_connection(("127.0.0.1", port), timeout=2)
    for i, name in enumerate(("evil.example", "management.azure.com")):
        pkt = struct.pack("!HHHHHH", 100 + i, 0x100, 1, 0, 0, 0) + _encode_name(name) + struct.pack("!HH", 1, 1)
        c.sendall(struct.pack("!H", len(pkt)) + pkt)
        size = struct.unpack("!H", c.recv(2))[0]
        msg = b""
        while len(msg) < size:
            msg += c.recv(size - len(msg))
        out.append([struct.unpack("!H", msg[:2])[0], struct.unpack("!H", msg[2:4])[0] & 0xF])
print(out)
"""


@pytest.mark.lab
def test_exactly_one_reply_per_question(level_dns):
    """A template that answers REFUSED makes CoreDNS write a second reply (which breaks the next question on a
    TCP connection); the rendered config must never do that."""
    res = level_dns["level3"].run([sys.executable, "-c", ONE_REPLY, str(Path(__file__).parent)],
                                  capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = eval(res.stdout)  # noqa: S307 - a list literal printed by the script above
    assert out == [1, 1, 1, 1, [100, 5], [101, 0]] * 2


@pytest.mark.lab
def test_upstream_gets_only_names_outside_the_allow_list(site, allowlist, tmp_path):
    """With dns_upstream, other names are forwarded (K3s block and the coredns-external block alike); allowed
    names never leave the level."""
    binary = coredns_or_skip()
    lv = site.level("level3").model_copy(update={"dns_upstream": ["127.0.0.2"]})
    fwd = site.model_copy(update={"levels": [site.level("level4"), lv, site.level("level2")]})
    corefile = write_lab_files(fwd, allowlist, "level3", tmp_path)
    assert "forward . 127.0.0.2" in corefile.read_text()
    asked = tmp_path / "upstream.log"
    asked.touch()
    dns = NetnsDNS.__new__(NetnsDNS)    # start the upstream first: CoreDNS's loop check asks through it
    dns.ns = f"ldns-{os.getpid()}-up"
    subprocess.run(["ip", "netns", "add", dns.ns], check=True)
    try:
        subprocess.run(["ip", "-n", dns.ns, "link", "set", "lo", "up"], check=True)
        dns.others, dns.log = [], tmp_path / "coredns.out"
        dns.proc = dns.spawn([sys.executable, str(DNSCLIENT), "upstream", "127.0.0.2", "53", str(asked)])
        deadline = time.monotonic() + 10
        while not [r for r in dns.ask([["up.example", "A", 0]], 53, "127.0.0.2", check=False) if r["seconds"]]:
            assert time.monotonic() < deadline, "the upstream stand-in did not answer"
        dns.proc = subprocess.Popen(["ip", "netns", "exec", dns.ns, binary, "-conf", str(corefile)],
                                    stdout=open(dns.log, "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not [r for r in dns.ask([["localhost", "A", 0]], 53, check=False) if r["seconds"] is not None]:
            assert time.monotonic() < deadline and dns.proc.poll() is None, dns.log.read_text()
            time.sleep(0.05)
        other = ["evil.example", "servicebus.windows.net", "sub.management.azure.com", "azure.com"]
        allowed = ["management.azure.com", "ns1.servicebus.windows.net", "x.gbl.his.arc.azure.com"]
        for port in (53, COREDNS_EXTERNAL_PORT):
            r = dns.ask([[n, "A", 0] for n in other + allowed] + [[n, "AAAA", 0] for n in allowed], port)
            assert [x["answers"][0][3] for x in r[:len(other)]] == ["203.0.113.7"] * len(other), r
            assert [x["answers"] for x in r[len(other):len(other) + len(allowed)]] == [
                [[n + ".", 1, 60, "192.168.104.10"]] for n in allowed]
            assert all(x["rcode"] == "NOERROR" and x["answers"] == [] for x in r[-len(allowed):])
    finally:
        dns.close()
    seen = set(asked.read_text().split())
    assert set(other) <= seen
    assert not seen & set(allowed)


@pytest.mark.lab
def test_internet_dns_answers_every_name_with_the_cloud(tmp_path):
    binary = coredns_or_skip()
    conf = tmp_path / "Corefile"
    conf.write_text(internet_corefile("127.0.0.53", "198.51.100.10"))
    dns = NetnsDNS(binary, conf, server="127.0.0.53")
    try:
        r = dns.ask([["Management.Azure.com", "A", 0], ["anything.example", "A", 1], ["x.y.z", "AAAA", 0]], 53,
                    server="127.0.0.53")
    finally:
        dns.close()
    assert r[0]["answers"] == [["Management.Azure.com.", 1, 60, "198.51.100.10"]]
    assert r[1]["answers"] == [["anything.example.", 1, 60, "198.51.100.10"]]
    assert (r[2]["rcode"], r[2]["answers"]) == ("NOERROR", [])
    assert '"A IN management.azure.com. udp' in dns.log.read_text()      # the `log` plugin's query log


# ----------------------------------------------------------------------------------------------- rendered files
def test_coredns_custom_configmap(site, allowlist):
    custom, external = render_coredns(site, allowlist, site.level("level2"))
    cm = yaml.safe_load(custom)
    assert (cm["kind"], cm["metadata"]["name"], cm["metadata"]["namespace"]) == ("ConfigMap", "coredns-custom", "kube-system")
    assert list(cm["data"]) == [COREDNS_SERVER_KEY] and COREDNS_SERVER_KEY.endswith(".server")
    core = cm["data"][COREDNS_SERVER_KEY]
    assert core.count("{") == core.count("}")
    assert 'answer "{{ .Question.Name }} 60 IN A 192.168.103.10"' in core
    assert "rcode REFUSED" not in core and "forward" not in core and "rcode NXDOMAIN" in core
    assert "rewrite" not in core and "hosts" not in core
    assert ".:1053" not in core and "servicebus.windows.net:1053" in core
    svc = yaml.safe_load(external)
    assert svc["spec"]["type"] == "LoadBalancer"
    assert {(p["protocol"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {
        ("UDP", 53, COREDNS_EXTERNAL_PORT), ("TCP", 53, COREDNS_EXTERNAL_PORT)}


def test_coredns_with_upstream_forwards(site, allowlist):
    lv = site.level("level3").model_copy(update={"dns_upstream": ["10.0.0.53", "10.0.0.54"]})
    s2 = site.model_copy(update={"levels": [site.level("level4"), lv, site.level("level2")]})
    core = yaml.safe_load(render_coredns(s2, allowlist, lv)[0])["data"][COREDNS_SERVER_KEY]
    assert core.count("forward . 10.0.0.53 10.0.0.54") == 2 and "rcode" not in core.replace("rcode NOERROR", "")
    assert f".:{COREDNS_EXTERNAL_PORT} {{" in core


def test_lab_files_hold_the_configmap_keys_byte_for_byte(site, allowlist, tmp_path):
    for level in DNS_LEVELS:
        lv = site.level(level)
        files = dict(lab_coredns_files(site, allowlist, lv, state_dir=tmp_path))
        cm = yaml.safe_load(render_coredns(site, allowlist, lv)[0])
        assert {k for k in files if k.startswith(CUSTOM_DIR + "/")} == {f"{CUSTOM_DIR}/{k}" for k in cm["data"]}
        for key, value in cm["data"].items():
            assert files[f"{CUSTOM_DIR}/{key}"].encode() == value.encode()
        assert files[NODE_HOSTS] == f"{lv.node_ip} {site.azure.clusters[level]}\n"


def test_corefile_is_shaped_like_k3s(site, tmp_path):
    core = k3s_corefile(site, site.level("level2"), tmp_path / "level2")
    plugins = [l.split()[0] for l in core.splitlines() if re.match(r"    [a-z]", l)]
    assert plugins == ["errors", "log", "health", "ready", "hosts", "forward", "cache", "loop", "reload",
                       "loadbalance", "import"]
    assert f"    import {tmp_path}/level2/custom/*.override\n}}\nimport {tmp_path}/level2/custom/*.server\n" in core
    assert f"hosts {tmp_path}/level2/NodeHosts {{" in core
    assert f"forward . 127.0.0.1:{COREDNS_EXTERNAL_PORT}" in core      # no upstream: refused by the 1053 block
    assert "health 127.0.0.1:8080" in core and "ready 127.0.0.1:8181" in core


def test_coredns_regexes_agree_with_host_matching(site, allowlist):
    """The template regexes (RE2 subset, same in Python) match exactly the names host_matches allows."""
    regexes = [re.compile(r) for r in name_regexes(dns_plan(site, allowlist, site.level("level2")))]
    hosts = [e.host for e in allowlist.entries]
    for name in probe_names(site, allowlist):
        redirected = any(r.match(name.lower() + ".") for r in regexes)
        assert redirected == any(host_matches(h, name) for h in hosts), name


def test_zones_and_empty_nodes(site, allowlist):
    plan = dns_plan(site, allowlist, site.level("level3"))
    zones = plan.zones()
    assert "servicebus.windows.net" in zones and "layernet-lab-ehns.servicebus.windows.net" not in zones
    assert {"servicebus.windows.net", "data.mcr.microsoft.com", "his.arc.azure.com"} <= set(empty_nodes(plan))
    assert not set(empty_nodes(plan)) & {"management.azure.com", "gbl.his.arc.azure.com", "mcr.microsoft.com"}
    for name in probe_names(site, allowlist):
        if allowlist.match(name):
            assert any(name.lower() == z or name.lower().endswith("." + z) for z in zones), name
