"""layernet.probe against real servers on 127.0.0.1: a TLS server signed by a test CA, a UDP DNS
responder, a TCP server that resets. No traffic leaves the loopback interface."""
from __future__ import annotations

import ast
import datetime as dt
import json
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from layernet import probe
from layernet.probe import run_checks

PROBE_FILE = Path(probe.__file__)
FIELDS = ["level", "check", "host", "port", "expected", "observed", "ok", "latency_ms", "hint"]
ALLOWED = "good.example.test"
WILD = "*.wild.example.test"


# ----------------------------------------------------------------------------------------------- test CA
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca_and_server_cert(tmp: Path, hosts: list[str]):
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(_name("layernet test CA")).issuer_name(_name("layernet test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (tmp / "ca.crt").write_bytes(ca_cert.public_bytes(pem))
    (tmp / "server.crt").write_bytes(cert.public_bytes(pem))
    (tmp / "server.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    return tmp / "ca.crt", tmp / "server.crt", tmp / "server.key"


# ----------------------------------------------------------------------------------------------- servers
class TLSServer:
    """Answers every TLS connection with one JSON line naming the SNI it saw and the peer address,
    like the lab's cloud servers. `report_host` makes it lie about the host (a mis-routing proxy)."""

    def __init__(self, cert: Path, key: Path, report_host: str | None = None):
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.sni_callback = self._sni
        self.report_host = report_host
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen: list[str | None] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _sni(self, sslobj, name, ctx):
        sslobj.layernet_sni = name

    def _serve(self):
        while True:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn, addr), daemon=True).start()

    def _one(self, conn, addr):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                sni = getattr(tls, "layernet_sni", None)
                self.seen.append(sni)
                line = {"host": self.report_host or sni, "port": self.port, "peer": f"{addr[0]}:{addr[1]}"}
                tls.sendall(json.dumps(line).encode() + b"\n")
        except (ssl.SSLError, OSError):
            pass

    def close(self):
        self.sock.close()


class ResetServer:
    """Accepts and immediately resets (SO_LINGER 0), like Envoy when no filter chain matches."""

    def __init__(self, mode: str = "reset"):
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.mode == "reset":
                time.sleep(0.05)  # let the client's first bytes arrive, as a proxy reading the ClientHello would
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif self.mode == "silent":
                threading.Timer(10, conn.close).start()
                continue
            conn.close()

    def close(self):
        self.sock.close()


def _encode_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\x00"


class DNSResponder:
    """A tiny authoritative-style responder: `a` maps names to A answers (owner, ip), `refused` names get
    REFUSED, `nxdomain` names NXDOMAIN, `silent` names no reply at all; AAAA always NOERROR without answers."""

    def __init__(self, a: dict, refused=(), nxdomain=(), silent=()):
        self.a, self.refused, self.nxdomain, self.silent = a, set(refused), set(nxdomain), set(silent)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.queries: list[tuple[str, int]] = []
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self):
        while True:
            try:
                data, addr = self.sock.recvfrom(512)
            except OSError:
                return
            qid = struct.unpack("!H", data[:2])[0]
            off, labels = 12, []
            while data[off]:
                labels.append(data[off + 1: off + 1 + data[off]].decode())
                off += 1 + data[off]
            qtype = struct.unpack("!H", data[off + 1: off + 3])[0]
            question = data[12: off + 5]
            name = ".".join(labels)
            self.queries.append((name, qtype))
            if name in self.silent:
                continue
            rcode, answers = 0, []
            if name in self.refused:
                rcode = 5
            elif name in self.nxdomain:
                rcode = 3
            elif qtype == 1 and name in self.a:
                answers = self.a[name]
            elif qtype == 1:
                rcode = 3
            header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(answers), 0, 0)
            body = b""
            for owner, ip in answers:
                body += _encode_name(owner) + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(ip)
            self.sock.sendto(header + question + body, addr)

    def close(self):
        self.sock.close()


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_ca_and_server_cert(tmp_path_factory.mktemp("pki"), [ALLOWED, WILD])


@pytest.fixture(scope="module")
def tls_server(pki):
    ca, cert, key = pki
    srv = TLSServer(cert, key)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def dns():
    srv = DNSResponder(
        a={
            ALLOWED: [(ALLOWED, "127.0.0.1")],
            "parent.example.test": [("parent.example.test", "192.0.2.10")],
            "wrong.example.test": [("wrong.example.test", "192.0.2.99")],
            "x.wild.example.test": [("wild.example.test", "192.0.2.10")],  # answer owned by the apex
            "leak.example.test": [("leak.example.test", "192.0.2.66")],
        },
        refused=["refused.example.test"], nxdomain=["nx.example.test"], silent=["silent.example.test"],
    )
    yield srv
    srv.close()


