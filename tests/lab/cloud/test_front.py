"""The front dispatches each TLS connection by ALPN and server name: echo, built-in app, routes.json backend."""
from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time

import pytest
from cryptography import x509

from cloud_helpers import REGION, free_port
from layernet.harden.wire import client_hello
from layernet.lab.cloud import reqlog
from layernet.lab.cloud.hello import Hello, NotTLS, parse_client_hello, peek_hello


def _tls(lcloud, host: str, alpn=None, port: int = 443):
    ctx = ssl.create_default_context(cafile=str(lcloud.ca))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    raw = socket.create_connection(("127.0.0.1", lcloud.port(port)), timeout=5)
    return raw.getsockname(), ctx.wrap_socket(raw, server_hostname=host)


def _read_all(s) -> bytes:
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return out
        out += chunk


def _sans(tls) -> set:
    cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))


def test_parse_client_hello_from_the_tls_library():
    rec = client_hello(b"management.azure.com")
    hs = rec[5:]
    assert parse_client_hello(hs).sni == "management.azure.com"
    assert parse_client_hello(client_hello(None)[5:]).sni == ""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_alpn_protocols(["layernet-echo", "http/1.1"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="x.example.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    h = parse_client_hello(out.read()[5:])
    assert h == Hello("x.example.test", ["layernet-echo", "http/1.1"])


def test_a_client_hello_spread_over_two_records_is_read_whole():
    rec = client_hello(b"two.records.example.test")
    hs = rec[5:]
    cut = len(hs) // 3
    two = rec[:3] + cut.to_bytes(2, "big") + hs[:cut] + rec[:3] + (len(hs) - cut).to_bytes(2, "big") + hs[cut:]
    a, b = socket.socketpair()
    with a, b:
        a.sendall(two)
        assert peek_hello(b, timeout=2).sni == "two.records.example.test"
        assert b.recv(len(two) + 10, socket.MSG_DONTWAIT) == two                 # nothing was consumed


def test_echo_alpn_gets_the_echo_even_for_an_app_name(lcloud):
    local, tls = _tls(lcloud, "management.azure.com", ["layernet-echo"])
    with tls:
        assert "*.example.test" in _sans(tls)                               # the echo's certificate, not the app's
        reply = json.loads(_read_all(tls))
    assert reply == {"host": "management.azure.com", "port": lcloud.port(443), "peer": f"{local[0]}:{local[1]}"}


def test_app_name_without_echo_alpn_reaches_the_app_with_its_own_certificate_and_true_peer(lcloud):
    local, tls = _tls(lcloud, f"{REGION}.dp.kubernetesconfiguration.azure.com")
    with tls:
        assert _sans(tls) == {f"{REGION}.dp.kubernetesconfiguration.azure.com"}
        tls.sendall(b"POST /azure-arc-k8sagents/healthCheck HTTP/1.1\r\nHost: westeurope.dp.kubernetesconfiguration.azure.com\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        data = _read_all(tls)
    assert data.startswith(b"HTTP/1.1 200") and b'"Healthy"' in data
    time.sleep(0.1)
    rows = reqlog.read(lcloud.state / "requests" / "dataplane.jsonl")
    assert rows[-1]["peer"] == f"{local[0]}:{local[1]}" and rows[-1]["path"] == "/azure-arc-k8sagents/healthCheck"
    front = reqlog.read(lcloud.state / "front.jsonl")
    assert any(r["peer"] == f"{local[0]}:{local[1]}" and r["handler"] == "dataplane" for r in front)


def test_unknown_name_and_no_sni_get_the_echo(lcloud):
    _, tls = _tls(lcloud, "anything.example.test")
    with tls:
        assert json.loads(_read_all(tls))["host"] == "anything.example.test"
    raw = socket.create_connection(("127.0.0.1", lcloud.port(443)), timeout=5)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with ctx.wrap_socket(raw) as tls:                                       # no server_hostname: no SNI
        assert json.loads(_read_all(tls))["host"] == ""


def test_non_tls_bytes_are_closed_without_an_answer(lcloud):
    with socket.create_connection(("127.0.0.1", lcloud.port(443)), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: management.azure.com\r\n\r\n")
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass


class _Backend:
    """A plain TCP server: records the first bytes it gets, answers a marker, closes."""

    def __init__(self, marker: bytes):
        self.marker, self.got = marker, []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(3)
                data = b""
                while len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.got.append(data)
                conn.sendall(self.marker)


def _write_routes(lcloud, routes) -> None:
    path = lcloud.state / "routes.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(routes))
    os.replace(tmp, path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))           # a distinct mtime even within one tick


def _raw_hello(lcloud, sni: bytes, port: int, chunks: int = 1) -> bytes:
    hello = client_hello(sni)
    with socket.create_connection(("127.0.0.1", lcloud.port(port)), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        step = -(-len(hello) // chunks)
        for i in range(0, len(hello), step):
            s.sendall(hello[i:i + step])
            time.sleep(0.02)
        s.settimeout(3)
        return s.recv(100)


def test_routes_file_splices_by_name_and_port_and_is_reread(lcloud):
    a, b = _Backend(b"BACKEND-A"), _Backend(b"BACKEND-B")
    try:
        _write_routes(lcloud, [{"names": ["evhns.servicebus.windows.net"], "port": 9093, "backend": f"127.0.0.1:{a.port}"}])
        assert _raw_hello(lcloud, b"evhns.servicebus.windows.net", 9093) == b"BACKEND-A"
        got = a.got[-1]                                                      # the ClientHello, whole and unread
        assert got[:1] == b"\x16" and len(got) == 5 + int.from_bytes(got[3:5], "big")
        assert parse_client_hello(got[5:]).sni == "evhns.servicebus.windows.net"
        # the same name on 443 is the relay app (a TLS server answers a ServerHello), another name on 9093 the echo
        assert _raw_hello(lcloud, b"evhns.servicebus.windows.net", 443)[:1] == b"\x16"
        assert _raw_hello(lcloud, b"other.servicebus.windows.net", 9093)[:1] == b"\x16"
        assert len(a.got) == 1
        # a ClientHello split over several TCP segments is still read whole before dispatch
        assert _raw_hello(lcloud, b"evhns.servicebus.windows.net", 9093, chunks=4) == b"BACKEND-A"
        # a changed file is re-read: a wildcard to backend B
        _write_routes(lcloud, [{"names": ["*.servicebus.windows.net"], "port": 9093, "backend": f"127.0.0.1:{b.port}"}])
        assert _raw_hello(lcloud, b"other.servicebus.windows.net", 9093) == b"BACKEND-B"
        # a broken file keeps the last good routes and says why
        (lcloud.state / "routes.json").write_text('[{"names": [], "port": 9093}]')
        os.utime(lcloud.state / "routes.json", ns=(0, time.time_ns() + 5_000_000))
        assert _raw_hello(lcloud, b"other.servicebus.windows.net", 9093) == b"BACKEND-B"
        assert "names" in lcloud.routes.error
    finally:
        (lcloud.state / "routes.json").unlink(missing_ok=True)
        for s in (a, b):
            s.sock.close()


def test_echo_still_answers_app_names_on_other_ports(lcloud):
    _, tls = _tls(lcloud, "management.azure.com", port=9093)
    with tls:
        assert json.loads(_read_all(tls))["host"] == "management.azure.com"


def test_peek_hello_rejects_non_tls():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"SSH-2.0-x\r\n")
        with pytest.raises(NotTLS):
            peek_hello(b, timeout=1)


def test_relay_websocket_reports_the_true_peer_and_echoes(lcloud):
    import websockets.sync.client as wsc

    ctx = ssl.create_default_context(cafile=str(lcloud.ca))
    raw = socket.create_connection(("127.0.0.1", lcloud.port(443)), timeout=5)
    local = raw.getsockname()
    with wsc.connect("wss://ns1.servicebus.windows.net/$hc/level4?sb-hc-action=listen", sock=raw, ssl=ctx,
                     server_hostname="ns1.servicebus.windows.net") as ws:
        first = json.loads(ws.recv(timeout=5))
        assert first["service"] == "relay" and first["peer"] == f"{local[0]}:{local[1]}"
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"


def test_mcr_manifest_and_blob_through_the_data_host(lcloud):
    import requests

    ca = str(lcloud.ca)
    r = requests.get("https://mcr.microsoft.com/v2/", verify=ca, timeout=5)
    assert r.status_code == 200 and r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    m = requests.get("https://mcr.microsoft.com/v2/azurearck8s/agent/manifests/1.0", verify=ca, timeout=5)
    assert m.status_code == 200 and m.headers["Docker-Content-Digest"].startswith("sha256:")
    layer = m.json()["layers"][0]
    b = requests.get(f"https://mcr.microsoft.com/v2/azurearck8s/agent/blobs/{layer['digest']}", verify=ca, timeout=5)
    assert b.status_code == 200 and len(b.content) == layer["size"]
    assert b.history and b.history[0].status_code == 307 and f"{REGION}.data.mcr.microsoft.com" in b.url


def test_probe_offers_the_echo_alpn_so_app_names_still_prove_the_path(lcloud):
    from layernet.probe import run_check

    port = lcloud.port(443)
    for host in ("management.azure.com", "login.microsoftonline.com", "anything.example.test"):
        row = run_check("level4", {"kind": "tls", "host": host, "port": port, "connect_ip": "127.0.0.1",
                                   "ca_file": str(lcloud.ca), "expect_peer": "127.0.0.1"})
        assert row["ok"], row
        assert f"far end saw host {host}, peer 127.0.0.1" in row["observed"]


def test_a_dead_backend_closes_the_connection_and_says_why(lcloud):
    dead = free_port()
    _write_routes(lcloud, [{"names": ["dead.example.test"], "port": 9093, "backend": f"127.0.0.1:{dead}"}])
    try:
        try:
            assert _raw_hello(lcloud, b"dead.example.test", 9093) == b""
        except ConnectionResetError:
            pass
        time.sleep(0.1)
        row = reqlog.read(lcloud.state / "front.jsonl")[-1]
        assert row["sni"] == "dead.example.test" and row["handler"] == "closed" and f":{dead}" in row["note"]
    finally:
        (lcloud.state / "routes.json").unlink(missing_ok=True)
