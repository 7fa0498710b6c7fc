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

from layernet import context
from layernet.azure import aio as az_aio, aio_sdk
from layernet.azure.clients import Arm, arm_for
from layernet.azure.runner import Runner
from layernet.errors import InputError, StageFailed
from layernet.plan import Plan, Progress, fingerprint, refuse_drift
from layernet.context import elsewhere, runs_here
from layernet.stages.base import apply_unless_dry, run_link, progress_printer
from layernet.stages.base import picture as base_picture
from layernet.stages import roles
# the window and the proxies' evidence, shared by every stage (the notebook calls them through this module)
from layernet.evidence import failed  # noqa: F401
from layernet.stages.base import applied_table, begin, crossings, refused_hosts, verify_table  # noqa: F401

STAGE = "aio"


def _template_dir(run_dir: Optional[Path]) -> Path:
    return (Path(run_dir) / STAGE / "templates") if run_dir else Path(tempfile.mkdtemp(prefix="layernet-aio-"))


def plan(site, run_dir: Optional[Path] = None, runner: Optional[Runner] = None, arm: Optional[Arm] = None,
         executor: Optional[str] = None, verify_fetch: Any = True) -> Plan:
    """Read the live state and list every step in order (changes and skips with reasons). Changes nothing.
    `site`: a Context or a Site."""
    ctx = context.of(site)
    return way(executor or ctx.site.aio.executor).plan(ctx, run_dir, runner, arm, verify_fetch)


def save_bodies(bodies: dict, folder: Path) -> list[Path]:
    """Each deployment's exact request body (template and parameters; no secrets) as <name>.json."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, body in bodies.items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        out.append(path)
    return out


def apply(plan: Plan, site, run_dir: Optional[Path] = None, runner: Optional[Runner] = None,
          arm: Optional[Arm] = None, progress: Optional[Progress] = None) -> list[dict]:
    """Run exactly the plan's changes in order; refuse when the live state drifted since the plan."""
    progress = progress or progress_printer("▸ aio ")
    return way(plan.executor).apply(plan, context.of(site), run_dir, runner, arm, progress)


def _run_steps(executor: Any, changes: list, progress: Progress, record: Optional[Path]) -> list[dict]:
    """Each change through `executor.run`, in order; the first failure stops the stage naming the step."""
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


# ---- the executors (site field `aio.executor`): one protocol (plan, apply), chosen from EXECUTORS
class AzWay:
    """The az CLI on the jump box (`az iot ops ...`), the release's enablement templates read first."""

    enablement = None          # verify reads the release's enablement extension types from the cluster's own

    def plan(self, ctx, run_dir, runner, arm, verify_fetch) -> Plan:
        site = ctx.site
        live = az_aio.AzLive(runner or Runner())
        state = az_aio.observe_az(site, live, az_aio.release_enablement(site, _template_dir(run_dir), verify_fetch))
        return Plan(STAGE, az_aio.az_steps(site, state), observed=fingerprint(state), executor="az",
                    context={"state": state})

    def apply(self, plan: Plan, ctx, run_dir, runner, arm, progress) -> list[dict]:
        record = Path(run_dir) / STAGE if run_dir else None
        if runner is None:
            runner = Runner(record_dir=record)
        elif record and runner.record_dir is None:
            runner.record_dir = record
        enablement = (plan.context.get("state") or {}).get("enablement")
        refuse_drift(plan, az_aio.observe_az(ctx.site, az_aio.AzLive(runner),
                                             tuple(enablement) if enablement is not None else None))
        return _run_steps(az_aio.AzExecutor(ctx.site, runner, echo=progress), plan.changes, progress, record)


class ArmWay:
    """Template deployments through azure-mgmt-resource-deployments, what-if as the plan (the release's templates
    kept in RUN/aio/templates/)."""

    enablement = None

    def plan(self, ctx, run_dir, runner, arm, verify_fetch) -> Plan:
        deployer = az_aio.ArmDeployments(ctx.site, arm or arm_for(ctx.site), _template_dir(run_dir), verify_fetch)
        steps, observed = deployer.plan_steps()
        if run_dir:
            save_bodies(deployer.bodies, Path(run_dir) / STAGE / "deployments")
        # the plan stays JSON: apply (maybe in another process) deploys exactly these bodies
        return Plan(STAGE, steps, observed=fingerprint(observed), executor="arm",
                    context={"bodies": deployer.bodies, "pending": deployer.pending,
                             "templates": dict(deployer.templates), "what_if": observed})

    def apply(self, plan: Plan, ctx, run_dir, runner, arm, progress) -> list[dict]:
        record = Path(run_dir) / STAGE if run_dir else None
        executor = az_aio.ArmDeployments(ctx.site, arm or arm_for(ctx.site), _template_dir(run_dir))
        executor.bodies = dict(plan.context["bodies"])
        executor.pending = dict(plan.context.get("pending") or {})
        executor.save_dir = (Path(run_dir) / STAGE / "deployments") if run_dir else None
        now = {}
        for step in plan.steps:
            body = executor.bodies[step.target]
            now[step.target] = ("pending" if step.target in executor.pending
                                else executor.what_if(step.target, body)[1])
        refuse_drift(plan, now)
        return _run_steps(executor, plan.changes, progress, record)


