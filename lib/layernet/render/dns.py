"""DNS override per level: every allowed name answers with the parent level's node IP (where its proxy listens).

Two renderings of the same behaviour:

- CoreDNS (K3s): the ``coredns-custom`` ConfigMap with one ``*.server`` key, plus the ``coredns-external``
  LoadBalancer Service that publishes DNS on the node.
- unbound (the lab, or any plain Linux host): ``unbound.conf`` plus a response-policy zone
  ``unbound-redirect.rpz`` kept next to it.

Behaviour (both):

- an exact allowed name answers A = parent node IP, and nothing below it is redirected;
- ``*.x`` answers every name below x with the owner equal to the question; x itself is not redirected
  unless it is allowed on its own;
- any other type (AAAA, HTTPS, ...) for a redirected name gets an empty NOERROR answer (NODATA);
- every other name goes to the level's ``dns_upstream``, or is answered at once when it has none, so a
  client never waits for a timeout: REFUSED (CoreDNS: always; unbound: names outside the allow-list
  zones), or, with unbound, NXDOMAIN below an exact name and NODATA for a wildcard apex (see below).

Why unbound and not dnsmasq: dnsmasq's ``address=/zone/IP`` answers AAAA under a wildcard zone with
NXDOMAIN, which some clients take as "the name does not exist".

How unbound does it: unbound's ``local-zone ... redirect`` answers the zone apex AND every name below it,
and unbound's ``local-data`` has no wildcards, so neither an exact name (its sub-names would be redirected
too) nor ``*.x`` without x can be written with local zones. Instead every redirect is a QNAME trigger in a
response-policy zone (unbound's RPZ, module ``respip``): exact triggers match only themselves, ``*.x``
only names below x, answers carry the question name, and other types get NODATA. With an upstream,
every name the RPZ does not match is forwarded. Without one, ``local-zone "." refuse`` refuses
everything else; unbound consults local zones before the RPZ, so each allow-list zone is opened with
``local-zone "z." transparent`` and the RPZ also answers the rest of those zones (see `rpz_records`),
since after the RPZ only recursion, towards unreachable root servers, would be left.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from layernet.allowlist import host_matches, is_wildcard
from layernet.render.envoy import default_state_dir
from layernet.render.util import dump_yaml_all

TTL = 60
RPZ_NAME = "layernet.rpz."
RPZ_FILE = "unbound-redirect.rpz"
UNBOUND_CONF = "unbound.conf"
COREDNS_NAMESPACE = "kube-system"
COREDNS_CUSTOM = "coredns-custom"
COREDNS_SERVER_KEY = "layernet.server"
COREDNS_SELECTOR = {"k8s-app": "kube-dns"}
# Port of the extra CoreDNS server block that serves every name for clients outside the cluster (the node's
# resolver, hosts of the level network); the coredns-external Service publishes it as port 53.
COREDNS_EXTERNAL_PORT = 1053


@dataclass(frozen=True)
class DnsPlan:
    """What a level's DNS override answers."""

    level: str
    answer_ip: str
    exact: tuple[str, ...]          # allowed names written without a wildcard
    wildcards: tuple[str, ...]      # zones x of allowed "*.x" entries
    upstream: tuple[str, ...]       # where other names go; empty -> refused

    def allowed(self, name: str) -> bool:
        return name in self.exact or self.covered(name)

    def covered(self, name: str) -> bool:
        return any(host_matches("*." + x, name) for x in self.wildcards)

    def zones(self) -> list[str]:
        """The smallest set of zones holding every redirected name (exact names and wildcard zones), sorted."""
        every = set(self.exact) | set(self.wildcards)
        return sorted(z for z in every if not any(z.endswith("." + y) for y in every))


def dns_plan(site, allowlist, level) -> DnsPlan:
    if not level.dns_override:
        raise ValueError(f"level {level.name} has no DNS override (dns_override: false)")
    parent = site.parent(level)
    if parent is None:
        raise ValueError(f"level {level.name} has no parent level whose proxy the allowed names could point at")
    hosts = sorted({e.host.lower() for e in allowlist.entries})
    exact = tuple(h for h in hosts if not is_wildcard(h))
    wild = tuple(sorted({h[2:] for h in hosts if is_wildcard(h)}))
    return DnsPlan(level.name, str(parent.node_ip), exact, wild, tuple(str(u) for u in level.dns_upstream))