def one(level, check):
    rows = run_checks(level, [check])
    assert len(rows) == 1 and list(rows[0]) == FIELDS
    row = rows[0]
    assert isinstance(row["latency_ms"], float) and row["latency_ms"] >= 0
    return {k: v for k, v in row.items() if k != "latency_ms"}


# ----------------------------------------------------------------------------------------------- DNS
def test_dns_expected_answer(dns):
    row = one("level2", {"kind": "dns", "host": "parent.example.test", "server": dns.server, "expect_ip": "192.0.2.10",
                         "parent": "level3"})
    assert row == {"level": "level2", "check": "dns", "host": "parent.example.test", "port": dns.port,
                   "expected": "A 192.0.2.10", "observed": "192.0.2.10", "ok": True, "hint": ""}
    assert ("parent.example.test", 1) in dns.queries


def test_dns_wrong_answer_names_the_fix(dns):
    row = one("level2", {"kind": "dns", "host": "wrong.example.test", "server": dns.server, "expect_ip": "192.0.2.10",
                         "parent": "level3"})
    assert row["ok"] is False and row["observed"] == "192.0.2.99"
    assert row["hint"] == ("DNS at level2 answers 192.0.2.99: check the CoreDNS override points at "
                           "level3's node IP (192.0.2.10)")


def test_dns_wrong_answer_at_the_egress_level_points_at_the_upstream(dns):
    row = one("level4", {"kind": "dns", "host": "wrong.example.test", "server": dns.server, "expect_ip": "192.0.2.10"})
    assert row["ok"] is False
    assert row["hint"] == (f"the resolver {dns.server} used by level4 answers 192.0.2.99 for wrong.example.test, "
                           f"not 192.0.2.10: check the enterprise/upstream DNS")


def test_dns_answer_must_carry_the_question_name(dns):
    row = one("level2", {"kind": "dns", "host": "x.wild.example.test", "server": dns.server, "expect_ip": "192.0.2.10"})
    assert row["ok"] is False
    assert row["observed"] == "192.0.2.10 (owner wild.example.test)"
    assert "owner name wild.example.test" in row["hint"]


def test_dns_rcode_reported(dns):
    row = one("level2", {"kind": "dns", "host": "refused.example.test", "server": dns.server, "expect_ip": "192.0.2.10",
                         "parent": "level3"})
    assert (row["ok"], row["observed"]) == (False, "REFUSED")
    assert row["hint"] == "DNS at level2 has no answer for refused.example.test: add it to the override that points at level3"


def test_dns_without_expected_ip_accepts_any_a_record(dns):
    row = one("level4", {"kind": "dns", "host": ALLOWED, "server": dns.server, "expect_ip": None})
    assert (row["ok"], row["expected"], row["observed"]) == (True, "A record(s)", "127.0.0.1")


def test_dns_timeout_is_reported_not_hung(dns):
    t0 = time.monotonic()
    row = one("level2", {"kind": "dns", "host": "silent.example.test", "server": dns.server, "expect_ip": "192.0.2.10",
                         "timeout": 0.4})
    assert time.monotonic() - t0 < 1.5
    assert row == {"level": "level2", "check": "dns", "host": "silent.example.test", "port": dns.port,
                   "expected": "A 192.0.2.10", "observed": "timeout", "ok": False,
                   "hint": f"DNS at level2 ({dns.server}) did not answer within 0.4s: is the DNS server running and "
                           f"is UDP 53 open to it?"}


@pytest.mark.parametrize("name,observed", [("refused.example.test", "REFUSED"), ("nx.example.test", "NXDOMAIN")])
def test_dns_refused_ok(dns, name, observed):
    row = one("level3", {"kind": "dns-refused", "host": name, "server": dns.server})
    assert row == {"level": "level3", "check": "dns-refused", "host": name, "port": dns.port,
                   "expected": "REFUSED, NXDOMAIN or no A record", "observed": observed, "ok": True, "hint": ""}


def test_dns_refused_fails_on_answer_and_on_timeout(dns):
    leak = one("level3", {"kind": "dns-refused", "host": "leak.example.test", "server": dns.server})
    assert (leak["ok"], leak["observed"]) == (False, "192.0.2.66")
    assert leak["hint"].startswith("DNS at level3 resolves leak.example.test, which is not allowed")
    slow = one("level3", {"kind": "dns-refused", "host": "silent.example.test", "server": dns.server, "timeout": 0.3})
    assert (slow["ok"], slow["observed"]) == (False, "timeout")
    assert "never time out" in slow["hint"]


