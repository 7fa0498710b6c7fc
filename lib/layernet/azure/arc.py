"""Stage 02 on a real site: what Arc looks like now, the exact steps to Arc-enable each level, and how to run them.

Two ways to read the live state (`AzLive`: az on the jump box; `SdkLive`: ARM through the SDK) and two executors
behind one plan (`AzExecutor` runs the shown command lines; `SdkExecutor` makes the ARM calls of the same steps:
provider registration, resource group, the connected-cluster PUT with a fresh RSA key — what the lab uses).
`poll_connected` is the verification for both: azure-mgmt-hybridkubernetes until Connected or the level's timeout.

Order: site-wide steps (providers, resource group), then each Arc-enabled level from the egress level down
(its node preflight, connect — or update when only settings differ —, enable-features).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shlex
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from layernet.azure.clients import Arm, as_dict, pick
from layernet.resource_ids import rid
from layernet.azure.runner import CommandFailed, Runner, az_json
from layernet.errors import InputError, StageFailed
from layernet.site.arc import CUSTOM_LOCATIONS_APP_ID, NODE_SYSCTLS
from layernet.site.names import check_guid
from layernet.evidence import evidence
from layernet.plan import Step

OID_COMMAND = ["az", "ad", "sp", "show", "--id", CUSTOM_LOCATIONS_APP_ID, "--query", "id", "-o", "tsv"]
PRE_ONBOARDING_LOGS = "~/.azure/pre_onboarding_check_logs"
# a failed connect whose output says this is not retried: the pre-onboarding check would only time out again
CONNECT_FINAL = re.compile(r"pre-?onboarding|diagnostic check", re.I)
DEBUG_IMAGE = "mcr.microsoft.com/azurelinux/busybox:1.36"


@dataclass(frozen=True)
class Target:
    """One level's connected cluster as the site wants it."""
    level: str
    cluster: str
    resource_group: str
    location: str
    kube_config: str
    kube_context: Optional[str]
    timeout: int


def targets(site) -> list[Target]:
    """Arc-enabled levels, egress level first (levels with reaches_azure: false are not connected)."""
    cfg = _kube_config(site)
    out = []
    for lv in site.arc_levels():
        name = site.azure.clusters.get(lv.name)
        if not name:
            raise InputError(f"site field azure.clusters.{lv.name} is missing: name the Arc connected cluster of "
                             f"level {lv.name} (e.g. azure.clusters.{lv.name}: aio-{lv.name})")
        out.append(Target(lv.name, name, site.azure.resource_group, site.azure.location, cfg,
                          lv.kube_context, site.arc.timeout(lv.name)))
    return out


def _kube_config(site) -> str:
    if site.arc.kube_config:
        return os.path.expanduser(site.arc.kube_config)
    env = os.environ.get("KUBECONFIG", "")
    return env.split(os.pathsep)[0] if env else os.path.expanduser("~/.kube/config")


# ----------------------------------------------------------------------------------------------- live state
def cluster_summary(raw: Optional[dict]) -> Optional[dict]:
    """The fields of a connected cluster that decide the plan (stable between polls: no timestamps)."""
    if not raw:
        return None
    return {
        "connectivityStatus": pick(raw, "properties", "connectivityStatus") or pick(raw, "connectivityStatus"),
        "provisioningState": pick(raw, "properties", "provisioningState") or pick(raw, "provisioningState"),
        "oidcIssuer": bool(pick(raw, "properties", "oidcIssuerProfile", "enabled")
                           or pick(raw, "oidcIssuerProfile", "enabled")),
        "workloadIdentity": bool(pick(raw, "properties", "securityProfile", "workloadIdentity", "enabled")
                                 or pick(raw, "securityProfile", "workloadIdentity", "enabled")),
        "agentAutoUpgrade": (pick(raw, "properties", "arcAgentProfile", "agentAutoUpgrade")
                             or pick(raw, "arcAgentProfile", "agentAutoUpgrade") or "Enabled"),
        "gateway": ((pick(raw, "properties", "gateway", "resourceId") or pick(raw, "gateway", "resourceId") or "")
                    .lower() or None),
    }


