"""Network namespaces, links, addresses and routes of the lab, and the route check.

Layout (prefix `ln`, the lab site):

    root namespace (jump box) --ln-jump/to-admin--> ln-rtr (plays the plant's routers and firewall)
    ln-rtr --to-<level>/lab0--> ln-<level>   one per level network; the router holds the first free host address
    ln-rtr --to-cloud/lab0----> ln-cloud     the internet and Azure stand-in (.10 TLS servers, .53 DNS)

The root namespace gets an address on the admin network and routes to the level networks only: never to the
cloud, never a default route. Level namespaces get their node IP and a default route via the router; the router
has no route out of the lab, so nothing reaches beyond it. `check_route` proves an address is reached through
the lab link before the root namespace sends anything.
"""
from __future__ import annotations

import ipaddress
import json
import os
import threading
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from layernet import flows as flows_model
from layernet.lab import LabError
from layernet.render.firewall import _addr, _match
from layernet.site.model import LAB_CLOUD_DNS_HOST, LAB_CLOUD_TLS_HOST
from layernet.site.telemetry import eventhubs_namespace

NETNS_ETC = Path("/etc/netns")
RUN_NETNS = Path("/run/netns")
LEVEL_IF = "lab0"          # the interface name inside every level and cloud namespace
ROUTER_TABLE = "layernet-rtr"