def test_dns_packet_round_trip():
    q = probe.build_query("Management.Azure.com", 0x1234)
    assert q[:12] == struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    assert q[12:] == b"\x0aManagement\x05Azure\x03com\x00\x00\x01\x00\x01"
    # a reply using a compression pointer to the question name
    reply = (struct.pack("!HHHHHH", 0x1234, 0x8180, 1, 1, 0, 0) + q[12:]
             + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + bytes([192, 0, 2, 7]))
    assert probe.parse_response(reply, 0x1234) == ("NOERROR", [("Management.Azure.com", "192.0.2.7")])
    with pytest.raises(ValueError):
        probe.parse_response(reply, 0x9999)


# ----------------------------------------------------------------------------------------------- TLS
def tls_check(srv, pki, host=ALLOWED, **kw):
    check = {"kind": "tls", "host": host, "port": srv.port, "connect_ip": "127.0.0.1", "ca_file": str(pki[0]),
             "expect_peer": "127.0.0.1"}
    check.update(kw)
    return check


def test_tls_ok_proves_sni_and_peer(tls_server, pki):
    row = one("level2", tls_check(tls_server, pki, host="a.wild.example.test"))
    assert row == {"level": "level2", "check": "tls", "host": "a.wild.example.test", "port": tls_server.port,
                   "expected": "handshake ok, certificate valid for a.wild.example.test, peer 127.0.0.1",
                   "observed": "handshake ok; far end saw host a.wild.example.test, peer 127.0.0.1", "ok": True,
                   "hint": ""}
    assert "a.wild.example.test" in tls_server.seen


def test_tls_without_echo_accepts_a_verified_handshake(tls_server, pki):
    row = one("level4", tls_check(tls_server, pki, expect_peer=None, expect_echo=False))
    assert (row["ok"], row["expected"], row["observed"]) == (
        True, f"handshake ok, certificate valid for {ALLOWED}", "handshake ok, certificate valid")
    bad = one("level4", tls_check(tls_server, pki, host="not-in-cert.example.test", expect_echo=False))
    assert bad["ok"] is False


def test_tls_resolves_through_dns_when_no_connect_ip(tls_server, pki, dns):
    row = one("level2", tls_check(tls_server, pki, connect_ip=None, server=dns.server))
    assert row["ok"] is True, row
    assert (ALLOWED, 1) in dns.queries


def test_tls_dns_failure_is_reported(tls_server, pki, dns):
    row = one("level2", tls_check(tls_server, pki, host="nx.example.test", connect_ip=None, server=dns.server))
    assert (row["ok"], row["observed"]) == (False, f"DNS NXDOMAIN at {dns.server}")


def test_tls_wrong_peer(tls_server, pki):
    row = one("level2", tls_check(tls_server, pki, expect_peer="192.0.2.4"))
    assert row["ok"] is False
    assert row["observed"] == f"handshake ok; far end saw host {ALLOWED}, peer 127.0.0.1"
    assert row["hint"].startswith("the connection reached the far end from 127.0.0.1, not from the egress node 192.0.2.4")


def test_tls_certificate_for_another_host(tls_server, pki):
    row = one("level2", tls_check(tls_server, pki, host="not-in-cert.example.test"))
    assert row["ok"] is False
    assert row["observed"].startswith("handshake: certificate rejected: Hostname mismatch")
    assert "terminates TLS or serves the wrong certificate" in row["hint"]


def test_tls_untrusted_ca(tls_server, pki, tmp_path):
    other_ca, _, _ = make_ca_and_server_cert(tmp_path, ["unrelated.test"])
    row = one("level2", tls_check(tls_server, pki, ca_file=str(other_ca)))
    assert row["ok"] is False and row["observed"].startswith("handshake: certificate rejected:")


def test_tls_far_end_reports_other_host(pki):
    _, cert, key = pki
    srv = TLSServer(cert, key, report_host="elsewhere.example.test")
    try:
        row = one("level3", tls_check(srv, pki))
    finally:
        srv.close()
    assert row["ok"] is False
    assert row["hint"] == ("the far end answered for elsewhere.example.test, not good.example.test: a proxy forwards "
                           "to the wrong upstream")


def test_tls_reset_names_the_allow_list():
    srv = ResetServer()
    try:
        row = one("level2", {"kind": "tls", "host": ALLOWED, "port": srv.port, "connect_ip": "127.0.0.1",
                             "expect_peer": "127.0.0.1", "proxy": "level3"})
    finally:
        srv.close()
    assert row["ok"] is False and row["observed"] == "handshake: reset"
    assert row["hint"].startswith(f"TLS reset at 127.0.0.1:{srv.port} (level3): {ALLOWED} is not in the allow list "
                                  f"of the proxy there")


def test_tls_nothing_listening():
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    row = one("level2", {"kind": "tls", "host": ALLOWED, "port": port, "connect_ip": "127.0.0.1"})
    assert (row["ok"], row["observed"]) == (False, f"connect 127.0.0.1:{port}: connection refused")
    assert row["hint"] == f"nothing listens on 127.0.0.1:{port}: is the proxy running with this port in its listeners?"