class AzLive:
    """Reads the live state with az (and helm for the agents' feature settings) on the jump box."""

    def __init__(self, runner: Runner):
        self.runner = runner

    def account(self) -> Optional[str]:
        res = self.runner.run(["az", "account", "show", "--query", "id", "-o", "tsv"], name="account")
        return res.stdout.strip() if res.ok else None

    def provider(self, namespace: str) -> str:
        data = az_json(self.runner, ["az", "provider", "show", "-n", namespace], name=f"provider-{namespace}")
        return (data or {}).get("registrationState", "NotRegistered")

    def group_exists(self, rg: str) -> bool:
        res = self.runner.run(["az", "group", "exists", "-n", rg], name="group-exists")
        if not res.ok:
            raise CommandFailed(res)
        return res.stdout.strip().lower() == "true"

    def cluster(self, t: Target) -> Optional[dict]:
        return az_json(self.runner, ["az", "connectedk8s", "show", "-n", t.cluster, "-g", t.resource_group],
                       name=f"show-{t.cluster}")

    def features(self, t: Target) -> Optional[list[str]]:
        """Features enabled in the agents' Helm release (None: unreadable)."""
        argv = [helm_binary(), "get", "values", "azure-arc", "-n", "azure-arc-release", "-o", "json",
                "--kubeconfig", t.kube_config] + (["--kube-context", t.kube_context] if t.kube_context else [])
        res = self.runner.run(argv, name=f"features-{t.level}", retry=False)
        if not res.ok:
            return None
        try:
            values = json.loads(res.stdout or "{}") or {}
        except json.JSONDecodeError:
            return None
        return features_from_values(values)

    def oid(self) -> str:
        res = self.runner.run(OID_COMMAND, name="custom-locations-oid")
        oid = res.stdout.strip()
        if not res.ok or check_guid(oid, "object id"):       # the site's GUID rule (full match)
            raise StageFailed("could not derive the Custom Locations object id with `" + shlex.join(OID_COMMAND) +
                              f"` ({res.tail(2) or 'no output'}); set arc.custom_locations_oid in the site file")
        return oid


def helm_binary() -> str:
    """helm on PATH, else the copy `az connectedk8s` downloads under ~/.azure/helm/, else plain "helm"."""
    import glob
    import shutil

    found = shutil.which("helm")
    if found:
        return found
    copies = sorted(glob.glob(os.path.expanduser("~/.azure/helm/*/*/helm")))
    return copies[-1] if copies else "helm"


def features_from_values(values: dict) -> list[str]:
    sdv = values.get("systemDefaultValues") or {}
    out = []
    if str((sdv.get("clusterconnect-agent") or {}).get("enabled", "")).lower() == "true":
        out.append("cluster-connect")
    if str((sdv.get("customLocations") or {}).get("enabled", "")).lower() == "true":
        out.append("custom-locations")
    if str((sdv.get("guard") or {}).get("enabled", "")).lower() == "true":
        out.append("azure-rbac")
    return out


class SdkLive:
    """Reads the same live state through ARM (the lab; or a jump box without az). Features are agent settings
    ARM does not hold: `features_of(level)` reads them where the agents run (the lab's target); without it they
    are unreadable (None), never assumed enabled."""

    def __init__(self, arm: Arm, features_of: Optional[Callable[[str], Optional[list]]] = None):
        self.arm = arm
        self.features_of = features_of
        self._res = None
        self._ck = None

    @property
    def res(self):
        self._res = self._res or self.arm.resources()
        return self._res

    @property
    def ck(self):
        self._ck = self._ck or self.arm.connected_kubernetes()
        return self._ck

    def account(self) -> Optional[str]:
        return self.arm.subscription_id

    def provider(self, namespace: str) -> str:
        from azure.core.exceptions import ResourceNotFoundError
        try:
            return pick(as_dict(self.res.providers.get(namespace)), "registrationState") or "NotRegistered"
        except ResourceNotFoundError:
            return "NotRegistered"

    def group_exists(self, rg: str) -> bool:
        return bool(self.res.resource_groups.check_existence(rg))

    def cluster(self, t: Target) -> Optional[dict]:
        from azure.core.exceptions import ResourceNotFoundError
        try:
            return as_dict(self.ck.connected_cluster.get(t.resource_group, t.cluster))
        except ResourceNotFoundError:
            return None

    def features(self, t: Target) -> Optional[list[str]]:
        return self.features_of(t.level) if self.features_of is not None else None

    def oid(self) -> str:
        raise StageFailed("the sdk executor cannot derive the Custom Locations object id: set arc.custom_locations_oid")


