"""The target interface: where rendered artifacts are put in place, read back and probed.

Two implementations share it: `lab` (network namespaces on this machine) and `kube` (one Kubernetes
context per level). A target is its lifecycle (what it needs, whether it is up, taking it down) and
plan/apply/logs/probe; what a cluster does on its own is the cluster side (cluster.py) and where the
Azure calls run is the Azure side (azure_side.py). Notebooks never branch on the target kind.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Optional

from layernet.plan import Plan, Step


class Target(ABC):
    kind: str = "abstract"
    renders: str = "kube"       # which artifacts stage 01 renders for it (render.render_site's target)

    @abstractmethod
    def plan(self, artifacts: list) -> Plan:
        """Desired (artifacts) vs live: stage 01's plan, one step per object (`plan.change`). Changes nothing."""

    @abstractmethod
    def apply(self, artifacts: list, plan: Optional[Plan] = None) -> list[Step]:
        """Put artifacts in place and restart exactly what the plan lists; the steps taken. Idempotent: a second
        apply returns only 'unchanged' skips. With `plan` (the reviewed one), refuses with DriftError when the
        live state no longer gives that plan (`plan.refuse_drift`)."""

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

    # True: the proxies also carry the traffic of workloads the run did not start (a real cluster), so comparing
    # the audit with the probe matrix counts only connections to the names the probes used
    shared_proxies: bool = False
