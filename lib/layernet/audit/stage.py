"""Stage 05: collect every proxy level's access log, parse it, show the findings and charts, compare with the
probe matrix of the same run and export the connection table. Each function backs one notebook cell."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

import pandas as pd

from layernet.allowlist import AllowList, effective_allowlist
from layernet.audit import collect, compare, export as export_mod, findings
from layernet.audit.parse import Parsed, parse_logs
from layernet.progress import step


@dataclass
class Audit:
    site: object
    allowlist: AllowList
    parsed: Parsed
    source: str                      # "target lab" / "folder <path>"
    since: Optional[datetime] = None
    until: Optional[datetime] = None  # when the logs were collected from a live target (None for saved logs)

    @property
    def connections(self) -> pd.DataFrame:
        return self.parsed.connections


def load(site, log_dir: str = "", since: str = "", target=None) -> Audit:
    """Collect (from the site's target, or from `log_dir`) and parse. `since`: ISO time or "2h"-style."""
    when = collect.parse_since(since)
    al = effective_allowlist(site)
    if log_dir:
        files = collect.read_logdir(log_dir, collect.proxy_level_names(site))
        source = f"folder {log_dir}"
        parsed = parse_logs(files, al)
        if when is not None:
            keep = parsed.connections["time"] >= pd.Timestamp(when)
            parsed.connections = parsed.connections[keep].reset_index(drop=True)
    else:
        if target is None:
            from layernet.targets.base import get_target

            target = get_target(site)
        source = f"target {site.target}"
        until = datetime.now(timezone.utc)
        parsed = parse_logs(collect.collect(site, target, when), al)
    step(f"audit: {len(parsed.connections)} connection(s), {len(parsed.malformed)} malformed line(s) from {source}")
    return Audit(site, al, parsed, source, when, until if not log_dir else None)


def overview(a: Audit) -> pd.DataFrame:
    r = a.parsed.report()
    rows = [("source", a.source), ("since", a.since.isoformat() if a.since else "(everything)"),
            ("lines read", r["lines"]), ("connections", r["records"]), ("malformed lines", r["malformed"]),
            ("blank lines", r["blank"])]
    return pd.DataFrame(rows, columns=["", "value"])


def malformed(a: Audit) -> pd.DataFrame:
    return a.parsed.malformed_summary()


def per_level(a: Audit) -> pd.DataFrame:
    return findings.per_level(a.connections, a.site)


def refused(a: Audit, top: int = 50) -> pd.DataFrame:
    return findings.refused(a.connections).head(top)


def coverage(a: Audit) -> pd.DataFrame:
    return findings.coverage(a.connections, a.allowlist)


def unused(a: Audit) -> pd.DataFrame:
    return findings.unused_entries(coverage(a))


def paths(a: Audit) -> pd.DataFrame:
    return findings.paths(a.connections, a.site)


def path_summary(p: pd.DataFrame) -> pd.DataFrame:
    """Paths by origin level, path and outcome."""
    if p.empty:
        return pd.DataFrame(columns=["path", "verdict", "refused_at", "paths"])
    return (p.groupby(["path", "verdict", "refused_at"], observed=True).size().rename("paths").reset_index()
            .sort_values("paths", ascending=False, ignore_index=True))


def anomalies(a: Audit, gap_minutes: float = 15) -> pd.DataFrame:
    return findings.anomalies(a.connections, a.site, a.allowlist, pd.Timedelta(minutes=gap_minutes), since=a.since,
                              until=pd.Timestamp(a.until) if a.until else None)


def probe_comparison(a: Audit, run_dir: str) -> pd.DataFrame:
    rows, start, end = compare.load_probes(run_dir)
    table = compare.compare_with_probes(a.connections, rows, a.site, start, end)
    table.attrs["probe_rows"] = len(rows)
    return table


def export(a: Audit, run_dir: str) -> pd.DataFrame:
    if not run_dir:
        return pd.DataFrame([{"file": "(no run folder: nothing written)"}])
    paths_ = export_mod.export(a.connections, run_dir)
    return pd.DataFrame([{"format": k, "file": str(v), "rows": len(a.connections)} for k, v in paths_.items()])


def results(a: Audit, cmp: pd.DataFrame, anomalies_: pd.DataFrame) -> dict:
    per = per_level(a)
    return {"connections": int(len(a.connections)), "malformed_lines": int(len(a.parsed.malformed)),
            "allowed": int(per["allowed"].sum()), "refused": int(per["refused_name"].sum() + per["refused_source"].sum()),
            "anomalies": int(len(anomalies_)), "probe_match": bool(cmp["match"].all()) if cmp.attrs.get("probe_rows") else None}


def require(cmp: pd.DataFrame) -> str:
    """Fail the stage when the audit and the probe matrix disagree (skipped when this run probed nothing)."""
    if not cmp.attrs.get("probe_rows"):
        return "no probe rows in this run (the infrastructure stage did not probe): comparison skipped"
    return compare.require_match(cmp)


def hop_latency(p: pd.DataFrame) -> pd.DataFrame:
    return findings.hop_latency(p)
