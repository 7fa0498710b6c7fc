"""Lab life cycle: up, down, status, exec, and what each level runs outside its cluster (nftables).

`up(site)` always starts fresh: it first removes whatever a previous lab with the same prefix left behind
(processes recorded or found by namespace membership, namespaces, the jump-box link, /etc/netns files,
stale Envoy shared memory), then builds the namespaces, issues the cloud certificate, renders and writes
every level's artifacts into `<state>/<level>/`, loads nftables, starts the cloud and each level's cluster
(control plane and node) and waits until each is healthy, then applies K3s's own add-ons. `down(site)` removes
everything again; configs and logs stay in the state folder for inspection (the next `up` clears them).
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional


from layernet.allowlist import effective_allowlist
from layernet.lab import LabError, clusters, netns, pki, procs, registry, services
from layernet.lab.binaries import coredns_binary
from layernet.lab.clusters import addons, admin, controlplane, kubeconfig
from layernet.lab.layout import ca_cert_path, check_route, level_dir, namespace
from layernet.lab import state_dir as _state_dir
from layernet.render import manifests, render_site
from layernet.render.dns import COREDNS_NAMESPACE
from layernet.table import print_table

NFT_CONF = "nftables.nft"
ENVOY_DEPLOYMENT = (manifests.NAMESPACE, manifests.APP)
COREDNS_DEPLOYMENT = (COREDNS_NAMESPACE, "coredns")       # K3s's (lab/clusters/addons.py)
READY_TIMEOUT = 60.0      # three API servers starting at once on two cores
DOWN_GRACE = 1.0          # seconds a lab process has to exit on SIGTERM when the lab goes down
RESERVED = {"cloud", "rtr", "ca", "jumpbox"}
Progress = Callable[[str], None]


# ----------------------------------------------------------------------------------------------- paths
def state_dir(site) -> Path:
    return _state_dir(site)


def _pids_file(site) -> Path:
    return state_dir(site) / "pids.json"


def _lab_file(site) -> Path:
    return state_dir(site) / "lab.json"


@contextmanager
def lab_lock(site):
    """One lab operation at a time per prefix (up, down, apply)."""
    d = state_dir(site)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def render_lab(site) -> list:
    """What the lab's stage 01 applies: a plant's (kube) artifacts."""
    return render_site(site, effective_allowlist(site), target="kube", state_dir=state_dir(site))


# ----------------------------------------------------------------------------------------------- state
def load_procs(site) -> dict[str, procs.Proc]:
    return procs.load(_pids_file(site))


def save_procs(site, table: dict[str, procs.Proc]) -> None:
    procs.save(_pids_file(site), table)


def _built(site) -> bool:
    """The lab was brought up and every one of its namespaces still exists."""
    if not _lab_file(site).exists():
        return False
    have = set(netns.list_namespaces())
    return all(ns in have for ns in netns.topology(site).namespaces)


def lab_is_up(site) -> bool:
    """True when this lab's namespaces exist and every recorded process is running."""
    if not _built(site):
        return False
    table = load_procs(site)
    return bool(table) and all(procs.alive(p) for p in table.values())


def stopped_services(site) -> Optional[list[str]]:
    """Names of recorded level services (e.g. "level4/envoy") that are no longer running, when restarting just
    those would repair the lab; None when it needs a rebuild (lab down, a namespace or a cloud process gone)."""
    if not _built(site):
        return None
    table = load_procs(site)
    levels = {spec[0] for spec in _service_specs(site)}
    dead = sorted(name for name, p in table.items() if not procs.alive(p))
    if not table or any(name not in levels for name in dead):
        return None
    return dead


def resolvers(site, topo: netns.Topology) -> dict[str, list[str]]:
    out = {topo.router_ns: [], topo.cloud_ns: [str(topo.cloud_dns_ip)], topo.jumpbox_ns: [str(topo.cloud_dns_ip)]}
    for lv in site.levels:
        if lv.dns_override:
            servers = [str(lv.node_ip)]
        else:
            servers = [str(u) for u in lv.dns_upstream]
        out[topo.level_ns[lv.name]] = servers
    return out


