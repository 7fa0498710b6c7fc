"""The target interface: where rendered artifacts are put in place and probed.

Two implementations share it: `lab` (network namespaces on this machine) and `kube` (one Kubernetes
context per level). Notebooks call these operations and never branch on the target kind.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Optional

from layernet.azure.clients import arm_for
from layernet.errors import StageFailed
from layernet.plan import Change


class Target(ABC):
    kind: str = "abstract"

    @abstractmethod
    def plan(self, artifacts: list) -> list[Change]:
        """Desired (artifacts) vs live, per object. Changes nothing."""

    @abstractmethod
    def apply(self, artifacts: list, plan: Optional[list[Change]] = None) -> list[Change]:
        """Put artifacts in place and restart exactly what the plan lists; idempotent: a second apply returns only
        'unchanged' changes. With `plan` (the reviewed one), refuses with DriftError when the live state no
        longer gives that plan."""

    @abstractmethod
    def logs(self, level: str, since: Optional[datetime] = None) -> list[str]:
        """Raw access-log lines of the level's proxy (JSON, one per connection)."""

    @abstractmethod
    def probe(self, level: str, checks: list[dict]) -> list[dict]:
        """Run `layernet.probe` checks from inside `level`; returns result rows."""

    # ---- what the stages ask the target instead of branching on its kind
    def probe_inputs(self) -> dict:
        """Extra arguments of matrix.build_matrix for this target: the CA to trust, the cloud's address, and
        whether the far end echoes (only the lab's cloud does)."""
        return {"ca_file": None, "echo": False}

    def context_label(self, level) -> str:
        """How the level's cluster is reached, for the preflight's level table."""
        return level.kube_context or ""

    def requirements(self) -> list[dict]:
        """Tools this target needs on this machine: rows {tool, needed_for, found, version, fix}."""
        return []

    def session_state(self) -> Optional[str]:
        """Whether something this machine built for the site is running ("up", "down", "partly up"); None for a
        real site, whose clusters are not ours to bring up or down."""
        return None

    def take_down(self, progress=None) -> None:
        """Take down what this machine built for the site (a runner calls it for a lab it brought up)."""

    def cluster_api(self):
        """level -> Kubernetes API client of the level's cluster, or None where there is no cluster (the lab)."""
        return None

    azure_elsewhere: bool = False        # True: the Azure calls run in another place (the lab's jump box)
    # True: the proxies also carry the traffic of workloads the run did not start (a real cluster), so comparing
    # the audit with the probe matrix counts only connections to the names the probes used
    shared_proxies: bool = False

    # ---- Azure (stages 02-04): where the az/SDK calls run and how they reach ARM
    azure_poll_interval: float = 10.0    # seconds between Azure status polls (ARM's own pace on a real site)

    def azure_call(self, func: str, progress=None, **kwargs):
        """Run `func` ("layernet.module:function", called as function(site, **kwargs), JSON in and out) where this
        target's Azure calls are made. A real site: here, on the jump box."""
        import importlib

        module, _, name = func.partition(":")
        return getattr(importlib.import_module(module), name)(self.site, **kwargs)

    def arm(self):
        """The Arm connection (credential, ARM URL, CA) for calls made inside `azure_call`."""
        return arm_for(self.site)

    def arc_agent_note(self, level: str) -> str:
        """What the target knows about a level's Arc agents beyond ARM (the lab: where its agents are blocked)."""
        return ""

    def install_arc_agents(self, level: str, cluster_id: str, progress=None, agent_key: Optional[bytes] = None) -> str:
        """After a cluster's connected-cluster resource exists: put its Arc agents in place, with `agent_key` (the
        PEM private key whose public half the PUT carried: the agents' identity). On a real site
        `az connectedk8s connect` does it (the az executor); returns what was done."""
        return ""

    def role_rows(self, role: str) -> list[dict]:
        """Evidence that the target's own stand-ins of `role` (a role of the allow-list catalog) reached every host
        the catalog marks required for it, one row per level (the lab); a real site: none, its components are real."""
        return []

    def azure_stand_ins(self, stage: str) -> list[dict]:
        """The parts of Azure a stage's run talked to that were not Azure ({"part", "hosts", "on this run"});
        a real site: none."""
        return []

    def arc_features(self, level: str) -> Optional[list]:
        """The features the level's Arc agents have enabled, where the target can read them (None: it cannot)."""
        return None

    def enable_arc_features(self, level: str, features: list) -> str:
        """Enable agent features (the sdk executor's enable-features): only a target whose agents it runs can."""
        raise StageFailed(f"{level}: agent features ({', '.join(features)}) are agent settings, not ARM resources: "
                          "the sdk executor cannot enable them here; use arc.executor: az (az connectedk8s "
                          "enable-features)")

    # ---- stage 03 (AIO): what the cluster does on its own on a real site; the lab's stand-ins do it there
    def install_aio_extension(self, level: str, cluster_id: str, extension: dict) -> str:
        """An extension's PUT was accepted ({"id", "name", "type"}): install it in the level's cluster. On a real
        site the Arc extension manager does it; returns what was done."""
        return ""

    def aio_extension_running(self, level: str):
        """Whether the level's cluster runs its AIO extensions (None: the target cannot tell from here)."""
        return None

    def aio_listeners(self, level: str, listeners: list, authentications: list = ()) -> str:
        """The broker's listener and authentication resources as ARM holds them now (a real site: the AIO operator
        syncs them)."""
        return ""

    def aio_note(self, level: str) -> str:
        """What the target knows about a level's AIO extensions beyond ARM (the lab: blocked image pulls)."""
        return ""

    def aio_broker_rows(self, listeners: dict) -> list:
        """Evidence that each level's broker answers on its listeners ({level: [(name, port, tls, authenticated)]}):
        a round trip where anonymous clients may connect, a refused anonymous client where the listener authenticates
        its clients; a real site checks pods and services with the kubernetes client (not here: no rows)."""
        return []

    # ---- stage 04 (telemetry): what the cluster's AIO does with the records on a real site
    def install_telemetry(self, records: dict) -> str:
        """The telemetry records ({level: [records]}) were PUT: run them. On a real site AIO's connector and
        dataflows do it on their own; returns what was done."""
        return ""

    # X.509 between levels: what the records name lives in each level's cluster (stages/telemetry_objects.py)
    makes_x509_objects: bool = False     # True: the target creates them itself (the lab plays the plant's operator)

    def kube_api(self, level: str):
        """The level's Kubernetes API (targets.kube.Api), or None where the target has none."""
        return None

    def no_kube_api(self, level: str) -> str:
        """Why the level has no Kubernetes API here (when kube_api gives None)."""
        return f"{level}: the target has no Kubernetes API"

    def x509_objects(self, refs: list) -> list[dict]:
        """The Kubernetes objects for [(kind, namespace, name)] the X.509 records name, where the target makes them
        (a plant's operator does: none)."""
        return []

    def x509_files(self):
        """(CA, client certificate, key) files for MQTT clients where no cluster holds them (None: read the Secret)."""
        return None

    def telemetry_rehearsals(self) -> str:
        """Put the site's rehearsed faults in place before the proof window (the lab: `lab.close`); returns what
        changed. A real site has none."""
        return ""

    def telemetry_running(self):
        """Whether the level services that run the telemetry records run (None: the target cannot tell)."""
        return None

    def eventhubs_client(self) -> tuple:
        """(connection string or None, CA file or None) for a Kafka client of the site's Event Hubs, read where
        the Azure calls run: the site's connection-string variable when set, else None (an Entra token)."""
        import os

        return os.environ.get(self.site.telemetry.eventhubs.connection_string_env) or None, None

    def eventhubs_refusals(self, since: float) -> list:
        """Why Event Hubs refused clients since `since` (time.time()): tokens that failed validation, principals
        denied an operation. A real site reads no broker log here (Event Hubs' diagnostic logs hold it): none."""
        return []
