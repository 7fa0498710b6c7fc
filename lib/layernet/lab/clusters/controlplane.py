"""One level's control plane, K3s-shaped: what it needs on disk and the processes that run it.

`prepare(site, level)` writes `<state>/<level>/cluster/`: certificates from the lab CA (the API server's serving
certificate for the node address, the `kubernetes` Service address and names; client certificates for the admin,
the controller-manager, the scheduler, the node and the API server's calls to the node), the service-account
signing key, the components' kubeconfigs and the datastore folder. `services(site, level)` lists the processes
(kine; kube-apiserver, kube-controller-manager and kube-scheduler in one process, as K3s's server runs them; the
node agent) as lab services, which lab/commands.py starts, waits for, restarts and stops like Envoy and CoreDNS. Everything runs inside the level's
network namespace; the API listens on the node address at 6443 and nowhere else (kine and the components' own
ports stay on the namespace's loopback).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import yaml

from layernet.lab import layout
from layernet.lab import netns
from layernet.lab import pki, procs
from layernet.lab.clusters import API_PORT, KUBELET_PORT, SERVICE_CIDR, SERVICE_IP, binary
from layernet.lab.service import Service

KINE_ADDR = "127.0.0.1:2379"
KINE_METRICS = "127.0.0.1:2381"
ADMIN_USER = "layernet-admin"
CLIENTS = {  # certificate stem -> (CN, O): Kubernetes reads CN as the user and O as the group
    "admin": (ADMIN_USER, "system:masters"),
    "controller-manager": ("system:kube-controller-manager", ""),
    "scheduler": ("system:kube-scheduler", ""),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
}
SERVING = ("controller-manager", "scheduler")     # components with a secure health port on the namespace's loopback


def cluster_dir(site, level: str) -> Path:
    return layout.level_dir(site, level) / "cluster"


def node_name(site, level: str) -> str:
    """The level's node: named after the level (K3s names it after the host)."""
    return level


def api_url(site, level: str) -> str:
    return f"https://{site.level(level).node_ip}:{API_PORT}"


def kubeconfig_text(server: str, ca: Path, cert: Path, key: Path, user: str, context: str = "default") -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": user}}],
    }, sort_keys=False)


