"""Lab services that later stages start inside a level (Arc agents, the AIO extension's broker, dataflows...).

They are installed the way the real things install: a Deployment in the level's cluster,
the Arc agents in ``azure-arc`` and the AIO extension, connector, dataflows and simulator in the AIO namespace, each
with the image of what it stands in for, pulled through the level's chain by the node, which runs it as a pod (a
process in the level's namespace, output in the pod's folder). What a service needs in its environment beyond the
node's (a connection string) is a Secret its pod reads. `table` reads them back from the clusters (a service is
its running pod's process), `stop` deletes the Deployment and waits for its pod to go. `lab down` stops them with
their clusters and `lab status` lists them.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

from layernet.lab import LabError, arcagent, procs
from layernet.lab import layout, podfiles
from layernet.lab.clusters import admin
from layernet.render.manifests import pull_policy
from layernet.site.aio import AIO_NAMESPACE

MANAGER = "layernet-lab"
LABEL = "layernet/stage-service"
STARTED_WITHIN = 60.0
# service (the part of its name after the level) -> (namespace, the image of what it stands in for)
PLACES = {
    "arc-agent": ("azure-arc", "mcr.microsoft.com/azurearck8s/agent/clusterconnect-agent:1.27.0"),
    "aio-extension": (AIO_NAMESPACE, "mcr.microsoft.com/azureiotoperations/aio-operator:1.2.36"),
    "telemetry-opcplc": (AIO_NAMESPACE, "mcr.microsoft.com/iotedge/opc-plc:2.12.29"),
    "telemetry-connector": (AIO_NAMESPACE, "mcr.microsoft.com/azureiotoperations/akri-connectors/opc-ua:1.2.36"),
    "telemetry-dataflow": (AIO_NAMESPACE, "mcr.microsoft.com/azureiotoperations/dataflow:1.2.36"),
}


def _place(name: str) -> tuple[str, str, str]:
    """(level, service, namespace, image) of "<level>/<service>"."""
    level, _, short = name.partition("/")
    if short not in PLACES:
        raise LabError(f"no cluster placement for the lab service {name!r}: add it to lab/services.py PLACES")
    return (level, short) + PLACES[short]


def _objects(site, level: str, short: str, ns: str, image: str, argv: list[str], env: dict) -> list[dict]:
    labels = {"app.kubernetes.io/name": short, "app.kubernetes.io/managed-by": MANAGER, LABEL: short,
              "layernet/level": level}
    command = ["python3"] + list(argv[1:]) if argv and argv[0] == sys.executable else list(argv)
    container = {"name": short, "image": image, "imagePullPolicy": pull_policy(site, site.level(level)),
                 "command": command}
    out = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}]
    if env:
        out.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": f"{short}-env", "namespace": ns, "labels": labels}, "stringData": env})
        container["envFrom"] = [{"secretRef": {"name": f"{short}-env"}}]
    out.append({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": short, "namespace": ns, "labels": labels},
                "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": {LABEL: short}},
                         "template": {"metadata": {"labels": labels},
                                      "spec": {"containers": [container], "terminationGracePeriodSeconds": 5}}}})
    return out


def _pod_proc(site, level: str, short: str, pod: dict) -> Optional[procs.Proc]:
    """The running pod's process as a Proc (its log is the pod's container log on the node)."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if "running" in (cs.get("state") or {}) and cs.get("containerID", "").startswith("layernet://"):
            pid = int(cs["containerID"].split("//", 1)[1])
            log = podfiles.container_log(site, level, pod, cs["name"])
            return procs.running(f"{level}/{short}", layout.namespace(site, level), pid, str(log))
    return None


def _cluster_table(site) -> dict[str, procs.Proc]:
    out: dict[str, procs.Proc] = {}
    for lv in site.levels:
        try:
            pods = (admin.get(site, lv.name, "/api/v1/pods", {"labelSelector": LABEL}) or {}).get("items") or []
        except Exception:     # noqa: BLE001 - a level whose API does not answer has no services to list
            continue
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            short = pod["metadata"]["labels"][LABEL]
            p = _pod_proc(site, lv.name, short, pod)
            out[f"{lv.name}/{short}"] = p or procs.Proc(f"{lv.name}/{short}", layout.namespace(site, lv.name), 0, 0,
                                                        [], "")
    return out


def table(site) -> dict[str, procs.Proc]:
    """Every stage service by name: its running pod's process (pid 0: its pod is not running)."""
    return _cluster_table(site)


