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
    def __init__(self, app, name: str, log: RequestLog):
        self.app, self.name, self.log = app, name, log

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status = {"code": 0}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "websocket.accept":
                status["code"] = 101
            elif message["type"] == "websocket.close" and not status["code"]:
                status["code"] = 403
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
            state = scope.get("state") or {}
            row = {"time": round(time.time(), 3), "app": self.name, "host": headers.get("host", ""),
                   "method": scope.get("method", "WS"), "path": scope.get("path", ""),
                   "peer": state.get("peer", ""), "status": status["code"] or 500,
                   "ms": round(1000 * (time.monotonic() - started), 2)}
            if state.get("log_note"):
                row["note"] = state["log_note"]
            self.log.write(row)
