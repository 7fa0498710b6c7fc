"""`layernet audit LOGDIR`: audit a folder of saved proxy logs in the terminal."""
from __future__ import annotations

from typing import Optional

import pandas as pd

from layernet.audit import collect, export, findings
from layernet.audit.parse import parse_logs
from layernet.table import print_table

EXIT_OK, EXIT_FINDINGS = 0, 1


def _print(title: str, df: pd.DataFrame, limit: int = 20) -> None:
    print(f"\n{title}")
    if df.empty:
        print("  (none)")
        return
    rows = [{k: ("" if pd.isna(v) else v) for k, v in r.items()} for r in df.head(limit).to_dict(orient="records")]
    print_table(rows, list(df.columns))
    if len(df) > limit:
        print(f"  ... {len(df) - limit} more")


def run_audit_cli(logdir: str, site=None, since: str = "", out: Optional[str] = None) -> int:
    """Print the audit of LOGDIR; exit 1 when lines were malformed or anomalies were found, else 0."""
    when = collect.parse_since(since)
    files = collect.read_logdir(logdir, collect.proxy_level_names(site) if site is not None else None)
    allowlist = None
    if site is not None:
        from layernet.allowlist import effective_allowlist

        allowlist = effective_allowlist(site)
    parsed = parse_logs(files, allowlist)
    df = parsed.connections
    if when is not None:
        df = df[df["time"] >= pd.Timestamp(when)].reset_index(drop=True)
    r = parsed.report()
    print(f"{logdir}: {r['lines']} line(s), {len(df)} connection(s), {r['malformed']} malformed, {r['blank']} blank")
    _print("per level", findings.per_level(df, site).drop(columns=["first_seen", "last_seen"]))
    _print("malformed lines", parsed.malformed_summary())
    _print("refused attempts", findings.refused(df).drop(columns=["first_seen", "last_seen"]))
    problems = len(parsed.malformed)
    if site is not None:
        cov = findings.coverage(df, allowlist)
        _print("allow-list entries never used", findings.unused_entries(cov), limit=50)
        _print("hop latency", findings.hop_latency(findings.paths(df, site)))
        an = findings.anomalies(df, site, allowlist)
        _print("anomalies", an.drop(columns=["first_seen", "last_seen"]), limit=50)
        problems += len(an)
    else:
        print("\n(no --site: allow-list coverage, paths and anomalies need the site file)")
    if out:
        paths = export.export(df, out)
        print("\nexported: " + ", ".join(str(p) for p in paths.values()))
    return EXIT_FINDINGS if problems else EXIT_OK
