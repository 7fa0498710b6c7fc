"""Readiness probes as the lab's node runs them: a kubelet's, against the pod's address (= the node's: every lab pod
shares the node's network).

`check` runs one probe once: tcpSocket (a port number or a named containerPort) connects, httpGet asks
`scheme://host:port/path` (HTTP or HTTPS, no certificate check, as a kubelet) and passes on 200-399, exec runs
its command here (the container is a process on this machine) and passes on exit 0. `Readiness` keeps one
container's verdict: not ready until the probe passes successThreshold times in a row, unready again after
failureThreshold failures in a row, checks every periodSeconds (at least `MIN_PERIOD`) from initialDelaySeconds
after the container started. A container without a readiness probe is ready while it runs.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Optional

from layernet.lab.clusters.volumes import rewrite

MIN_PERIOD = 0.5          # seconds between two checks of one container, whatever the probe says


def port_of(value, container: dict) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    for p in container.get("ports") or []:
        if p.get("name") == value:
            return int(p["containerPort"])
    raise ValueError(f"port {value!r} is not a number nor the name of one of the container's ports")


def check(probe: dict, container: dict, ip: str, mounts: Optional[dict[str, Path]] = None) -> tuple[bool, str]:
    """(passed, what happened) for one run of a probe of `container` whose pod has address `ip`."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "tcpSocket" in probe:
            t = probe["tcpSocket"]
            host, port = t.get("host") or ip, port_of(t.get("port"), container)
            with socket.create_connection((host, port), timeout=timeout):
                return True, f"connected to {host}:{port}"
        if "httpGet" in probe:
            return _http(probe["httpGet"], container, ip, timeout)
        if "exec" in probe:
            argv = [rewrite(a, mounts or {}) for a in probe["exec"].get("command") or []]
            done = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
            out = (done.stdout + done.stderr).decode(errors="replace").strip()[:200]
            return done.returncode == 0, f"exit code {done.returncode}" + (f": {out}" if out else "")
    except (OSError, ValueError, http.client.HTTPException, subprocess.TimeoutExpired) as exc:
        return False, f"{type(exc).__name__}: {str(exc)[:200]}"
    kinds = ", ".join(k for k in probe if k not in _TIMING) or "none"
    return False, f"the lab's node runs tcpSocket, httpGet and exec probes, not {kinds}"


_TIMING = {"initialDelaySeconds", "periodSeconds", "timeoutSeconds", "successThreshold", "failureThreshold",
           "terminationGracePeriodSeconds"}


def _http(get: dict, container: dict, ip: str, timeout: float) -> tuple[bool, str]:
    host, port = get.get("host") or ip, port_of(get.get("port"), container)
    scheme = (get.get("scheme") or "HTTP").upper()
    if scheme == "HTTPS":
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"User-Agent": "kube-probe/1.37", "Accept": "*/*"}
    headers.update({h["name"]: h.get("value", "") for h in get.get("httpHeaders") or []})
    path = get.get("path") or "/"
    try:
        conn.request("GET", path if path.startswith("/") else "/" + path, headers=headers)
        status = conn.getresponse().status
    finally:
        conn.close()
    url = f"{scheme.lower()}://{host}:{port}{path}"
    if 200 <= status < 400:
        return True, f"{url} answered {status}"
    return False, f"HTTP probe failed with statuscode: {status} ({url})"


class Readiness:
    """One container's readiness under its probe (None: ready while running); times are time.monotonic()."""

    def __init__(self, probe: Optional[dict]):
        self.probe = probe
        p = probe or {}
        self.delay = float(p.get("initialDelaySeconds") or 0)
        self.period = max(MIN_PERIOD, float(p.get("periodSeconds") or 10))
        self.successes_needed = max(1, int(p.get("successThreshold") or 1))
        self.failures_allowed = max(1, int(p.get("failureThreshold") or 3))
        self.ready = probe is None
        self.next_check = 0.0
        self.streak = 0            # > 0: successes in a row, < 0: failures in a row
        self.detail = ""

    def started(self, at: float) -> None:
        """The container (re)started: not ready until its probe passes."""
        self.ready = self.probe is None
        self.next_check, self.streak, self.detail = at + self.delay, 0, ""

    def due(self, at: float) -> bool:
        return self.probe is not None and at >= self.next_check

    def record(self, passed: bool, detail: str, at: float) -> bool:
        """Take one check's result; True when the verdict changed."""
        self.next_check, self.detail = at + self.period, detail
        self.streak = max(self.streak, 0) + 1 if passed else min(self.streak, 0) - 1
        before = self.ready
        if passed and self.streak >= self.successes_needed:
            self.ready = True
        elif not passed and (not self.ready or -self.streak >= self.failures_allowed):
            self.ready = False
        return self.ready != before

    @property
    def failing(self) -> bool:
        """Has the probe just failed failureThreshold times in a row (the moment a kubelet's event is due)?"""
        return -self.streak == self.failures_allowed
