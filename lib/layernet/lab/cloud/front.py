"""The cloud's TLS front: one listener per cloud port, each connection dispatched by its ClientHello.

See the package docstring for the protocol. Threads: one accept loop per port, one thread per connection
(two while a connection is spliced).
"""
from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Optional

from layernet.lab.cloud.hello import NotTLS, peek_hello
from layernet.lab.cloud.peers import PEERS, Peer, PeerTable
from layernet.lab.cloud.routes import RouteTable

ECHO_ALPN = "layernet-echo"
HELLO_TIMEOUT = 10.0
CONNECT_TIMEOUT = 3.0


def echo_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols([ECHO_ALPN])
    return ctx


class Front:
    """`ports` maps each listening port to the cloud port it stands for (the same number in the lab; tests
    listen on free ports and map them to 443/9093)."""

    def __init__(self, addr: str, ports, cert: str, key: str, routes: Optional[RouteTable] = None,
                 peers: PeerTable = PEERS, log: Optional[Path] = None):
        self.addr = addr
        self.ports = dict(ports) if isinstance(ports, dict) else {int(p): int(p) for p in ports}
        self.ctx = echo_context(cert, key)
        self.routes = routes or RouteTable()
        self.peers = peers
        self.socks: list[socket.socket] = []
        self._log_path = Path(log) if log else None
        self._log_lock = threading.Lock()
        self._log = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------------------------------- life cycle
    def listen(self) -> None:
        for port in self.ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.addr, port))
            s.listen(512)
            self.socks.append(s)
        if self._log_path:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self._log_path, "a", buffering=1)

    def start(self) -> None:
        """Accept in background threads (returns at once)."""
        for s in self.socks:
            t = threading.Thread(target=self._accept, args=(s,), daemon=True)
            t.start()
            self._threads.append(t)

    def serve(self) -> None:
        self.start()
        for t in self._threads:
            t.join()

    def close(self) -> None:
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        if self._log:
            with self._log_lock:
                self._log.close()
                self._log = None

    # ------------------------------------------------------------------------------------------- connections
    def _accept(self, lsock: socket.socket) -> None:
        port = lsock.getsockname()[1]
        cloud_port = self.ports[port]
        while True:
            try:
                conn, peer = lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn, peer, port, cloud_port), daemon=True).start()

    def _record(self, **row) -> None:
        if self._log is None:
            return
        row = {"time": round(time.time(), 3), **row}
        with self._log_lock:
            if self._log is not None:
                self._log.write(json.dumps(row) + "\n")

    def _handle(self, conn: socket.socket, peer, port: int, cloud_port: int) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer_text = f"{peer[0]}:{peer[1]}"
        try:
            hello = peek_hello(conn, HELLO_TIMEOUT)
        except (NotTLS, OSError) as exc:
            self._record(port=cloud_port, peer=peer_text, sni="", handler="closed", note=str(exc)[:120])
            conn.close()
            return
        route = None if ECHO_ALPN in hello.alpn else self.routes.lookup(hello.sni, cloud_port)
        if route is None:
            self._record(port=cloud_port, peer=peer_text, sni=hello.sni, handler="echo")
            self._echo(conn, peer_text, port, hello.sni)
        else:
            backend = f"{route.backend[0]}:{route.backend[1]}"
            self._record(port=cloud_port, peer=peer_text, sni=hello.sni, handler=route.source, backend=backend)
            self._splice(conn, Peer(peer[0], peer[1], hello.sni, cloud_port), route.backend)

    def _echo(self, conn: socket.socket, peer_text: str, port: int, sni: str) -> None:
        conn.settimeout(HELLO_TIMEOUT)
        tls = None
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
            line = json.dumps({"host": sni, "port": port, "peer": peer_text}) + "\n"
            tls.sendall(line.encode())
            try:
                tls.unwrap()
            except (OSError, ssl.SSLError, ValueError):
                pass
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                (tls or conn).close()
            except OSError:
                pass

    def _splice(self, conn: socket.socket, peer: Peer, backend: tuple) -> None:
        conn.settimeout(None)
        try:
            up = socket.create_connection(backend, timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            self._record(port=peer.front_port, peer=str(peer), sni=peer.sni, handler="closed",
                         note=f"backend {backend[0]}:{backend[1]}: {exc.strerror or exc}")
            conn.close()
            return
        up.settimeout(None)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        local = up.getsockname()[:2]
        self.peers.add(local, peer)
        back = threading.Thread(target=_pump, args=(up, conn), daemon=True)
        back.start()
        try:
            _pump(conn, up)
            back.join()
        finally:
            self.peers.remove(local)
            for s in (conn, up):
                try:
                    s.close()
                except OSError:
                    pass


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy src to dst until src ends, then end dst's sending side."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
