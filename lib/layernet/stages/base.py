"""The one shape every stage has: plan -> apply(plan) -> verify.

- `plan(...)` compares the desired state (from the site) with the live state and returns a `Plan`: every step in
  order, each either a change (with the exact command, request or diff it will run) or a skip with the reason
  (already in the desired state). Nothing changes while planning.
- `apply(plan, ...)` does exactly the plan's changes, in order, and nothing else. Before it starts it re-reads
  the live state; when that no longer matches what the plan saw (`Plan.observed`), it raises `DriftError`.
- `verify(...)` returns evidence rows (`layernet.evidence`), the same code for a real site and the lab.
`Plan`, `Step` and the drift refusal live in `layernet.plan`, so executors and targets below the stages share them.

Notebooks show `plan.table()`, then the applied steps, then the evidence.
"""
from __future__ import annotations

import json
from typing import Optional

from layernet import context, crossings as cx
from layernet.evidence import evidence_table
from layernet.htmltable import Html, details, escape, link, show as _show
from layernet.plan import Plan, Progress


def with_subscription(site, sub: Optional[str]):
    """The site with the subscription apply will use (the lab's is derived; a real site's az account), so a plan
    shows the ids apply sends; the site itself when it already names it or nothing is known."""
    if not sub or site.azure.subscription_id == sub:
        return site
    return site.model_copy(update={"azure": site.azure.model_copy(update={"subscription_id": sub})})


def progress_printer(prefix: str = "") -> Progress:
    def _p(msg: str) -> None:
        print(f"{prefix}{msg}", flush=True)
    return _p


# ---- what every stage notebook shares: the stage's window, the proxies' evidence in it, dry runs
def begin():
    """The stage's start time: the window in which the proxies' logs are read for evidence."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def crossings(site, since=None):
    """Every connection that crossed (or tried to cross) a proxy during the stage, as paths (crossings.py).
    `site`: the notebook's Context (or a Site)."""
    ctx = context.of(site)
    return cx.paths(ctx.site, ctx.target, since)


def refused_hosts(site, since=None) -> dict[str, list[str]]:
    """{level where it was refused: ["host:port (from level)"]} in the stage's window."""
    ctx = context.of(site)
    return cx.refused(ctx.site, crossings(ctx, since))


def picture(site, df, title: str, hosts: Optional[list[str]] = None):
    """Which calls crossed which hops during the stage (an SVG for the report)."""
    from IPython.display import SVG

    return SVG(cx.picture(context.site_of(site), df, hosts=hosts, title=title))


def apply_unless_dry(apply, plan: "Plan", site, run_dir: str = "", dry_run: bool = False) -> list[dict]:
    """Apply the reviewed plan with the stage's `apply` (nothing in a dry run)."""
    if dry_run:
        print("dry run: nothing applied")
        return []
    from pathlib import Path

    return apply(plan, site, run_dir=Path(run_dir) if run_dir else None)


def applied_table(rows: list[dict]):
    """The changes apply made, one row each (the executors' outcome rows)."""
    import pandas as pd

    cols = ["level", "action", "target", "ok", "rc", "attempts", "seconds", "retried_for", "output"]
    return pd.DataFrame(rows, columns=cols)


def verify_table(rows: list[dict]):
    return evidence_table(rows)


def run_link(path: str, run_dir: str = "") -> str:
    """An HTML link (escaped, kept as markup by `show`) to a file the stage kept, relative to the run folder when
    it lies inside it."""
    if not path:
        return ""
    from pathlib import Path

    rel = Path(path)
    if run_dir:
        try:
            rel = rel.relative_to(Path(run_dir))
        except ValueError:
            pass
    return link(rel.as_posix(), rel.name)


# ---- how a report shows a stage's tables and plans: one helper (layernet.htmltable) for every table
def show(data, **options):
    """Every table a stage report shows: escaped cells, numbers with units, no row numbers, "none" when empty."""
    return _show(data, **options)


_METHODS = ("GET", "PUT", "POST", "PATCH", "DELETE", "HEAD")


