"""The audit's findings from Azure Monitor: the KQL of `layernet.audit.kql` run against the site's Log Analytics
workspace (``monitor.workspace_id``) with azure-monitor-query (`LogsQueryClient.query_workspace`).

The answers come back as the same DataFrames as the local engine: `per_level` and `refused` are computed by
KQL in the workspace (only the aggregates travel) and shaped by the same functions as `findings.per_level` /
`findings.refused`; `parsed` reads the records query into the local engine (a `Parsed`), so coverage, paths and
anomalies are `findings` over it, exactly as for saved logs.

    audit = MonitorAudit(site)                          # DefaultAzureCredential, the site's cloud endpoint
    audit.per_level((since, until))                     # KQL in the workspace
    parsed = audit.parsed((since, until), allowlist)    # records -> the local engine
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Optional, Union

from layernet.audit import kql
from layernet.audit.collect import AuditInputError
from layernet.audit.findings import _utc_ms, per_level_frame, refused_frame
from layernet.audit.db import RAW_KEYS
from layernet.audit.parse import parse_logs

if TYPE_CHECKING:
    import pandas as pd

# the Log Analytics query API of each Azure cloud (also the token audience)
ENDPOINTS = {"public": "https://api.loganalytics.io", "usgov": "https://api.loganalytics.us",
             "china": "https://api.loganalytics.azure.cn"}

Timespan = Union[timedelta, tuple]


def default_credential():
    """The credential of a run without one given: azure-identity's chain (environment, managed identity, az login)."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


class MonitorQueryError(RuntimeError):
    """The workspace did not answer a query completely (an error or a partial result)."""


class MonitorAudit:
    """The audit queries of one site against its Log Analytics workspace.

    `credential`: an azure-core TokenCredential (default: DefaultAzureCredential). `endpoint`: the query API
    (default: the site's cloud; the token's audience stays the cloud's). Other keyword arguments go to the
    LogsQueryClient (e.g. `connection_verify`)."""

    def __init__(self, site, credential=None, endpoint: Optional[str] = None, **client_kwargs):
        if site.monitor.workspace_id is None:
            raise AuditInputError(f"site {site.name}: monitor.workspace_id is not set; give the Log Analytics "
                                  "workspace id (a GUID) that Container Insights sends the proxy pods' logs to")
        from azure.monitor.query import LogsQueryClient

        if credential is None:
            credential = default_credential()
        self.site = site
        self.workspace_id = site.monitor.workspace_id
        audience = ENDPOINTS[site.azure.cloud]
        self.client = LogsQueryClient(credential, endpoint=endpoint or audience, audience=audience, **client_kwargs)
        self.queries = kql.render(site)

    def query(self, name: str, timespan: Timespan, text: Optional[str] = None) -> "pd.DataFrame":
        """Run one rendered query (or `text`, a rendering of it) over `timespan` (a timedelta back from now, or
        (start, end)) as a DataFrame."""
        import pandas as pd
        from azure.monitor.query import LogsQueryStatus

        result = self.client.query_workspace(self.workspace_id, text or self.queries[name], timespan=timespan)
        if result.status != LogsQueryStatus.SUCCESS:
            err = getattr(result, "partial_error", None)
            raise MonitorQueryError(f"workspace {self.workspace_id}: query {name} returned a partial result "
                                    f"({getattr(err, 'code', '')}: {getattr(err, 'message', '')}); narrow the "
                                    "time span")
        if not result.tables:
            raise MonitorQueryError(f"workspace {self.workspace_id}: query {name} returned no table")
        table = result.tables[0]
        return pd.DataFrame([list(r) for r in table.rows], columns=list(table.columns))

    def _levels(self) -> list[str]:
        return [lv.name for lv in self.site.proxy_levels(innermost_first=True)]

    def per_level(self, timespan: Timespan) -> "pd.DataFrame":
        """`findings.per_level`, computed in the workspace."""
        return per_level_frame(self._levels(), self.query("per_level", timespan))

    def refused(self, timespan: Timespan) -> "pd.DataFrame":
        """`findings.refused`, computed in the workspace."""
        return refused_frame(self.query("refused", timespan))

    def unexpected_sources(self, timespan: Timespan, expected=None) -> "pd.DataFrame":
        """The ``unexpected-source`` groups (kind, level, source, name, count, first/last seen, expected), in the
        workspace; `expected` (`findings.Expected`): the run's probe traffic, marked expected as locally."""
        text = kql.render(self.site, expected)["unexpected_source"] if expected else None
        out = self.query("unexpected_source", timespan, text)
        out["count"] = out["count"].astype("int64")
        out["expected"] = out["expected"].astype(bool)
        for c in ("first_seen", "last_seen"):
            out[c] = _utc_ms(out[c])
        return out

    def records(self, timespan: Timespan) -> dict[str, list[str]]:
        """{level: access-log lines} from the workspace, in time order (the lines the proxies wrote)."""
        df = self.query("records", timespan)
        return records_to_lines(df, self._levels())

    def parsed(self, timespan: Timespan, allowlist=None, now: Optional[datetime] = None):
        """The records in the local engine: every finding of `layernet.audit.findings` runs on the result."""
        return parse_logs(self.records(timespan), allowlist, sources_are_levels=True, now=now)


def records_to_lines(df: "pd.DataFrame", levels: list[str]) -> dict[str, list[str]]:
    """The records query's rows back as JSON access-log lines per level (empty text = the value Envoy did not have;
    numbers stay text: the local engine types them)."""
    missing = [k for k in RAW_KEYS if k not in df.columns]
    if missing:
        raise MonitorQueryError(f"records query: column(s) {', '.join(missing)} missing from the answer")
    out: dict[str, list[str]] = {lv: [] for lv in levels}
    for row in df[RAW_KEYS].itertuples(index=False):
        rec = {k: (None if v is None or v == "" else str(v)) for k, v in zip(RAW_KEYS, row)}
        out.setdefault(rec["level"] or "", []).append(json.dumps(rec))
    return out
