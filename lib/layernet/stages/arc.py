"""Stage 02 · Arc enable: plan -> apply(plan) -> verify, for every level that reaches Azure (egress level first).

What a notebook calls:

    p = arc.plan(site)                          # desired vs live, then the ordered steps; p.table() shows them
    done = arc.apply(p, site, run_dir)          # exactly p's changes, live progress, outputs in run_dir/arc/
    rows = arc.verify(site)                     # connected-cluster status per level (evidence rows)

Executors (site field `arc.executor`): "az" runs the az CLI on the jump box (a real site); "sdk" makes the same
steps' ARM calls through the SDK (the lab). Both read the live state the same way they change it. Everything that
talks to ARM takes an `Arm` (credential, base URL, CA bundle), so the lab passes its own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from layernet import context
from layernet.azure import arc as az_arc
from layernet.azure.clients import Arm
from layernet.azure.runner import Runner
from layernet.errors import InputError, StageFailed
from layernet.plan import Plan, Progress, Step, fingerprint, refuse_drift
from layernet.context import elsewhere, runs_here
from layernet.stages.base import apply_unless_dry, progress_printer, with_subscription
from layernet.stages.base import picture as base_picture
from layernet.stages import roles
# the window and the proxies' evidence, shared by every stage (the notebook calls them through this module)
from layernet.evidence import failed  # noqa: F401
from layernet.stages.base import applied_table, begin, crossings, refused_hosts, verify_table  # noqa: F401

STAGE = "arc"


def _arm(ctx, arm: Optional[Arm]) -> Arm:
    """The injected Arm, else the Azure side's (the lab's: its Entra stand-in and CA; a real site: arm_for)."""
    return arm if arm is not None else ctx.azure.arm()


# ---- the executors (site field `arc.executor`): one protocol, chosen from EXECUTORS
class AzWay:
    """The az CLI on the jump box: reads and changes through `az`, the operator's login."""

    def live(self, ctx, runner: Runner, arm: Optional[Arm]):
        return az_arc.AzLive(runner)

    def account(self, ctx, live) -> Optional[str]:
        """The subscription az is logged in to; refuses a missing login or one to another subscription."""
        site = ctx.site
        account = live.account()
        if site.azure.subscription_id and account and account.lower() != site.azure.subscription_id.lower():
            raise InputError(f"az is logged in to subscription {account}, the site (azure.subscription_id) names "
                             f"{site.azure.subscription_id}: run `az account set --subscription "
                             f"{site.azure.subscription_id}` on the jump box, then plan again")
        if account is None:
            raise InputError("az is not logged in on this jump box: run `az login` (and `az account set "
                             "--subscription ...`), then plan again")
        return account

    def subscription(self, ctx, account: Optional[str], arm: Optional[Arm]) -> Optional[str]:
        return account

    oid_source = "az ad sp show"       # where a custom locations oid the site does not name is read

    def oid(self, live) -> Optional[str]:
        return live.oid()

    def nodes(self, ctx, state: dict, runner: Runner, read: bool) -> Optional[dict]:
        # a Connected level's agents already run: its nodes are not read again (no debugger pods on a re-plan)
        return {t.level: (az_arc.node_settings(t, runner) if read and not az_arc.is_connected(state, t.level)
                          else None) for t in az_arc.targets(ctx.site)}

    def executor(self, ctx, runner: Runner, arm: Optional[Arm], progress: Progress):
        return az_arc.AzExecutor(runner, echo=progress)


class SdkWay:
    """The same steps' ARM calls through the SDK; the agents are the cluster side's to put in place."""

    def live(self, ctx, runner: Runner, arm: Optional[Arm]):
        return az_arc.SdkLive(_arm(ctx, arm), features_of=ctx.cluster.arc_features)

    def account(self, ctx, live) -> Optional[str]:
        return None

    def subscription(self, ctx, account: Optional[str], arm: Optional[Arm]) -> Optional[str]:
        return _arm(ctx, arm).subscription_id

    oid_source = None

    def oid(self, live) -> Optional[str]:
        return None

    def nodes(self, ctx, state: dict, runner: Runner, read: bool) -> Optional[dict]:
        return None

    def executor(self, ctx, runner: Runner, arm: Optional[Arm], progress: Progress):
        cluster = ctx.cluster
        return az_arc.SdkExecutor(ctx.site, _arm(ctx, arm),
                                  on_connected=lambda level, cid, key: cluster.install_arc_agents(level, cid,
                                                                                                  agent_key=key),
                                  on_features=cluster.enable_arc_features)