def observe(site, live) -> dict:
    """The live state the plan is made against (and that apply re-reads to refuse drift)."""
    state = {"providers": {ns: live.provider(ns) for ns in site.arc.providers},
             "group": live.group_exists(site.azure.resource_group), "clusters": {}, "features": {}}
    for t in targets(site):
        summary = cluster_summary(live.cluster(t))
        state["clusters"][t.level] = summary
        state["features"][t.level] = (sorted(live.features(t) or []) if summary else None)
    return state


# ----------------------------------------------------------------------------------------------- node preflight
def node_settings(t: Target, runner: Runner) -> dict:
    """{node: {sysctl: value}} read with one short-lived debugger pod per node (removed afterwards), or
    {"error": why} when the cluster does not allow it (no access, no image pull, debug forbidden)."""
    base = ["kubectl", "--kubeconfig", t.kube_config] + (["--context", t.kube_context] if t.kube_context else [])
    res = runner.run(base + ["get", "nodes", "-o", "json"], name=f"nodes-{t.level}", retry=False)
    if not res.ok:
        return {"error": res.tail(1) or f"kubectl get nodes failed (exit {res.rc})"}
    try:
        nodes = [n["metadata"]["name"] for n in (json.loads(res.stdout).get("items") or [])]
    except (json.JSONDecodeError, KeyError, TypeError):
        return {"error": "kubectl get nodes answered something that is not a node list"}
    before = _debug_pods(base, runner, t.level)
    out: dict = {}
    paths = ["/proc/sys/" + k.replace(".", "/") for k in NODE_SYSCTLS]
    try:
        for node in nodes:
            argv = base + ["debug", f"node/{node}", "-n", "default", "-q", "--attach=true", "--image", DEBUG_IMAGE,
                           "--profile=general", "--", "cat"] + paths
            r = runner.run(argv, name=f"sysctl-{t.level}-{node}", retry=False, timeout=120)
            values = [v.strip() for v in r.stdout.strip().splitlines() if v.strip()]
            if not r.ok or len(values) != len(NODE_SYSCTLS) or not all(v.isdigit() for v in values):
                return {"error": f"could not read the node settings of {node}: {r.tail(1) or 'no output'}"}
            out[node] = dict(zip(NODE_SYSCTLS, (int(v) for v in values)))
    finally:
        # the debugger pods (node-debugger-<node>-<suffix>) this read created are removed again
        for pod in sorted(_debug_pods(base, runner, t.level) - before):
            runner.run(base + ["delete", "pod", pod, "-n", "default", "--wait=false"], name=f"cleanup-{t.level}",
                       retry=False)
    return out


def _debug_pods(base: list[str], runner: Runner, level: str) -> set[str]:
    r = runner.run(base + ["get", "pods", "-n", "default", "-o", "name"], name=f"pods-{level}", retry=False)
    names = [l.strip().removeprefix("pod/") for l in r.stdout.splitlines()] if r.ok else []
    return {n for n in names if n.startswith("node-debugger-")}


def manual_sysctl_command() -> str:
    return "; ".join(f"sudo sysctl -w {k}={v}" for k, v in NODE_SYSCTLS.items())


def preflight_step(t: Target, settings: Optional[dict]) -> Step:
    target = f"nodes of {t.kube_context or t.level}"
    wanted = ", ".join(f"{k}>={v}" for k, v in NODE_SYSCTLS.items())
    if settings is None or "error" in settings:
        why = (settings or {}).get("error", "node preflight turned off (arc.node_preflight: false)")
        return Step(t.level, "check node settings (manual)", target, manual_sysctl_command(), skip=True,
                    reason=f"not readable here ({why}); check on every node: {wanted}")
    low = [f"{node}: {k}={v} (< {NODE_SYSCTLS[k]})" for node, vals in settings.items()
           for k, v in vals.items() if v < NODE_SYSCTLS[k]]
    if low:
        return Step(t.level, "raise node settings (manual)", target, manual_sysctl_command(), skip=False,
                    reason="too low, the agents time out without them: " + "; ".join(low) +
                    " (persist them in /etc/sysctl.d/ and run the plan again)")
    return Step(t.level, "check node settings", target, "", skip=True,
                reason=f"{len(settings)} node(s) ok: {wanted}")