# ----------------------------------------------------------------------------------------------- cleanup
def _stale_shm() -> list[Path]:
    """Envoy hot-restart shared memory files that no running process maps (a crashed Envoy left them)."""
    shm = Path("/dev/shm")
    files = [f for f in shm.glob("envoy_shared_memory_*")] if shm.is_dir() else []
    if not files:
        return []
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            for line in maps.read_text().splitlines():
                if "/dev/shm/envoy_shared_memory_" in line:
                    mapped.add(line.split()[-1])
        except OSError:
            continue
    return [f for f in files if str(f) not in mapped]


def cleanup(site) -> list[str]:
    """Remove everything a lab with this prefix may have left: the telemetry records, the Kafka broker, processes
    (the clusters and their pods), namespaces, links, files."""
    done = []
    from layernet.lab import kafka, telemetry

    if telemetry.clear(site):
        done.append("removed the telemetry records")
    # every process of the lab at once (control planes, nodes, their pods, the cloud, the broker): a short grace, then
    # SIGKILL; the state goes with the next `up` anyway
    table = load_procs(site)
    topo = netns.topology(site)
    pids = [p.pid for p in table.values() if procs.alive(p)]
    broker = kafka.running_proc(site)
    pids += [broker.pid] if broker is not None else []
    stopped: list[int] = []
    for _ in range(3):         # again while a namespace still holds a process (one a dying node restarted)
        pids += [pid for ns in netns.our_namespaces(topo.prefix) for pid in procs.ns_pids(ns)]
        if not pids:
            break
        stopped += procs.terminate(pids, timeout=DOWN_GRACE)
        pids = []
    if kafka.stop(site) or broker is not None:
        done.append("stopped the Kafka broker (Event Hubs)")
    if stopped:
        done.append(f"stopped {len(stopped)} process(es)")
    done += netns.teardown(topo.prefix)
    for f in _stale_shm():
        f.unlink(missing_ok=True)
        done.append(f"removed {f}")
    for f in (_pids_file(site), _lab_file(site)):
        f.unlink(missing_ok=True)
    return done


# ----------------------------------------------------------------------------------------------- services
def write_artifact(site, art) -> Path:
    if art.level not in {lv.name for lv in site.levels}:
        raise LabError(f"artifact {art.name} is for level {art.level!r}, which the site does not define")
    path = level_dir(site, art.level) / art.name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(art.content)
    tmp.replace(path)
    return path


def load_firewall(site, level: str) -> None:
    path = level_dir(site, level) / NFT_CONF
    content = path.read_text()
    tables = re.findall(r"^\s*table\s+(\w+)\s+([\w.-]+)", content, flags=re.M)
    if re.search(r"^\s*(flush ruleset|delete table|destroy table)", content, flags=re.M):
        prefix = ""
    else:  # replace our tables atomically: create-if-missing, delete, then the new definition
        prefix = "".join(f"table {fam} {name} {{}}\ndelete table {fam} {name}\n" for fam, name in tables)
    netns.ns_exec(namespace(site, level), ["nft", "-f", "-"], input=prefix + content)


def _service_specs(site) -> list[tuple[str, str, list[str], Path]]:
    """(process name, namespace, argv, log) for every level service the site declares (lab/registry.py) whose
    config is in the state folder."""
    return [svc.spec() for svc in registry.level_services(site) if svc.config.exists()]


def cloud_app_names(site) -> list[str]:
    """The names the cloud's HTTPS apps serve (none outside the public cloud, which the apps do not model)."""
    from layernet.lab.cloud.apps import host_names

    if site.azure.cloud != "public":
        return []
    return [n for names in host_names(site.azure.location).values() for n in names]


def _cloud_specs(site, topo: netns.Topology, cert: Path, key: Path) -> list[tuple[str, str, list[str], Path]]:
    dns, front = registry.cloud_services(site, cert, key)
    dns.render(topo)
    return [dns.spec(), front.spec()]


