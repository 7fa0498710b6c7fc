"""Stage 01: render every level's proxy/DNS/firewall configuration, plan, apply, and prove it with probes."""
from __future__ import annotations

from typing import Optional

import hashlib
from html import escape

import pandas as pd

from layernet import context
from layernet.audit.compare import save_probe_rows
from layernet.probe_run import COLUMNS, run_matrix
from layernet.progress import step
from layernet.render import firewall_rows, render_site
from layernet.plan import Plan, Step
from layernet.stages.base import show
from layernet.targets.base import Target


def render(site) -> list:
    """Every artifact of every level for the site's target (`site`: the notebook's Context, or a Site)."""
    ctx = context.of(site)
    arts = render_site(ctx.site, ctx.allowlist, target=ctx.target.renders)
    step(f"rendered {len(arts)} artifact(s) for {len(ctx.site.levels)} level(s)")
    return arts


def artifacts_table(artifacts: list) -> pd.DataFrame:
    return pd.DataFrame([{"level": a.level, "file": a.name, "kind": a.kind, "lines": a.content.count("\n") + 1,
                          "sha256": hashlib.sha256(a.content.encode()).hexdigest()[:16]} for a in artifacts])


def plan(tgt: Target, artifacts: list) -> Plan:
    """The stage's plan: one step per object of every level, an unchanged object a skip (`plan.change`)."""
    p = tgt.plan(artifacts)
    replaced = sum(c.action == "replace" for c in p.steps)
    step(f"plan: {len(p.changes)} change(s) of {len(p.steps)} object(s)"
         + (f", {replaced} to be replaced (deleted and created: a field that cannot change in place)" if replaced else ""))
    return p


def apply(tgt: Target, artifacts: list, dry_run: bool, planned: Optional[Plan] = None) -> list[Step]:
    """Apply exactly the reviewed plan unless this is a dry run (then the plan is the answer and nothing
    changes). Refuses (DriftError, nothing applied) when the live state no longer gives `planned`."""
    if dry_run:
        step("dry run: nothing applied")
        return []
    step("applying the reviewed plan")
    changes = tgt.apply(artifacts, plan=planned)
    step(f"applied: {sum(not c.skip for c in changes)} object(s) changed")
    return changes


def _diff_lines(diff: str) -> int:
    return sum(1 for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))


def changes_table(steps: list[Step]) -> pd.DataFrame:
    """One row per object: its level, name, action and how many lines its diff adds or removes."""
    return pd.DataFrame([{"level": c.level, "object": c.target, "action": c.action, "diff_lines": _diff_lines(c.detail)}
                         for c in steps], columns=["level", "object", "action", "diff_lines"])


def diff_html(steps: list[Step]) -> str:
    """Unified diffs per object, collapsed, coloured; an 'unchanged' object (a skip) shows no diff."""
    parts = []
    for c in steps:
        if c.skip or not c.detail:
            continue
        lines = []
        for line in c.detail.splitlines():
            if line.startswith("# "):  # why a change is what it is (a replace names its immutable fields)
                lines.append(f'<b style="color:#9a6700">{escape(line)}</b>')
                continue
            colour = "#1a7f37" if line.startswith("+") else "#cf222e" if line.startswith("-") else "#57606a" if line.startswith("@@") else "#1f2328"
            lines.append(f'<span style="color:{colour}">{escape(line)}</span>')
        parts.append(f"<details><summary><b>{escape(c.level)}</b> / {escape(c.target)}: {escape(c.action)}</summary>"
                     f"<pre style='font-size:12px;max-height:420px;overflow:auto;background:#f6f8fa;padding:8px'>"
                     + "\n".join(lines) + "</pre></details>")
    return "\n".join(parts) or "<p><b>No changes:</b> every object already matches the desired state.</p>"


def probe(site, dry_run: bool, run_dir: str = "", stage: str = "infrastructure") -> pd.DataFrame:
    """Run the probe matrix; the rows are saved in the run folder so the audit stage can compare its counts."""
    if dry_run:
        step("dry run: probes skipped (nothing was applied)")
        return pd.DataFrame(columns=COLUMNS)
    step("running the probe matrix on every level")
    ctx = context.of(site)
    rows = run_matrix(ctx.site, target=ctx.target)
    df = pd.DataFrame(rows, columns=COLUMNS)
    if run_dir:
        save_probe_rows(run_dir, df, stage)
    step(f"probes: {int(df['ok'].sum())} passed, {int((~df['ok'].astype(bool)).sum())} failed")
    return df


def styled(df: pd.DataFrame):
    """The probe table with failed rows first, coloured green/red (the reports' table helper)."""
    if not df.empty:
        df = df.sort_values(["ok", "level", "check", "host", "port"], key=lambda s: s if s.name != "ok" else s.astype(int))
    return show(df, empty="no probes ran", row_class=lambda r: "ln-good" if r["ok"] else "ln-bad")


def per_level(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(columns=["level", "checks", "passed", "failed", "p50_ms", "max_ms"])
    g = df.groupby("level", sort=False)
    out = pd.DataFrame({"checks": g.size(), "passed": g["ok"].sum().astype(int),
                        "p50_ms": g["latency_ms"].median().round(1), "max_ms": g["latency_ms"].max().round(1)})
    out["failed"] = out["checks"] - out["passed"]
    return out.reset_index()[["level", "checks", "passed", "failed", "p50_ms", "max_ms"]]


def by_check(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame()
    return df.pivot_table(index="level", columns="check", values="ok", aggfunc=lambda s: f"{int(s.sum())}/{len(s)}",
                          sort=False).fillna("")


def results(planned: Plan, applied: list[Step], df: pd.DataFrame) -> dict:
    return {"planned_changes": len(planned.changes), "applied_changes": sum(not c.skip for c in applied),
            "probes": int(len(df)), "probes_passed": int(df["ok"].sum()) if len(df) else 0,
            "probes_failed": int((~df["ok"].astype(bool)).sum()) if len(df) else 0}


def require_all_passed(df: pd.DataFrame, dry_run: bool) -> str:
    if dry_run:
        return "dry run: nothing applied, nothing probed"
    if df.empty:
        raise RuntimeError("the probe matrix is empty: nothing proves the network works")
    bad = df[~df["ok"].astype(bool)]
    if len(bad):
        first = bad.iloc[0]
        raise RuntimeError(f"{len(bad)} of {len(df)} probes failed; first: {first['level']} {first['check']} "
                           f"{first['host']}:{first['port']} observed {first['observed']!r} - {first['hint']}")
    return f"all {len(df)} probes passed"


def ip_allow_list(site) -> pd.DataFrame:
    """The IP allow list the plant's routers and firewalls must implement (the same rules nftables enforces)."""
    ctx = context.of(site)
    return pd.DataFrame(firewall_rows(ctx.site, ctx.allowlist),
                        columns=["level", "from", "to", "protocol", "ports", "purpose"])