# ----------------------------------------------------------------------------------------------- the plan
def connect_argv(site, t: Target, oid: str) -> list[str]:
    a = site.arc
    argv = ["az", "connectedk8s", "connect", "-n", t.cluster, "-g", t.resource_group, "--location", t.location,
            "--custom-locations-oid", oid, "--onboarding-timeout", str(t.timeout)]
    if a.oidc_issuer:
        argv.append("--enable-oidc-issuer")
    if a.workload_identity:
        argv.append("--enable-workload-identity")
    if not a.auto_upgrade:
        argv.append("--disable-auto-upgrade")
    argv += ["--kube-config", t.kube_config] + (["--kube-context", t.kube_context] if t.kube_context else [])
    if a.gateway_resource_id:
        argv += ["--gateway-resource-id", a.gateway_resource_id]
    return argv


def update_argv(site, t: Target) -> list[str]:
    a = site.arc
    argv = ["az", "connectedk8s", "update", "-n", t.cluster, "-g", t.resource_group,
            "--auto-upgrade", "true" if a.auto_upgrade else "false"]
    if a.oidc_issuer:
        argv.append("--enable-oidc-issuer")
    if a.workload_identity:
        argv.append("--enable-workload-identity")
    if a.gateway_resource_id:
        argv += ["--gateway-resource-id", a.gateway_resource_id]
    argv += ["--kube-config", t.kube_config] + (["--kube-context", t.kube_context] if t.kube_context else [])
    return argv


def features_argv(site, t: Target, oid: str) -> list[str]:
    return (["az", "connectedk8s", "enable-features", "-n", t.cluster, "-g", t.resource_group,
             "--custom-locations-oid", oid, "--features"] + list(site.arc.features) +
            ["--kube-config", t.kube_config] + (["--kube-context", t.kube_context] if t.kube_context else []))


def settings_differ(site, have: dict) -> list[str]:
    a = site.arc
    want = {"oidcIssuer": a.oidc_issuer, "workloadIdentity": a.workload_identity,
            "agentAutoUpgrade": "Enabled" if a.auto_upgrade else "Disabled",
            "gateway": (a.gateway_resource_id or "").lower() or None}
    return [f"{k} {have.get(k)!r} -> {v!r}" for k, v in want.items() if have.get(k) != v]


def connected_cluster_body(site, t: Target, public_key_b64: str = "<generated at apply>") -> dict:
    a = site.arc
    props: dict = {"agentPublicKeyCertificate": public_key_b64, "distribution": a.distribution,
                   "infrastructure": a.infrastructure,
                   "oidcIssuerProfile": {"enabled": a.oidc_issuer},
                   "securityProfile": {"workloadIdentity": {"enabled": a.workload_identity}},
                   "arcAgentProfile": {"agentAutoUpgrade": "Enabled" if a.auto_upgrade else "Disabled"}}
    if a.gateway_resource_id:
        props["gateway"] = {"enabled": True, "resourceId": a.gateway_resource_id}
    return {"location": t.location, "identity": {"type": "SystemAssigned"}, "properties": props}


def is_connected(live_state: dict, level: str) -> bool:
    return ((live_state.get("clusters") or {}).get(level) or {}).get("connectivityStatus") == "Connected"


class AzRequests:
    """What each step runs with the az executor: the az command lines on the jump box."""

    def __init__(self, site, oid: str):
        self.site, self.oid = site, oid

    def register(self, ns: str) -> str:
        return shlex.join(["az", "provider", "register", "-n", ns])

    def group(self) -> str:
        a = self.site.azure
        return shlex.join(["az", "group", "create", "-l", a.location, "-g", a.resource_group])

    def connect(self, t, cid: str) -> str:
        return shlex.join(connect_argv(self.site, t, self.oid))

    def not_connected(self, t, status: str, connect: str) -> Step:
        # `az connectedk8s connect` refuses an existing resource; deleting it is the operator's decision
        delete = ["az", "connectedk8s", "delete", "-n", t.cluster, "-g", t.resource_group, "--kube-config",
                  t.kube_config] + (["--kube-context", t.kube_context] if t.kube_context else []) + ["-y"]
        return Step(t.level, "reconnect cluster (manual)", t.cluster, shlex.join(delete),
                    reason=f"exists but {status}: fix what keeps its agents from Azure (see the verify "
                    "hint), or delete it with the command shown and plan again to connect it anew")

    def update(self, t, cid: str, diff: list[str]) -> Step:
        return Step(t.level, "update cluster settings", t.cluster, shlex.join(update_argv(self.site, t)),
                    reason="Connected; settings differ: " + ", ".join(diff))

    def features(self, t) -> str:
        return shlex.join(features_argv(self.site, t, self.oid))


