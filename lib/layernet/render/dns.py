"""DNS override per level, served by CoreDNS: every allowed name answers with the parent level's node IP (where
its proxy listens).

What a K3s site receives is the ``coredns-custom`` ConfigMap with one ``*.server`` key (K3s imports it at the top
level of its Corefile) plus the ``coredns-external`` LoadBalancer Service that publishes DNS on the node. The lab
runs the same CoreDNS release with a Corefile shaped like K3s's default one (`k3s_corefile`) that imports the
ConfigMap's data keys, written byte for byte as files (`lab_coredns_files`).

Behaviour:

- an exact allowed name answers A = parent node IP, and nothing below it is redirected;
- ``*.x`` answers every name below x; x itself is not redirected unless it is allowed on its own;
- the answer's owner is the question name as asked (letter case included);
- any other type (AAAA, HTTPS, ...) for a redirected name gets an empty NOERROR answer (NODATA);
- every other name goes to the level's ``dns_upstream``; without one it is answered at once, so a client
  never waits for a timeout and no name outside the allow list leaves the level: REFUSED outside the
  allow-list zones, and inside them NODATA for names with redirected names below them (a wildcard's apex),
  NXDOMAIN for the rest (names below an exact name).

Server blocks of the ``*.server`` key: one block on port 53 for the allow-list zones (in the cluster, more
specific than K3s's ``.:53`` block, so these names never reach its ``forward``), and the same on port 1053 for
clients outside the cluster (the coredns-external Service publishes it as the node's port 53): the allow-list
zones, or every name (``.:1053``) when the level has an upstream.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from layernet.allowlist import host_matches, is_wildcard
from layernet.render.envoy import default_state_dir
from layernet.render.util import dump_yaml_all

TTL = 60
COREDNS_NAMESPACE = "kube-system"
COREDNS_CUSTOM = "coredns-custom"
COREDNS_SERVER_KEY = "layernet.server"
COREDNS_SELECTOR = {"k8s-app": "kube-dns"}
# Port of the extra CoreDNS server block that serves every name for clients outside the cluster (the node's
# resolver, hosts of the level network); the coredns-external Service publishes it as port 53.
COREDNS_EXTERNAL_PORT = 1053
# The lab's files per DNS level, in <state>/<level>/: K3s keeps them in /etc/coredns/ (Corefile, NodeHosts)
# and /etc/coredns/custom/ (the coredns-custom keys).
LAB_COREFILE = "Corefile"
NODE_HOSTS = "NodeHosts"
CUSTOM_DIR = "custom"
# health and ready as in K3s (ports 8080 and 8181), on loopback: only the lab's readiness check asks them.
HEALTH_ADDR = "127.0.0.1:8080"
READY_ADDR = "127.0.0.1:8181"


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


# ----------------------------------------------------------------------------------------------- CoreDNS
def _regex(host: str) -> str:
    if is_wildcard(host):
        return "(?i)^.+\\." + re.escape(host[2:]).replace("\\-", "-") + "\\.$"
    return "(?i)^" + re.escape(host).replace("\\-", "-") + "\\.$"


def name_regexes(plan: DnsPlan) -> list[str]:
    """The regular expressions (RE2 syntax) CoreDNS matches question names with, one per allowed host."""
    return [_regex(h) for h in sorted(set(plan.exact) | {"*." + x for x in plan.wildcards})]


def empty_nodes(plan: DnsPlan) -> list[str]:
    """Names inside the allow-list zones that are not redirected but have redirected names below them (a
    wildcard's apex, the names between a zone and a deeper allowed name): they exist, so they get NODATA."""
    zones = plan.zones()
    out: set[str] = set()
    for name in set(plan.exact) | set(plan.wildcards):
        labels = name.split(".")
        for i in range(len(labels)):
            anc = ".".join(labels[i:])
            if (anc in plan.wildcards or anc != name) and not plan.allowed(anc):
                out.add(anc)
            if anc in zones:
                break
    return sorted(out)


def _corefile_body(plan: DnsPlan) -> list[str]:
    regexes = name_regexes(plan)
    B = ["    log", "    errors", "    template IN A {"]
    B += [f'        match "{r}"' for r in regexes]
    # .Question.Name is the name as asked; .Name is lower-cased by CoreDNS, which would change the owner.
    B += [f'        answer "{{{{ .Question.Name }}}} {TTL} IN A {plan.answer_ip}"', "        fallthrough", "    }"]
    B += ["    template IN ANY {"]
    B += [f'        match "{r}"' for r in regexes]
    if not plan.upstream:
        B += [f'        match "{_regex(n)}"' for n in empty_nodes(plan)]
    B += ["        rcode NOERROR", "        fallthrough", "    }"]
    if plan.upstream:
        B += [f"    forward . {' '.join(plan.upstream)}"]
    else:
        # Not REFUSED here: a template that answers REFUSED makes CoreDNS send a second reply, which breaks
        # the next query on a TCP connection. Names outside every zone are refused by CoreDNS itself.
        B += ["    template ANY ANY {", "        rcode NXDOMAIN", "    }"]
    return B


def render_corefile(plan: DnsPlan) -> str:
    """The ``*.server`` key. Port 53 (in-cluster): the allow-list zones only, so every other name reaches K3s's
    own ``.:53`` block. Port 1053 (outside the cluster): with an upstream every name, else the allow-list zones
    only, and CoreDNS refuses a name no server block holds, at once and with a single reply."""
    body = _corefile_body(plan)
    zones = plan.zones()
    external = [f".:{COREDNS_EXTERNAL_PORT}"] if plan.upstream else [f"{z}:{COREDNS_EXTERNAL_PORT}" for z in zones]
    L = [
        "# Rendered by layernet. In-cluster queries (kube-dns, port 53) for the allow-list zones:",
        " ".join(f"{z}:53" for z in zones) + " {",
        *body,
        "}",
        "# Clients outside the cluster (published as port 53 by the coredns-external Service): "
        + ("every name." if plan.upstream else "the allow-list zones; other names are refused."),
        " ".join(external) + " {",
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


# ----------------------------------------------------------------------------------------------- lab
def node_hosts(site, level) -> str:
    """K3s's NodeHosts file: the node's address and name (the lab names a level's node after its cluster)."""
    name = site.azure.clusters.get(level.name) if getattr(site, "azure", None) else None
    return f"{level.node_ip} {name or level.name}\n"


def k3s_corefile(site, level, conf_dir: Path, *, health: str = HEALTH_ADDR, ready: str = READY_ADDR) -> str:
    """A Corefile shaped like K3s's default one (minus `kubernetes` and `prometheus`), with its files in
    `conf_dir` instead of /etc/coredns: NodeHosts, and the coredns-custom keys in custom/.

    K3s forwards other names to the node's /etc/resolv.conf. Here they go to the level's ``dns_upstream``;
    without one, to this server's own ``.:1053`` block from the coredns-external key, which refuses them
    (the same answer a K3s node gets when its resolver is the coredns-external Service). `log` is added so
    the lab keeps a query log.
    """
    d = Path(conf_dir)
    plan_up = [str(u) for u in level.dns_upstream]
    forward = " ".join(plan_up) if plan_up else f"127.0.0.1:{COREDNS_EXTERNAL_PORT}"
    L = [
        f"# CoreDNS for {site.name}/{level.name}, shaped like K3s's default Corefile; rendered by layernet (do not edit).",
        "# Other names: " + (f"forwarded to {', '.join(plan_up)}." if plan_up else
                             f"refused (forwarded to the coredns-external block on :{COREDNS_EXTERNAL_PORT}, which refuses them)."),
        ".:53 {",
        "    errors",
        "    log",
        f"    health {health}",
        f"    ready {ready}",
        f"    hosts {d / NODE_HOSTS} {{",
        "        ttl 60",
        "        reload 15s",
        "        fallthrough",
        "    }",
        f"    forward . {forward}",
        "    cache 30",
        "    loop",
        "    reload",
        "    loadbalance",
        f"    import {d / CUSTOM_DIR}/*.override",
        "}",
        f"import {d / CUSTOM_DIR}/*.server",
    ]
    return "\n".join(L) + "\n"


def lab_coredns_files(site, allowlist, level, *, state_dir: Optional[Path] = None) -> list[tuple[str, str]]:
    """(file name relative to <state>/<level>/, content) of a lab DNS level: the Corefile, NodeHosts, and every
    data key of the rendered coredns-custom ConfigMap as custom/<key>, byte for byte what a site receives."""
    base = (Path(state_dir) if state_dir is not None else default_state_dir(site)) / level.name
    cm, _ = coredns_objects(site, allowlist, level)
    out = [(LAB_COREFILE, k3s_corefile(site, level, base)), (NODE_HOSTS, node_hosts(site, level))]
    out += [(f"{CUSTOM_DIR}/{key}", value) for key, value in sorted(cm["data"].items())]
    return out


def internet_corefile(listen_ip: str, answer_ip: str) -> str:
    """CoreDNS for the lab's "internet DNS" in the cloud namespace: every name answers A `answer_ip` with the
    question as owner, every other type NODATA."""
    L = [
        "# The lab's internet DNS: every name is the cloud stand-in; rendered by layernet (do not edit).",
        ".:53 {",
        f"    bind {listen_ip}",
        "    errors",
        "    log",
        f"    ready {READY_ADDR}",
        "    template IN A {",
        f'        answer "{{{{ .Question.Name }}}} {TTL} IN A {answer_ip}"',
        "    }",
        "    template IN ANY {",
        "        rcode NOERROR",
        "    }",
        "}",
    ]
    return "\n".join(L) + "\n"
