"""Lab services that later stages start inside a level (Arc agents, the AIO extension's broker, dataflows...).

They run like the level's Envoy and DNS: a process in the level's namespace (so `ip netns exec` gives it the
level's resolv.conf and firewall), output in the level's state folder. They are recorded in their own table
(`<state>/stage-procs.json`), apart from the infrastructure services that `lab up` starts, so a stopped stage
service never makes the infrastructure stage rebuild the lab; `lab down` stops them with everything else in the
lab's namespaces and forgets them (`clear`), and `lab status` lists them.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

from layernet.lab import LabError, arcagent, procs, state_dir
from layernet.lab import layout


def _table_path(site) -> Path:
    return state_dir(site) / "stage-procs.json"


def table(site) -> dict[str, procs.Proc]:
    return procs.load(_table_path(site))


def start(site, name: str, level: str, argv: list[str], log: Path, env: Optional[dict] = None) -> procs.Proc:
    """(Re)start the stage service `name` ("<level>/<service>") in `level`'s namespace (`env`: its whole
    environment, default this process's)."""
    t = table(site)
    old = t.get(name)
    if old is not None and procs.alive(old):
        procs.stop([old])
    log.parent.mkdir(parents=True, exist_ok=True)
    p = procs.start(name, layout.namespace(site, level), argv, log, env=env)
    t[name] = p
    procs.save(_table_path(site), t)
    return p


def stop(site, name: str) -> bool:
    t = table(site)
    p = t.pop(name, None)
    if p is not None:
        procs.stop([p])
    procs.save(_table_path(site), t)
    return p is not None


def clear(site) -> list[int]:
    """Stop every recorded stage service and drop the table (`lab down` and `lab up` call this): a lab built
    afterwards starts with no stage services, so `lab status` never lists those of an earlier run. Returns the
    PIDs stopped."""
    stopped = procs.stop(table(site).values())
    _table_path(site).unlink(missing_ok=True)
    return stopped


def rows(site) -> list[dict]:
    """For `lab status`: every stage service, its pid and whether it runs."""
    return [{"service": name, "pid": p.pid, "running": procs.alive(p)} for name, p in sorted(table(site).items())]


# ----------------------------------------------------------------------------------------------- Arc agents
def start_arc_agent(site, level: str, cluster_id: str, interval: float = 2.0) -> str:
    d = layout.level_dir(site, level)
    d.mkdir(parents=True, exist_ok=True)
    cfg = arcagent.config(site, level, cluster_id, str(layout.ca_cert_path(site)), d, interval=interval)
    cfg_path = d / arcagent.CONFIG_FILE
    cfg_path.write_text(json.dumps(cfg, indent=1))
    (d / arcagent.STATUS_FILE).unlink(missing_ok=True)
    p = start(site, f"{level}/arc-agent", level, [sys.executable, "-m", "layernet.lab.arcagent", str(cfg_path)],
              d / "arc-agent.out")
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


__all__ = ["LabError", "start", "stop", "clear", "rows", "start_arc_agent", "arc_agent_status", "wait_for"]