# ----------------------------------------------------------------------------------------------- refused
@pytest.mark.parametrize("host", ["evil.example", "", probe.NO_SNI, probe.NON_TLS])
def test_refused_ok_on_reset(host):
    srv = ResetServer()
    try:
        row = one("level2", {"kind": "refused", "host": host, "port": srv.port, "connect_ip": "127.0.0.1"})
    finally:
        srv.close()
    assert row == {"level": "level2", "check": "refused", "host": host, "port": srv.port,
                   "expected": "reset or closed before a handshake", "observed": "reset", "ok": True, "hint": ""}


def test_refused_ok_on_plain_close():
    srv = ResetServer(mode="close")
    try:
        row = one("level2", {"kind": "refused", "host": "evil.example", "port": srv.port, "connect_ip": "127.0.0.1"})
    finally:
        srv.close()
    assert (row["ok"], row["observed"]) in {(True, "closed"), (True, "reset")}


def test_refused_fails_when_handshake_completes(tls_server):
    row = one("level3", {"kind": "refused", "host": "evil.example", "port": tls_server.port, "connect_ip": "127.0.0.1",
                         "proxy": "level4"})
    assert (row["ok"], row["observed"]) == (False, "handshake completed")
    assert row["hint"].startswith(f"the proxy at 127.0.0.1:{tls_server.port} (level4) let evil.example through")


def test_refused_fails_on_timeout_and_without_listener():
    srv = ResetServer(mode="silent")
    try:
        row = one("level2", {"kind": "refused", "host": "evil.example", "port": srv.port, "connect_ip": "127.0.0.1",
                             "timeout": 0.3})
    finally:
        srv.close()
    assert (row["ok"], row["observed"]) == (False, "timeout")
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    row = one("level2", {"kind": "refused", "host": "evil.example", "port": port, "connect_ip": "127.0.0.1"})
    assert (row["ok"], row["observed"]) == (False, "connect: connection refused")


# ----------------------------------------------------------------------------------------------- running
def test_checks_run_concurrently(dns):
    checks = [{"kind": "dns", "host": "silent.example.test", "server": dns.server, "expect_ip": "192.0.2.1",
               "timeout": 0.5} for _ in range(24)]
    t0 = time.monotonic()
    rows = run_checks("level2", checks, workers=32)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.5, f"24 checks of 0.5 s took {elapsed:.2f} s: not concurrent"
    assert [r["observed"] for r in rows] == ["timeout"] * 24


def test_rows_keep_input_order_and_bad_checks_become_rows(dns):
    rows = run_checks("level2", [
        {"kind": "dns-refused", "host": "nx.example.test", "server": dns.server},
        {"kind": "bogus", "host": "x"},
        {"kind": "dns", "server": dns.server},
    ])
    assert [r["check"] for r in rows] == ["dns-refused", "bogus", "dns"]
    assert [r["ok"] for r in rows] == [True, False, False]
    assert rows[1]["observed"] == "unknown check kind 'bogus'"
    assert rows[2]["observed"].startswith("probe error: KeyError")


def test_stdin_stdout_contract(dns, tls_server, pki):
    request = {"level": "level3", "checks": [
        {"kind": "dns", "host": "parent.example.test", "server": dns.server, "expect_ip": "192.0.2.10"},
        tls_check(tls_server, pki),
    ]}
    out = subprocess.run([sys.executable, "-m", "layernet.probe"], input=json.dumps(request), capture_output=True,
                         text=True, timeout=30, check=True)
    rows = json.loads(out.stdout)
    assert [list(r) for r in rows] == [FIELDS, FIELDS]
    assert [(r["level"], r["check"], r["ok"]) for r in rows] == [("level3", "dns", True), ("level3", "tls", True)]


def test_runs_as_a_plain_file_without_site_packages(dns, tmp_path):
    """As in the Kubernetes Job: `python /probe/probe.py FILE`, no layernet, no third-party packages."""
    (tmp_path / "checks.json").write_text(json.dumps(
        {"level": "level2", "checks": [{"kind": "dns-refused", "host": "nx.example.test", "server": dns.server}]}))
    copy = tmp_path / "probe.py"
    copy.write_text(PROBE_FILE.read_text())
    out = subprocess.run([sys.executable, "-I", "-S", str(copy), str(tmp_path / "checks.json")],
                         capture_output=True, text=True, timeout=30, cwd=tmp_path, check=True)
    assert json.loads(out.stdout)[0]["ok"] is True


def test_bad_input_exit_code():
    out = subprocess.run([sys.executable, "-m", "layernet.probe"], input="not json", capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and "expected JSON" in out.stderr


def test_probe_imports_only_the_standard_library():
    tree = ast.parse(PROBE_FILE.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names - set(sys.stdlib_module_names)
