"""The cloud stand-in: a TLS server for every name, and the "internet DNS" that sends every name to it.

Run in the cloud namespace:

    python -m layernet.lab.cloud --addr 198.51.100.10 --ports 443,8084,9093 --cert server.crt --key server.key

After the TLS handshake the server writes one JSON line, ``{"host": <SNI>, "port": <port>, "peer":
"<client ip>:<port>"}``, and closes. `peer` is the address the connection came from, so a probe can prove
which level left the plant (the egress level's node IP).
"""
from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
import threading
from pathlib import Path

from layernet.render.dns import unbound_server_basics


def dns_config(listen_ip: str, answer_ip: str, workdir: str) -> str:
    """unbound configuration for the cloud namespace: every name (A) answers `answer_ip`; AAAA gets an empty
    NOERROR answer (a `redirect` zone holding only an A record)."""
    return "\n".join(["server:"] + unbound_server_basics([listen_ip], 53, Path(workdir)) + [
        "  num-threads: 1",
        "  so-reuseport: no",
        "  outgoing-range: 64",
        "  access-control: 0.0.0.0/0 allow",
        '  local-zone: "." redirect',
        f'  local-data: ". 60 IN A {answer_ip}"',
        "remote-control:",
        "  control-enable: no",
        "",
    ])


class _Server:
    def __init__(self, addr: str, ports: list[int], cert: str, key: str):
        self.addr, self.ports = addr, ports
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.sni_callback = self._sni
        self._names: dict[int, str] = {}
        self._lock = threading.Lock()
        self.socks: list[socket.socket] = []

    def _sni(self, sslsock, server_name, ctx):  # runs during the handshake, on the handling thread
        with self._lock:
            self._names[id(sslsock)] = server_name or ""

    def listen(self) -> None:
        for port in self.ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.addr, port))
            s.listen(512)
            self.socks.append(s)

    def serve(self) -> None:
        threads = [threading.Thread(target=self._accept, args=(s,), daemon=True) for s in self.socks]
        for t in threads:
            t.start()
        print(f"cloud stand-in: TLS on {self.addr} ports {','.join(map(str, self.ports))}", flush=True)
        for t in threads:
            t.join()

    def _accept(self, lsock: socket.socket) -> None:
        port = lsock.getsockname()[1]
        while True:
            try:
                conn, peer = lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn, peer, port), daemon=True).start()

    def _handle(self, conn: socket.socket, peer, port: int) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(10)
        tls = None
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
            with self._lock:
                host = self._names.pop(id(tls), "")
            line = json.dumps({"host": host, "port": port, "peer": f"{peer[0]}:{peer[1]}"}) + "\n"
            tls.sendall(line.encode())
            try:
                tls.unwrap()
            except (OSError, ssl.SSLError, ValueError):
                pass
        except (OSError, ssl.SSLError):
            pass
        finally:
            with self._lock:
                if tls is not None:
                    self._names.pop(id(tls), None)
            try:
                (tls or conn).close()
            except OSError:
                pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m layernet.lab.cloud", description=__doc__.splitlines()[0])
    ap.add_argument("--addr", required=True)
    ap.add_argument("--ports", default="443,8084,9093")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    args = ap.parse_args(argv)
    srv = _Server(args.addr, [int(p) for p in args.ports.split(",") if p], args.cert, args.key)
    srv.listen()
    srv.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