def prepare(site, level: str) -> Path:
    """Write the level's certificates, keys, kubeconfigs and datastore folder; returns the cluster folder."""
    d = cluster_dir(site, level)
    pki_dir, ca_dir = d / "pki", layout.state_dir(site) / "ca"
    node_ip = str(site.level(level).node_ip)
    pki.issue_cert(ca_dir, pki_dir, "apiserver", "kube-apiserver", ips=[node_ip, SERVICE_IP, "127.0.0.1"],
                   names=["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                          "kubernetes.default.svc.cluster.local", "localhost"])
    node = node_name(site, level)
    pki.issue_cert(ca_dir, pki_dir, "node", f"system:node:{node}", org="system:nodes", ips=[node_ip],
                   names=[node], server=True, client=True)
    for stem, (cn, org) in CLIENTS.items():
        pki.issue_cert(ca_dir, pki_dir, stem, cn, org=org, server=False, client=True)
    for component in SERVING:       # their health ports' certificates (else each makes an RSA key as it starts)
        pki.issue_cert(ca_dir, pki_dir, f"{component}-serving", f"kube-{component}", ips=["127.0.0.1"],
                       names=["localhost"])
    pki.signing_key(pki_dir, "service-account")
    ca = layout.ca_cert_path(site)
    for stem in ("admin", "controller-manager", "scheduler", "node"):
        (d / f"{stem}.kubeconfig").write_text(kubeconfig_text(api_url(site, level), ca, pki_dir / f"{stem}.crt",
                                                              pki_dir / f"{stem}.key", stem))
    (d / "kine").mkdir(parents=True, exist_ok=True)
    return d


# ----------------------------------------------------------------------------------------------- services
class ClusterService(Service):
    """A process of the level's control plane; its config is the file prepare() writes for it."""
    config_name = ""

    @property
    def folder(self) -> Path:
        return cluster_dir(self.site, self.where)

    @property
    def config(self) -> Path:
        return self.folder / self.config_name

    @property
    def pki(self) -> Path:
        return self.folder / "pki"


class Kine(ClusterService):
    """K3s's datastore shim: the etcd API on the namespace's loopback, SQLite in the cluster folder."""
    short, config_name = "kine", "kine"

    def argv(self) -> list[str]:
        db = self.folder / "kine" / "state.db"
        return [str(binary("kine")), f"--listen-address={KINE_ADDR}", f"--metrics-bind-address={KINE_METRICS}",
                f"--endpoint=sqlite://{db}?_journal=WAL&cache=shared&_busy_timeout=30000"]

    def ready(self, p: procs.Proc) -> bool:
        return bool(procs.listening(p.pid, [int(KINE_ADDR.rsplit(":", 1)[1])]))


class Server(ClusterService):
    """kube-apiserver, kube-controller-manager and kube-scheduler in one process, as K3s's server runs them
    (`kube server`, tools/kube/main.go): the API server first, the other two once it answers /readyz. Each
    component keeps its own flags and its own identity (the controller manager and the scheduler sign in with their
    client certificates); one Go runtime and one copy of the code in memory instead of three."""
    short, config_name = "kube-server", "pki/apiserver.crt"
    health_ports = (10257, 10259)        # the controller manager's and the scheduler's, on the namespace's loopback
    _asked = 0.0

    def argv(self) -> list[str]:
        return [str(binary("kube")), "server"] + self.apiserver_flags() + ["---"] + self.controller_manager_flags() \
            + ["---"] + self.component_flags("scheduler")

    def apiserver_flags(self) -> list[str]:
        k, ip = self.pki, str(self.site.level(self.where).node_ip)
        ca = layout.ca_cert_path(self.site)
        return [f"--etcd-servers=http://{KINE_ADDR}", f"--bind-address={ip}", f"--advertise-address={ip}",
                f"--secure-port={API_PORT}", f"--tls-cert-file={k / 'apiserver.crt'}",
                f"--tls-private-key-file={k / 'apiserver.key'}", f"--client-ca-file={ca}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={k / 'service-account.pub'}",
                f"--service-account-signing-key-file={k / 'service-account.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}", "--authorization-mode=Node,RBAC",
                "--allow-privileged=true", "--profiling=false", "--enable-priority-and-fairness=false",
                f"--kubelet-client-certificate={k / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={k / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={ca}", f"--kubelet-port={KUBELET_PORT}",
                "--kubelet-preferred-address-types=InternalIP", f"--cert-dir={self.folder / 'certs'}"]

    def component_flags(self, component: str) -> list[str]:
        kc = str(self.folder / f"{component}.kubeconfig")
        return [f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                "--leader-elect=false", "--bind-address=127.0.0.1", "--profiling=false",
                f"--tls-cert-file={self.pki / f'{component}-serving.crt'}",
                f"--tls-private-key-file={self.pki / f'{component}-serving.key'}"]

    def controller_manager_flags(self) -> list[str]:
        return self.component_flags("controller-manager") + [
            f"--service-account-private-key-file={self.pki / 'service-account.key'}",
            f"--root-ca-file={layout.ca_cert_path(self.site)}", "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--controllers=" + ",".join(CONTROLLERS)]

    def ready(self, p: procs.Proc) -> bool:
        """The controller manager and the scheduler serve their health ports (they start once the API server is
        ready), and the API server answers /readyz."""
        if procs.listening(p.pid, list(self.health_ports)) != set(self.health_ports):
            return False
        if time.monotonic() - self._asked < 0.25:     # a curl per quarter second is enough
            return False
        self._asked = time.monotonic()
        return readyz(self.site, self.where)


# the controllers what runs on a lab cluster needs (every one starts informers and, with service-account
# credentials, its own client: the others cost start-up time on the shared cores and do nothing here). The node
# lifecycle controller lifts the not-ready taint the API server puts on a node that registers.
CONTROLLERS = ("node-lifecycle-controller", "deployment-controller", "replicaset-controller", "job-controller", "daemonset-controller",
               "statefulset-controller", "serviceaccount-controller", "serviceaccount-token-controller",
               "namespace-controller", "garbage-collector-controller", "root-ca-certificate-publisher-controller",
               "endpointslice-controller", "pod-garbage-collector-controller", "ttl-after-finished-controller",
               "clusterrole-aggregation-controller")


class NodeAgent(ClusterService):
    """Registers the level's node and runs the pods bound to it (layernet.lab.clusters.node)."""
    short, config_name = "node", "node.kubeconfig"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "layernet.lab.clusters.node", "--folder", str(self.folder),
                "--node", node_name(self.site, self.where), "--ip", str(self.site.level(self.where).node_ip),
                "--namespace", layout.namespace(self.site, self.where), "--ca", str(layout.ca_cert_path(self.site))]

    def ready(self, p: procs.Proc) -> bool:
        return (self.folder / "node.ready").exists()


CLUSTER_SERVICES = (Kine, Server, NodeAgent)   # start order


def services(site, level: str) -> list[ClusterService]:
    return [cls(site, level) for cls in CLUSTER_SERVICES]


def for_process(site, name: str) -> Optional[ClusterService]:
    where, _, short = name.partition("/")
    if where not in {lv.name for lv in site.levels}:
        return None
    return next((cls(site, where) for cls in CLUSTER_SERVICES if cls.short == short), None)


def readyz(site, level: str) -> bool:
    """The level's API server answers /readyz with "ok" (asked inside the level's namespace, as the admin)."""
    d = cluster_dir(site, level) / "pki"
    proc = netns.ns_exec(layout.namespace(site, level),
                         ["curl", "-s", "-m", "1", "--cacert", str(layout.ca_cert_path(site)),
                          "--cert", str(d / "admin.crt"), "--key", str(d / "admin.key"),
                          f"{api_url(site, level)}/readyz"], check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "ok"
