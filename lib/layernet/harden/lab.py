"""Lab-only helpers for the hardening checks: running `layernet.harden.wire` in a namespace, reading the
level logs, a rogue device on a level's network segment, and address plans for labs side by side."""
from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import Iterable, Optional

from layernet.lab import layout
from layernet import clock
from layernet.lab import LabError, netns, podfiles, procs
from layernet.site import load_site

ROGUE = "rogue"              # namespace <prefix>-rogue: removed by `lab down` with the rest of the lab
ROGUE_IF, ROGUE_PEER_IF = "rogue0", "rg0"


def run_wire(ns: Optional[str], request: dict, timeout: float = 120.0):
    """`python -m layernet.harden.wire` inside namespace `ns` (the jump box when None); returns its answer."""
    argv = ([] if ns is None else ["ip", "netns", "exec", ns]) + [sys.executable, "-m", "layernet.harden.wire"]
    proc = subprocess.run(argv, input=json.dumps(request), capture_output=True, text=True, timeout=timeout)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise LabError(f"wire client in {ns or 'the root namespace'} failed (exit {proc.returncode}): "
                       f"{proc.stderr.strip()[-2000:]}") from None


def check_addresses(site, ns: Optional[str], addrs: Iterable) -> None:
    """Raise netns.RouteError unless every address is reached inside this lab from `ns` (None: jump box)."""
    for a in set(map(str, addrs)):
        layout.check_route(site, a, ns=ns)


def now_ms() -> datetime:
    t = datetime.now(timezone.utc)
    return t.replace(microsecond=(t.microsecond // 1000) * 1000)


def _time(text) -> Optional[datetime]:
    try:
        return clock.parse(text)
    except ValueError:
        return None


def access_log(site, level: str, since: Optional[datetime] = None) -> list[dict]:
    path = podfiles.envoy_access_log(site, level)
    out = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        t = _time(entry.get("time"))
        if since is None or (t is not None and t >= since):
            out.append(entry)
    return out


def wait_for_log(site, level: str, since: datetime, sources: set, timeout: float = 5.0) -> dict:
    """{(source, listener_port): [entries]} once every (source, port) in `sources` has a line, or at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict = {}
        for e in access_log(site, level, since):
            found.setdefault((e.get("source"), int(e.get("listener_port") or 0)), []).append(e)
        if sources <= set(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


# ----------------------------------------------------------------------------------------------- rogue
def rogue_ns(site) -> str:
    return f"{site.lab.prefix}-{ROGUE}"


def add_rogue(site, level: str, address: str) -> str:
    """A rogue device plugged into `level`'s network segment: namespace <prefix>-rogue with `address`/32,
    linked by a veth pair to the level's namespace, routed to the level's node IP only. Returns its namespace.
    The lab's own cleanup removes it (its name has the lab prefix)."""
    ns, lvl_ns = rogue_ns(site), layout.namespace(site, level)
    node = str(site.level(level).node_ip)
    remove_rogue(site)
    run = netns.run
    run(["ip", "netns", "add", ns])
    try:
        netns.ns_exec(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "link", "add", ROGUE_IF, "netns", ns, "type", "veth", "peer", "name", ROGUE_PEER_IF, "netns", lvl_ns])
        run(["ip", "-n", ns, "addr", "add", f"{address}/32", "dev", ROGUE_IF])
        run(["ip", "-n", ns, "link", "set", ROGUE_IF, "up"])
        run(["ip", "-n", lvl_ns, "link", "set", ROGUE_PEER_IF, "up"])
        run(["ip", "-n", ns, "route", "add", f"{node}/32", "dev", ROGUE_IF])
        run(["ip", "-n", lvl_ns, "route", "add", f"{address}/32", "dev", ROGUE_PEER_IF])
    except BaseException:
        remove_rogue(site)
        raise
    return ns


def remove_rogue(site) -> None:
    ns = rogue_ns(site)
    if ns in netns.list_namespaces():
        procs.stop_namespaces([ns])
        netns.run(["ip", "netns", "del", ns], check=False)
    for lv in site.levels:
        lns = layout.namespace(site, lv.name)
        if netns.link_exists(ROGUE_PEER_IF, lns):
            netns.run(["ip", "-n", lns, "link", "del", ROGUE_PEER_IF], check=False)


# ----------------------------------------------------------------------------------------------- address plans
def shifted_plan(site, base: str) -> list[str]:
    """Site overrides (`-p` form) that move the admin and level networks into `base` (a /16, e.g.
    "10.71.0.0/16"), keeping each network's third octet and each node's host part, so a second lab with
    this plan can run next to one built from the unchanged site file (the jump box routes both)."""
    b = ipaddress.IPv4Network(base)
    if b.prefixlen > 16:
        raise ValueError(f"{base}: the shifted plan needs a /16 or larger")
    hi = int(b.network_address) & 0xFFFF0000

    def move_net(n: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network((hi | (int(n.network_address) & 0xFFFF), n.prefixlen))

    def move_ip(a: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(hi | (int(a) & 0xFFFF))

    out = [f"admin.network={move_net(site.admin.network)}", f"admin.jump_box_ip={move_ip(site.admin.jump_box_ip)}"]
    for lv in site.levels:
        out += [f"levels.{lv.name}.network={move_net(lv.network)}", f"levels.{lv.name}.node_ip={move_ip(lv.node_ip)}"]
    for a in site.telemetry.assets:          # an OPC UA server on a moved node moves with it
        scheme, _, rest = a.address.partition("://")
        host, sep, tail = rest.partition(":")
        try:
            moved = move_ip(ipaddress.IPv4Address(host))
        except ValueError:
            continue
        if any(ipaddress.IPv4Address(host) in lv.network for lv in site.levels):
            out.append(f"telemetry.assets.{a.name}.address={scheme}://{moved}{sep}{tail}")
    return out


def beside(site_file, prefix: str, base: str) -> list[str]:
    """Site overrides (`-p` form) for a second lab from `site_file` that runs beside the first: its own lab prefix
    and its addresses moved into `base` (`shifted_plan`)."""
    return [f"lab.prefix={prefix}"] + shifted_plan(load_site(site_file), base)
