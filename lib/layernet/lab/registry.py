"""The lab's infrastructure services: one class each, declared per level (and for the cloud) from the site.

A service knows its process name (`<level>/<service>`), its namespace, the config it runs from, its argv, its
log, and how to tell it is ready. `declared(site)` lists what the site calls for — a cluster per level (whose pods
are the level's Envoy and CoreDNS), and the cloud's internet DNS and TLS front — and `for_process(site, name)`
finds the service of a recorded process. lab/commands.py starts, restarts, waits for and reports services only
through this registry, so adding a service is a class here (namespaces and process plumbing stay untouched).
Services that later stages start in a level (Arc agents, the AIO extension, telemetry stand-ins) are recorded
by lab/services.py.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from layernet.lab import azure as lab_azure
from layernet.lab import binaries, netns, procs, state_dir
from layernet.lab.clusters import controlplane
from layernet.lab.service import Service
from layernet.render.dns import READY_ADDR, internet_corefile


class InternetDNS(Service):
    """The "internet" DNS in the cloud namespace (CoreDNS): every name answers the cloud front's address."""
    short, config_name = "dns", "Corefile"
    log_name = "coredns.out"

    @property
    def log(self) -> Path:
        return self.folder / self.log_name

    def argv(self) -> list[str]:
        return [binaries.coredns_binary(), "-conf", str(self.config)]

    def ready(self, p: procs.Proc) -> bool:
        return coredns_ready(p, [53])

    def render(self, topo) -> None:
        self.config.write_text(internet_corefile(str(topo.cloud_dns_ip), str(topo.cloud_tls_ip)))


class CloudFront(Service):
    """The cloud's TLS front: echo, the HTTPS stand-ins under the real names, and routes (lab/cloud)."""
    short = "tls"

    def __init__(self, site, cert: Optional[Path] = None, key: Optional[Path] = None):
        super().__init__(site, "cloud")
        self.cert, self.key = cert, key

    def argv(self) -> list[str]:
        topo = netns.topology(self.site)
        return [sys.executable, "-m", "layernet.lab.cloud", "--addr", str(topo.cloud_tls_ip),
                "--ports", ",".join(map(str, CLOUD_PORTS)), "--cert", str(self.cert), "--key", str(self.key)] \
            + cloud_app_args(self.site, self.folder)

    def ready(self, p: procs.Proc) -> bool:
        return procs.listening(p.pid, CLOUD_PORTS) == set(CLOUD_PORTS)


CLOUD_PORTS = (443, 8084, 9093)     # the cloud front's TLS ports: HTTPS, Arc's relay, Kafka


def cloud_app_args(site, d: Path) -> list[str]:
    """The cloud's HTTPS apps (Entra, ARM, Arc, MCR) for the site's region, with their state in `d`; heartbeats
    count only from the egress level's node address. Outside the public cloud the cloud is the echo alone."""
    if site.azure.cloud != "public":
        return []
    return ["--state", str(d), "--ca-dir", str(state_dir(site) / "ca"), "--region", site.azure.location,
            "--cloud", site.azure.cloud, "--egress-ip", str(site.egress.node_ip),
            "--subscription-id", lab_azure.subscription_id(site), "--tenant-id", lab_azure.tenant_id(site),
            "--offline-after", str(lab_azure.OFFLINE_AFTER), "--retry-after", lab_azure.RETRY_AFTER]


def level_services(site) -> list[Service]:
    """Every level service the site declares: each level's cluster (control plane and node, lab/clusters), whose
    pods are the level's Envoy and CoreDNS."""
    return [svc for lv in site.levels for svc in controlplane.services(site, lv.name)]


def cloud_services(site, cert: Optional[Path] = None, key: Optional[Path] = None) -> list[Service]:
    return [InternetDNS(site, "cloud"), CloudFront(site, cert, key)]


def declared(site) -> list[Service]:
    return level_services(site) + cloud_services(site)


def for_process(site, name: str) -> Optional[Service]:
    """The service of a recorded process name ("level3/kube-server", "cloud/dns"), or None."""
    for svc in cloud_services(site):
        if svc.name == name:
            return svc
    return controlplane.for_process(site, name)


# ----------------------------------------------------------------------------------------------- readiness
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