def _fqdn(name: str) -> str:
    return name.rstrip(".") + "."


# ----------------------------------------------------------------------------------------------- unbound
def rpz_records(plan: DnsPlan) -> list[str]:
    """Response-policy records (owners relative to the RPZ origin), in a fixed order.

    DNS wildcard rules apply inside the RPZ: ``*.o`` only serves names whose closest existing ancestor is
    o, and a name that exists only as an ancestor of other records (an empty non-terminal) matches
    nothing. So every node of the tree (exact names, wildcard apexes and the names between them and
    their zone) gets an explicit record, and so does the wildcard below it:

    - node allowed (by `host_matches`): ``o A ip``; else, without an upstream, NODATA (``o CNAME *.``),
      since names exist below it; with an upstream nothing, so it is forwarded;
    - below a node: ``*.o A ip`` when names below o are allowed (o is a wildcard zone or lies under one);
      else, without an upstream, NXDOMAIN (``*.o CNAME .``); with an upstream nothing.
    """
    every = set(plan.exact) | set(plan.wildcards)
    zones = plan.zones()
    nodes: set[str] = set()
    for name in every:
        labels = name.split(".")
        for i in range(len(labels)):
            anc = ".".join(labels[i:])
            nodes.add(anc)
            if anc in zones:
                break
    out: list[str] = []
    for o in sorted(nodes, key=lambda n: (list(reversed(n.split("."))), n)):
        if plan.allowed(o):
            out.append(f"{o} A {plan.answer_ip}")
        elif not plan.upstream:
            out.append(f"{o} CNAME *.")
        if o in plan.wildcards or plan.covered(o):
            out.append(f"*.{o} A {plan.answer_ip}")
        elif not plan.upstream:
            out.append(f"*.{o} CNAME .")
    return out


def unbound_server_basics(interfaces: list[str], port: int, workdir: Path) -> list[str]:
    """The `server:` lines every unbound of layernet shares: IPv4 only, foreground, no chroot or user change,
    logs and query log in `workdir` (unbound runs under the lab's supervisor or a service manager)."""
    return [f"  interface: {i}" for i in interfaces] + [
        f"  port: {port}",
        "  interface-automatic: no",
        "  do-ip4: yes",
        "  do-ip6: no",
        "  do-udp: yes",
        "  do-tcp: yes",
        "  do-daemonize: no",
        '  username: ""',
        '  chroot: ""',
        '  pidfile: ""',
        f'  directory: "{workdir}"',
        f'  logfile: "{Path(workdir) / "unbound.log"}"',
        "  use-syslog: no",
        "  verbosity: 1",
        "  log-queries: yes",
    ]


def render_unbound(site, allowlist, level, *, state_dir: Optional[Path] = None,
                   interfaces: Optional[list[str]] = None, port: int = 53,
                   upstream_port: int = 53) -> tuple[str, str]:
    """(unbound.conf, unbound-redirect.rpz) for `level`. Both files belong in <state_dir>/<level>/.

    `interfaces` defaults to the level's node IP and 127.0.0.1, `port` and `upstream_port` to 53; tests pass
    a loopback address and unprivileged ports.
    """
    plan = dns_plan(site, allowlist, level)
    base = (Path(state_dir) if state_dir is not None else default_state_dir(site)) / level.name
    ifaces = list(interfaces) if interfaces is not None else [str(level.node_ip), "127.0.0.1"]
    allowed_nets = [level.network]
    child = site.child(level)
    if child is not None:
        allowed_nets.append(child.network)
    allowed_nets += [level.pod_cidr, ipaddress.IPv4Network("127.0.0.0/8")]
    seen: list = []
    for n in allowed_nets:
        if n not in seen:
            seen.append(n)

    L = [
        f"# unbound for {site.name}/{level.name}, rendered by layernet (do not edit).",
        f"# Allowed names answer {plan.answer_ip} (the {site.parent(level).name} proxy); other names are "
        + (f"forwarded to {', '.join(plan.upstream)}." if plan.upstream else "refused."),
        "# Run in the foreground: unbound -d -c unbound.conf",
        "server:",
    ]
    L += unbound_server_basics(ifaces, port, base)
    L += [
        "  log-replies: yes",
        "  log-local-actions: yes",
        "  log-servfail: yes",
        "  num-threads: 1",
        "  so-reuseport: no",
        "  hide-identity: yes",
        "  hide-version: yes",
        '  module-config: "respip iterator"',
        "  do-not-query-localhost: no",
        "  access-control: 0.0.0.0/0 refuse",
    ]
    L += [f"  access-control: {n} allow" for n in seen]
    if not plan.upstream:
        L.append('  local-zone: "." refuse')
        for z in plan.zones():
            L.append(f'  local-zone: "{_fqdn(z)}" transparent')
    L += [
        "rpz:",
        f'  name: "{RPZ_NAME}"',
        f'  zonefile: "{base / RPZ_FILE}"',
        "  rpz-log: yes",
        '  rpz-log-name: "layernet"',
    ]
    if plan.upstream:
        L += ["forward-zone:", '  name: "."']
        suffix = "" if upstream_port == 53 else f"@{upstream_port}"
        L += [f"  forward-addr: {u}{suffix}" for u in plan.upstream]
    conf = "\n".join(L) + "\n"

    Z = [
        f"; response-policy zone for {site.name}/{level.name}, rendered by layernet (do not edit).",
        f"$ORIGIN {RPZ_NAME}",
        f"$TTL {TTL}",
        "@ SOA localhost. hostmaster.localhost. 1 3600 600 86400 60",
        "@ NS localhost.",
    ]
    Z += rpz_records(plan)
    zone = "\n".join(Z) + "\n"
    return conf, zone


