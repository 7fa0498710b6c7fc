"""The audit of one site, read once: its proxies' access logs (from the site's target, a folder of saved logs, or
the site's Log Analytics workspace) parsed against its allow list. Stage 05's cells and `layernet audit` read it."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from layernet import clock, targets
from layernet.allowlist import AllowList, effective_allowlist
from layernet.audit import collect
from layernet.audit.monitor import MonitorAudit
from layernet.audit.parse import Parsed, parse_logs
from layernet.progress import step
from layernet.runfolder import read_manifest

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Audit:
    site: object
    allowlist: AllowList
    parsed: Parsed
    source: str                      # "target lab" / "folder <path>"
    since: Optional[datetime] = None
    until: Optional[datetime] = None  # when the logs were collected from a live target (None for saved logs)

    @property
    def connections(self) -> "pd.DataFrame":
        return self.parsed.connections


def load(site, log_dir: str = "", since: str = "", target=None, run_dir: str = "") -> Audit:
    """Collect (from the site's target, or from `log_dir`) and parse. `since`: ISO time or "2h"-style. Inside a
    run that reads the live target without `since`, the window starts when the run started: a lab kept up
    across runs still holds earlier runs' traffic, which is not this run's evidence."""
    when = collect.parse_since(since)
    if when is None and not log_dir and run_dir:
        when = _run_started(run_dir)
    al = effective_allowlist(site)
    if log_dir:
        levels = collect.proxy_level_names(site)
        files = collect.read_logdir(log_dir, levels)
        source = f"folder {log_dir}"
        parsed = parse_logs(files, al, sources_are_levels=True, since=when)
        collect.check_records(parsed, levels, log_dir)
    else:
        if target is None:
            target = targets.get_target(site)
        source = f"target {site.target}"
        until = clock.now()
        parsed = parse_logs(collect.collect(site, target, when), al, sources_are_levels=True, now=until)
    step(f"audit: {parsed.records} connection(s), {len(parsed.malformed)} malformed line(s) from {source}")
    return Audit(site, al, parsed, source, when, until if not log_dir else None)


def _run_started(run_dir: str) -> Optional[datetime]:
    try:
        started = read_manifest(Path(run_dir)).get("started")
        return clock.parse(started) if started else None
    except Exception:  # noqa: BLE001 - no manifest (a notebook run by hand): no window
        return None


def load_monitor(site, since: str = "1d", until: Optional[datetime] = None, credential=None, **client) -> Audit:
    """The same Audit from the site's Log Analytics workspace (monitor.workspace_id): the records query of
    `layernet.audit.kql` run with azure-monitor-query over [since, until], read by the local engine, so every
    cell of the notebook works unchanged. `client`: LogsQueryClient options (endpoint, connection_verify)."""
    when = collect.parse_since(since or "1d")
    until = until or clock.now()
    al = effective_allowlist(site)
    m = MonitorAudit(site, credential=credential, **client)
    parsed = m.parsed((when, until), al, now=until)
    source = f"Log Analytics workspace {site.monitor.workspace_id}"
    step(f"audit: {parsed.records} connection(s), {len(parsed.malformed)} malformed line(s) from {source}")
    return Audit(site, al, parsed, source, when, until)