class SdkRequests:
    """What each step sends with the sdk executor: the ARM requests."""

    def __init__(self, site, oid: str):
        self.site = site
        self.sub = site.azure.subscription_id or "<subscription>"

    def register(self, ns: str) -> str:
        return f"POST /subscriptions/{self.sub}/providers/{ns}/register"

    def group(self) -> str:
        a = self.site.azure
        return f"PUT /subscriptions/{self.sub}/resourcegroups/{a.resource_group} {json.dumps({'location': a.location})}"

    def connect(self, t, cid: str) -> str:
        return f"PUT {cid} {json.dumps(connected_cluster_body(self.site, t), sort_keys=True)}"

    def not_connected(self, t, status: str, connect: str) -> Step:
        return Step(t.level, "connect cluster", t.cluster, connect, reason=f"exists but {status}: onboarding runs again")

    def update(self, t, cid: str, diff: list[str]) -> Step:
        body = connected_cluster_body(self.site, t, "<the cluster's current key>")
        return Step(t.level, "update cluster settings", t.cluster, f"PUT {cid} {json.dumps(body, sort_keys=True)}",
                    reason="Connected; settings differ: " + ", ".join(diff) + " (the agents' key is kept)")

    def features(self, t) -> str:
        return "agent settings: no ARM call (the agents enable them)"


REQUESTS = {"az": AzRequests, "sdk": SdkRequests}     # arc.executor -> what its steps run


def build_steps(site, live_state: dict, oid: str, executor: str, nodes: Optional[dict] = None) -> list[Step]:
    """The ordered steps: a change where the live state differs from the site, a skip with the reason where not."""
    req = REQUESTS[executor](site, oid)
    sub = site.azure.subscription_id or "<subscription>"
    rg = site.azure.resource_group
    steps: list[Step] = []
    for ns in site.arc.providers:
        state = live_state["providers"].get(ns, "NotRegistered")
        steps.append(Step("site", "register provider", ns, req.register(ns), skip=state == "Registered",
                          reason="Registered" if state == "Registered" else f"registration state {state}"))
    steps.append(Step("site", "create resource group", rg, req.group(),
                      skip=bool(live_state["group"]), reason="exists" if live_state["group"] else "missing"))
    for t in targets(site):
        have = live_state["clusters"].get(t.level)
        if nodes is not None and is_connected(live_state, t.level):
            steps.append(Step(t.level, "check node settings", f"nodes of {t.kube_context or t.level}", "", skip=True,
                              reason="cluster Connected: its agents run, node settings not read again"))
        elif nodes is not None:
            steps.append(preflight_step(t, nodes.get(t.level)))
        cid = rid(sub, rg, "Microsoft.Kubernetes", "connectedClusters", t.cluster)
        connect = req.connect(t, cid)
        diff = settings_differ(site, have) if have else []
        status = (have or {}).get("connectivityStatus")
        if have is None:
            steps.append(Step(t.level, "connect cluster", t.cluster, connect, reason="not connected to Arc yet"))
        elif status != "Connected":
            steps.append(req.not_connected(t, status, connect))
        elif diff:
            steps.append(req.update(t, cid, diff))
        else:
            steps.append(Step(t.level, "connect cluster", t.cluster, connect, skip=True,
                              reason=f"Connected with the same settings ({have.get('provisioningState')})"))
        feats = live_state["features"].get(t.level)
        missing = [f for f in site.arc.features if f not in (feats or [])]
        fdetail = req.features(t)
        if have is not None and status == "Connected" and feats is not None and not missing:
            steps.append(Step(t.level, "enable features", t.cluster, fdetail, skip=True,
                              reason="enabled: " + ", ".join(site.arc.features)))
        elif site.arc.features:
            why = ("after connect" if have is None or status != "Connected" else
                   "not readable (helm values): enable-features is idempotent" if feats is None else
                   "missing: " + ", ".join(missing))
            steps.append(Step(t.level, "enable features", t.cluster, fdetail, reason=why))
    return steps


# ----------------------------------------------------------------------------------------------- executors
Progress = Callable[[str], None]


