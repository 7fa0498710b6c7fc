"""`layernet audit LOGDIR`: audit a folder of saved proxy logs in the terminal, with the audit stage's verdict.

Several sites at once (a fleet): ``layernet audit DIR_A --site A.yaml DIR_B --site B.yaml`` or
``layernet audit --fleet fleet.yaml`` (a YAML list of ``{site: FILE, logs: DIR}``). Each site is audited as
alone, then the fleet view (site x level counts and each site's verdict) is printed; ``--parquet DIR`` writes
every site's connections as one Parquet dataset partitioned by site, level and day. The exit code is the worst
of the sites' (0 pass, 1 findings); bad input anywhere (a fleet file field, a site file, a log folder) is exit 2
before anything is read.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from layernet.allowlist import effective_allowlist
from layernet.audit import collect, compare, findings, kql
from layernet.audit.collect import AuditInputError
from layernet.audit.compare import check_run
from layernet.audit.findings import problems
from layernet.audit.load import load_monitor
from layernet.audit.parse import parse_logs
from layernet.audit.verdict import EXIT_FINDINGS, EXIT_OK, verdict  # noqa: F401  (exit codes re-exported)
from layernet.site import SiteError, load_site
from layernet.site.load import load_yaml_file
from layernet.site.problems import show
from layernet.site.secrets import looks_secret
from layernet.table import print_table

if TYPE_CHECKING:     # imported lazily: the CLI must start fast
    import pandas as pd

FLEET_COLUMNS = ["site", "level", "connections", "allowed", "refused_name", "refused_source", "upstream_failure",
                 "malformed", "anomalies", "verdict"]


def _print(title: str, df, limit: int = 20) -> None:
    import pandas as pd

    print(f"\n{title}")
    if df.empty:
        print("  (none)")
        return
    rows = [{k: ("" if not isinstance(v, (list, tuple)) and pd.isna(v) else v) for k, v in r.items()}
            for r in df.head(limit).to_dict(orient="records")]
    print_table(rows, list(df.columns))
    if len(df) > limit:
        print(f"  ... {len(df) - limit} more")


@dataclass
class SiteAudit:
    """One site's audit as the CLI printed it."""
    name: str
    parsed: object
    anomalies: object
    verdict: object
    per_level: object


def _audit(logdir: str, site=None, since: str = "", run: str = "") -> SiteAudit:
    """Read, parse and print the audit of one log folder (everything but the verdict line)."""
    when = collect.parse_since(since)
    levels = collect.proxy_level_names(site) if site is not None else None
    files = collect.read_logdir(logdir, levels)
    allowlist = _allowlist(site)
    parsed = parse_logs(files, allowlist, sources_are_levels=True, since=when)
    collect.check_records(parsed, levels if levels is not None else list(files), logdir)
    return _report(logdir, Path(logdir).name, parsed, site, allowlist, when, run)


def _allowlist(site):
    if site is None:
        return None
    return effective_allowlist(site)


