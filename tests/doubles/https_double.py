"""The HTTPS server under every HTTP double: a threading http.server on 127.0.0.1 (a free port) with a certificate
from a CA of its own (`ca` is what the client under test trusts)."""
from __future__ import annotations

import json
import ssl
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

from layernet.lab.pki import ensure_ca, issue_server_cert


class HttpsServer:
    def __init__(self, tmp: Path, handler):
        tmp = Path(tmp)
        ca_dir = tmp / "ca"
        self.ca, _ = ensure_ca(ca_dir)
        crt, key = issue_server_cert(ca_dir, tmp / "srv", ["localhost"], ["127.0.0.1"])
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(crt), str(key))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def read_body(handler):
    """The request body a handler received: its JSON when it parses, else its text (a double records either)."""
    n = int(handler.headers.get("Content-Length") or 0)
    raw = handler.rfile.read(n) if n else b""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def send(handler, status: int, data: bytes = b"", headers: dict | None = None) -> None:
    """Answer with `data` (JSON bytes; Content-Type only when there is a body) and the extra headers."""
    handler.send_response(status)
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    if data:
        handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)