EXECUTORS = {"az": AzWay(), "sdk": SdkWay()}


def way(name: str):
    try:
        return EXECUTORS[name]
    except KeyError:
        raise InputError(f"site field arc.executor is {name!r}: use {' or '.join(EXECUTORS)}") from None


def _plain(line: str) -> None:
    """Progress lines that come back from where the calls ran already carry the stage's prefix."""
    print(line, flush=True)


def plan(site, runner: Optional[Runner] = None, arm: Optional[Arm] = None, executor: Optional[str] = None,
         read_nodes: Optional[bool] = None) -> Plan:
    """Read the live state, then list every step in order: changes and skips (with reasons). Changes nothing
    in Azure (the node preflight starts a short-lived debugger pod per node to read its settings, then removes it).
    Runs where the site's Azure calls run (the lab: its jump box). `site`: a Context or a Site."""
    ctx = context.of(site)
    site = ctx.site
    if not runs_here(runner, arm, executor):
        return elsewhere(ctx, plan, read_nodes=read_nodes)
    executor = executor or site.arc.executor
    how = way(executor)
    runner = runner or Runner()
    live = how.live(ctx, runner, arm)
    account = how.account(ctx, live)
    state = az_arc.observe(site, live)
    oid, oid_source = site.arc.custom_locations_oid, "site"
    needs_oid = any(c is None or c.get("connectivityStatus") != "Connected" for c in state["clusters"].values()) \
        or any(set(site.arc.features) - set(f or []) for f in state["features"].values())
    if not oid and needs_oid and how.oid_source:
        oid, oid_source = how.oid(live), how.oid_source
    oid = oid or "<custom-locations-oid>"
    do_nodes = site.arc.node_preflight if read_nodes is None else read_nodes
    nodes = how.nodes(ctx, state, runner, do_nodes)
    # the plan shows what apply sends: the subscription az is logged in to, or the one the SDK talks to
    known = site.azure.subscription_id or how.subscription(ctx, account, arm)
    steps = az_arc.build_steps(with_subscription(site, known), state, oid, executor, nodes)
    if oid_source != "site":
        steps.insert(0, Step("site", "derive custom locations oid", az_arc.CUSTOM_LOCATIONS_APP_ID,
                             " ".join(az_arc.OID_COMMAND), skip=True, reason=f"read at plan time: {oid}"))
    return Plan(STAGE, steps, observed=fingerprint(state), executor=executor,
                context={"state": state, "oid_source": oid_source})


def apply(plan: Plan, site, run_dir: Optional[Path] = None, runner: Optional[Runner] = None,
          arm: Optional[Arm] = None, progress: Optional[Progress] = None, executor=None) -> list[dict]:
    """Run exactly the plan's changes, in order. Refuses when the live state drifted since the plan. Every
    command's argv, stdout, stderr and exit code land in run_dir/arc/. Returns one row per change."""
    progress = progress or progress_printer("▸ arc ")
    ctx = context.of(site)
    site = ctx.site
    if not runs_here(runner, arm, executor):
        return elsewhere(ctx, apply, progress=_plain, plan=plan, run_dir=str(run_dir) if run_dir else None)
    record = Path(run_dir) / STAGE if run_dir else None
    if runner is None:
        runner = Runner(record_dir=record)
    elif record and runner.record_dir is None:
        runner.record_dir = record
    how = way(plan.executor)
    refuse_drift(plan, az_arc.observe(site, how.live(ctx, runner, arm)))
    if executor is None:
        executor = how.executor(ctx, runner, arm, progress)
    changes = plan.changes
    blocked = [s for s in changes if s.action.endswith("(manual)")]
    if blocked:
        s = blocked[0]
        if s.action.startswith("reconnect"):
            raise StageFailed(f"{s.level}: {s.target} needs the operator; nothing was applied. {s.reason}: {s.detail}")
        raise StageFailed(f"{s.level}: node settings too low; nothing was applied. {s.reason}. "
                          f"On each node run: {s.detail}")
    rows = []
    for i, step in enumerate(changes, 1):
        progress(f"[{i}/{len(changes)}] {step.level}: {step.action} {step.target}")
        out = executor.run(step)
        row = {"level": step.level, "action": step.action, "target": step.target, **out}
        rows.append(row)
        if not out["ok"]:
            hint = ""
            if step.action == "connect cluster":
                hint = (f" Look at {az_arc.PRE_ONBOARDING_LOGS}/{step.target}-* on the jump box "
                        "(the pre-onboarding check's logs) and at the audit of the level's proxies.")
            where = f" Outputs: {runner.record_dir}." if runner.record_dir else ""
            raise StageFailed(f"{step.level}: {step.action} {step.target} failed (exit {out['rc']}, "
                              f"{out['attempts']} attempt(s)): {out['output'] or 'no output'}.{hint}{where}")
        progress(f"[{i}/{len(changes)}] {step.level}: {step.action} done in {out['seconds']} s"
                 + (f" (retried: {out['retried_for']})" if out.get("retried_for") else ""))
    if not changes:
        progress("nothing to change: every level is already in the desired state")
    return rows


