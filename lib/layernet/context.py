"""One Context per notebook: the site, its allow list, its target, its clusters' own side and its Azure side, built
once (`build`) and handed to every stage call.

Stages are written once against it: `ctx.target` puts artifacts in place and reads logs and probes, `ctx.cluster`
is what a cluster does on its own (a plant's real agents: nothing to do, a reader; the lab's stand-ins), and
`ctx.azure` decides where the Azure calls run. A stage function given a Site (a script, a test) builds its Context
on entry (`of`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from layernet import targets
from layernet.allowlist import AllowList, effective_allowlist
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