# ----------------------------------------------------------------------------------------------- CoreDNS
def _regex(host: str) -> str:
    if is_wildcard(host):
        return "(?i)^.+\\." + re.escape(host[2:]).replace("\\-", "-") + "\\.$"
    return "(?i)^" + re.escape(host).replace("\\-", "-") + "\\.$"


def name_regexes(plan: DnsPlan) -> list[str]:
    """The regular expressions (RE2 syntax) CoreDNS matches question names with, one per allowed host."""
    return [_regex(h) for h in sorted(set(plan.exact) | {"*." + x for x in plan.wildcards})]


def _corefile_body(plan: DnsPlan) -> list[str]:
    regexes = name_regexes(plan)
    B = ["    log", "    errors", "    template IN A {"]
    B += [f'        match "{r}"' for r in regexes]
    B += [f'        answer "{{{{ .Name }}}} {TTL} IN A {plan.answer_ip}"', "        fallthrough", "    }"]
    B += ["    template IN ANY {"]
    B += [f'        match "{r}"' for r in regexes]
    B += ["        rcode NOERROR", "        fallthrough", "    }"]
    if plan.upstream:
        B += [f"    forward . {' '.join(plan.upstream)}"]
    else:
        B += ["    template ANY ANY {", "        rcode REFUSED", "    }"]
    return B


def render_corefile(plan: DnsPlan) -> str:
    body = _corefile_body(plan)
    zones = " ".join(f"{z}:53" for z in plan.zones())
    L = [
        "# Rendered by layernet. In-cluster queries (kube-dns, port 53) for the allow-list zones:",
        zones + " {",
        *body,
        "}",
        "# Every name, for clients outside the cluster (published as port 53 by the coredns-external Service):",
        f".:{COREDNS_EXTERNAL_PORT} {{",
        *body,
        "}",
    ]
    return "\n".join(L) + "\n"


def coredns_objects(site, allowlist, level) -> tuple[dict, dict]:
    plan = dns_plan(site, allowlist, level)
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": COREDNS_CUSTOM, "namespace": COREDNS_NAMESPACE,
                     "labels": {"app.kubernetes.io/managed-by": "layernet", "layernet/level": level.name}},
        "data": {COREDNS_SERVER_KEY: render_corefile(plan)},
    }
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "coredns-external", "namespace": COREDNS_NAMESPACE,
                     "labels": {"app.kubernetes.io/managed-by": "layernet", "layernet/level": level.name}},
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",
            "selector": dict(COREDNS_SELECTOR),
            "ports": [
                {"name": "dns-udp", "protocol": "UDP", "port": 53, "targetPort": COREDNS_EXTERNAL_PORT},
                {"name": "dns-tcp", "protocol": "TCP", "port": 53, "targetPort": COREDNS_EXTERNAL_PORT},
            ],
        },
    }
    return cm, svc


def render_coredns(site, allowlist, level) -> tuple[str, str]:
    """(coredns-custom.yaml, coredns-external.yaml) for `level`."""
    cm, svc = coredns_objects(site, allowlist, level)
    return dump_yaml_all([cm]), dump_yaml_all([svc])
