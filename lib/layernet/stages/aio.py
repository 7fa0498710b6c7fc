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

from layernet import targets
from layernet.azure import aio as az_aio, aio_sdk
from layernet.azure.clients import Arm, arm_for
from layernet.azure.runner import Runner
from layernet.errors import InputError, StageFailed
from layernet.plan import Plan, Progress, fingerprint, refuse_drift
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
    """Read the live state and list every step in order (changes and skips with reasons). Changes nothing."""
    executor = executor or site.aio.executor
    if executor == "sdk":
        return _plan_sdk(site, arm)
    if executor == "az":
        runner = runner or Runner()
        live = az_aio.AzLive(runner)
        state = az_aio.observe_az(site, live, az_aio.release_enablement(site, _template_dir(run_dir), verify_fetch))
        steps = az_aio.az_steps(site, state)
        return Plan(STAGE, steps, observed=fingerprint(state), executor="az", context={"state": state})
    if executor == "arm":
        deployer = az_aio.ArmDeployments(site, arm or arm_for(site), _template_dir(run_dir), verify_fetch)
        steps, observed = deployer.plan_steps()
        if run_dir:
            save_bodies(deployer.bodies, Path(run_dir) / STAGE / "deployments")
        # the plan stays JSON: apply (maybe in another process) deploys exactly these bodies
        return Plan(STAGE, steps, observed=fingerprint(observed), executor="arm",
                    context={"bodies": deployer.bodies, "pending": deployer.pending, "templates": dict(deployer.templates),
                             "what_if": observed})
    raise InputError(f"site field aio.executor is {executor!r}: use az or arm")


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
    if plan.executor == "sdk":
        return _apply_sdk(plan, site, run_dir, arm, progress)
    record = Path(run_dir) / STAGE if run_dir else None
    if plan.executor == "az":
        if runner is None:
            runner = Runner(record_dir=record)
        elif record and runner.record_dir is None:
            runner.record_dir = record
        enablement = (plan.context.get("state") or {}).get("enablement")
        refuse_drift(plan, az_aio.observe_az(site, az_aio.AzLive(runner),
                                             tuple(enablement) if enablement is not None else None))
        executor: Any = az_aio.AzExecutor(site, runner, echo=progress)
    else:
        executor = az_aio.ArmDeployments(site, arm or arm_for(site), _template_dir(run_dir))
        executor.bodies = dict(plan.context["bodies"])
        executor.pending = dict(plan.context.get("pending") or {})
        executor.save_dir = (Path(run_dir) / STAGE / "deployments") if run_dir else None
        now = {}
        for step in plan.steps:
            body = executor.bodies[step.target]
            now[step.target] = ("pending" if step.target in executor.pending
                                else executor.what_if(step.target, body)[1])
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
    tgt = targets.get_target(site)
    if arm is None and not kw and tgt.azure_elsewhere:     # the lab's Azure calls run on its jump box
        return tgt.azure_call("layernet.stages.aio:_verify_remote", progress=progress, refused=refused,
                              wait=timeout, interval=min(interval, tgt.azure_poll_interval))
    rows = az_aio.verify_aio(site, arm or arm_for(site), refused=refused, timeout=timeout, interval=interval,
                             progress=progress or progress_printer("▸ aio "), **kw)
    if kube is None:
        kube = tgt.cluster_api()
    if kube is not None:
        extra = az_aio.kube_rows(site, kube, refused)
        order = {lv.name: i for i, lv in enumerate(site.chain)}
        rows = sorted(rows + extra, key=lambda r: order.get(r["level"], 99))
    return rows


# ---- the "sdk" executor: each resource PUT through the SDK clients, where the target makes its Azure calls
def _sdk_arm(site, arm: Optional[Arm]) -> Arm:
    if arm is not None:
        return arm
    return targets.get_target(site).arm()


def _plan_sdk(site, arm: Optional[Arm]) -> Plan:
    if arm is None:
        return Plan.from_dict(targets.get_target(site).azure_call("layernet.stages.aio:_plan_remote"))
    state = _sdk_state(site, arm)
    return Plan(STAGE, aio_sdk.steps(site, arm, state), observed=fingerprint(state), executor="sdk")


def _sdk_state(site, arm: Arm) -> dict:
    """ARM's view, and where the target can tell, whether each level's cluster runs its extensions."""
    state = aio_sdk.observe(site, arm)
    tgt = targets.get_target(site)
    running = {r.level: tgt.aio_extension_running(r.level) for r in az_aio.levels(site)}
    state["running"] = {lvl: up for lvl, up in running.items() if up is not None}
    return state


def _apply_sdk(plan: Plan, site, run_dir, arm: Optional[Arm], progress: Progress) -> list[dict]:
    if arm is None:
        return targets.get_target(site).azure_call("layernet.stages.aio:_apply_remote", progress=progress,
                                           plan=plan.to_dict(), run_dir=str(run_dir) if run_dir else None)
    refuse_drift(plan, _sdk_state(site, arm))
    tgt = targets.get_target(site)
    executor = aio_sdk.SdkExecutor(site, arm, on_extension=tgt.install_aio_extension, on_listeners=tgt.aio_listeners,
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


def _plan_remote(site) -> dict:
    return plan(site, arm=_sdk_arm(site, None)).to_dict()


def _apply_remote(site, plan: dict, run_dir=None) -> list[dict]:
    return apply(Plan.from_dict(plan), site, run_dir=Path(run_dir) if run_dir else None, arm=_sdk_arm(site, None))


def _verify_remote(site, refused=None, wait: float = 0, interval: float = 10.0) -> list[dict]:
    return az_aio.verify_aio(site, _sdk_arm(site, None), refused=refused, timeout=wait, interval=interval,
                             progress=progress_printer("▸ aio "), enablement=aio_sdk.ENABLEMENT_TYPES)


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
    tgt = targets.get_target(site)
    mqtt = tgt.aio_broker_rows(broker_listeners(site))
    rows = roles.checked(site, verify(site) + mqtt, "aio-extensions")
    if all(r["ok"] for r in rows):
        return rows
    refused: dict[str, list[str]] = {}                 # by the level the connection came from
    for at, hosts in refused_hosts(site, since).items():
        for h in hosts:
            src = h.rsplit("(from ", 1)[-1].rstrip(")") if "(from " in h else at
            refused.setdefault(src, []).append(f"{h.split(' (from ')[0]} (refused at {at})")
    # the hints name what the proxies refused in the window
    rows = roles.checked(site, verify(site, refused=refused) + mqtt, "aio-extensions")
    notes = {lvl: tgt.aio_note(lvl) for lvl in {r["level"] for r in rows if not r["ok"]}}
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