def start(site, name: str, level: str, argv: list[str], env: Optional[dict] = None,
          wait: bool = True) -> Optional[procs.Proc]:
    """(Re)start the stage service `name` ("<level>/<service>") in `level` (`env`: its whole environment, default
    this process's): its Deployment, replaced, and (with `wait`) the pod's process once it runs (without `wait`
    None, see `wait_started`); what `env` holds beyond this process's environment goes in a Secret."""
    _, short, ns, image = _place(name)
    stop(site, name)
    extra = {k: v for k, v in (env or {}).items() if os.environ.get(k) != v}
    admin.apply(site, level, _objects(site, level, short, ns, image, argv, extra), MANAGER)
    return wait_started(site, name) if wait else None


def wait_started(site, name: str, timeout: float = STARTED_WITHIN) -> procs.Proc:
    """The process of the stage service's pod once it runs."""
    level, short, ns, _ = _place(name)
    deadline = time.monotonic() + timeout
    while True:
        pods = (admin.get(site, level, f"/api/v1/namespaces/{ns}/pods", {"labelSelector": f"{LABEL}={short}"})
                or {}).get("items") or []
        for pod in pods:
            p = None if pod["metadata"].get("deletionTimestamp") else _pod_proc(site, level, short, pod)
            if p is not None:
                return p
        if time.monotonic() > deadline:
            why = "; ".join(json.dumps((x.get("status") or {}).get("containerStatuses") or x.get("status"))[:300]
                            for x in pods) or "no pod"
            raise LabError(f"{name}: its pod did not start within {timeout:g} s ({why})")
        time.sleep(0.1)


def stop(site, name: str, wait: bool = True) -> bool:
    """Stop the stage service: delete its Deployment and Secret (with `wait`, until its pod is gone)."""
    level, short, ns, _ = _place(name)
    gone = admin.delete(site, level, f"/apis/apps/v1/namespaces/{ns}/deployments/{short}", wait=0 if not wait else 30.0)
    admin.delete(site, level, f"/api/v1/namespaces/{ns}/secrets/{short}-env", wait=0)
    if wait:
        wait_stopped(site, name)
    return gone


def wait_stopped(site, name: str, timeout: float = STARTED_WITHIN) -> None:
    """Until no pod of the stage service is left."""
    level, short, ns, _ = _place(name)
    deadline = time.monotonic() + timeout
    while (admin.get(site, level, f"/api/v1/namespaces/{ns}/pods", {"labelSelector": f"{LABEL}={short}"})
           or {}).get("items"):
        if time.monotonic() > deadline:
            raise LabError(f"{name}: its pod is still there {timeout:g} s after its Deployment was deleted")
        time.sleep(0.1)


def rows(site) -> list[dict]:
    """For `lab status`: every stage service, its pid and whether it runs."""
    return [{"service": name, "pid": p.pid, "running": bool(p.pid) and procs.alive(p)}
            for name, p in sorted(table(site).items())]


def log_path(site, name: str) -> Path:
    """Where the stage service's output is: its running pod's container log (a file in the level folder when it
    does not run)."""
    p = table(site).get(name)
    if p is not None and p.log:
        return Path(p.log)
    level, _, short = name.partition("/")
    return layout.level_dir(site, level) / f"{short}.out"


# ----------------------------------------------------------------------------------------------- Arc agents
def start_arc_agent(site, level: str, cluster_id: str, interval: float = 2.0) -> str:
    d = layout.level_dir(site, level)
    d.mkdir(parents=True, exist_ok=True)
    cfg = arcagent.config(site, level, cluster_id, str(layout.ca_cert_path(site)), d, interval=interval)
    cfg_path = d / arcagent.CONFIG_FILE
    cfg_path.write_text(json.dumps(cfg, indent=1))
    (d / arcagent.STATUS_FILE).unlink(missing_ok=True)
    p = start(site, f"{level}/arc-agent", level, [sys.executable, "-m", "layernet.lab.arcagent", str(cfg_path)])
    return f"Arc agents of {level} started (pid {p.pid}) in {layout.namespace(site, level)}"


def arc_agent_status(site, level: str) -> Optional[dict]:
    path = layout.level_dir(site, level) / arcagent.STATUS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


__all__ = ["LabError", "start", "wait_started", "stop", "wait_stopped", "rows", "log_path", "start_arc_agent", "arc_agent_status", "wait_for"]