def _ready_check(site, p: procs.Proc) -> Callable[[], bool]:
    """A cheap readiness test for one process: its service's (lab/registry.py); anything else is ready when
    it runs."""
    svc = registry.for_process(site, p.name)
    return (lambda: svc.ready(p)) if svc is not None else (lambda: True)


def wait_ready(site, started: list[procs.Proc], timeout: float = READY_TIMEOUT) -> None:
    pending = {p.name: (p, _ready_check(site, p)) for p in started}
    deadline = time.monotonic() + timeout
    while pending:
        for name, (p, check) in list(pending.items()):
            if not procs.alive(p):
                raise LabError(f"{name} exited during start-up; its output ({p.log}):\n{_tail(p.log)}")
            if check():
                del pending[name]
        if not pending:
            break
        if time.monotonic() > deadline:
            names = ", ".join(pending)
            raise LabError(f"not healthy after {timeout:.0f} s: {names}; see the logs in {state_dir(site)}")
        time.sleep(0.02)


def _tail(path: str, n: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no output)"


def start_services(site, specs) -> list[procs.Proc]:
    table = load_procs(site)
    started = []
    for name, ns, argv, log in specs:
        log.parent.mkdir(parents=True, exist_ok=True)
        p = procs.start(name, ns, argv, log)
        table[name] = p
        started.append(p)
    save_procs(site, table)
    return started


def restart(site, names: list[str]) -> list[procs.Proc]:
    """Stop and start the named level services (e.g. "level3/envoy") from the configs in the state folder."""
    table = load_procs(site)
    procs.stop([table[n] for n in names if n in table])
    for n in names:
        table.pop(n, None)
    save_procs(site, table)
    started = start_services(site, [s for s in _service_specs(site) if s[0] in names])
    wait_ready(site, started)
    return started


# ----------------------------------------------------------------------------------------------- up / down
@dataclass
class StepTimer:
    progress: Optional[Progress]
    t0: float = field(default_factory=time.monotonic)
    last: float = 0.0
    steps: list = field(default_factory=list)

    def __post_init__(self):
        self.last = self.t0

    def step(self, what: str) -> None:
        now = time.monotonic()
        self.steps.append((what, now - self.last))
        if self.progress:
            self.progress(f"  {what:<38} {1000 * (now - self.last):7.1f} ms")
        self.last = now

    @property
    def total(self) -> float:
        return time.monotonic() - self.t0


