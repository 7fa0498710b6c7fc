"""Stage 01h · hardening evidence (lab only): what notebook 01h calls, one call per cell, no branching there.

`run` sends the adversarial traffic (skipped in a dry run), the table functions return what each report
section shows (failures first, the full table written to the run folder as CSV when it is longer than shown),
and `finish` records the counts and raises when any check failed.
"""
from __future__ import annotations

from layernet import context
from layernet.runfolder import results_dir


import pandas as pd

from layernet.harden import checks, report
from layernet.stages.base import show

SHOWN = 40


def run(site, dry_run: bool = False) -> dict[str, pd.DataFrame]:
    """Every hardening check on the lab (nothing in a dry run: it sends adversarial traffic)."""
    if dry_run:
        print("dry run: nothing sent, nothing checked")
        return {}
    return checks.run_all(context.site_of(site))


def summary(frames: dict[str, pd.DataFrame]):
    return _show(report.summary(frames), "summary")


def names(frames: dict[str, pd.DataFrame]):
    """Server names per proxy level and family: connections, forwarded, reset, disagreements with the allow list."""
    return _show(checks.differential_summary(frames["differential"]) if "differential" in frames else None, "names")


def sources(frames: dict[str, pd.DataFrame]):
    return _show(frames.get("source"), "sources")


def isolation(frames: dict[str, pd.DataFrame], run_dir: str = ""):
    return _show(_failures_first(frames.get("isolation")), "isolation", run_dir)


def dns(frames: dict[str, pd.DataFrame], run_dir: str = ""):
    """Every DNS check (names outside the allow list at each inner level, and what the upstream saw)."""
    return _show(_failures_first(frames.get("dns")), "dns", run_dir)


def failures(frames: dict[str, pd.DataFrame]):
    return _show(report.failures(frames) if frames else None, "failures")


def finish(site, run_dir: str, stage: str, frames: dict[str, pd.DataFrame]) -> str:
    """Record the counts in the run manifest and return the verdict; raises when a check failed."""
    from layernet.runner import record_results

    if not frames:
        return "dry run: nothing checked"
    record_results(run_dir, stage, checks.results(frames))
    if run_dir:
        report.write_tables(frames, results_dir(run_dir))
    return checks.require_all_passed(frames)


def _failures_first(df):
    if df is None or not len(df):
        return df
    return df.assign(_ok=df["ok"].astype(bool)).sort_values("_ok", kind="stable").drop(columns="_ok")


def _show(df, name: str, run_dir: str = ""):
    """A report table: "(none)" when empty; at most SHOWN rows, saying how many there are and where all of them are."""
    from IPython.display import Markdown, display

    if df is None or not len(df):
        return show(None)
    if len(df) > SHOWN:
        where = ""
        if run_dir:
            path = results_dir(run_dir) / f"harden-{name}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            df.to_csv(path, index=False)
            where = f"; the full table: `{path.relative_to(run_dir)}`"
        display(Markdown(f"showing {SHOWN} of {len(df)} rows, failures first{where}"))
        df = df.head(SHOWN)
    return show(df)