def _workspace_audit(site, since: str = "", run: str = "", endpoint: Optional[str] = None) -> SiteAudit:
    """The audit of the records in the site's Log Analytics workspace (monitor.workspace_id) over [since, now]:
    the records query of `layernet.audit.kql` run with azure-monitor-query, read by the local engine."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    where = f"workspace {site.monitor.workspace_id}"
    try:
        a = load_monitor(site, since, endpoint=endpoint)           # the notebook's loader: one way to read it
    except ClientAuthenticationError as exc:
        raise AuditInputError(f"{where}: no Azure credential ({str(exc).splitlines()[0][:200]}); sign in with "
                              "az login, or set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET") from None
    except HttpResponseError as exc:
        code = getattr(getattr(exc, "error", None), "code", None) or exc.status_code
        raise AuditInputError(f"{where}: the Logs query API refused the query ({code}: "
                              f"{str(exc.message or exc).splitlines()[0][:200]}); check monitor.workspace_id and "
                              "that the credential may read the workspace (Log Analytics Reader)") from None
    collect.check_records(a.parsed, collect.proxy_level_names(site), where)
    return _report(f"Log Analytics {where} (since {a.since.isoformat(timespec='seconds')})", site.name, a.parsed,
                   site, a.allowlist, a.since, run)


def _report(source: str, name: str, parsed, site, allowlist, when, run: str) -> SiteAudit:
    """Print the audit of parsed records (everything but the verdict line)."""
    r = parsed.report()
    extra = "".join(f", {r[k]} {k}" for k in ("incomplete", "other") if k in r)
    print(f"{source}: {r['lines']} line(s), {parsed.records} connection(s), {r['malformed']} malformed, "
          f"{r['blank']} blank{extra}")
    per = findings.per_level(parsed, site)
    _print("per level", per.drop(columns=["first_seen", "last_seen"]))
    _print("malformed lines", parsed.malformed_summary())
    _print("refused attempts", findings.refused(parsed).drop(columns=["first_seen", "last_seen"]))
    if site is not None:
        expected = findings.Expected()
        run_dir = None if run == "none" else Path(run) if run else compare.find_run(site)
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
    return SiteAudit(site.name if site is not None else name, parsed, an, verdict(parsed, an), per)


def run_audit_cli(logdir: str, site=None, since: str = "", out: Optional[str] = None, run: str = "",
                  parquet: Optional[str] = None, workspace: bool = False, endpoint: Optional[str] = None) -> int:
    """Print the audit of LOGDIR; exit 1 when lines were malformed or anomalies were found, else 0.
    `run`: a run folder whose probe traffic is expected ("" = the site's newest run with probes, "none" = no run).
    `parquet`: also write the connections as the fleet dataset (partitioned by site, level and day) there.
    `workspace`: read the records from the site's Log Analytics workspace instead (`endpoint`: its query API).
    Raises AuditInputError (exit 2) for a missing or empty folder, unreadable files or a level without records."""
    from layernet.audit import export

    a = _workspace_audit(site, since, run, endpoint) if workspace else _audit(logdir, site, since, run)
    if out:
        paths = export.export(a.parsed.connections, out)
        print("\nexported: " + ", ".join(str(p) for p in paths.values()))
        if site is not None:
            _write_kql(site, Path(out) / export.EXPORT_DIR / "kql")
    if parquet:
        print(f"\nParquet dataset: {export.fleet_parquet({a.name: a.parsed}, parquet)}")
    print("\n" + a.verdict.text())
    return a.verdict.code


# ----------------------------------------------------------------------------------------------- flags
def check_flags(since: str = "", run: str = "", endpoint: Optional[str] = None, sites: int = 1) -> None:
    """The flags of `layernet audit` that can be checked before anything is read or written: --since (a time in
    the past), --run (none, or a run folder whose probe rows can be read; one site only), --monitor-endpoint (an
    https:// URL). AuditInputError (exit 2) naming the flag, the value (cut short) and the fix."""
    collect.check_since(since, "--since")
    if sites > 1 and run not in ("", "none"):
        raise AuditInputError(f"--run {run}: a run folder belongs to one site; with several sites give --run none "
                              "or leave it out (each site's newest run with probes)")
    check_run(run)
    if endpoint is not None:
        check_endpoint(endpoint)


def check_endpoint(url: str, flag: str = "--monitor-endpoint") -> str:
    """An https:// URL of a Logs query API (scheme, host, optional port and path; no credentials, query or spaces)."""
    from urllib.parse import urlsplit

    shown = "(value hidden: it looks like a secret)" if looks_secret(url) else show(url)
    fix = "give the Logs query API as an https:// URL, e.g. https://api.loganalytics.io"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise AuditInputError(f"{flag} {shown}: not a URL; {fix}") from None
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment or "@" in parts.netloc \
            or any(c.isspace() or ord(c) < 32 for c in url) or (port is not None and not 0 < port < 65536):
        raise AuditInputError(f"{flag} {shown}: not an https:// URL with a host (no credentials, query or spaces); {fix}")
    return url


# ----------------------------------------------------------------------------------------------- fleet
@dataclass
class FleetEntry:
    logs: str
    site_file: str
    where: str          # what an error names: "fleet.yaml: sites[2]" or "argument 2"


class SitePairs(argparse.Action):
    """`--site FILE [LOGDIR ...]` of `layernet audit`: records the order of log folders and site files, so
    `DIR_A --site A.yaml DIR_B --site B.yaml` pairs each folder with the site file that follows it (argparse
    hands the folders after a --site to it)."""

    def __call__(self, parser, ns, values, option_string=None):
        seq = ns.__dict__.setdefault("audit_seq", [])
        seq.append(("site", values[0]))
        seq += [("dir", v) for v in values[1:]]
        ns.site = values[0]


class LogDirs(argparse.Action):
    """The log folder(s) before any --site."""

    def __call__(self, parser, ns, values, option_string=None):
        seq = ns.__dict__.setdefault("audit_seq", [])
        seq += [("dir", v) for v in (values if isinstance(values, list) else [values])]
        setattr(ns, self.dest, values[0] if isinstance(values, list) and values else values)


def pairs_from_args(seq: list[tuple[str, str]]) -> list[FleetEntry]:
    """Log folders and site files in command-line order -> (folder, site file) pairs. `DIR --site FILE ...` and
    `--site FILE DIR ...` both work; one folder may go without a site file (the audit without a site)."""
    dirs = [v for k, v in seq if k == "dir"]
    sites = [v for k, v in seq if k == "site"]
    if len(dirs) <= 1 and len(sites) <= 1:
        return [FleetEntry(dirs[0] if dirs else "", sites[0] if sites else "", "LOGDIR")] if dirs else []
    site_first = seq[0][0] == "site"
    out, pending = [], None
    for kind, value in seq:
        if kind == "dir":
            if pending is not None and not site_first:
                raise AuditInputError(f"log folder {pending}: give its site file (LOGDIR --site FILE for every "
                                      "folder of a fleet)")
            if site_first:
                if pending is None:
                    raise AuditInputError(f"log folder {value}: give its site file before it (--site FILE LOGDIR "
                                          "for every folder of a fleet)")
                out.append(FleetEntry(value, pending, f"log folder {value}"))
                pending = None
            else:
                pending = value
        else:
            if site_first:
                if pending is not None:
                    raise AuditInputError(f"--site {pending}: has no log folder after it (--site FILE LOGDIR for "
                                          "every site of a fleet)")
                pending = value
            else:
                if pending is None:
                    raise AuditInputError(f"--site {value}: has no log folder before it (LOGDIR --site FILE for "
                                          "every site of a fleet)")
                out.append(FleetEntry(pending, value, f"log folder {pending}"))
                pending = None
    if pending is not None:
        raise AuditInputError(f"{'--site' if site_first else 'log folder'} {pending}: has no "
                              f"{'log folder' if site_first else 'site file'} (one LOGDIR --site FILE pair per site)")
    return out


def read_fleet(path) -> list[FleetEntry]:
    """A fleet file: YAML, a list of {site: FILE, logs: DIR} (or that list under `sites:`); relative paths are
    relative to the fleet file's folder."""
    p = Path(path)
    try:       # the site files' safe loader: size, nesting and alias budgets, each key once (named by line)
        raw = load_yaml_file(p, "fleet file", "give a YAML list of {site: FILE, logs: DIR}")
    except SiteError as exc:
        raise AuditInputError(f"--fleet {exc.problems[0]}") from None
    key = "sites"
    if isinstance(raw, dict) and set(raw) == {"sites"}:
        raw = raw["sites"]
    elif isinstance(raw, dict):
        raise AuditInputError(f"{p}: unknown key(s) {', '.join(sorted(map(str, set(raw) - {'sites'})))}; the file is "
                              "a list of {site: FILE, logs: DIR} (or that list under sites:)")
    if not isinstance(raw, list) or not raw:
        raise AuditInputError(f"{p}: {key}: give a non-empty list of {{site: FILE, logs: DIR}}")
    out = []
    for i, item in enumerate(raw):
        where = f"{p}: {key}[{i}]"
        if not isinstance(item, dict):
            raise AuditInputError(f"{where}: give a mapping {{site: FILE, logs: DIR}}")
        extra = sorted(map(str, set(item) - {"site", "logs"}))
        if extra:
            raise AuditInputError(f"{where}.{extra[0]}: unknown field; the fields are site and logs")
        for f in ("site", "logs"):
            if not isinstance(item.get(f), str) or not item[f].strip():
                raise AuditInputError(f"{where}.{f}: missing; give the {'site file' if f == 'site' else 'log folder'} "
                                      "path (relative to the fleet file)")
        out.append(FleetEntry(str(p.parent / item["logs"]), str(p.parent / item["site"]), f"{where}"))
    return out


def fleet_view(audits: list[SiteAudit]) -> "pd.DataFrame":
    """Site x level: the per-level counts, malformed lines and failing anomaly groups, and the site's verdict."""
    import pandas as pd

    rows = []
    for a in audits:
        prob = problems(a.anomalies)
        bad = a.parsed.malformed
        for r in a.per_level.itertuples():
            rows.append({"site": a.name, "level": r.level, "connections": r.connections, "allowed": r.allowed,
                         "refused_name": r.refused_name, "refused_source": r.refused_source,
                         "upstream_failure": r.upstream_failure,
                         "malformed": int((bad["level"] == r.level).sum()) if len(bad) else 0,
                         "anomalies": int((prob["level"] == r.level).sum()) if len(prob) else 0,
                         "verdict": "passed" if a.verdict.passed else "FAILED"})
    out = pd.DataFrame(rows, columns=FLEET_COLUMNS)
    for c in FLEET_COLUMNS[2:9]:
        out[c] = out[c].astype("int64")
    return out


def run_fleet_cli(entries: list[FleetEntry], params: list[str] = (), since: str = "", out: Optional[str] = None,
                  run: str = "", parquet: Optional[str] = None) -> int:
    """Audit every (log folder, site file) of a fleet, print each and then the fleet view; the worst exit code.
    Every site file and log folder is checked before any log is parsed (bad input: AuditInputError, exit 2)."""
    from layernet.audit import export

    check_flags(run=run, sites=len(entries))
    sites, seen = [], {}
    for e in entries:
        if not e.site_file:
            raise AuditInputError(f"{e.where}: give its site file (the fleet view is per site)")
        site = load_site(e.site_file, list(params))
        if site.name in seen:
            raise AuditInputError(f"{e.where}: site {site.name!r} ({e.site_file}) is also {seen[site.name]}; each "
                                  "site once (the dataset is partitioned by site name)")
        seen[site.name] = e.where
        collect.read_logdir(e.logs, collect.proxy_level_names(site))
        sites.append(site)
    audits = []
    for e, site in zip(entries, sites):
        print(f"\n=== site {site.name}: {e.logs} ===")
        a = _audit(e.logs, site, since, run)
        print("\n" + a.verdict.text())
        if out:
            paths = export.export(a.parsed.connections, out, name=f"connections-{site.name}")
            print("exported: " + ", ".join(str(p) for p in paths.values()))
            _write_kql(site, Path(out) / export.EXPORT_DIR / "kql" / site.name)
        audits.append(a)
    view = fleet_view(audits)
    _print(f"fleet: {len(audits)} site(s) x level", view, limit=200)
    if parquet:
        root = export.fleet_parquet({a.name: a.parsed for a in audits}, parquet)
        print(f"\nParquet dataset (partitioned by site, level and day): {root}")
    failed = [a.name for a in audits if not a.verdict.passed]
    print(f"\nfleet: {len(audits) - len(failed)} of {len(audits)} site(s) passed"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return max(a.verdict.code for a in audits)


def _write_kql(site, folder: Path) -> None:
    paths = kql.write(site, folder)
    where = f" (workspace {site.monitor.workspace_id})" if site.monitor.workspace_id else ""
    print(f"KQL for Azure Monitor{where}: " + ", ".join(str(p) for p in paths.values()))

