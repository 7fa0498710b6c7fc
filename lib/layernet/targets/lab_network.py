"""The network-only lab (`lab.clusters: false`): rendered artifacts as files in `<state>/<level>/`, served by
processes in namespaces. For proofs of the network alone (hardening, isolation, the audit's parser), which need no
Kubernetes API; a lab with clusters runs stage 01 through the kube path (lab.py).

plan   unified diff of each artifact vs the file the lab runs now (create / update / unchanged)
apply  writes what changed and restarts only what depends on it: Envoy (restart; the lab runs Envoy with
       hot restart disabled), CoreDNS (restart), nftables (`nft -f`, atomic); waits until healthy. Brings
       the lab up first when it is down.
logs   the level's Envoy access log (JSON lines), optionally from a point in time on
probe  `python -m layernet.probe` inside the level's namespace, checks on stdin, rows on stdout
"""
from __future__ import annotations

import difflib
import json
import subprocess
import sys
from datetime import datetime
from typing import Optional

from layernet.lab import layout
from layernet import clock
from layernet.lab import LabError, commands, netns
from layernet.plan import UNCHANGED, Plan, Step, change, refuse_drift
from layernet.targets import tools
from layernet.targets.base import Target

ACCESS_LOG = "envoy-access.log"
PROBE_TIMEOUT = 120.0



def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def _diff(live: str, desired: str, level: str, name: str) -> str:
    return "".join(difflib.unified_diff(_lines(live), _lines(desired),
                                        fromfile=f"live/{level}/{name}", tofile=f"desired/{level}/{name}"))


def _kind(art) -> str:
    return getattr(art, "kind", "") or commands.KIND_BY_NAME.get(art.name, "")


def _parse_time(text: str) -> Optional[datetime]:
    try:
        return clock.parse(text)
    except (TypeError, ValueError):
        return None


def condition(site) -> tuple[Optional[list[str]], bool]:
    """(stopped, partial) of a lab: the level services that stopped ([] when it is up), or None when it needs a
    rebuild; and whether namespaces of it remain (a rebuild is then a repair)."""
    stopped = [] if commands.lab_is_up(site) else commands.stopped_services(site)
    partial = stopped is None and bool(netns.our_namespaces(netns.topology(site).prefix))
    return stopped, partial


def _rebuild(partial: bool) -> Step:
    if partial:
        return change("lab", "processes", "repair", "the lab is partly down; apply rebuilds it from the configs above\n")
    return change("lab", "namespaces and processes", "create", "the lab is down; apply brings it up\n")


def _restarts(artifacts: list, changes: list[Step], stopped: list[str]) -> list[Step]:
    """What a changed artifact needs: its Envoy or CoreDNS restarted, its nftables table reloaded (atomically).
    A service that stopped is repaired instead (see _repairs)."""
    out: dict[tuple, Step] = {}
    for art, ch in zip(artifacts, changes):
        if ch.skip:
            continue
        kind = _kind(art)
        if kind == "envoy":
            svc = "envoy"
        elif kind.startswith("dns") or kind == "coredns":
            svc = "coredns"
        elif kind == "firewall":
            out[(art.level, "nftables")] = change(art.level, "nftables", "restart", f"reload: {art.name} changed\n")
            continue
        else:
            continue
        if f"{art.level}/{svc}" not in stopped:
            out[(art.level, svc)] = change(art.level, svc, "restart", f"{art.name} changed\n")
    return list(out.values())


def _repairs(stopped: list[str]) -> list[Step]:
    out = []
    for name in stopped:
        level, _, service = name.partition("/")
        out.append(change(level, f"{service} (process)", "repair", f"{name} has stopped; apply restarts it\n"))
    return out


def with_lab_ca(site, checks: list[dict]) -> list[dict]:
    """TLS checks without a `ca_file` trust the lab CA (what a plant's images trust, the lab's cloud's issuer)."""
    ca = str(layout.ca_cert_path(site))
    return [({**c, "ca_file": ca} if c.get("kind") == "tls" and not c.get("ca_file") else c) for c in checks]


class LabLife:
    """What either lab answers about its own life cycle: up or down, taking it down, what probes trust, tools."""

    def session_state(self) -> Optional[str]:
        if commands.lab_is_up(self.site):
            return "up"
        return "partly up" if commands.leftovers(self.site) else "down"

    def take_down(self, progress=None) -> None:
        if not commands.leftovers(self.site):
            return
        if progress:
            progress("taking the lab down (the run folder stays; use --keep-lab to leave it up)")
        commands.down(self.site)

    def probe_inputs(self) -> dict:
        return {"ca_file": str(layout.ca_cert_path(self.site)), "cloud_ip": str(netns.topology(self.site).cloud_tls_ip)}

    def context_label(self, level) -> str:
        return level.kube_context or "(lab)"

    def requirements(self) -> list[dict]:
        return [tools.envoy(), tools.coredns(), tools.nft(), tools.ip()]