def verify(site, arm: Optional[Arm] = None, refused: Optional[dict[str, list[str]]] = None,
           interval: float = 10.0, timeouts: Optional[dict[str, float]] = None, progress: Optional[Progress] = None,
           **kw) -> list[dict]:
    """Poll every Arc-enabled level until Connected or its onboarding timeout; evidence rows per level.
    `refused`: {level: [hosts]} the audit saw refused during the stage (named in the hint on failure).
    The same SDK client and polling code for a real site and the lab; runs where the target makes Azure calls."""
    progress = progress or progress_printer("▸ arc ")
    ctx = context.of(site)
    if not runs_here(arm, kw):
        return elsewhere(ctx, verify, progress=_plain, refused=refused,
                         interval=min(interval, ctx.azure.poll_interval), timeouts=timeouts)
    return az_arc.poll_connected(ctx.site, _arm(ctx, arm), refused=refused, interval=interval,
                                 timeouts=timeouts, progress=progress, **kw)


# ---- what the notebook calls (one call per cell; dry runs plan only)
def run(plan: Plan, site, run_dir: str = "", dry_run: bool = False) -> list[dict]:
    """Apply the reviewed plan (nothing in a dry run)."""
    return apply_unless_dry(apply, plan, site, run_dir, dry_run)


def check(site, since=None, dry_run: bool = False) -> list[dict]:
    """Verify every level; a failing level's hint also names the hosts the proxies refused during the stage."""
    if dry_run:
        print("dry run: nothing verified")
        return []
    ctx = context.of(site)
    rows = roles.checked(ctx, verify(ctx), "arc-agents")
    if all(r["ok"] for r in rows):
        return rows
    refused = refused_hosts(ctx, since)
    seen = "; ".join(f"refused at {lvl}: {', '.join(h[:6])}" for lvl, h in refused.items())
    notes = {r["level"]: ctx.cluster.arc_agent_note(r["level"]) for r in rows if not r["ok"]}
    for r in rows:
        if not r["ok"]:
            extra = [notes.get(r["level"]) or "",
                     f"the proxies refused during the stage: {seen}" if seen else "the proxies refused nothing during the stage"]
            r["hint"] = "; ".join([r["hint"]] + [e for e in extra if e])
    return rows




def picture(site, df):
    """Which agent calls crossed which hops (an SVG for the report)."""
    return base_picture(context.site_of(site), df, "Arc agents: connections per hop during the stage")


def results(plan: Plan, applied: list[dict], rows: list[dict]) -> dict:
    status = [r for r in rows if r["check"] == "connectivity status"]
    return {"planned_changes": len(plan.changes), "skipped": len(plan.steps) - len(plan.changes),
            "applied": len(applied), "levels": len(status), "connected": sum(1 for r in status if r["ok"]),
            "failed": [f"{r['level']}: {r['check']} {r['observed']}" for r in rows if not r["ok"]]}


def require_connected(rows: list[dict], dry_run: bool = False) -> str:
    """The stage's verdict line; raises StageFailed (with the first failing level's hint) when a level is not
    Connected."""
    if dry_run:
        return "dry run: plan shown, nothing applied or verified"
    msg = failed(rows)
    if msg:
        raise StageFailed(msg)
    levels = list(dict.fromkeys(r["level"] for r in rows))
    return f"all {len(levels)} level(s) Connected to Azure Arc: {', '.join(levels)}"