class AzExecutor:
    """Runs each change's command line exactly as the plan shows it."""
    name = "az"

    def __init__(self, runner: Runner, echo: Optional[Callable[[str], None]] = None):
        self.runner, self.echo = runner, echo

    def run(self, step: Step) -> dict:
        if step.action.endswith("(manual)"):
            raise StageFailed(f"{step.level}: {step.reason}. On each node of {step.target} run: {step.detail}")
        argv = shlex.split(step.detail)
        final = CONNECT_FINAL if step.action == "connect cluster" else None
        echo = (lambda line: self.echo(f"  {step.level} | {line}")) if self.echo else None
        res = self.runner.run(argv, name=f"{step.level}-{step.action}", final=final, echo=echo)
        return {"rc": res.rc, "attempts": res.attempts, "seconds": res.seconds,
                "retried_for": ", ".join(res.retried_for), "ok": res.ok, "output": res.tail(3)}


class SdkExecutor:
    """Makes the ARM calls of the same steps through the SDK. The cluster's RSA key pair is generated here; the
    private key stays in memory (`keys`), handed to whatever installs the agents (the lab's agent stand-in)."""
    name = "sdk"

    def __init__(self, site, arm: Arm, key_size: int = 4096, on_connected: Optional[Callable] = None,
                 on_features: Optional[Callable[[str, list], str]] = None):
        """`on_connected(level, cluster_id, key_pem)`: installs the cluster's agents with their private key once
        the resource exists (the lab starts its agent stand-in; `az connectedk8s connect` does it with helm on a
        real site). `on_features(level, features)`: enables agent features (None: this executor cannot)."""
        self.site, self.arm, self.key_size, self.on_connected = site, arm, key_size, on_connected
        self.on_features = on_features
        self.keys: dict[str, Any] = {}
        self._res = None

    @property
    def res(self):
        self._res = self._res or self.arm.resources()
        return self._res

    def run(self, step: Step) -> dict:
        t0 = time.monotonic()
        if step.action.endswith("(manual)"):
            raise StageFailed(f"{step.level}: {step.reason}. On each node of {step.target} run: {step.detail}")
        if step.action == "register provider":
            self.res.providers.register(step.target)
        elif step.action == "create resource group":
            self.res.resource_groups.create_or_update(step.target, {"location": self.site.azure.location})
        elif step.action == "connect cluster":
            t = next(x for x in targets(self.site) if x.level == step.level)
            key, pub = new_agent_key(self.key_size)
            self.keys[t.level] = key
            body = connected_cluster_body(self.site, t, pub)
            poller = self.arm.connected_kubernetes().connected_cluster.begin_create_or_replace(
                t.resource_group, t.cluster, body)
            created = as_dict(poller.result())
            if self.on_connected is not None:
                cluster_id = created.get("id") or rid(self.arm.subscription_id, t.resource_group,
                                                      "Microsoft.Kubernetes", "connectedClusters", t.cluster)
                done = self.on_connected(t.level, cluster_id, private_pem(key))
                return {"rc": 0, "attempts": 1, "seconds": round(time.monotonic() - t0, 3), "retried_for": "",
                        "ok": True, "output": done or ""}
        elif step.action == "update cluster settings":
            t = next(x for x in targets(self.site) if x.level == step.level)
            ck = self.arm.connected_kubernetes().connected_cluster
            have = as_dict(ck.get(t.resource_group, t.cluster))
            key = pick(have, "properties", "agentPublicKeyCertificate")
            if not key:
                raise StageFailed(f"{step.level}: {t.cluster} reports no agent public key; connect it again instead")
            ck.begin_create_or_replace(t.resource_group, t.cluster,
                                       connected_cluster_body(self.site, t, key)).result()
        elif step.action == "enable features":
            if self.on_features is None:
                raise StageFailed(f"{step.level}: agent features ({', '.join(self.site.arc.features)}) are agent "
                                  "settings, not ARM resources: the sdk executor cannot enable them here; use "
                                  "arc.executor: az (az connectedk8s enable-features)")
            note = self.on_features(step.level, list(self.site.arc.features))
            return {"rc": 0, "attempts": 1, "seconds": round(time.monotonic() - t0, 3), "retried_for": "",
                    "ok": True, "output": note or ""}
        else:
            raise StageFailed(f"the sdk executor has no ARM call for step {step.action!r}")
        return {"rc": 0, "attempts": 1, "seconds": round(time.monotonic() - t0, 3), "retried_for": "", "ok": True,
                "output": ""}