def up(site, artifacts: Optional[list] = None, progress: Optional[Progress] = None) -> float:
    """Build the lab from scratch and wait until every service is healthy. Returns the seconds it took."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, nftables): run it with sudo or as root")
    bad = RESERVED & {lv.name for lv in site.levels}
    if bad:
        raise LabError(f"level names {sorted(bad)} are reserved by the lab; rename them in the site file")
    with lab_lock(site):
        t = StepTimer(progress)
        cleaned = cleanup(site)
        root = state_dir(site)
        for d in [root / lv.name for lv in site.levels] + [root / "cloud"]:
            shutil.rmtree(d, ignore_errors=True)
        t.step("clean previous lab" + (f" ({len(cleaned)} item(s))" if cleaned else ""))
        try:
            topo = netns.topology(site)
            netns.build(site, topo, resolvers(site, topo))
            t.step(f"namespaces and links ({len(topo.namespaces)} ns)")
            names = [e.host for e in effective_allowlist(site).entries] + list(site.lab.refused_hosts)
            names += cloud_app_names(site)          # the echo answers those names too (probes ask it by ALPN)
            cert, key = pki.issue_server_cert(root / "ca", root / "cloud", names, ips=[topo.cloud_tls_ip])
            t.step(f"lab CA and cloud certificate ({len(names)} names)")
            if artifacts is None:
                artifacts = render_lab(site)
                t.step(f"render ({len(artifacts)} artifacts)")
            for art in artifacts:
                write_artifact(site, art)
            for lv in site.levels:
                if (level_dir(site, lv.name) / NFT_CONF).exists():
                    load_firewall(site, lv.name)
            t.step("write configs, load nftables")
            for lv in site.levels:
                controlplane.prepare(site, lv.name)
            kubeconfig.write(site)
            t.step(f"cluster certificates and kubeconfigs ({len(site.levels)} clusters)")
            # everything at once, as K3s starts its agent beside its server: a node registers as soon as its API
            # server lets it (the agent retries until then)
            started = start_services(site, _cloud_specs(site, topo, cert, key) + _service_specs(site))
            t.step(f"start {len(started)} processes")
            wait_ready(site, started)
            t.step("healthy (cloud, control planes, nodes registered)")
            t.step(f"K3s add-ons applied (CoreDNS: {addons.install(site)} objects)")
            for lv in site.levels:
                check_route(site, lv.node_ip)
            try:
                check_route(site, topo.cloud_tls_ip)
            except netns.RouteError:
                pass
            else:
                raise LabError(f"the jump box routes to the cloud stand-in {topo.cloud_tls_ip} through the lab; "
                               f"it must reach the level networks only")
            t.step("route check (levels via the lab link, cloud not routed)")
            _lab_file(site).write_text(json.dumps({"prefix": topo.prefix, "site": site.name,
                                                   "namespaces": topo.namespaces, "up_seconds": round(t.total, 3)}))
        except BaseException:
            cleanup(site)
            raise
        return t.total


def down(site, progress: Optional[Progress] = None) -> float:
    with lab_lock(site):
        t = StepTimer(progress)
        done = cleanup(site)
        t.step("stop processes, remove namespaces" + (f" ({len(done)} item(s))" if done else " (nothing to do)"))
        return t.total


def leftovers(site) -> list[str]:
    """What of this lab still exists on the host (empty after `down`)."""
    topo = netns.topology(site)
    out = [f"netns {n}" for n in netns.our_namespaces(topo.prefix)]
    if netns.link_exists(topo.jump_if):
        out.append(f"link {topo.jump_if}")
    for r in netns.root_routes():
        if r.get("dev") == topo.jump_if:
            out.append(f"route {r.get('dst')}")
    out += [f"process {p.name} ({p.pid})" for p in load_procs(site).values() if procs.alive(p)]
    from layernet.lab import kafka

    broker = kafka.running_proc(site)
    if broker is not None:
        out.append(f"process {broker.name} ({broker.pid})")
    if netns.NETNS_ETC.is_dir():
        out += [f"file {d}" for d in netns.NETNS_ETC.glob(f"{topo.prefix}-*")]
    return out


REQUIRED_TOOLS = {"ip": "iproute2", "nft": "nftables", "curl": "curl"}


def missing_requirements() -> str:
    """Why the lab cannot run on this machine ("" when it can)."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, nftables); run as root, as CI does"
    missing = [pkg for tool, pkg in REQUIRED_TOOLS.items() if not shutil.which(tool)]
    if missing:
        return f"missing Debian packages: apt-get install -y {' '.join(missing)}"
    try:
        coredns_binary()
    except LabError as exc:
        return str(exc)
    return clusters.missing()


# ----------------------------------------------------------------------------------------------- status
def _cluster_cell(site, level: str, ns_exists: bool, proc_cell) -> tuple[str, bool]:
    """The level's cluster: every control-plane process and the node agent running, the API ready."""
    dead = [svc.short for svc in controlplane.services(site, level) if not proc_cell(svc.name)[1]]
    if dead:
        return f"{', '.join(dead)} not running", False
    if not (ns_exists and controlplane.readyz(site, level)):
        return "API not ready", False
    return f"ready ({controlplane.api_url(site, level).split('//')[1]})", True


