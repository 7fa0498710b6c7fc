"""The true client of a spliced connection, for the apps behind the front.

The front opens its own TCP connection to an app's loopback port, so the app sees 127.0.0.1:<port> as its
client. Before it forwards a byte, the front records ``(its local address of that connection) -> Peer`` here;
`PeerMiddleware` looks the app's client address up and puts the Peer on ``request.state.peer`` ("ip:port" of
the proxy the connection came through), ``request.state.sni`` and ``request.state.front_port``. A connection
made straight to an app (tests) keeps its own address as the peer.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Peer:
    ip: str
    port: int
    sni: str = ""
    front_port: int = 0

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


class PeerTable:
    def __init__(self):
        self._map: dict[tuple, Peer] = {}
        self._lock = threading.Lock()

    def add(self, local: tuple, peer: Peer) -> None:
        with self._lock:
            self._map[(local[0], int(local[1]))] = peer

    def remove(self, local: tuple) -> None:
        with self._lock:
            self._map.pop((local[0], int(local[1])), None)

    def get(self, client: Optional[tuple]) -> Optional[Peer]:
        if not client:
            return None
        with self._lock:
            return self._map.get((client[0], int(client[1])))

    def __len__(self) -> int:
        with self._lock:
            return len(self._map)


PEERS = PeerTable()      # one per cloud process: the front writes, the apps read


class PeerMiddleware:
    """ASGI middleware: scope["state"]["peer"] (hence request.state.peer) is the true client "ip:port"."""

    def __init__(self, app, table: PeerTable = PEERS):
        self.app, self.table = app, table

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            peer = self.table.get(tuple(client) if client else None)
            state = scope.setdefault("state", {})
            if peer is None and client:
                peer = Peer(str(client[0]), int(client[1]))
            state["peer"] = str(peer) if peer else ""
            state["peer_ip"] = peer.ip if peer else ""
            state["sni"] = peer.sni if peer else ""
            state["front_port"] = peer.front_port if peer else 0
        await self.app(scope, receive, send)
