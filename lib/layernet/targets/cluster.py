"""The cluster side of a site: what a level's cluster does on its own once Azure has accepted a request.

On a plant the cluster does it by itself (the Arc agents install with `az connectedk8s connect`, the Arc extension
manager installs AIO, AIO's operator syncs listeners and runs the connector and dataflows): `Cluster` has nothing to
do there and only reads, through each level's Kubernetes API. On the lab the stand-ins do it (lab_cluster.py).
Stages call the same methods on both, so verify is one piece of code.
"""
from __future__ import annotations

from typing import Callable, Optional

from layernet.errors import StageFailed


class Cluster:
    """A plant's clusters: real agents and extensions, read through `api(level)` (None where there is none)."""

    # True: this side creates the Secrets/ConfigMaps the X.509 records name (the lab plays the plant's operator)
    makes_x509_objects: bool = False

    def __init__(self, site, api: Optional[Callable] = None):
        self.site = site
        self._api = api

    # ---- reading a level's cluster
    def api(self, level: str):
        """The level's Kubernetes API (targets.kube.Api), or None where the site has none."""
        return self._api(level) if self._api is not None else None

    def no_api(self, level: str) -> str:
        """Why the level has no Kubernetes API here (when `api` gives None)."""
        return f"{level}: the target has no Kubernetes API"

    @property
    def reader(self) -> Optional[Callable]:
        """level -> Api for the stages' cluster checks (pods Ready, the broker's Services), or None."""
        return self._api

    # ---- stage 02: the Arc agents
    def install_arc_agents(self, level: str, cluster_id: str, progress=None, agent_key: Optional[bytes] = None) -> str:
        """After a connected-cluster resource exists: its agents are put in place (on a plant by `az connectedk8s
        connect` itself); returns what was done here."""
        return ""

    def arc_agent_note(self, level: str) -> str:
        """What this side knows of a level's Arc agents beyond ARM (the lab: where its agents are blocked)."""
        return ""

    def arc_features(self, level: str) -> Optional[list]:
        """The features the level's agents have enabled, where this side can read them (None: it cannot)."""
        return None

    def enable_arc_features(self, level: str, features: list) -> str:
        raise StageFailed(f"{level}: agent features ({', '.join(features)}) are agent settings, not ARM resources: "
                          "the sdk executor cannot enable them here; use arc.executor: az (az connectedk8s "
                          "enable-features)")

    def role_rows(self, role: str) -> list[dict]:
        """Evidence that this side's stand-ins of `role` reached every host the catalog marks required for it (the
        lab); a plant: none, its components are the real ones."""
        return []

    # ---- stage 03: the AIO extensions and broker
    def install_aio_extension(self, level: str, cluster_id: str, extension: dict) -> str:
        return ""

    def aio_extension_running(self, level: str):
        """Whether the level's cluster runs its AIO extensions (None: this side cannot tell)."""
        return None

    def aio_listeners(self, level: str, listeners: list, authentications: list = ()) -> str:
        return ""

    def aio_note(self, level: str) -> str:
        return ""

    def aio_broker_rows(self, listeners: dict) -> list:
        """MQTT evidence per listener ({level: [(name, port, tls, authenticated)]}); a plant checks pods and
        Services through `reader` instead: none here."""
        return []

    # ---- stage 04: the telemetry records
    def prepare_telemetry(self) -> None:
        """Begin, while the records are written, what `install_telemetry` will need and takes long to start
        (nothing on a plant: Azure runs the event hub)."""

    def install_telemetry(self, records: dict) -> str:
        return ""

    def x509_objects(self, refs: list) -> list[dict]:
        """The objects for [(kind, namespace, name)] the X.509 records name, where this side makes them."""
        return []

    def telemetry_rehearsals(self) -> str:
        """Put the site's rehearsed faults in place before the proof window (the lab: `lab.close`)."""
        return ""

    def telemetry_running(self):
        """Whether the level services that run the telemetry records run (None: this side cannot tell)."""
        return None
