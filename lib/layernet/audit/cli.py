"""`layernet audit LOGDIR`: audit a folder of saved proxy logs in the terminal, with the audit stage's verdict."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from layernet.audit import collect
from layernet.audit.verdict import EXIT_FINDINGS, EXIT_OK, verdict  # noqa: F401  (exit codes re-exported)


def _print(title: str, df, limit: int = 20) -> None:
    import pandas as pd

    from layernet.table import print_table

    print(f"\n{title}")
    if df.empty:
        print("  (none)")
        return
    rows = [{k: ("" if not isinstance(v, (list, tuple)) and pd.isna(v) else v) for k, v in r.items()}
            for r in df.head(limit).to_dict(orient="records")]
    print_table(rows, list(df.columns))
    if len(df) > limit:
        print(f"  ... {len(df) - limit} more")


def run_audit_cli(logdir: str, site=None, since: str = "", out: Optional[str] = None, run: str = "") -> int:
    """Print the audit of LOGDIR; exit 1 when lines were malformed or anomalies were found, else 0.
    `run`: a run folder whose probe traffic is expected ("" = the site's newest run with probes, "none" = no run).
    Raises AuditInputError (exit 2) for a missing or empty folder, unreadable files or a level without records."""
    from layernet.audit import compare, export, findings
    from layernet.audit.parse import parse_logs

    when = collect.parse_since(since)
    levels = collect.proxy_level_names(site) if site is not None else None
    files = collect.read_logdir(logdir, levels)
    allowlist = None
    if site is not None:
        from layernet.allowlist import effective_allowlist

        allowlist = effective_allowlist(site)
    parsed = parse_logs(files, allowlist, sources_are_levels=True)
    collect.check_records(parsed, levels if levels is not None else list(files), logdir)
    parsed.since(when)
    r = parsed.report()
    extra = "".join(f", {r[k]} {k}" for k in ("incomplete", "other") if k in r)
    print(f"{logdir}: {r['lines']} line(s), {parsed.records} connection(s), {r['malformed']} malformed, "
          f"{r['blank']} blank{extra}")
    _print("per level", findings.per_level(parsed, site).drop(columns=["first_seen", "last_seen"]))
    _print("malformed lines", parsed.malformed_summary())
    _print("refused attempts", findings.refused(parsed).drop(columns=["first_seen", "last_seen"]))
    if site is not None:
        expected = findings.Expected()
        run_dir = None if run == "none" else Path(run) if run else compare.find_run(site, _runs_dir())
        if run_dir is not None:
            rows, start, end = compare.load_probes(run_dir)
            expected = compare.expected_traffic(rows, site, start, end)
            print(f"\nprobe traffic of run {run_dir} ({len(rows)} probe(s)) is expected" if expected
                  else f"\nrun {run_dir}: no probe rows; no traffic is marked expected")
        cov = findings.coverage(parsed, allowlist)
        _print("allow-list entries never used", findings.unused_entries(cov), limit=50)
        _print("hop latency", findings.hop_latency_sql(parsed, site))
        an = findings.anomalies(parsed, site, allowlist, since=when, expected=expected, checks=parsed.checks)
        _print("anomalies", an.drop(columns=["first_seen", "last_seen"]), limit=50)
    else:
        import pandas as pd

        print("\n(no --site: allow-list coverage, paths and anomalies need the site file)")
        an = pd.DataFrame({"kind": parsed.checks["check"], "level": parsed.checks["level"],
                           "expected": False})
        _print("log checks", parsed.checks)
    if out:
        paths = export.export(parsed.connections, out)
        print("\nexported: " + ", ".join(str(p) for p in paths.values()))
    v = verdict(parsed, an)
    print("\n" + v.text())
    return v.code


def _runs_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "runs"
