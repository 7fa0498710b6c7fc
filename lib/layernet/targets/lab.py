"""The lab target: rendered artifacts as files in `<state>/<level>/`, served by processes in namespaces.

plan   unified diff of each artifact vs the file the lab runs now (create / update / unchanged)
apply  writes what changed and restarts only what depends on it: Envoy (restart; the lab runs Envoy with
       hot restart disabled), CoreDNS (restart), nftables (`nft -f`, atomic); waits until healthy. Brings
       the lab up first when it is down.
logs   the level's Envoy access log (JSON lines), optionally from a point in time on
probe  `python -m layernet.probe` inside the level's namespace, checks on stdin, rows on stdout
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
import json
import subprocess
import sys
import time
from datetime import datetime
from typing import Optional

from layernet import clock
from layernet.evidence import evidence
from layernet.lab import LabError, aioext, arcagent, azure as lab_azure, commands, jumpbox, mqttpki, netns, procs, reach, services, telemetry
from layernet.lab.clusters import kubeconfig
from layernet.plan import Change, require_same_plan
from layernet.targets import tools
from layernet.targets.base import Target
from layernet.targets.kube import Api

ACCESS_LOG = "envoy-access.log"
PROBE_TIMEOUT = 120.0


def lab_is_up(site) -> bool:
    return commands.lab_is_up(site)


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


def _rebuild(partial: bool) -> Change:
    if partial:
        return Change("lab", "processes", "repair", "the lab is partly down; apply rebuilds it from the configs above\n")
    return Change("lab", "namespaces and processes", "create", "the lab is down; apply brings it up\n")


def _restarts(artifacts: list, changes: list[Change], stopped: list[str]) -> list[Change]:
    """What a changed artifact needs: its Envoy or CoreDNS restarted, its nftables table reloaded (atomically).
    A service that stopped is repaired instead (see _repairs)."""
    out: dict[tuple, Change] = {}
    for art, ch in zip(artifacts, changes):
        if ch.action == "unchanged":
            continue
        kind = _kind(art)
        if kind == "envoy":
            svc = "envoy"
        elif kind.startswith("dns") or kind == "coredns":
            svc = "coredns"
        elif kind == "firewall":
            out[(art.level, "nftables")] = Change(art.level, "nftables", "restart", f"reload: {art.name} changed\n")
            continue
        else:
            continue
        if f"{art.level}/{svc}" not in stopped:
            out[(art.level, svc)] = Change(art.level, svc, "restart", f"{art.name} changed\n")
    return list(out.values())


def _repairs(stopped: list[str]) -> list[Change]:
    out = []
    for name in stopped:
        level, _, service = name.partition("/")
        out.append(Change(level, f"{service} (process)", "repair", f"{name} has stopped; apply restarts it\n"))
    return out


class LabTarget(Target):
    kind = "lab"

    def __init__(self, site):
        self.site = site

    # ------------------------------------------------------------------ plan / apply
    def _live(self, art, up: bool) -> Optional[str]:
        path = commands.level_dir(self.site, art.level) / art.name
        if not up or not path.exists():
            return None
        return path.read_text()

    def _plan(self, artifacts: list, up: bool) -> list[Change]:
        changes = []
        for art in artifacts:
            live = self._live(art, up)
            if live is None:
                changes.append(Change(art.level, art.name, "create", _diff("", art.content, art.level, art.name)))
            elif live == art.content:
                changes.append(Change(art.level, art.name, "unchanged"))
            else:
                changes.append(Change(art.level, art.name, "update", _diff(live, art.content, art.level, art.name)))
        return changes

    def plan(self, artifacts: list) -> list[Change]:
        """Every change apply will make: each artifact (create / update / unchanged), then the restarts those
        changes need, the repairs of stopped services, or bringing the whole lab up."""
        up = commands.lab_is_up(self.site)
        stopped = [] if up else commands.stopped_services(self.site)
        if stopped is None:
            partial = bool(netns.our_namespaces(netns.topology(self.site).prefix))
            return self._plan(artifacts, up=partial) + [_rebuild(partial)]
        changes = self._plan(artifacts, True)
        return changes + _restarts(artifacts, changes, stopped) + _repairs(stopped)

    def apply(self, artifacts: list, plan: Optional[list[Change]] = None) -> list[Change]:
        """Bring the lab up when it is down; otherwise write what changed and restart only what depends on it.
        A level service that stopped (crashed, killed) is restarted and reported as a "repair". With the reviewed
        `plan`, refuses (DriftError) when the lab no longer gives that plan."""

        site = self.site
        require_same_plan(plan, self.plan(artifacts), f"the lab {site.lab.prefix}")
        stopped = [] if commands.lab_is_up(site) else commands.stopped_services(site)
        if stopped is None:
            # down, or broken beyond a stopped process: rebuild. When namespaces remain, the configs on disk
            # are what ran, so the plan compares against them and the rebuild is reported as a repair.
            partial = bool(netns.our_namespaces(netns.topology(site).prefix))
            changes = self._plan(artifacts, up=partial)
            commands.up(site, artifacts=artifacts)
            return changes + [_rebuild(partial)]
        with commands.lab_lock(site):
            changes = self._plan(artifacts, up=True)
            restarts = _restarts(artifacts, changes, stopped)
            for art, ch in zip(artifacts, changes):
                if ch.action != "unchanged":
                    commands.write_artifact(site, art)
            for c in restarts:
                if c.obj == "nftables":
                    commands.load_firewall(site, c.level)
            names = list(stopped) + [f"{c.level}/{c.obj}" for c in restarts if c.obj != "nftables"]
            if names:
                commands.restart(site, list(dict.fromkeys(names)))
        return changes + restarts + _repairs(stopped)

    # ------------------------------------------------------------------ logs
    def logs(self, level: str, since: Optional[datetime] = None) -> list[str]:
        site = self.site
        site.level(level)   # KeyError with the level names when unknown
        path = commands.level_dir(site, level) / ACCESS_LOG
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
        ns = commands.namespace(site, level)
        if ns not in netns.list_namespaces():
            raise LabError(f"namespace {ns} does not exist: bring the lab up first (layernet lab up --site ...)")
        ca = str(commands.ca_cert_path(site))
        prepared = [({**c, "ca_file": ca} if c.get("kind") == "tls" and not c.get("ca_file") else c) for c in checks]
        payload = json.dumps({"level": level, "checks": prepared})
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

    # ------------------------------------------------------------------ Azure (stages 02-04)
    azure_poll_interval = 0.5

    def azure_call(self, func: str, progress=None, **kwargs):
        """The lab's Azure calls run on its jump box (its own namespace, names resolving to the lab's cloud)."""
        return jumpbox.call(self.site, func, progress=progress, **kwargs)

    def arm(self):
        return lab_azure.arm(self.site)

    def install_arc_agents(self, level: str, cluster_id: str, progress=None, agent_key: Optional[bytes] = None) -> str:
        d = commands.level_dir(self.site, level)
        d.mkdir(parents=True, exist_ok=True)
        (d / arcagent.FEATURES_FILE).unlink(missing_ok=True)      # newly installed agents: no feature enabled yet
        (d / arcagent.KEY_FILE).unlink(missing_ok=True)
        if agent_key:
            arcagent.save_key(d, agent_key)
        return services.start_arc_agent(self.site, level, cluster_id)

    def azure_stand_ins(self, stage: str) -> list[dict]:
        region = self.site.azure.location
        common = [
            ("Microsoft Entra ID (tokens)", "login.microsoftonline.com",
             "the lab's Entra stand-in: client-credential tokens signed with its own key, published in its JWKS"),
            ("Azure Resource Manager", "management.azure.com",
             "the lab's ARM stand-in: the pinned api-versions and the SDK models' contracts enforced, long-running "
             "operations as ARM runs them; no Azure subscription was touched"),
        ]
        parts = {
            "arc": [("Arc configuration data plane and heartbeats", f"{region}.dp.kubernetesconfiguration.azure.com",
                     "lab stand-in: Connected only while heartbeats arrive from the egress level's node"),
                    ("Arc identity (HIS)", f"gbl.his.arc.azure.com, {region}.his.arc.azure.com",
                     "lab stand-in: checks the agents' proof with the connected cluster's public key"),
                    ("Arc notification, relay and cluster connect", "guestnotificationservice.azure.com, "
                     f"*.servicebus.windows.net, {region}.obo.arc.azure.com",
                     "lab stand-ins answering the agents' calls (content not modelled)"),
                    ("Microsoft Container Registry", "mcr.microsoft.com, *.data.mcr.microsoft.com",
                     "lab registry: made-up image manifests and layers"),
                    ("Arc agents in each cluster", "namespace azure-arc",
                     "one lab process per level making the agents' calls by name through the proxies")],
            "aio": [("AIO extensions in each cluster", "cert-manager, secret store, azure-iot-operations",
                     "one lab process per level: image pulls through the proxies, status to the configuration data "
                     "plane, mosquitto as the MQTT broker of the listener resources"),
                    ("Microsoft Container Registry", "mcr.microsoft.com, *.data.mcr.microsoft.com",
                     "lab registry: made-up image manifests and layers")],
            "telemetry": [("Azure Event Hubs", "<namespace>.servicebus.windows.net:9093",
                           "Apache Kafka in the lab's cloud (TLS, OAUTHBEARER against the lab's Entra, authorized by "
                           "the ARM role assignments)"),
                          ("AIO connector and dataflows, the OPC UA server", "the levels' nodes",
                           "lab processes reading the ARM records (asyncua OPC PLC, MQTT dataflows)")],
        }
        return [{"part": p, "hosts": h, "on this run": w} for p, h, w in common + parts.get(stage, [])]

    def role_rows(self, role: str) -> list[dict]:
        """Per level whose stand-in of `role` started: did it reach every host the catalog marks required for the
        role (lab/reach.py)? Names each one it did not, and the role."""
        out = []
        for lv in self.site.levels:
            if role == arcagent.ROLE:
                st, who = services.arc_agent_status(self.site, lv.name), "Arc agents"
            elif role == aioext.ROLE:
                st, who = aioext.status(self.site, lv.name), "AIO extensions"
            else:
                return []
            if st is not None:
                out.append(reach.row(self.site, role, lv.name, st.get("calls"), who, st.get("blocked_on")))
        return out

    def arc_features(self, level: str):
        return arcagent.read_features(commands.level_dir(self.site, level))

    def enable_arc_features(self, level: str, features: list) -> str:
        on = arcagent.enable_features(commands.level_dir(self.site, level), list(features))
        return f"agents of {level}: features enabled: {', '.join(on) or 'none'}"

    def install_aio_extension(self, level: str, cluster_id: str, extension: dict) -> str:
        return aioext.install(self.site, level, cluster_id, extension)

    def aio_extension_running(self, level: str):
        """False when the level's extension stand-in was started (it left its status) and no longer runs;
        None when it never started."""
        if aioext.status(self.site, level) is None:
            return None
        p = services.table(self.site).get(f"{level}/aio-extension")
        return p is not None and procs.alive(p)

    def aio_listeners(self, level: str, listeners: list, authentications: list = ()) -> str:
        return aioext.set_listeners(self.site, level, listeners, authentications)

    def aio_note(self, level: str) -> str:
        return aioext.note(self.site, level)

    def aio_broker_rows(self, listeners: dict, wait: float = 10.0) -> list:
        """An MQTT round trip (connect, subscribe, publish, receive) to every anonymous listener of every level's
        broker, and an anonymous client refused by every listener that authenticates its clients, from this
        namespace (the jump box side, which routes to the level nodes: the admin flow)."""
        rows = []
        ca = str(commands.ca_cert_path(self.site))
        for level, ports in listeners.items():
            node = str(self.site.level(level).node_ip)
            commands.check_route(self.site, node)
            st = aioext.status(self.site, level) or {}
            failed = not st or any(e.get("state") == "Failed" for e in st.get("extensions", {}).values())
            for name, port, tls, authenticated in ports:
                probe = aioext.mqtt_refuses_anonymous if authenticated else aioext.mqtt_round_trip
                end = time.monotonic() + (0 if failed else wait)   # a broker that is (re)starting gets a few seconds
                while True:
                    ok, observed = probe(node, port, ca if tls else None)
                    if ok or time.monotonic() >= end:
                        break
                    time.sleep(0.5)
                hint = f"{name} on {node}:{port} ({'TLS' if tls else 'plain'}): {observed}"
                note = aioext.note(self.site, level)
                rows.append(evidence(level, f"mqtt {name} :{port}",
                                     "anonymous client refused" if authenticated else "round trip",
                                     observed if ok else "failed", ok, hint + (f"; {note}" if note else "")))
        return rows

    def install_telemetry(self, records: dict) -> str:
        return telemetry.install(self.site, records)

    makes_x509_objects = True

    def kube_api(self, level: str):
        """The level cluster's API from the jump box's kubeconfig (None on a lab site without clusters)."""
        if not self.site.lab.clusters:
            return None
        return Api(kubeconfig.client(self.site, level))

    def no_kube_api(self, level: str) -> str:
        return (f"{level}: this lab site has no clusters (lab.clusters: false), so no Kubernetes API: the lab's "
                "brokers and stand-ins use the lab CA and client certificate files the objects would hold")

    def x509_objects(self, refs: list) -> list[dict]:
        return mqttpki.objects(self.site, refs)

    def x509_files(self):
        if self.site.lab.clusters:
            return None
        m = mqttpki.ensure(self.site)
        return m.ca, m.cert, m.key

    def telemetry_rehearsals(self) -> str:
        return telemetry.rehearse(self.site)

    def telemetry_running(self):
        return telemetry.running(self.site)

    def eventhubs_client(self) -> tuple:
        """The lab's Event Hubs connection string (lab.kafka, read here) and the lab CA."""
        from layernet.lab import kafka

        return kafka.connection_string(self.site), str(commands.ca_cert_path(self.site))

    def eventhubs_refusals(self, since: float) -> list:
        """From the lab broker's log: tokens its validator refused and principals its authorizer denied."""
        from layernet.lab import kafka

        return kafka.refusals(self.site, since)

    def arc_agent_note(self, level: str) -> str:
        st = services.arc_agent_status(self.site, level)
        if st is None:
            return f"the lab's Arc agents of {level} never started"
        if st.get("blocked_on"):
            return f"the Arc agents of {level} cannot reach {st['blocked_on']}"
        if st.get("heartbeat_error"):
            return f"the Arc agents of {level} cannot send heartbeats: {st['heartbeat_error']}"
        return ""

    # ------------------------------------------------------------------ what stages ask
    azure_elsewhere = True

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
        return {"ca_file": str(commands.ca_cert_path(self.site)), "cloud_ip": str(netns.topology(self.site).cloud_tls_ip)}

    def context_label(self, level) -> str:
        return level.kube_context or "(lab)"

    def requirements(self) -> list[dict]:
        return [tools.envoy(), tools.coredns(), tools.nft(), tools.ip()]


@contextmanager
def running(site):
    """The lab of `site`, built fresh through the lab target's first apply, and ALWAYS taken down afterwards
    (also when the body raises). Yields the LabTarget."""
    why = commands.missing_requirements()
    if why:
        raise LabError(why)
    target = LabTarget(site)
    try:
        commands.down(site)
        target.apply(commands.render_lab(site))
        yield target
    finally:
        commands.down(site)
