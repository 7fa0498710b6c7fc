"""Processes in lab namespaces: start, record, check, stop.

Every process is started with `ip netns exec <ns> ...` (which execs the command, so the PID we get is the
program's own), in its own session, with output to a log file. PIDs are recorded in `<state>/pids.json`
together with the kernel start time, so a reused PID is never mistaken for ours. Cleanup also works by
namespace membership (`ip netns pids`), which finds processes a crashed run never recorded.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

from layernet.lab import LabError

_children: dict[int, subprocess.Popen] = {}   # processes started by this Python process (reaped on stop)


@dataclass
class Proc:
    name: str            # e.g. "level3/envoy", "cloud/tls"
    ns: str
    pid: int
    start_time: int      # /proc/<pid>/stat field 22: tells a reused PID apart
    argv: list
    log: str


def _stat(pid: int) -> Optional[tuple[str, int]]:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()
    return rest[0], int(rest[19])


def running(name: str, ns: str, pid: int, log: str = "") -> Proc:
    """A Proc for a process this module did not start (a pod's container, whose node started it)."""
    st = _stat(pid)
    return Proc(name, ns, pid, st[1] if st else 0, [], log)


def rss_mb(pid: int) -> Optional[float]:
    """Resident memory (VmRSS) of a process in MB, one decimal; None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def alive(p: Proc) -> bool:
    """Running (not a zombie) and still the process we started."""
    _reap(p.pid)
    st = _stat(p.pid)
    return st is not None and st[0] not in ("Z", "X") and st[1] == p.start_time


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)


def start(name: str, ns: str, argv: list[str], log: Path, env: Optional[dict] = None) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        child = subprocess.Popen(["ip", "netns", "exec", ns] + list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                 env=env if env is not None else os.environ.copy())
    _children[child.pid] = child
    st = _stat(child.pid)
    return Proc(name, ns, child.pid, st[1] if st else 0, list(argv), str(log))


# ----------------------------------------------------------------------------------------------- records
def load(path: Path) -> dict[str, Proc]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {k: Proc(**v) for k, v in raw.items()}


def save(path: Path, procs: dict[str, Proc]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: asdict(v) for k, v in procs.items()}, indent=1))
    tmp.replace(path)


# ----------------------------------------------------------------------------------------------- stopping
def ns_pids(ns: str) -> list[int]:
    proc = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(x) for x in proc.stdout.split() if x.isdigit()]


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _gone(pid: int) -> bool:
    _reap(pid)
    st = _stat(pid)
    return st is None or st[0] in ("Z", "X")


def terminate(pids: Iterable[int], timeout: float = 2.0) -> list[int]:
    """SIGTERM, wait up to `timeout`, then SIGKILL what is left. Returns the PIDs that were signalled."""
    pids = sorted({p for p in pids if p > 1 and p != os.getpid()})
    if not pids:
        return []
    _signal(pids, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    left = [p for p in pids if not _gone(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.01)
        left = [p for p in left if not _gone(p)]
    if left:
        _signal(left, signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while left and time.monotonic() < deadline:
            time.sleep(0.01)
            left = [p for p in left if not _gone(p)]
        if left:
            raise LabError(f"processes {left} survived SIGKILL; check `ps -o pid,stat,cmd -p {','.join(map(str, left))}`")
    for p in pids:
        child = _children.pop(p, None)
        if child is not None:
            try:
                child.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
    return pids


def stop(procs: Iterable[Proc], timeout: float = 2.0) -> list[int]:
    """Stop recorded processes that are still ours."""
    return terminate([p.pid for p in procs if alive(p)], timeout)


def stop_namespaces(namespaces: Iterable[str], timeout: float = 2.0) -> list[int]:
    """Stop every process living in these namespaces (recorded or not)."""
    pids: list[int] = []
    for ns in namespaces:
        pids += ns_pids(ns)
    return terminate(pids, timeout)


# ----------------------------------------------------------------------------------------------- readiness
def listening(pid: int, ports: Iterable[int], proto: str = "tcp") -> set[int]:
    """Which of `ports` have a socket bound in the network namespace of `pid` (read from /proc/<pid>/net, so
    no process is started). TCP counts only LISTEN sockets."""
    want, found = set(ports), set()
    try:
        lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        port = int(parts[1].rsplit(":", 1)[1], 16)
        if port in want and (proto != "tcp" or parts[3] == "0A"):
            found.add(port)
    return found
