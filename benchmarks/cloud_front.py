"""The cloud front on loopback: new-connection latency of the echo (ALPN layernet-echo), of one HTTPS request to
an app through the front, and of the same request straight to the app (what the splice costs).

    .venv/bin/python benchmarks/cloud_front.py [N]

Prints p50/p90/max in ms per path. No lab needed; nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

from layernet.lab import pki
from layernet.lab.cloud.apps import AppServer, CloudSettings, build_cloud
from layernet.lab.cloud.front import Front
from layernet.lab.cloud.routes import RouteTable

REQUEST = (b"POST /azure-arc-k8sagents/healthCheck HTTP/1.1\r\nHost: westeurope.dp.kubernetesconfiguration.azure.com\r\n"
           b"Content-Length: 0\r\nConnection: close\r\n\r\n")
HOST = "westeurope.dp.kubernetesconfiguration.azure.com"


def _read_all(s) -> bytes:
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return out
        out += chunk


def one(port: int, ctx: ssl.SSLContext, host: str, request: bytes | None) -> float:
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            if request:
                tls.sendall(request)
            data = _read_all(tls)
    assert data, "empty answer"
    return 1000 * (time.perf_counter() - t0)


def main(n: int = 300) -> None:
    root = Path(tempfile.mkdtemp(prefix="cloud-front-bench-"))
    cloud = build_cloud(CloudSettings(state=root / "cloud"))
    apps = AppServer(cloud.specs, root / "ca", root / "cloud" / "certs")
    routes = apps.start()
    cert, key = pki.issue_server_cert(root / "ca", root / "cloud", [HOST, "management.azure.com"])
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    front = Front("127.0.0.1", {port: 443}, str(cert), str(key), routes=RouteTable(routes))
    front.listen()
    front.start()
    ca = str(root / "ca" / pki.CA_CERT)
    echo_ctx = ssl.create_default_context(cafile=ca)
    echo_ctx.set_alpn_protocols(["layernet-echo"])
    app_ctx = ssl.create_default_context(cafile=ca)
    paths = {"echo (ALPN layernet-echo)": (port, echo_ctx, None),
             "app through the front": (port, app_ctx, REQUEST),
             "app direct (no front)": (apps.ports["dataplane"], app_ctx, REQUEST)}
    try:
        for name, (p, ctx, req) in paths.items():
            for _ in range(20):
                one(p, ctx, HOST, req)
            ms = sorted(one(p, ctx, HOST, req) for _ in range(n))
            print(f"{name:<28} n={n}  p50 {statistics.median(ms):6.2f} ms  p90 {ms[int(0.9 * n)]:6.2f} ms  max {ms[-1]:6.2f} ms")
    finally:
        front.close()
        apps.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