class NetworkLab(LabLife, Target):
    kind = "lab"
    renders = "lab"

    def __init__(self, site):
        self.site = site

    # ------------------------------------------------------------------ plan / apply
    def _live(self, art, up: bool) -> Optional[str]:
        path = layout.level_dir(self.site, art.level) / art.name
        if not up or not path.exists():
            return None
        return path.read_text()

    def _plan(self, artifacts: list, up: bool) -> list[Step]:
        changes = []
        for art in artifacts:
            live = self._live(art, up)
            if live is None:
                changes.append(change(art.level, art.name, "create", _diff("", art.content, art.level, art.name)))
            elif live == art.content:
                changes.append(change(art.level, art.name, UNCHANGED))
            else:
                changes.append(change(art.level, art.name, "update", _diff(live, art.content, art.level, art.name)))
        return changes

    def plan(self, artifacts: list) -> Plan:
        """Every change apply will make: each artifact (create / update / unchanged), then the restarts those
        changes need, the repairs of stopped services, or bringing the whole lab up."""
        return Plan.of("infrastructure", self._steps(artifacts), self.kind)

    def _steps(self, artifacts: list) -> list[Step]:
        stopped, partial = condition(self.site)
        if stopped is None:
            return self._plan(artifacts, up=partial) + [_rebuild(partial)]
        changes = self._plan(artifacts, True)
        return changes + _restarts(artifacts, changes, stopped) + _repairs(stopped)

    def apply(self, artifacts: list, plan: Optional[Plan] = None) -> list[Step]:
        """Bring the lab up when it is down; otherwise write what changed and restart only what depends on it.
        A level service that stopped (crashed, killed) is restarted and reported as a "repair". With the reviewed
        `plan`, refuses (DriftError) when the lab no longer gives that plan."""

        site = self.site
        if plan is not None:
            refuse_drift(plan, self._steps(artifacts))
        stopped, partial = condition(site)
        if stopped is None:
            # down, or broken beyond a stopped process: rebuild. When namespaces remain, the configs on disk
            # are what ran, so the plan compares against them and the rebuild is reported as a repair.
            changes = self._plan(artifacts, up=partial)
            commands.up(site, artifacts=artifacts)
            return changes + [_rebuild(partial)]
        with commands.lab_lock(site):
            changes = self._plan(artifacts, up=True)
            restarts = _restarts(artifacts, changes, stopped)
            for art, ch in zip(artifacts, changes):
                if not ch.skip:
                    commands.write_artifact(site, art)
            for c in restarts:
                if c.target == "nftables":
                    commands.load_firewall(site, c.level)
            names = list(stopped) + [f"{c.level}/{c.target}" for c in restarts if c.target != "nftables"]
            if names:
                commands.restart(site, list(dict.fromkeys(names)))
        return changes + restarts + _repairs(stopped)

    # ------------------------------------------------------------------ logs
    def logs(self, level: str, since: Optional[datetime] = None) -> list[str]:
        site = self.site
        site.level(level)   # KeyError with the level names when unknown
        path = layout.level_dir(site, level) / ACCESS_LOG
        if not path.exists():
            return []
        lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip()]
        if since is None:
            return lines
        since = clock.utc(since)
        out = []
        for line in lines:
            try:
                t = _parse_time(json.loads(line).get("time"))
            except (json.JSONDecodeError, AttributeError):
                continue
            if t is not None and t >= since:
                out.append(line)
        return out

    # ------------------------------------------------------------------ probe
    def probe(self, level: str, checks: list[dict], timeout: float = PROBE_TIMEOUT) -> list[dict]:
        """Run the checks inside the level's namespace with `python -m layernet.probe`. TLS checks without a
        `ca_file` get the lab CA."""
        site = self.site
        ns = layout.namespace(site, level)
        if ns not in netns.list_namespaces():
            raise LabError(f"namespace {ns} does not exist: bring the lab up first (layernet lab up --site ...)")
        payload = json.dumps({"level": level, "checks": with_lab_ca(site, checks)})
        try:
            proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "layernet.probe"], input=payload,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LabError(f"probe in {ns} did not finish within {timeout:.0f} s") from None
        try:
            rows = json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise LabError(f"probe in {ns} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}") from None
        if not isinstance(rows, list):
            raise LabError(f"probe in {ns} returned {type(rows).__name__}, expected a list of rows")
        return rows
