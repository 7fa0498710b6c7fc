"""A whole cloud (front + HTTPS apps) in this process on loopback (a module name of its own: every test folder
has a conftest).

Names resolve through a patched `socket.getaddrinfo`: every name a route serves (and any name under
`.example.test`) goes to 127.0.0.1 and port 443/9093 to the front's free port, so SDK clients use the real
URLs (https://management.azure.com/...) with the real SNI, and trust the lab CA through connection_verify.
"""
from __future__ import annotations

import socket
from pathlib import Path

from layernet.allowlist import host_matches
from layernet.lab import pki
from layernet.lab.cloud.apps import AppServer, CloudSettings, build_cloud
from layernet.lab.cloud.front import Front
from layernet.lab.cloud.routes import RouteTable

SUB = "00000000-0000-0000-0000-0000000000c1"
TENANT = "00000000-0000-0000-0000-0000000000a1"
REGION = "westeurope"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class LoopbackCloud:
    def __init__(self, root: Path, egress_ip: str = "127.0.0.1", offline_after: float = 60.0):
        self.root = root
        self.state = root / "cloud"
        self.ca = root / "ca" / pki.CA_CERT
        self.ports = {free_port(): 443, free_port(): 9093}
        self.cloud = build_cloud(CloudSettings(state=self.state, region=REGION, tenant_id=TENANT, subscription_id=SUB,
                                               egress_ip=egress_ip, retry_after="0.05", offline_after=offline_after))
        self.apps = AppServer(self.cloud.specs, root / "ca", self.state / "certs", log_dir=self.state / "requests")
        builtin = self.apps.start()
        names = [n for r in builtin for n in r.names] + ["management.azure.com"]
        cert, key = pki.issue_server_cert(root / "ca", self.state, names + ["*.example.test"])
        self.routes = RouteTable(builtin, self.state / "routes.json")
        self.front = Front("127.0.0.1", self.ports, str(cert), str(key), routes=self.routes, log=self.state / "front.jsonl")
        self.front.listen()
        self.front.start()
        self.names = names

    def port(self, cloud_port: int) -> int:
        return next(p for p, c in self.ports.items() if c == cloud_port)

    def serves(self, host: str) -> bool:
        return any(host_matches(n, host) for n in self.names + ["*.example.test"])

    @property
    def client(self) -> tuple[str, str]:
        cid, secret = next(iter(self.cloud.directory.clients.items()))
        return cid, secret

    def close(self) -> None:
        self.front.close()
        self.apps.stop()
