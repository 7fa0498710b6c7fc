"""One Context per notebook: the site, its allow list, its target, its clusters' own side and its Azure side, built
once (`build`) and handed to every stage call.

Stages are written once against it: `ctx.target` puts artifacts in place and reads logs and probes, `ctx.cluster`
is what a cluster does on its own (a plant's real agents: nothing to do, a reader; the lab's stand-ins), and
`ctx.azure` decides where the Azure calls run. A stage function given a Site (a script, a test) builds its Context
on entry (`of`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Optional

from layernet import targets
from layernet.allowlist import AllowList, effective_allowlist
from layernet.plan import Plan, Progress
from layernet.targets import AzureSide, Cluster, Target


@dataclass(frozen=True)
class Context:
    site: Any
    allowlist: AllowList
    target: Target
    cluster: Cluster
    azure: AzureSide


def build(site, target: Optional[Target] = None) -> Context:
    """The site's Context (with `target` when one is given, else the site's own)."""
    tgt, cluster, azure = targets.sides(site, target)
    return Context(site, effective_allowlist(site), tgt, cluster, azure)


def of(site_or_ctx) -> Context:
    """`site_or_ctx` when it is a Context, else the Context of that Site."""
    return site_or_ctx if isinstance(site_or_ctx, Context) else build(site_or_ctx)


def site_of(site_or_ctx):
    """The Site of a Site or a Context."""
    return site_or_ctx.site if isinstance(site_or_ctx, Context) else site_or_ctx


# ---- where a call runs: decided here, once
def runs_here(*injected) -> bool:
    """Given an injected client (an Arm, a runner, an executor, a poll clock: a test, or a call already running where
    the site's Azure calls run), a stage's Azure calls run in this process; otherwise they go through `elsewhere`,
    which runs them where the site's Azure calls run (a plant: here; the lab: on its jump box)."""
    return any(x is not None and x != {} for x in injected)


def elsewhere(ctx: Context, func, progress: Optional[Progress] = None, **kwargs):
    """Call `func` (a stage's plan, apply, verify...; stage 04's Event Hubs consumer) where the site's Azure calls
    run, as func(site=<the Context there>, arm=<the Azure side's Arm>, **kwargs); JSON travels, a Plan as its dict
    both ways. The one way any call is sent there."""
    if isinstance(kwargs.get("plan"), Plan):
        kwargs["plan"] = kwargs["plan"].to_dict()
    # the function's arguments travel as one value, so none can meet the call's own (timeout, progress)
    out = ctx.azure.call("layernet.context:_there", progress=progress,
                         stage_call=f"{func.__module__}:{func.__name__}", args=kwargs)
    return Plan.from_dict(out["plan"]) if "plan" in out else out["value"]


def _there(site, stage_call: str, args: dict) -> dict:
    """`elsewhere`'s other end: runs where the site's Azure calls run."""
    ctx = of(site)
    kwargs = dict(args)
    if isinstance(kwargs.get("plan"), dict):
        kwargs["plan"] = Plan.from_dict(kwargs["plan"])
    module, _, name = stage_call.partition(":")
    out = getattr(importlib.import_module(module), name)(site=ctx, arm=ctx.azure.arm(), **kwargs)
    return {"plan": out.to_dict()} if isinstance(out, Plan) else {"value": out}