def private_pem(key) -> bytes:
    """The agents' private key as unencrypted PKCS#8 PEM (handed to what installs them, never logged)."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_agent_key(key_size: int = 4096):
    """An RSA key pair; the public half as agentPublicKeyCertificate: base64 of the PKCS#1 RSAPublicKey DER."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return key, base64.b64encode(der).decode()


# ----------------------------------------------------------------------------------------------- verify
def poll_connected(site, arm: Arm, refused: Optional[dict[str, list[str]]] = None, interval: float = 10.0,
                   timeouts: Optional[dict[str, float]] = None, sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic, progress: Optional[Progress] = None) -> list[dict]:
    """Poll every Arc-enabled level's connected cluster until Connected or its timeout (the site's onboarding
    timeout unless `timeouts` says otherwise). Returns evidence rows."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    client = arm.connected_kubernetes()
    tgts = targets(site)
    start = clock()
    limit = {t.level: (timeouts or {}).get(t.level, t.timeout) for t in tgts}
    last: dict[str, Optional[dict]] = {t.level: None for t in tgts}
    errors: dict[str, str] = {}
    pending = [t for t in tgts]
    while pending:
        for t in list(pending):
            try:
                last[t.level] = as_dict(client.connected_cluster.get(t.resource_group, t.cluster))
                errors.pop(t.level, None)
            except ResourceNotFoundError:
                last[t.level], errors[t.level] = None, "the connected cluster does not exist in ARM"
            except HttpResponseError as exc:
                errors[t.level] = f"ARM answered {exc.status_code}: {getattr(exc, 'message', exc)}"
            status = pick(last[t.level] or {}, "properties", "connectivityStatus")
            if status == "Connected":
                pending.remove(t)
                if progress:
                    progress(f"{t.level}: {t.cluster} Connected after {clock() - start:.0f} s")
            elif clock() - start >= limit[t.level]:
                pending.remove(t)
                if progress:
                    progress(f"{t.level}: {t.cluster} still {status or 'absent'} after {limit[t.level]} s")
        if pending:
            sleep(interval)
    rows = []
    for t in tgts:
        rows += cluster_rows(t, last[t.level], errors.get(t.level), (refused or {}).get(t.level, []), limit[t.level])
    return rows


def cluster_rows(t: Target, raw: Optional[dict], error: Optional[str], refused: list[str], waited: float) -> list[dict]:
    p = (raw or {}).get("properties") or {}
    status = p.get("connectivityStatus") or ("absent" if raw is None else "unknown")
    ok = status == "Connected"
    hint = failure_hint(t, status, error, refused, waited, str(p.get("lastConnectivityTime") or ""))
    version = p.get("agentVersion") or ""
    seen = p.get("lastConnectivityTime") or ""
    return [
        evidence(t.level, "connectivity status", "Connected", status, ok, hint),
        evidence(t.level, "provisioning state", "Succeeded", p.get("provisioningState") or "",
                 p.get("provisioningState") == "Succeeded", hint),
        evidence(t.level, "agent version", "reported", version or "(none)", bool(version), hint),
        evidence(t.level, "last connectivity time", "reported", str(seen) or "(none)", bool(seen), hint),
    ]


def failure_hint(t: Target, status: str, error: Optional[str], refused: list[str], waited: float,
                 last_seen: str = "") -> str:
    """What to look at when a level is not Connected: depends on how far onboarding got."""
    parts = [f"{t.cluster} is {status} after {waited:.0f} s"]
    if error:
        parts.append(error)
    if status == "Offline":
        parts.append(f"the agents stopped reaching Azure{' (last seen ' + last_seen + ')' if last_seen else ''}: "
                     f"check every proxy on the chain from {t.level} up to the egress level, and the agents "
                     "(kubectl get pods -n azure-arc)")
    elif status == "Expired":
        parts.append("offline too long, the agents' certificate expired: delete the connected cluster and connect again")
    elif status == "absent":
        parts.append("run the stage's plan and apply: the connect step did not create it")
    else:
        parts.append(f"look at the pre-onboarding check logs in {PRE_ONBOARDING_LOGS}/{t.cluster}-* on the jump box")
    if refused:
        parts.append(f"the proxies refused at {t.level}: {', '.join(sorted(set(refused)))} (add them to the allow list "
                     "or stop dropping them)")
    else:
        parts.append(f"no refused host seen at {t.level} in the audit window: check the agents in namespace "
                     "azure-arc (kubectl get pods -n azure-arc)")
    return "; ".join(parts)
