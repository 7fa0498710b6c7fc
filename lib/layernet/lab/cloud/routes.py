"""Which backend serves a (server name, port): the built-in HTTPS apps plus `<state>/cloud/routes.json`.

routes.json is a list of ``{"names": ["<exact name or *.zone>", ...], "port": 9093, "backend": "127.0.0.1:19093"}``;
`port` is the cloud port the client connected to. Patterns match as the proxies match them
(`layernet.allowlist.host_matches`). The file is re-read when its modification time changes, so another lab
service (the Kafka broker) can add its entry while the cloud runs. File entries win over the built-in apps,
exact names over wildcards, the first entry over later ones.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from layernet.allowlist import host_matches


@dataclass(frozen=True)
class Route:
    names: tuple
    port: int
    backend: tuple           # (host, port)
    source: str = "routes.json"

    def matches(self, name: str, port: int) -> Optional[int]:
        """0 for an exact match, 1 for a wildcard match, None for no match."""
        if port != self.port:
            return None
        for pattern in self.names:
            if not pattern.startswith("*.") and host_matches(pattern, name):
                return 0
        for pattern in self.names:
            if pattern.startswith("*.") and host_matches(pattern, name):
                return 1
        return None


class RouteFileError(ValueError):
    pass


def parse_backend(text: str, where: str) -> tuple:
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RouteFileError(f"{where}: backend {text!r} is not HOST:PORT")
    return host, int(port)


def parse_routes(doc, where: str = "routes.json") -> list[Route]:
    if not isinstance(doc, list):
        raise RouteFileError(f"{where}: expected a JSON list of {{names, port, backend}}")
    out = []
    for i, item in enumerate(doc):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise RouteFileError(f"{at}: expected an object with names, port, backend")
        names = item.get("names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise RouteFileError(f"{at}.names: expected a non-empty list of host names or *.zone patterns")
        port = item.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise RouteFileError(f"{at}.port: expected a TCP port number")
        out.append(Route(tuple(n.lower() for n in names), port, parse_backend(item.get("backend", ""), f"{at}.backend")))
    return out


class RouteTable:
    """Built-in routes plus the routes file, re-read when it changes. Thread-safe."""

    def __init__(self, builtin: list[Route] | None = None, path: Optional[Path] = None):
        self.builtin = list(builtin or [])
        self.path = Path(path) if path else None
        self._file: list[Route] = []
        self._mtime: Optional[int] = None
        self._lock = threading.Lock()
        self.error = ""

    def _refresh(self) -> None:
        if self.path is None:
            return
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            self._file, self._mtime, self.error = [], None, ""
            return
        if mtime == self._mtime:
            return
        try:
            self._file = parse_routes(json.loads(self.path.read_text()), str(self.path))
            self.error = ""
        except (OSError, ValueError) as exc:       # a half-written or bad file: keep the last good routes
            self.error = str(exc)
            return
        self._mtime = mtime

    def routes(self) -> list[Route]:
        with self._lock:
            self._refresh()
            return self._file + self.builtin

    def lookup(self, name: str, port: int) -> Optional[Route]:
        if not name:
            return None
        best = None
        for route in self.routes():
            rank = route.matches(name, port)
            if rank == 0:
                return route
            if rank == 1 and best is None:
                best = route
        return best