def status(site) -> list[dict]:
    """One row per namespace: processes, health, firewall. `ok` is False when anything is missing."""
    topo = netns.topology(site)
    have = set(netns.list_namespaces())
    table = load_procs(site)
    rows = []

    def proc_cell(name: str) -> tuple[str, bool]:
        p = table.get(name)
        if p is None:
            return "missing", False
        return (f"{p.pid}", True) if procs.alive(p) else (f"{p.pid} dead", False)

    for lv in site.levels:
        ns = topo.level_ns[lv.name]
        row = {"level": lv.name, "namespace": ns, "ns": "yes" if ns in have else "no"}
        ok = ns in have
        for col, want, (kns, name) in (("envoy", lv.proxy, ENVOY_DEPLOYMENT), ("dns", True, COREDNS_DEPLOYMENT)):
            # Envoy and CoreDNS are pods of the level's cluster
            cell, alive = admin.deployment_cell(site, lv.name, kns, name) if want and ns in have else ("-", True)
            row[col], ok = cell, ok and alive
        row["cluster"], alive = _cluster_cell(site, lv.name, ns in have, proc_cell)
        ok = ok and alive
        loaded = ns in have and netns.nft_loaded(ns, "inet layernet")
        row["nft"] = "loaded" if loaded else "missing"
        ok = ok and loaded
        row["ok"] = ok
        rows.append(row)
    ns = topo.cloud_ns
    tls, a = proc_cell("cloud/tls")
    dns, b = proc_cell("cloud/dns")
    rows.append({"level": "cloud", "namespace": ns, "ns": "yes" if ns in have else "no", "envoy": f"tls {tls}",
                 "dns": dns, "nft": "-", "ok": ns in have and a and b})
    ns = topo.router_ns
    drops = netns.router_drops(ns) if ns in have else None
    loaded = drops is not None
    rows.append({"level": "router", "namespace": ns, "ns": "yes" if ns in have else "no", "envoy": "-", "dns": "-",
                 "nft": f"loaded, {drops} dropped" if loaded else "missing", "ok": loaded})
    from layernet.lab import kafka

    row = kafka.status_row(site)      # only once a runbook or test started the broker
    if row is not None:
        rows.append(row)
    for svc in services.rows(site):    # what stages 02-04 started in the levels (Arc agents, brokers, dataflows)
        level, _, name = svc["service"].partition("/")
        rows.append({"level": level, "namespace": topo.level_ns.get(level, topo.jumpbox_ns), "ns": "yes",
                     "envoy": f"{name} {svc['pid']}" + ("" if svc["running"] else " dead"), "dns": "-", "nft": "-",
                     "ok": svc["running"]})
    ns = topo.jumpbox_ns
    rows.append({"level": "jumpbox", "namespace": ns, "ns": "yes" if ns in have else "no", "envoy": "-",
                 "dns": str(topo.cloud_dns_ip), "nft": "-", "ok": ns in have})
    return rows


# ----------------------------------------------------------------------------------------------- CLI hooks
def _print(msg: str) -> None:
    print(msg, flush=True)


def cli_up(site) -> int:
    print(f"lab up: site {site.name}, prefix {site.lab.prefix}, state {state_dir(site)}", flush=True)
    try:
        total = up(site, progress=_print)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"lab up in {total:.2f} s; CA certificate: {ca_cert_path(site)}")
    return 0


def cli_down(site) -> int:
    print(f"lab down: prefix {site.lab.prefix}", flush=True)
    try:
        total = down(site, progress=_print)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    left = leftovers(site)
    if left:
        print("error: still present: " + ", ".join(left), file=sys.stderr)
        return 1
    print(f"lab down in {total:.2f} s")
    return 0


def cli_status(site) -> int:
    rows = status(site)
    print_table([{**r, "ok": "ok" if r["ok"] else "FAIL"} for r in rows],
                ["level", "namespace", "ns", "envoy", "dns", "cluster", "nft", "ok"])
    healthy = all(r["ok"] for r in rows)
    if not healthy:
        print("lab is not healthy: run `layernet lab up --site ...` to rebuild it", file=sys.stderr)
    return 0 if healthy else 1


def exec_in(site, level: str, argv: list[str]) -> int:
    """Run a command inside `<prefix>-<level>` (or -cloud, -rtr); returns its exit code."""
    try:
        ns = namespace(site, level)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if ns not in netns.list_namespaces():
        print(f"error: namespace {ns} does not exist: run `layernet lab up` first", file=sys.stderr)
        return 2
    return subprocess.call(["ip", "netns", "exec", ns] + list(argv))