# ----------------------------------------------------------------------------------------------- shell helpers
def run(argv: list[str], *, input: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabError(f"command failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr.strip()}")
    return proc


def ns_exec(ns: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
    return run(["ip", "netns", "exec", ns] + argv, **kw)


# ----------------------------------------------------------------------------------------------- topology
@dataclass(frozen=True)
class Link:
    """One veth pair between the router and a namespace (or the root namespace when `ns` is None)."""

    ns: Optional[str]
    ifname: str                       # inside `ns` (or in the root namespace)
    router_if: str
    network: ipaddress.IPv4Network
    router_ip: ipaddress.IPv4Address
    addrs: tuple[ipaddress.IPv4Address, ...]


@dataclass(frozen=True)
class Topology:
    prefix: str
    router_ns: str
    cloud_ns: str
    level_ns: dict = field(default_factory=dict)     # level name -> namespace
    links: tuple = ()                                 # Link, the admin link last
    cloud_tls_ip: ipaddress.IPv4Address = None
    cloud_dns_ip: ipaddress.IPv4Address = None
    jump_if: str = ""
    jumpbox_ns: str = ""                              # the jump box's internet side (Azure CLI/SDK calls)

    @property
    def namespaces(self) -> list[str]:
        return [self.router_ns, self.cloud_ns] + list(self.level_ns.values()) + [self.jumpbox_ns]

    def link_of(self, ns: Optional[str]) -> Link:
        return next(l for l in self.links if l.ns == ns)


def gateway(net: ipaddress.IPv4Network, avoid: set) -> ipaddress.IPv4Address:
    """The router's address on a network: the first host address not used by a node."""
    for host in net.hosts():
        if host not in avoid:
            return host
    raise LabError(f"network {net} has no free address for the lab router")


def ns_name(site, what: str) -> str:
    return f"{site.lab.prefix}-{what}"


def topology(site) -> Topology:
    p = site.lab.prefix
    cloud_net = site.lab.cloud_network
    egress = site.egress
    dns_ip = next((u for u in egress.dns_upstream if u in cloud_net), None) or cloud_net.network_address + LAB_CLOUD_DNS_HOST
    tls_ip = cloud_net.network_address + LAB_CLOUD_TLS_HOST
    links, level_ns, used_names = [], {}, set()
    for i, lv in enumerate(site.levels):
        ns = ns_name(site, lv.name)
        level_ns[lv.name] = ns
        rif = f"to-{lv.name}"
        if len(rif) > 15 or rif in used_names:
            rif = f"to-lvl{i}"
        used_names.add(rif)
        links.append(Link(ns, LEVEL_IF, rif, lv.network, gateway(lv.network, {lv.node_ip}), (lv.node_ip,)))
    links.append(Link(ns_name(site, "cloud"), LEVEL_IF, "to-cloud", cloud_net,
                      gateway(cloud_net, {tls_ip, dns_ip}), (tls_ip, dns_ip)))
    jnet = jumpbox_network(site)
    links.append(Link(ns_name(site, "jumpbox"), LEVEL_IF, "to-jumpbox", jnet, jnet.network_address + 1,
                      (jnet.network_address + 2,)))
    adm = site.admin
    links.append(Link(None, f"{p}-jump", "to-admin", adm.network, gateway(adm.network, {adm.jump_box_ip}),
                      (adm.jump_box_ip,)))
    return Topology(prefix=p, router_ns=ns_name(site, "rtr"), cloud_ns=ns_name(site, "cloud"), level_ns=level_ns,
                    links=tuple(links), cloud_tls_ip=tls_ip, cloud_dns_ip=dns_ip, jump_if=f"{p}-jump",
                    jumpbox_ns=ns_name(site, "jumpbox"))


JUMPBOX_CANDIDATES = [ipaddress.IPv4Network(f"100.64.{i}.0/29") for i in range(64)]


def jumpbox_network(site) -> ipaddress.IPv4Network:
    """The small network between the router and the jump box's internet side: the first of 100.64.x.0/29 that no
    level, the admin network or the cloud network overlaps."""
    taken = [lv.network for lv in site.levels] + [site.admin.network, site.lab.cloud_network]
    for net in JUMPBOX_CANDIDATES:
        if not any(net.overlaps(t) for t in taken):
            return net
    raise LabError("no free 100.64.x.0/29 network for the lab's jump box; the site's networks cover them all")


# ----------------------------------------------------------------------------------------------- inspection
def list_namespaces() -> list[str]:
    out = run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    try:
        return [n["name"] for n in json.loads(out or "[]")]
    except json.JSONDecodeError:
        return [line.split()[0] for line in out.splitlines() if line.strip()]


def our_namespaces(prefix: str) -> list[str]:
    return [n for n in list_namespaces() if n.startswith(prefix + "-")]


def link_exists(ifname: str, ns: Optional[str] = None) -> bool:
    argv = ["ip"] + (["-n", ns] if ns else []) + ["link", "show", "dev", ifname]
    return run(argv, check=False).returncode == 0


def root_routes() -> list[dict]:
    return json.loads(run(["ip", "-j", "-4", "route", "show", "table", "main"]).stdout or "[]")


def preflight(site, topo: Topology) -> None:
    """Refuse to build the lab when its networks collide with the host's own routes or addresses."""
    ours = [lv.network for lv in site.levels] + [site.admin.network, site.lab.cloud_network]
    for r in root_routes():
        if r.get("dst") in (None, "default") or r.get("dev") == topo.jump_if:
            continue
        try:
            dst = ipaddress.IPv4Network(r["dst"], strict=False)
        except ValueError:
            continue
        for net in ours:
            if dst.overlaps(net) and str(r.get("dev", "")).endswith("-jump"):
                other = str(r["dev"])[: -len("-jump")]
                raise LabError(f"another lab (prefix {other}) uses {dst}, which this lab needs too; take it down "
                               f"first (layernet lab down with -p lab.prefix={other})")
            if dst.overlaps(net):
                raise LabError(f"the host already routes {dst} via {r.get('dev')}, which overlaps the lab network {net}; "
                               f"change the site's addresses or remove that route (the lab never changes host routes)")


# ----------------------------------------------------------------------------------------------- build
def _sysctl_script(forward: bool) -> str:
    keys = {
        "net.ipv6.conf.all.disable_ipv6": 1,
        "net.ipv6.conf.default.disable_ipv6": 1,
        "net.ipv4.ip_forward": 1 if forward else 0,
        "net.ipv4.conf.all.forwarding": 1 if forward else 0,
    }
    return " ".join(f"{k}={v}" for k, v in keys.items())


def _link_for(topo: Topology, net: ipaddress.IPv4Network) -> Optional[Link]:
    return next((l for l in topo.links if net.subnet_of(l.network)), None)


def closed_rules(site, topo: Topology) -> list[str]:
    """Rehearsals (site field lab.close, put in place by stage 04's verify on the lab, so the infrastructure
    stage's probes do not catch them first), "mqtt <child> -> <parent>": the MQTT hop between the two levels'
    nodes, closed at the router (an open connection included). "eventhubs <level>" is a name, not a port: see
    `closed_names`."""
    out = []
    port = site.telemetry.mqtt.effective_port
    for item in getattr(site.lab, "close", []) or []:
        words = item.replace("->", " ").split()
        if words and words[0] == "mqtt":
            src, dst = site.level(words[1]).node_ip, site.level(words[2]).node_ip
            out.append(f'    ip saddr {src} ip daddr {dst} tcp dport {port} counter drop comment "closed: {item}"')
    return out


def closed_names(site) -> dict[str, list[str]]:
    """Rehearsals, "eventhubs <level>": the Event Hubs name taken off the level's egress: {level: [names]} that the
    level's processes cannot resolve to the cloud (the network itself stays open, so the probes of the
    infrastructure stage, which dial the cloud's address with the name as SNI, still pass)."""
    out: dict[str, list[str]] = {}
    ns = eventhubs_namespace(site.telemetry, site.azure.eventhubs_namespace)
    for item in getattr(site.lab, "close", []) or []:
        words = item.split()
        if len(words) == 2 and words[0] == "eventhubs" and ns:
            out.setdefault(words[1], []).append(f"{ns}.servicebus.windows.net")
    return out


def write_closed_names(site, topo: Topology) -> list[str]:
    """/etc/netns/<ns>/hosts of every level as `closed_names` wants it: each closed name answers 0.0.0.0 (nothing
    listens), every other name goes to the level's DNS as before; no file where nothing is closed. Processes
    started in the namespace afterwards see it. Returns the levels whose file changed."""
    closed = closed_names(site)
    changed = []
    for lv in site.levels:
        path = NETNS_ETC / topo.level_ns[lv.name] / "hosts"
        want = ("127.0.0.1 localhost\n" + "".join(f"0.0.0.0 {n}\n" for n in closed[lv.name])
                if lv.name in closed else None)
        have = path.read_text() if path.exists() else None
        if want == have:
            continue
        if want is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(want)
        changed.append(lv.name)
    return changed


def router_ruleset(site, topo: Topology, rehearse: bool = False) -> str:
    """The router's forward chain: exactly the crossing flows of the flows model (layernet.flows) between the
    segments it joins, the internet being the cloud network; the rest is counted, logged (when the host logs
    namespaces) and dropped. Replies pass by connection tracking."""
    cloud = topo.link_of(topo.cloud_ns)
    lines = [f"table inet {ROUTER_TABLE} {{", "  chain forward {",
             "    type filter hook forward priority filter; policy drop;"]
    if rehearse:                               # before connection tracking: an open connection stops too
        lines += closed_rules(site, topo)
    lines += ["    ct state established,related accept",
              "    ct state invalid drop"]
    seen = set()
    for f in flows_model.crossing(site):
        dst = f.dst if f.dst is not None else cloud.network
        src_link, dst_link = _link_for(topo, f.src), _link_for(topo, dst)
        if src_link is None or dst_link is None or src_link is dst_link:
            continue
        rule = " ".join(p for p in (f'iifname "{src_link.router_if}" oifname "{dst_link.router_if}"',
                                     f"ip saddr {_addr(f.src)} ip daddr {_addr(dst)}", _match(f)) if p)
        if rule not in seen:
            seen.add(rule)
            lines.append(f'    {rule} accept comment "{f.kind}"')
    # the jump box's internet (outside the plant, so not a flow of the model): HTTPS and DNS to the cloud only
    jb = topo.link_of(topo.jumpbox_ns)
    lines.append(f'    iifname "{jb.router_if}" oifname "{cloud.router_if}" ip saddr {jb.network} '
                 f'ip daddr {cloud.network} tcp dport 443 accept comment "jump box to Azure"')
    lines.append(f'    iifname "{jb.router_if}" oifname "{cloud.router_if}" ip saddr {jb.network} '
                 f'ip daddr {cloud.network} tcp dport 9093 accept comment "jump box to Event Hubs (Kafka)"')
    lines.append(f'    iifname "{jb.router_if}" oifname "{cloud.router_if}" ip saddr {jb.network} '
                 f'ip daddr {topo.cloud_dns_ip} meta l4proto {{ udp, tcp }} th dport 53 accept comment "jump box DNS"')
    lines += ['    log prefix "layernet-rtr drop " counter drop', "  }", "}"]
    return "\n".join(lines) + "\n"


def nft_replace(ns: str, table: str, content: str) -> None:
    """Load an nftables table in one atomic transaction, replacing the previous version of that table."""
    ns_exec(ns, ["nft", "-f", "-"], input=f"table {table} {{}}\ndelete table {table}\n{content}")


def router_drops(ns: str) -> Optional[int]:
    """Packets the router's forward chain dropped (the log rule's counter); None when not loaded."""
    proc = ns_exec(ns, ["nft", "list", "chain", "inet", ROUTER_TABLE, "forward"], check=False)
    m = re.search(r'log prefix "layernet-rtr drop " counter packets (\d+)', proc.stdout)
    return int(m.group(1)) if proc.returncode == 0 and m else None


def nft_loaded(ns: str, table: str) -> bool:
    return ns_exec(ns, ["nft", "list", "table"] + table.split(), check=False).returncode == 0


def build(site, topo: Topology, resolvers: dict[str, list[str]]) -> None:
    """Create every namespace, link, address and route, the sysctls and the router firewall."""
    preflight(site, topo)
    for ns in topo.namespaces:
        run(["ip", "netns", "add", ns])
        ns_exec(ns, ["sysctl", "-q", "-w"] + _sysctl_script(ns == topo.router_ns).split())
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
    r = topo.router_ns
    for l in topo.links:
        if l.ns is None:
            run(["ip", "link", "add", l.ifname, "type", "veth", "peer", "name", l.router_if, "netns", r])
        else:
            run(["ip", "link", "add", l.ifname, "netns", l.ns, "type", "veth", "peer", "name", l.router_if, "netns", r])
        run(["ip", "-n", r, "addr", "add", f"{l.router_ip}/{l.network.prefixlen}", "dev", l.router_if])
        run(["ip", "-n", r, "link", "set", l.router_if, "up"])
        pre = ["ip"] + (["-n", l.ns] if l.ns else [])
        for a in l.addrs:
            run(pre + ["addr", "add", f"{a}/{l.network.prefixlen}", "dev", l.ifname])
        run(pre + ["link", "set", l.ifname, "up"])
        if l.ns is None:   # the jump box: routes to the level networks only
            for lv in site.levels:
                run(["ip", "route", "add", str(lv.network), "via", str(l.router_ip), "dev", l.ifname])
        elif l.ns == topo.cloud_ns:   # the cloud answers the lab's levels and the jump box, nothing else
            for net in [lv.network for lv in site.levels] + [topo.link_of(topo.jumpbox_ns).network]:
                run(["ip", "-n", l.ns, "route", "add", str(net), "via", str(l.router_ip), "dev", l.ifname])
        else:
            run(["ip", "-n", l.ns, "route", "add", "default", "via", str(l.router_ip), "dev", l.ifname])
    nft_replace(r, f"inet {ROUTER_TABLE}", router_ruleset(site, topo))
    write_resolvers(resolvers)


def write_resolvers(resolvers: dict[str, list[str]]) -> None:
    """/etc/netns/<ns>/resolv.conf: `ip netns exec` mounts it over /etc/resolv.conf for the command it runs."""
    for ns, servers in resolvers.items():
        d = NETNS_ETC / ns
        d.mkdir(parents=True, exist_ok=True)
        text = "".join(f"nameserver {s}\n" for s in servers) or "# no resolver in this namespace\n"
        (d / "resolv.conf").write_text(text + "options timeout:1 attempts:1\n")


def teardown(prefix: str) -> list[str]:
    """Delete every namespace with our prefix, the jump-box link (its routes go with it) and /etc/netns files.
    Processes must be gone first (`ip netns del` does not kill them). Returns what was removed."""
    removed = []
    jump = f"{prefix}-jump"
    if link_exists(jump):
        run(["ip", "link", "del", jump], check=False)
        removed.append(f"link {jump}")
    for ns in our_namespaces(prefix):
        run(["ip", "netns", "del", ns], check=False)
        removed.append(f"netns {ns}")
    if NETNS_ETC.is_dir():
        for d in NETNS_ETC.glob(f"{prefix}-*"):
            for f in d.iterdir():
                f.unlink()
            d.rmdir()
    return removed


# ----------------------------------------------------------------------------------------------- route check
class RouteError(LabError):
    pass


CLONE_NEWNET = 0x40000000
ADMIN_SIDE_FD = "LAYERNET_ADMIN_SIDE_FD"    # an open handle on the jump box's admin-side network (lab/jumpbox.py)


def in_root(func, *args, **kwargs):
    """`func(*args, **kwargs)` on the jump box's admin side. The lab splits the jump box in two: its admin side
    (this machine's own network, the lab link to the level networks) and its internet side (the jump box namespace,
    where the Azure calls run). A call on the internet side that needs a level's API (the same machine on a plant)
    runs in a thread that enters the admin side's network first (a thread's network namespace is its own; the
    jump box process holds a handle on it, ADMIN_SIDE_FD); sockets it opens stay there. Anywhere else (the admin
    side itself) it is a plain call."""
    fd = os.environ.get(ADMIN_SIDE_FD, "")
    if not fd.isdigit():
        return func(*args, **kwargs)
    out: dict = {}

    def body() -> None:
        import ctypes

        try:
            if ctypes.CDLL(None, use_errno=True).setns(int(fd), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the jump box's admin side failed")
            out["value"] = func(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            out["error"] = exc

    t = threading.Thread(target=body, name="jump-box-admin-side")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def current(prefix: str) -> Optional[str]:
    """The lab namespace (of `prefix`) this thread runs in, e.g. the jump box's when `ip netns exec` started it;
    None in the machine's own."""
    try:
        me = os.stat("/proc/thread-self/ns/net")
    except OSError:
        return None
    for f in RUN_NETNS.glob(f"{prefix}-*") if RUN_NETNS.is_dir() else []:
        try:
            st = f.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino):
            return f.name
    return None


def check_route(addr, *, jump_if: str, ns: Optional[str] = None, prefix: Optional[str] = None) -> dict:
    """Confirm that `addr` is reached through the lab before anything is sent to it.

    From the root namespace (`ns` None): the kernel's route to `addr` must leave through the lab's jump-box
    link `jump_if` (loopback is also fine). From a lab namespace: the namespace must be one of ours (its
    name starts with `prefix-`); it has no route out of the lab by construction. Returns the route; raises
    RouteError otherwise."""
    addr = ipaddress.ip_address(str(addr))
    if ns is not None:
        if prefix is None or not ns.startswith(prefix + "-") or ns not in list_namespaces():
            raise RouteError(f"{ns} is not a namespace of this lab (prefix {prefix}); refusing to send to {addr}")
        proc = run(["ip", "-n", ns, "-j", "route", "get", str(addr)], check=False)
        if proc.returncode != 0:
            raise RouteError(f"no route to {addr} inside {ns}")
        return json.loads(proc.stdout)[0]
    if addr.is_loopback:
        return {"dst": str(addr), "dev": "lo"}
    proc = run(["ip", "-j", "route", "get", str(addr)], check=False)
    if proc.returncode != 0:
        raise RouteError(f"no route to {addr} from the jump box (is the lab up?)")
    route = json.loads(proc.stdout)[0]
    if route.get("dev") != jump_if:
        raise RouteError(f"{addr} would leave through {route.get('dev')}, not the lab link {jump_if}: refusing to send "
                         f"(the jump box reaches the level networks only; bring the lab up or check the address)")
    return route
