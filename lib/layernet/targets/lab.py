"""The lab target: the kube target on the lab's clusters, plus what a plant has and a laptop lacks.

Stage 01 on the lab is the code a plant runs (kube.py): the Envoy objects, ``coredns-custom`` and its
rollout, probe Jobs and the access logs read through each level's Kubernetes API, with the lab's kubeconfig whose
contexts are the site's cluster names. What only the lab does around it:

- a lab that is down (or broken beyond a stopped process) is brought up first: namespaces, router, the cloud, the
  level firewalls, the clusters and K3s's own CoreDNS (lab/commands.py); the plan then shows every object as a
  create and one step that builds the lab;
- the level firewalls (nftables, what a plant's firewall team runs from the IP allow list) are reloaded when the
  rendered table changed;
- a cluster process that stopped is restarted ("repair") before the objects are applied;
- TLS probes trust the lab CA.

`running(site)` builds a lab fresh for a block and always takes it down.
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from typing import Optional

from layernet.lab import LabError, commands, layout, netns
from layernet.lab.clusters import kubeconfig
from layernet.plan import UNCHANGED, Plan, Step, change, refuse_drift
from layernet.targets import tools
from layernet.targets.kube import Api, KubeTarget, desired_objects, diff_object, object_id, with_coredns_restart

FIREWALL = "nftables.nft"
PROBE_TIMEOUT = 120.0


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


class LabTarget(KubeTarget):
    kind = "lab"
    shared_proxies = False

    def __init__(self, site):
        super().__init__(site, poll_interval=0.2, rollout_timeout=90.0, job_timeout=PROBE_TIMEOUT,
                         contexts={lv.name: kubeconfig.context_name(site, lv.name) for lv in site.levels})
        self._made: dict[str, int] = {}

    # ------------------------------------------------------------------ the lab's own life cycle
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

    def api(self, level: str) -> Api:
        """The level's API through the lab's kubeconfig; a rebuilt lab (new CA, new keys) gets new clients."""
        stamp = kubeconfig.path(self.site).stat().st_mtime_ns if kubeconfig.path(self.site).exists() else 0
        if level not in self._clients or self._made.get(level) != stamp:
            self._clients[level], self._made[level] = kubeconfig.client(self.site, level), stamp
        return Api(self._clients[level])

    # ------------------------------------------------------------------ plan / apply
    def _firewall(self, artifacts: list) -> list[tuple[Step, object]]:
        """(step, artifact) per level firewall: its table as loaded vs as rendered."""
        out = []
        for art in artifacts:
            if art.name != FIREWALL:
                continue
            path = layout.level_dir(self.site, art.level) / art.name
            live = path.read_text() if path.exists() else ""
            if live == art.content:
                out.append((change(art.level, "nftables (lab firewall)", UNCHANGED), art))
            else:
                diff = difflib.unified_diff(live.splitlines(True), art.content.splitlines(True),
                                            fromfile=f"live/{art.level}/{art.name}",
                                            tofile=f"desired/{art.level}/{art.name}")
                out.append((change(art.level, "nftables (lab firewall)", "update", "".join(diff)), art))
        return out

    def _offline(self, artifacts: list) -> list[Step]:
        """Every object as a create: what apply puts on the clusters it is about to build."""
        steps = []
        for level in self._levels(artifacts):
            pairs = [(change(level, object_id(o), *diff_object(o, None)), o) for o in desired_objects(artifacts, level)]
            steps += [s for s, _ in with_coredns_restart(level, pairs)]
        return steps

    def _steps(self, artifacts: list) -> list[Step]:
        site = self.site
        stopped, partial = condition(site)
        if stopped is None:
            return [_rebuild(partial)] + self._offline(artifacts)
        if stopped:     # a cluster process is down: its API may not answer until apply restarts it
            return [s for s, _ in self._firewall(artifacts)] + _repairs(stopped) + self._offline(artifacts)
        return [s for s, _ in self._firewall(artifacts)] + KubeTarget.plan(self, artifacts).steps

    def plan(self, artifacts: list) -> Plan:
        """The lab's own steps (building it, reloading a level firewall, repairing a stopped cluster process), then
        the kube target's plan of every level's objects."""
        return Plan.of("infrastructure", self._steps(artifacts), self.kind)

    def apply(self, artifacts: list, plan: Optional[Plan] = None) -> list[Step]:
        """Build the lab when it is down, reload what changed in the firewalls, restart stopped cluster processes,
        then apply the objects as on a plant. With the reviewed `plan`, refuses (DriftError) first when the lab no
        longer gives it."""
        site = self.site
        if plan is not None:
            refuse_drift(plan, self._steps(artifacts))
        stopped, partial = condition(site)
        if stopped is None:
            commands.up(site, artifacts=artifacts)
            lab = [_rebuild(partial)]
        else:
            with commands.lab_lock(site):
                walls = self._firewall(artifacts)
                for s, art in walls:
                    if not s.skip:
                        commands.write_artifact(site, art)
                        commands.load_firewall(site, art.level)
                if stopped:
                    commands.restart(site, stopped)
            lab = [s for s, _ in walls] + _repairs(stopped)
        return lab + KubeTarget.apply(self, artifacts)

    # ------------------------------------------------------------------ probe
    def probe(self, level: str, checks: list[dict]) -> list[dict]:
        """A probe Job on the level's cluster, as on a plant; TLS checks without a `ca_file` trust the lab CA."""
        ns = layout.namespace(self.site, level)
        if ns not in netns.list_namespaces():
            raise LabError(f"namespace {ns} does not exist: bring the lab up first (layernet lab up --site ...)")
        return KubeTarget.probe(self, level, with_lab_ca(self.site, checks))


def lab_target(site) -> LabTarget:
    """The site's lab: the kube path on its clusters."""
    return LabTarget(site)


@contextmanager
def running(site):
    """The lab of `site`, built fresh through the target's first apply, and ALWAYS taken down afterwards (also when
    the body raises). Yields the target."""
    why = commands.missing_requirements()
    if why:
        raise LabError(why)
    target = lab_target(site)
    try:
        commands.down(site)
        target.apply(commands.render_lab(site))
        yield target
    finally:
        commands.down(site)
