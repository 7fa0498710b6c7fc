"""Small clients that run inside a lab namespace (via `ip netns exec`)."""
from __future__ import annotations

import json
import subprocess
import sys

TLS_CLIENT = r"""
import json, socket, ssl, sys, time
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {"host": host}
t0 = time.perf_counter()
try:
    ip = sys.argv[4] if len(sys.argv) > 4 else socket.gethostbyname(host)
    out["ip"] = ip
    t1 = time.perf_counter()
    s = socket.create_connection((ip, port), timeout=3)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["layernet-echo"])      # the cloud's echo, also for names its apps serve
    tls = ctx.wrap_socket(s, server_hostname=host)
    line = b""
    while not line.endswith(b"\n"):
        chunk = tls.recv(4096)
        if not chunk:
            break
        line += chunk
    out["reply"] = json.loads(line)
    out["connect_ms"] = round(1000 * (time.perf_counter() - t1), 2)
except Exception as exc:
    out["error"] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""

TCP_CLIENT = r"""
import json, socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print(json.dumps({"result": "connected"}))
except Exception as exc:
    print(json.dumps({"result": type(exc).__name__}))
"""


def in_ns(ns: str, code: str, *args: str) -> dict:
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, *map(str, args)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