def request_head(detail: str) -> str:
    """One line naming what a step sends: the method and the resource type (`PUT Microsoft.Kubernetes/
    connectedClusters + body`; the step names the resource), or the command's first words (`az connectedk8s
    connect …`)."""
    text = " ".join(detail.split())
    if not text:
        return ""
    first, _, rest = text.partition(" ")
    if first in _METHODS:
        url, _, body = rest.partition(" ")
        path = url.split("?", 1)[0].strip("/")
        if "/providers/" in f"/{path}":
            parts = f"/{path}".rsplit("/providers/", 1)[1].split("/")
            # the namespace, the type of each name, and an action (register) after the last name
            kinds = [parts[0]] + (parts[1::2] if len(parts) % 2 else parts[1:-1:2] + [parts[-1]])
        else:
            kinds = path.split("/")[0::2]
        return f"{first} {'/'.join(kinds)}" + (" + body" if body else "")
    words = text.split(" ")
    return " ".join(words[:3]) + (" …" if len(words) > 3 else "")


def request_text(detail: str) -> str:
    """The exact request of a step for reading: an HTTP call's JSON body indented (the same JSON), else as is."""
    first, _, rest = detail.partition(" ")
    if first in _METHODS:
        url, _, body = rest.partition(" ")
        try:
            parsed = json.loads(body) if body.strip() else None
        except ValueError:
            return detail
        if parsed is not None:
            return f"{first} {url}\n{json.dumps(parsed, indent=2, sort_keys=True)}"
    return detail


def keep_plan(plan: Plan, run_dir: str = "") -> dict[int, str]:
    """Write the plan into the run folder: `<stage>/plan.json` (every step) and one file per step with its exact
    command or request as apply sends it (`<stage>/plan/NN-<level>-<action>.txt`). {step index: relative path}."""
    if not run_dir:
        return {}
    import re
    from pathlib import Path

    root = Path(run_dir)
    folder = root / plan.stage / "plan"
    folder.mkdir(parents=True, exist_ok=True)
    (root / plan.stage / "plan.json").write_text(plan.to_json() + "\n", encoding="utf-8")
    out = {}
    for i, s in enumerate(plan.steps, 1):
        if not s.detail:
            continue
        slug = re.sub(r"[^a-z0-9]+", "-", f"{s.level} {s.action}".lower()).strip("-")[:60]
        path = folder / f"{i:02d}-{slug}.txt"
        path.write_text(s.detail + "\n", encoding="utf-8")
        out[i] = path.relative_to(root).as_posix()
    return out


def plan_rows(plan: Plan, files: Optional[dict[int, str]] = None) -> list[dict]:
    """One row per step for the report: the step on one line, with its exact command or request one click away."""
    rows = []
    for i, s in enumerate(plan.steps, 1):
        what = f"{s.action} {s.target}"
        if s.detail:
            head = request_head(s.detail)
            extra = link(files[i], "as a file, exactly as apply sends it") if files and i in files else ""
            step = details(f"{what} · {head}" if head else what, request_text(s.detail), extra)
        else:
            step = Html(escape(what))
        rows.append({"#": i, "level": s.level, "plan": "skip" if s.skip else "change", "step": step, "why": s.reason})
    return rows


def show_plan(plan: Plan, run_dir: str = ""):
    """The plan as a report shows it (and kept in the run folder, see `keep_plan`): one line per step saying what
    changes and why, the exact command or request one click away; under it, how many changes and skips."""
    rows = plan_rows(plan, keep_plan(plan, run_dir))
    changes, skips = len(plan.changes), len(plan.steps) - len(plan.changes)
    note = (f"{changes} change(s), {skips} skip(s)" if plan.steps else "") + (
        f"; the plan and every request are kept in {plan.stage}/plan.json and {plan.stage}/plan/" if run_dir else "")
    return show(rows, columns=["#", "level", "plan", "step", "why"], empty="no steps: nothing to change", note=note,
                row_class=lambda r: "" if r["plan"] == "change" else "ln-skip", kind="plan")
