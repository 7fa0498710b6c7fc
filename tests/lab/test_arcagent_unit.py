"""The Arc agent stand-in never hangs in one call: a call that does not end (a half-open connection whose close
waits on a peer that never answers) is a failed attempt after four call timeouts, and start-up retries it."""
from __future__ import annotations

import socket
import threading
import time

from layernet.lab import arcagent
from layernet.lab.pki import ensure_ca


def _agent(tmp_path, call_timeout: float) -> arcagent.Agent:
    ca, _ = ensure_ca(tmp_path / "ca")
    return arcagent.Agent({"status": str(tmp_path / "status.json"), "cluster_id": "/subscriptions/x/c", "level": "l4",
                           "ca_file": str(ca), "call_timeout": call_timeout})


def test_a_call_that_never_ends_is_a_failed_attempt_naming_the_host(tmp_path, monkeypatch):
    agent = _agent(tmp_path, 0.05)
    release = threading.Event()
    monkeypatch.setattr(agent, "attempt", lambda call: release.wait(5) or {"ok": True})
    t0 = time.monotonic()
    row = agent.attempt_within({"step": "relay websocket", "url": "wss://relay.example.test/$hc/x", "method": "WS"}, 0.2)
    took = time.monotonic() - t0
    release.set()
    assert 0.2 <= took < 2.0
    assert row["ok"] is False and row["observed"] == "no end within 0.2 s"
    assert (row["step"], row["host"], row["port"]) == ("relay websocket", "relay.example.test", 443)


def test_a_call_that_ends_gives_its_own_row(tmp_path):
    """A real TLS call to a loopback server that accepts and never speaks: the call's own timeout ends it."""
    agent = _agent(tmp_path, 0.3)
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    try:
        row = agent.attempt_within({"step": "cluster connect", "url": f"127.0.0.1:{port}", "method": "TLS"}, 1.2)
    finally:
        srv.close()
    assert row["ok"] is False and row["observed"] != "no end within 1.2 s" and row["seconds"] < 1.2
    assert (row["host"], row["port"]) == ("127.0.0.1", port)
