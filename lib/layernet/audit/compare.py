"""The audit's counts against the probe matrix of the same run.

The infrastructure stage saves its probe rows with `save_probe_rows(run_dir, probes)`; the audit stage reads
them back with `load_probes(run_dir)` and `compare_with_probes` says, per proxy level, how many allowed and
refused connections the probes must have caused and how many the proxies logged in the probes' time window:

- a ``tls`` check from a level crosses every proxy from its parent up to the egress level (one allowed
  connection at each); from the egress level itself it goes straight out and crosses no proxy;
- a ``refused`` check connects to the parent's proxy, which must refuse it (one refused connection there);
- ``dns`` and ``dns-refused`` checks do not touch a proxy.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import ipaddress
from typing import TYPE_CHECKING

from layernet import clock, paths
from layernet import targets
from layernet.audit.collect import AuditInputError
from layernet.audit.findings import Expected, _tab
from layernet.errors import InputError
from layernet.site.problems import show_path

if TYPE_CHECKING:
    import pandas as pd

PROBE_FILE = Path(paths.RESULTS) / "probes.json"
PROBE_STAGE = "infrastructure"
RUN_FIX = "give another run folder made by `layernet run`, or --run none"
SLACK = timedelta(seconds=2)        # clock and log-flush slack around the probe window
COMPARE_COLUMNS = ["level", "expected_allowed", "audit_allowed", "expected_refused", "audit_refused",
                   "audit_upstream_failure", "match"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def save_probe_rows(run_dir, df, stage: str = PROBE_STAGE) -> Optional[Path]:
    """Called by the infrastructure stage right after its probe matrix: the rows and when they were saved. The
    probe window runs from the stage's start (manifest.json) to this save, so rows saved earlier inside the same
    window (the stage run again in a JupyterLab session, which keeps its first start) are kept beside the new ones:
    every probe in the window is counted. Rows from before the stage's start (a resumed run) are replaced."""
    if not run_dir:
        return None
    rows = df.to_dict(orient="records") if hasattr(df, "to_dict") else list(df)
    path = Path(run_dir) / PROBE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = _rows_in_window(run_dir, stage) if path.is_file() else []
    path.write_text(json.dumps({"stage": stage, "saved_at": _now().isoformat(timespec="milliseconds"),
                                "rows": kept + rows}, indent=1, default=str) + "\n")
    return path


def _rows_in_window(run_dir, stage: str) -> list[dict]:
    """The saved probe rows of `stage` when they were saved after the stage's recorded start, else none."""
    try:
        data, saved, start = read_probes(run_dir)
    except InputError:                   # no manifest, or a file this code did not write: nothing to keep
        return []
    if data.get("stage") != stage or start is None or saved < start:
        return []
    return list(data["rows"])


def load_probes(run_dir) -> tuple["pd.DataFrame", Optional[datetime], Optional[datetime]]:
    """(probe rows, window start, window end) of the run; empty rows when the run probed nothing.
    The window starts when the probing stage started (manifest.json) and ends when the rows were saved."""
    import pandas as pd

    path = Path(run_dir) / PROBE_FILE if run_dir else None
    if path is None or not path.is_file():
        return pd.DataFrame(columns=["level", "check", "host", "port", "ok"]), None, None
    data, end, start = read_probes(run_dir)
    return pd.DataFrame(data.get("rows") or [], columns=None), start, end


