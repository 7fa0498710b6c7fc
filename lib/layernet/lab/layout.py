"""Where a lab keeps its files and what its namespaces are called: a level's folder, the lab CA, the namespace of a
level (or of the cloud, the routers, the jump box) and the route check before anything is sent."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from layernet.lab import LabError, netns, pki, state_dir


def level_dir(site, level: str) -> Path:
    return state_dir(site) / level


def ca_cert_path(site) -> Path:
    """The lab CA certificate that probes and clients trust (exists after `lab up`)."""
    return state_dir(site) / "ca" / pki.CA_CERT


def namespace(site, level: str) -> str:
    """`<prefix>-<level>`; also accepts "cloud" and "rtr"."""
    if level in ("cloud", "rtr", "jumpbox") or level in {lv.name for lv in site.levels}:
        return netns.ns_name(site, level)
    raise LabError(f"no level named {level!r} (levels: {', '.join(l.name for l in site.levels)}, or cloud, rtr)")


def check_route(site, addr, ns: Optional[str] = None) -> dict:
    """Call before sending anything to `addr` from the jump box (ns None: this machine's side of the lab link, or
    the jump box namespace when this process runs in it) or from a lab namespace: raises netns.RouteError unless
    the packet would stay inside this lab."""
    ns = ns or netns.current(site.lab.prefix)
    return netns.check_route(addr, jump_if=netns.topology(site).jump_if, ns=ns, prefix=site.lab.prefix)
