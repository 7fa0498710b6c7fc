"""Request log of the HTTPS apps: one JSON line per request in `<state>/cloud/requests/<app>.jsonl`.

Fields: time (epoch seconds), app, host (the Host header, i.e. the name the client asked for), method,
path, peer (the true client "ip:port": the proxy the connection came through), status, ms, and `note` when
the handler set ``request.state.log_note`` (e.g. which client got a token; never a secret). Evidence code
reads these to show which call crossed which hop. Must sit inside PeerMiddleware.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Optional


class RequestLog:
    def __init__(self, path: Optional[Path]):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._fh = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", buffering=1)

    def write(self, row: dict) -> None:
        if self._fh is None:
            return
        with self._lock:
            self._fh.write(json.dumps(row) + "\n")

    def close(self) -> None:
        with self._lock:
            if self._fh:
                self._fh.close()
                self._fh = None


def read(path: Path) -> list[dict]:
    """Rows of a request log (a missing file is an empty log)."""
    try:
        return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]
    except FileNotFoundError:
        return []


class LogMiddleware:
    """Writes the row when the response starts (status line sent, or websocket accepted), so a client that has
    its answer finds its row; `ms` is the time to that point. A request that fails before answering gets 500."""

    def __init__(self, app, name: str, log: RequestLog):
        self.app, self.name, self.log = app, name, log

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        started = time.monotonic()
        done = {"logged": False}

        def write(status: int) -> None:
            if done["logged"]:
                return
            done["logged"] = True
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
            state = scope.get("state") or {}
            row = {"time": round(time.time(), 3), "app": self.name, "host": headers.get("host", ""),
                   "method": scope.get("method", "WS"), "path": scope.get("path", ""),
                   "peer": state.get("peer", ""), "status": status,
                   "ms": round(1000 * (time.monotonic() - started), 2)}
            if state.get("log_note"):
                row["note"] = state["log_note"]
            self.log.write(row)

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                write(message["status"])
            elif message["type"] == "websocket.accept":
                write(101)
            elif message["type"] == "websocket.close":
                write(403)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            write(500)
