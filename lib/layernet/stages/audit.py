"""Stage 05: collect every proxy level's access log, parse it, show the findings and charts, compare with the
probe matrix of the same run and export the connection table. Each function backs one notebook cell."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from layernet.audit import compare, export as export_mod, findings, kql as kql_mod
from layernet import context
from layernet.audit import load as audit_load
from layernet.audit.load import Audit, load_monitor  # noqa: F401  (stage 05's loaders: notebook cells)
from layernet.audit.verdict import verdict
from layernet.errors import StageFailed


def load(site, log_dir: str = "", since: str = "", run_dir: str = "") -> Audit:
    """The audit of the notebook's Context (or a Site): its target's proxy logs, or the saved logs in `log_dir`."""
    ctx = context.of(site)
    return audit_load.load(ctx.site, log_dir, since, target=ctx.target, run_dir=run_dir)


def overview(a: Audit) -> pd.DataFrame:
    r = a.parsed.report()
    rows = [("source", a.source), ("since", a.since.isoformat() if a.since else "(everything)"),
            ("lines read", r["lines"]), ("connections", r["records"]), ("malformed lines", r["malformed"]),
            ("blank lines", r["blank"])]
    return pd.DataFrame(rows, columns=["", "value"])


def malformed(a: Audit) -> pd.DataFrame:
    return a.parsed.malformed_summary()


def per_level(a: Audit) -> pd.DataFrame:
    return findings.per_level(a.parsed, a.site)


def refused(a: Audit, top: int = 50) -> pd.DataFrame:
    return findings.refused(a.parsed).head(top)


def coverage(a: Audit) -> pd.DataFrame:
    return findings.coverage(a.parsed, a.allowlist)


def unused(a: Audit) -> pd.DataFrame:
    return findings.unused_entries(coverage(a))


def paths(a: Audit) -> pd.DataFrame:
    return findings.paths(a.parsed, a.site)


def path_summary(p: pd.DataFrame) -> pd.DataFrame:
    """Paths by origin level, path and outcome."""
    if p.empty:
        return pd.DataFrame(columns=["path", "verdict", "refused_at", "paths"])
    return (p.groupby(["path", "verdict", "refused_at"], observed=True).size().rename("paths").reset_index()
            .sort_values("paths", ascending=False, ignore_index=True))


def anomalies(a: Audit, gap_minutes: float = 15, run_dir: str = "") -> pd.DataFrame:
    """Every anomaly; the probe traffic of this run (`run_dir`) is marked expected."""
    rows, start, end = compare.load_probes(run_dir)
    return findings.anomalies(a.parsed, a.site, a.allowlist, pd.Timedelta(minutes=gap_minutes), since=a.since,
                              until=pd.Timestamp(a.until) if a.until else None,
                              expected=compare.expected_traffic(rows, a.site, start, end), checks=a.parsed.checks)


def probe_comparison(a: Audit, run_dir: str) -> pd.DataFrame:
    rows, start, end = compare.load_probes(run_dir)
    table = compare.compare_with_probes(a.parsed, rows, a.site, start, end)
    table.attrs["probe_rows"] = len(rows)
    return table


def export(a: Audit, run_dir: str) -> pd.DataFrame:
    if not run_dir:
        return pd.DataFrame([{"file": "(no run folder: nothing written)"}])
    paths_ = export_mod.export(a.connections, run_dir)
    rows = [{"format": k, "file": str(v), "rows": len(a.connections)} for k, v in paths_.items()]
    # the same findings as KQL over Azure Monitor (ContainerLogV2), for the site's Log Analytics workspace
    for name, path in kql_mod.write(a.site, Path(run_dir) / export_mod.EXPORT_DIR / "kql").items():
        rows.append({"format": f"kql ({name})", "file": str(path), "rows": 0})
    return pd.DataFrame(rows)


def results(a: Audit, cmp: pd.DataFrame, anomalies_: pd.DataFrame) -> dict:
    per = per_level(a)
    v = verdict(a.parsed, anomalies_)
    return {"connections": a.parsed.records, "malformed_lines": int(len(a.parsed.malformed)),
            "allowed": int(per["allowed"].sum()), "refused": int(per["refused_name"].sum() + per["refused_source"].sum()),
            "anomalies": int(len(anomalies_)), "anomaly_problems": v.problems, "expected_anomalies": v.expected,
            "verdict": "passed" if v.passed else "failed",
            "probe_match": bool(cmp["match"].all()) if cmp.attrs.get("probe_rows") else None}


def require_verdict(a: Audit, anomalies_: pd.DataFrame) -> str:
    """Fail the stage on the verdict `layernet audit` gives for the same logs: malformed lines or anomalies that
    are neither the run's probe traffic nor informational."""
    v = verdict(a.parsed, anomalies_)
    if not v.passed:
        raise StageFailed(v.text() + " (listed above; `layernet audit` of the same logs exits 1 on them too)")
    return v.text()


def require(cmp: pd.DataFrame, a: Optional[Audit] = None, anomalies_: Optional[pd.DataFrame] = None) -> str:
    """Fail the stage when the audit and the probe matrix disagree (skipped when this run probed nothing), and
    with `a` and its anomalies on the same verdict as `layernet audit`: malformed lines or unexpected anomalies."""
    if not cmp.attrs.get("probe_rows"):
        said = "no probe rows in this run (the infrastructure stage did not probe): comparison skipped"
    else:
        said = compare.require_match(cmp)
    if a is not None and anomalies_ is not None:
        v = verdict(a.parsed, anomalies_)
        if not v.passed:
            raise StageFailed(v.text() + " (the tables above list them; `layernet audit` gives the same verdict)")
        said += "; " + v.text()
    return said


def hop_latency(p: pd.DataFrame) -> pd.DataFrame:
    return findings.hop_latency(p)


def fleet(a: Audit, run_dir: str) -> pd.DataFrame:
    """This site's connections in the fleet dataset layout (Parquet partitioned by site, level and day, under
    `<run_dir>/audit/fleet/`), and the site x level view read back from it; several sites' folders are queried
    together with `export.fleet_read`."""
    if not run_dir:
        per = per_level(a)
        per.insert(0, "site", a.site.name)
        return per[["site", "level", "connections", "allowed"]]
    root = export_mod.fleet_parquet({a.site.name: a.parsed}, Path(run_dir) / export_mod.EXPORT_DIR / "fleet")
    return export_mod.fleet_read(root)