class SdkWay:
    """Each resource PUT through the SDK clients, where the site's Azure calls run; the cluster side installs what
    ARM accepted (a plant's extension manager and operator do it on their own)."""

    enablement = aio_sdk.ENABLEMENT_TYPES     # the extension types this executor PUTs itself

    def plan(self, ctx, run_dir, runner, arm, verify_fetch) -> Plan:
        if not runs_here(arm):
            return elsewhere(ctx, plan)
        state = _sdk_state(ctx, arm)
        return Plan(STAGE, aio_sdk.steps(ctx.site, arm, state), observed=fingerprint(state), executor="sdk")

    def apply(self, plan: Plan, ctx, run_dir, runner, arm, progress) -> list[dict]:
        if not runs_here(arm):
            return elsewhere(ctx, apply, progress=progress, plan=plan, run_dir=str(run_dir) if run_dir else None)
        refuse_drift(plan, _sdk_state(ctx, arm))
        cluster = ctx.cluster
        executor = aio_sdk.SdkExecutor(ctx.site, arm, on_extension=cluster.install_aio_extension,
                                       on_listeners=cluster.aio_listeners,
                                       record=Path(run_dir) / STAGE if run_dir else None)
        rows = executor.run_all(plan.changes, progress)
        if not plan.changes:
            progress("nothing to change: every level is already in the desired state")
        bad: dict[str, dict] = {}
        for r in rows:
            if not r["ok"] and r["attempts"]:
                bad.setdefault(r["level"], r)
        if bad:
            where = f" Requests and answers: {Path(run_dir) / STAGE / 'resources'}." if run_dir else ""
            raise StageFailed("; ".join(f"{lvl}: {r['action']} {r['target']} failed: {r['output']}"
                                        for lvl, r in bad.items()) + "." + where)
        return rows


EXECUTORS = {"az": AzWay(), "arm": ArmWay(), "sdk": SdkWay()}


def way(name: str):
    try:
        return EXECUTORS[name]
    except KeyError:
        raise InputError(f"site field aio.executor is {name!r}: use {' or '.join(EXECUTORS)}") from None


def verify(site, arm: Optional[Arm] = None, refused: Optional[dict[str, list[str]]] = None, timeout: float = 0,
           interval: float = 10, progress: Optional[Progress] = None, kube: Any = None, **kw) -> list[dict]:
    """Evidence rows per level: provisioning states of the instance, broker, listeners, dataflow profile and
    endpoint, and the install state of the AIO extensions (same code for a real site and the lab). Where the
    cluster side reads the clusters (a plant) also the cluster's view: pods Ready and the broker's services.
    `kube`: a callable level -> kube Api (default: the cluster side's reader)."""
    ctx = context.of(site)
    site = ctx.site
    if not runs_here(arm, kube, kw):
        return elsewhere(ctx, verify, progress=progress, refused=refused, timeout=timeout,
                         interval=min(interval, ctx.azure.poll_interval), enablement=way(site.aio.executor).enablement)
    rows = az_aio.verify_aio(site, arm or arm_for(site), refused=refused, timeout=timeout, interval=interval,
                             progress=progress or progress_printer("▸ aio "), **kw)
    if kube is None:
        kube = ctx.cluster.reader
    if kube is not None:
        extra = az_aio.kube_rows(site, kube, refused)
        order = {lv.name: i for i, lv in enumerate(site.chain)}
        rows = sorted(rows + extra, key=lambda r: order.get(r["level"], 99))
    return rows


def _sdk_state(ctx, arm: Arm) -> dict:
    """ARM's view, and where the cluster side can tell, whether each level's cluster runs its extensions."""
    state = aio_sdk.observe(ctx.site, arm)
    running = {r.level: ctx.cluster.aio_extension_running(r.level) for r in az_aio.levels(ctx.site)}
    state["running"] = {lvl: up for lvl, up in running.items() if up is not None}
    return state