def _manifest(run_dir, flag: str) -> dict:
    """The manifest.json of a run folder as a mapping; AuditInputError naming `flag` when it is not one."""
    shown = f"{flag} {show_path(run_dir)}"
    d = Path(run_dir)
    try:
        is_dir = d.is_dir()
    except OSError as exc:        # a name too long for the file system
        raise AuditInputError(f"{shown}: not a usable folder path ({exc.strerror or exc}); {RUN_FIX}") from None
    if not is_dir:
        raise AuditInputError(f"{shown}: no such run folder; {RUN_FIX}")
    try:
        data = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuditInputError(f"{shown}: no manifest.json there, so it is not a run folder; {RUN_FIX}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or "not readable JSON"
        raise AuditInputError(f"{shown}: manifest.json is {why}; {RUN_FIX}") from None
    if not isinstance(data, dict) or not isinstance(data.get("stages", []), list):
        raise AuditInputError(f"{shown}: manifest.json is not a run's manifest (a mapping with a list of stages); "
                              f"{RUN_FIX}")
    return data


def read_probes(run_dir, flag: str = "--run") -> tuple[dict, datetime, Optional[datetime]]:
    """(probes.json, its saved_at, the probing stage's start) of a run folder; AuditInputError naming `flag` and
    the file when the folder is not a run folder or the file is not what `layernet run` writes."""
    manifest = _manifest(run_dir, flag)
    path = Path(run_dir) / PROBE_FILE
    shown = f"{flag} {show_path(run_dir)}: {PROBE_FILE}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        end = clock.parse(data["saved_at"])
        rows = data.get("rows") if isinstance(data, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError("rows")
        start = None
        for st in manifest.get("stages") or []:
            if isinstance(st, dict) and st.get("name") == data.get("stage") and st.get("start"):
                start = clock.parse(st["start"])
    except FileNotFoundError:
        raise AuditInputError(f"{shown} is missing; give a run folder that probed (deploy's infrastructure stage), "
                              "or --run none") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        what = "not readable JSON" if isinstance(exc, (UnicodeDecodeError, json.JSONDecodeError)) else \
            "not what layernet run writes (saved_at time, rows, stage)"
        raise AuditInputError(f"{shown} is {what}; {RUN_FIX}") from None
    return data, end, start


def check_run(run: str) -> None:
    """--run: '' (the site's newest run with probes), 'none', or a run folder whose probe rows can be read (a run
    without probes is fine: nothing is marked expected, and the report says so)."""
    if run in ("", "none"):
        return
    if (Path(run) / PROBE_FILE).is_file():
        read_probes(run)
    else:
        _manifest(run, "--run")


def _path_levels(site, level: str) -> list[str]:
    """Proxy levels a connection from `level` to its DNS answer crosses: the parent's proxy, then upward."""
    out, cur = [], site.parent(level)
    while cur is not None and cur.proxy:
        out.append(cur.name)
        cur = site.parent(cur)
    return out


def expected_counts(rows: "pd.DataFrame", site) -> "pd.DataFrame":
    """Per proxy level: the allowed and refused connections the probe rows imply."""
    import pandas as pd

    levels = [lv.name for lv in site.proxy_levels(innermost_first=True)]
    allowed = dict.fromkeys(levels, 0)
    refused = dict.fromkeys(levels, 0)
    for r in rows.to_dict(orient="records") if len(rows) else []:
        if r.get("check") == "tls":
            for name in _path_levels(site, r["level"]):
                allowed[name] += 1
        elif r.get("check") == "refused":
            parent = site.parent(r["level"])
            if parent is not None and parent.proxy:
                refused[parent.name] += 1
    return pd.DataFrame({"level": levels, "expected_allowed": [allowed[l] for l in levels],
                         "expected_refused": [refused[l] for l in levels]})


def probe_names(rows: "pd.DataFrame") -> set[str]:
    """Server names the probes used ("" for the checks without SNI and the non-TLS bytes)."""
    names = set()
    for h in rows.get("host", []):
        h = str(h)
        names.add("" if h.startswith("(") or not h else h.lower())
    return names


def expected_traffic(rows: "pd.DataFrame", site, start: Optional[datetime], end: Optional[datetime]):
    """The probe matrix as expected traffic for the anomaly findings: its window (with slack), the names it
    used and the addresses it came from (each probing level's node address and pod network)."""
    if rows is None or not len(rows) or start is None or end is None:
        return Expected()
    sources = []
    for name in sorted({str(x) for x in rows["level"]}):
        try:
            lv = site.level(name)
        except KeyError:
            continue
        sources += [ipaddress.ip_network(f"{lv.node_ip}/32"), lv.pod_cidr]
    return Expected(start - SLACK, end + SLACK, probe_names(rows), sources)


def find_run(site, runs_dir: Optional[Path] = None) -> Optional[Path]:
    """The newest run folder of this site (manifest's site name) that saved probe rows, or None. By default in the
    folder runs are written to (`layernet.paths.runs()`: the checkout's runs/, or ./runs/ for an installed package)."""
    if runs_dir is None:
        runs_dir = paths.runs()
    if not runs_dir.is_dir():
        return None
    for d in sorted((p for p in runs_dir.iterdir() if p.is_dir()), reverse=True):
        m = d / "manifest.json"
        if (d / PROBE_FILE).is_file() and m.is_file():
            try:
                if json.loads(m.read_text()).get("site", {}).get("name") == site.name:
                    read_probes(d)          # a damaged run is passed over, not a crash
                    return d
            except (ValueError, AttributeError, InputError):
                continue
    return None


def compare_with_probes(data, rows: "pd.DataFrame", site, start: Optional[datetime] = None,
                        end: Optional[datetime] = None, only_probe_names: Optional[bool] = None) -> "pd.DataFrame":
    """Expected (from the probe rows) vs audited (connections logged between start and end) per proxy level.
    `only_probe_names` (default: when the site's target says real workloads share the proxies) counts only
    connections whose name a probe used. `data`: a Parsed or a connection DataFrame."""
    exp = expected_counts(rows, site)
    t = _tab(data)
    where, params = ["true"], []
    if start is not None:
        where.append("time >= ?")
        params.append(start - SLACK)
    if end is not None:
        where.append("time <= ?")
        params.append(end + SLACK)
    if only_probe_names is None:
        only_probe_names = targets.target_class(site).shared_proxies
    if only_probe_names:
        names = sorted(probe_names(rows)) or [""]
        where.append("lower(sni) IN (" + ", ".join("?" for _ in names) + ")")
        params += names
    got = t.df(f"""SELECT level, count(*) FILTER (WHERE verdict = 'allowed') AS audit_allowed,
            count(*) FILTER (WHERE verdict IN ('refused-name', 'refused-source')) AS audit_refused,
            count(*) FILTER (WHERE verdict = 'upstream-failure') AS audit_upstream_failure
        FROM {t.name} WHERE {' AND '.join(where)} GROUP BY level""", params)
    exp = exp.merge(got, on="level", how="left")
    for c in ("audit_allowed", "audit_refused", "audit_upstream_failure"):
        exp[c] = exp[c].fillna(0).astype("int64")
    # Allowed: every probe must be logged; more is the site's own workloads sharing the proxies in the window
    # (the Arc agents' heartbeats, AIO), so "at least". Refused: exactly the probes' (a workload refused in a
    # passing run is a finding of its own). Upstream failures: none.
    exp["match"] = (exp["audit_allowed"] >= exp["expected_allowed"]) & (exp["expected_refused"] == exp["audit_refused"]) \
        & (exp["audit_upstream_failure"] == 0)
    return exp[COMPARE_COLUMNS]


def require_match(table: "pd.DataFrame", rows: Optional["pd.DataFrame"] = None) -> str:
    """Raise when any level's counts differ from what the probes imply; else say what matched."""
    if rows is not None and len(rows) == 0:
        return "no probe rows in this run (the infrastructure stage did not probe): comparison skipped"
    bad = table[~table["match"]]
    if len(bad):
        parts = [f"{r.level}: allowed {r.audit_allowed} logged vs {r.expected_allowed} probed, refused "
                 f"{r.audit_refused} vs {r.expected_refused}, upstream failures {r.audit_upstream_failure}"
                 for r in bad.itertuples()]
        raise RuntimeError("the audit does not match the probe matrix: " + "; ".join(parts)
                           + ". Look for connections that are not probes in the window, or probes the proxies "
                             "did not log (is the access log flushed?).")
    total = int(table["expected_allowed"].sum() + table["expected_refused"].sum())
    other = int((table["audit_allowed"] - table["expected_allowed"]).sum())
    return (f"the audit matches the probe matrix on {len(table)} level(s): all {total} probe connections logged"
            + (f", plus {other} allowed connection(s) of the site's own workloads" if other else ""))
