"""The built-in HTTPS apps: which names each serves, and running them (uvicorn, TLS, loopback ports).

`build_apps(settings)` returns one AppSpec per app; `AppServer(specs, ...).start()` serves each on
127.0.0.1:<free port> with a certificate from the lab CA for exactly its names, in one asyncio loop on a
background thread, and returns the routes the front uses to splice connections to them.
"""
from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import uvicorn

from layernet.lab import pki
from layernet.lab.cloud import aio, arc, entra, graph
from layernet.lab.cloud.arm import app as arm_app, hooks
from layernet.lab.cloud.arm.service import Arm, ArmSettings
from layernet.lab.cloud.arm.store import Store
from layernet.lab.cloud.peers import PEERS, PeerMiddleware, PeerTable
from layernet.lab.cloud.reqlog import LogMiddleware, RequestLog
from layernet.lab.cloud.routes import Route


@dataclass
class CloudSettings:
    state: Path                                    # <lab state>/cloud
    region: str = "westeurope"
    cloud: str = "public"
    tenant_id: Optional[str] = None
    subscription_id: str = "00000000-0000-0000-0000-000000000001"
    egress_ip: str = ""
    retry_after: str = "1"
    offline_after: float = 60.0
    register_seconds: float = 0.0


@dataclass
class AppSpec:
    name: str
    names: list
    app: Any
    port: int = 443


@dataclass
class Cloud:
    """What the apps share in one cloud process (tests reach into it too)."""
    specs: list
    arm: Arm
    store: Store
    directory: entra.Directory
    signer: entra.Signer
    registry: arc.Registry = field(default_factory=arc.Registry)


def host_names(region: str, cloud: str = "public") -> dict[str, list[str]]:
    """App name -> the host names it answers (the public cloud's names of lib/layernet/data/endpoints.yaml)."""
    if cloud != "public":
        raise ValueError(f"the lab cloud serves the public cloud's names only, not {cloud!r}: set azure.cloud: public")
    r = region.lower()
    return {
        "entra": ["login.microsoftonline.com", f"{r}.login.microsoft.com", "login.windows.net", "sts.windows.net"],
        "arm": ["management.azure.com"],
        "graph": [graph.HOST],
        "dataplane": [f"{r}.dp.kubernetesconfiguration.azure.com"],
        "his": ["gbl.his.arc.azure.com", "*.his.arc.azure.com"],
        "notification": ["guestnotificationservice.azure.com", "*.guestnotificationservice.azure.com"],
        "relay": ["*.servicebus.windows.net"],
        "mcr": ["mcr.microsoft.com"],
        "mcr-data": ["*.data.mcr.microsoft.com"],
    }


def build_cloud(settings: CloudSettings) -> Cloud:
    state = Path(settings.state)
    state.mkdir(parents=True, exist_ok=True)
    directory = entra.Directory.load_or_create(state / "entra.json", settings.tenant_id)
    signer = entra.Signer(state / "token-signing.key")
    store = Store(state / "arm-store.json")
    arm = Arm(store, ArmSettings(tenant_id=directory.tenant_id, subscriptions={settings.subscription_id: "layernet lab"},
                                 location=settings.region, retry_after=settings.retry_after,
                                 register_seconds=settings.register_seconds, egress_ip=settings.egress_ip,
                                 offline_after=settings.offline_after), events=state / "arm-events.jsonl")
    if hooks.hook_for(arc.CONNECTED_CLUSTERS) is hooks.DEFAULT:
        hooks.register(arc.CONNECTED_CLUSTERS, arc.ConnectedClusterHook())
    aio.register_hooks()
    names = host_names(settings.region, settings.cloud)
    registry = arc.Registry()
    data_host = f"{settings.region.lower()}.data.mcr.microsoft.com"
    specs = [
        AppSpec("entra", names["entra"], entra.build(directory, signer)),
        AppSpec("arm", names["arm"], arm_app.build(arm, signer, directory.tenant_id)),
        AppSpec("graph", names["graph"], graph.build(directory, signer, store)),
        AppSpec("dataplane", names["dataplane"], aio.with_extension_status(arc.dataplane_app(store, arm.settings), store)),
        AppSpec("his", names["his"], arc.identity_app(store)),
        AppSpec("notification", names["notification"], arc.generic_app("notification")),
        AppSpec("relay", names["relay"], arc.relay_app()),
        AppSpec("mcr", names["mcr"], arc.mcr_app(registry, data_host)),
        AppSpec("mcr-data", names["mcr-data"], arc.mcr_data_app(registry)),
    ]
    return Cloud(specs, arm, store, directory, signer, registry)


class AppServer:
    def __init__(self, specs: list, ca_dir: Path, cert_dir: Path, log_dir: Optional[Path] = None,
                 peers: PeerTable = PEERS, host: str = "127.0.0.1"):
        self.specs, self.ca_dir, self.cert_dir, self.log_dir = specs, Path(ca_dir), Path(cert_dir), log_dir
        self.peers, self.host = peers, host
        self.ports: dict[str, int] = {}
        self.logs: dict[str, RequestLog] = {}
        self._servers: list[uvicorn.Server] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None

    def start(self, timeout: float = 15.0) -> list[Route]:
        ready = threading.Event()
        socks = []
        configs = []
        for spec in self.specs:
            cert, key = pki.issue_server_cert(self.ca_dir, self.cert_dir, spec.names, stem=spec.name)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)     # accepted sockets inherit it
            s.bind((self.host, 0))
            self.ports[spec.name] = s.getsockname()[1]
            log = RequestLog(Path(self.log_dir) / f"{spec.name}.jsonl" if self.log_dir else None)
            self.logs[spec.name] = log
            app = PeerMiddleware(LogMiddleware(spec.app, spec.name, log), self.peers)
            configs.append(uvicorn.Config(app, ssl_certfile=str(cert), ssl_keyfile=str(key), log_level="warning",
                                          access_log=False, lifespan="off", ws="websockets-sansio", timeout_keep_alive=30,
                                          timeout_graceful_shutdown=1))
            socks.append(s)

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._servers = [uvicorn.Server(c) for c in configs]

            async def main():
                tasks = [asyncio.create_task(srv.serve(sockets=[s])) for srv, s in zip(self._servers, socks)]
                while not all(srv.started for srv in self._servers):
                    if any(t.done() for t in tasks):
                        break
                    await asyncio.sleep(0.01)
                ready.set()
                await asyncio.gather(*tasks, return_exceptions=True)

            loop.run_until_complete(main())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="cloud-apps")
        self._thread.start()
        if not ready.wait(timeout) or not all(srv.started for srv in self._servers):
            raise RuntimeError("the cloud's HTTPS apps did not start")
        return [Route(tuple(n.lower() for n in spec.names), spec.port, (self.host, self.ports[spec.name]), source=spec.name)
                for spec in self.specs]

    def stop(self) -> None:
        for srv in self._servers:      # no graceful wait: idle keep-alive clients never send close_notify
            srv.should_exit = srv.force_exit = True
        if self._thread:
            self._thread.join(10)
        for log in self.logs.values():
            log.close()