# ---- what the notebook calls (one call per cell; dry runs plan only)
def run(plan: Plan, site, run_dir: str = "", dry_run: bool = False) -> list[dict]:
    """Apply the reviewed plan (nothing in a dry run)."""
    return apply_unless_dry(apply, plan, site, run_dir, dry_run)


def broker_listeners(site) -> dict[str, list[tuple[str, int, bool]]]:
    """{level: [(listener, port, tls, authenticated)]} the site asks for (`azure.aio.listener_ports`)."""
    return {r.level: az_aio.listener_ports(r) for r in az_aio.levels(site)}


def check(site, since=None, dry_run: bool = False) -> list[dict]:
    """Verify every level (ARM states, extension install states) and, where the target can, each level's broker
    answering MQTT on its listeners; a failing level's hint also names what the proxies refused during the stage."""
    if dry_run:
        print("dry run: nothing verified")
        return []
    ctx = context.of(site)
    site = ctx.site
    mqtt = ctx.cluster.aio_broker_rows(broker_listeners(site))
    rows = roles.checked(ctx, verify(ctx) + mqtt, "aio-extensions")
    if all(r["ok"] for r in rows):
        return rows
    refused: dict[str, list[str]] = {}                 # by the level the connection came from
    for at, hosts in refused_hosts(ctx, since).items():
        for h in hosts:
            src = h.rsplit("(from ", 1)[-1].rstrip(")") if "(from " in h else at
            refused.setdefault(src, []).append(f"{h.split(' (from ')[0]} (refused at {at})")
    # the hints name what the proxies refused in the window
    rows = roles.checked(ctx, verify(ctx, refused=refused) + mqtt, "aio-extensions")
    notes = {lvl: ctx.cluster.aio_note(lvl) for lvl in {r["level"] for r in rows if not r["ok"]}}
    for r in rows:
        note = notes.get(r["level"])
        if not r["ok"] and note and (r["check"].startswith(("extension", "mqtt", "instance"))) and note not in r["hint"]:
            r["hint"] = f"{r['hint']}; {note}"
    return rows




def extension_hosts(site) -> list[str]:
    """The hosts the AIO extensions use from inside a level: MCR, its data host, the configuration data plane."""
    r = site.azure.location.lower()
    return ["mcr.microsoft.com", f"{r}.data.mcr.microsoft.com", f"{r}.dp.kubernetesconfiguration.azure.com"]


def picture(site, df):
    """Which extension calls crossed which hops (an SVG for the report)."""
    site = context.site_of(site)
    return base_picture(site, df, "AIO extensions: image pulls and status reports per hop during the stage", hosts=extension_hosts(site))


def resource_table(plan: Plan, applied: list[dict], run_dir: str = ""):
    """One row per resource of every level: planned change or skip, outcome, seconds, and a link to the request and
    answer kept in the run folder (aio/resources/<level>/...json)."""
    import pandas as pd

    done = {(r["level"], r["action"], r["target"]): r for r in applied}
    rows = []
    for s in plan.steps:
        r = done.get((s.level, s.action, s.target))
        link = run_link((r or {}).get("file", ""), run_dir)
        rows.append({"level": s.level, "resource": s.action, "name": s.target,
                     "plan": "skip" if s.skip else "change",
                     "state": (r or {}).get("state") or ("unchanged" if s.skip else "not run"),
                     "ok": (r or {}).get("ok", s.skip), "seconds": (r or {}).get("seconds"),
                     "note": (r or {}).get("output", "") or (s.reason if s.skip else ""), "json": link})
    return pd.DataFrame(rows, columns=["level", "resource", "name", "plan", "state", "ok", "seconds", "note", "json"])


def results(plan: Plan, applied: list[dict], rows: list[dict]) -> dict:
    return {"planned_changes": len(plan.changes), "skipped": len(plan.steps) - len(plan.changes),
            "applied": len(applied), "step_seconds_total": round(sum(r.get("seconds") or 0 for r in applied), 3),
            "checks": len(rows), "passed": sum(1 for r in rows if r["ok"]),
            "failed": [f"{r['level']}: {r['check']} {r['observed']}" for r in rows if not r["ok"]]}


def require_deployed(rows: list[dict], dry_run: bool = False) -> str:
    """The stage's verdict line; raises StageFailed (the first failing check's hint) when a level is not deployed."""
    if dry_run:
        return "dry run: plan shown, nothing applied or verified"
    msg = failed(rows)
    if msg:
        raise StageFailed(msg)
    levels_ok = sorted({r["level"] for r in rows})
    return f"Azure IoT Operations deployed on {len(levels_ok)} level(s): {', '.join(levels_ok)}; every check passed"
