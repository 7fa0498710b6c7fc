"""Stage 03 · Deploy Azure IoT Operations: plan -> apply(plan) -> verify, per Arc-enabled level (egress first).

What a notebook calls:

    p = aio.plan(site, run_dir=RUN)             # desired vs live; with executor "arm" the templates are fetched
    done = aio.apply(p, site, run_dir=RUN)      # exactly p's changes, live progress, outputs in RUN/aio/
    rows = aio.verify(site, timeout=900)        # instance, broker, listeners, dataflow profile/endpoint, extensions

Executors (site field `aio.executor`): "az" (the az CLI on the jump box) or "arm" (template deployments through
azure-mgmt-resource-deployments, what-if as the plan; the release's templates are kept in RUN/aio/templates/).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

from layernet.azure import aio as az_aio
from layernet.azure.clients import Arm, arm_for
from layernet.azure.runner import Runner
from layernet.errors import InputError, StageFailed
from layernet.stages.base import Plan, Progress, evidence_table, fingerprint, progress_printer, refuse_drift

STAGE = "aio"


def _template_dir(run_dir: Optional[Path]) -> Path:
    return (Path(run_dir) / STAGE / "templates") if run_dir else Path(tempfile.mkdtemp(prefix="layernet-aio-"))


def plan(site, run_dir: Optional[Path] = None, runner: Optional[Runner] = None, arm: Optional[Arm] = None,
         executor: Optional[str] = None, verify_fetch: Any = True) -> Plan:
    """Read the live state and list every step in order (changes and skips with reasons). Changes nothing."""
    executor = executor or site.aio.executor
    if executor == "az":
        runner = runner or Runner()
        live = az_aio.AzLive(runner)
        state = az_aio.observe_az(site, live)
        steps = az_aio.az_steps(site, state)
        return Plan(STAGE, steps, observed=fingerprint(state), executor="az", context={"state": state})
    if executor == "arm":
        deployer = az_aio.ArmDeployments(site, arm or arm_for(site), _template_dir(run_dir), verify_fetch)
        steps, observed = deployer.plan_steps()
        return Plan(STAGE, steps, observed=fingerprint(observed), executor="arm",
                    context={"deployer": deployer, "templates": dict(deployer.templates), "what_if": observed})
    raise InputError(f"site field aio.executor is {executor!r}: use az or arm")


def apply(plan: Plan, site, run_dir: Optional[Path] = None, runner: Optional[Runner] = None,
          arm: Optional[Arm] = None, progress: Optional[Progress] = None) -> list[dict]:
    """Run exactly the plan's changes in order; refuse when the live state drifted since the plan."""
    progress = progress or progress_printer("▸ aio ")
    record = Path(run_dir) / STAGE if run_dir else None
    if plan.executor == "az":
        if runner is None:
            runner = Runner(record_dir=record)
        elif record and runner.record_dir is None:
            runner.record_dir = record
        refuse_drift(plan, az_aio.observe_az(site, az_aio.AzLive(runner)))
        executor: Any = az_aio.AzExecutor(site, runner, echo=progress)
    else:
        executor = plan.context["deployer"]
        now = {}
        for step in plan.steps:
            body = executor.bodies[step.target]
            now[step.target] = executor.what_if(step.target, body)[1]
        refuse_drift(plan, now)
    changes = plan.changes
    rows = []
    for i, step in enumerate(changes, 1):
        progress(f"[{i}/{len(changes)}] {step.level}: {step.action} {step.target}")
        out = executor.run(step)
        rows.append({"level": step.level, "action": step.action, "target": step.target, **out})
        if not out["ok"]:
            where = f" Outputs: {record}." if record else ""
            raise StageFailed(f"{step.level}: {step.action} {step.target} failed (exit {out['rc']}, "
                              f"{out['attempts']} attempt(s)): {out['output'] or 'no output'}.{where}")
        progress(f"[{i}/{len(changes)}] {step.level}: {step.action} done in {out['seconds']} s")
    if not changes:
        progress("nothing to change: every level is already in the desired state")
    return rows


def verify(site, arm: Optional[Arm] = None, refused: Optional[dict[str, list[str]]] = None, timeout: float = 0,
           interval: float = 10, progress: Optional[Progress] = None, kube: Any = None, **kw) -> list[dict]:
    """Evidence rows per level: provisioning states of the instance, broker, listeners, dataflow profile and
    endpoint, and the install state of the AIO extensions (same code for a real site and the lab). On a real
    site (target kube) also the cluster's view: pods Ready and the broker's services. `kube`: a callable
    level -> kube Api (default: the kube target's)."""
    rows = az_aio.verify_aio(site, arm or arm_for(site), refused=refused, timeout=timeout, interval=interval,
                             progress=progress or progress_printer("▸ aio "), **kw)
    if kube is None and site.target == "kube":
        from layernet.targets.base import get_target
        kube = get_target(site).api
    if kube is not None:
        extra = az_aio.kube_rows(site, kube, refused)
        order = {lv.name: i for i, lv in enumerate(site.chain)}
        rows = sorted(rows + extra, key=lambda r: order.get(r["level"], 99))
    return rows


def applied_table(rows: list[dict]):
    import pandas as pd
    cols = ["level", "action", "target", "ok", "rc", "attempts", "seconds", "retried_for", "output"]
    return pd.DataFrame(rows, columns=cols)


def verify_table(rows: list[dict]):
    return evidence_table(rows)


def failed(rows: list[dict]) -> Optional[str]:
    bad = [r for r in rows if not r["ok"]]
    return f"{bad[0]['level']}: {bad[0]['check']} is {bad[0]['observed']}: {bad[0]['hint']}" if bad else None
